"""Evaluate a run from its saved predictions: single models, champions, WENs, tests, answers.

The orchestrator above ``ensemble/``: it reads the run folder once (:class:`~allwen.runfolder.RunFolder`),
builds the ensembles in memory, makes every choice through :mod:`allwen.evaluation.selection`,
computes metrics, intervals and paired tests (:mod:`allwen.evaluation.comparisons`) and
returns the :class:`~allwen.evaluation.results.Summary`, which it also writes as
``report/summary.json`` beside ``ensembles/<name>/``. No network is run.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from allwen import __version__
from allwen.config import Config, expand_scenarios
from allwen.config.load import config_value
from allwen.data.groups import leakage_summary
from allwen.ensemble import EnsembleResult, build_ensembles, scenario_predictions
from allwen.evaluation import selection
from allwen.evaluation.selection import STUDY_WEIGHTINGS, best_study_weighting, best_weighting, weighting_means
from allwen.evaluation.comparisons import TestStatistics, weight_spread
from allwen.evaluation.metric_registry import grid_names
from allwen.evaluation.metrics import compute_metrics, resolve_average
from allwen.evaluation.results import (
    BestWeighting,
    Champion,
    SelectiveResult,
    Comparison,
    Comparisons,
    DataSummary,
    Ensemble,
    Grouping,
    LeakageRow,
    MeanSd,
    Selection,
    ScenarioSummary,
    SingleModel,
    SplitSummary,
    StageParameters,
    SubjectLevel,
    Summary,
    IntraBest,
    LrEffect,
    ScenarioMean,
    StudyFacts,
    WenVsSingle,
    finite,
    write_summary,
)
from allwen.progress import track
from allwen.runfolder import RunFolder, UnitPredictions

log = logging.getLogger(__name__)
TTA_SUFFIX = "+tta"


def subject_clusters(folder: RunFolder, test_paths: list[str]) -> np.ndarray | None:
    """Cluster id per test image from the split, or None when it names no subjects.

    Images of one subject share a cluster, and so do byte-identical images (on C-NMC two
    "patients" share cells), merged transitively. An image without a subject is its own
    cluster. Runs written before the split kept subjects (no ``subject`` column) evaluate
    at the image level.
    """
    from allwen.data.groups import group_keys

    found = folder.subjects_of(test_paths)
    if found is None or not any(found[0]):
        return None
    keys = group_keys(found[0], found[1], by_subject=True, duplicate_aware=True, near=found[2])
    return np.unique(keys, return_inverse=True)[1]


def _candidates(results: list[EnsembleResult]) -> list[selection.Candidate]:
    return [selection.Candidate(r.name, r.kind, r.members, r.weights, r.test_y, r.test_proba) for r in results]


def _members(units_by_scenario: dict[str, list[UnitPredictions]]) -> dict[str, UnitPredictions]:
    """Every possible ensemble member by name: the units, and each scenario of >= 2 folds as one."""
    members: dict[str, UnitPredictions] = {u.name: u for us in units_by_scenario.values() for u in us}
    for scenario, units in units_by_scenario.items():
        if len(units) > 1 and len({p for u in units for p in u.val_paths}) == sum(len(u.val_paths) for u in units):
            members[scenario] = scenario_predictions(units)
    return members


def evaluate_run(run_dir: Path, cfg: Config, audit: dict[str, Any] | None = None) -> Summary:
    """Compute everything the report shows and write ``report/summary.json``."""
    folder = RunFolder(run_dir)
    order = [name for name, _ in expand_scenarios(cfg)]  # the config's grid order, not the folders'
    units_by_scenario = folder.discover_units(scenarios=order) if folder.units_dir.is_dir() else {}
    if not units_by_scenario:
        raise ValueError(f"{folder.units_dir}: no finished units; run `allwen run` on this folder first")
    any_unit = next(iter(units_by_scenario.values()))[0]
    classes, y = any_unit.classes, any_unit.test_y
    if len(y) == 0 or (y < 0).any():
        raise ValueError(f"{folder.root}: the test set is empty or unlabelled; evaluation needs a labelled test set")
    sel = cfg.ensemble
    by, metric = sel.champion_by, sel.champion_metric

    units = [u for us in units_by_scenario.values() for u in us]
    chosen = selection.chosen_champions(units_by_scenario, by, metric)  # once: the intra ensembles and the report
    results = build_ensembles(units_by_scenario, sel.weightings, by, metric, champions=chosen,
                              weights_from=sel.weights_from)
    probas = {u.name: u.test_proba for u in units} | {r.name: r.test_proba for r in results}
    if cfg.evaluation.tta:
        probas |= {f"{u.name}{TTA_SUFFIX}": folder.tta_predictions(u) for u in units}
    split_meta = folder.split_meta()
    grouping = Grouping.model_validate(split_meta.get("grouping") or {})
    pseudo = grouping.pseudo_patients_described if grouping.pseudo_patients else None
    clusters = subject_clusters(folder, any_unit.test_paths)
    stats = TestStatistics(y, clusters, cfg, probas, classes=list(classes),
                           cluster_kind="subjects" if pseudo is None else pseudo)

    # every choice, once (allwen.evaluation.selection)
    members = _members(units_by_scenario)
    candidates = _candidates(results)
    validation = selection.member_scores({m: members[m] for r in results for m in r.members}, metric)
    best_single = selection.best_single(units_by_scenario, by, metric).name
    best_ensembles = selection.best_ensembles(candidates, by, metric, validation)
    best_ensemble = selection.best_ensemble(candidates, by, metric, validation)
    default_export = selection.default_export(candidates, units_by_scenario, metric, validation)

    singles = []
    for unit in track(units, len(units), "evaluating single models", unit="models"):
        info = folder.unit_info(unit.scenario, unit.fold)
        kept = info.train_metrics
        singles.append(SingleModel(
            **stats.entry(unit.name, classes), scenario=unit.scenario, fold=unit.fold, best_stage=info.best_stage,
            val_metrics={k: finite(v) for k, v in compute_metrics(unit.val_y, unit.val_proba).items()},
            train_metrics={k: finite(getattr(kept, k) if kept else None) for k in ("accuracy", "loss")},
            train_eval_accuracy=finite(info.train_eval_accuracy),
            curves=folder.curves_rel(unit.scenario, unit.fold), test_loss=_test_loss(unit.test_y, unit.test_proba)))
    by_name = {s.name: s for s in singles}
    singles_tta = [SingleModel(**stats.entry(f"{s.name}{TTA_SUFFIX}", classes),
                               **s.model_dump(include={"scenario", "fold", "best_stage", "val_metrics", "train_metrics",
                                                         "train_eval_accuracy", "curves"}))
                   for s in singles] if cfg.evaluation.tta else []
    champions = [Champion(**by_name[u.name].model_dump(), selected_by=by, selection_metric=metric)
                 for u in chosen.values()]
    scenario_models = champions or [s for s in singles if s.fold == min(u.fold for u in units)]

    ensembles = []
    for result in results:
        folder.write_ensemble(result.record(), result.test_paths, result.test_y, result.test_proba)
        member_probas = [members[m].test_proba for m in result.members]
        ensembles.append(Ensemble(
            **stats.entry(result.name, classes), kind=result.kind, scenario=result.scenario,
            weighting=result.weighting, members=result.members, weights=[float(w) for w in result.weights],
            scores=[finite(s) for s in result.scores], note=result.note,
            spread=weight_spread(result.weights, member_probas, result.test_proba)))

    intra, inter = best_ensembles.get("intra"), best_ensembles.get("inter")
    # the best weighting by the champion rule (ensemble.champion_by), not always by test accuracy
    rule_means = weighting_means(ensembles, by, metric, _oof_validation(ensembles, results, members, units, by, metric))
    comparisons = Comparisons(
        scenarios=stats.family([(a.name, b.name, (a.scenario, b.scenario)) for a, b in combinations(scenario_models, 2)]),
        best_single_vs_ensembles=stats.family([(e.name, best_single, None) for e in ensembles]),
        tta_vs_plain=stats.family([(t.name, t.name.removesuffix(TTA_SUFFIX), None) for t in singles_tta]),
        intra_vs_inter=stats.family([(intra, inter, None)] if intra and inter else []),
        weightings=stats.family(weighting_pairs(ensembles, best_study_weighting(rule_means))),
    )
    a_shaped = bool(cfg.scenarios) and len(split_meta["folds"]) > 1 and bool(ensembles)
    asks_wen = cfg.evaluation.questions == "wen" or (cfg.evaluation.questions == "auto" and a_shaped)
    if asks_wen and ensembles:  # A's questions as the study asks them (issue 28)
        _study_comparisons(comparisons, stats, units_by_scenario, ensembles, best_single)
    leakage = folder.leakage()
    summary = Summary(
        name=cfg.name,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        allwen_version=__version__,
        classes=classes,
        positive_class=classes[1] if len(classes) == 2 else None,
        average=resolve_average(cfg.evaluation.average, len(classes)),
        data=_data_summary(audit if audit is not None else folder.audit()),
        split=SplitSummary(method=split_meta["method"], n_test=split_meta["n_test"], folds=split_meta["folds"],
                           notes=split_meta.get("notes", []), leakage=[LeakageRow(**row) for row in leakage],
                           leakage_summary=leakage_summary(leakage), grouping=grouping),
        config=cfg,
        selection=Selection(champion_by=by, champion_metric=metric,
                            test_set_selection=by != "validation" or cfg.split.validate_on == "test"
                            or sel.weights_from == "test"),
        evaluation=stats.description(),
        best_single=best_single,
        best_ensembles=best_ensembles,
        best_ensemble=best_ensemble.name if best_ensemble else None,
        default_export=default_export,
        single_models=singles,
        single_models_tta=singles_tta,
        champions=champions,
        ensembles=ensembles,
        comparisons=comparisons,
    )
    summary.scenarios, summary.grid_winner = grid_summary(cfg, singles)
    summary.grid_metric = cfg.sweep_metric if summary.grid_winner else None
    summary.sweep = folder.read_sweep() if folder.sweep_json.exists() else None
    summary.parameters = _parameters(folder, units[0])
    summary.samples = {c: [p for p, t in zip(any_unit.test_paths, y) if t == k][:SAMPLES_PER_CLASS]
                       for k, c in enumerate(classes)}
    from allwen.evaluation.paper import paper_facts

    summary.paper_comparison, summary.paper_protocol = paper_facts(cfg, summary)
    summary.subject_level = _subject_level(summary, folder, any_unit.test_paths, y, clusters, probas, cfg)
    summary.selective = selective_results(summary, members, results, units, stats.clusters, cfg)
    # Experiment A's four questions need folds x scenarios and ensembles; other studies ask their own
    # (evaluation.questions: grid for C and D, whose reports answer with the grid's winner, cells and folds)
    summary.questions = study_facts(summary, cfg, rule_means) if asks_wen and a_shaped else None
    write_summary(summary, folder.root)
    return summary


def selective_results(summary: Summary, members: dict[str, UnitPredictions], results: list[EnsembleResult],
                      units: list[UnitPredictions], clusters: np.ndarray | None, cfg: Config) -> list[SelectiveResult]:
    """The accuracy-coverage curve of each champion (or the single model) and best ensemble, with the
    referral threshold chosen at the export default target accuracy on the out-of-fold validation
    predictions of its recipe (:func:`allwen.ensemble.combine.recipe`, as ``allwen export``)."""
    from allwen.ensemble.combine import pooled_oof, recipe, votes
    from allwen.evaluation import selective

    ev = cfg.evaluation
    by_unit = {u.name: u for u in units}
    by_scenario: dict[str, list[UnitPredictions]] = {}
    for u in units:
        by_scenario.setdefault(u.scenario, []).append(u)
    by_ensemble = {r.name: r for r in results}
    picked = [(c.name, "champion") for c in summary.champions] or [(summary.best_single, "single")]
    picked += [(name, kind) for kind, name in summary.best_ensembles.items()]
    out = []
    for name, kind in picked:
        if name in by_unit:
            u = by_unit[name]
            calibrating = recipe([u], [1.0], by_scenario)  # its scenario's every fold, as export does
            test_y, test_p = u.test_y, u.test_proba
        elif name in by_ensemble:
            r = by_ensemble[name]
            calibrating = recipe([members[m] for m in r.members], r.weights, by_scenario)
            test_y, test_p = r.test_y, r.test_proba
        else:
            continue
        parts = [(list(m.val_paths), m.val_y, m.val_proba, w) for m, w in zip(*calibrating)]
        _, val_y, val_p = pooled_oof(parts, voting=name in by_ensemble and votes(by_ensemble[name].weighting))
        facts = selective.summarize(val_y, val_p, test_y, test_p, clusters=clusters, n_boot=ev.bootstrap or 1000,
                                    seed=ev.seed, confidence_level=ev.confidence, stratify=ev.stratify)
        out.append(SelectiveResult(name=name, kind=kind, n_validation=len(val_y),
                                   **{k: v for k, v in facts.items() if k in SelectiveResult.model_fields}))
    return out


SAMPLES_PER_CLASS = 3


def _subject_level(summary: Summary, folder: RunFolder, test_paths: list[str], y: np.ndarray,
                   clusters: np.ndarray | None, probas: dict[str, np.ndarray], cfg: Config) -> list[SubjectLevel]:
    """Each headline model's test predictions aggregated per subject cluster (none without subjects)."""
    from allwen.evaluation.subjects import cluster_names, subject_level

    if clusters is None:
        return []
    found = folder.subjects_of(test_paths)
    names = cluster_names(found[0], clusters)
    ev = cfg.evaluation
    out, seen = [], set()
    for role, model in summary.headline_models():
        if model.name in seen or model.name not in probas:
            continue
        seen.add(model.name)
        out.append(subject_level(model.name, y, probas[model.name], names, summary.classes, ev.bootstrap,
                                 ev.confidence, ev.seed, ev.stratify, role=role))
    return out


def _mean_sd(values: list[float | None]) -> MeanSd:
    kept = [v for v in values if v is not None and v == v]
    if not kept:
        return MeanSd()
    return MeanSd(mean=float(np.mean(kept)), sd=float(np.std(kept, ddof=1)) if len(kept) > 1 else None)


def grid_summary(cfg: Config, singles: list[SingleModel]) -> tuple[list[ScenarioSummary], str | None]:
    """Runs with scenarios: each cell's validation and test metrics (mean, sd over folds) and the
    grid winner (:func:`allwen.evaluation.selection.grid_winner` over mean validation ``sweep_metric``)."""
    if not cfg.scenarios:
        return [], None
    rows = []
    for name, scenario_cfg in expand_scenarios(cfg):
        models = [s for s in singles if s.scenario == name]
        settings = {key: config_value(scenario_cfg, key) for key in cfg.scenarios}
        rows.append(ScenarioSummary(
            name=name, settings=settings, n_folds=len(models),
            train={m: _mean_sd([s.train_metrics.get(m) for s in models]) for m in ("accuracy", "loss")},
            train_eval_accuracy=_mean_sd([s.train_eval_accuracy for s in models]),
            val={m: _mean_sd([s.val_metrics.get(m) for s in models]) for m in grid_names()},
            test={m: _mean_sd([s.metrics.value(m) for s in models]) for m in grid_names()}))
    return rows, rows[selection.grid_winner([r.val[cfg.sweep_metric].mean for r in rows])].name


def _parameters(folder: RunFolder, unit: UnitPredictions) -> list[StageParameters]:
    """Total and trainable parameters per stage, as the unit's training counted them."""
    counts = folder.unit_info(unit.scenario, unit.fold).parameters
    keras_total, statistics = _keras_counts(folder.unit(unit.scenario, unit.fold).weights)
    return [StageParameters(stage=stage, total=counts.total, trainable=getattr(counts, f"{stage}_trainable"),
                            keras_total=keras_total, batchnorm_statistics=statistics)
            for stage in ("stage1", "stage2") if getattr(counts, f"{stage}_trainable") is not None]


def _test_loss(y: np.ndarray, proba: np.ndarray) -> float | None:
    """Mean cross-entropy of the true classes' probabilities (clipped at 1e-7 as Keras clips), no class weights."""
    if len(y) == 0:
        return None
    return finite(float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-7, 1.0)))))


def _keras_counts(weights: Path) -> tuple[int | None, int | None]:
    """(total, BatchNorm statistics) as Keras's ``model.summary()`` counts them, from the unit's weights file
    (its header only): every tensor but ``num_batches_tracked``, BatchNorm's moving mean and variance included
    (non-trainable parameters in Keras, buffers in PyTorch; a frozen BatchNorm's scale and shift too)."""
    from safetensors import safe_open

    if not weights.is_file():
        return None, None
    total = statistics = 0
    with safe_open(str(weights), framework="numpy") as handle:
        for key in handle.keys():
            if key.endswith("num_batches_tracked"):
                continue
            n = int(np.prod(handle.get_slice(key).get_shape()))
            total += n
            statistics += n if key.endswith(("running_mean", "running_var")) else 0
    return total, statistics


def _data_summary(audit: dict[str, Any] | None) -> DataSummary:
    audit = audit or {}
    return DataSummary(
        source=audit.get("source"), root=audit.get("root"), n_images=audit.get("n_images"),
        classes=audit.get("classes"), n_subjects=audit.get("n_subjects"),
        n_duplicate_groups=len(audit.get("duplicate_groups", [])), imbalance=finite(audit.get("imbalance")),
        unreadable=len(audit.get("unreadable", [])),
    )


# --------------------------------------------------------------------------- question facts


def _accuracy_rows(rows: list[Comparison]) -> list[Comparison]:
    return [r for r in rows if r.metric == "accuracy"]


def _oof_validation(ensembles: list[Ensemble], results: list[EnsembleResult], members: dict[str, UnitPredictions],
                    units: list[UnitPredictions], by: str, metric: str) -> dict[str, float] | None:
    """Each ensemble's ``metric`` on the out-of-fold validation predictions of its recipe (as export
    calibrates it): the validation-side score that ``champion_by: validation`` picks the best weighting by."""
    if by != "validation":
        return None
    from allwen.ensemble.combine import pooled_oof, recipe, votes

    by_scenario: dict[str, list[UnitPredictions]] = {}
    for u in units:
        by_scenario.setdefault(u.scenario, []).append(u)
    out = {}
    for r in results:
        try:
            parts_of = recipe([members[m] for m in r.members], r.weights, by_scenario)
        except (KeyError, ValueError):
            continue
        parts = [(list(m.val_paths), m.val_y, m.val_proba, w) for m, w in zip(*parts_of)]
        _, val_y, val_p = pooled_oof(parts, voting=votes(r.weighting))
        value = compute_metrics(val_y, val_p).get(metric)
        out[r.name] = float(value) if value is not None and value == value else float("nan")
    return out


#: A's hypotheses name these five metrics (paired tests for each)
STUDY_METRICS = ("accuracy", "precision", "recall", "f1", "kappa")


def _study_comparisons(comparisons: Comparisons, stats: TestStatistics, units_by_scenario: dict[str, list[UnitPredictions]],
                       ensembles: list[Ensemble], best_single: str) -> None:
    """Experiment A's comparisons as the study asks them: the learning rates over all their folds (the
    cluster swap test on the 5 x 3 fold models), the study's WENs (accuracy, F1, kappa weightings) against
    the best single model in A's five metrics and AUC, Holm within that family; the baseline ensembles
    (uniform, vote, auc, greedy) against it in a family of their own, reported outside the study's."""
    comparisons.lr_folds = stats.scenario_family(
        [(name, [u.name for u in sorted(us, key=lambda u: u.fold)]) for name, us in units_by_scenario.items()],
        STUDY_METRICS)
    study = [e for e in ensembles if e.weighting in STUDY_WEIGHTINGS]
    baselines = [e for e in ensembles if e.weighting not in STUDY_WEIGHTINGS]
    comparisons.best_single_vs_ensembles = stats.family([(e.name, best_single, None) for e in study],
                                                        (*STUDY_METRICS, "auc"))
    comparisons.baselines_vs_single = stats.family([(e.name, best_single, None) for e in baselines])


def weighting_pairs(ensembles: list[Ensemble], best: str | None) -> list[tuple[str, str, None]]:
    """The best study weighting against every other weighting of the same members (kind, scenario)."""
    pairs = []
    for group in dict.fromkeys((e.kind, e.scenario) for e in ensembles):
        members = {e.weighting: e for e in ensembles if (e.kind, e.scenario) == group}
        if best in members:
            pairs += [(members[best].name, e.name, None) for w, e in members.items() if w != best]
    return pairs


def study_facts(summary: Summary, cfg: Config, rule_means: list[WeightingMean] | None = None) -> StudyFacts:
    """The numbers behind Experiment A's four questions (``allwen.report.questions`` words them).

    Significance is at ``1 - evaluation.confidence`` (0.05 by default), as the intervals; every
    paired test is one of ``summary.comparisons``; every model named is a recorded choice."""
    alpha = 1.0 - cfg.evaluation.confidence
    significant = lambda r: r.p_holm is not None and r.p_holm < alpha  # noqa: E731
    facts = StudyFacts(alpha=alpha)

    over_folds = bool(summary.comparisons.lr_folds)
    rows = summary.comparisons.lr_folds or _accuracy_rows(summary.comparisons.scenarios)
    facts.lr_effect = LrEffect(
        factor=" x ".join(cfg.scenarios) or "the scenario", only_lr=list(cfg.scenarios) == ["train.lr"],
        scenarios=[ScenarioMean(scenario=r.name, mean=r.test["accuracy"].mean or 0.0, sd=r.test["accuracy"].sd or 0.0,
                                n=r.n_folds) for r in summary.scenarios],
        significant=[r for r in rows if significant(r)],
        min_p_holm=min((r.p_holm for r in rows if r.p_holm is not None), default=None),
        over_folds=over_folds, metrics=list(dict.fromkeys(r.metric for r in rows)))

    every = summary.comparisons.best_single_vs_ensembles
    rows = _accuracy_rows(every)
    best = summary.model(summary.best_single)
    facts.wen_vs_single = WenVsSingle(
        best_single=best.name, best_single_accuracy=best.metrics.accuracy, n_ensembles=len(rows),
        n_higher=sum(1 for r in rows if (r.diff or 0) > 0), better=[r for r in rows if (r.diff or 0) > 0 and significant(r)],
        better_other=[r for r in every if r.metric not in ("accuracy", "auc") and (r.diff or 0) > 0 and significant(r)],
        n_baselines=len({r.a for r in summary.comparisons.baselines_vs_single}))

    intra, inter = summary.best_ensembles.get("intra"), summary.best_ensembles.get("inter")
    if intra and inter:
        facts.intra_best = IntraBest(
            best_intra=intra, best_intra_accuracy=summary.model(intra).metrics.accuracy, best_inter=inter,
            best_inter_accuracy=summary.model(inter).metrics.accuracy,
            comparison=next(iter(_accuracy_rows(summary.comparisons.intra_vs_inter)), None))

    means = weighting_means(summary.ensembles)
    if means:
        rows = _accuracy_rows(summary.comparisons.weightings)
        study = [e for e in summary.ensembles if e.weighting in STUDY_WEIGHTINGS]
        facts.best_weighting = BestWeighting(
            means=means, best_study=best_study_weighting(rule_means or means),
            chosen_by=f"{cfg.ensemble.champion_by} {cfg.ensemble.champion_metric}" if rule_means else "test accuracy",
            best_overall=best_weighting(means),
            min_p_holm=min((r.p_holm for r in rows if r.p_holm is not None), default=None),
            uniform_like=[e.name for e in study if e.spread.indistinguishable_from_uniform], n_study=len(study))
    return facts

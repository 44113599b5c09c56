"""Evaluate a run from its saved predictions: single models, champions, WENs, tests, answers.

Writes ``ensembles/<name>/`` and ``report/summary.json`` (a :class:`~allwen.evaluation.results.Summary`);
no network is run. Champions and the best single model are chosen here, once. When the
test images carry subject ids (``splits/split.csv``, column ``subject``), intervals are
cluster bootstraps over subjects and paired tests permute over subjects; otherwise
intervals resample images and pairs use McNemar (accuracy) and DeLong (AUC). Holm's
correction applies within each family of comparisons.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from allwen import __version__
from allwen.config import Config, expand_scenarios
from allwen.config.load import config_value
from allwen.progress import track
from allwen.data.groups import leakage_summary
from allwen.ensemble.checks import SPLIT_FIX, redo_hint
from allwen.ensemble import EnsembleResult, build_ensembles, discover_units, select_champions, write_ensemble
from allwen.ensemble.build import load_tta_predictions
from allwen.evaluation.metrics import (
    ALL_METRIC_NAMES,
    compute_metrics,
    confusion,
    per_class_table,
    predict_labels,
    roc_curves,
)
from allwen.evaluation.results import (
    Champion,
    Comparison,
    Comparisons,
    DataSummary,
    Ensemble,
    MeanSd,
    Metrics,
    Selection,
    ScenarioSummary,
    SingleModel,
    SplitSummary,
    Statistics,
    Summary,
    WeightSpread,
    finite,
    write_summary,
)
from allwen.io import read_csv_columns, read_json
from allwen.evaluation.stats import (
    EXACT_MAX_SUBJECTS,
    bootstrap_distributions,
    delong_test,
    holm,
    intervals,
    mcnemar_exact,
    percentile_interval,
    subject_permutation_test,
)

log = logging.getLogger(__name__)
STUDY_WEIGHTINGS = ("accuracy", "f1", "kappa")
TTA_SUFFIX = "+tta"


# --------------------------------------------------------------------------- subjects


def subject_clusters(run_dir: Path, test_paths: list[str]) -> np.ndarray | None:
    """Cluster id per test image from ``splits/split.csv``, or None when it names no subjects.

    Images of one subject share a cluster, and so do byte-identical images (on C-NMC two
    "patients" share cells), merged transitively. An image without a subject is its own
    cluster. Runs written before the split kept subjects (no ``subject`` column) evaluate
    at the image level.
    """
    from allwen.data.groups import group_keys

    path = Path(run_dir) / "splits" / "split.csv"
    columns = read_csv_columns(path, SPLIT_FIX)
    if "subject" not in columns:
        log.info("%s has no subject column: intervals and tests are over images", path)
        return None
    digests = columns.get("sha256", np.full(len(columns["path"]), "", dtype=object))
    row_of: dict[str, int] = {}
    for i, image in enumerate(columns["path"]):
        row_of.setdefault(image, i)  # the first row of a path, as pandas' drop_duplicates kept
    missing = [p for p in test_paths if p not in row_of]
    if missing:
        raise ValueError(f"{path} lists no row for test image {missing[0]} ({len(missing)} missing); "
                         "the predictions and the split disagree: run `allwen run` again on this folder")
    rows = [row_of[p] for p in test_paths]
    subjects = [columns["subject"][i] for i in rows]
    if not any(subjects):
        return None
    keys = group_keys(subjects, [digests[i] for i in rows], by_subject=True, duplicate_aware=True)
    return np.unique(keys, return_inverse=True)[1]


# --------------------------------------------------------------------------- statistics


@dataclass
class _Stats:
    """The test labels, subject clusters and every model's bootstrap distribution."""

    y: np.ndarray
    clusters: np.ndarray | None
    cfg: Config
    probas: dict[str, np.ndarray]
    dists: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ev = self.cfg.evaluation
        if ev.bootstrap:
            self.dists = bootstrap_distributions(self.y, self.probas, ev.bootstrap, ev.seed, ALL_METRIC_NAMES,
                                                 self.clusters)

    @property
    def n_subjects(self) -> int | None:
        return None if self.clusters is None else int(self.clusters.max()) + 1

    def description(self) -> Statistics:
        ev = self.cfg.evaluation
        level = f"{ev.confidence:.0%} percentile"
        if self.clusters is None:
            interval = f"{level} bootstrap over {len(self.y)} test images ({ev.bootstrap} resamples)"
            paired = "McNemar's exact test (accuracy) and DeLong's test (AUC) over test images"
        else:
            g = self.n_subjects
            interval = f"{level} cluster bootstrap over {g} test subjects ({ev.bootstrap} resamples, all images of a drawn subject)"
            flips = f"exact over all 2^{g} = {2 ** g} sign flips" if g <= EXACT_MAX_SUBJECTS else "10,000 random sign flips"
            paired = f"permutation over {g} test subjects (accuracy and AUC; {flips})"
        return Statistics(bootstrap=ev.bootstrap, confidence=ev.confidence, seed=ev.seed, n_test=len(self.y),
                          unit="image" if self.clusters is None else "subject", n_subjects=self.n_subjects,
                          interval_method=interval, paired_method=paired)

    def entry(self, name: str, classes: list[str]) -> dict[str, Any]:
        """Name, metrics with intervals, confusion counts and ROC of one model."""
        proba = self.probas[name]
        values = compute_metrics(self.y, proba)
        ci = intervals(self.dists[name], self.cfg.evaluation.confidence) if self.dists else {}
        metrics = Metrics(**{k: finite(v) for k, v in values.items()},
                          ci={k: (finite(ci[k][0]), finite(ci[k][1])) for k in ci})
        return {"name": name, "metrics": metrics, "confusion": confusion(self.y, predict_labels(proba), len(classes)).tolist(),
                "roc": _roc(self.y, proba, classes), "per_class": per_class_rows(self.y, proba, classes)}

    def paired(self, a: str, b: str, metric: str, labels: tuple[str, str] | None = None) -> Comparison | None:
        """a vs b on the same test images; None when the test is undefined (AUC with a class missing)."""
        y, pa, pb = self.y, self.probas[a], self.probas[b]
        la, lb = labels or (a, b)
        diff_ci = None
        if self.dists:
            lo, hi = percentile_interval(self.dists[a][metric] - self.dists[b][metric], self.cfg.evaluation.confidence)
            diff_ci = (finite(lo), finite(hi))
        present = np.bincount(y, minlength=pa.shape[1])
        if metric == "auc" and present.min() < 2:
            return None
        if self.clusters is not None:
            r = subject_permutation_test(y, pa, pb, self.clusters, metric, seed=self.cfg.evaluation.seed)
            return Comparison(a=la, b=lb, test="permutation", metric=metric, diff=finite(r["diff"]), diff_ci=diff_ci,
                              p=r["pvalue"], n_subjects=r["n_subjects"], n_permutations=r["n_permutations"])
        if metric == "accuracy":
            mc = mcnemar_exact(y, predict_labels(pa), predict_labels(pb))
            diff = float(np.mean(predict_labels(pa) == y) - np.mean(predict_labels(pb) == y))
            return Comparison(a=la, b=lb, test="mcnemar", metric=metric, diff=diff, diff_ci=diff_ci,
                              statistic=mc["statistic"], p=mc["pvalue"])
        if pa.shape[1] != 2:
            return None  # DeLong is binary; multi-class AUCs are compared over subjects only
        dl = delong_test(y, pa[:, 1], pb[:, 1])
        return Comparison(a=la, b=lb, test="delong", metric=metric, diff=dl["diff"], diff_ci=diff_ci,
                          statistic=finite(dl["z"]), p=dl["pvalue"])

    def family(self, pairs: list[tuple[str, str, tuple[str, str] | None]]) -> list[Comparison]:
        """Accuracy and AUC comparisons of each pair, Holm-corrected within each metric."""
        rows = [c for a, b, labels in pairs for m in ("accuracy", "auc") if (c := self.paired(a, b, m, labels))]
        for metric in ("accuracy", "auc"):
            members = [r for r in rows if r.metric == metric]
            for row, adjusted in zip(members, holm([r.p for r in members])):
                row.p_holm = float(adjusted)
        return rows


def per_class_rows(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> list[dict[str, Any]]:
    """Precision, recall, F1 per class (one-vs-rest; binary too) and their macro average."""
    rows = per_class_table(y, proba, classes)
    keys = ("precision", "recall", "specificity", "f1")
    macro = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    return [{**r, **{k: finite(r[k]) for k in keys}} for r in rows] + [
        {"class": "macro average", **{k: finite(v) for k, v in macro.items()}, "support": int(sum(r["support"] for r in rows))}]


def _roc(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, Any]:
    curves = roc_curves(y, proba)
    if proba.shape[1] == 2:
        return curves.get("positive", {})
    per_class = {classes[int(k)]: v for k, v in curves.items()}
    aucs = [v["auc"] for v in per_class.values()]
    return {"per_class": per_class, "auc": float(np.mean(aucs)) if aucs else None}


def weight_spread(weights: list[float], member_probas: list[np.ndarray], proba: np.ndarray) -> WeightSpread:
    """Spread of the weights and whether they change any test decision against the plain average."""
    w = np.asarray(weights)
    uniform = np.mean(member_probas, axis=0)
    agreement = float(np.mean(predict_labels(uniform) == predict_labels(proba)))
    return WeightSpread(min=float(w.min()), max=float(w.max()), max_deviation=float(np.abs(w - 1 / len(w)).max()),
                        agreement_with_uniform=agreement, indistinguishable_from_uniform=agreement == 1.0)


# --------------------------------------------------------------------------- evaluation


def evaluate_run(run_dir: Path, cfg: Config, audit: dict[str, Any] | None = None) -> Summary:
    """Compute everything the report shows and write ``report/summary.json``."""
    from allwen.report.questions import answer_questions

    run_dir = Path(run_dir)
    order = [name for name, _ in expand_scenarios(cfg)]  # the config's grid order, not the folders'
    found = discover_units(run_dir)
    units_by_scenario = {name: found[name] for name in order if name in found}
    if not units_by_scenario:
        raise ValueError(f"{run_dir / 'units'}: no finished units; run `allwen run` on this folder first")
    any_unit = next(iter(units_by_scenario.values()))[0]
    classes, y = any_unit.classes, any_unit.test_y
    if len(y) == 0 or (y < 0).any():
        raise ValueError(f"{run_dir}: the test set is empty or unlabelled; evaluation needs a labelled test set")
    sel = cfg.ensemble

    units = [u for us in units_by_scenario.values() for u in us]
    results = build_ensembles(units_by_scenario, sel.weightings, sel.champion_by, sel.champion_metric)
    probas = {u.name: u.test_proba for u in units} | {r.name: r.test_proba for r in results}
    if cfg.evaluation.tta:
        probas |= {f"{u.name}{TTA_SUFFIX}": load_tta_predictions(run_dir, u) for u in units}
    stats = _Stats(y, subject_clusters(run_dir, any_unit.test_paths), cfg, probas)

    singles = []
    for unit in track(units, len(units), "evaluating single models", unit="models"):
        info = read_json(run_dir / "units" / unit.scenario / f"fold_{unit.fold}" / "unit.json", redo_hint(run_dir, unit.name))
        singles.append(SingleModel(
            **stats.entry(unit.name, classes), scenario=unit.scenario, fold=unit.fold, best_stage=info.get("best_stage"),
            val_metrics={k: finite(v) for k, v in compute_metrics(unit.val_y, unit.val_proba).items()},
            train_metrics={k: finite((info.get("train_metrics") or {}).get(k)) for k in ("accuracy", "loss")},
            curves=f"units/{unit.scenario}/fold_{unit.fold}/curves.png"))
    by_name = {s.name: s for s in singles}
    singles_tta = [SingleModel(**stats.entry(f"{s.name}{TTA_SUFFIX}", classes),
                               **s.model_dump(include={"scenario", "fold", "best_stage", "val_metrics", "train_metrics", "curves"}))
                   for s in singles] if cfg.evaluation.tta else []
    # a champion is chosen among a scenario's folds: a one-fold run (B, C, E) has none
    several_folds = max(len(us) for us in units_by_scenario.values()) >= 2
    champions = [Champion(**by_name[u.name].model_dump(), selected_by=sel.champion_by, selection_metric=sel.champion_metric)
                 for u in select_champions(units_by_scenario, by=sel.champion_by, metric=sel.champion_metric).values()
                 ] if several_folds else []
    scenario_models = champions or [s for s in singles if s.fold == min(u.fold for u in units)]

    ensembles = []
    for result in results:
        write_ensemble(result, run_dir / "ensembles")
        members = _member_probas(result, units_by_scenario, probas)
        ensembles.append(Ensemble(
            **stats.entry(result.name, classes), kind=result.kind, scenario=result.scenario,
            weighting=result.weighting, members=result.members, weights=[float(w) for w in result.weights],
            scores=[finite(s) for s in result.scores], note=result.note,
            spread=weight_spread(result.weights, members, result.test_proba)))

    # the best single model is chosen the same way as champions (validation by default)
    metric = sel.champion_metric
    score = (lambda s: s.val_metrics[metric]) if sel.champion_by == "validation" else (lambda s: s.metrics.value(metric))
    best_single = max(singles, key=lambda s: score(s) if score(s) is not None else -1.0)
    best_ensembles = {}
    for kind in ("inter", "intra", "scenarios"):
        of_kind = [e for e in ensembles if e.kind == kind]
        if of_kind:
            best_ensembles[kind] = max(of_kind, key=lambda e: (e.metrics.accuracy or 0.0, e.metrics.auc or 0.0)).name

    comparisons = Comparisons(
        scenarios=stats.family([(a.name, b.name, (a.scenario, b.scenario)) for a, b in combinations(scenario_models, 2)]),
        best_single_vs_ensembles=stats.family([(e.name, best_single.name, None) for e in ensembles]),
        tta_vs_plain=stats.family([(t.name, t.name.removesuffix(TTA_SUFFIX), None) for t in singles_tta]),
    )
    fix = SPLIT_FIX
    split_meta = read_json(run_dir / "splits" / "split.json", fix)
    leakage = read_json(run_dir / "splits" / "leakage.json", fix, kind=list)
    summary = Summary(
        name=cfg.name,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        allwen_version=__version__,
        classes=classes,
        positive_class=classes[1] if len(classes) == 2 else None,
        data=_data_summary(audit, run_dir),
        split=SplitSummary(method=split_meta["method"], n_test=split_meta["n_test"], folds=split_meta["folds"],
                           notes=split_meta.get("notes", []), leakage=leakage, leakage_summary=leakage_summary(leakage)),
        config=cfg.model_dump(mode="json"),
        selection=Selection(champion_by=sel.champion_by, champion_metric=sel.champion_metric,
                            test_set_selection=sel.champion_by != "validation"),
        evaluation=stats.description(),
        best_single=best_single.name,
        best_ensembles=best_ensembles,
        single_models=singles,
        single_models_tta=singles_tta,
        champions=champions,
        ensembles=ensembles,
        comparisons=comparisons,
    )
    summary.scenarios, summary.grid_winner = grid_summary(cfg, singles)
    summary.grid_metric = cfg.sweep_metric if summary.grid_winner else None
    summary.sweep = _sweep_record(run_dir)
    summary.parameters = _parameters(run_dir, units[0])
    summary.samples = {c: [p for p, t in zip(any_unit.test_paths, y) if t == k][:SAMPLES_PER_CLASS]
                       for k, c in enumerate(classes)}
    # Experiment A's four questions need folds x scenarios and ensembles; other studies ask others
    a_shaped = bool(cfg.scenarios) and len(split_meta["folds"]) > 1 and bool(ensembles)
    summary.questions = answer_questions(question_facts(summary, stats)) if a_shaped else []
    write_summary(summary, run_dir)
    return summary


SAMPLES_PER_CLASS = 3
GRID_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "f1_macro", "kappa", "auc")


def _mean_sd(values: list[float | None]) -> MeanSd:
    kept = [v for v in values if v is not None and v == v]
    if not kept:
        return MeanSd()
    return MeanSd(mean=float(np.mean(kept)), sd=float(np.std(kept, ddof=1)) if len(kept) > 1 else None)


def grid_summary(cfg: Config, singles: list[SingleModel]) -> tuple[list[ScenarioSummary], str | None]:
    """Runs with scenarios: each cell's validation and test metrics (mean, sd over folds) and the
    grid winner, the cell with the best mean validation ``sweep_metric`` (ties: the earlier cell)."""
    if not cfg.scenarios:
        return [], None
    rows = []
    for name, scenario_cfg in expand_scenarios(cfg):
        models = [s for s in singles if s.scenario == name]
        settings = {key: config_value(scenario_cfg, key) for key in cfg.scenarios}
        rows.append(ScenarioSummary(
            name=name, settings=settings, n_folds=len(models),
            train={m: _mean_sd([s.train_metrics.get(m) for s in models]) for m in ("accuracy", "loss")},
            val={m: _mean_sd([s.val_metrics.get(m) for s in models]) for m in GRID_METRICS},
            test={m: _mean_sd([s.metrics.value(m) for s in models]) for m in GRID_METRICS}))
    metric = cfg.sweep_metric
    scored = [(r.val[metric].mean if r.val[metric].mean is not None else -1.0, -i) for i, r in enumerate(rows)]
    return rows, rows[max(range(len(rows)), key=lambda i: scored[i])].name


def _parameters(run_dir: Path, unit) -> list[dict[str, Any]]:
    """Total and trainable parameters per stage, as the unit's training counted them."""
    info = read_json(run_dir / "units" / unit.scenario / f"fold_{unit.fold}" / "unit.json", redo_hint(run_dir, unit.name))
    counts = info.get("parameters") or {}
    return [{"stage": stage, "total": counts.get("total"), "trainable": counts[f"{stage}_trainable"]}
            for stage in ("stage1", "stage2") if f"{stage}_trainable" in counts]


def _sweep_record(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / "sweep.json"
    return read_json(path, "delete it and the sweep/ folder, and run the same command again") if path.exists() else None


def _member_probas(result: EnsembleResult, units_by_scenario: dict, probas: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Members' test probabilities; a scenario member is the mean of its fold models."""
    if result.kind == "scenarios":
        return [np.mean([probas[u.name] for u in units_by_scenario[m]], axis=0) for m in result.members]
    return [probas[m] for m in result.members]


def _data_summary(audit: dict[str, Any] | None, run_dir: Path) -> DataSummary:
    path = run_dir / "data" / "audit.json"
    if audit is None and path.exists():
        audit = read_json(path, "delete it and run `allwen run` with the run's config to audit the data again")
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


def question_facts(summary: Summary, stats: _Stats) -> dict[str, dict[str, Any]]:
    """The numbers behind Experiment A's four questions; ``allwen.report.questions`` words them.

    Significance is at ``1 - evaluation.confidence`` (0.05 by default), as the intervals.
    """
    cfg = stats.cfg
    alpha = 1.0 - cfg.evaluation.confidence
    test = "subject permutation" if stats.clusters is not None else "McNemar"
    common = {"alpha": alpha, "test": test, "n_subjects": stats.n_subjects}
    acc = lambda m: m.metrics.accuracy or 0.0  # noqa: E731
    facts: dict[str, dict[str, Any]] = {}

    by_scenario: dict[str, list[float]] = {}
    for s in summary.single_models:
        by_scenario.setdefault(s.scenario, []).append(acc(s))
    rows = _accuracy_rows(summary.comparisons.scenarios)
    facts["lr_effect"] = {
        **common, "factor": " x ".join(cfg.scenarios) or "the scenario", "only_lr": list(cfg.scenarios) == ["train.lr"],
        "scenarios": [{"scenario": k, "mean": float(np.mean(v)), "sd": float(np.std(v)), "n": len(v)}
                      for k, v in by_scenario.items()],
        "significant": [r.model_dump() for r in rows if r.p_holm is not None and r.p_holm < alpha],
        "min_p_holm": min((r.p_holm for r in rows if r.p_holm is not None), default=None),
    }

    rows = _accuracy_rows(summary.comparisons.best_single_vs_ensembles)
    best = summary.model(summary.best_single)
    facts["wen_vs_single"] = {
        **common, "best_single": best.name, "best_single_accuracy": acc(best),
        "chosen_by": summary.selection.champion_by, "metric": summary.selection.champion_metric,
        "n_ensembles": len(rows), "n_higher": sum(1 for r in rows if (r.diff or 0) > 0),
        "better": [r.model_dump() for r in rows if (r.diff or 0) > 0 and r.p_holm is not None and r.p_holm < alpha],
    }

    wen = [e for e in summary.ensembles if e.weighting in STUDY_WEIGHTINGS] or summary.ensembles
    intra = [e for e in wen if e.kind == "intra"]
    inter = [e for e in wen if e.kind == "inter"]
    q3: dict[str, Any] = {**common, "available": bool(intra and inter),
                          "top": [{"name": e.name, "accuracy": e.metrics.accuracy, "kappa": e.metrics.kappa}
                                  for e in sorted(summary.ensembles, key=acc, reverse=True)[:6]]}
    if intra and inter:
        best_intra, best_inter = max(intra, key=acc), max(inter, key=acc)
        pair = stats.paired(best_intra.name, best_inter.name, "accuracy")
        q3.update(best_intra=best_intra.name, best_intra_accuracy=acc(best_intra), best_inter=best_inter.name,
                  best_inter_accuracy=acc(best_inter), p=pair.p)
    facts["intra_best"] = q3

    by_weighting: dict[str, list[float]] = {}
    for e in summary.ensembles:
        by_weighting.setdefault(e.weighting, []).append(acc(e))
    q4: dict[str, Any] = {**common, "means": {w: {"mean": float(np.mean(v)), "n": len(v)} for w, v in by_weighting.items()}}
    if by_weighting:
        means = {w: m["mean"] for w, m in q4["means"].items()}
        study = {w: means[w] for w in STUDY_WEIGHTINGS if w in means}
        best_study = max(study, key=study.get) if study else max(means, key=means.get)
        within = []
        for group in {(e.kind, e.scenario) for e in summary.ensembles}:
            members = {e.weighting: e for e in summary.ensembles if (e.kind, e.scenario) == group}
            if best_study in members:
                within += [stats.paired(members[best_study].name, e.name, "accuracy").p
                           for w, e in members.items() if w != best_study]
        q4.update(best_study=best_study, best_overall=max(means, key=means.get),
                  min_p_holm=float(np.min(holm(within))) if within else 1.0,
                  uniform_like=[e.name for e in summary.ensembles
                                if e.weighting in STUDY_WEIGHTINGS and e.spread.indistinguishable_from_uniform],
                  n_study=sum(1 for e in summary.ensembles if e.weighting in STUDY_WEIGHTINGS))
    facts["best_weighting"] = q4
    return facts

"""Evaluate a run from its saved predictions: single models, champions, WENs, tests, answers.

Writes ``ensembles/<name>/`` and ``report/summary.json``; no network is run. The four
research questions of Experiment A are answered from paired tests on the same test images
(McNemar exact for accuracy, DeLong for AUC, Holm within each family of comparisons).
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
from allwen.data.splits import leakage_summary
from allwen.ensemble import build_ensembles, discover_units, select_champions, write_ensemble
from allwen.ensemble.build import TEST_FILE, TTA_TEST_FILE, _read_predictions
from allwen.evaluation.metrics import ALL_METRIC_NAMES, compute_metrics, confusion, predict_labels, roc_curves
from allwen.evaluation.stats import bootstrap_ci, delong_test, holm, mcnemar_exact, paired_bootstrap_diff
from allwen.ensemble.checks import redo_hint
from allwen.io import atomic_write_json, read_json

log = logging.getLogger(__name__)
STUDY_WEIGHTINGS = ("accuracy", "f1", "kappa")


def _finite(value: float) -> float | None:
    return float(value) if value == value and np.isfinite(value) else None


def _roc(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, Any]:
    curves = roc_curves(y, proba)
    if proba.shape[1] == 2:
        return curves.get("positive", {})
    per_class = {classes[int(k)]: v for k, v in curves.items()}
    aucs = [v["auc"] for v in per_class.values()]
    return {"per_class": per_class, "auc": float(np.mean(aucs)) if aucs else None}


def _model_entry(name: str, y: np.ndarray, proba: np.ndarray, classes: list[str], cfg: Config) -> dict[str, Any]:
    metrics = compute_metrics(y, proba)
    ci = bootstrap_ci(y, proba, n_boot=cfg.evaluation.bootstrap, confidence=cfg.evaluation.confidence,
                      seed=cfg.evaluation.seed, metrics=ALL_METRIC_NAMES) if cfg.evaluation.bootstrap else {}
    return {
        "name": name,
        "metrics": {
            **{k: _finite(v) for k, v in metrics.items()},
            "ci": {k: ([_finite(ci[k][0]), _finite(ci[k][1])] if k in ci else None) for k in metrics},
        },
        "confusion": confusion(y, predict_labels(proba), len(classes)).tolist(),
        "roc": _roc(y, proba, classes),
    }


def _compare(a_name: str, b_name: str, y: np.ndarray, pa: np.ndarray, pb: np.ndarray, cfg: Config) -> list[dict[str, Any]]:
    """McNemar on accuracy (+ paired bootstrap CI of the difference) and DeLong on AUC (binary)."""
    rows = []
    mc = mcnemar_exact(y, predict_labels(pa), predict_labels(pb))
    diff_ci = None
    if cfg.evaluation.bootstrap:
        diff_ci = [_finite(x) for x in paired_bootstrap_diff(
            y, pa, pb, "accuracy", n_boot=cfg.evaluation.bootstrap, confidence=cfg.evaluation.confidence,
            seed=cfg.evaluation.seed)["ci"]]
    rows.append({"a": a_name, "b": b_name, "test": "mcnemar", "statistic": mc["statistic"], "b_only_a_right": mc["b"],
                 "c_only_b_right": mc["c"], "p": mc["pvalue"],
                 "diff_accuracy": float(np.mean(predict_labels(pa) == y) - np.mean(predict_labels(pb) == y)),
                 "diff_ci": diff_ci})
    if pa.shape[1] == 2 and min(np.bincount(y, minlength=2)) >= 2:  # DeLong needs 2 of each class
        dl = delong_test(y, pa[:, 1], pb[:, 1])
        rows.append({"a": a_name, "b": b_name, "test": "delong", "statistic": _finite(dl["z"]), "p": dl["pvalue"],
                     "diff_auc": dl["diff"], "auc_a": dl["auc_a"], "auc_b": dl["auc_b"]})
    return rows


def _holm_by_test(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Holm correction within each family (one family per test type)."""
    for test in {r["test"] for r in rows}:
        family = [r for r in rows if r["test"] == test]
        for row, adj in zip(family, holm([r["p"] for r in family])):
            row["p_holm"] = float(adj)
    return rows


def evaluate_run(run_dir: Path, cfg: Config, audit: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compute everything the report shows and write ``report/summary.json``."""
    run_dir = Path(run_dir)
    order = [name for name, _ in expand_scenarios(cfg)]  # the config's grid order, not the folders'
    found = discover_units(run_dir)
    units_by_scenario = {name: found[name] for name in order if name in found}
    if not units_by_scenario:
        raise ValueError(f"{run_dir / 'units'}: no finished units; run `allwen run` on this folder first")
    any_unit = next(iter(units_by_scenario.values()))[0]
    classes = any_unit.classes
    y = any_unit.test_y
    if len(y) == 0 or (y < 0).any():
        raise ValueError(f"{run_dir}: the test set is empty or unlabelled; evaluation needs a labelled test set")
    sel = cfg.ensemble

    singles = []
    for scenario, units in units_by_scenario.items():
        for unit in units:
            entry = _model_entry(unit.name, y, unit.test_proba, classes, cfg)
            unit_json = run_dir / "units" / scenario / f"fold_{unit.fold}" / "unit.json"
            info = read_json(unit_json, redo_hint(run_dir, unit.name))
            entry.update(scenario=scenario, fold=unit.fold, best_stage=info.get("best_stage"),
                         val_metrics={k: _finite(v) for k, v in compute_metrics(unit.val_y, unit.val_proba).items()},
                         curves=f"units/{scenario}/fold_{unit.fold}/curves.png")
            singles.append(entry)
    by_name = {s["name"]: s for s in singles}
    singles_tta = _tta_singles(run_dir, units_by_scenario, y, classes, cfg) if cfg.evaluation.tta else []
    probas = {u.name: u.test_proba for us in units_by_scenario.values() for u in us}

    champions_units = select_champions(units_by_scenario, by=sel.champion_by, metric=sel.champion_metric)
    champions = [{**by_name[u.name], "selected_by": sel.champion_by, "selection_metric": sel.champion_metric}
                 for u in champions_units.values()]

    ensembles = []
    for result in build_ensembles(units_by_scenario, sel.weightings, sel.champion_by, sel.champion_metric):
        write_ensemble(result, run_dir / "ensembles")
        entry = _model_entry(result.name, y, result.test_proba, classes, cfg)
        entry.update(kind=result.kind, scenario=result.scenario, weighting=result.weighting, members=result.members,
                     weights=[float(w) for w in result.weights], scores=[_finite(s) for s in result.scores],
                     note=result.note)
        ensembles.append(entry)
        probas[result.name] = result.test_proba

    # the best single model is chosen the same way as champions (validation by default)
    metric = sel.champion_metric
    key = "val_metrics" if sel.champion_by == "validation" else "metrics"
    best_single = max(singles, key=lambda s: (s[key][metric] if s[key][metric] is not None else -1.0))

    scenario_rows: list[dict[str, Any]] = []
    for a, b in combinations(champions, 2):
        scenario_rows += _compare(a["scenario"], b["scenario"], y, probas[a["name"]], probas[b["name"]], cfg)
    ensemble_rows: list[dict[str, Any]] = []
    for ens in ensembles:
        ensemble_rows += _compare(ens["name"], best_single["name"], y, probas[ens["name"]], probas[best_single["name"]], cfg)
    comparisons = {"scenarios": _holm_by_test(scenario_rows), "best_single_vs_ensembles": _holm_by_test(ensemble_rows)}
    questions = answer_questions(singles, champions, ensembles, best_single, comparisons, y, probas, cfg)

    fix = "the split is the run's ground truth: restore it, or start a new run folder"
    split_meta = read_json(run_dir / "splits" / "split.json", fix)
    leakage = read_json(run_dir / "splits" / "leakage.json", fix, kind=list)
    summary = {
        "name": cfg.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "allwen_version": __version__,
        "classes": classes,
        "positive_class": classes[1] if len(classes) == 2 else None,
        "data": _data_summary(audit, run_dir),
        "split": {"method": split_meta["method"], "n_test": split_meta["n_test"], "folds": split_meta["folds"],
                  "notes": split_meta.get("notes", []),
                  "leakage": leakage, "leakage_summary": leakage_summary(leakage)},
        "config": cfg.model_dump(mode="json"),
        "selection": {"champion_by": sel.champion_by, "champion_metric": sel.champion_metric,
                      "test_set_selection": sel.champion_by != "validation"},
        "evaluation": {"bootstrap": cfg.evaluation.bootstrap, "confidence": cfg.evaluation.confidence, "n_test": int(len(y))},
        "best_single": best_single["name"],
        "single_models": singles,
        **({"single_models_tta": singles_tta} if singles_tta else {}),
        "champions": champions,
        "ensembles": ensembles,
        "comparisons": comparisons,
        "questions": questions,
    }
    atomic_write_json(run_dir / "report" / "summary.json", summary)
    return summary


def _tta_singles(run_dir: Path, units_by_scenario: dict[str, list[Any]], y: np.ndarray, classes: list[str],
                 cfg: Config) -> list[dict[str, Any]]:
    """``evaluation.tta``: every single model's test metrics on its 8-view TTA predictions, beside the plain ones."""
    out = []
    for scenario, units in units_by_scenario.items():
        for unit in units:
            path = run_dir / "units" / scenario / f"fold_{unit.fold}" / TTA_TEST_FILE
            hint = "units trained before evaluation.tta was set have none; train the run again into a new --out"
            paths, file_classes, _, proba = _read_predictions(path, unit.name, hint, allow_unlabelled=True)
            if paths != unit.test_paths or file_classes != classes:
                raise ValueError(f"unit {unit.name}: {path} lists other test images or classes than {TEST_FILE}")
            entry = _model_entry(f"{unit.name}+tta", y, proba, classes, cfg)
            entry.update(scenario=scenario, fold=unit.fold, plain=unit.name, tta_views=8)
            out.append(entry)
    return out


def _data_summary(audit: dict[str, Any] | None, run_dir: Path) -> dict[str, Any]:
    path = run_dir / "data" / "audit.json"
    if audit is None and path.exists():
        audit = read_json(path, "delete it and run `allwen run` with the run's config to audit the data again")
    audit = audit or {}
    return {
        "source": audit.get("source"), "root": audit.get("root"), "n_images": audit.get("n_images"),
        "classes": audit.get("classes"), "n_subjects": audit.get("n_subjects"),
        "n_duplicate_groups": len(audit.get("duplicate_groups", [])), "imbalance": audit.get("imbalance"),
        "unreadable": len(audit.get("unreadable", [])),
    }


def _fmt_num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _fmt_p(p: float) -> str:
    return f"p={p:.3g}" if p >= 1e-4 else "p<1e-4"


def answer_questions(singles, champions, ensembles, best_single, comparisons, y, probas, cfg) -> list[dict[str, Any]]:
    """Plain-words answers to Experiment A's four questions, with the numbers behind them.

    Significance is at ``1 - evaluation.confidence`` (0.05 by default), as the intervals.
    """
    ALPHA = 1.0 - cfg.evaluation.confidence  # noqa: N806
    acc = lambda entry: entry["metrics"]["accuracy"]  # noqa: E731
    out = []

    # Q1: learning rate
    by_scenario: dict[str, list[float]] = {}
    for s in singles:
        by_scenario.setdefault(s["scenario"], []).append(acc(s))
    spread = "; ".join(f"{k}: mean test accuracy {np.mean(v):.3f} (sd {np.std(v):.3f}, {len(v)} folds)" for k, v in by_scenario.items())
    rows = [r for r in comparisons["scenarios"] if r["test"] == "mcnemar"]
    factor = " x ".join(cfg.scenarios) or "the scenario"
    if len(by_scenario) < 2:
        answer = f"Only one scenario was run, so the effect of {factor} cannot be tested."
    else:
        sig = [r for r in rows if r["p_holm"] < ALPHA]
        answer = (
            ("Yes: " + ", ".join(f"{r['a']} vs {r['b']} differ (accuracy difference {r['diff_accuracy']:+.3f}, "
                                 f"Holm-adjusted McNemar {_fmt_p(r['p_holm'])})" for r in sig))
            if sig else
            f"No significant difference between the scenarios' champions at the {ALPHA:.0%} level after Holm "
            f"correction (smallest adjusted McNemar {_fmt_p(min(r['p_holm'] for r in rows))})."
        )
    question = ("Does the learning rate change single-model performance significantly?" if list(cfg.scenarios) == ["train.lr"]
                else f"Does the scenario ({factor}) change single-model performance significantly?")
    out.append({"id": "lr_effect", "question": question,
                "answer": answer, "evidence": [spread]})

    # Q2: any WEN better than the best single model?
    rows = [r for r in comparisons["best_single_vs_ensembles"] if r["test"] == "mcnemar"]
    better = [r for r in rows if r["diff_accuracy"] > 0 and r["p_holm"] < ALPHA]
    higher = [r for r in rows if r["diff_accuracy"] > 0]
    if not ensembles:
        answer = "No ensembles were built (a single scenario with a single fold)."
    elif better:
        top = max(better, key=lambda r: (r["diff_accuracy"], -r["p_holm"]))
        answer = (f"Yes: {len(better)} of {len(rows)} ensembles are significantly more accurate than the best single model "
                  f"{best_single['name']} (largest gain: {top['a']}, {top['diff_accuracy']:+.3f} accuracy, "
                  f"Holm-adjusted McNemar {_fmt_p(top['p_holm'])}).")
    else:
        answer = (f"No ensemble is significantly more accurate than the best single model {best_single['name']} "
                  f"(test accuracy {acc(best_single):.3f}) after Holm correction; {len(higher)} of {len(rows)} have a higher point estimate.")
    out.append({"id": "wen_vs_single", "question": "Does any WEN beat the best single model?", "answer": answer,
                "evidence": [f"best single model chosen by {cfg.ensemble.champion_by} {cfg.ensemble.champion_metric}: "
                             f"{best_single['name']}, test accuracy {acc(best_single):.3f}"]})

    # Q3: is intra-LR the best ensemble?
    wen = [e for e in ensembles if e["weighting"] in STUDY_WEIGHTINGS] or ensembles  # the study's WENs, not baselines
    intra = [e for e in wen if e["kind"] == "intra"]
    inter = [e for e in wen if e["kind"] == "inter"]
    if intra and inter:
        best_intra, best_inter = max(intra, key=acc), max(inter, key=acc)
        mc = mcnemar_exact(y, predict_labels(probas[best_intra["name"]]), predict_labels(probas[best_inter["name"]]))
        verdict = {1: "Yes", 0: "Tied", -1: "No"}[int(np.sign(acc(best_intra) - acc(best_inter)))]
        answer = (f"{verdict}: best intra-LR {best_intra['name']} "
                  f"{acc(best_intra):.3f} vs best inter-LR {best_inter['name']} {acc(best_inter):.3f}: exact McNemar {_fmt_p(mc['pvalue'])}"
                  + (" (not a significant difference)." if mc["pvalue"] >= ALPHA else ".")
                  + " Both were picked as the most accurate on the test set, so this p-value is descriptive, not confirmatory.")
    else:
        answer = "Needs both intra-LR and inter-LR ensembles (at least 2 scenarios and 2 folds)."
    out.append({"id": "intra_best", "question": "Is the Intra-LR ensemble (of champions) the best ensemble?", "answer": answer,
                "evidence": [f"{e['name']}: accuracy {acc(e):.3f}, kappa {_fmt_num(e['metrics']['kappa'])}"
                             for e in sorted(ensembles, key=acc, reverse=True)[:6]]})

    # Q4: which weighting is best?
    by_weighting: dict[str, list[float]] = {}
    for e in ensembles:
        by_weighting.setdefault(e["weighting"], []).append(acc(e))
    if by_weighting:
        means = {w: float(np.mean(v)) for w, v in by_weighting.items()}
        best_w = max(means, key=means.get)
        study = {w: means[w] for w in STUDY_WEIGHTINGS if w in means}
        best_study = max(study, key=study.get) if study else best_w
        within = []
        for group in {e["scenario"] or "intra" for e in ensembles}:
            members = {e["weighting"]: e for e in ensembles if (e["scenario"] or "intra") == group}
            if best_study in members:
                for w, e in members.items():
                    if w != best_study:
                        mc = mcnemar_exact(y, predict_labels(probas[members[best_study]["name"]]), predict_labels(probas[e["name"]]))
                        within.append(mc["pvalue"])
        min_p = float(np.min(holm(within))) if within else 1.0
        answer = (f"Among the study's weightings, {best_study} has the highest mean ensemble accuracy "
                  f"({study.get(best_study, means[best_w]):.3f}); over all weightings incl. baselines, {best_w} ({means[best_w]:.3f}). "
                  + ("Differences between weightings of the same members are not significant "
                     f"(smallest Holm-adjusted McNemar {_fmt_p(min_p)})." if min_p >= ALPHA else
                     f"Some differences are significant (smallest Holm-adjusted McNemar {_fmt_p(min_p)})."))
        evidence = [f"{w}: mean accuracy {m:.3f} over {len(by_weighting[w])} ensembles" for w, m in sorted(means.items(), key=lambda kv: -kv[1])]
    else:
        answer, evidence = "No ensembles were built.", []
    out.append({"id": "best_weighting", "question": "Which weighting (accuracy, F1, kappa) is best?", "answer": answer,
                "evidence": evidence})
    return out

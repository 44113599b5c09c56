"""Where referral and prediction sets are calibrated, and what that does on the test side.

For each ``--model`` of a finished run (default: the run's ``default_export``), exactly as
``allwen export`` builds the bundle (temperature, ensemble weights, cluster bootstrap intervals of
the run's evaluation settings), the referral threshold for each ``--target`` and the conformal sets
at each ``--level`` are calibrated on two sets of out-of-fold validation predictions:

* ``members``: the bundle's own members on their own validation folds (last session's export),
  the folds on which those members were chosen (champion of a scenario, best epoch);
* ``recipe``: the bundle's recipe refitted on every fold (:func:`allwen.export.sections.recipe_units`,
  what export uses now).

and judged on the test side: coverage of the sets and accuracy on the images not referred, with
the card's intervals (:mod:`allwen.evaluation.selective`, :mod:`allwen.evaluation.conformal`).
It also prints, over every unit of the run, the mean validation and test accuracy (how optimistic
a unit's own validation fold is, best epoch kept), and how much of the test-side variation of
coverage lies between subjects (clusters): the share of variance between clusters and the design
effect ``1 + (m - 1) * ICC`` that the cluster bootstrap accounts for. Last line: one JSON object.

    python benchmarks/abstain_calibration.py RUN [--model NAME ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def between_cluster_share(values: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """One-way ANOVA of a 0/1 outcome over clusters: between share, ICC estimate, mean cluster size, design effect."""
    codes = np.unique(clusters, return_inverse=True)[1]
    g, n = int(codes.max()) + 1, len(values)
    sizes = np.bincount(codes, minlength=g).astype(float)
    means = np.bincount(codes, weights=values, minlength=g) / sizes
    grand = values.mean()
    ss_between = float((sizes * (means - grand) ** 2).sum())
    ss_within = float(((values - means[codes]) ** 2).sum())
    total = ss_between + ss_within
    ms_b, ms_w = ss_between / max(g - 1, 1), ss_within / max(n - g, 1)
    m0 = (n - (sizes ** 2).sum() / n) / max(g - 1, 1)  # the ANOVA estimator's mean cluster size
    icc = max(0.0, (ms_b - ms_w) / (ms_b + (m0 - 1) * ms_w)) if ms_b + (m0 - 1) * ms_w > 0 else 0.0
    return {"clusters": g, "between_share": round(ss_between / total, 4) if total else 0.0, "icc": round(icc, 4),
            "mean_cluster_size": round(n / g, 2), "design_effect": round(1 + (n / g - 1) * icc, 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--model", action="append", default=None, help="a model of the run (repeatable)")
    parser.add_argument("--level", type=float, action="append", default=None, help="conformal level (0.9, 0.95)")
    parser.add_argument("--target", type=float, action="append", default=None, help="target accuracy (0.99)")
    parser.add_argument("--json", action="store_true", help="only the JSON line")
    args = parser.parse_args(argv)

    from allwen.evaluation import conformal, selective
    from allwen.evaluation.metrics import predict_labels
    from allwen.ensemble.wen import WeightedEnsemble
    from allwen.evaluation.run import subject_clusters
    from allwen.export.choice import member_predictions, open_run, resolve_model
    from allwen.export.sections import oof_ensemble, recipe_units
    from allwen.serve import calibration

    levels, targets = args.level or [0.9, 0.95], args.target or [0.99]
    folder, summary = open_run(args.run)
    ev = summary.config.evaluation
    n_boot, seed, conf_level = int(ev.bootstrap) or 1000, int(ev.seed), float(ev.confidence)
    stratify = bool(ev.stratify)
    say = (lambda *a: None) if args.json else print

    units = [folder.unit_predictions_of(u.name) for u in summary.single_models]
    champions = {c.name for c in summary.champions}
    accuracy = lambda y, p: float((predict_labels(p) == y).mean())  # noqa: E731
    unit_rows = [{"unit": u.name, "champion": u.name in champions, "val_accuracy": accuracy(u.val_y, u.val_proba),
                  "test_accuracy": accuracy(u.test_y, u.test_proba)} for u in units]
    result: dict = {"run": str(args.run), "units": {
        "n": len(units), "mean_val_accuracy": float(np.mean([r["val_accuracy"] for r in unit_rows])),
        "mean_test_accuracy": float(np.mean([r["test_accuracy"] for r in unit_rows])),
        "champions_val_accuracy": float(np.mean([r["val_accuracy"] for r in unit_rows if r["champion"]] or [np.nan])),
        "champions_test_accuracy": float(np.mean([r["test_accuracy"] for r in unit_rows if r["champion"]] or [np.nan]))},
        "models": {}}
    say(f"{args.run}: {len(units)} units; mean accuracy on their own validation folds "
        f"{result['units']['mean_val_accuracy']:.3f}, on the test side {result['units']['mean_test_accuracy']:.3f}; "
        f"champions {result['units']['champions_val_accuracy']:.3f} vs {result['units']['champions_test_accuracy']:.3f}")

    for name in args.model or [None]:
        choice = resolve_model(folder, summary, name)
        preds = member_predictions(folder, choice.members)
        classes = preds[0].classes
        vote = choice.weighting == "vote"
        fit = [p for p, w in zip(preds, choice.weights) if w > 0] or preds
        temperature = calibration.fit_temperature(np.concatenate([p.val_proba for p in fit]),
                                                  np.concatenate([p.val_y for p in fit]))
        ensemble = WeightedEnsemble.from_weights(choice.weighting, choice.members, choice.weights, len(classes))
        y = preds[0].test_y
        proba = ensemble.predict_proba([calibration.apply_temperature(p.test_proba, temperature) for p in preds])
        clusters = subject_clusters(folder, list(preds[0].test_paths))
        recipe, recipe_weights = recipe_units(folder, choice.members, choice.weights)
        sources = {"members": oof_ensemble(preds, choice.weights, temperature, vote),
                   "recipe": oof_ensemble(recipe, recipe_weights, temperature, vote)}
        entry: dict = {"members": choice.members, "n_test": int(len(y)),
                       "test_clusters": None if clusters is None else int(len(np.unique(clusters))), "sources": {}}
        say(f"\n{choice.name} ({len(choice.members)} members), {len(y)} test images"
            + ("" if clusters is None else f" in {entry['test_clusters']} clusters"))
        for source, (_, val_y, val_p) in sources.items():
            out: dict = {"n_calibration": int(len(val_y)), "conformal": [], "selective": []}
            for cal in conformal.calibrate(val_y, val_p, levels, "auto", nonempty=True):
                for raw in (True, False):
                    sets = conformal.prediction_sets(proba, cal, raw=raw)
                    res = conformal.evaluate_sets(y, sets, classes, cal.level, clusters=clusters, n_boot=n_boot,
                                                  seed=seed, confidence_level=conf_level, stratify=stratify)
                    row = {"level": cal.level, "nonempty": not raw, "coverage": res.coverage,
                           "coverage_ci": list(res.coverage_ci), "mean_size": res.mean_size}
                    if not raw and clusters is not None:
                        row["heterogeneity"] = between_cluster_share(sets[np.arange(len(y)), y].astype(float),
                                                                     clusters)
                    out["conformal"].append(row)
                    say(f"  {source:7s} (n={len(val_y)}) sets {cal.level:.0%}{'' if raw else ' nonempty'}: coverage "
                        f"{res.coverage:.3f} [{res.coverage_ci[0]:.3f}, {res.coverage_ci[1]:.3f}], mean size "
                        f"{res.mean_size:.2f}" + (f"; between-cluster share {row['heterogeneity']['between_share']:.3f}, "
                                                  f"design effect {row['heterogeneity']['design_effect']:.2f}"
                                                  if "heterogeneity" in row else ""))
            for target in targets:
                chosen = selective.choose_threshold(val_y, val_p, target)
                res = selective.evaluate_threshold(y, proba, chosen.threshold, clusters=clusters, n_boot=n_boot,
                                                   seed=seed, confidence_level=conf_level, stratify=stratify)
                out["selective"].append({"target": target, "threshold": chosen.threshold,
                                         "validation_coverage": chosen.coverage, "coverage": res.coverage,
                                         "coverage_ci": list(res.coverage_ci), "accuracy": res.accuracy,
                                         "accuracy_ci": list(res.accuracy_ci), "n_accepted": res.n_accepted})
                acc = "n/a" if res.accuracy is None else (f"{res.accuracy:.3f} [{res.accuracy_ci[0]:.3f}, "
                                                         f"{res.accuracy_ci[1]:.3f}]")
                say(f"  {source:7s} refer for {target}: threshold {chosen.threshold}, test coverage {res.coverage:.3f} "
                    f"[{res.coverage_ci[0]:.3f}, {res.coverage_ci[1]:.3f}], accuracy on the rest {acc} "
                    f"({res.n_accepted} images)")
            entry["sources"][source] = out
        result["models"][choice.name] = entry
    print(json.dumps(result, default=float))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

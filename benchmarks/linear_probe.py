"""Baseline: a scikit-learn logistic regression on each backbone's frozen features of a run.

Reads the pooled features that ``allwen run`` cached for stage 1 (``RUN/cache/features/``, one
entry per backbone; nothing is recomputed), fits ``LogisticRegression()`` (scikit-learn's
defaults: L2, C=1, lbfgs; ``max_iter`` raised so it converges) on the run's training pool (every
non-test image: the union of the folds) and scores the run's held-out test side, with the
run's own bootstrap settings (``evaluation.bootstrap``, ``confidence``, ``seed``) so its
intervals are computed the same way as ``report/summary.json``'s. Prints one JSON object, and
the run's best single model and most accurate ensemble from ``summary.json`` beside it.

    python benchmarks/linear_probe.py runs/taleqani_4class
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from allwen.config import expand_scenarios
from allwen.data import load_source
from allwen.data.splits import load_split
from allwen.evaluation.metrics import compute_metrics
from allwen.evaluation.run import subject_clusters
from allwen.evaluation.stats import bootstrap_ci
from allwen.runfolder import RunFolder
from allwen.models import backbone_data_config, build_classifier
from allwen.pipeline import load_run_config
from allwen.training.feature_cache import FeatureCache, cache_key, pretrained_tag

METRICS = ("accuracy", "balanced_accuracy", "f1", "kappa", "auc")


def cached_features(run_dir: Path, cfg, n_classes: int, hashes: list[str]) -> np.ndarray:
    """The stage-1 features the run cached for ``cfg``'s backbone, in ``hashes`` order."""
    model = build_classifier(cfg.model, n_classes)
    cache = FeatureCache(run_dir / "cache" / "features")
    norm = backbone_data_config(model.backbone)
    key, shape = None, None
    for runtime in ("onnxruntime", "torch", "openvino"):  # the key names the runtime that computed them
        key = cache_key(cfg.model, cfg.data, norm, cfg.train.seed, pretrained_tag(model.backbone),
                        output="features", views=1, dtype="float32", runtime=runtime)
        shape = cache.shape_of(key)
        if shape is not None:
            break
    if shape is None:
        raise SystemExit(f"{run_dir}: no cached features for {cfg.model.backbone}; run `allwen run` first")

    def compute(positions):
        raise SystemExit(f"{run_dir}: {len(positions)} images have no cached {cfg.model.backbone} features")

    values, rows = cache.outputs(key, hashes, shape, "float32", compute)
    return np.asarray(values[rows][:, 0], dtype=np.float64)


def interval_entry(y: np.ndarray, proba: np.ndarray, cfg, clusters) -> dict:
    ev = cfg.evaluation
    values = compute_metrics(y, proba)
    ci = bootstrap_ci(y, proba, ev.bootstrap, ev.confidence, ev.seed, METRICS, clusters)
    return {m: [round(values[m], 4), [round(ci[m][0], 4), round(ci[m][1], 4)]] for m in METRICS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--max-iter", type=int, default=5000)
    args = parser.parse_args()
    run_dir = args.run
    cfg = load_run_config(run_dir)
    table = load_source(cfg.data.path, cfg.data.source, cfg.data.view)
    audit = json.loads((run_dir / "data" / "audit.json").read_text())
    if audit["unreadable"]:
        table = table.subset(~table.frame["path"].isin(set(audit["unreadable"])))
    split = load_split(RunFolder(run_dir), table)
    pool = np.unique(np.concatenate([np.concatenate(f) for f in split.folds]))
    test = split.test
    labels = table.label_indices()
    hashes = list(table.frame["sha256"])
    test_paths = [table.frame["path"][i] for i in test]
    clusters = subject_clusters(RunFolder(run_dir), test_paths)
    out: dict = {"run": str(run_dir), "n_train_pool": len(pool), "n_test": len(test), "probes": {}}
    for name, scenario in expand_scenarios(cfg):
        x = cached_features(run_dir, scenario, len(table.classes), hashes)
        probe = LogisticRegression(max_iter=args.max_iter).fit(x[pool], labels[pool])
        proba = probe.predict_proba(x[test])
        out["probes"][name] = {"backbone": scenario.model.backbone, "features": x.shape[1],
                               **interval_entry(labels[test], proba, cfg, clusters)}
    summary_path = RunFolder(run_dir).summary_path
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        models = {m["name"]: m for m in summary["single_models"] + summary["ensembles"]}

        def entry(name: str) -> dict:
            metrics = models[name]["metrics"]
            ci = metrics.get("ci", {})  # no interval where the statistics say it cannot be trusted (one cluster)
            return {"name": name, **{m: [round(metrics[m], 4), [round(v, 4) for v in ci.get(m) or []]] for m in METRICS}}

        best_ensemble = max(summary["ensembles"], key=lambda e: (e["metrics"]["accuracy"], e["metrics"]["kappa"]))
        out["run_best_single_by_validation"] = entry(summary["best_single"])
        out["run_most_accurate_ensemble_on_test"] = entry(best_ensemble["name"])
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

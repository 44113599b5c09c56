"""Statistics that say when they fail: few clusters, classes missing from resamples, undefined metrics."""

import numpy as np

from allwen.evaluation.stats import bootstrap_distributions, bootstrap_weights
from allwen.evaluation.trust import (class_missing_resamples, cluster_warnings, drop_intervals,
                                     resample_warnings)

CLASSES = ["all", "hem"]


def _tiny_cohort():
    """The old demo's shape: 1 ALL cluster and 3 hem clusters on the test side, 5 cells each."""
    clusters = np.repeat(np.arange(4), 5)
    y = np.where(clusters == 0, 0, 1)
    rng = np.random.default_rng(0)
    p = np.clip(np.where(y == 1, 0.7, 0.3) + rng.normal(0, 0.15, len(y)), 0.01, 0.99)
    return y, clusters, np.stack([1 - p, p], axis=1)


def test_few_clusters_and_one_cluster_are_warned():
    y, clusters, _ = _tiny_cohort()
    warnings = cluster_warnings(y, clusters, CLASSES, min_clusters=6)
    kinds = {w.kind: w for w in warnings}
    assert kinds["one_cluster"].classes == ["all"]
    assert kinds["few_clusters"].classes == ["hem"] and kinds["few_clusters"].count == 3
    assert drop_intervals(warnings)
    assert cluster_warnings(y, None, CLASSES) == []  # image-level statistics: no cluster warning


def test_enough_clusters_give_no_warning():
    clusters = np.repeat(np.arange(14), 4)
    y = (clusters >= 7).astype(int)
    assert cluster_warnings(y, clusters, CLASSES, min_clusters=6) == []
    weights = bootstrap_weights(len(y), 500, 0, clusters)
    assert resample_warnings(y, weights, {}, CLASSES) == []


def test_resamples_without_a_class_are_counted_and_warned():
    y, clusters, proba = _tiny_cohort()
    weights = bootstrap_weights(len(y), 500, 0, clusters)
    missing = class_missing_resamples(y, weights, 2)
    # P(the one ALL cluster is never drawn in 4 draws) = (3/4)^4 = 0.32
    assert 0.25 * 500 < missing[0] < 0.39 * 500 and missing[1] < 10
    dists = bootstrap_distributions(y, {"m": proba}, 500, 0, ("accuracy", "auc"), clusters)
    warnings = resample_warnings(y, weights, dists, CLASSES)
    kinds = {w.kind: w for w in warnings}
    assert kinds["class_missing"].count == missing[0] and kinds["class_missing"].total == 500
    assert kinds["metric_undefined"].metrics == ["auc"] and kinds["metric_undefined"].models == ["m"]
    assert "accuracy" not in {m for w in warnings if w.kind == "metric_undefined" for m in w.metrics}


def test_assess_uses_the_resamples_of_the_distributions():
    from allwen.evaluation.trust import assess

    y, clusters, proba = _tiny_cohort()
    dists = bootstrap_distributions(y, {"m": proba}, 300, 5, ("accuracy", "auc"), clusters)
    warnings = assess(y, clusters, CLASSES, dists, 300, 5)
    worst_class = next(w for w in warnings if w.kind == "class_missing").count
    undefined = next(w for w in warnings if w.kind == "metric_undefined").count
    weights = bootstrap_weights(len(y), 300, 5, clusters)
    per_class = weights @ np.eye(2, dtype=int)[y]
    assert worst_class == int((per_class[:, 0] == 0).sum())
    # the same resamples: AUC is undefined exactly where a class is missing
    assert undefined == int((per_class == 0).any(axis=1).sum()) == int(np.isnan(dists["m"]["auc"]).sum())


def test_a_one_cluster_class_gets_no_cluster_interval():
    from allwen.config.schema import Config, EvaluationConfig
    from allwen.evaluation.comparisons import TestStatistics

    y, clusters, proba = _tiny_cohort()
    cfg = Config(evaluation=EvaluationConfig(bootstrap=100))
    stats = TestStatistics(y, clusters, cfg, {"m": proba}, classes=CLASSES)
    assert stats.intervals_withheld
    assert stats.entry("m", CLASSES)["metrics"].ci == {}
    described = stats.description()
    assert described.intervals_withheld and described.clusters_per_class == {"all": 1, "hem": 3}
    # the default bootstrap draws clusters within each class: no resample loses a class
    assert {w.kind for w in described.warnings} == {"one_cluster", "few_clusters"}
    unstratified = TestStatistics(y, clusters, Config(evaluation=EvaluationConfig(bootstrap=100, stratify=False)),
                                  {"m": proba}, classes=CLASSES)
    assert {w.kind for w in unstratified.description().warnings} >= {"one_cluster", "few_clusters", "class_missing"}
    # enough clusters: intervals, and no warning
    many = np.repeat(np.arange(14), 4)
    y2 = (many >= 7).astype(int)
    p2 = np.stack([1 - (0.3 + 0.4 * y2), 0.3 + 0.4 * y2], axis=1)
    ok = TestStatistics(y2, many, cfg, {"m": p2}, classes=CLASSES)
    assert ok.warnings == [] and "accuracy" in ok.entry("m", CLASSES)["metrics"].ci


def test_stratified_resamples_keep_each_class_cluster_count():
    from allwen.evaluation.stats import class_strata

    clusters = np.repeat(np.arange(10), 3)
    y = (clusters >= 3).astype(int)  # 3 ALL clusters, 7 hem clusters
    strata = class_strata(y, clusters)
    assert strata is not None
    weights = bootstrap_weights(len(y), 400, 1, clusters, strata)
    per_class = weights @ np.eye(2, dtype=int)[y]
    assert (per_class[:, 0] == 9).all() and (per_class[:, 1] == 21).all()
    assert resample_warnings(y, weights, {}, CLASSES) == []
    # a resample still varies which clusters of a class it draws
    assert len({tuple(row) for row in weights[:, ::3]}) > 300
    # a cluster holding two classes leaves no class strata
    mixed = y.copy()
    mixed[0] = 1
    assert class_strata(mixed, clusters) is None

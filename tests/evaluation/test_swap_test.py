"""The cluster swap test: every metric of the confusion counts, paired models or paired fold sets."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, f1_score, precision_score, recall_score

from allwen.evaluation.stats import cluster_swap_test, confusion_metric


def _counts(y, p, k):
    return np.bincount(y * k + p, minlength=k * k).reshape(k, k)


@pytest.mark.parametrize("average", ["binary", "macro", "weighted"])
def test_confusion_metrics_match_scikit_learn(average):
    rng = np.random.default_rng(1)
    k = 2 if average == "binary" else 3
    y, p = rng.integers(0, k, 200), rng.integers(0, k, 200)
    c = _counts(y, p, k)
    for name, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        assert confusion_metric(c, name, average) == pytest.approx(fn(y, p, average=average, zero_division=0))
    assert confusion_metric(c, "kappa") == pytest.approx(cohen_kappa_score(y, p))
    assert confusion_metric(c, "accuracy") == pytest.approx(np.mean(y == p))


def test_worked_example_two_clusters():
    """Two subjects of 2 images each, labels [1, 1 | 0, 0]; a right on all, b wrong on subject 0 only.
    accuracy a 1.0, b 0.5: diff 0.5. The 4 swaps: none (+0.5), subject 0 (-0.5), subject 1 (+0.5),
    both (-0.5): every |null| >= 0.5, so p = 4 / 4 = 1."""
    y = np.array([1, 1, 0, 0])
    a, b = np.array([1, 1, 0, 0]), np.array([0, 0, 0, 0])
    r = cluster_swap_test(y, [a], [b], np.array([0, 0, 1, 1]), "accuracy")
    assert r["diff"] == pytest.approx(0.5) and r["pvalue"] == 1.0 and r["exact"] and r["n_permutations"] == 4


def test_a_real_difference_over_many_subjects_is_significant_and_none_is_not():
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(30), 10)
    y = np.repeat(rng.integers(0, 2, 30), 10)
    good = [np.where(rng.random(300) < 0.95, y, 1 - y) for _ in range(3)]
    bad = [np.where(rng.random(300) < 0.6, y, 1 - y) for _ in range(3)]
    for metric in ("accuracy", "precision", "recall", "f1", "kappa"):
        assert cluster_swap_test(y, good, bad, clusters, metric, n_perm=500)["pvalue"] < 0.01
    same = cluster_swap_test(y, good, good[::-1], clusters, "f1", n_perm=500)
    assert same["diff"] == pytest.approx(0.0) and same["pvalue"] > 0.5


def test_mean_over_folds_is_the_statistic():
    y = np.array([0, 1, 0, 1, 1, 0])
    a = [np.array([0, 1, 0, 1, 1, 0]), np.array([1, 1, 0, 1, 1, 0])]
    b = [np.array([1, 0, 0, 1, 1, 0]), np.array([0, 1, 0, 1, 1, 0])]
    r = cluster_swap_test(y, a, b, None, "accuracy")
    assert r["diff"] == pytest.approx((1 + 5 / 6) / 2 - (4 / 6 + 1) / 2)
    with pytest.raises(ValueError, match="as many models"):
        cluster_swap_test(y, a, b[:1], None)

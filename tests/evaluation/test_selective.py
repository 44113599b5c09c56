"""Selective prediction: the accuracy-coverage curve, the threshold choice and its test intervals."""

from __future__ import annotations

import numpy as np
import pytest

from allwen.evaluation.selective import accuracy_coverage_curve, choose_threshold, evaluate_threshold, refer_mask


def _binary(p1, y):
    p1 = np.asarray(p1, float)
    return np.asarray(y), np.c_[1 - p1, p1]


def test_curve_and_threshold_by_hand():
    # confidences 0.95 (right), 0.9 (right), 0.8 (wrong), 0.8 (right), 0.6 (wrong)
    y, p = _binary([0.95, 0.1, 0.8, 0.2, 0.6], [1, 0, 0, 0, 0])
    curve = accuracy_coverage_curve(y, p)
    np.testing.assert_allclose(curve.threshold, [0.95, 0.9, 0.8, 0.6])
    np.testing.assert_array_equal(curve.n_accepted, [1, 2, 4, 5])  # the two 0.8s go together
    np.testing.assert_allclose(curve.accuracy, [1, 1, 3 / 4, 3 / 5])
    np.testing.assert_allclose(curve.coverage, [0.2, 0.4, 0.8, 1.0])
    chosen = choose_threshold(y, p, target_accuracy=0.99)
    assert chosen.achieved and chosen.threshold == 0.9 and chosen.n_accepted == 2 and chosen.coverage == 0.4
    assert choose_threshold(y, p, target_accuracy=0.75).threshold == 0.8
    assert choose_threshold(y, p, target_accuracy=0.5).threshold == 0.6
    np.testing.assert_array_equal(refer_mask(p, 0.9), [False, False, True, True, True])


def test_unreachable_target_refers_everything():
    y, p = _binary([0.9, 0.8], [0, 1])  # the most confident image is wrong
    chosen = choose_threshold(y, p, target_accuracy=0.99)
    assert not chosen.achieved and chosen.threshold is None and chosen.coverage == 0.0
    assert refer_mask(p, None).all()
    result = evaluate_threshold(y, p, None, n_boot=50)
    assert result.coverage == 0.0 and result.accuracy is None and result.undefined_resamples == 50


def test_min_accepted_and_bad_target():
    y, p = _binary([0.95, 0.1, 0.8, 0.2, 0.6], [1, 0, 0, 0, 0])
    assert choose_threshold(y, p, 0.99, min_accepted=3).threshold is None
    with pytest.raises(ValueError, match="target accuracy"):
        choose_threshold(y, p, 1.5)


def test_evaluate_threshold_intervals_cover_point_and_use_subjects():
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    margin = rng.uniform(0, 0.5, n)
    right = rng.random(n) < 0.5 + margin  # more confident, more often right
    p1 = np.where(right == (y == 1), 0.5 + margin, 0.5 - margin)
    y, p = _binary(p1, y)
    chosen = choose_threshold(y, p, 0.95)
    res = evaluate_threshold(y, p, chosen.threshold, n_boot=300)
    assert res.coverage == pytest.approx(chosen.coverage) and res.accuracy == pytest.approx(chosen.accuracy)
    assert res.coverage_ci[0] <= res.coverage <= res.coverage_ci[1]
    assert res.accuracy_ci[0] <= res.accuracy <= res.accuracy_ci[1]
    subjects = np.repeat(np.arange(20), n // 20)
    by_subject = evaluate_threshold(y, p, chosen.threshold, clusters=subjects, n_boot=300)
    assert by_subject.unit == "subject" and by_subject.accuracy == res.accuracy
    # accepted accuracy per resample, recomputed by hand for the first subject resample
    from allwen.evaluation.stats import bootstrap_weights

    w = bootstrap_weights(n, 300, 0, subjects)[0]
    acc = ~refer_mask(p, chosen.threshold)
    ok = acc & (p.argmax(1) == y)
    assert 0 < (w @ ok) / (w @ acc) <= 1


def test_curve_points_are_capped_and_keep_the_ends():
    rng = np.random.default_rng(1)
    y, p = _binary(rng.random(1000), rng.integers(0, 2, 1000))
    curve = accuracy_coverage_curve(y, p)
    pts = curve.points(50)
    assert len(pts) <= 50 and pts[0]["threshold"] == curve.threshold[0] and pts[-1]["coverage"] == 1.0


def test_intervals_draw_class_pure_subjects_within_their_class():
    """evaluation.stratify: the same resamples as the stats library's class-stratified cluster bootstrap."""
    from allwen.evaluation import conformal
    from allwen.evaluation.selective import evaluate_threshold
    from allwen.evaluation.stats import bootstrap_weights, class_strata, percentile_interval

    rng = np.random.default_rng(3)
    clusters = np.repeat(np.arange(12), 10)
    y = (clusters >= 4).astype(int)  # 4 subjects of class 0, 8 of class 1: class-pure
    p1 = np.clip(0.5 + (2 * y - 1) * rng.uniform(0.0, 0.5, len(y)) + rng.normal(0, 0.15, len(y)), 0.01, 0.99)
    proba = np.stack([1 - p1, p1], axis=1)
    weights = bootstrap_weights(len(y), 300, 0, clusters, class_strata(y, clusters))
    assert np.allclose(weights[:, y == 0].sum(axis=1), 40) and np.allclose(weights[:, y == 1].sum(axis=1), 80)
    accepted = proba.max(axis=1) >= 0.7
    res = evaluate_threshold(y, proba, 0.7, clusters=clusters, n_boot=300, seed=0)
    assert res.coverage_ci == percentile_interval((weights @ accepted) / weights.sum(axis=1), 0.95)
    plain = evaluate_threshold(y, proba, 0.7, clusters=clusters, n_boot=300, seed=0, stratify=False)
    assert plain.coverage_ci != res.coverage_ci
    sets = proba >= 0.3
    ev = conformal.evaluate_sets(y, sets, ["a", "b"], 0.9, clusters=clusters, n_boot=300, seed=0)
    covered = sets[np.arange(len(y)), y].astype(float)
    assert ev.coverage_ci == percentile_interval((weights @ covered) / weights.sum(axis=1), 0.95)

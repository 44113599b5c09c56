"""Conformal sets: the distilled thresholds equal crepes' sets; coverage holds per class with Mondrian."""

from __future__ import annotations

import numpy as np
import pytest

from allwen.evaluation.conformal import (
    calibrate,
    column_name,
    crepes_sets,
    evaluate_sets,
    format_set,
    is_imbalanced,
    prediction_sets,
)


def _data(seed, n, k, weights=None, decimals=None, strength=1.5):
    rng = np.random.default_rng(seed)
    y = rng.choice(k, size=n, p=weights)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += strength
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    if decimals is not None:  # ties between calibration scores
        p = np.round(p, decimals)
        p /= p.sum(1, keepdims=True)
    return y, p


@pytest.mark.parametrize("mondrian", [False, True])
@pytest.mark.parametrize("seed,n_cal,k,decimals", [(0, 99, 2, None), (1, 250, 4, 2), (2, 19, 3, 1), (3, 7, 2, None)])
def test_thresholds_reproduce_crepes_exactly(seed, n_cal, k, decimals, mondrian):
    y, p = _data(seed, n_cal, k, decimals=decimals)
    _, p_test = _data(seed + 100, 300, k, decimals=decimals)
    for cal in calibrate(y, p, levels=(0.8, 0.9, 0.95), mondrian=mondrian):
        ours = prediction_sets(p_test, cal)
        ref = crepes_sets(y, p, p_test, cal.level, mondrian)
        np.testing.assert_array_equal(ours, ref)


def test_threshold_by_hand():
    # 9 calibration scores 0.1..0.9; level 0.8: need #{cal >= a} + 1 >= 0.2 * 10, i.e. count >= 1 -> a <= 0.9
    y = np.zeros(9, int)
    p = np.c_[1 - np.arange(1, 10) / 10, np.arange(1, 10) / 10]
    (cal,) = calibrate(y, p, levels=(0.8,), mondrian=False)
    assert cal.threshold == [pytest.approx(0.9), pytest.approx(0.9)]
    (cal,) = calibrate(y, p, levels=(0.6,), mondrian=False)  # count >= 3 -> a <= 0.7
    assert cal.threshold[0] == pytest.approx(0.7)
    (cal,) = calibrate(y, p, levels=(0.95,), mondrian=False)  # 0.05 * 10 = 0.5: always in the set
    assert cal.threshold == [None, None]
    assert prediction_sets(np.array([[0.0, 1.0]]), cal).all()


def test_mondrian_auto_and_per_class_coverage():
    weights = [0.85, 0.15]
    y, p = _data(5, 4000, 2, weights)
    assert is_imbalanced(y, 2) and not is_imbalanced(np.r_[np.zeros(10), np.ones(9)].astype(int), 2)
    yt, pt = _data(6, 4000, 2, weights)
    # the rare class is harder: shrink its evidence
    p[:, 1] *= 0.6
    pt[:, 1] *= 0.6
    p /= p.sum(1, keepdims=True)
    pt /= pt.sum(1, keepdims=True)
    marginal, = calibrate(y, p, (0.9,), mondrian=False)
    auto, = calibrate(y, p, (0.9,), mondrian="auto")
    assert auto.mondrian and auto.n_calibration == [int((y == 0).sum()), int((y == 1).sum())]
    ev_m = evaluate_sets(yt, prediction_sets(pt, marginal), ["a", "b"], 0.9, n_boot=200)
    ev_c = evaluate_sets(yt, prediction_sets(pt, auto), ["a", "b"], 0.9, n_boot=200)
    assert ev_m.coverage >= 0.88 and ev_c.coverage >= 0.88
    # marginal sets under-cover the rare class; class-conditional ones reach the level for it
    assert ev_m.per_class["b"]["coverage"] < 0.85
    assert ev_c.per_class["b"]["coverage"] >= 0.87
    lo, hi = ev_c.per_class["b"]["coverage_ci"]
    assert lo <= ev_c.per_class["b"]["coverage"] <= hi and hi - lo < 0.1


def test_evaluate_sets_by_hand_and_formatting():
    sets = np.array([[True, False], [True, True], [False, True], [False, False]])
    y = np.array([0, 1, 0, 1])
    ev = evaluate_sets(y, sets, ["hem", "all"], 0.9, n_boot=100, clusters=np.array([0, 0, 1, 1]))
    assert ev.coverage == 0.5 and ev.mean_size == 1.0 and ev.unit == "subject"
    hem = ev.per_class["hem"]
    assert (hem["n"], hem["coverage"], hem["mean_size"], hem["mean_size_ci"]) == (2, 0.5, 1.0, [1.0, 1.0])
    assert ev.per_class["all"]["coverage"] == 0.5 and ev.per_class["all"]["mean_size"] == 1.0
    assert [format_set(r, ["hem", "all"]) for r in sets] == ["hem", "hem|all", "all", ""]
    assert column_name(0.9) == "set_90" and column_name(0.95) == "set_95" and column_name(0.995) == "set_99.5"


def test_bad_levels():
    y, p = _data(0, 20, 2)
    with pytest.raises(ValueError, match="level"):
        calibrate(y, p, levels=(90,))


def test_nonempty_sets_add_only_the_predicted_class():
    """A very accurate model calibrated on easy images leaves harder images with empty sets; nonempty fills them."""
    from allwen.evaluation.metrics import predict_labels

    y_cal, p_cal = _data(0, 400, 3, strength=6.0)  # nearly always right: tiny calibration scores
    y, p = _data(1, 300, 3, strength=2.0)  # harder images
    raw_cal = calibrate(y_cal, p_cal, [0.9])[0]
    cal = calibrate(y_cal, p_cal, [0.9], nonempty=True)[0]
    raw, filled = prediction_sets(p, raw_cal), prediction_sets(p, cal)
    assert np.array_equal(prediction_sets(p, cal, raw=True), raw)
    assert (raw.sum(1) == 0).mean() > 0.2 and (filled.sum(1) >= 1).all()
    assert (filled >= raw).all()  # only grows
    added = filled & ~raw
    assert (added.sum(1) <= 1).all() and (added.argmax(1)[added.any(1)] == predict_labels(p)[added.any(1)]).all()
    covered = lambda s: s[np.arange(len(y)), y].mean()  # noqa: E731
    assert covered(filled) >= covered(raw)


def test_clusters_per_class_and_short_classes():
    from allwen.evaluation.conformal import clusters_per_class, short_classes

    y = np.array([0, 0, 0, 1, 1, 1])
    clusters = np.array(["a", "a", "b", "c", "c", "c"])
    assert clusters_per_class(y, 3, clusters) == [2, 1, 0]
    assert clusters_per_class(y, 2) == [3, 3]
    assert short_classes([6, 5], ["x", "y"]) == {"y": 5}  # evaluation.min_clusters' default, 6
    assert short_classes([19, 25], ["x", "y"], minimum=20) == {"x": 19}


def test_cross_fit_calibrates_each_fold_on_the_others_only():
    from allwen.evaluation.conformal import cross_fit

    y, p = _data(7, 600, 3)
    folds = np.repeat(np.arange(4), 150)
    clusters = np.repeat(np.arange(60), 10)  # 10 images per cluster, 15 clusters per fold
    fits = cross_fit(y, p, folds, (0.9, 0.95), clusters=clusters, mondrian=True, nonempty=True)
    assert [f.level for f in fits] == [0.9, 0.95]
    for f in range(4):
        held, cal = folds == f, folds != f
        for fit, c in zip(fits, calibrate(y[cal], p[cal], (0.9, 0.95), True, nonempty=True)):
            np.testing.assert_array_equal(fit.raw[held], crepes_sets(y[cal], p[cal], p[held], c.level, True))
            np.testing.assert_array_equal(fit.sets[held], prediction_sets(p[held], c))
    # calibration clusters per class: the fewest over the four folds
    expect = [min(len(np.unique(clusters[(folds != f) & (y == c)])) for f in range(4)) for c in range(3)]
    assert fits[0].calibration_clusters == expect
    # exchangeable folds: every class reaches about its level, and the two levels differ
    for fit in fits:
        ev = evaluate_sets(y, fit.raw, ["a", "b", "c"], fit.level, n_boot=100)
        assert all(abs(v["coverage"] - fit.level) < 0.05 for v in ev.per_class.values())
    assert fits[1].raw.sum() > fits[0].raw.sum()
    with pytest.raises(ValueError, match="at least 2 folds"):
        cross_fit(y, p, np.zeros(len(y)))


def test_evaluate_sets_counts_empty_raw_sets_per_class():
    raw = np.array([[False, False], [True, False], [False, False], [False, True]])
    served = raw.copy()
    served[[0, 2], [0, 1]] = True  # the predicted class added
    y = np.array([0, 0, 1, 1])
    ev = evaluate_sets(y, served, ["a", "b"], 0.9, n_boot=50, raw=raw)
    assert ev.raw_empty == 0.5 and ev.raw_coverage == 0.5 and ev.coverage == 1.0
    assert ev.per_class["a"]["raw_empty"] == 0.5 and ev.per_class["b"]["raw_coverage"] == 0.5

"""Weighting scores and their normalisation, checked against hand arithmetic."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from allwen.ensemble.weighting import (
    WEIGHTING_NAMES,
    WEIGHTINGS,
    get_weighting,
    normalise_weights,
)


def _val(y: list[int], pred: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and binary probabilities whose argmax is ``pred`` (0.7 on the predicted class)."""
    p1 = np.where(np.asarray(pred) == 1, 0.7, 0.3)
    return np.asarray(y), np.column_stack([1 - p1, p1])


# Member A of the hand-checked ensemble: 5 positives, 5 negatives.
# TP=4 FN=1 TN=4 FP=1 -> accuracy 8/10 = 0.8; F1 = 2TP/(2TP+FP+FN) = 8/10 = 0.8;
# kappa: p_o = 0.8, p_e = P(y=1)P(pred=1) + P(y=0)P(pred=0) = .5*.5 + .5*.5 = 0.5,
# kappa = (0.8 - 0.5) / (1 - 0.5) = 0.6.
Y_A, P_A = _val([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0, 0, 1])


def test_scores_by_hand():
    assert WEIGHTINGS["accuracy"](Y_A, P_A) == pytest.approx(0.8)
    assert WEIGHTINGS["f1"](Y_A, P_A) == pytest.approx(0.8)
    assert WEIGHTINGS["kappa"](Y_A, P_A) == pytest.approx(0.6)
    # AUC over 5x5 pairs: positives' scores 4x0.7 + 1x0.3, negatives' 1x0.7 + 4x0.3.
    # wins: 4 (pos .7) * 4 (neg .3) = 16; ties: 4*1 (.7=.7) + 1*4 (.3=.3) = 8; losses 1.
    # AUC = (16 + 8/2) / 25 = 0.8
    assert WEIGHTINGS["auc"](Y_A, P_A) == pytest.approx(0.8)
    assert WEIGHTINGS["uniform"](Y_A, P_A) == 1.0


def test_multiclass_scores_are_macro():
    y = np.array([0, 1, 2, 0, 1, 2])
    proba = np.eye(3)[[0, 1, 2, 0, 2, 1]] * 0.8 + 0.2 / 3
    # accuracy 4/6; per-class F1: class 0 = 1, classes 1 and 2 = 0.5 each -> macro 2/3
    assert WEIGHTINGS["accuracy"](y, proba) == pytest.approx(4 / 6)
    assert WEIGHTINGS["f1"](y, proba) == pytest.approx(2 / 3)
    assert 0 < WEIGHTINGS["auc"](y, proba) <= 1


def test_get_weighting_unknown_lists_known_names():
    known = "known weightings: accuracy, f1, kappa, auc, uniform, vote"
    with pytest.raises(ValueError, match=known):
        get_weighting("precision")
    with pytest.raises(ValueError, match="majority vote"):
        get_weighting("vote")
    assert get_weighting("kappa") is WEIGHTINGS["kappa"]
    assert set(WEIGHTINGS) | {"vote"} == set(WEIGHTING_NAMES)


def test_normalise_sums_to_one():
    weights, note = normalise_weights([0.8, 0.6, 0.9])
    np.testing.assert_allclose(weights, np.array([0.8, 0.6, 0.9]) / 2.3)
    assert note == ""


def test_score_at_or_below_zero_gets_weight_zero():
    weights, note = normalise_weights([0.6, -0.2, 0.0, 0.2], names=["a", "b", "c", "d"])
    np.testing.assert_allclose(weights, [0.75, 0.0, 0.0, 0.25])
    assert note.endswith("no better than chance): b (-0.2), c (0)")


def test_all_zero_falls_back_to_uniform_with_note(caplog):
    with caplog.at_level(logging.WARNING, logger="allwen.ensemble.weighting"):
        weights, note = normalise_weights([0.0, -0.1], names=["x", "y"])
    np.testing.assert_allclose(weights, [0.5, 0.5])
    assert "uniform" in note and "x" in note and "y" in note
    assert any("uniform" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_undefined_score_names_the_member(bad):
    with pytest.raises(ValueError, match=r"lr=1e-3/fold_2 .*another weighting"):
        normalise_weights([0.5, bad], names=["lr=1e-3/fold_1", "lr=1e-3/fold_2"])


def test_auc_and_kappa_undefined_on_single_class_fold_are_nan():
    y = np.ones(4, dtype=int)
    proba = np.column_stack([np.full(4, 0.2), np.full(4, 0.8)])
    assert math.isnan(WEIGHTINGS["auc"](y, proba))
    assert math.isnan(WEIGHTINGS["kappa"](y, proba))


def test_normalise_rejects_bad_shapes():
    with pytest.raises(ValueError, match="non-empty"):
        normalise_weights([])
    with pytest.raises(ValueError, match="2 scores but 1 member names"):
        normalise_weights([0.1, 0.2], names=["a"])

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
    known = "known weightings: accuracy, f1, kappa, auc, uniform, vote, greedy"
    with pytest.raises(ValueError, match=known):
        get_weighting("precision")
    for name in ("vote", "greedy"):
        with pytest.raises(ValueError, match="not a per-member score"):
            get_weighting(name)
    assert get_weighting("kappa") is WEIGHTINGS["kappa"]
    assert set(WEIGHTINGS) | {"vote", "greedy"} == set(WEIGHTING_NAMES)


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


# Greedy hand example: 4 validation rows y = (1, 1, 0, 0); P(class 1) of three members:
#   A = (0.90, 0.45, 0.10, 0.20) -> predicts 1,0,0,0: accuracy 3/4
#   B = (0.30, 0.90, 0.40, 0.60) -> predicts 0,1,0,1: accuracy 2/4
#   C = (0.40, 0.40, 0.60, 0.60) -> predicts 0,0,1,1: accuracy 0/4
# round 1: A alone is best (3/4).
# round 2: A+A = A (3/4); (A+B)/2 = (.600, .675, .250, .400) -> 4/4; (A+C)/2 = (.65, .425, .35, .40) -> 3/4: B.
# round 3: every candidate reaches 4/4 ((2A+B)/3 = (.70, .60, .20, .33)): the tie goes to A.
# round 4: (3A+B)/4 = (.75, .5625, .175, .30) -> 4/4, first again: A.
# counts after 3 rounds (2, 1, 0), after 4 rounds (3, 1, 0).
HAND_Y = np.array([1, 1, 0, 0])
HAND_P1 = np.array([[0.90, 0.45, 0.10, 0.20], [0.30, 0.90, 0.40, 0.60], [0.40, 0.40, 0.60, 0.60]])


def _two_columns(p1: np.ndarray) -> np.ndarray:
    return np.stack([1.0 - p1, p1], axis=-1)


def test_greedy_selection_hand_example():
    from allwen.ensemble.weighting import greedy_selection

    probas = _two_columns(HAND_P1)
    assert greedy_selection(probas, HAND_Y, "accuracy", rounds=1).tolist() == [1, 0, 0]
    assert greedy_selection(probas, HAND_Y, "accuracy", rounds=2).tolist() == [1, 1, 0]
    assert greedy_selection(probas, HAND_Y, "accuracy", rounds=3).tolist() == [2, 1, 0]
    assert greedy_selection(probas, HAND_Y, "accuracy", rounds=4).tolist() == [3, 1, 0]


def test_greedy_ensemble_weights_are_selection_counts():
    from allwen.ensemble.wen import WeightedEnsemble

    probas = list(_two_columns(HAND_P1))
    wen = WeightedEnsemble("greedy", metric="accuracy", rounds=4).fit(probas, [HAND_Y] * 3, names=["A", "B", "C"])
    np.testing.assert_allclose(wen.weights_, [0.75, 0.25, 0.0])
    assert wen.scores_.tolist() == [3.0, 1.0, 0.0] and "4 rounds" in wen.note_
    test = [_two_columns(np.array([0.2, 0.6])), _two_columns(np.array([1.0, 0.2])), _two_columns(np.array([0.5, 0.5]))]
    np.testing.assert_allclose(wen.predict_proba(test)[:, 1], [0.75 * 0.2 + 0.25 * 1.0, 0.75 * 0.6 + 0.25 * 0.2])
    with pytest.raises(ValueError, match="same validation rows"):
        WeightedEnsemble("greedy").fit(probas, [HAND_Y, HAND_Y, 1 - HAND_Y])

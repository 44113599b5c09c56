"""WeightedEnsemble on a three-member example whose every number is worked by hand."""

from __future__ import annotations

import numpy as np
import pytest


from allwen.ensemble.wen import VOTE_TIE_EPS, NotFittedError, WeightedEnsemble


def _val(y: list[int], pred: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and binary probabilities whose argmax is ``pred`` (0.7 on the predicted class)."""
    p1 = np.where(np.asarray(pred) == 1, 0.7, 0.3)
    return np.asarray(y), np.column_stack([1 - p1, p1])


def _binary(p1: list[float]) -> np.ndarray:
    p1 = np.asarray(p1, dtype=float)
    return np.column_stack([1 - p1, p1])


POS5_NEG5 = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
# Each validation fold: 5 positives then 5 negatives, so P(y=1) = 0.5 and kappa's chance
# agreement p_e = .5*P(pred=1) + .5*P(pred=0) = 0.5 whatever the member predicts.
# A: TP=4 FN=1 TN=4 FP=1 -> acc 0.8, F1 = 8/(8+1+1) = 0.8,    kappa = (.8-.5)/.5 = 0.6
# B: TP=3 FN=2 TN=3 FP=2 -> acc 0.6, F1 = 6/(6+2+2) = 0.6,    kappa = (.6-.5)/.5 = 0.2
# C: TP=5 FN=0 TN=4 FP=1 -> acc 0.9, F1 = 10/(10+1+0) = 10/11, kappa = (.9-.5)/.5 = 0.8
VAL = [
    _val(POS5_NEG5, [1, 1, 1, 1, 0, 0, 0, 0, 0, 1]),
    _val(POS5_NEG5, [1, 1, 1, 0, 0, 0, 0, 0, 1, 1]),
    _val(POS5_NEG5, [1, 1, 1, 1, 1, 0, 0, 0, 0, 1]),
]
VAL_Y = [y for y, _ in VAL]
VAL_P = [p for _, p in VAL]
NAMES = ["A", "B", "C"]

# Test probabilities of class 1 for 4 images.
TEST = [
    _binary([0.9, 0.6, 0.2, 0.4]),  # A votes 1, 1, 0, 0
    _binary([0.7, 0.3, 0.4, 0.8]),  # B votes 1, 0, 0, 1
    _binary([0.8, 0.1, 0.3, 0.6]),  # C votes 1, 0, 0, 1
]

HAND = {
    # weights 0.8, 0.6, 0.9 / 2.3 = 8/23, 6/23, 9/23
    # image 0: (8*.9 + 6*.7 + 9*.8)/23 = (7.2 + 4.2 + 7.2)/23 = 18.6/23, etc.
    "accuracy": (
        [0.8, 0.6, 0.9],
        [8 / 23, 6 / 23, 9 / 23],
        [18.6 / 23, 7.5 / 23, 6.7 / 23, 13.4 / 23],
    ),
    # scores .8, .6, 10/11; sum = 14/10 + 10/11 = 254/110 -> weights 88/254, 66/254, 100/254
    # image 0: (88*.9 + 66*.7 + 100*.8)/254 = (79.2 + 46.2 + 80)/254 = 205.4/254, etc.
    "f1": (
        [0.8, 0.6, 10 / 11],
        [88 / 254, 66 / 254, 100 / 254],
        [205.4 / 254, 82.6 / 254, 74 / 254, 148 / 254],
    ),
    # scores .6, .2, .8; sum 1.6 -> weights .375, .125, .5
    # image 0: .375*.9 + .125*.7 + .5*.8 = .3375 + .0875 + .4 = .825
    # image 1: .375*.6 + .125*.3 + .5*.1 = .225 + .0375 + .05 = .3125
    # image 2: .375*.2 + .125*.4 + .5*.3 = .075 + .05 + .15 = .275
    # image 3: .375*.4 + .125*.8 + .5*.6 = .15 + .1 + .3 = .55
    "kappa": ([0.6, 0.2, 0.8], [0.375, 0.125, 0.5], [0.825, 0.3125, 0.275, 0.55]),
    # plain mean: (.9+.7+.8)/3 = .8, (.6+.3+.1)/3 = 1/3, .9/3 = .3, 1.8/3 = .6
    "uniform": ([1.0, 1.0, 1.0], [1 / 3, 1 / 3, 1 / 3], [0.8, 1 / 3, 0.3, 0.6]),
    # votes for class 1 per image: 3, 1, 0, 2 of 3 members
    "vote": ([1.0, 1.0, 1.0], [1 / 3, 1 / 3, 1 / 3], [1.0, 1 / 3, 0.0, 2 / 3]),
}


@pytest.mark.parametrize("weighting", list(HAND))
def test_hand_checked_ensemble(weighting):
    scores, weights, p1 = HAND[weighting]
    wen = WeightedEnsemble(weighting=weighting).fit(VAL_P, VAL_Y, names=NAMES)
    np.testing.assert_allclose(wen.scores_, scores)
    np.testing.assert_allclose(wen.weights_, weights)
    assert wen.weights_.sum() == pytest.approx(1.0)
    assert wen.names_ == NAMES and wen.n_classes_ == 2 and wen.note_ == ""
    proba = wen.predict_proba(TEST)
    tol = VOTE_TIE_EPS if weighting == "vote" else 1e-12
    np.testing.assert_allclose(proba[:, 1], p1, atol=tol)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_vote_tie_broken_by_mean_probability():
    # Two members, one vote each on every image: a 1-1 tie everywhere.
    # image 0: mean P(1) = (.6 + .45)/2 = .525 > .5 -> class 1
    # image 1: mean P(1) = (.55 + .2)/2 = .375 < .5 -> class 0
    a = _binary([0.6, 0.55])
    b = _binary([0.45, 0.2])
    y, p = _val([0, 1], [0, 1])
    wen = WeightedEnsemble(weighting="vote").fit([p, p], [y, y])
    proba = wen.predict_proba([a, b])
    np.testing.assert_allclose(proba, 0.5, atol=VOTE_TIE_EPS)  # still vote fractions
    assert wen.predict([a, b]).tolist() == [1, 0]


def test_vote_tie_breaking_never_overturns_a_majority():
    # Three classes, three members: class 2 has two votes but the mean probability
    # would favour class 0 (mean P = .4 vs .38): the vote still wins.
    members = [
        np.array([[0.90, 0.05, 0.05]]),
        np.array([[0.15, 0.40, 0.45]]),
        np.array([[0.15, 0.20, 0.65]]),
    ]
    y = np.array([0, 1, 2])
    p = np.eye(3)
    wen = WeightedEnsemble(weighting="vote").fit([p] * 3, [y] * 3)
    np.testing.assert_allclose(wen.predict_proba(members), [[1 / 3, 0, 2 / 3]], atol=1e-5)
    assert wen.predict(members).tolist() == [2]


def test_kappa_at_chance_gets_weight_zero():
    # D predicts class 1 for every image: p_o = .5, p_e = .5*1 + .5*0 = .5 -> kappa 0
    d = _val(POS5_NEG5, [1] * 10)
    wen = WeightedEnsemble("kappa").fit([VAL_P[0], d[1]], [VAL_Y[0], d[0]], names=["A", "D"])
    np.testing.assert_allclose(wen.scores_, [0.6, 0.0])
    np.testing.assert_allclose(wen.weights_, [1.0, 0.0])
    assert "D (0)" in wen.note_
    np.testing.assert_allclose(wen.predict_proba([TEST[0], TEST[1]]), TEST[0])


def test_all_members_at_or_below_chance_fall_back_to_uniform():
    d = _val(POS5_NEG5, [1] * 10)  # kappa 0
    e = _val(POS5_NEG5, [0, 0, 0, 1, 1, 1, 1, 1, 0, 0])  # TP=2 TN=2: p_o .4 -> kappa -.2
    wen = WeightedEnsemble("kappa").fit([d[1], e[1]], [d[0], e[0]], names=["D", "E"])
    np.testing.assert_allclose(wen.scores_, [0.0, -0.2])
    np.testing.assert_allclose(wen.weights_, [0.5, 0.5])
    assert "uniform" in wen.note_
    np.testing.assert_allclose(
        wen.predict_proba([TEST[0], TEST[1]]), (TEST[0] + TEST[1]) / 2
    )


def test_undefined_auc_names_the_member():
    y = np.ones(3, dtype=int)
    with pytest.raises(ValueError, match="lr=0.1/fold_0"):
        WeightedEnsemble("auc").fit(
            [VAL_P[0], _binary([0.9, 0.8, 0.7])], [VAL_Y[0], y], names=["A", "lr=0.1/fold_0"]
        )


def test_unknown_weighting_is_rejected_at_fit():
    with pytest.raises(ValueError, match="known weightings"):
        WeightedEnsemble("median").fit(VAL_P, VAL_Y)


def test_fit_shape_mismatches():
    with pytest.raises(ValueError, match="3 members' probabilities but 2 label arrays"):
        WeightedEnsemble().fit(VAL_P, VAL_Y[:2])
    with pytest.raises(ValueError, match="B has 3 classes but A has 2"):
        WeightedEnsemble().fit([VAL_P[0], np.full((10, 3), 1 / 3)], VAL_Y[:2], names=["A", "B"])
    with pytest.raises(ValueError, match="validation of B: 9 labels for 10"):
        WeightedEnsemble().fit(VAL_P[:2], [VAL_Y[0], VAL_Y[1][:9]], names=["A", "B"])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
        WeightedEnsemble().fit(VAL_P[:1], [VAL_Y[0] + 1])
    with pytest.raises(ValueError, match="lists with one entry per member"):
        WeightedEnsemble().fit(VAL_P[0], VAL_Y[0])
    with pytest.raises(ValueError, match="at least one member"):
        WeightedEnsemble().fit([], [])
    with pytest.raises(ValueError, match="3 members but 2 names"):
        WeightedEnsemble().fit(VAL_P, VAL_Y, names=["A", "B"])


def test_predict_proba_shape_mismatches():
    wen = WeightedEnsemble("accuracy").fit(VAL_P, VAL_Y, names=NAMES)
    with pytest.raises(ValueError, match="fitted with 3 members .* got 2"):
        wen.predict_proba(TEST[:2])
    with pytest.raises(ValueError, match="test of C: 3 rows but A has 4"):
        wen.predict_proba([TEST[0], TEST[1], TEST[2][:3]])
    with pytest.raises(ValueError, match="test of B: 3 classes, fitted with 2"):
        wen.predict_proba([TEST[0], np.full((4, 3), 1 / 3), TEST[2]])
    with pytest.raises(ValueError, match="NaN"):
        wen.predict_proba([TEST[0], TEST[1], np.full((4, 2), np.nan)])


def test_predict_before_fit():
    with pytest.raises(NotFittedError):
        WeightedEnsemble().predict_proba(TEST)


def test_get_params_follow_sklearn():
    from sklearn.base import clone

    assert WeightedEnsemble("f1").get_params() == {"weighting": "f1", "metric": "accuracy", "rounds": 25}
    copy = clone(WeightedEnsemble("greedy", rounds=5))
    assert copy.get_params()["rounds"] == 5 and "rounds=5" in repr(copy)
    with pytest.raises(ValueError, match="unknown parameters"):
        WeightedEnsemble().set_params(weights=1)

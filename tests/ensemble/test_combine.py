"""The one combine rule (allwen.ensemble.combine): the fitted WEN, a bundle's ensemble and the out-of-fold
predictions a bundle's referral and sets are fitted on combine the same way, ties included."""

from __future__ import annotations

import numpy as np
import pytest

from allwen.ensemble.combine import VOTE_TIE_EPS, pooled_oof, recipe
from allwen.ensemble.wen import WeightedEnsemble

#: two members on three images; image 0 is a 0.5/0.5 tie for member a, image 2 a tie for both
A = np.array([[0.5, 0.5], [0.9, 0.1], [0.5, 0.5]])
B = np.array([[0.3, 0.7], [0.2, 0.8], [0.5, 0.5]])
PATHS = ["x", "y", "z"]
Y = np.array([1, 0, 1])


@pytest.mark.parametrize("weighting", ["vote", "uniform"])
def test_wen_a_bundles_ensemble_and_the_pooled_oof_agree_on_ties(weighting):
    """Fails on the old pooled rule (argmax: a 0.5/0.5 row voted for the lower class, the WEN for the higher)."""
    fitted = WeightedEnsemble(weighting).fit([A, B], [Y, Y], names=["a", "b"])
    loaded = WeightedEnsemble.from_weights(weighting, ["a", "b"], fitted.weights_.tolist(), 2)
    _, _, pooled = pooled_oof([(PATHS, Y, A, 0.5), (PATHS, Y, B, 0.5)], voting=weighting == "vote")
    np.testing.assert_array_equal(fitted.predict_proba([A, B]), loaded.predict_proba([A, B]))
    np.testing.assert_allclose(pooled, fitted.predict_proba([A, B]), rtol=0, atol=1e-15)
    if weighting == "vote":  # image 0: both members vote for the higher class (ties go up), as predict_labels says
        np.testing.assert_allclose(pooled[0], (1 - VOTE_TIE_EPS) * np.array([0.0, 1.0]) + VOTE_TIE_EPS * np.array([0.4, 0.6]))
        assert list(fitted.predict([A, B])) == [1, 0, 1]  # image 1: one vote each, the mean decides


def test_from_weights_refuses_weights_that_do_not_make_an_ensemble():
    with pytest.raises(ValueError, match="sum to 1"):
        WeightedEnsemble.from_weights("kappa", ["a", "b"], [0.5, 0.6], 2)
    with pytest.raises(ValueError, match="2 member names but 1 weights"):
        WeightedEnsemble.from_weights("kappa", ["a", "b"], [1.0], 2)
    ens = WeightedEnsemble.from_weights("kappa", ["a", "b"], [0.25, 0.75], 2)
    assert ens.weighting == "uniform" and ens.n_members_ == 2 and ens.names_ == ["a", "b"]
    np.testing.assert_allclose(ens.predict_proba([A, B]), 0.25 * A + 0.75 * B)


def test_pooled_oof_combines_the_members_that_predicted_each_image():
    a = (["x", "y"], np.array([0, 1]), np.array([[0.9, 0.1], [0.4, 0.6]]), 0.75)
    b = (["x", "z"], np.array([0, 0]), np.array([[0.5, 0.5], [0.8, 0.2]]), 0.25)
    paths, y, p = pooled_oof([a, b])
    assert paths == ["x", "y", "z"] and list(y) == [0, 1, 0]
    np.testing.assert_allclose(p, [[0.75 * 0.9 + 0.25 * 0.5, 0.75 * 0.1 + 0.25 * 0.5], [0.4, 0.6], [0.8, 0.2]])
    _, _, v = pooled_oof([a, b], voting=True)  # x: a votes hem, b's 0.5/0.5 votes all: a tie, the mean decides
    np.testing.assert_allclose(v[0], (1 - VOTE_TIE_EPS) * np.array([0.5, 0.5]) + VOTE_TIE_EPS * np.array([0.7, 0.3]))


def test_recipe_stands_a_unit_for_every_fold_of_its_scenario():
    """A champion calibrates on its scenario's every fold; an inter ensemble on itself; a scenario member as is."""
    from types import SimpleNamespace as U

    units = {s: [U(name=f"{s}/fold_{k}", scenario=s, fold=k) for k in range(3)] for s in ("a", "b")}
    got, weights = recipe([units["a"][1]], [1.0], units)
    assert [u.name for u in got] == ["a/fold_0", "a/fold_1", "a/fold_2"] and weights == [1.0, 1.0, 1.0]
    got, weights = recipe([units["a"][2], units["b"][0]], [0.25, 0.75], units)  # an intra ensemble of champions
    assert [u.name for u in got] == [f"{s}/fold_{k}" for s in "ab" for k in range(3)]
    assert weights == [0.25] * 3 + [0.75] * 3
    got, weights = recipe(units["a"], [0.2, 0.3, 0.5], units)  # inter: every fold already, weights summed per unit
    assert [u.name for u in got] == ["a/fold_0", "a/fold_1", "a/fold_2"] and weights == [1.0, 1.0, 1.0]
    scenario = U(name="b", scenario="b", fold=-1)
    assert recipe([scenario], [1.0], units) == ([scenario], [1.0])


def test_which_weighting_votes_is_asked_of_the_combine_rule_only():
    """Evaluation, export and the report ask ``votes``/``weights_matter``/``fitted``; no module outside
    ``allwen.ensemble`` compares a weighting with ``"vote"`` itself."""
    import re
    from pathlib import Path

    import allwen
    from allwen.ensemble.combine import votes, weights_matter
    from allwen.ensemble.weighting import fitted
    from allwen.config.choices import WEIGHTING_NAMES

    assert [w for w in WEIGHTING_NAMES if votes(w)] == ["vote"]
    assert [w for w in WEIGHTING_NAMES if not weights_matter(w)] == ["vote"]
    assert [w for w in WEIGHTING_NAMES if not fitted(w)] == ["uniform", "vote"]
    root = Path(allwen.__file__).parent
    asked = re.compile(r"""(==|!=|\bin)\s*[(\[]?[^)\]\n]*["']vote["']""")
    found = [f"{p.relative_to(root)}:{n}" for p in root.rglob("*.py") if p.parent.name != "ensemble"
             for n, line in enumerate(p.read_text().splitlines(), 1) if asked.search(line)]
    assert found == []

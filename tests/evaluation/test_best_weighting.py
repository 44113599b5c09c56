"""The best-weighting pick lives in evaluation/selection.py: the study's three first, ties to the first listed."""

from __future__ import annotations

from types import SimpleNamespace

from allwen.evaluation.selection import best_study_weighting, best_weighting, weighting_means


def _ensemble(weighting, accuracy):
    metrics = SimpleNamespace(accuracy=accuracy, value=lambda key: {"accuracy": accuracy}.get(key))
    return SimpleNamespace(name=f"{weighting}-{accuracy}", weighting=weighting, metrics=metrics)


def test_the_study_weighting_is_picked_among_accuracy_f1_kappa_before_any_other():
    ensembles = [_ensemble("kappa", 0.8), _ensemble("kappa", 0.9), _ensemble("f1", 0.84), _ensemble("uniform", 0.99)]
    means = weighting_means(ensembles)
    assert [(m.weighting, round(m.mean, 6), m.n) for m in means] == [("kappa", 0.85, 2), ("f1", 0.84, 1),
                                                                      ("uniform", 0.99, 1)]
    assert best_study_weighting(means) == "kappa" and best_weighting(means) == "uniform"
    assert best_study_weighting(weighting_means([_ensemble("vote", 0.7)])) == "vote"  # no study weighting: any
    tie = weighting_means([_ensemble("f1", 0.9), _ensemble("kappa", 0.9)])
    assert best_study_weighting(tie) == "f1" and best_weighting([]) is None


def test_the_means_follow_the_champion_rule():
    """validation: each ensemble's out-of-fold validation score (given); test: the test metric."""
    ensembles = [_ensemble("kappa", 0.9), _ensemble("f1", 0.8)]
    validation = {"kappa-0.9": 0.6, "f1-0.8": 0.7}
    by_validation = weighting_means(ensembles, "validation", "accuracy", validation)
    assert best_study_weighting(by_validation) == "f1"
    assert best_study_weighting(weighting_means(ensembles, "test", "accuracy")) == "kappa"

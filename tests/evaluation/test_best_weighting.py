"""The best-weighting pick lives in evaluation/selection.py: the study's three first, ties to the first listed."""

from __future__ import annotations

from types import SimpleNamespace

from allwen.evaluation.selection import best_study_weighting, best_weighting, weighting_means


def _ensemble(weighting, accuracy):
    return SimpleNamespace(weighting=weighting, metrics=SimpleNamespace(accuracy=accuracy))


def test_the_study_weighting_is_picked_among_accuracy_f1_kappa_before_any_other():
    ensembles = [_ensemble("kappa", 0.8), _ensemble("kappa", 0.9), _ensemble("f1", 0.84), _ensemble("uniform", 0.99)]
    means = weighting_means(ensembles)
    assert [(m.weighting, round(m.mean, 6), m.n) for m in means] == [("kappa", 0.85, 2), ("f1", 0.84, 1),
                                                                      ("uniform", 0.99, 1)]
    assert best_study_weighting(means) == "kappa" and best_weighting(means) == "uniform"
    assert best_study_weighting(weighting_means([_ensemble("vote", 0.7)])) == "vote"  # no study weighting: any
    tie = weighting_means([_ensemble("f1", 0.9), _ensemble("kappa", 0.9)])
    assert best_study_weighting(tie) == "f1" and best_weighting([]) is None

"""The Weighted Ensemble of Networks (WEN) as a small scikit-learn style estimator.

Members are networks that already predicted: the ensemble only sees their saved class
probabilities. Each member brings its own validation set (the fold models of a k-fold grid
validate on different folds), so ``fit`` takes lists, one entry per member, rather than one
array. ``fit`` scores every member on its own validation predictions with the chosen
weighting and normalises the scores into weights; ``predict_proba`` averages the members'
test probabilities with those weights.

``weighting="vote"`` is the majority-vote baseline: each member votes for its class and the
output is the fraction of votes per class, so an AUC can still be computed; both rules (the
average and the vote, with its tie-break) are written once, in :mod:`allwen.ensemble.combine`.

``weighting="greedy"`` is Caruana et al. (2004) ensemble selection: every member must
predict the same validation rows (scenarios' out-of-fold predictions, not fold models),
members are added one at a time, with replacement, to maximise ``metric`` of the average,
and the weights are the selection counts over ``rounds``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from allwen.ensemble.combine import VOTE_TIE_EPS, VOTING, combine, votes
from allwen.evaluation.metrics import predict_labels
from allwen.ensemble.weighting import (
    GREEDY_ROUNDS,
    check_weighting_name,
    get_weighting,
    greedy_selection,
    normalise_weights,
)

log = logging.getLogger(__name__)


def _as_proba(proba: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(proba, dtype=float)
    if array.ndim != 2 or array.shape[1] < 2:
        raise ValueError(
            f"{what}: probabilities must be 2-D (n_samples, n_classes >= 2), "
            f"got shape {array.shape}"
        )
    if array.shape[0] == 0:
        raise ValueError(f"{what}: has no rows")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: probabilities contain NaN or infinite values")
    return array


class NotFittedError(ValueError, AttributeError):
    """predict before fit (the same bases as scikit-learn's exception of that name)."""


class WeightedEnsemble:
    """Combine members' saved probabilities, weighted by their own validation scores.

    Parameters
    ----------
    weighting:
        ``accuracy``, ``f1``, ``kappa`` (the study's three), ``auc``, ``uniform`` or
        ``vote`` (majority vote, each member one vote) or ``greedy`` (forward selection on
        a validation set the members share).
    metric, rounds:
        What ``greedy`` maximises and how many members it adds (ignored otherwise).

    Attributes after ``fit``: ``names_`` (member names), ``scores_`` (raw validation
    scores; 1.0 each for ``uniform`` and ``vote``; selection counts for ``greedy``),
    ``weights_`` (sum 1), ``note_`` (edge case note, ``""`` if none), ``n_classes_``,
    ``n_members_``.
    """

    def __init__(self, weighting: str = "kappa", metric: str = "accuracy", rounds: int = GREEDY_ROUNDS) -> None:
        self.weighting = weighting
        self.metric = metric
        self.rounds = rounds

    @classmethod
    def from_weights(cls, weighting: str, names: Sequence[str], weights: Sequence[float],
                     n_classes: int) -> WeightedEnsemble:
        """An ensemble with learned weights (a bundle's, an ensemble record's): it combines exactly as
        the fitted one did. ``vote`` votes; every other weighting averages with ``weights``."""
        weights = np.asarray(weights, dtype=float)
        if len(names) != len(weights) or not len(weights):
            raise ValueError(f"{len(names)} member names but {len(weights)} weights")
        if not np.all(np.isfinite(weights)) or weights.min() < 0 or abs(weights.sum() - 1.0) > 1e-6:
            raise ValueError(f"weights must be finite, >= 0 and sum to 1, not {weights.tolist()}")
        if n_classes < 2:
            raise ValueError(f"an ensemble needs at least 2 classes, not {n_classes}")
        ens = cls(weighting=VOTING if votes(weighting) else "uniform")
        ens._set_fitted(list(names), weights.copy(), weights.copy(), "", n_classes)
        return ens

    def _set_fitted(self, names: list[str], scores: np.ndarray, weights: np.ndarray, note: str, n_classes: int) -> None:
        self.names_ = names
        self.scores_ = scores
        self.weights_ = weights
        self.note_ = note
        self.n_classes_ = n_classes
        self.n_members_ = len(names)

    def get_params(self, deep: bool = True) -> dict[str, object]:
        """The constructor parameters, as scikit-learn's ``get_params`` (no nested estimators)."""
        return {"weighting": self.weighting, "metric": self.metric, "rounds": self.rounds}

    def set_params(self, **params: object) -> WeightedEnsemble:
        unknown = set(params) - set(self.get_params())
        if unknown:
            raise ValueError(f"unknown parameters {sorted(unknown)}; known: {sorted(self.get_params())}")
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        return f"WeightedEnsemble({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    def fit(
        self,
        val_probas: Sequence[np.ndarray],
        val_labels: Sequence[np.ndarray],
        names: Sequence[str] | None = None,
    ) -> WeightedEnsemble:
        """Score each member on its own validation fold and derive the weights."""
        check_weighting_name(self.weighting)
        if isinstance(val_probas, np.ndarray) or isinstance(val_labels, np.ndarray):
            raise ValueError(
                "val_probas and val_labels must be lists with one entry per member "
                "(each member has its own validation set), not single arrays"
            )
        val_probas, val_labels = list(val_probas), list(val_labels)
        if not val_probas:
            raise ValueError("an ensemble needs at least one member; got none")
        if len(val_probas) != len(val_labels):
            raise ValueError(
                f"{len(val_probas)} members' probabilities but {len(val_labels)} label arrays"
            )
        names = [f"member {i}" for i in range(len(val_probas))] if names is None else list(names)
        if len(names) != len(val_probas):
            raise ValueError(f"{len(val_probas)} members but {len(names)} names")
        if len(set(names)) != len(names):
            raise ValueError(f"member names must be unique, got {names}")

        probas = [_as_proba(p, f"validation of {n}") for p, n in zip(val_probas, names)]
        n_classes = probas[0].shape[1]
        labels = []
        for name, proba, y in zip(names, probas, val_labels):
            if proba.shape[1] != n_classes:
                raise ValueError(
                    f"{name} has {proba.shape[1]} classes but {names[0]} has {n_classes}"
                )
            y = np.asarray(y)
            if y.shape != (proba.shape[0],):
                raise ValueError(
                    f"validation of {name}: {y.shape[0] if y.ndim else 0} labels "
                    f"for {proba.shape[0]} probability rows"
                )
            if not np.issubdtype(y.dtype, np.integer):
                if not (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y))):
                    raise ValueError(f"validation of {name}: labels must be integer class indices")
                y = y.astype(np.int64)
            if y.min() < 0 or y.max() >= n_classes:
                raise ValueError(
                    f"validation of {name}: labels must lie in [0, {n_classes - 1}], "
                    f"got range [{y.min()}, {y.max()}]"
                )
            labels.append(y)

        if votes(self.weighting):
            scores = np.ones(len(probas))
            weights = np.full(len(probas), 1.0 / len(probas))
            note = ""
        elif self.weighting == "greedy":
            shapes = {p.shape for p in probas}
            if len(shapes) > 1 or any(not np.array_equal(y, labels[0]) for y in labels[1:]):
                raise ValueError(
                    "greedy selection needs every member to predict the same validation rows "
                    f"(got shapes {sorted(shapes)} or differing labels): use scenarios' "
                    "out-of-fold predictions, not fold models with their own folds"
                )
            scores = greedy_selection(np.stack(probas), labels[0], self.metric, self.rounds).astype(float)
            weights = scores / scores.sum()
            note = f"greedy selection: {self.rounds} rounds maximising validation {self.metric} on {len(labels[0])} rows"
        else:
            scorer = get_weighting(self.weighting)
            scores = np.array([scorer(y, p) for y, p in zip(labels, probas)], dtype=float)
            weights, note = normalise_weights(scores, names)

        self._set_fitted(names, scores, weights, note, n_classes)
        log.debug(
            "WEN %s: %s", self.weighting,
            ", ".join(f"{n}={s:.4f}->{w:.4f}" for n, s, w in zip(names, scores, weights)),
        )
        return self

    def predict_proba(self, test_probas: Sequence[np.ndarray]) -> np.ndarray:
        """Weighted average of members' probabilities (vote fractions for ``vote``)."""
        if not hasattr(self, "weights_"):
            raise NotFittedError("this WeightedEnsemble is not fitted yet: call fit() first")
        if isinstance(test_probas, np.ndarray) and test_probas.ndim != 3:
            raise ValueError("test_probas must be a list with one probability array per member")
        probas = list(test_probas)
        if len(probas) != self.n_members_:
            raise ValueError(
                f"fitted with {self.n_members_} members ({', '.join(self.names_)}) "
                f"but got {len(probas)} probability arrays"
            )
        probas = [_as_proba(p, f"test of {n}") for p, n in zip(probas, self.names_)]
        n_rows = probas[0].shape[0]
        for name, proba in zip(self.names_, probas):
            if proba.shape[1] != self.n_classes_:
                raise ValueError(
                    f"test of {name}: {proba.shape[1]} classes, fitted with {self.n_classes_}"
                )
            if proba.shape[0] != n_rows:
                raise ValueError(
                    f"test of {name}: {proba.shape[0]} rows but {self.names_[0]} has {n_rows}; "
                    "members must predict the same test images in the same order"
                )
        return combine(np.stack(probas), self.weights_, votes(self.weighting))  # (members, rows, classes)

    def predict(self, test_probas: Sequence[np.ndarray]) -> np.ndarray:
        """Class index per test row: :func:`~allwen.evaluation.metrics.predict_labels` of :meth:`predict_proba`."""
        return predict_labels(self.predict_proba(test_probas))

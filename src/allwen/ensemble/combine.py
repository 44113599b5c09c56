"""The one combine rule of allwen: how members' probabilities become one ensemble's.

* a **weighted average** of the members' class probabilities (weights sum to 1);
* a **vote**: each member votes for its class (:func:`~allwen.evaluation.metrics.predict_labels`,
  ties to the higher class index) and the output is the fraction of votes per class, blended
  with the members' mean probability, ``(1 - VOTE_TIE_EPS) * votes + VOTE_TIE_EPS * mean``, so
  that only a tie in votes is decided by the probabilities; if those tie too, the higher
  class wins, as everywhere in allwen.

:class:`~allwen.ensemble.wen.WeightedEnsemble`, the out-of-fold predictions a bundle's referral
and sets are fitted on (:func:`pooled_oof`) and serving all call these two functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from allwen.evaluation.metrics import predict_labels

#: The weighting whose members vote (:func:`vote`); every other weighting averages with its weights.
VOTING = "vote"


def votes(weighting: str | None) -> bool:
    """Whether an ensemble of ``weighting`` combines by :func:`vote` (each member one vote, its
    weight unused), else by :func:`weighted_average`. Everyone outside this module asks this."""
    return weighting == VOTING


def weights_matter(weighting: str | None) -> bool:
    """Whether the members' weights change the ensemble's output: a member of weight 0 then changes
    no prediction (an export may leave it out). Not when the members vote: each counts once."""
    return not votes(weighting)


#: Share of the mean probability blended into vote fractions to break ties (see module doc). Vote
#: fractions differ by at least ``1 / n_members``, far above it, so the blend never overturns a vote.
VOTE_TIE_EPS = 1e-6


def weighted_average(weights: np.ndarray, stacked: np.ndarray) -> np.ndarray:
    """``stacked`` (members, rows, classes) averaged with ``weights`` (members,)."""
    return np.tensordot(np.asarray(weights, dtype=float), np.asarray(stacked, dtype=float), axes=1)


def vote(stacked: np.ndarray) -> np.ndarray:
    """Vote fractions of ``stacked`` (members, rows, classes), ties broken by the mean probability."""
    stacked = np.asarray(stacked, dtype=float)
    votes = np.zeros_like(stacked)
    np.put_along_axis(votes, predict_labels(stacked)[..., None], 1.0, axis=-1)
    return (1.0 - VOTE_TIE_EPS) * votes.mean(axis=0) + VOTE_TIE_EPS * stacked.mean(axis=0)


def combine(stacked: np.ndarray, weights: np.ndarray, voting: bool) -> np.ndarray:
    """The ensemble's probabilities: :func:`vote` when ``voting``, else :func:`weighted_average`."""
    return vote(stacked) if voting else weighted_average(weights, stacked)


def pooled_oof(members: list[tuple[list[str], np.ndarray, np.ndarray, float]],
               voting: bool = False) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Out-of-fold predictions of a combination of models: (paths, labels, probabilities).

    ``members``: (validation paths, labels, probabilities, weight) of each member, each on the
    images it did not train on. Every image gets the combination of the members that predicted
    it (:func:`combine`): their weighted mean with the weights renormalised over them, or their
    vote. For fold models of one scenario that is the one member whose fold holds the image
    (the only out-of-fold prediction there is); for champions of one fold, the ensemble itself.
    """
    use = [m for m in members if m[3] > 0] or [(a, b, c, 1.0) for a, b, c, _ in members]
    seen: dict[str, tuple[int, list[tuple[float, np.ndarray]]]] = {}
    for paths, ys, proba, weight in use:
        for path, y, row in zip(paths, ys, np.asarray(proba, dtype=np.float64)):
            seen.setdefault(path, (int(y), []))[1].append((float(weight), row))
    paths = list(seen)
    labels = np.array([seen[p][0] for p in paths], dtype=np.int64)
    out = []
    for path in paths:
        w = np.array([a for a, _ in seen[path][1]])
        rows = np.stack([r for _, r in seen[path][1]])
        out.append(combine(rows[:, None, :], w / w.sum(), voting)[0])
    return paths, labels, np.stack(out)


def recipe(members: Sequence[Any], weights: Sequence[float],
           units_by_scenario: Mapping[str, Sequence[Any]]) -> tuple[list[Any], list[float]]:
    """The units that calibrate a model: its recipe refitted on every fold, with weights.

    ``members``: the model's members (``.scenario``, ``.fold``; a scenario member has fold < 0
    and already holds its scenario's out-of-fold predictions). A unit member stands for every
    unit of its scenario (``units_by_scenario``), each with the member's weight summed over the
    members of that scenario; :func:`pooled_oof` then combines, on each fold's images, that fold's
    units. Why: a member's own validation fold is where it was chosen (a champion is its
    scenario's best fold there, every unit keeps its best epoch there), so calibrating on it
    alone is optimistic; the recipe's other folds were not chosen for doing well on their images.
    For an inter ensemble (every fold of one scenario) or a scenario member, it is the model itself.
    """
    weight_of: dict[str, float] = {}
    kept: dict[str, Any] = {}
    for member, weight in zip(members, weights):
        pool = units_by_scenario.get(member.scenario) if member.fold >= 0 else None
        for unit in pool or [member]:
            kept.setdefault(unit.name, unit)
            weight_of[unit.name] = weight_of.get(unit.name, 0.0) + float(weight)
    return list(kept.values()), [weight_of[name] for name in kept]


__all__ = ["VOTE_TIE_EPS", "VOTING", "combine", "pooled_oof", "recipe", "vote", "votes", "weighted_average",
           "weights_matter"]

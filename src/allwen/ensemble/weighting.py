"""Member weightings of a Weighted Ensemble of Networks (WEN).

A weighting scores each member on its *own* validation predictions; the scores, normalised
to sum 1, are the member's weight in the ensemble. The study used accuracy, F1 and Cohen's
kappa; ``auc`` and ``uniform`` are added as a check, and ``vote`` (majority vote) is a
baseline handled by :class:`allwen.ensemble.wen.WeightedEnsemble` itself, not a score.
``greedy`` (Caruana et al. 2004) is not a per-member score either: :func:`greedy_selection`
picks members for a common validation set (see its docstring).

Scores come from :func:`allwen.evaluation.metrics.compute_metrics`, the same code path as
every reported metric, so a weight and the "val" column that explains it always agree: for
two classes the positive class is column 1 (F1 binary, AUC on ``proba[:, 1]``); for more
classes F1 is macro and AUC is one-vs-rest macro.

Edge cases of :func:`normalise_weights` (one rule each, so a report can explain them):

* score <= 0 -> weight 0. Kappa <= 0 means no better than chance, and accuracy/F1 of 0
  mean the member never got the class right: neither should pull the ensemble.
* score NaN or infinite -> ``ValueError`` naming the member. A NaN means the metric is
  undefined on that member's validation fold (e.g. AUC or kappa when the fold holds a
  single class); silently zeroing it would hide a broken split, and there is no honest
  number to use instead. The message says to pick another weighting.
* every weight 0 -> uniform weights, a logged warning, and the returned note says so, so
  a result is still produced and the report can show why it equals ``uniform``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np

from allwen.config.choices import WEIGHTING_NAMES, check_registry
from allwen.ensemble.combine import VOTING, weights_matter
from allwen.evaluation.metrics import compute_metrics, metric_stack

log = logging.getLogger(__name__)

Scorer = Callable[[np.ndarray, np.ndarray], float]


#: Weightings computed by the ensemble itself rather than from one score per member.
NOT_SCORES: tuple[str, ...] = (VOTING, "greedy")

#: Rounds of greedy forward selection; the weights are multiples of 1 / GREEDY_ROUNDS.
GREEDY_ROUNDS = 25



def _labels_and_classes(y: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, int]:
    y = np.asarray(y)
    proba = np.asarray(proba, dtype=float)
    if proba.ndim != 2 or proba.shape[1] < 2:
        raise ValueError(
            "probabilities must be a 2-D array (n_samples, n_classes >= 2), "
            f"got shape {proba.shape}"
        )
    if y.shape != (proba.shape[0],):
        raise ValueError(
            f"labels have shape {y.shape} but probabilities have {proba.shape[0]} rows"
        )
    return y, proba.shape[1]


def _metric(name: str) -> Scorer:
    def score(y: np.ndarray, proba: np.ndarray) -> float:
        y, _ = _labels_and_classes(y, proba)
        return float(compute_metrics(y, proba)[name])

    score.__name__ = f"{name}_weight"
    score.__doc__ = f"The member's validation {name}, as the report computes it (allwen.evaluation)."
    return score


accuracy_weight = _metric("accuracy")
f1_weight = _metric("f1")  # binary: F1 of the positive class (column 1); else macro
kappa_weight = _metric("kappa")  # NaN when undefined (single-class fold)
auc_weight = _metric("auc")  # binary on column 1, else one-vs-rest macro; NaN when undefined


def uniform_weight(y: np.ndarray, proba: np.ndarray) -> float:
    """The same score for every member: the plain average ensemble."""
    _labels_and_classes(y, proba)
    return 1.0


#: name -> scorer(y_val, proba_val). ``vote`` is absent: it is not a score.
WEIGHTINGS: dict[str, Scorer] = {
    "accuracy": accuracy_weight,
    "f1": f1_weight,
    "kappa": kappa_weight,
    "auc": auc_weight,
    "uniform": uniform_weight,
}
check_registry("weightings", [*WEIGHTINGS, *NOT_SCORES], WEIGHTING_NAMES)


def fitted(weighting: str) -> bool:
    """Whether a weighting's weights are fitted to the members' validation predictions (a score per
    member, or greedy selection): not ``uniform`` (equal by rule) and not a vote (weights unused)."""
    return weighting != "uniform" and weights_matter(weighting)


def get_weighting(name: str) -> Scorer:
    """The scorer behind a weighting name; ``vote`` and ``greedy`` have none."""
    if name in NOT_SCORES:
        raise ValueError(
            f"weighting {name!r} is computed by the ensemble, not a per-member score: "
            f"use WeightedEnsemble(weighting={name!r}) instead of get_weighting"
        )
    try:
        return WEIGHTINGS[name]
    except KeyError:
        raise ValueError(
            f"unknown weighting {name!r}; known weightings: {', '.join(WEIGHTING_NAMES)}"
        ) from None


def check_weighting_name(name: str) -> str:
    """Return ``name`` if it is a known weighting (``vote`` included), else ValueError."""
    if name not in WEIGHTING_NAMES:
        raise ValueError(
            f"unknown weighting {name!r}; known weightings: {', '.join(WEIGHTING_NAMES)}"
        )
    return name


def normalise_weights(
    scores: Sequence[float], names: Sequence[str] | None = None
) -> tuple[np.ndarray, str]:
    """Turn member scores into weights that sum to 1, plus a note on any edge case.

    See the module docstring for the rules: scores <= 0 weigh 0, a non-finite score is a
    ValueError naming the member, and all-zero weights fall back to uniform (note says so).
    The note is ``""`` when nothing unusual happened.
    """
    values = np.asarray(scores, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(
            f"need a non-empty 1-D sequence of member scores, got shape {values.shape}"
        )
    if names is None:
        names = [f"member {i}" for i in range(values.size)]
    names = list(names)
    if len(names) != values.size:
        raise ValueError(f"{values.size} scores but {len(names)} member names")

    bad = [f"{n} ({v})" for n, v in zip(names, values) if not math.isfinite(v)]
    if bad:
        raise ValueError(
            f"weighting score is undefined for {', '.join(bad)}: the metric cannot be "
            "computed on that member's validation predictions (e.g. AUC or kappa on a "
            "single-class fold); use another weighting such as 'accuracy' or 'uniform'"
        )

    notes: list[str] = []
    zeroed = [f"{n} ({v:.4g})" for n, v in zip(names, values) if v <= 0]
    clipped = np.where(values > 0, values, 0.0)
    total = float(clipped.sum())
    if total <= 0:
        message = (
            f"every member scored <= 0 ({', '.join(zeroed)}); "
            "fell back to uniform weights"
        )
        log.warning(message)
        return np.full(values.size, 1.0 / values.size), message
    if zeroed:
        notes.append(
            f"weight 0 for members scoring <= 0 (no better than chance): {', '.join(zeroed)}"
        )
        log.info(notes[-1])
    return clipped / total, "; ".join(notes)


def greedy_selection(
    val_probas: np.ndarray, y: np.ndarray, metric: str = "accuracy", rounds: int = GREEDY_ROUNDS
) -> np.ndarray:
    """Selection counts of Caruana et al. (2004) forward selection with replacement.

    ``val_probas`` is ``(members, n, K)``: every member's predictions for the *same* n
    validation rows (out-of-fold predictions of a k-fold grid cover the whole training
    pool). Each round adds the member whose addition gives the ensemble average with the
    best ``metric`` on those rows; a member may be added again. Ties go to the lowest
    member index. The weights are ``counts / rounds``. All candidates of a round are
    scored in one :func:`allwen.evaluation.metrics.metric_stack` call.
    """
    probas = np.asarray(val_probas, dtype=float)
    if probas.ndim != 3:
        raise ValueError(f"val_probas must be (members, n, K), got shape {probas.shape}")
    if int(rounds) != rounds or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    counts = np.zeros(probas.shape[0], dtype=np.int64)
    total = np.zeros(probas.shape[1:])
    for t in range(int(rounds)):
        scores = metric_stack(y, (total[None] + probas) / (t + 1), names=(metric,))[metric]
        best = int(np.argmax(np.where(np.isnan(scores), -np.inf, scores)))  # first max: lowest index
        counts[best] += 1
        total += probas[best]
    return counts

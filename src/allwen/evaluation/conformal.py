"""Split-conformal prediction sets: every class the model cannot rule out at a chosen level.

A set at level 90% contains the true class of at least 90% of images drawn like the
calibration images (split conformal prediction, Vovk et al. 2005; here the calibration
images are the members' out-of-fold validation predictions). The computation is done by
`crepes <https://github.com/henrikbostrom/crepes>`_ (``ConformalClassifier``, non-smoothed
p-values, so a set never depends on a random draw), with the hinge non-conformity score
``1 - p(class)``. When the classes are imbalanced, the sets are class-conditional (Mondrian by
label: each class calibrated on its own images), so the level holds for every class, not only
on average (a rare class would otherwise get less than its share).

Non-smoothed p-values make a set a threshold on each class's score, so calibration is
distilled into one threshold per (level, class) (:class:`ConformalLevel`):
``class c is in the set  <=>  1 - p(c) <= threshold[c]``. Bundles store those numbers, and
:func:`prediction_sets` applies them without crepes; :func:`crepes_sets` gives crepes' own
sets, and the two are checked equal (at export, and in the tests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from allwen.evaluation.metrics import check_inputs, check_proba, predict_labels
from allwen.evaluation.stats import bootstrap_weights, class_strata, percentile_interval
from allwen.evaluation.trust import MIN_CLUSTERS

#: ``allwen export --conformal-levels`` default.
DEFAULT_LEVELS = (0.90, 0.95)
#: ``mondrian="auto"`` is class-conditional when the largest class has this many times the smallest's images.
IMBALANCE_RATIO = 1.5


def clusters_per_class(y: np.ndarray, n_classes: int, clusters: np.ndarray | None = None) -> list[int]:
    """Distinct clusters among each class's images (images, when there are no clusters)."""
    y = np.asarray(y, dtype=np.int64)
    if clusters is None:
        return [int((y == c).sum()) for c in range(n_classes)]
    clusters = np.asarray(clusters)
    return [int(len(np.unique(clusters[y == c]))) for c in range(n_classes)]


def short_classes(n_clusters: Sequence[int], classes: Sequence[str], minimum: int = MIN_CLUSTERS) -> dict[str, int]:
    """The classes with fewer than ``minimum`` calibration clusters (name -> count).

    Cells of one patient are alike, so a class's threshold rests on its patients more than on its
    cells: below :data:`allwen.evaluation.trust.MIN_CLUSTERS` (``evaluation.min_clusters``, the
    count below which the run's statistics stop trusting a cluster interval) it is one or two
    patients' cells, and a set calibrated on them is not supported.
    """
    return {str(c): int(n) for c, n in zip(classes, n_clusters) if n < minimum}


def scores(proba: np.ndarray) -> np.ndarray:
    """Hinge non-conformity score of every class, ``1 - p`` (crepes' ``hinge``), shape (n, K)."""
    return 1.0 - np.asarray(proba, dtype=np.float64)


def is_imbalanced(y: np.ndarray, n_classes: int, ratio: float = IMBALANCE_RATIO) -> bool:
    """True when the most frequent class has at least ``ratio`` times the images of the rarest."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes)
    return bool(counts.min() == 0 or counts.max() >= ratio * counts.min())


@dataclass(frozen=True)
class ConformalLevel:
    """One level's calibration: a score threshold per class (the same for all when not Mondrian).

    ``threshold[c]`` is None when the class had too few calibration images to reach the level
    (fewer than ``1 / (1 - level) - 1``): that class is then always in the set.
    """

    level: float
    mondrian: bool
    threshold: list[float | None]
    n_calibration: list[int] = field(default_factory=list)
    #: always put the predicted class in the set (:func:`prediction_sets`)
    nonempty: bool = False


def _threshold(cal: np.ndarray, level: float) -> float | None:
    """The largest score whose non-smoothed p-value ``(#{cal >= a} + 1) / (q + 1)`` is >= 1 - level.

    The smallest count m with ``(m + 1) / (q + 1) >= 1 - level`` is found in the same floating
    point arithmetic as crepes, so edge cases fall the same way; a score is then in the set
    iff at least m calibration scores are >= it, i.e. iff it is <= the m-th largest.
    """
    q = len(cal)
    counts = np.arange(q + 1)
    m = int(np.argmax((counts + 1) / (q + 1) >= 1.0 - level))  # the last count (q) always passes
    if m == 0:
        return None
    return float(np.sort(np.asarray(cal, dtype=np.float64))[::-1][m - 1])


def calibrate(y_cal: np.ndarray, proba_cal: np.ndarray, levels: Sequence[float] = DEFAULT_LEVELS,
              mondrian: bool | str = "auto", nonempty: bool = False) -> list[ConformalLevel]:
    """Calibrate sets at each level on labelled calibration probabilities.

    ``mondrian``: True (class-conditional), False (one threshold for all classes), or
    ``"auto"``: class-conditional when the calibration classes are imbalanced
    (:func:`is_imbalanced`). The thresholds reproduce crepes' non-smoothed sets exactly
    (``tests/evaluation/test_conformal.py``). ``nonempty``: see :func:`prediction_sets`.
    """
    y, p = check_inputs(y_cal, proba_cal)
    k = p.shape[1]
    for level in levels:
        if not 0.0 < float(level) < 1.0:
            raise ValueError(f"conformal level {level!r} must be strictly between 0 and 1 (e.g. 0.9)")
    if mondrian == "auto":
        mondrian = is_imbalanced(y, k)
    elif not isinstance(mondrian, bool):
        raise ValueError(f"mondrian must be True, False or 'auto', got {mondrian!r}")
    true_scores = scores(p)[np.arange(len(y)), y]
    out = []
    for level in levels:
        if mondrian:
            groups = [true_scores[y == c] for c in range(k)]
            out.append(ConformalLevel(float(level), True, [_threshold(g, level) for g in groups],
                                      [int(len(g)) for g in groups], nonempty))
        else:
            t = _threshold(true_scores, level)
            out.append(ConformalLevel(float(level), False, [t] * k, [int(len(y))], nonempty))
    return out


def prediction_sets(proba: np.ndarray, calibration: ConformalLevel, raw: bool = False) -> np.ndarray:
    """Boolean (n, K): class c is in image i's set when ``1 - p[i, c] <= threshold[c]``.

    With ``calibration.nonempty`` (and not ``raw``) the predicted class is always in the set
    too. A set that only grows keeps the guarantee (coverage can only rise), and it removes
    the empty sets a very accurate model gives at 90%: calibrated on validation images that
    it nearly always gets right, every class of a slightly harder image falls below the
    threshold (the Taleqani model's 90% sets: ``docs/results.md``).
    ``raw``: the conformal sets alone, as crepes computes them.
    """
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(calibration.threshold):
        raise ValueError(f"proba must be (n, {len(calibration.threshold)}), got shape {p.shape}")
    limit = np.array([np.inf if t is None else t for t in calibration.threshold])
    sets = scores(p) <= limit[None, :]
    if calibration.nonempty and not raw and len(p):
        sets[np.arange(len(p)), predict_labels(p)] = True
    return sets


def crepes_sets(y_cal: np.ndarray, proba_cal: np.ndarray, proba: np.ndarray, level: float,
                mondrian: bool) -> np.ndarray:
    """crepes' own non-smoothed sets (boolean (n, K)), the reference :func:`prediction_sets` must equal."""
    from crepes import ConformalClassifier

    y, p_cal = check_inputs(y_cal, proba_cal)
    p = check_proba(proba, len(proba))
    alphas_cal = scores(p_cal)[np.arange(len(y)), y]
    alphas = scores(p)
    if not mondrian:
        cc = ConformalClassifier().fit(alphas_cal)
        return cc.predict_set(alphas, confidence=level, smoothing=False).astype(bool)
    # label-conditional, as crepes' WrapClassifier(class_cond=True) does: class c's p-value
    # compares with the calibration images of class c
    cc = ConformalClassifier().fit(alphas_cal, bins=y)
    k = p.shape[1]
    pvals = np.stack([cc.predict_p(alphas, bins=np.full(len(p), c), smoothing=False)[:, c] for c in range(k)], axis=1)
    return pvals >= 1.0 - level


@dataclass(frozen=True)
class CrossFitLevel:
    """One level's sets where each fold's images were calibrated on the other folds' images only."""

    level: float
    mondrian: bool
    sets: np.ndarray  # as served: with ``nonempty``, the predicted class added
    raw: np.ndarray  # the conformal sets alone (crepes')
    calibration_clusters: list[int]  # per class, the fewest over the folds


def cross_fit(y: np.ndarray, proba: np.ndarray, folds: np.ndarray, levels: Sequence[float] = DEFAULT_LEVELS, *,
              clusters: np.ndarray | None = None, mondrian: bool | str = True,
              nonempty: bool = True) -> list[CrossFitLevel]:
    """Sets for every image from a calibration that never saw its fold (``folds``: one id per image).

    The honest measure of a calibration rule on held-out patients: in ``allwen crossval`` the
    folds are the test parts, so part p's sets are calibrated on the other parts' test
    predictions (chosen by nobody) and evaluated on part p's patients. Each fold's raw sets are
    checked equal to crepes' own.
    """
    y, p = check_inputs(y, proba)
    folds = np.asarray(folds)
    if len(folds) != len(y) or len(np.unique(folds)) < 2:
        raise ValueError(f"cross_fit needs one fold id per image and at least 2 folds, got {len(np.unique(folds))} "
                         f"folds for {len(y)} images")
    k = p.shape[1]
    raw = {float(lv): np.zeros_like(p, dtype=bool) for lv in levels}
    served = {float(lv): np.zeros_like(p, dtype=bool) for lv in levels}
    fewest = {float(lv): [np.iinfo(np.int64).max] * k for lv in levels}
    kinds = {}
    for f in np.unique(folds):
        held, cal = folds == f, folds != f
        counts = clusters_per_class(y[cal], k, None if clusters is None else np.asarray(clusters)[cal])
        for c in calibrate(y[cal], p[cal], levels, mondrian, nonempty=nonempty):
            r = prediction_sets(p[held], c, raw=True)
            if not np.array_equal(r, crepes_sets(y[cal], p[cal], p[held], c.level, c.mondrian)):
                raise RuntimeError(f"conformal sets at {c.level} differ from crepes' (report it)")
            raw[c.level][held] = r
            served[c.level][held] = prediction_sets(p[held], c)
            fewest[c.level] = [min(a, b) for a, b in zip(fewest[c.level], counts)]
            kinds[c.level] = c.mondrian
    return [CrossFitLevel(lv, kinds[lv], served[lv], raw[lv], fewest[lv]) for lv in map(float, levels)]


def _share(values: np.ndarray, mask: np.ndarray) -> float:
    return float((values * mask).sum() / mask.sum()) if mask.sum() else float("nan")


def format_set(row: np.ndarray, classes: Sequence[str]) -> str:
    """A set as class names joined by ``|`` (the ``set_90`` CSV column); empty set -> ''."""
    return "|".join(c for c, inside in zip(classes, row) if inside)


def column_name(level: float) -> str:
    """``set_90`` for level 0.9, ``set_95`` for 0.95, ``set_99.5`` for 0.995."""
    pct = round(level * 100, 6)
    return f"set_{int(pct)}" if pct == int(pct) else f"set_{pct:g}"


@dataclass(frozen=True)
class SetsEvaluation:
    """Empirical coverage and mean set size at one level, overall and per true class, with intervals."""

    level: float
    coverage: float
    coverage_ci: tuple[float, float]
    mean_size: float
    mean_size_ci: tuple[float, float]
    per_class: dict[str, dict[str, float | int | list[float]]]
    n: int
    unit: str
    raw_coverage: float | None = None  # of the raw sets, when evaluate_sets was given them
    raw_empty: float | None = None  # share of images whose raw set is empty


def evaluate_sets(y_true: np.ndarray, sets: np.ndarray, classes: Sequence[str], level: float, *,
                  clusters: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0,
                  confidence_level: float = 0.95, stratify: bool = True,
                  raw: np.ndarray | None = None) -> SetsEvaluation:
    """Coverage (true class in the set) and mean set size, overall and per class.

    ``raw``: the same images' raw conformal sets (before the predicted class is added): their
    coverage and share of empty sets, overall and per class, are added (``raw_coverage``, ``raw_empty``).

    Intervals are percentile bootstrap intervals, over subjects when ``clusters`` is given;
    a class's interval uses the same resamples restricted to that class's images. With
    ``stratify`` (``evaluation.stratify``) class-pure subjects are drawn within each class.
    """
    y = np.asarray(y_true, dtype=np.int64)
    sets = np.asarray(sets, dtype=bool)
    if sets.shape != (len(y), len(classes)):
        raise ValueError(f"sets must be ({len(y)}, {len(classes)}), got {sets.shape}")
    covered = sets[np.arange(len(y)), y].astype(np.float64)
    size = sets.sum(axis=1).astype(np.float64)
    weights = bootstrap_weights(len(y), n_boot, seed, clusters, class_strata(y, clusters) if stratify else None)

    def ratio(num: np.ndarray, mask: np.ndarray) -> tuple[float, tuple[float, float]]:
        den = weights @ mask
        with np.errstate(invalid="ignore", divide="ignore"):
            dist = np.where(den > 0, (weights @ (num * mask)) / den, np.nan)
        point = float((num * mask).sum() / mask.sum()) if mask.sum() else float("nan")
        return point, percentile_interval(dist, confidence_level)

    everything = np.ones(len(y))
    if raw is not None:
        raw = np.asarray(raw, dtype=bool)
        if raw.shape != sets.shape:
            raise ValueError(f"raw sets must be {sets.shape}, got {raw.shape}")
        raw_covered = raw[np.arange(len(y)), y].astype(np.float64)
        raw_empty = (raw.sum(axis=1) == 0).astype(np.float64)
    cov, cov_ci = ratio(covered, everything)
    size_mean, size_ci = ratio(size, everything)
    per_class: dict[str, dict[str, float | int | list[float]]] = {}
    for c, name in enumerate(classes):
        mask = (y == c).astype(np.float64)
        c_cov, c_cov_ci = ratio(covered, mask)
        c_size, c_size_ci = ratio(size, mask)
        per_class[str(name)] = {"n": int(mask.sum()), "coverage": c_cov, "coverage_ci": list(c_cov_ci),
                                "mean_size": c_size, "mean_size_ci": list(c_size_ci)}
        if raw is not None:
            per_class[str(name)] |= {"raw_coverage": _share(raw_covered, mask), "raw_empty": _share(raw_empty, mask)}
    return SetsEvaluation(float(level), cov, cov_ci, size_mean, size_ci, per_class, int(len(y)),
                          "image" if clusters is None else "subject",
                          None if raw is None else _share(raw_covered, everything),
                          None if raw is None else _share(raw_empty, everything))


__all__ = ["DEFAULT_LEVELS", "IMBALANCE_RATIO", "ConformalLevel", "CrossFitLevel", "SetsEvaluation", "calibrate",
           "clusters_per_class", "column_name", "crepes_sets", "cross_fit", "evaluate_sets", "format_set",
           "is_imbalanced", "prediction_sets", "scores", "short_classes"]

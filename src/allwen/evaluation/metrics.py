"""Classification metrics: one vectorised implementation for estimates, bootstrap and selection.

Every model and ensemble hands the evaluation a ``proba`` array of shape ``(n, K)``
(columns in class order) and integer labels ``y_true`` in ``0..K-1``. Every metric is
computed by :func:`metric_stack` from confusion matrices (count metrics) and weighted rank
sums (AUC), for a whole *stack* of cases at once: rows of image weights (a bootstrap
resample is how often each image was drawn) or stacked probability arrays (the candidate
ensembles of greedy selection). :func:`compute_metrics` is that stack with one case, so a
point estimate, its bootstrap interval and an ensemble weight can never disagree. The tests
check every number against scikit-learn.

Conventions
-----------
* Binary (K == 2): class 1 is the positive class (ALL blast), class 0 the negative
  (normal "hem"). precision/recall/f1 are those of class 1; specificity is the recall
  of class 0.
* Multi-class (K > 2): precision/recall/f1/specificity are macro averages over the
  classes that occur in ``y_true`` or in the predictions (scikit-learn's default label
  set), specificity per class taken one-vs-rest.
* Every averaging, whatever K: ``precision_macro``/``recall_macro``/``f1_macro`` (unweighted
  mean over that label set, scikit-learn's ``average='macro'``) and ``precision_weighted``/
  ``recall_weighted``/``f1_weighted`` (weighted by each class's support, ``average='weighted'``),
  because the studies report different ones (A and D the positive class, B weighted, C macro);
  :func:`averaged_name` maps a headline metric and an averaging to its name.
* Undefined ratios (e.g. precision of a class never predicted) count as 0.0, like
  scikit-learn's ``zero_division=0``.
* ``auc`` needs every class to be present in ``y_true``; otherwise it is ``nan``
  (a ROC needs positives and negatives). ``kappa`` is ``nan`` when it is 0/0, i.e.
  truth and prediction are one and the same single class.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np

from allwen.evaluation.metric_registry import (  # noqa: F401  (safe_divide re-exported)
    Counts,
    headline_names,
    metric,
    metric_names,
    per_class,
    safe_divide,
)

logger = logging.getLogger(__name__)

#: The built-in metrics, as registered at import (:mod:`allwen.evaluation.metric_registry`); code that
#: must see every registered metric asks the registry (``metric_names()``, ``headline_names()``).
METRIC_NAMES: tuple[str, ...] = headline_names()
ALL_METRIC_NAMES: tuple[str, ...] = metric_names()
EXTRA_METRIC_NAMES: tuple[str, ...] = tuple(n for n in ALL_METRIC_NAMES if n not in METRIC_NAMES)
AVERAGED: tuple[str, ...] = ("precision", "recall", "f1")
AVERAGES: tuple[str, ...] = ("binary", "macro", "weighted")


def resolve_average(average: str, n_classes: int) -> str:
    """``evaluation.average`` for a K-class run: ``auto`` is binary for 2 classes, macro above."""
    if average == "auto":
        return "binary" if n_classes == 2 else "macro"
    if average not in AVERAGES:
        raise ValueError(f"evaluation.average={average!r}: choose from auto, {', '.join(AVERAGES)}")
    if average == "binary" and n_classes != 2:
        raise ValueError(f"evaluation.average=binary needs 2 classes, this run has {n_classes}: "
                         "use macro or weighted")
    return average


def averaged_name(metric: str, average: str) -> str:
    """The metric name of ``metric`` under ``average`` (already resolved): ``("f1", "macro")`` ->
    ``f1_macro``; the positive-class (binary) names are the plain ones; other metrics unchanged."""
    if metric not in AVERAGED or average == "binary":
        return metric
    return f"{metric}_{average}"


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


def check_labels(y_true: np.ndarray | list, name: str = "y_true") -> np.ndarray:
    """``y_true`` as a 1-D int64 array; whole-number floats are accepted (CSV round trips)."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"{name} is empty: need at least 1 row")
    if y.dtype == bool or np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError(f"{name} must hold integer class indices, got non-integer floats")
        return y.astype(np.int64)
    raise ValueError(f"{name} must hold integer class indices, got dtype {y.dtype}")


def check_proba(proba: np.ndarray | list, n_rows: int, name: str = "proba") -> np.ndarray:
    """``proba`` as a finite float (n, K) array with K >= 2 and ``n_rows`` rows."""
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (n, K) with one column per class, got shape {p.shape}"
        )
    if p.shape[0] != n_rows:
        raise ValueError(f"{name} has {p.shape[0]} rows but y_true has {n_rows} labels")
    if p.shape[1] < 2:
        raise ValueError(f"{name} needs at least 2 class columns, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return p


def check_inputs(
    y_true: np.ndarray | list, proba: np.ndarray | list
) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(y, proba)``: shapes agree and every label indexes a proba column."""
    y = check_labels(y_true)
    p = check_proba(proba, len(y))
    n_classes = p.shape[1]
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        raise ValueError(
            f"y_true has labels outside 0..{n_classes - 1} (proba has {n_classes} columns): "
            f"{np.unique(y[bad]).tolist()[:10]}; drop unlabelled (-1) rows before evaluating"
        )
    return y, p


def check_metric_names(metrics: str | Iterable[str] | None = None) -> tuple[str, ...]:
    """``metrics`` as a tuple of registered names; None: the headline metrics."""
    names = headline_names() if metrics is None else (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = [m for m in names if m not in metric_names()]
    if unknown or not names:
        raise ValueError(f"unknown or empty metric names {unknown}; choose from {metric_names()}")
    return names


# ---------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------


def predict_labels(proba: np.ndarray | list) -> np.ndarray:
    """Arg-max class per row (last axis); a tie goes to the *highest* tied class index.

    Breaking ties upwards makes the binary case identical to thresholding
    ``proba[..., 1] >= 0.5`` (a 0.5/0.5 row is called ALL, the cautious choice for a
    screening aid), and is deterministic for any K. Works on stacks ``(B, n, K)`` too.
    """
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim < 2 or p.shape[-1] < 2 or p.shape[-2] < 1:
        raise ValueError(f"proba must be 2-D (n >= 1, K >= 2), got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("proba contains NaN or infinite values")
    n_classes = p.shape[-1]
    return (n_classes - 1 - np.argmax(p[..., ::-1], axis=-1)).astype(np.int64)


def confusion_stack(
    y: np.ndarray, y_pred: np.ndarray, n_classes: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Confusion matrices ``(B, K, K)`` (rows true, columns predicted).

    ``y_pred`` is ``(n,)`` (one prediction, optionally weighted by the rows of ``weights``,
    ``(B, n)``) or ``(B, n)`` (one prediction per case, unweighted).
    """
    k2 = n_classes * n_classes
    codes = y * n_classes + y_pred
    if codes.ndim == 1:
        if weights is None:
            return np.bincount(codes, minlength=k2).reshape(1, n_classes, n_classes).astype(np.float64)
        # per-cell column sums: several times faster than a matmul with a (n, K*K) one-hot
        cm = np.zeros((weights.shape[0], k2))
        for code in np.unique(codes):
            cm[:, code] = weights[:, codes == code].sum(axis=1)
        return cm.reshape(-1, n_classes, n_classes)
    if weights is not None:
        raise ValueError("weights apply to one prediction, not to a stack of predictions")
    flat = (codes + (np.arange(codes.shape[0]) * k2)[:, None]).ravel()
    return np.bincount(flat, minlength=codes.shape[0] * k2).reshape(-1, n_classes, n_classes).astype(np.float64)


def confusion(y_true: np.ndarray | list, y_pred: np.ndarray | list, n_classes: int) -> np.ndarray:
    """K x K count matrix, rows = true class, columns = predicted class."""
    y = check_labels(y_true)
    yp = check_labels(y_pred, name="y_pred")
    if len(y) != len(yp):
        raise ValueError(f"y_true has {len(y)} labels but y_pred has {len(yp)}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    for name, arr in (("y_true", y), ("y_pred", yp)):
        if arr.min() < 0 or arr.max() >= n_classes:
            raise ValueError(f"{name} has labels outside 0..{n_classes - 1}")
    return confusion_stack(y, yp, n_classes)[0].astype(np.int64)


def count_metrics(cm: np.ndarray, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Every count-based metric (or ``names``) for a stack of confusion matrices (B, K, K), by the registry."""
    counts = Counts(cm)
    return {name: metric(name).counts(counts) for name in (names or metric_names()) if name != "auc"}


def auc_stack(is_pos: np.ndarray, score: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Mann-Whitney AUC (ties count 1/2) per case; nan without both classes.

    ``score`` ``(n,)`` with optional row weights ``(B, n)`` (sorted once, tie groups summed
    with ``reduceat``), or ``(B, n)`` scores, unweighted (midranks per row).
    """
    if score.ndim == 2:
        if weights is not None:
            raise ValueError("weights apply to one score, not to a stack of scores")
        n_pos = is_pos.sum()
        n_neg = len(is_pos) - n_pos
        if n_pos == 0 or n_neg == 0:
            return np.full(score.shape[0], np.nan)
        ranks = midranks(score)
        return (ranks[:, is_pos].sum(axis=1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    w = np.ones((1, len(score))) if weights is None else weights
    # Each positive wins against the negatives' weight below its score, ties counting 1/2:
    # one cumulative sum over the sorted negatives, read at each positive's place in them.
    pos_rows, neg_rows = np.flatnonzero(is_pos), np.flatnonzero(~is_pos)
    neg_rows = neg_rows[np.argsort(score[neg_rows], kind="mergesort")]
    neg_sorted = score[neg_rows]
    below = np.searchsorted(neg_sorted, score[pos_rows], "left")
    upto = np.searchsorted(neg_sorted, score[pos_rows], "right")
    cum = np.zeros((w.shape[0], len(neg_rows) + 1))
    np.cumsum(w[:, neg_rows], axis=1, out=cum[:, 1:])
    beaten = cum[:, below]
    if np.any(upto != below):  # a positive tied with negatives
        beaten += 0.5 * (cum[:, upto] - beaten)
    w_pos = w[:, pos_rows]
    wins = np.einsum("bi,bi->b", w_pos, beaten)
    pairs = w_pos.sum(axis=1) * cum[:, -1]
    auc = np.full(pairs.shape, np.nan)
    np.divide(wins, pairs, out=auc, where=pairs > 0)
    return auc


def midranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, ties sharing their mean rank (``scipy.stats.rankdata``).

    Written here because importing ``scipy.stats`` costs over a second, most of a report's
    budget; a value's midrank is ``(#below + #below-or-equal + 1) / 2``.
    """
    values = np.asarray(values, dtype=np.float64)
    flat = values.reshape(-1, values.shape[-1])
    out = np.empty_like(flat)
    for i, row in enumerate(flat):
        ordered = np.sort(row)
        out[i] = (np.searchsorted(ordered, row, "left") + np.searchsorted(ordered, row, "right") + 1) / 2.0
    return out.reshape(values.shape)


def half_wins(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """For each x: how many ref values lie below it, ties counting 1/2."""
    ref = np.sort(ref)
    return (np.searchsorted(ref, x, "left") + np.searchsorted(ref, x, "right")) / 2.0


def _cluster_auc(is_pos: np.ndarray, score: np.ndarray, clusters: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUC of each cluster resample: ``c W c / ((c . P)(c . N))``.

    ``W[g, h]`` counts the (positive of g, negative of h) pairs ranked right (ties 1/2), so
    a resample drawing cluster g ``c_g`` times costs O(G**2), not O(n log n).
    """
    n_clusters = counts.shape[1]
    pos_score, pos_cluster = score[is_pos], clusters[is_pos]
    wins = np.zeros((n_clusters, n_clusters))
    for h in np.unique(clusters[~is_pos]):
        wins[:, h] = np.bincount(pos_cluster, weights=half_wins(pos_score, score[~is_pos & (clusters == h)]),
                                 minlength=n_clusters)
    pairs = (counts @ np.bincount(clusters, weights=is_pos, minlength=n_clusters)) * (
        counts @ np.bincount(clusters, weights=~is_pos, minlength=n_clusters))
    auc = np.full(counts.shape[0], np.nan)
    np.divide(np.einsum("bg,gh,bh->b", counts, wins, counts), pairs, out=auc, where=pairs > 0)
    return auc


def metric_stack(
    y: np.ndarray,
    proba: np.ndarray,
    weights: np.ndarray | None = None,
    names: Sequence[str] | None = None,
    clusters: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The requested metrics for a stack of cases, each an array of shape (B,).

    ``proba`` ``(n, K)`` with ``weights`` ``(B, n)`` (how often each image counts in each
    case, e.g. bootstrap resamples), or ``proba`` ``(B, n, K)`` unweighted (e.g. candidate
    ensembles). With ``clusters`` (codes 0..G-1 per image), ``weights`` is ``(B, G)``: how
    often each cluster counts; every image of a cluster counts that often (computed per
    cluster, much faster than expanding the weights). Inputs are trusted: validate with
    :func:`check_inputs` first.
    """
    n_classes = proba.shape[-1]
    names = metric_names() if names is None else names
    out: dict[str, np.ndarray] = {}
    if any(name != "auc" for name in names):
        y_pred = predict_labels(proba)
        if clusters is None:
            cm = confusion_stack(y, y_pred, n_classes, weights)
        else:
            k2 = n_classes * n_classes
            per_cluster = np.bincount(clusters * k2 + y * n_classes + y_pred,
                                      minlength=weights.shape[1] * k2).reshape(-1, k2)
            cm = (weights @ per_cluster).reshape(-1, n_classes, n_classes)
        out.update(count_metrics(cm, names))
    if "auc" in names:
        def auc(k: int) -> np.ndarray:
            if clusters is None:
                return auc_stack(y == k, proba[..., k], weights)
            return _cluster_auc(y == k, proba[:, k], clusters, weights)

        # binary: AUC of column 1; else one-vs-rest macro, nan unless every class is present (as sklearn)
        out["auc"] = auc(1) if n_classes == 2 else np.mean([auc(k) for k in range(n_classes)], axis=0)
    return out


# ---------------------------------------------------------------------------
# public metrics
# ---------------------------------------------------------------------------


def compute_metrics(y_true: np.ndarray | list, proba: np.ndarray | list) -> dict[str, float]:
    """Every registered metric: the headline ones plus the macro and weighted averages.

    See the module docstring for the binary/multi-class conventions and the cases
    that give ``nan`` (auc with a class missing from ``y_true``; kappa when 0/0).
    """
    y, p = check_inputs(y_true, proba)
    return {name: float(values[0]) for name, values in metric_stack(y, p).items()}


def per_class_table(
    y_true: np.ndarray | list, proba: np.ndarray | list, classes: list[str]
) -> list[dict]:
    """One row per class (one-vs-rest): class, precision, recall, specificity, f1, support."""
    y, p = check_inputs(y_true, proba)
    n_classes = p.shape[1]
    if len(classes) != n_classes:
        raise ValueError(f"got {len(classes)} class names for {n_classes} proba columns")
    per = per_class(confusion_stack(y, predict_labels(p), n_classes))
    return [
        {"class": str(classes[k]), **{m: float(per[m][0, k]) for m in ("precision", "recall", "specificity", "f1")},
         "support": int(per["support"][0, k])}
        for k in range(n_classes)
    ]


def roc_points(is_pos: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, collinear points dropped (as sklearn's roc_curve)."""
    order = np.argsort(score, kind="mergesort")[::-1]
    sorted_score, pos = score[order], is_pos[order]
    last = np.r_[np.flatnonzero(np.diff(sorted_score)), len(score) - 1]
    tps = np.cumsum(pos)[last].astype(np.float64)
    fps = (last + 1 - tps).astype(np.float64)
    if len(fps) > 2:
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        tps, fps = tps[keep], fps[keep]
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    return fps / fps[-1], tps / tps[-1]


def roc_curves(y_true: np.ndarray | list, proba: np.ndarray | list) -> dict[str, dict]:
    """ROC curves as plain lists: binary ``{"positive": ...}``, else ``{"0": ..., "1": ...}``.

    A curve whose class is absent from ``y_true`` (or is the only class there) is left
    out rather than filled with NaN, so the result always serialises as strict JSON.
    """
    y, p = check_inputs(y_true, proba)
    n_classes = p.shape[1]
    splits = (
        {"positive": (y == 1, p[:, 1])}
        if n_classes == 2
        else {str(k): (y == k, p[:, k]) for k in range(n_classes)}
    )
    curves: dict[str, dict] = {}
    for key, (is_pos, score) in splits.items():
        if is_pos.all() or not is_pos.any():
            logger.info("ROC curve %r left out: y_true lacks positives or negatives", key)
            continue
        fpr, tpr = roc_points(is_pos, score)
        curves[key] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": float(auc_stack(is_pos, score)[0])}
    return curves

"""Classification metrics from probability arrays, checked against scikit-learn.

Every model and ensemble in allwen hands the evaluation a ``proba`` array of shape
``(n, K)`` (columns in class order) and integer labels ``y_true`` in ``0..K-1``. Keeping
one entry point (:func:`compute_metrics`) means every report shows the same numbers
computed the same way, and the bootstrap in :mod:`allwen.evaluation.stats` can be
tested against it.

Conventions
-----------
* Binary (K == 2): class 1 is the positive class (ALL blast), class 0 the negative
  (normal "hem"). precision/recall/f1 are those of class 1; specificity is the recall
  of class 0.
* Multi-class (K > 2): precision/recall/f1/specificity are macro averages over the
  classes that occur in ``y_true`` or in the predictions (scikit-learn's default label
  set), specificity per class taken one-vs-rest.
* Undefined ratios (e.g. precision of a class never predicted) count as 0.0, like
  scikit-learn's ``zero_division=0``, and raise no warnings.
* ``auc`` needs every class to be present in ``y_true``; otherwise it is ``nan``
  (a ROC needs positives and negatives). ``kappa`` is ``nan`` when it is 0/0, i.e.
  truth and prediction are one and the same single class.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

logger = logging.getLogger(__name__)

METRIC_NAMES: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "specificity",
    "f1",
    "kappa",
    "auc",
)
EXTRA_METRIC_NAMES: tuple[str, ...] = ("f1_macro", "f1_weighted")
ALL_METRIC_NAMES: tuple[str, ...] = METRIC_NAMES + EXTRA_METRIC_NAMES


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


# ---------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------


def predict_labels(proba: np.ndarray | list) -> np.ndarray:
    """Arg-max class per row; a tie goes to the *highest* tied class index.

    Breaking ties upwards makes the binary case identical to thresholding
    ``proba[:, 1] >= 0.5`` (a 0.5/0.5 row is called ALL, the cautious choice for a
    screening aid), and is deterministic for any K.
    """
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2 or p.shape[0] < 1:
        raise ValueError(f"proba must be 2-D (n >= 1, K >= 2), got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("proba contains NaN or infinite values")
    n_classes = p.shape[1]
    return (n_classes - 1 - np.argmax(p[:, ::-1], axis=1)).astype(np.int64)


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
    return confusion_matrix(y, yp, labels=np.arange(n_classes))


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (scikit-learn's ``zero_division=0``)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _specificity_per_class(cm: np.ndarray) -> np.ndarray:
    """One-vs-rest TN / (TN + FP) per class from a confusion matrix."""
    total = cm.sum()
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = total - tp - fp - fn
    return _safe_divide(tn, tn + fp)


def _auc(y: np.ndarray, proba: np.ndarray) -> float:
    """Binary AUC of proba[:, 1], or one-vs-rest macro AUC; nan if a class is absent.

    The multi-class average is computed per class (not through sklearn's
    ``multi_class="ovr"``) so that rows that do not sum exactly to 1, e.g. raw
    ensemble scores, do not raise; for proper probabilities the two agree.
    """
    n_classes = proba.shape[1]
    present = np.bincount(y, minlength=n_classes) > 0
    if not present.all():
        logger.debug("auc undefined: classes %s absent from y_true", np.flatnonzero(~present))
        return float("nan")
    if n_classes == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    return float(np.mean([roc_auc_score(y == k, proba[:, k]) for k in range(n_classes)]))


# ---------------------------------------------------------------------------
# public metrics
# ---------------------------------------------------------------------------


def compute_metrics(y_true: np.ndarray | list, proba: np.ndarray | list) -> dict[str, float]:
    """All headline metrics (:data:`METRIC_NAMES`) plus ``f1_macro`` and ``f1_weighted``.

    See the module docstring for the binary/multi-class conventions and the cases
    that give ``nan`` (auc with a class missing from ``y_true``; kappa when 0/0).
    """
    y, p = check_inputs(y_true, proba)
    n_classes = p.shape[1]
    y_pred = predict_labels(p)
    labels = np.arange(n_classes)
    prec, rec, f1, _ = precision_recall_fscore_support(
        y, y_pred, labels=labels, average=None, zero_division=0.0
    )
    spec = _specificity_per_class(confusion_matrix(y, y_pred, labels=labels))
    if n_classes == 2:
        precision, recall, f1_pos, specificity = prec[1], rec[1], f1[1], rec[0]
    else:
        # sklearn's macro average uses the classes seen in y_true or y_pred.
        seen = np.isin(labels, np.union1d(y, y_pred))
        precision, recall = prec[seen].mean(), rec[seen].mean()
        f1_pos, specificity = f1[seen].mean(), spec[seen].mean()
    with warnings.catch_warnings():
        # A class missing from y_true or y_pred, or kappa's 0/0, is expected in small
        # or bootstrap samples; the resulting values are documented, not noise.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        balanced = balanced_accuracy_score(y, y_pred)
        kappa = cohen_kappa_score(y, y_pred)
    return {
        "accuracy": float(accuracy_score(y, y_pred)),
        "balanced_accuracy": float(balanced),
        "precision": float(precision),
        "recall": float(recall),
        "specificity": float(specificity),
        "f1": float(f1_pos),
        "kappa": float(kappa),
        "auc": _auc(y, p),
        "f1_macro": float(f1_score(y, y_pred, average="macro", zero_division=0.0)),
        "f1_weighted": float(f1_score(y, y_pred, average="weighted", zero_division=0.0)),
    }


def per_class_table(
    y_true: np.ndarray | list, proba: np.ndarray | list, classes: list[str]
) -> list[dict]:
    """One row per class (one-vs-rest): class, precision, recall, specificity, f1, support."""
    y, p = check_inputs(y_true, proba)
    n_classes = p.shape[1]
    if len(classes) != n_classes:
        raise ValueError(f"got {len(classes)} class names for {n_classes} proba columns")
    labels = np.arange(n_classes)
    y_pred = predict_labels(p)
    prec, rec, f1, support = precision_recall_fscore_support(
        y, y_pred, labels=labels, average=None, zero_division=0.0
    )
    spec = _specificity_per_class(confusion_matrix(y, y_pred, labels=labels))
    return [
        {
            "class": str(classes[k]),
            "precision": float(prec[k]),
            "recall": float(rec[k]),
            "specificity": float(spec[k]),
            "f1": float(f1[k]),
            "support": int(support[k]),
        }
        for k in range(n_classes)
    ]


def _curve(is_pos: np.ndarray, score: np.ndarray) -> dict:
    """JSON-ready ROC points and AUC for one positive-vs-rest split."""
    fpr, tpr, _ = roc_curve(is_pos, score)
    return {
        "fpr": [float(v) for v in fpr],
        "tpr": [float(v) for v in tpr],
        "auc": float(roc_auc_score(is_pos, score)),
    }


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
        curves[key] = _curve(is_pos, score)
    return curves

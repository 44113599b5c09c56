"""The prediction CSVs of a run: one reader, one writer, one in-memory record.

Every unit writes ``predictions_val.csv`` (its own validation fold), ``predictions_test.csv``
(the common held-out test set) and, with ``evaluation.tta``, ``predictions_test_tta.csv``;
an ensemble writes ``predictions_test.csv``. Columns: ``path``, ``y_true`` (integer class
index, -1 for an unlabelled test image) and ``prob_<class>`` per class in class order.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from allwen.io import atomic_write_text, read_csv_rows

PROB_PREFIX = "prob_"
PROBA_SUM_TOLERANCE = 1e-4


class MissingPredictionsError(ValueError):
    """A unit's prediction file is missing or unreadable: that unit did not finish."""


@dataclass
class UnitPredictions:
    """What one trained unit (scenario, fold) predicted, as saved by the training engine.

    ``test_y`` may hold -1 for unlabelled test images; validation labels never do. A
    scenario as one ensemble member (fold -1) holds its units' out-of-fold predictions.
    """

    scenario: str
    fold: int
    name: str
    classes: list[str]
    val_paths: list[str]
    val_y: np.ndarray
    val_proba: np.ndarray
    test_paths: list[str]
    test_y: np.ndarray
    test_proba: np.ndarray


def write_predictions(path: Path | str, paths: list[str], labels: np.ndarray, proba: np.ndarray,
                      classes: list[str]) -> Path:
    """The one writer of a prediction CSV (atomic; the csv module, 5x faster than pandas here)."""
    n_rows, n_classes = np.shape(proba)
    if len(classes) != n_classes or len(paths) != n_rows or len(labels) != n_rows:
        raise ValueError(f"{path}: {n_rows}x{n_classes} probabilities but {len(paths)} paths, "
                         f"{len(labels)} labels and {len(classes)} classes")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "y_true", *(f"{PROB_PREFIX}{cls}" for cls in classes)])
    writer.writerows([p, int(y), *(f"{v:.8g}" for v in row)]
                     for p, y, row in zip(paths, np.asarray(labels), np.asarray(proba, dtype=float).tolist()))
    return atomic_write_text(path, text.getvalue())


def read_predictions(
    path: Path, unit: str, hint: str, allow_unlabelled: bool
) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Read one predictions CSV; any defect is a MissingPredictionsError naming unit and file."""

    def fail(problem: str) -> MissingPredictionsError:
        return MissingPredictionsError(f"unit {unit}: {path} {problem}; {hint}")

    if not path.is_file():
        raise fail("is missing")
    try:
        header, body = read_csv_rows(path)
    except (ValueError, UnicodeDecodeError) as err:
        raise fail(f"cannot be parsed as CSV ({' '.join(str(err).split())})") from None
    prob_cols = [c for c in header if c.startswith(PROB_PREFIX)]
    missing = [c for c in ("path", "y_true") if c not in header]
    if missing or len(prob_cols) < 2:
        raise fail(f"lacks columns (needs path, y_true and >= 2 prob_<class>; has {header})")
    if not body:
        raise fail("has no rows")
    classes = [c[len(PROB_PREFIX):] for c in prob_cols]
    index = {name: header.index(name) for name in ("path", "y_true", *prob_cols)}

    def number(text: str) -> float:  # an empty field is missing (NaN), as pandas reads it
        return float(text) if text.strip() else float("nan")

    try:
        proba = np.array([[number(row[index[c]]) for c in prob_cols] for row in body], dtype=np.float64)
        y_float = np.array([number(row[index["y_true"]]) for row in body], dtype=np.float64)
    except ValueError as err:
        raise fail(f"holds non-numeric y_true or probabilities ({err})") from err
    if not np.all(np.isfinite(proba)) or proba.min() < -1e-6 or proba.max() > 1 + 1e-6:
        bad = int(np.flatnonzero(~np.all(np.isfinite(proba) & (proba >= -1e-6) & (proba <= 1 + 1e-6), axis=1))[0])
        raise fail(f"holds probabilities that are empty, NaN or outside [0, 1] (row {bad + 2})")
    sums = proba.sum(axis=1)
    if np.any(np.abs(sums - 1.0) > PROBA_SUM_TOLERANCE):
        bad = int(np.flatnonzero(np.abs(sums - 1.0) > PROBA_SUM_TOLERANCE)[0])
        raise fail(f"holds probabilities that do not sum to 1 (row {bad + 2} sums to {sums[bad]:.6g})")
    if not np.all(np.isfinite(y_float)) or not np.all(y_float == np.round(y_float)):
        raise fail("holds y_true values that are empty or not integer class indices")
    y = y_float.astype(np.int64)
    low = -1 if allow_unlabelled else 0
    if y.min() < low or y.max() >= len(classes):
        raise fail(f"holds y_true outside [{low}, {len(classes) - 1}]")
    paths = [row[index["path"]] for row in body]
    if not all(paths):
        raise fail("has rows with an empty path")
    return paths, classes, y, proba



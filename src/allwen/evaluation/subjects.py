"""Patient-level results: each test subject's (or pseudo-patient's) cells aggregated.

A lab asks whether this patient's sample is leukemic, not whether one cell is. Each test
subject gets the mean of its cells' probabilities and the share of its cells called ALL;
its predicted class is the class of highest mean probability (the same tie rule as cells:
:func:`allwen.evaluation.metrics.predict_labels`). Over subjects: accuracy (with a percentile
bootstrap interval over subjects), AUC (binary: of the positive class; several classes:
macro one-vs-rest), and the distribution of cells per subject. A subject's true class is its
cells' majority class (a subject cluster joined by a duplicate of another class is counted in
``mixed``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from allwen.evaluation.results import CellCounts, SubjectLevel, SubjectRow

NORMAL_CLASSES = ("hem", "Benign")  # the classes that mean "not leukemic" (C-NMC, Taleqani)


def _auc(y: np.ndarray, proba: np.ndarray, n_classes: int) -> float | None:
    """AUC over subjects with the cells' definition (binary: positive class; else macro one-vs-rest),
    from :mod:`allwen.evaluation.metrics` (``allwen report`` imports neither scikit-learn nor scipy.stats)."""
    from allwen.evaluation.metrics import compute_metrics

    present = np.unique(y)
    if len(present) < 2 or (n_classes > 2 and len(present) < n_classes):
        return None  # one-vs-rest needs every class among the subjects
    value = compute_metrics(y, proba)["auc"]
    return float(value) if value == value else None


def subject_level(model: str, y: np.ndarray, proba: np.ndarray, subjects: Sequence[str], classes: Sequence[str],
                  n_boot: int = 1000, confidence: float = 0.95, seed: int = 0, stratify: bool = True,
                  role: str = "") -> SubjectLevel:
    """Aggregate one model's test predictions per subject (``subjects``: one id per test image).

    ``stratify``: the interval draws subjects within each true class, as the cell-level cluster
    bootstrap does (``evaluation.stratify``)."""
    from allwen.evaluation.stats import bootstrap_weights, percentile_interval
    from allwen.evaluation.metrics import predict_labels

    y = np.asarray(y)
    proba = np.asarray(proba, dtype=float)
    subjects = np.asarray(subjects, dtype=object)
    if len(subjects) != len(y) or proba.shape[0] != len(y):
        raise ValueError(f"subject_level: {len(y)} labels, {proba.shape[0]} probability rows and "
                         f"{len(subjects)} subject ids must match")
    classes = list(classes)
    cell_pred = predict_labels(proba)
    normal = [i for i, c in enumerate(classes) if c in NORMAL_CLASSES]
    ids, inverse = np.unique(subjects, return_inverse=True)
    rows, truth, mean = [], [], []
    mixed = 0
    for s, name in enumerate(ids):
        members = inverse == s
        counts = np.bincount(y[members], minlength=len(classes))
        label = int(np.argmax(counts))
        mixed += int((counts > 0).sum() > 1)
        m = proba[members].mean(axis=0)
        share = None if not normal else float(np.mean(~np.isin(cell_pred[members], normal)))
        truth.append(label)
        mean.append(m)
        rows.append(SubjectRow(subject=str(name), n_cells=int(members.sum()), label=classes[label], predicted="",
                               mean_proba=[round(float(v), 6) for v in m], share_called_all=share))
    truth_arr, mean_arr = np.array(truth), np.array(mean)
    predicted = predict_labels(mean_arr)
    for row, p in zip(rows, predicted):
        row.predicted = classes[int(p)]
    correct = (predicted == truth_arr).astype(float)
    ci = None
    if n_boot and len(correct) > 1:
        weights = bootstrap_weights(len(correct), n_boot, seed, strata=truth_arr if stratify else None)
        ci = percentile_interval(weights @ correct / len(correct), confidence)
    n_cells = np.array([r.n_cells for r in rows], dtype=float)
    q = np.percentile(n_cells, [0, 25, 50, 75, 100]) if len(n_cells) else [np.nan] * 5
    return SubjectLevel(
        model=model, role=role, n_subjects=len(ids), accuracy=float(correct.mean()) if len(correct) else None, accuracy_ci=ci,
        auc=_auc(truth_arr, mean_arr, len(classes)),
        n_per_class={c: int((truth_arr == k).sum()) for k, c in enumerate(classes)},
        cells_per_subject=CellCounts(min=float(q[0]), q25=float(q[1]), median=float(q[2]), q75=float(q[3]),
                                     max=float(q[4]), mean=float(n_cells.mean()) if len(n_cells) else float("nan")),
        mixed=mixed, rows=rows,
    )


def cluster_names(subjects: Sequence[str], codes: np.ndarray) -> list[str]:
    """A name per image for its cluster: its subjects' ids joined by ``+`` (subjects that share a
    duplicate image are one cluster), or ``image <i>`` for an image without a subject."""
    members: dict[int, set[str]] = {}
    for s, c in zip(subjects, codes):
        if s:
            members.setdefault(int(c), set()).add(str(s))
    return ["+".join(sorted(members[int(c)])) if int(c) in members else f"image {i}" for i, c in enumerate(codes)]

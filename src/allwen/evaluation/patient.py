"""A verdict per patient: aggregate the cells of one sample into one call.

The question a lab asks is whether this patient's sample is leukemic, not whether one cell
is. A patient's cells are summarised by the number of cells, the share called ALL (with a
Wilson score interval over the cells: how precisely this many cells pin the share down), the
mean probability of ALL, and how many were referred or out of distribution; the patient is
called ALL when the share called ALL is at least a threshold. That threshold is chosen on the
validation subjects of the run (each subject's cells as predicted out of fold) to maximise the
balanced accuracy over subjects; without subject ids it is 0.5 and says so.

"ALL" is the set of positive classes: ``all`` in C-NMC; in Taleqani's 4 classes the three
malignant ones (Early, Pre, Pro), i.e. every class but the benign one (:func:`positive_classes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from allwen.evaluation.metrics import check_inputs, predict_labels

#: Class names taken as not leukemic when choosing the positive classes automatically.
NEGATIVE_NAMES = ("hem", "benign", "normal", "healthy")
DEFAULT_THRESHOLD = 0.5
CALL_POSITIVE, CALL_NEGATIVE, CALL_NONE = "ALL", "not ALL", "no call"
#: A patient is called only when at least this share of its readable cells were answered (neither
#: referred nor out of distribution): a call from a few confident cells among many doubtful ones
#: would hide the doubt.
MIN_ANSWERED_SHARE = 0.5


def positive_classes(classes: Sequence[str]) -> list[str]:
    """The leukemic classes: ``all`` when a class is so named, else every class not named as normal."""
    names = [str(c) for c in classes]
    if any(c.lower() == "all" for c in names):
        return [c for c in names if c.lower() == "all"]
    positive = [c for c in names if c.lower() not in NEGATIVE_NAMES]
    if not positive or len(positive) == len(names):
        raise ValueError(f"cannot tell the leukemic classes among {names}: name them (positive_classes)")
    return positive


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (SciPy's ``binomtest``); (nan, nan) for n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _positive_index(classes: Sequence[str], positive: Sequence[str]) -> np.ndarray:
    unknown = [p for p in positive if p not in classes]
    if unknown or not positive:
        raise ValueError(f"positive classes {list(positive)} must be among {list(classes)}")
    return np.array([list(classes).index(p) for p in positive])


@dataclass(frozen=True)
class PatientThreshold:
    """The share-called-ALL threshold of the patient call, and where it came from."""

    threshold: float
    source: str  # "validation_subjects" or "default"
    n_subjects: int
    balanced_accuracy: float | None
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def share_called(proba: np.ndarray, groups: np.ndarray, pos_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group (sorted unique ids): the share of its cells whose predicted class is positive."""
    called = np.isin(predict_labels(proba), pos_idx).astype(np.float64)
    ids, codes = np.unique(np.asarray(groups), return_inverse=True)
    share = np.bincount(codes, weights=called) / np.bincount(codes)
    return ids, share


def choose_threshold(subjects: np.ndarray, y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str],
                     positive: Sequence[str] | None = None) -> PatientThreshold:
    """The threshold on the share called ALL that best separates ALL from other validation subjects.

    A subject is ALL when at least half of its cells carry a positive label. Candidates are
    the midpoints between consecutive distinct shares (and 0.5); the one with the highest
    balanced accuracy over subjects wins, ties to the one nearest 0.5.
    """
    y, p = check_inputs(y_true, proba)
    subjects = np.asarray(subjects)
    if subjects.shape != (len(y),):
        raise ValueError(f"subjects must be one id per image ({len(y)}), got shape {subjects.shape}")
    pos_idx = _positive_index(classes, positive or positive_classes(classes))
    ids, share = share_called(p, subjects, pos_idx)
    _, codes = np.unique(subjects, return_inverse=True)
    truth = (np.bincount(codes, weights=np.isin(y, pos_idx).astype(float)) / np.bincount(codes)) >= 0.5
    if truth.all() or not truth.any():
        return PatientThreshold(DEFAULT_THRESHOLD, "default", len(ids), None,
                                "the validation subjects are all of one kind, so no threshold could be chosen")
    values = np.unique(share)
    candidates = np.unique(np.r_[(values[1:] + values[:-1]) / 2.0, DEFAULT_THRESHOLD])
    called = share[None, :] >= candidates[:, None]
    sens = (called & truth).sum(axis=1) / truth.sum()
    spec = (~called & ~truth).sum(axis=1) / (~truth).sum()
    bacc = (sens + spec) / 2.0
    best = np.flatnonzero(np.isclose(bacc, bacc.max()))
    i = best[np.argmin(np.abs(candidates[best] - DEFAULT_THRESHOLD))]
    return PatientThreshold(float(candidates[i]), "validation_subjects", len(ids), float(bacc[i]))


class PatientVerdict(BaseModel):
    """One patient's cells summarised (a folder of `allwen predict --by-folder`, or the API's batch with
    form field patient=true); ``call`` is ALL or not ALL. Shares are null when no cell could be predicted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    patient: str
    n_cells: int
    n_predicted: int
    n_called_all: int
    share_all: float | None
    share_all_low: float | None
    share_all_high: float | None
    mean_prob_all: float | None
    n_refer: int
    n_ood: int
    call: str
    threshold: float
    threshold_source: str
    n_answered: int = Field(0, description="readable cells neither referred nor out of distribution: the call counts only these")
    note: str = Field("", description="why there is no call (empty when there is one)")

    def as_dict(self) -> dict:
        return self.model_dump()


def _no_call(n_cells: int, readable: int, answered: int, n_refer: int, n_ood: int) -> str:
    """Why a patient gets no call ('' when it gets one): no readable cell, or too few answered ones."""
    if readable == 0:
        return f"cannot call: none of the {n_cells} files could be read as a cell image"
    if answered > 0 and answered >= MIN_ANSWERED_SHARE * readable:
        return ""
    doubtful = [f"{n_ood} of {readable} cells out of distribution"] if n_ood else []
    doubtful += [f"{n_refer} of {readable} referred"] if n_refer else []
    return (f"cannot call: {', '.join(doubtful)}; a call needs at least {MIN_ANSWERED_SHARE:.0%} of the readable "
            f"cells answered ({answered} were)")


def verdicts(patients: Sequence[str], proba: np.ndarray, classes: Sequence[str], threshold: PatientThreshold, *,
             positive: Sequence[str] | None = None, refer: np.ndarray | None = None, ood: np.ndarray | None = None,
             ok: np.ndarray | None = None, confidence: float = 0.95) -> list[PatientVerdict]:
    """One verdict per patient, in order of first appearance.

    ``proba`` (n, K) per cell; ``ok`` marks cells that could be predicted (rows with an error
    count in ``n_cells`` only); ``refer``/``ood`` booleans per cell. ``mean_prob_all`` is the
    mean over predicted cells of the summed probability of the positive classes.
    """
    patients = [str(p) for p in patients]
    n = len(patients)
    p = np.asarray(proba, dtype=np.float64).reshape(n, len(classes))
    ok = np.ones(n, bool) if ok is None else np.asarray(ok, bool)
    refer = np.zeros(n, bool) if refer is None else np.asarray(refer, bool)
    ood = np.zeros(n, bool) if ood is None else np.asarray(ood, bool)
    pos_idx = _positive_index(classes, positive or positive_classes(classes))
    safe = np.where(ok[:, None], p, 1.0 / len(classes))
    answered = ok & ~refer & ~ood
    called = np.isin(predict_labels(safe), pos_idx) & answered
    prob_all = safe[:, pos_idx].sum(axis=1)
    out = []
    for name in dict.fromkeys(patients):
        rows = np.array([q == name for q in patients])
        good, sure = rows & ok, rows & answered
        k, m, readable = int(called[rows].sum()), int(sure.sum()), int(good.sum())
        n_refer, n_ood = int((refer & good).sum()), int((ood & good).sum())
        share = k / m if m else float("nan")
        low, high = wilson_interval(k, m, confidence)
        note = _no_call(int(rows.sum()), readable, m, n_refer, n_ood)
        out.append(PatientVerdict(
            patient=name, n_cells=int(rows.sum()), n_predicted=readable, n_called_all=k, share_all=share,
            share_all_low=low, share_all_high=high,
            mean_prob_all=float(prob_all[sure].mean()) if m else float("nan"),
            n_refer=n_refer, n_ood=n_ood,
            call=CALL_NONE if note else CALL_POSITIVE if share >= threshold.threshold else CALL_NEGATIVE,
            threshold=threshold.threshold, threshold_source=threshold.source, n_answered=m, note=note,
        ))
    return out


__all__ = ["CALL_NEGATIVE", "CALL_NONE", "CALL_POSITIVE", "MIN_ANSWERED_SHARE", "DEFAULT_THRESHOLD", "PatientThreshold", "PatientVerdict",
           "choose_threshold", "positive_classes", "share_called", "verdicts", "wilson_interval"]

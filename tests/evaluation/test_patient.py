"""Patient verdicts: aggregates by hand, the validation-subject threshold, positive classes."""

from __future__ import annotations

import numpy as np
import pytest

from allwen.evaluation.patient import (
    PatientThreshold,
    choose_threshold,
    positive_classes,
    verdicts,
    wilson_interval,
)

CLASSES = ["hem", "all"]


def _p(p_all):
    p_all = np.asarray(p_all, float)
    return np.c_[1 - p_all, p_all]


def test_positive_classes():
    assert positive_classes(["hem", "all"]) == ["all"]
    assert positive_classes(["Benign", "Early", "Pre", "Pro"]) == ["Early", "Pre", "Pro"]
    with pytest.raises(ValueError, match="leukemic"):
        positive_classes(["a", "b"])


def test_verdicts_by_hand():
    patients = ["p1", "p1", "p1", "p2", "p2", "p1"]
    proba = _p([0.9, 0.7, 0.2, 0.1, 0.4, 0.5])  # 0.5 is called ALL (ties go up)
    ok = np.array([True, True, True, True, True, False])  # the last cell could not be read
    refer = np.array([False, True, True, False, True, False])
    ood = np.array([False, False, True, False, False, False])
    t = PatientThreshold(0.5, "default", 0, None)
    v1, v2 = verdicts(patients, np.where(ok[:, None], proba, np.nan), CLASSES, t, refer=refer, ood=ood, ok=ok)
    # p1: 3 readable cells, only the first answered (the others referred, one also out of distribution)
    assert (v1.patient, v1.n_cells, v1.n_predicted, v1.n_answered, v1.n_called_all) == ("p1", 4, 3, 1, 1)
    assert v1.share_all == pytest.approx(1.0) and v1.mean_prob_all == pytest.approx(0.9)
    assert (v1.n_refer, v1.n_ood, v1.call) == (2, 1, "no call")
    assert v1.note.startswith("cannot call: 1 of 3 cells out of distribution, 2 of 3 referred")
    assert (v1.share_all_low, v1.share_all_high) == pytest.approx(wilson_interval(1, 1))
    # p2: one of two cells answered, half the readable cells: called on that cell alone
    assert (v2.n_cells, v2.n_answered, v2.n_called_all, v2.share_all, v2.call, v2.note) == (2, 1, 0, 0.0, "not ALL", "")
    # Wilson interval by its formula
    z, k, n = 1.959963984540054, 2, 3
    ph = k / n
    centre = (ph + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert wilson_interval(2, 3) == pytest.approx((centre - half, centre + half))


def test_threshold_on_validation_subjects():
    # three ALL subjects with 60%, 80%, 100% cells called ALL; two hem subjects with 0% and 70%
    subjects, y, p = [], [], []
    for s, (label, share) in enumerate([(1, 0.6), (1, 0.8), (1, 1.0), (0, 0.0), (0, 0.7)]):
        called = np.arange(10) < round(share * 10)
        subjects += [f"s{s}"] * 10
        y += [label] * 10
        p += list(np.where(called, 0.9, 0.1))
    t = choose_threshold(np.array(subjects), np.array(y), _p(p), CLASSES)
    # candidates: midpoints of 0, .6, .7, .8, 1 and 0.5; 0.75 calls 2/3 ALL and 2/2 hem right: bacc 5/6;
    # 0.3 or 0.5 (bacc 0.75) and 0.65 (1 + 1/2)/2 = 0.75 lose
    assert t.source == "validation_subjects" and t.threshold == pytest.approx(0.75)
    assert t.balanced_accuracy == pytest.approx(5 / 6) and t.n_subjects == 5


def test_threshold_without_both_kinds_is_the_default():
    t = choose_threshold(np.array(["a", "a", "b"]), np.array([1, 1, 1]), _p([0.9, 0.8, 0.2]), CLASSES)
    assert t.source == "default" and t.threshold == 0.5 and "one kind" in t.note


def test_a_patient_whose_cells_are_all_out_of_distribution_or_unreadable_gets_no_call():
    t = PatientThreshold(0.5, "default", 0, None)
    proba = _p([0.99, 0.98, 0.97])  # confident ALL calls: an OOD flag must still win
    (v,) = verdicts(["p"] * 3, proba, CLASSES, t, ood=np.ones(3, bool))
    assert (v.call, v.n_answered, v.n_called_all) == ("no call", 0, 0)
    assert v.note.startswith("cannot call: 3 of 3 cells out of distribution")
    (junk,) = verdicts(["p"] * 2, np.full((2, 2), np.nan), CLASSES, t, ok=np.zeros(2, bool))
    assert (junk.call, junk.n_predicted) == ("no call", 0) and "could be read" in junk.note

"""Patient-level aggregation on synthetic predictions with known subject labels (hand-checked)."""

import numpy as np
import pytest

from allwen.evaluation.subjects import subject_level

CLASSES = ["all", "hem"]  # index 0 = all, 1 = hem (C-NMC order)


def test_subject_level_by_hand():
    # subject A (ALL): 3 cells, P(hem) 0.2, 0.3, 0.7 -> mean P(hem) 0.4 -> called ALL; 2 of 3 cells called ALL
    # subject B (hem): 2 cells, P(hem) 0.9, 0.4 -> mean 0.65 -> hem; 1 of 2 cells called ALL
    # subject C (ALL): 1 cell, P(hem) 0.6 -> hem (wrong); 0 of 1 cell called ALL
    y = np.array([0, 0, 0, 1, 1, 0])
    p_hem = np.array([0.2, 0.3, 0.7, 0.9, 0.4, 0.6])
    proba = np.stack([1 - p_hem, p_hem], axis=1)
    subjects = ["A", "A", "A", "B", "B", "C"]
    out = subject_level("m", y, proba, subjects, CLASSES, n_boot=200)
    rows = {r.subject: r for r in out.rows}
    assert rows["A"].predicted == "all" and rows["A"].n_cells == 3
    assert rows["A"].mean_proba == pytest.approx([0.6, 0.4])
    assert rows["A"].share_called_all == pytest.approx(2 / 3)
    assert rows["B"].predicted == "hem" and rows["B"].share_called_all == pytest.approx(0.5)
    assert rows["C"].predicted == "hem" and rows["C"].label == "all" and rows["C"].share_called_all == 0.0
    assert out.n_subjects == 3 and out.accuracy == pytest.approx(2 / 3)
    # AUC over subjects of the positive class (index 1, hem): scores A 0.4, C 0.6 (ALL), B 0.65 (hem) -> 1.0
    assert out.auc == pytest.approx(1.0)
    assert out.n_per_class == {"all": 2, "hem": 1}
    assert out.cells_per_subject.min == 1 and out.cells_per_subject.max == 3
    assert out.cells_per_subject.median == 2 and out.mixed == 0
    lo, hi = out.accuracy_ci
    assert 0 <= lo <= 2 / 3 <= hi <= 1


def test_auc_over_subjects_is_not_auc_over_cells():
    # many cells of one subject cannot outweigh the others: 10 cells of A, 1 each of B, C
    y = np.array([0] * 10 + [1, 1])
    p_hem = np.array([0.1] * 10 + [0.05, 0.9])  # B is a hem subject scored below every ALL cell
    proba = np.stack([1 - p_hem, p_hem], axis=1)
    out = subject_level("m", y, proba, ["A"] * 10 + ["B", "C"], CLASSES, n_boot=0)
    assert out.auc == pytest.approx(0.5)  # A (0.1) vs B (0.05) wrong, vs C (0.9) right
    assert out.accuracy == pytest.approx(2 / 3) and out.accuracy_ci is None


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="must match"):
        subject_level("m", np.array([0, 1]), np.eye(2), ["A"], CLASSES)


def test_cluster_names_join_subjects_that_share_a_duplicate():
    from allwen.evaluation.subjects import cluster_names

    assert cluster_names(["a", "b", "b", ""], np.array([0, 0, 0, 1])) == ["a+b", "a+b", "a+b", "image 3"]

"""find_cnmc: the C-NMC tree of an attached Kaggle dataset, at whatever depth its uploader put it."""

import pytest

from allwen.data.kaggle import find_cnmc


def _tree(root):
    (root / "training_data" / "fold_0" / "all").mkdir(parents=True)
    (root / "validation_data").mkdir()
    return root


def test_the_kaggle_copy_layout_and_a_nested_fork(tmp_path):
    base = tmp_path / "input"
    (base / "another-dataset" / "images").mkdir(parents=True)
    expected = _tree(base / "leukemia-classification" / "C-NMC_Leukemia")
    assert find_cnmc(base) == expected
    nested = tmp_path / "nested"
    deep = _tree(nested / "cnmc-fork" / "data" / "C-NMC_Leukemia")
    assert find_cnmc(nested) == deep


def test_a_renamed_root_is_found_by_its_training_folds(tmp_path):
    root = _tree(tmp_path / "input" / "cnmc" / "renamed")
    assert find_cnmc(tmp_path / "input") == root


def test_no_dataset_is_one_line_naming_what_is_there(tmp_path):
    (tmp_path / "input" / "blood-cells").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"it holds: blood-cells\); attach the C-NMC 2019 dataset"):
        find_cnmc(tmp_path / "input")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        find_cnmc(tmp_path / "missing")

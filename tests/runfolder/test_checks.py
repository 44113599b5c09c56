"""runfolder/checks.py: split.csv as one typed record (SplitTruth), and predictions checked against it."""

from __future__ import annotations

import numpy as np
import pytest

from allwen.evaluation.synthetic import write_synthetic_run
from allwen.io import RunFileError
from allwen.runfolder import RunFolder, check_recorded_files


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("checks") / "run"
    write_synthetic_run(root, n_test=12, n_test_subjects=4, n_pool=24, n_pool_subjects=6, lrs=(1e-3,), folds=2,
                        bootstrap=0)
    return root


def test_the_split_is_one_typed_record(run):
    truth = RunFolder(run).split_truth()
    assert truth.folds == [0, 1] and truth.val_role == "val"
    test0, test1 = truth.indices(0, "test"), truth.indices(1, "test")
    assert len(test0) == 12 and np.array_equal(test0, test1)
    val0, val1 = truth.indices(0, "val"), truth.indices(1, "val")
    assert not set(val0) & set(val1) and len(val0) + len(val1) == 24
    np.testing.assert_array_equal(truth.rows(0, "val"), val0)
    paths, labels = truth.role_rows(1, "train")
    assert paths == truth.paths[val0].tolist() and set(labels) <= {"hem", "all"}
    subject_of = truth.subject_of()
    assert len(subject_of) == 36 and all(s.startswith("S") for s in subject_of.values())
    assert truth.image_keys().tolist() == truth.columns["sha256"].tolist()
    assert truth.optional("pseudo_patient") is None


def test_validate_on_test_comes_from_split_json_not_from_missing_rows(run):
    from allwen.runfolder.checks import SplitTruth

    folder = RunFolder(run)
    truth = SplitTruth.load(folder.split_csv, "test")
    np.testing.assert_array_equal(truth.rows(0, "val"), truth.indices(0, "test"))
    assert SplitTruth.load(folder.split_csv, None).val_role == "val"


def test_a_prediction_file_that_disagrees_with_the_split_is_refused(run):
    folder = RunFolder(run)
    unit = folder.unit_predictions("lr=0.001", 0)
    truth = folder.split_truth()
    fix = "redo it"
    y = unit.test_y.copy()
    y[0] = 1 - y[0]
    with pytest.raises(RunFileError, match=r"row 2 .* has y_true .* but .*split.csv labels it"):
        truth.check(folder.split_csv, unit.name, 0, "test", unit.test_paths, y, unit.classes, fix)
    with pytest.raises(RunFileError, match=r"11 rows, but .* puts 12 images on the test side"):
        truth.check(folder.split_csv, unit.name, 0, "test", unit.test_paths[1:], unit.test_y[1:], unit.classes, fix)
    with pytest.raises(RunFileError, match="has no column fold_7"):
        truth.rows(7, "val")


def test_recorded_files_must_keep_their_sha256(tmp_path):
    (tmp_path / "a.csv").write_text("x")
    from allwen.io import record_files

    recorded = record_files(tmp_path, ["a.csv"])
    check_recorded_files(tmp_path, recorded, "unit.json", "redo it")
    (tmp_path / "a.csv").write_text("y")
    with pytest.raises(RunFileError, match="changed since unit.json was written"):
        check_recorded_files(tmp_path, recorded, "unit.json", "redo it")
    (tmp_path / "a.csv").unlink()
    with pytest.raises(RunFileError, match="missing, though unit.json lists it"):
        check_recorded_files(tmp_path, recorded, "unit.json", "redo it")

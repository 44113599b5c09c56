"""The one reader and writer of prediction CSVs: a round trip, and each defect named with its unit and file."""

from __future__ import annotations

import numpy as np
import pytest

from allwen.runfolder.predictions import MissingPredictionsError, read_predictions, write_predictions

CLASSES = ["hem", "all"]


def _write(path, proba=((0.25, 0.75), (1.0, 0.0)), labels=(1, -1)):
    return write_predictions(path, ["a.bmp", "b.bmp"], np.array(labels), np.array(proba), CLASSES)


def test_a_round_trip_keeps_paths_classes_labels_and_probabilities(tmp_path):
    path = _write(tmp_path / "p.csv")
    assert path.read_text().splitlines()[0] == "path,y_true,prob_hem,prob_all"
    paths, classes, y, proba = read_predictions(path, "lr=0.1/fold_0", "fix it", allow_unlabelled=True)
    assert paths == ["a.bmp", "b.bmp"] and classes == CLASSES and y.tolist() == [1, -1]
    np.testing.assert_array_equal(proba, [[0.25, 0.75], [1.0, 0.0]])


def test_the_writer_refuses_mismatched_shapes(tmp_path):
    with pytest.raises(ValueError, match="2x2 probabilities but 2 paths, 1 labels and 2 classes"):
        write_predictions(tmp_path / "p.csv", ["a", "b"], np.array([0]), np.eye(2), CLASSES)
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("text, problem", [
    (None, "is missing"),
    ("path,prob_hem,prob_all\na,0.5,0.5\n", "lacks columns"),
    ("path,y_true,prob_hem,prob_all\n", "has no rows"),
    ("path,y_true,prob_hem,prob_all\na,0,0.5,x\n", "non-numeric"),
    ("path,y_true,prob_hem,prob_all\na,0,0.5,\n", "empty, NaN or outside [0, 1] (row 2)"),
    ("path,y_true,prob_hem,prob_all\na,0,0.5,0.6\n", "do not sum to 1 (row 2 sums to 1.1)"),
    ("path,y_true,prob_hem,prob_all\na,0.5,0.5,0.5\n", "not integer class indices"),
    ("path,y_true,prob_hem,prob_all\na,2,0.5,0.5\n", "y_true outside [-1, 1]"),
    ("path,y_true,prob_hem,prob_all\n,0,0.5,0.5\n", "empty path"),
])
def test_each_defect_names_the_unit_the_file_and_the_fix(tmp_path, text, problem):
    path = tmp_path / "p.csv"
    if text is not None:
        path.write_text(text)
    with pytest.raises(MissingPredictionsError) as err:
        read_predictions(path, "lr=0.1/fold_0", "run it again", allow_unlabelled=True)
    message = str(err.value)
    assert message.startswith(f"unit lr=0.1/fold_0: {path} ") and problem in message and message.endswith("run it again")


def test_unlabelled_rows_only_where_allowed(tmp_path):
    path = _write(tmp_path / "p.csv")
    with pytest.raises(MissingPredictionsError, match=r"y_true outside \[0, 1\]"):
        read_predictions(path, "u", "fix", allow_unlabelled=False)

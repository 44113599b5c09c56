"""Results are checked against their source: the split holds the labels, unit.json the fingerprints.

Each test edits a finished run the way a careless script (or a hand) could, then asks for the
report again: allwen must refuse, naming the file and how to redo it, and never print numbers
computed from the edited file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from allwen.runfolder import RunFolder
from allwen.io import RunFileError, record_files
from allwen.pipeline import rebuild_report

from .conftest import allwen

UNITS = ("lr=0.01/fold_0", "lr=0.01/fold_1", "lr=0.001/fold_0", "lr=0.001/fold_1")


def _edit(run: Path, unit: str, name: str, change, refingerprint: bool) -> Path:
    """Apply ``change`` to a unit's prediction file; optionally record its new sha256 in unit.json
    (a forger who knows the format), so that the check against the split must catch it alone."""
    folder = run / "units" / unit
    path = folder / name
    frame = change(pd.read_csv(path))
    frame.to_csv(path, index=False)
    if refingerprint:
        info = json.loads((folder / "unit.json").read_text())
        info["files"].update(record_files(folder, [name]))
        (folder / "unit.json").write_text(json.dumps(info))
    return path


def _flip_first_label(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[0, "y_true"] = 1 - frame.loc[0, "y_true"]
    return frame


def test_a_changed_prediction_file_is_refused_by_its_fingerprint(run_copy):
    path = _edit(run_copy, UNITS[0], "predictions_test.csv", _flip_first_label, refingerprint=False)
    with pytest.raises(RunFileError, match="changed since") as info:
        rebuild_report(run_copy)
    assert str(path) in str(info.value) and "delete" in str(info.value) and "allwen run" in str(info.value)


def test_the_same_label_edit_in_every_unit_is_refused_by_the_split(run_copy):
    for unit in UNITS:  # the units still agree with each other: only the split can tell
        _edit(run_copy, unit, "predictions_test.csv", _flip_first_label, refingerprint=True)
    with pytest.raises(RunFileError, match=r"row 2 .* has y_true .* but .*split.csv labels it"):
        rebuild_report(run_copy)


def test_an_edited_validation_label_is_refused(run_copy):
    _edit(run_copy, UNITS[2], "predictions_val.csv", _flip_first_label, refingerprint=True)
    with pytest.raises(RunFileError, match=r"predictions_val.csv: row 2"):
        rebuild_report(run_copy)


def test_probabilities_that_do_not_sum_to_one_are_refused(run_copy):
    def inflate(frame):
        frame.loc[3, "prob_all"] = min(1.0, frame.loc[3, "prob_all"] + 0.8)
        frame.loc[3, "prob_hem"] = 0.8
        return frame

    _edit(run_copy, UNITS[1], "predictions_test.csv", inflate, refingerprint=True)
    with pytest.raises(ValueError, match=r"do not sum to 1 \(row 5 sums to"):
        rebuild_report(run_copy)


def test_a_deleted_row_is_refused_with_both_counts(run_copy):
    path = _edit(run_copy, UNITS[3], "predictions_test.csv", lambda f: f.drop(index=4), refingerprint=True)
    n_test = json.loads((run_copy / "splits" / "split.json").read_text())["n_test"]
    with pytest.raises(RunFileError, match=rf"{n_test - 1} rows, but .*split.csv puts {n_test} images on the test side"):
        rebuild_report(run_copy)
    assert path.exists()


def test_rows_in_another_order_are_refused(run_copy):
    _edit(run_copy, UNITS[0], "predictions_val.csv", lambda f: f.iloc[::-1], refingerprint=True)
    with pytest.raises(RunFileError, match=r"predictions_val.csv: row 2 is .* but .*split.csv lists"):
        rebuild_report(run_copy)


def test_an_ensemble_file_changed_after_it_was_written_is_refused(run_copy):
    folder = next(run_copy.glob("ensembles/*"))
    assert RunFolder(run_copy).read_ensemble(folder).members
    (folder / "predictions_test.csv").write_text((folder / "predictions_test.csv").read_text().replace("0.", "0.1", 1))
    with pytest.raises(RunFileError, match="changed since"):
        RunFolder(run_copy).read_ensemble(folder)


def test_an_edited_summary_is_not_quoted_by_the_headline(run_copy):
    path = run_copy / "report" / "summary.json"
    path.write_text(path.read_text().replace('"accuracy": 0.', '"accuracy": 0.9', 1))
    result = allwen("report", str(run_copy), "--headline")
    assert result.returncode == 2
    assert "summary.json: changed since" in result.stderr and f"allwen report {run_copy}" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    rebuilt = allwen("report", str(run_copy))  # the fix the message gives works
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert allwen("report", str(run_copy), "--headline").returncode == 0

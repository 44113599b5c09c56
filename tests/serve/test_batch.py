"""allwen predict's inputs: a CSV of paths (with subjects) or files and folders, grouped into patients."""

from __future__ import annotations

import pandas as pd
import pytest

from allwen.serve.batch import patient_groups, request_inputs


def test_a_csv_of_paths_is_read_relative_to_its_folder_with_its_subjects(tmp_path):
    (tmp_path / "cells").mkdir()
    listing = tmp_path / "cells" / "list.csv"
    listing.write_text("path,subject\na.bmp,p1\n/abs/b.bmp,p2\n")
    paths, subjects = request_inputs([str(listing)])
    assert paths == [str(tmp_path / "cells" / "a.bmp"), "/abs/b.bmp"] and subjects == ["p1", "p2"]
    table = pd.DataFrame({"path": paths})
    assert patient_groups(table, subjects) == ["p1", "p2"]


def test_files_and_folders_are_grouped_by_their_folder(tmp_path):
    args = [str(tmp_path / "p1" / "a.bmp"), str(tmp_path / "p2")]
    assert request_inputs(args) == (args, None)
    table = pd.DataFrame({"path": [str(tmp_path / "p1" / "a.bmp"), str(tmp_path / "p2" / "c.bmp")]})
    assert patient_groups(table, None) == [str(tmp_path / "p1"), str(tmp_path / "p2")]


def test_a_csv_without_a_path_column_is_one_line(tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("file\na.bmp\n")
    with pytest.raises(ValueError, match="needs a 'path' column"):
        request_inputs([str(listing)])

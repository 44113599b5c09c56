"""``allwen predict``'s inputs and per-patient output: what a command line names, turned into images and groups.

* one argument ending in ``.csv`` is a list of images: a ``path`` column (relative to the CSV's
  folder) and optionally ``subject``, which then groups the images into patients;
* otherwise files, folders and patterns (:func:`allwen.serve.images.expand_inputs`), grouped by
  their folder (one folder = one patient's cells) for ``--by-folder``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from allwen.serve.abstain import patient_table


def read_paths_csv(path: Path) -> tuple[list[str], list[str] | None]:
    """A CSV of images to predict: a ``path`` column (relative paths from the CSV's folder), optional ``subject``."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "path" not in rows[0]:
        raise ValueError(f"{path}: a CSV of images needs a 'path' column (and optionally 'subject')")
    base = Path(path).parent
    paths = [str(p if Path(p).is_absolute() else base / p) for p in (r["path"] for r in rows)]
    subjects = [str(r.get("subject") or "") for r in rows] if "subject" in rows[0] else None
    return paths, subjects


def request_inputs(args: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """(inputs to predict, each one's subject or None) from the command line's arguments."""
    args = list(args)
    if len(args) == 1 and args[0].lower().endswith(".csv") and Path(args[0]).is_file():
        return read_paths_csv(Path(args[0]))
    return args, None


def patient_groups(table: Any, subjects: Sequence[str] | None) -> list[str]:
    """Each predicted row's patient: its CSV subject, else its folder."""
    return list(subjects) if subjects is not None else [str(Path(p).parent) for p in table["path"]]


def folder_verdicts(bundle: Any, table: Any, subjects: Sequence[str] | None) -> Any:
    """One verdict per patient (folder or CSV subject) of a predictions table (``--by-folder``)."""
    return patient_table(table, patient_groups(table, subjects), bundle.manifest)


def status_line(table: Any) -> str:
    """``allwen predict``'s one-line summary: how many cells got each status, the classes of the answered ones."""
    from allwen.serve.status import STATUSES

    counts = table["status"].value_counts()
    answered = table.loc[table["status"] == "answered", "predicted"].value_counts()
    classes = ", ".join(f"{k}: {v}" for k, v in answered.items())
    words = {"refer": "referred"}
    parts = [f"{int(counts.get(s, 0))} {words.get(s, s.replace('_', ' '))}"
             + (f" ({classes})" if s == "answered" and classes else "") for s in STATUSES]
    return f"{len(table)} images: " + ", ".join(parts)


__all__ = ["folder_verdicts", "status_line", "patient_groups", "read_paths_csv", "request_inputs"]

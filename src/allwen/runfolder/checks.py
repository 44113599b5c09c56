"""Saved predictions checked against their source before anything is computed from them.

A prediction file is the unit's claim; the truth is elsewhere: which images are on which
side and what their labels are is in ``splits/split.csv``, and what the unit wrote is
fingerprinted (sha256) in its ``unit.json``. Evaluation refuses a file that changed since the
unit finished, a row for an image the split does not put there, a missing or extra row, or a
label that differs from the split's, naming the file and saying how to redo the unit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from allwen.io import RunFileError, file_sha256, read_csv_columns

log = logging.getLogger(__name__)


def redo_hint(run_dir: Path, unit: str) -> str:
    return (f"delete {run_dir / 'units' / unit} and run `allwen run CONFIG --out {run_dir}` again "
            "(same config) to train that unit again")


def check_recorded_files(folder: Path, recorded: dict[str, str] | None, what: str, fix: str) -> None:
    """Every file named in ``recorded`` must still have the recorded sha256."""
    if not recorded:
        log.warning("%s: no file fingerprints recorded (made by an older allwen); its files cannot be checked", what)
        return
    for name, digest in recorded.items():
        path = folder / name
        if not path.is_file():
            raise RunFileError(f"{path}: missing, though {what} lists it; {fix}")
        if file_sha256(path) != digest:
            raise RunFileError(f"{path}: changed since {what} was written (its sha256 differs from the recorded one); {fix}")


SPLIT_FIX = ("the split is the run's ground truth: restore it, or start a new run folder "
             "(`allwen run CONFIG --out NEW`)")


@dataclass
class SplitTruth:
    """``splits/split.csv`` as one typed record, the one interpretation of its columns: every image's path,
    label and role (train/val/test) per fold, its subject, hash, pseudo-patient and near-duplicate group.

    ``val_role`` is the role a fold validates on: ``val``, or ``test`` when the split was made with
    ``split.validate_on=test`` (``split.json``'s settings say so; a fold then validates on its test rows).
    """

    path: Path
    paths: np.ndarray
    labels: np.ndarray
    roles: dict[str, np.ndarray]  # fold_<k> -> each image's role
    columns: dict[str, np.ndarray]  # every column as text (subject, sha256, ...)
    val_role: str = "val"

    @classmethod
    def load(cls, path: Path, validate_on: str | None = None) -> "SplitTruth":
        columns = read_csv_columns(path, SPLIT_FIX)
        folds = sorted((c for c in columns if c.startswith("fold_") and c[5:].isdigit()), key=lambda c: int(c[5:]))
        if not {"path", "label"} <= set(columns) or not folds:
            raise RunFileError(f"{path}: lacks the path, label or fold_<k> columns; {SPLIT_FIX}")
        return cls(path, columns["path"], columns["label"], {f: columns[f] for f in folds}, columns,
                   "test" if validate_on == "test" else "val")

    @property
    def folds(self) -> list[int]:
        """The fold numbers, in order."""
        return [int(c[5:]) for c in self.roles]

    def indices(self, fold: int, role: str) -> np.ndarray:
        """Row positions whose role in ``fold`` is exactly ``role``."""
        return np.flatnonzero(self.roles[f"fold_{fold}"] == role)

    def optional(self, column: str) -> list[str] | None:
        """A column that older splits may lack (``pseudo_patient``, ``near_duplicate_group``) as text, or None."""
        return self.columns[column].tolist() if column in self.columns else None

    def image_keys(self) -> np.ndarray:
        """What identifies an image's content: its sha256, or its path in splits made without hashes."""
        return self.columns.get("sha256", self.paths)

    def has_fold(self, fold: int) -> bool:
        return f"fold_{fold}" in self.roles

    def role_rows(self, fold: int, role: str) -> tuple[list[str], list[str]]:
        """(paths, labels) of the images whose role in ``fold`` is exactly ``role`` (``train``, ``val``, ``test``)."""
        rows = self.indices(fold, role)
        return [str(p) for p in self.paths[rows]], [str(v) for v in self.labels[rows]]

    def subject_of(self) -> dict[str, str]:
        """Each image's subject id (empty when the split names none)."""
        if "subject" not in self.columns:
            return {}
        return dict(zip(self.paths.tolist(), self.columns["subject"].tolist()))

    def rows(self, fold: int, role: str) -> np.ndarray:
        column = f"fold_{fold}"
        if column not in self.roles:
            raise RunFileError(f"{self.path}: has no column {column}, but a unit fold_{fold} exists; "
                               "the unit belongs to another split: use a new run folder")
        return np.flatnonzero(self.roles[column] == (self.val_role if role == "val" else role))

    def check(self, file: Path, unit: str, fold: int, role: str, paths: list[str], y: np.ndarray,
              classes: list[str], fix: str) -> np.ndarray:
        """The file's rows must be the split's ``role`` rows of ``fold``, in order, with its labels.

        Returns the labels as class indices, taken from the split.
        """
        rows = self.rows(fold, role)
        expected = self.paths[rows]
        if len(paths) != len(expected):
            raise RunFileError(
                f"{file}: {len(paths)} rows, but {self.path} puts {len(expected)} images on the {role} side of "
                f"fold_{fold}; {fix}")
        differ = np.flatnonzero(np.asarray(paths, dtype=object) != expected)
        if differ.size:
            i = int(differ[0])
            raise RunFileError(f"{file}: row {i + 2} is {paths[i]}, but {self.path} lists {expected[i]} there; {fix}")
        lookup = {name: k for k, name in enumerate(classes)}
        truth = np.array([lookup.get(label, -1) for label in self.labels[rows]], dtype=np.int64)
        unknown = [label for label in self.labels[rows] if label and label not in lookup]
        if unknown:
            raise RunFileError(f"{file}: classes {classes} lack the split's label {unknown[0]!r}; {fix}")
        wrong = np.flatnonzero(truth != np.asarray(y))
        if wrong.size:
            i = int(wrong[0])
            raise RunFileError(
                f"{file}: row {i + 2} ({paths[i]}) has y_true {int(y[i])}, but {self.path} labels it "
                f"{self.labels[rows][i]!r} ({truth[i]}); {len(wrong)} rows differ; {fix}")
        return truth

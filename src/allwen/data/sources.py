"""Data sources: each reads a dataset in its native layout into an :class:`ImageTable`.

Sources are looked up by name in ``SOURCES``; ``auto`` picks one from the folder's layout.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pandas as pd

from allwen.data.table import COLUMNS, ImageTable, file_sha256
from allwen.progress import track

if TYPE_CHECKING:
    from allwen.data.hashes import HashRecord

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff"}
CNMC_ALL = re.compile(r"^UID_(\d+)_(\d+)_(\d+)_all\.bmp$", re.IGNORECASE)
CNMC_HEM = re.compile(r"^UID_[Hh](\d+)_(\d+)_(\d+)_hem\.bmp$", re.IGNORECASE)
CNMC_CLASSES = ["hem", "all"]  # index 1 = ALL, as in the challenge's labels (1 = ALL, 0 = hem)
PRELIM_DIR = "C-NMC_test_prelim_phase_data"
PRELIM_LABELS = "C-NMC_test_prelim_phase_data_labels.csv"
FINAL_DIR = "C-NMC_test_final_phase_data"
TALEQANI_CLASSES = ["Benign", "Early", "Pre", "Pro"]


class DataSourceError(ValueError):
    """The dataset cannot be read as asked; the message says which file and what to do."""


def cnmc_subject(name: str) -> tuple[str, str] | None:
    """(label, subject) from a C-NMC training file name, or None if it is not one.

    ``UID_<P>_<n>_<c>_all.bmp`` -> ("all", "P"); ``UID_H<S>_...`` and ``UID_h<S>_...``
    -> ("hem", "H<S>") (the dataset spells one subject with a lowercase h).
    """
    if m := CNMC_ALL.match(name):
        return "all", m.group(1)
    if m := CNMC_HEM.match(name):
        return "hem", f"H{m.group(1)}"
    return None


def _row(path: Path, label: str, subject: str, split: str, hash_files: bool) -> dict:
    try:
        size = path.stat().st_size
    except OSError:
        size = -1
    # None: hashed by _frame, all files in one pass with progress
    return dict(path=str(path), label=label, subject=subject, source_split=split, size_bytes=size,
                sha256=None if hash_files else "")


def _hash(path: str) -> str:
    try:
        return file_sha256(path)
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc)
        return ""


#: how many entries a layout check looks at in one class folder before calling it imageless: a check
#: before the scan, so `data.path: /` is refused in a moment instead of after reading the whole disk
PROBE_ENTRIES = 5000


def _holds_image(folder: Path, budget: int = PROBE_ENTRIES) -> bool:
    """Whether an image file turns up among the first ``budget`` entries, breadth first."""
    queue = [folder]
    while queue and budget > 0:
        current = queue.pop(0)
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries[:budget]:
            budget -= 1
            try:
                if entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                    return True
                if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                    queue.append(Path(entry.path))
            except OSError:
                continue
    return False


def check_class_layout(path: Path, class_dirs: list[Path]) -> None:
    """One folder per class, every one holding images, none loose beside them; else one line with the counts."""
    loose = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if loose:
        raise DataSourceError(
            f"{path}: {len(loose)} image file(s) directly in the folder, outside any class folder (e.g. "
            f"{loose[0].name}), beside {len(class_dirs)} subfolder(s); a labelled dataset has one folder per "
            f"class ({path / '<class>' / '<image>'}): move the images into their class folders or point data.path at "
            "the folder whose subfolders are the classes")
    empty = [d.name for d in class_dirs if not _holds_image(d)]
    if empty:
        shown = ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else "")
        raise DataSourceError(
            f"{path}: {len(empty)} of {len(class_dirs)} subfolders hold no image ({shown}); a labelled dataset "
            f"has one folder of images per class ({path / '<class>' / '<image>'}): point data.path at the folder whose "
            "subfolders are the classes, or remove the others")


def _images_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _frame(rows: list[dict], hashes: "HashRecord | None" = None) -> pd.DataFrame:
    """The table's frame; files are hashed here, reusing ``hashes``' recorded digests of files
    whose size and modification time are unchanged (:mod:`allwen.data.hashes`)."""
    todo = [r for r in rows if r["sha256"] is None]
    if hashes is not None:
        for row in todo:
            row["sha256"] = hashes.known(row["path"])
        todo = [r for r in todo if r["sha256"] is None]
    for row in track(todo, len(todo), "hashing images"):
        row["sha256"] = _hash(row["path"])
        if hashes is not None:
            hashes.record(row["path"], row["sha256"])
    return pd.DataFrame(rows, columns=COLUMNS)


# --------------------------------------------------------------------------- C-NMC 2019
def _find_prelim_labels(folder: Path) -> Path | None:
    for candidate in (folder / PRELIM_LABELS, folder.parent / PRELIM_LABELS):
        if candidate.exists():
            return candidate
    return None


def _read_prelim_labels(csv_path: Path) -> dict[str, tuple[str, str]]:
    """new_names -> (label, subject) from the challenge's labels CSV."""
    out: dict[str, tuple[str, str]] = {}
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        need = {"Patient_ID", "new_names", "labels"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise DataSourceError(
                f"{csv_path}: expected columns {sorted(need)}, found {reader.fieldnames}"
            )
        for line_no, rec in enumerate(reader, start=2):
            value = (rec["labels"] or "").strip()
            if value not in ("0", "1"):
                raise DataSourceError(f"{csv_path}:{line_no}: labels must be 0 (hem) or 1 (all), got {value!r}")
            label = CNMC_CLASSES[int(value)]
            parsed = cnmc_subject(Path(rec["Patient_ID"]).name)
            out[rec["new_names"].strip()] = (label, parsed[1] if parsed else "")
    return out


def load_cnmc(path: Path, hash_files: bool = True, hashes: HashRecord | None = None) -> ImageTable:
    """C-NMC 2019 in its published layout, from ``C-NMC_Leukemia`` or any folder inside it."""
    path = Path(path)
    if not path.is_dir():
        raise DataSourceError(f"{path}: not a folder; point data.path at C-NMC_Leukemia or a part of it")
    if not _looks_cnmc(path):
        raise DataSourceError(
            f"{path}: not a C-NMC tree (found {sum(1 for _ in path.iterdir())} entries, none of C-NMC_Leukemia, "
            f"training_data, fold_N, all/hem with UID_ names, {PRELIM_DIR}, {FINAL_DIR}); point data.path at "
            "C-NMC_Leukemia or a part of it")
    rows: list[dict] = []
    notes: list[str] = []
    labels_cache: dict[Path, dict[str, tuple[str, str]] | None] = {}
    for file in _images_under(path):
        parts = file.relative_to(path.parent).parts
        parsed = cnmc_subject(file.name)
        if parsed is not None:
            fold = next((p for p in parts if re.fullmatch(r"fold_\d+", p)), "train")
            folder_label = file.parent.name.lower()
            if folder_label in CNMC_CLASSES and folder_label != parsed[0]:
                raise DataSourceError(f"{file}: name says {parsed[0]!r} but it is in the {folder_label!r} folder")
            rows.append(_row(file, parsed[0], parsed[1], fold, hash_files))
        elif PRELIM_DIR in parts:
            folder = file.parent
            if folder not in labels_cache:
                csv_path = _find_prelim_labels(folder)
                labels_cache[folder] = _read_prelim_labels(csv_path) if csv_path else None
                if csv_path is None:
                    notes.append(f"{folder}: no {PRELIM_LABELS} found; preliminary test images are unlabelled")
            lookup = labels_cache[folder]
            label, subject = ("", "")
            if lookup is not None:
                if file.name not in lookup:
                    raise DataSourceError(f"{file}: not listed in {PRELIM_LABELS}; is the CSV from this dataset?")
                label, subject = lookup[file.name]
            rows.append(_row(file, label, subject, "prelim_test", hash_files))
        elif FINAL_DIR in parts:
            rows.append(_row(file, "", "", "final_test", hash_files))
        else:
            notes.append(f"skipped {file}: not a C-NMC file name")
    if not rows:
        raise DataSourceError(
            f"{path}: no C-NMC images found among {len(notes)} other file(s) (expected "
            f"training_data/fold_N/{{all,hem}}/UID_*.bmp or {PRELIM_DIR}/N.bmp)"
        )
    return ImageTable(_frame(rows, hashes), list(CNMC_CLASSES), "cnmc", path, notes)


def _class_order(names: list[str]) -> list[str]:
    """Alphabetical, except that an all/hem dataset keeps C-NMC's order (1 = ALL, the positive class)."""
    return list(CNMC_CLASSES) if sorted(names) == sorted(CNMC_CLASSES) else names


# --------------------------------------------------------------------------- folders
def load_class_folders(path: Path, hash_files: bool = True, classes: list[str] | None = None,
                       source: str = "folder", hashes: HashRecord | None = None) -> ImageTable:
    """Any tree with one folder per class (images may sit in subfolders of it)."""
    path = Path(path)
    if not path.is_dir():
        raise DataSourceError(f"{path}: not a folder")
    class_dirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes is not None:
        missing = [c for c in classes if not (path / c).is_dir()]
        if missing:
            raise DataSourceError(f"{path}: missing class folders {missing}")
        class_dirs = [path / c for c in classes]
    else:
        check_class_layout(path, class_dirs)
    rows = [_row(f, d.name, "", "", hash_files) for d in class_dirs for f in _images_under(d)]
    if not rows:
        raise DataSourceError(f"{path}: no images in class folders (expected {path}/<class>/<image>)")
    names = _class_order([d.name for d in class_dirs if any(r["label"] == d.name for r in rows)])
    return ImageTable(_frame(rows, hashes), names, source, path)


def load_taleqani(path: Path, hash_files: bool = True, hashes: HashRecord | None = None) -> ImageTable:
    """Taleqani 4-class ALL dataset (Original or Segmented): Benign/ Early/ Pre/ Pro/."""
    path = Path(path)
    if not all((path / c).is_dir() for c in TALEQANI_CLASSES):
        for sub in ("Original", "Segmented"):
            if all((path / sub / c).is_dir() for c in TALEQANI_CLASSES):
                path = path / sub
                break
        else:
            raise DataSourceError(f"{path}: expected folders {TALEQANI_CLASSES} (or Original/ Segmented/ holding them)")
    return load_class_folders(path, hash_files, classes=TALEQANI_CLASSES, source="taleqani", hashes=hashes)


def binary_view(table: ImageTable) -> ImageTable:
    """Taleqani's binary view: Benign = normal (hem), Early/Pre/Pro = ALL."""
    if table.source != "taleqani":
        raise DataSourceError(f"data.view=binary applies to the Taleqani source, not {table.source!r}")
    frame = table.frame.copy()
    frame["label"] = ["hem" if x == "Benign" else "all" for x in frame["label"]]
    return ImageTable(frame, list(CNMC_CLASSES), table.source, table.root, table.notes + ["binary view"])


def load_manifest(path: Path, hash_files: bool = True, hashes: HashRecord | None = None) -> ImageTable:
    """A CSV manifest with columns path,label[,subject]; relative paths are relative to the CSV."""
    path = Path(path)
    try:
        manifest = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises many types for bad CSV
        raise DataSourceError(f"{path}: cannot read as CSV: {exc}") from None
    for column in ("path", "label"):
        if column not in manifest.columns:
            raise DataSourceError(f"{path}: missing column {column!r} (need path,label[,subject])")
    rows = []
    for i, rec in manifest.iterrows():
        file = Path(rec["path"])
        file = file if file.is_absolute() else (path.parent / file).resolve()
        rows.append(_row(file, rec["label"], rec.get("subject", "") or "", rec.get("split", "") or "", hash_files))
    classes = _class_order(sorted({r["label"] for r in rows if r["label"]}))
    return ImageTable(_frame(rows, hashes), classes, "csv", path.parent)


# --------------------------------------------------------------------------- registry
SOURCES: dict[str, Callable[..., ImageTable]] = {
    "cnmc": load_cnmc,
    "taleqani": load_taleqani,
    "folder": load_class_folders,
    "csv": load_manifest,
}


def _looks_cnmc(path: Path) -> bool:
    """The C-NMC tree, read top-down from its folder names (before any scan of the files)."""
    names = {path.name} | {p.name for p in path.parents}
    if names & {"C-NMC_Leukemia", "training_data", "validation_data", "testing_data", PRELIM_DIR, FINAL_DIR}:
        return True
    children = {p.name for p in path.iterdir()}
    if children & {"C-NMC_Leukemia", "training_data", PRELIM_DIR, FINAL_DIR} or any(
        c.startswith("fold_") for c in children
    ):
        return True
    return any((path / cls).is_dir() and any(cnmc_subject(p.name) for p in (path / cls).iterdir())
               for cls in ("all", "hem"))


def detect_source(path: Path) -> str:
    """Guess the source from the path's layout."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return "csv"
    if not path.is_dir():
        raise DataSourceError(f"{path}: no such file or folder")
    if _looks_cnmc(path):
        return "cnmc"
    children = {p.name for p in path.iterdir()}
    if set(TALEQANI_CLASSES) <= children or any(
        set(TALEQANI_CLASSES) <= {q.name for q in (path / s).iterdir()} for s in ("Original", "Segmented") if (path / s).is_dir()
    ):
        return "taleqani"
    return "folder"


def load_source(path: str | Path, source: str = "auto", view: str = "native", hash_files: bool = True,
                hashes: HashRecord | None = None) -> ImageTable:
    """Read a dataset by source name (or ``auto``) and apply the requested view; ``hashes``: a
    record of content hashes to reuse for unchanged files (and to add the new ones to)."""
    if path is None:
        raise DataSourceError("data.path is not set: point it at a dataset folder or CSV manifest")
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DataSourceError(f"{path}: no such file or folder (data.path)")
    name = detect_source(path) if source == "auto" else source
    if name not in SOURCES:
        raise DataSourceError(f"data.source={source!r}: unknown; choose from {sorted(SOURCES)} or auto")
    if name == "cnmc" and (path / "C-NMC_Leukemia").is_dir():
        path = path / "C-NMC_Leukemia"
    table = SOURCES[name](path, hash_files=hash_files, **({"hashes": hashes} if hashes is not None else {}))
    if view == "binary" and table.classes != CNMC_CLASSES:
        table = binary_view(table)
    log.info("loaded %d images from %s (%s)", len(table), path, name)
    return table

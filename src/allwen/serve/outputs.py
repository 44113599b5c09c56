"""What ``allwen predict`` may write: one check of every output against the inputs.

A prediction run once wrote its Grad-CAM overlays into the folder it read, replacing an input
named like an overlay, and the next run read the overlays as cells (a patient's verdict
flipped); ``--by-folder`` replaced the CSV list it had read; an existing ``--out`` was replaced
silently. So, before anything is predicted, :func:`check_outputs` refuses an output that is an
input (by path, symbolic link or hard link), an output that exists (unless ``--overwrite``), and
an overlay folder that holds an input. Overlays carry a marker in their PNG metadata and their
folder a marker file: :func:`is_overlay_folder` lets input collection skip the folder, and
:func:`overlay_marked` lets the image reader refuse an overlay given by name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from allwen.serve.overlays import (OVERLAY_FOLDER_MARKER, OVERLAY_KEY, OVERLAY_VALUE, is_overlay_folder,  # noqa: F401
                                   mark_overlay_folder, overlay_marked, overlay_names, overlay_pnginfo)


def _same(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # a hard link
    except OSError:
        return False


def _inside(child: Path, folder: Path) -> bool:
    return Path(os.path.realpath(child)).is_relative_to(os.path.realpath(folder))


def check_outputs(inputs: Iterable[str], *, out: Path | None = None, patients: Path | None = None,
                  explain: Path | None = None, overwrite: bool = False) -> None:
    """Refuse, in one line naming the option, any output that would write over an input or an
    existing file (the latter unless ``overwrite``), and an overlay folder holding an input.

    ``inputs``: what predict reads, as given (files, folders, patterns, a CSV list of images: its
    listed files count too).
    """
    from allwen.serve.images import expand_inputs

    given = [str(i) for i in inputs]
    files = [Path(p) for p in expand_inputs(given)]
    for item in given:  # a CSV list is an input, and so is every file it lists
        if item.lower().endswith(".csv") and Path(item).is_file():
            from allwen.serve.batch import read_paths_csv

            try:
                listed, _ = read_paths_csv(Path(item))
            except (ValueError, OSError, UnicodeDecodeError):
                listed = []
            files += [Path(p) for p in listed]
    existing = [f for f in files if f.exists() or f.is_symlink()]
    for option, path in (("--out", out), ("--by-folder", patients)):
        if path is None:
            continue
        if path.is_dir():
            raise ValueError(f"{option} {path}: is a folder; give a .csv file name")
        if any(_same(path, f) for f in files):
            what = "the table" if option == "--by-folder" else "the file"
            raise ValueError(f"{option}: {what} {path} is one of the inputs; choose another --out so no input is "
                             "replaced")
        if (path.exists() or path.is_symlink()) and not overwrite:
            what = "the per-folder table " if option == "--by-folder" else ""
            raise ValueError(f"{option}: {what}{path} exists; give --overwrite to replace it, or another --out")
    if explain is not None:
        if explain.exists() and not explain.is_dir():
            raise ValueError(f"--explain {explain}: is a file; give a folder for the overlays")
        holds = [f for f in existing if _inside(f, explain)]
        holds += [Path(p) for p in given if os.path.realpath(explain) == os.path.realpath(p)]  # an input folder
        if holds:
            example = holds[0]
            raise ValueError(f"--explain {explain}: holds input {example}; overlays go to a folder that holds no "
                             "input (e.g. --explain overlays/)")
        if not overwrite:
            clash = [explain / n for n in overlay_names(str(f) for f in files) if (explain / n).exists()]
            if clash:
                raise ValueError(f"--explain {explain}: {len(clash)} overlay(s) exist already (e.g. {clash[0].name}); "
                                 "give --overwrite to replace them, or another --explain folder")

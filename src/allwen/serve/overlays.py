"""Grad-CAM overlays are never cells: the marker in their PNG metadata and on their folder.

Kept apart from :mod:`allwen.serve.outputs` (what predict may write) so the image reader
(:mod:`allwen.serve.images`) can skip and refuse overlays without importing the output checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

#: the PNG text key (and value) of every overlay allwen writes
OVERLAY_KEY = "allwen"
OVERLAY_VALUE = "gradcam-overlay"
#: the marker file of a folder of overlays: input collection skips the folder
OVERLAY_FOLDER_MARKER = ".allwen-overlays"


def overlay_pnginfo():
    """PNG metadata that marks an image as an allwen overlay, never a cell."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(OVERLAY_KEY, OVERLAY_VALUE)
    return info


def overlay_marked(info: dict) -> bool:
    """Whether an opened image's ``info`` carries the overlay marker."""
    return info.get(OVERLAY_KEY) == OVERLAY_VALUE


def is_overlay_folder(folder: Path) -> bool:
    return (Path(folder) / OVERLAY_FOLDER_MARKER).is_file()


def mark_overlay_folder(folder: Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / OVERLAY_FOLDER_MARKER
    if not marker.exists():
        marker.write_text("Grad-CAM overlays written by allwen predict; allwen never reads this folder as input.\n")


def overlay_names(labels: Iterable[str]) -> list[str]:
    """The overlay file name of each input (``<stem>.gradcam.png``, ``-2``, ``-3``... when stems repeat)."""
    import re

    used: set[str] = set()
    names = []
    for index, label in enumerate(labels):
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(label).stem).strip("_.") or f"image_{index}"
        name, k = f"{stem}.gradcam.png", 2
        while name in used:
            name, k = f"{stem}-{k}.gradcam.png", k + 1
        used.add(name)
        names.append(name)
    return names


__all__ = ["OVERLAY_FOLDER_MARKER", "OVERLAY_KEY", "OVERLAY_VALUE", "is_overlay_folder", "mark_overlay_folder",
           "overlay_marked", "overlay_names", "overlay_pnginfo"]

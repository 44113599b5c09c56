"""The image table every data source produces and every later step reads.

One row per image file: ``path`` (absolute), ``label`` (class name, "" when unlabelled),
``subject`` ("" when the source has no subject ids), ``source_split`` (the dataset's own
part, e.g. ``fold_0`` or ``prelim_test``), ``size_bytes`` and ``sha256`` (content hash, the
key of duplicate detection and of the feature cache).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from allwen.io import file_sha256

__all__ = ["COLUMNS", "ImageTable", "file_sha256"]  # file_sha256: sources hash files with it

COLUMNS = ["path", "label", "subject", "source_split", "size_bytes", "sha256"]


@dataclass
class ImageTable:
    """A dataset as a table plus its class order (index = integer label)."""

    frame: pd.DataFrame
    classes: list[str]
    source: str
    root: Path
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        missing = [c for c in COLUMNS if c not in self.frame.columns]
        if missing:
            raise ValueError(f"image table lacks columns {missing}")
        self.frame = self.frame.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def has_subjects(self) -> bool:
        return bool((self.frame["subject"] != "").any())

    @property
    def labelled(self) -> np.ndarray:
        return (self.frame["label"] != "").to_numpy()

    def label_indices(self) -> np.ndarray:
        """Integer labels in ``classes`` order; -1 for unlabelled rows."""
        lookup = {name: i for i, name in enumerate(self.classes)}
        return np.array([lookup.get(x, -1) for x in self.frame["label"]], dtype=np.int64)

    def subset(self, mask: np.ndarray | pd.Series) -> "ImageTable":
        return ImageTable(self.frame[np.asarray(mask)].copy(), list(self.classes), self.source, self.root, list(self.notes))

    def duplicate_groups(self) -> list[list[int]]:
        """Row indices of every group of byte-identical files (2 or more rows)."""
        groups = self.frame.groupby("sha256", sort=True).indices
        return [sorted(idx.tolist()) for digest, idx in groups.items() if digest != "" and len(idx) > 1]

    def group_keys(self, by_subject: bool, duplicate_aware: bool) -> np.ndarray:
        """A key per row such that rows sharing a key must stay on one side of a split
        (:func:`allwen.data.groups.group_keys`: subjects and duplicates merged transitively)."""
        from allwen.data.groups import group_keys

        return group_keys(self.frame["subject"].tolist(), self.frame["sha256"].tolist(), by_subject, duplicate_aware)

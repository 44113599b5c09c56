"""A cross-validated test folder: one run folder per test part, sharing one cache.

```
DIR/test_part_<k>/      a whole run whose test side is part k (``split.test_part: k``)
DIR/cache/              the content-keyed caches every part's run reads (features computed once)
DIR/crossval.json       the pooled result (``allwen.evaluation.crossval.CrossvalResult``)
DIR/crossval.md         the same, worded for a reader
```
"""

from __future__ import annotations

import os
from pathlib import Path

from allwen.runfolder._paths import CACHE

PART_DIR = "test_part_{k}"
CROSSVAL_JSON = "crossval.json"
CROSSVAL_MD = "crossval.md"


class CrossvalFolder:
    """Names of a cross-validated test folder; the parts are ordinary run folders."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def part(self, k: int) -> Path:
        return self.root / PART_DIR.format(k=k)

    @property
    def cache_dir(self) -> Path:
        return self.root / CACHE

    @property
    def result_path(self) -> Path:
        return self.root / CROSSVAL_JSON

    @property
    def markdown_path(self) -> Path:
        return self.root / CROSSVAL_MD

    def prepare_part(self, k: int) -> Path:
        """The part's run folder, its ``cache`` a link to the shared one (so features are computed once)."""
        folder = self.part(k)
        folder.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        link = folder / CACHE
        if not link.exists() and not link.is_symlink():
            os.symlink(os.path.relpath(self.cache_dir, folder), link, target_is_directory=True)
        return folder

"""Content-keyed rows in one memory-mapped ``.npy`` file: the store behind every run cache.

Decoded images (uint8), the frozen part's activations and pooled backbone features are all
"one fixed-shape array per image", computed once and read by every unit of a run. A store is
two files under ``folder``: ``<name>-<n>.npy`` (n rows, opened memory-mapped, so a unit reads
only the rows it touches and worker processes share the page cache) and ``<name>.json``
(the row keys, usually image sha256s, in row order, and the data file's name). Adding rows
writes a new data file, then the index, each atomically: a reader never sees a half-written
store, and two processes adding the same rows at once write the same content.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Iterable

import numpy as np

from allwen.io import DiskFullError, atomic_write, atomic_write_json

log = logging.getLogger(__name__)


class ArrayStore:
    """Rows of shape ``shape`` and ``dtype``, one per key, under ``folder/<name>.*``."""

    def __init__(self, folder: Path, name: str, shape: tuple[int, ...], dtype: str | np.dtype) -> None:
        self.folder = Path(folder)
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._index: dict[str, int] = {}
        self._file: str | None = None
        self._array: np.ndarray | None = None
        self._load()

    @property
    def index_path(self) -> Path:
        return self.folder / f"{self.name}.json"

    @property
    def data_path(self) -> Path | None:
        return None if self._file is None else self.folder / self._file

    def _load(self) -> None:
        if not self.index_path.exists():
            return
        meta = json.loads(self.index_path.read_text())
        path = self.folder / meta["file"]
        if tuple(meta["shape"]) != self.shape or meta["dtype"] != self.dtype.str or not path.exists():
            log.warning("%s does not match this store (shape, dtype or data file); recomputing", self.index_path)
            return
        array = np.load(path, mmap_mode="r")
        if array.shape != (len(meta["keys"]), *self.shape):
            log.warning("%s: %d keys for %d rows; recomputing", self.index_path, len(meta["keys"]), len(array))
            return
        self._index = {k: i for i, k in enumerate(meta["keys"])}
        self._file, self._array = meta["file"], array

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def missing(self, keys: Iterable[str]) -> list[str]:
        """Keys not stored yet, each once, in first-seen order."""
        return list(dict.fromkeys(k for k in keys if k not in self._index))

    def rows(self, keys: Iterable[str]) -> np.ndarray:
        """Row numbers of ``keys`` in the data file (every key must be stored)."""
        try:
            return np.array([self._index[k] for k in keys], dtype=np.int64)
        except KeyError as exc:
            raise KeyError(f"{self.index_path}: row {exc.args[0]!r} is not stored; add it first") from None

    def array(self) -> np.ndarray:
        """The whole data file, memory-mapped read-only, shape (rows, *shape)."""
        if self._array is None:
            return np.zeros((0, *self.shape), dtype=self.dtype)
        return self._array

    def add(self, keys: list[str], chunks: Iterable[np.ndarray]) -> None:
        """Append rows for ``keys`` (not stored yet), whose values ``chunks`` yields in order."""
        keys = list(keys)
        if not keys:
            return
        if len(set(keys)) != len(keys) or any(k in self._index for k in keys):
            raise ValueError("ArrayStore.add: keys must be new and unique")
        old = self.array()
        all_keys = [k for k, _ in sorted(self._index.items(), key=lambda kv: kv[1])] + keys
        name = f"{self.name}-{len(all_keys)}.npy"

        self.folder.mkdir(parents=True, exist_ok=True)
        need = len(all_keys) * self.nbytes_per_row() + 4096  # the .npy header is at most 4 KiB
        check_free_space(self.folder, need, f"the cache {name}")

        def write(tmp: Path) -> None:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=(len(all_keys), *self.shape))
            reserve(tmp, f"the cache {name}")  # a full disk is an OSError here, not a SIGBUS at a page write
            out[: len(old)] = old
            at = len(old)
            for chunk in chunks:
                out[at: at + len(chunk)] = chunk
                at += len(chunk)
            if at != len(all_keys):
                raise ValueError(f"ArrayStore.add: {at - len(old)} rows computed for {len(keys)} keys")
            out.flush()
            del out

        atomic_write(self.folder / name, write)
        atomic_write_json(self.index_path, {"file": name, "keys": all_keys, "shape": list(self.shape), "dtype": self.dtype.str})
        previous = self.data_path
        self._index = {k: i for i, k in enumerate(all_keys)}
        self._file, self._array = name, np.load(self.folder / name, mmap_mode="r")
        if previous is not None and previous.name != name:
            previous.unlink(missing_ok=True)  # readers that mapped it keep their mapping (POSIX)

    def nbytes_per_row(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


def check_free_space(folder: Path, need: int, what: str) -> None:
    """Refuse at once, in one line, when ``folder``'s disk cannot hold ``need`` more bytes."""
    free = shutil.disk_usage(folder).free
    if free < need:
        raise DiskFullError(f"{folder}: {what} needs {need / 2**20:,.1f} MiB, the disk has {free / 2**20:,.1f} MiB "
                            "free; free some space (or move the run folder) and run the same command again")


def reserve(path: Path, what: str) -> None:
    """Allocate every block of the (sparse) file ``path`` now: writes through a memory map into a
    file the disk cannot hold end in SIGBUS, with no message; this ends in a one-line error."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno in (28, 122):  # ENOSPC, EDQUOT
            raise DiskFullError(f"{path.parent}: no space left for {what} "
                                f"({os.fstat(fd).st_size / 2**20:,.1f} MiB); free some space (or move the run "
                                "folder) and run the same command again") from None
        if exc.errno not in (95,):  # EOPNOTSUPP: the filesystem cannot reserve; write as before
            raise
    finally:
        os.close(fd)

"""Recorded content hashes: a file whose path, size and modification time are unchanged keeps
its recorded sha256, so a resume, a rerun or a report never reads the whole dataset again.

Hashing 12,528 C-NMC images reads about 7 GB; every later step only needs to know that the
files are the ones the run recorded. A :class:`HashRecord` maps each absolute path to
``(size, mtime_ns, sha256)``; :func:`allwen.data.load_source` takes one (``hashes=``) and hashes
only the files it does not know or whose size or modification time changed. A run keeps its
record in ``RUN/data/hashes.json`` (``RunFolder.hashes_path``), written atomically after loading.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from allwen.io import atomic_write_json

log = logging.getLogger(__name__)
VERSION = 1


class HashRecord:
    """path -> (size, mtime_ns, sha256); ``hashed`` counts the files hashed through it."""

    def __init__(self, entries: dict[str, tuple[int, int, str]] | None = None, path: Path | None = None) -> None:
        self.entries = dict(entries or {})
        self.path = path
        self.hashed = 0
        self.reused = 0

    @classmethod
    def load(cls, path: Path | str) -> "HashRecord":
        """The record in ``path``; missing or unreadable: an empty record (everything is hashed)."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("version") != VERSION:
                raise ValueError(f"version {raw.get('version')!r}")
            entries = {str(p): (int(v[0]), int(v[1]), str(v[2])) for p, v in raw["files"].items()}
        except FileNotFoundError:
            entries = {}
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, UnicodeDecodeError) as exc:
            log.warning("%s is unreadable (%s); hashing every image again", path, exc)
            entries = {}
        return cls(entries, path)

    def known(self, path: str) -> str | None:
        """The recorded sha256 of ``path`` when its size and modification time are unchanged."""
        entry = self.entries.get(path)
        if entry is None:
            return None
        try:
            stat = os.stat(path)
        except OSError:
            return None
        if entry[0] == stat.st_size and entry[1] == stat.st_mtime_ns and entry[2]:
            self.reused += 1
            return entry[2]
        return None

    def record(self, path: str, digest: str) -> None:
        """Remember a freshly computed digest (an empty one, an unreadable file, is forgotten)."""
        self.hashed += 1
        try:
            stat = os.stat(path)
        except OSError:
            digest = ""
        if digest:
            self.entries[path] = (stat.st_size, stat.st_mtime_ns, digest)
        else:
            self.entries.pop(path, None)

    def save(self, path: Path | str | None = None) -> Path:
        """Write the record (atomically) to ``path`` or where it was loaded from."""
        target = Path(path or self.path)
        atomic_write_json(target, {"version": VERSION, "files": {p: list(v) for p, v in sorted(self.entries.items())}})
        return target


__all__ = ["HashRecord"]

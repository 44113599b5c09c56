"""Atomic file writes: a run never holds half a file, whatever kills it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: Path | str, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as handle:  # on disk before the rename, not just in the page cache
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` atomically; a file that already holds exactly this text is left alone.

    Rebuilding a report rewrites dozens of unchanged files; skipping them saves an fsync each
    and keeps their modification times honest.
    """
    path = Path(path)
    try:
        if path.stat().st_size == len(text.encode()) and path.read_text() == text:
            return path
    except (OSError, UnicodeDecodeError):
        pass
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: Path | str, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class RunFileError(ValueError):
    """A file of a run folder is missing, truncated or invalid; the message names it and the fix."""


def safe_name(name: str) -> str:
    """A portable folder name: ``inter[lr=0.001]/kappa`` -> ``inter_lr=0.001_kappa`` (run folders' ensembles,
    bundles' members)."""
    import re

    cleaned = re.sub(r"[^A-Za-z0-9._=+-]+", "_", name).strip("_.")
    if not cleaned:
        raise ValueError(f"ensemble name {name!r} has no usable characters for a folder name")
    return cleaned


def file_sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def record_files(folder: Path | str, names: list[str] | tuple[str, ...]) -> dict[str, str]:
    """sha256 of each named file in ``folder``: the fingerprints ``unit.json``/``ensemble.json`` keep."""
    return {name: file_sha256(Path(folder) / name) for name in names}


def read_json(path: Path | str, fix: str, kind: type | None = dict) -> Any:
    """Parse a JSON file of a run folder; any defect is one RunFileError naming the file and ``fix``."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFileError(f"{path}: missing; {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFileError(f"{path}: truncated or invalid JSON ({exc}); {fix}") from None
    if kind is not None and not isinstance(value, kind):
        raise RunFileError(f"{path}: expected a JSON {kind.__name__}, found {type(value).__name__}; {fix}")
    return value


def read_yaml(path: Path | str, fix: str) -> Any:
    """Parse a YAML file of a run folder; any defect is one RunFileError naming the file and ``fix``."""
    import yaml

    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFileError(f"{path}: missing; {fix}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())
        raise RunFileError(f"{path}: not valid YAML ({reason}); {fix}") from None


def read_csv_rows(path: Path | str) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings, short rows padded with "") of a CSV file, with the csv module.

    For the files a report reads on every run (predictions, the split): pandas would cost
    a third of a second to import. Blank lines are skipped; a row longer than the header, or a
    file without a header, raises ValueError; bytes that are not UTF-8 raise UnicodeDecodeError.
    """
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        try:
            rows = [row for row in csv.reader(handle) if row]
        except csv.Error as exc:  # e.g. a NUL byte
            raise ValueError(str(exc)) from None
    if not rows:
        raise ValueError("no header row")
    header, body = rows[0], rows[1:]
    for i, row in enumerate(body):
        if len(row) > len(header):
            raise ValueError(f"data row {i + 1} has {len(row)} fields, the header {len(header)}")
    return header, [row + [""] * (len(header) - len(row)) for row in body]


def read_csv_columns(path: Path | str, fix: str) -> dict[str, "np.ndarray"]:
    """A run folder's CSV file as text columns (``read_csv_rows``); any defect is one RunFileError."""
    import numpy as np

    path = Path(path)
    try:
        header, body = read_csv_rows(path)
    except FileNotFoundError:
        raise RunFileError(f"{path}: missing; {fix}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())
        raise RunFileError(f"{path}: truncated or invalid CSV ({reason}); {fix}") from None
    return {name: np.array([row[i] for row in body], dtype=object) for i, name in enumerate(header)}


def read_csv(path: Path | str, fix: str, **kwargs: Any):
    """Read a CSV file of a run folder with pandas; any defect is one RunFileError naming the file."""
    import pandas as pd

    path = Path(path)
    try:
        return pd.read_csv(path, **kwargs)
    except FileNotFoundError:
        raise RunFileError(f"{path}: missing; {fix}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise RunFileError(f"{path}: truncated or invalid CSV ({reason}); {fix}") from None

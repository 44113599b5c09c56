"""Atomic file writes: a run never holds half a file, whatever kills it."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def user_umask() -> int:
    """The process's umask, read without changing it (``/proc``), else by setting it back at once."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def user_modes(root: Path | str) -> Path:
    """Give ``root`` and everything under it the modes a plain ``open``/``mkdir`` would have (0644
    files, 0755 folders under umask 022): temporary files and folders are private (0600, 0700),
    so a bundle renamed into place from one was unreadable to a lab's service account."""
    root = Path(root)
    mask = user_umask()
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for path in paths:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
    return root


class DiskFullError(OSError):
    """A write found no space; the message names the folder and the fix (one line, no errno)."""


def atomic_write(path: Path | str, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        try:
            write(Path(tmp))
            with open(tmp, "rb") as handle:  # on disk before the rename, not just in the page cache
                os.fsync(handle.fileno())
        except Exception as exc:  # noqa: BLE001 - libraries (safetensors, torch) wrap ENOSPC in their own types
            full = getattr(exc, "errno", None) in (28, 122) or "No space left on device" in str(exc)  # ENOSPC, EDQUOT
            if not full or isinstance(exc, DiskFullError):
                raise
            raise DiskFullError(f"{path}: no space left on the disk while writing it; free some space and run "
                                "the same command again") from None
        os.chmod(tmp, 0o666 & ~user_umask())  # mkstemp's file is 0600; give the user's usual mode
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


#: a cell starting with one of these is a formula to a spreadsheet (``=HYPERLINK(...)`` in a file name)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula, prefixed with ``'`` (shown, not run)."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def write_people_csv(path: Path | str, frame: Any, float_format: str | None = None) -> Path:
    """The one writer of CSV tables meant for people (``allwen predict``'s): atomic, and every text cell
    that a spreadsheet would evaluate escaped; numbers are left as they are."""
    from pandas.api.types import is_numeric_dtype

    safe = frame.copy()
    for column in safe.columns:
        if not is_numeric_dtype(safe[column]):  # text (object or pandas' str) and mixed columns
            safe[column] = safe[column].map(spreadsheet_safe)
    safe.columns = [spreadsheet_safe(str(c)) for c in safe.columns]
    return atomic_write(path, lambda tmp: safe.to_csv(tmp, index=False, float_format=float_format))


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
    path = Path(path)
    try:
        return load_yaml(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        raise RunFileError(f"{path}: missing; {fix}") from None
    except YamlError as exc:
        where = f"line {exc.line}: " if exc.line is not None else ""
        raise RunFileError(f"{path}: not valid YAML ({where}{exc.problem}); {fix}") from None
    except UnicodeDecodeError as exc:
        raise RunFileError(f"{path}: not valid YAML ({exc}); {fix}") from None


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


# --- YAML: the one loader for configs and run files -------------------------------------------

#: at most this many nodes once every alias is expanded: a config has hundreds; a 300-byte
#: "billion laughs" file expands to 10**9 and used to run into a MemoryError after half a minute
YAML_MAX_NODES = 100_000


class YamlError(ValueError):
    """A YAML text that allwen refuses; the message is one line, ``NAME:LINE:COLUMN: problem``."""

    def __init__(self, name: str, problem: str, line: int | None = None, column: int | None = None) -> None:
        self.name, self.problem, self.line = name, problem, line
        where = f"{name}:{line}:{column}" if line is not None else name
        super().__init__(f"{where}: {problem}")


def _strict_loader():
    """A ``yaml.SafeLoader`` subclass that refuses duplicate keys and alias bombs (built once, lazily)."""
    import yaml
    from yaml.constructor import ConstructorError

    class StrictLoader(yaml.SafeLoader):  # the C loader would be faster; configs are small
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen: dict = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.setdefault(key, key_node)
                    except TypeError:  # an unhashable key: SafeLoader reports it
                        break
                    if first is not key_node:
                        raise ConstructorError(
                            None, None, f"duplicate key {key!r} (first on line {first.start_mark.line + 1}); "
                                        "give each key once", key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

        def get_single_node(self):
            node = super().get_single_node()
            if node is not None:
                _check_expanded_size(node)
            return node

    def _check_expanded_size(root) -> None:
        sizes: dict[int, int] = {}
        open_: set[int] = set()
        stack = [(root, False)]
        while stack:  # iterative: a deep document must not exhaust the Python stack
            node, done = stack.pop()
            key = id(node)
            if key in sizes:
                continue
            children = node.value if isinstance(node, yaml.SequenceNode) else (
                [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
            if done:
                open_.discard(key)
                sizes[key] = 1 + sum(sizes[id(c)] for c in children)
                if sizes[key] > YAML_MAX_NODES:
                    raise ConstructorError(None, None, f"aliases expand to more than {YAML_MAX_NODES:,} values "
                                           "(an alias bomb?); write the values out", node.start_mark)
                continue
            if key in open_:
                raise ConstructorError(None, None, "an alias refers to the value that contains it", node.start_mark)
            open_.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            for c in children:
                if id(c) in open_:
                    raise ConstructorError(None, None, "an alias refers to the value that contains it",
                                           c.start_mark)

    return StrictLoader


_LOADER = None


def load_yaml(text: str, name: str = "<text>") -> Any:
    """Parse YAML safely: duplicate keys and alias bombs refused; any error one ``NAME:LINE:COL`` line."""
    import yaml

    global _LOADER
    if _LOADER is None:
        _LOADER = _strict_loader()
    try:
        return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(exc.problem or exc.context or "invalid").split())
        context = f" ({' '.join(exc.context.split())})" if exc.context and exc.problem else ""
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        raise YamlError(name, problem + context, line, column) from None
    except yaml.YAMLError as exc:
        raise YamlError(name, " ".join(str(exc).split())) from None
    except RecursionError:
        raise YamlError(name, "nested too deeply") from None


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, inf) replaced by None, through lists, tuples and dicts:
    JSON has no NaN, and a bundle's sections and verdicts say "no value" as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [json_safe(x) for x in value]
    if isinstance(value, dict):
        return {k: json_safe(x) for k, x in value.items()}
    return value

"""One process per run folder.

Two ``allwen run`` on the same ``--out`` would train the same unit at once and leave files
whose content depends on timing. Every command that writes into a run folder holds an OS lock
(``fcntl.flock``) on the run folder itself, opened for its whole duration: not on a lock file,
whose deletion during a run used to let a second run in. The kernel drops the lock when its
process dies, even by ``kill -9``, so a lock left by a killed process is simply taken over;
``RUN/.allwen.lock.json`` names the current holder (host, pid, command, start time) so the
refused process can say who holds the folder. A process may take the lock again while it holds
it (``allwen run`` takes it before its heavy imports, the pipeline again inside).

Whoever holds the lock is the folder's only writer, so on taking it the temporary files that a
killed writer left behind (``.<name>.<random>.tmp`` from :func:`allwen.io.atomic_write`) are
removed: they are never complete files, and nothing else can be writing them.
"""

import fcntl
import json
import logging
import os
import re
import socket
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from allwen.io import atomic_write_json

HOLDER_NAME = ".allwen.lock.json"
STALE_TMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # tempfile.mkstemp(prefix=".<name>.", suffix=".tmp")

log = logging.getLogger(__name__)


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the half-written ``.tmp`` files of an earlier, killed writer; returns what was removed."""
    removed = []
    for path in run_dir.rglob("*.tmp"):
        if STALE_TMP.match(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run (e.g. %s)", len(removed),
                 removed[0].relative_to(run_dir))
    return removed


class RunLockedError(RuntimeError):
    """Another allwen process holds the run folder."""


def _holder_text(run_dir: Path) -> str:
    try:
        holder = json.loads((run_dir / HOLDER_NAME).read_text())
        return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
                f" ({holder.get('command')})")
    except (OSError, ValueError):
        return "a process that has not written its name yet"


#: (device, inode) of each run folder this process holds -> how many times it was taken
_HELD: dict[tuple[int, int], int] = {}


@contextmanager
def run_lock(run_dir: Path | str, command: str | None = None) -> Iterator[Path]:
    """Hold the run folder for the duration of the block, or raise RunLockedError at once."""
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    info = os.fstat(fd)
    key = (info.st_dev, info.st_ino)
    if key in _HELD:  # this process holds it already: nested, nothing to take or to give back
        os.close(fd)
        _HELD[key] += 1
        try:
            yield run_dir
        finally:
            _HELD[key] -= 1
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunLockedError(
            f"{run_dir} is in use by {_holder_text(run_dir)}; wait for it to finish, or stop it "
            "(a killed process frees the folder by itself)"
        ) from None
    _HELD[key] = 1
    try:
        remove_stale_temporaries(run_dir)
        atomic_write_json(run_dir / HOLDER_NAME, {
            "host": socket.gethostname(), "pid": os.getpid(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command or " ".join(["allwen", *sys.argv[1:]]),
        })
        yield run_dir
    finally:
        del _HELD[key]
        try:
            (run_dir / HOLDER_NAME).unlink(missing_ok=True)
            if created:  # a command that failed before writing anything leaves no empty --out behind
                try:
                    run_dir.rmdir()  # only when empty
                except OSError:
                    pass
        finally:
            os.close(fd)  # closing the last descriptor drops the flock

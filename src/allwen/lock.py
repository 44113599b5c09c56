"""One process per run folder.

Two ``allwen run`` on the same ``--out`` would train the same unit at once and leave files
whose content depends on timing. Every command that writes into a run folder holds
``RUN/.allwen.lock`` (an OS file lock from the ``filelock`` package) for its whole duration.
The kernel drops the lock when its process dies, even by ``kill -9``, so a lock left by a
killed process is simply taken over; ``RUN/.allwen.lock.json`` names the current holder
(host, pid, command, start time) so the refused process can say who holds the folder.

Whoever holds the lock is the folder's only writer, so on taking it the temporary files that a
killed writer left behind (``.<name>.<random>.tmp`` from :func:`allwen.io.atomic_write`) are
removed: they are never complete files, and nothing else can be writing them.
"""

from __future__ import annotations

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

from filelock import FileLock, Timeout

from allwen.io import atomic_write_json

LOCK_NAME = ".allwen.lock"
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


@contextmanager
def run_lock(run_dir: Path | str, command: str | None = None) -> Iterator[Path]:
    """Hold the run folder for the duration of the block, or raise RunLockedError at once."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run_dir / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunLockedError(
            f"{run_dir} is in use by {_holder_text(run_dir)}; wait for it to finish, or stop it "
            "(a killed process frees the folder by itself)"
        ) from None
    try:
        remove_stale_temporaries(run_dir)
        atomic_write_json(run_dir / HOLDER_NAME, {
            "host": socket.gethostname(), "pid": os.getpid(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": command or " ".join(["allwen", *sys.argv[1:]]),
        })
        yield run_dir
    finally:
        try:
            (run_dir / HOLDER_NAME).unlink(missing_ok=True)
        finally:
            lock.release()

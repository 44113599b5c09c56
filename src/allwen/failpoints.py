"""Named points where a test can kill allwen with SIGKILL, to prove that every phase resumes.

``ALLWEN_KILL_AT=<point>[:<n>]`` kills the process (``kill -9``, no cleanup of any kind) the
n-th time (default: first) it reaches ``<point>``. Unset, a point costs one dictionary lookup.
Points: ``audit_written``, ``split_written``, ``unit_files_written`` (a unit's weights and
predictions are on disk, its ``unit.json`` is not), ``ensemble_written``, ``summary_written``, ``sweep_step_written`` (a sweep step's winner is in
``sweep.json``, the next step has not started).
"""

from __future__ import annotations

import os
import signal

POINTS = ("audit_written", "split_written", "unit_files_written", "ensemble_written", "summary_written",
          "sweep_step_written")
_reached: dict[str, int] = {}


def failpoint(name: str) -> None:
    target = os.environ.get("ALLWEN_KILL_AT")
    if not target:
        return
    point, _, nth = target.partition(":")
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)

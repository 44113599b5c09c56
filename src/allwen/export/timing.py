"""Where ``allwen export`` spends its time: named phases, printed by ``allwen export --verbose``.

Phases do not overlap: each ``with phase(name)`` adds its wall time to one row, so a phase entered
twice is summed, and what no phase covered is shown as ``other``. The rows are collected in the
:class:`Phases` that :func:`recording` makes current; without one, ``phase`` only times nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_CURRENT: ContextVar[Phases | None] = ContextVar("allwen_export_phases", default=None)


class Phases:
    """Wall seconds per phase name, in the order the phases were first entered."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @property
    def total(self) -> float:
        return time.perf_counter() - self.started

    def lines(self) -> list[str]:
        """One line per phase (seconds and share of the whole), then the total and what no phase covered."""
        total = self.total
        width = max([len(n) for n in self.seconds] + [len("total")])
        rows = [f"{name:<{width}}  {s:7.2f} s  {100 * s / total:5.1f}%" for name, s in self.seconds.items()]
        rows.append(f"{'other':<{width}}  {total - sum(self.seconds.values()):7.2f} s")
        rows.append(f"{'total':<{width}}  {total:7.2f} s")
        return rows


@contextmanager
def recording(phases: Phases | None = None) -> Iterator[Phases]:
    """Make ``phases`` (a new one when None) the current record for the block."""
    phases = phases or Phases()
    token = _CURRENT.set(phases)
    try:
        yield phases
    finally:
        _CURRENT.reset(token)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Add the block's wall time to ``name`` in the current record (if any)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        current = _CURRENT.get()
        if current is not None:
            current.add(name, time.perf_counter() - start)


__all__ = ["Phases", "phase", "recording"]

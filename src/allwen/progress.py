"""Progress for every long step (hashing, audit, feature extraction, decode cache, evaluation).

``track(items, total, what)`` shows a rich bar on an interactive terminal, a task inside the
grid's live display when one runs (rich allows one live display at a time), and otherwise
(``--quiet``, logs, CI) an INFO line every ~10% or 30 s. Library code calls ``track``; only the
CLI decides whether bars may be drawn (:func:`set_live`).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Callable, Iterable, Iterator, TypeVar

log = logging.getLogger("allwen.progress")
T = TypeVar("T")

_live = False  # set by the CLI when the user did not ask for --quiet
_display: Any = None  # the rich Progress of a running live display, if any


def set_live(live: bool) -> None:
    """Allow bars (interactive terminal and no --quiet)."""
    global _live
    _live = live


def set_display(progress: Any) -> None:
    """Register (or clear, with None) the live display that bars should join."""
    global _display
    _display = progress


def track(items: Iterable[T], total: int, what: str, unit: str = "images", size: Callable[[T], int] | None = None,
          every: float = 30.0) -> Iterator[T]:
    """Yield ``items`` while showing ``what`` advancing to ``total``; each item counts 1, or
    ``size(item)`` (e.g. the length of a batch)."""
    count = size or (lambda item: 1)
    if total <= 0:
        yield from items
        return
    if _display is not None:
        task = _display.add_task(f"  {what}", total=total)
        try:
            for item in items:
                yield item
                _display.update(task, advance=count(item))
        finally:
            _display.remove_task(task)
        return
    if _live and sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(what, total=total)
            for item in items:
                yield item
                bar.update(task, advance=count(item))
        log.info("%s: %d %s", what, total, unit)
        return
    yield from _logged(items, total, what, unit, count, every)


def _logged(items: Iterable[T], total: int, what: str, unit: str, count: Callable[[T], int],
            every: float) -> Iterator[T]:
    start = last = time.perf_counter()
    done, next_share = 0, 0.1
    for item in items:
        yield item
        done += count(item)
        now = time.perf_counter()
        if done >= total or done / total >= next_share or now - last >= every:
            rate = done / max(now - start, 1e-9)
            log.info("%s: %d/%d %s (%.0f%%, %.1f/s)", what, done, total, unit, 100 * done / total, rate)
            next_share = min(1.0, (int(10 * done / total) + 1) / 10)
            last = now

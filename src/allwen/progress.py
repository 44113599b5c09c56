"""Progress for every long step (hashing, audit, feature extraction, decode cache, evaluation).

``track(items, total, what)`` shows a rich bar on an interactive terminal, a task inside the
grid's live display when one runs (rich allows one live display at a time), and otherwise
(logs, CI, a pipe) an INFO line every ~10% or :func:`interval` seconds. Library code calls
``track``; only the CLI decides whether bars may be drawn (:func:`set_live`). ``--quiet`` logs
only warnings, so none of these lines shows.

Nothing but log lines reaches a file or a pipe, so a run piped to a log says at least once a
minute how far it is (``ALLWEN_PROGRESS_EVERY`` sets the seconds; tests make it short).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, Callable, Iterable, Iterator, TypeVar

log = logging.getLogger("allwen.progress")
T = TypeVar("T")

_live = False  # set by the CLI when the user did not ask for --quiet
_display: Any = None  # the rich Progress of a running live display, if any


#: seconds between progress lines when output is not a terminal (at least once a minute)
DEFAULT_EVERY = 30.0


def interval() -> float:
    """Seconds between logged progress lines: ``ALLWEN_PROGRESS_EVERY`` or 30."""
    text = os.environ.get("ALLWEN_PROGRESS_EVERY", "")
    try:
        value = float(text) if text else DEFAULT_EVERY
    except ValueError:
        raise ValueError(f"ALLWEN_PROGRESS_EVERY={text!r}: give seconds, e.g. 30") from None
    if not 0 < value <= 60:
        raise ValueError(f"ALLWEN_PROGRESS_EVERY={text!r}: give seconds above 0 and at most 60")
    return value


def terminal() -> bool:
    """Both output streams are a terminal a person watches (not a pipe, a file or a test runner)."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def set_live(live: bool) -> None:
    """Allow bars (the CLI: no --quiet); they are drawn only on a terminal (:func:`live`)."""
    global _live
    _live = live


def live() -> bool:
    """Draw rich bars and displays: the CLI allowed them and a person watches a terminal."""
    return _live and terminal()


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``: elapsed and remaining times in a log line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Heartbeat:
    """A daemon thread that logs ``line()`` every ``every`` seconds until stopped.

    Epochs and feature caching can each run for minutes; a timer, not the training loop, is what
    keeps a piped log from going silent.
    """

    def __init__(self, line: Callable[[], str], every: float | None = None) -> None:
        self.line = line
        self.every = interval() if every is None else every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="allwen-progress", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            log.info("%s", self.line())

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def set_display(progress: Any) -> None:
    """Register (or clear, with None) the live display that bars should join."""
    global _display
    _display = progress


def track(items: Iterable[T], total: int, what: str, unit: str = "images", size: Callable[[T], int] | None = None,
          every: float | None = None) -> Iterator[T]:
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
    if live():
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
    yield from _logged(items, total, what, unit, count, interval() if every is None else every)


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

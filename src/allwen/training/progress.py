"""Progress of a grid run: units done / total, the current unit and stage, elapsed, time left.

On a terminal (the CLI without ``--quiet``) one live rich display. Anywhere else (a pipe, a log
file, a notebook, CI) a log line per epoch and, from a timer, a progress line every
:func:`allwen.progress.interval` seconds (30 by default), so a log never goes silent for a minute
however long an epoch is. ``quiet`` shows neither: only warnings and the result.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from allwen.progress import Heartbeat, duration, live, set_display

log = logging.getLogger("allwen.progress")


class GridProgress:
    """Counts epochs over all units; the time left is from the epochs still to run at the pace so far."""

    def __init__(self, n_units: int, total_epochs: int, quiet: bool = False, every: float | None = None) -> None:
        self.quiet = quiet
        self.n_units = n_units
        self.total_epochs = max(1, total_epochs)
        self.unit_label = ""
        self.stage = "starting"
        self.units_done = 0
        self._every = every
        self._progress = None
        self._task = None
        self._heartbeat: Heartbeat | None = None
        self._start = time.perf_counter()
        self._done_epochs = 0
        self._run_epochs = 0  # epochs trained in this process: the pace (skipped units took no time)

    def __enter__(self) -> "GridProgress":
        self._start = time.perf_counter()
        if self.quiet:
            return self
        if live():
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} epochs"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("starting", total=self.total_epochs)
            set_display(self._progress)  # caching and decoding bars join this display
        else:
            self._heartbeat = Heartbeat(self.line, self._every).__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._heartbeat is not None:
            self._heartbeat.__exit__(*exc)
            if exc[0] is None:
                log.info("%s", self.line())
        if self._progress is not None:
            set_display(None)
            self._progress.stop()

    def line(self) -> str:
        """``progress: 2/6 units done; unit 3/6 lr=0.003 fold 0, stage2 epoch 2/4; 1 min 05 s elapsed, about 2 min 10 s left``."""
        elapsed = time.perf_counter() - self._start
        left = self.total_epochs - self._done_epochs
        if left <= 0:
            eta = "done"
        elif self._run_epochs:
            eta = f"about {duration(elapsed / self._run_epochs * left)} left"
        else:
            eta = "time left known after the first epoch"
        now = f"{self.unit_label}, {self.stage}" if self.unit_label else self.stage
        return f"progress: {self.units_done}/{self.n_units} units done; {now}; {duration(elapsed)} elapsed, {eta}"

    def start_unit(self, index: int, scenario: str, fold: int) -> None:
        self.unit_label = f"unit {index + 1}/{self.n_units} {scenario} fold {fold}"
        self.stage = "preparing"
        self._describe(self.unit_label)
        if not self.quiet and self._progress is None:
            log.info("%s", self.line())

    def skip_unit(self, epochs: int, units: int = 1) -> None:
        """A finished unit (or an epoch grid's ``units``) found on disk: count it and its budgeted epochs as done."""
        self.units_done += units
        self._advance(epochs)

    def epoch(self, stage: str, epoch: int, max_epochs: int, metrics: dict[str, Any]) -> None:
        shown = ", ".join(f"{k[4:]} {v:.3f}" for k, v in metrics.items() if k.startswith("val_") and k != "val_loss")
        self.stage = f"{stage} epoch {epoch + 1}/{max_epochs}"
        text = f"{self.unit_label} {self.stage} {shown}"
        self._describe(text)
        self._run_epochs += 1
        self._advance(1)
        if not self.quiet and self._progress is None:
            log.info("%s (%s elapsed)", text, duration(time.perf_counter() - self._start))

    def finished_elsewhere(self, name: str, epochs: int, pending: int, units: int = 1) -> None:
        """A unit (or ``units`` of an epoch grid) trained by another process (Ray) finished: count it and its budget."""
        self.units_done += units
        self.unit_label, self.stage = "", f"{name} finished; {pending} units running or queued"
        self._describe(self.stage)
        self._run_epochs += epochs
        self._advance(epochs)
        if not self.quiet and self._progress is None:
            log.info("%s", self.line())

    def end_unit(self, epochs_budgeted: int, epochs_run: int, units: int = 1) -> None:
        """A unit (or an epoch grid's ``units``) finished; early stopping may have run fewer epochs
        than budgeted: move the count to the unit's end."""
        self.units_done += units
        self.stage = "finished"
        self._advance(max(0, epochs_budgeted - epochs_run))

    def _describe(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)

    def _advance(self, n: int) -> None:
        self._done_epochs += n
        if self._progress is not None:
            self._progress.update(self._task, advance=n)

"""One live progress display for a grid run: scenario, fold, stage, epoch, metric, ETA.

Quiet mode writes one log line per epoch instead, for log files and CI.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from allwen.progress import set_display

log = logging.getLogger("allwen.progress")


class GridProgress:
    """Counts epochs over all units; the ETA is from the epochs still to run at the pace so far."""

    def __init__(self, n_units: int, total_epochs: int, quiet: bool = False) -> None:
        self.quiet = quiet
        self.n_units = n_units
        self.total_epochs = max(1, total_epochs)
        self.unit_label = ""
        self._progress = None
        self._task = None
        self._start = time.perf_counter()
        self._done_epochs = 0

    def __enter__(self) -> "GridProgress":
        if not self.quiet:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} epochs"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("starting", total=self.total_epochs)
            set_display(self._progress)  # caching and decoding bars join this display
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            set_display(None)
            self._progress.stop()

    def start_unit(self, index: int, scenario: str, fold: int) -> None:
        self.unit_label = f"unit {index + 1}/{self.n_units} {scenario} fold {fold}"
        self._describe(self.unit_label)

    def skip_unit(self, epochs: int) -> None:
        """A finished unit found on disk: count its budgeted epochs as done."""
        self._advance(epochs)

    def epoch(self, stage: str, epoch: int, max_epochs: int, metrics: dict[str, Any]) -> None:
        shown = ", ".join(f"{k[4:]} {v:.3f}" for k, v in metrics.items() if k.startswith("val_") and k != "val_loss")
        text = f"{self.unit_label} {stage} epoch {epoch + 1}/{max_epochs} {shown}"
        self._describe(text)
        self._advance(1)
        if self.quiet:
            log.info("%s (%.0fs elapsed)", text, time.perf_counter() - self._start)

    def finished_elsewhere(self, name: str, epochs: int, pending: int) -> None:
        """A unit trained by another process (Ray) finished: count its budget."""
        self._describe(f"{name} finished; {pending} units running or queued")
        self._advance(epochs)
        if self.quiet:
            log.info("%s finished (%.0fs elapsed, %d to go)", name, time.perf_counter() - self._start, pending)

    def end_unit(self, epochs_budgeted: int, epochs_run: int) -> None:
        """Early stopping ran fewer epochs than budgeted: move the bar to the unit's end."""
        self._advance(max(0, epochs_budgeted - epochs_run))

    def _describe(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)

    def _advance(self, n: int) -> None:
        self._done_epochs += n
        if self._progress is not None:
            self._progress.update(self._task, advance=n)

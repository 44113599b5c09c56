"""Errors a user can fix, importable without torch (the CLI catches them to print one line)."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for from the hub, and the hub cannot be reached."""


#: ``allwen run`` stopped by ``--stop-after`` / ``train.time_limit`` (EX_TEMPFAIL: try again later)
STOPPED_EXIT_CODE = 75


class StoppedAtBoundary(RuntimeError):
    """``--stop-after`` / ``train.time_limit`` ran out: the run stopped between two units.

    Every finished unit is on disk with its ``unit.json``; the same command resumes."""

    def __init__(self, finished: int, total: int, limit_s: float) -> None:
        super().__init__(f"stopped after {limit_s / 3600:.2f} h at a unit boundary: {finished} of {total} units "
                         f"finished; run the same command again (on this run folder) to resume")
        self.finished, self.total, self.limit_s = finished, total, limit_s

"""Errors a user can fix, importable without torch (the CLI catches them to print one line)."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for from the hub, and the hub cannot be reached."""

"""Lightning's log levels and warnings as allwen wants them: one line per epoch is ours to print."""

from __future__ import annotations

import logging
import warnings


def quiet_lightning() -> None:
    """Called by every process that trains (the unit trainer and each DDP rank), not as an import side effect."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*small number of batches.*")

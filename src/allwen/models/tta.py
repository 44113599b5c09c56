"""Test-time augmentation: the 8 dihedral views of a cell image, averaged.

A white blood cell under the microscope has no "up": the 4 rotations by 90 degrees times
2 mirror images (the dihedral group D4) are all equally valid views of the same cell, and
they permute pixels exactly (no interpolation), so a prediction averaged over them is a
free ensemble. One helper serves evaluation (``evaluation.tta``) and ``allwen predict --tta``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

N_VIEWS = 8


def dihedral_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 views of a (..., H, W) batch: rotations by 0/90/180/270 degrees, then mirrored."""
    mirrored = x.flip(-1)
    return [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)] + [
        torch.rot90(mirrored, k, dims=(-2, -1)) for k in range(4)
    ]


def tta_probabilities(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Mean of ``forward`` (a batch -> class probabilities) over the 8 dihedral views of ``x``."""
    return torch.stack([forward(view) for view in dihedral_views(x)]).mean(dim=0)

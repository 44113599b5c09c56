"""A stage's epochs split over DDP ranks, and the validation fold put back together.

Rank r of N takes positions r, r+N, r+2N, ... of each epoch's order, padded to a multiple of N
by repeating its first items (as ``DistributedSampler`` pads), with a per-rank batch of
``batch_size / N``: global batch k then holds exactly the images of single-device batch k, so
an epoch has the same number of steps and the schedule sees the same step counts. Validation
is split the same way over positions 0..n-1; every rank gathers all ranks' rows with their
positions and :func:`merge_shards` keeps each position < n once, in order, so the fold's
probabilities are every image once, in split order, on every rank.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def shard_positions(n: int, rank: int, world: int) -> np.ndarray:
    """Positions in the padded order (0 .. ceil(n / world) * world - 1) that ``rank`` takes."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1}")
    total = -(-n // world) * world
    return np.arange(rank, total, world)


class ShardSampler(Sampler):
    """Rank ``rank``'s share of the items ``base`` yields each epoch (``n`` of them).

    Every rank iterates its own copy of ``base`` (seeded alike, so the same order) and keeps
    the items at its :func:`shard_positions`; the padding repeats the epoch's first items.
    """

    def __init__(self, base: Iterable, n: int, rank: int, world: int) -> None:
        self.base, self.n = base, n
        self.positions = shard_positions(n, rank, world)

    def __len__(self) -> int:
        return len(self.positions)

    def __iter__(self) -> Iterator:
        items = list(self.base)
        if len(items) != self.n:
            raise RuntimeError(f"the sampler gave {len(items)} items for {self.n}")
        return iter([items[p % self.n] for p in self.positions])


def merge_shards(values: torch.Tensor, positions: torch.Tensor, n: int) -> torch.Tensor:
    """All ranks' rows ``(world, m, ...)`` with their padded positions ``(world, m)`` -> the n
    rows in position order, padding dropped; each position 0..n-1 must come exactly once."""
    values, positions = values.flatten(0, 1), positions.flatten().long()
    keep = positions < n
    values, positions = values[keep], positions[keep]
    order = torch.argsort(positions)
    if not torch.equal(positions[order].cpu(), torch.arange(n)):
        raise RuntimeError(f"the ranks' validation shards do not hold each of the {n} rows exactly once")
    return values[order]

"""Out of GPU memory at a training step: halve the micro-batch, accumulate the gradients.

The configured batch stays what the optimiser sees: a batch of ``n`` images is cut into
``parts`` micro-batches whose losses are weighted by their share of the batch's loss
normaliser (the sum of the class weights of their images, :meth:`ClassifierModel.loss`'s
convention), so the summed gradient is the whole batch's gradient up to float rounding. Layers
whose training output depends on the batch (BatchNorm in train mode) see the micro-batch, so
those stages give close, not equal, numbers; ``unit.json`` records the micro-batch
(``micro_batch``) whenever it was smaller than the batch.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

log = logging.getLogger(__name__)
OOM_ERRORS: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError,)


def is_oom(exc: BaseException) -> bool:
    """A CUDA out-of-memory error (also as the RuntimeError older code paths raise)."""
    return isinstance(exc, OOM_ERRORS) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc))


def chunk_weights(y: torch.Tensor, parts: int, class_weights: torch.Tensor | None) -> list[tuple[slice, float]]:
    """Each micro-batch's rows and its share of the batch loss's normaliser."""
    n = len(y)
    size = -(-n // parts)
    w = torch.ones(n, dtype=torch.float64) if class_weights is None else \
        class_weights.detach().double().cpu()[y.detach().long().cpu()]
    total = float(w.sum())
    return [(slice(i, min(i + size, n)), float(w[i:i + size].sum()) / total) for i in range(0, n, size)]


def accumulate(forward: Callable[[torch.Tensor], torch.Tensor], loss_fn: Callable, x: torch.Tensor, y: torch.Tensor,
               parts: int, class_weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward and backward every micro-batch but the last (its gradient accumulates in
    ``.grad``); returns the last one's weighted loss (the caller's backward adds it), the whole
    batch's loss value (detached) and the logits of every row (detached but the last part's)."""
    pieces = chunk_weights(y, parts, class_weights)
    logits_all, total = [], torch.zeros((), device=x.device)
    for k, (rows, share) in enumerate(pieces):
        oom_failpoint(rows.stop - rows.start)
        logits = forward(x[rows])
        loss = loss_fn(logits, y[rows], class_weights) * share
        total = total + loss.detach()
        if k < len(pieces) - 1:
            loss.backward()
            logits = logits.detach()
        logits_all.append(logits)
    return loss, total, torch.cat([t.detach() for t in logits_all])


def oom_failpoint(batch: int) -> None:
    """Tests: ``ALLWEN_OOM_ABOVE=<n>`` raises CUDA's out-of-memory error at any training
    forward pass of more than ``n`` images (a GPU whose memory holds ``n``), on any device."""
    import os

    limit = os.environ.get("ALLWEN_OOM_ABOVE")
    if limit and batch > int(limit):
        raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (ALLWEN_OOM_ABOVE={limit}, batch of {batch})")


def halved(parts: int, batch: int, stage: str, exc: BaseException) -> int:
    """The next micro-batch count after an OOM at ``parts``; raise when one image does not fit."""
    size = -(-batch // parts)
    if size <= 1:
        raise exc
    new = parts * 2
    log.warning("%s: out of GPU memory at micro-batch %d; training on micro-batches of %d with gradients "
                "accumulated, so the optimiser still sees batches of %d (recorded in unit.json as micro_batch)",
                stage, size, -(-batch // new), batch)
    return new

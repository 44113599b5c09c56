"""One status per cell, decided once: what a lab may read from the answer for that cell.

Every surface (the page's table and cards, the JSON API, ``allwen predict``'s CSV and
``--by-folder``) shows the record made here and never decides again:

* ``unreadable``: the file could not be read as an image (the reason is the reader's);
* ``out_of_distribution``: the bundle's OOD score is above its threshold, the cell is unlike
  the training cells, so no class is given as an answer whatever its probability;
* ``refer``: the confidence is below the threshold validated for the bundle's target accuracy;
  the class is only a suggestion and a person should look;
* ``answered``: none of the above.

The order is the precedence: an unreadable cell has no score, and an out-of-distribution cell is
not rescued by a high confidence (an ALL blast from another lab read "Benign 99.8%"). Every reason
that applies is listed, the first one being the status's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ANSWERED, REFER, OUT_OF_DISTRIBUTION, UNREADABLE = "answered", "refer", "out_of_distribution", "unreadable"
#: Statuses from best to worst: the page sorts and colours by this order.
STATUSES = (ANSWERED, REFER, OUT_OF_DISTRIBUTION, UNREADABLE)


@dataclass(frozen=True)
class CellStatus:
    """A cell's status and the reasons for it (empty for an answered cell)."""

    status: str
    reasons: tuple[str, ...] = ()
    #: the bundle's two flags, both kept: an out-of-distribution cell may also be below the confidence threshold
    refer: bool = False
    ood: bool = False

    @property
    def answered(self) -> bool:
        return self.status == ANSWERED

    @property
    def reason(self) -> str:
        """The reasons as one line (the CSV's ``reason`` column)."""
        return "; ".join(self.reasons)


def unreadable(error: str) -> CellStatus:
    return CellStatus(UNREADABLE, (f"unreadable: {error}",))


def cell_statuses(proba: np.ndarray, abstain: dict[str, list], selective_threshold: float | None = None,
                  ood_threshold: float | None = None) -> list[CellStatus]:
    """The status of each predicted cell from the bundle's decisions (``refer``, ``ood``, ``ood_score``).

    ``proba`` (n, K) are the probabilities the referral threshold was fitted on; the thresholds are the
    bundle's, only quoted in the reasons.
    """
    n = len(proba)
    refer: Sequence[Any] = abstain.get("refer") or [False] * n
    ood: Sequence[Any] = abstain.get("ood") or [None] * n
    score: Sequence[Any] = abstain.get("ood_score") or [None] * n
    confidence = np.asarray(proba, dtype=float).max(axis=1) if n else np.zeros(0)
    out = []
    for i in range(n):
        reasons: list[str] = []
        if ood[i]:
            limit = "" if ood_threshold is None else f" above the bundle's threshold {ood_threshold:.2f}"
            reasons.append(f"out of distribution: score {float(score[i]):.2f}{limit}; unlike the training cells, "
                           "so no class is given")
        if refer[i]:
            limit = "" if selective_threshold is None else f" below the validated {selective_threshold:.3f}"
            reasons.append(f"refer: confidence {confidence[i]:.3f}{limit}; the class is only a suggestion")
        status = OUT_OF_DISTRIBUTION if ood[i] else REFER if refer[i] else ANSWERED
        out.append(CellStatus(status, tuple(reasons), bool(refer[i]), bool(ood[i])))
    return out


__all__ = ["ANSWERED", "OUT_OF_DISTRIBUTION", "REFER", "STATUSES", "UNREADABLE", "CellStatus", "cell_statuses",
           "unreadable"]

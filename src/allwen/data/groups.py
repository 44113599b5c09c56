"""Rows that must stay together (one subject's cells, byte-identical images) and what a split
leaks; no pandas here, because the report uses both."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np



class UnionFind:
    """Disjoint sets of rows (path halving): what split groups and near-duplicate groups are made of."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    def union(self, i: int, j: int) -> None:
        """Put ``i``'s set under ``j``'s root."""
        self.parent[self.find(i)] = self.find(j)

def group_keys(subjects: Sequence[str], digests: Sequence[str], by_subject: bool, duplicate_aware: bool,
               near: Sequence[str] | None = None) -> np.ndarray:
    """A key per row such that rows sharing a key must stay on one side of a split.

    Subjects (or pseudo-patients), duplicate groups and near-duplicate groups (``near``: a
    group label per row, :mod:`allwen.data.neardup`) are merged transitively (union-find),
    because on C-NMC two "patients" share identical cells: grouping by subject alone still
    leaks. An empty subject, digest or label ("" = unknown, not hashed) groups nothing.
    """
    n = len(subjects)
    sets = UnionFind(n)

    def union_rows(values: Sequence[str]) -> None:
        rows: dict[str, list[int]] = defaultdict(list)
        for i, value in enumerate(values):
            if value != "":
                rows[value].append(i)
        for members in rows.values():
            for j in members[1:]:
                sets.union(j, members[0])

    if by_subject:
        union_rows(subjects)
    if duplicate_aware:
        union_rows(digests)
        if near is not None:
            union_rows(near)
    return np.array([sets.find(i) for i in range(n)])


def leakage_summary(leakage: list[dict[str, Any]]) -> str:
    """One line per side pair: the worst fold."""
    lines = []
    by_pair: dict[tuple[str, str], list[dict]] = {}
    for rec in leakage:
        by_pair.setdefault((rec["a"], rec["b"]), []).append(rec)
    for (a, b), recs in by_pair.items():
        subj = max(r["shared_subjects"] for r in recs)
        dup = max(r["shared_duplicate_groups"] for r in recs)
        near = max(r.get("shared_near_duplicate_groups", 0) for r in recs)
        pseudo = max(r.get("shared_pseudo_patients", 0) for r in recs)
        kind = next((r["pseudo_patients"] for r in recs if r.get("pseudo_patients")), None)
        verdict = "no leakage" if subj == 0 and dup == 0 and near == 0 and pseudo == 0 else "LEAKS"
        parts = [f"{subj} shared subjects"] if kind is None else [f"{pseudo} shared pseudo-patients ({kind})"]
        parts += [f"{dup} shared duplicate groups", f"{near} shared near-duplicate groups"]
        lines.append(f"{a} vs {b}: {', '.join(parts)} (worst fold) - {verdict}")
    return "\n".join(lines)

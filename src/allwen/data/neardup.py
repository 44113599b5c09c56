"""Near-duplicates: images that are not byte-identical but show the same cell.

Exact content hashes miss a re-encoded JPEG, a crop shifted by a few pixels or a slightly
different colour balance of the same field. Two detectors, each with a threshold that
``docs/splits.md`` measured on the real Taleqani images:

* a perceptual hash (``imagehash.phash`` with ``hash_size=16``: a 256-bit DCT hash of a 64x64
  grey thumbnail); two images whose hashes differ in at most ``phash_distance`` bits are
  near-duplicates;
* cosine similarity of backbone features, when a run already holds them (the stage-1
  feature cache): pairs with cosine >= ``feature_cosine``.

Pairs become groups transitively (union-find), like exact duplicates and subjects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

_BLOCK = 2048  # hash values compared at once
_BLOCK_FLOATS = 2**24  # at most this many distances in memory at once (64 MB)
HASH_SIZE = 16  # a 16 x 16 DCT hash (256 bits): on 32-pixel synthetic cells the 64-bit hash puts distinct
# cells 4-6 bits apart, the 256-bit one keeps them 30 or more apart (docs/splits.md)
WORDS = HASH_SIZE * HASH_SIZE // 64


def phash_words(image) -> np.ndarray:
    """The 256-bit perceptual hash of a PIL image as 4 uint64 words."""
    import imagehash  # lazy: only audits and splits need it

    bits = imagehash.phash(image.convert("RGB"), hash_size=HASH_SIZE).hash.flatten()
    return np.packbits(bits).view(">u8").astype(np.uint64)


def phashes(paths: Sequence[str], max_pixels: int | None = None, skip: Sequence[bool] | None = None) -> np.ndarray:
    """One perceptual hash per path, shape (n, 4) uint64; an unreadable or skipped image gets
    zeros and groups with nothing (:func:`hash_pairs` skips all-zero hashes)."""
    from allwen.data.images import ImageReadError, read_rgb
    from allwen.progress import track

    out = np.zeros((len(paths), WORDS), dtype=np.uint64)
    for i, path in enumerate(track(paths, len(paths), "perceptual hashes")):
        if skip is not None and skip[i]:
            continue
        try:
            out[i] = phash_words(read_rgb(path, max_pixels).image)
        except ImageReadError:
            continue
    return out


def hash_pairs(hashes: np.ndarray, max_distance: int) -> list[tuple[int, int, int]]:
    """(i, j, Hamming distance) linking every two rows whose hashes differ in <= ``max_distance``
    bits, as a spanning set: rows with equal hashes are linked to the first of them (distance 0)
    and distinct hash values are compared once, so many identical images cost n, not n^2, pairs.

    The comparison is exact and quadratic in the distinct hashes, done as a matrix product:
    with each hash as a 0/1 vector, distance = ones(a) + ones(b) - 2 a.b, in float32 (exact for
    integers up to 2^24), blocked so memory stays ~ ``_BLOCK_FLOATS`` floats: BLAS made it 2.5-3x
    faster than XOR and popcount over every pair (docs/speed.md, "At C-NMC's size")."""
    h = np.asarray(hashes, dtype=np.uint64).reshape(len(hashes), -1)
    valid = np.flatnonzero(h.any(axis=1))
    if len(valid) == 0:
        return []
    values, first, inverse = np.unique(h[valid], axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    rep = valid[first]  # the first row of each distinct hash value
    out: list[tuple[int, int, int]] = [(int(rep[v]), int(r), 0) for r, v in zip(valid, inverse) if rep[v] != r]
    bits = np.unpackbits(np.ascontiguousarray(values).view(np.uint8), axis=1).astype(np.float32)
    ones = bits.sum(axis=1)
    block = max(1, min(_BLOCK, _BLOCK_FLOATS // len(values)))
    for start in range(0, len(values), block):
        part = bits[start:start + block]
        dist = ones[start:start + block, None] + ones[None, :] - 2 * (part @ bits.T)
        rows, cols = np.nonzero(dist <= max_distance + 0.5)
        keep = cols > rows + start
        out += [(int(rep[r + start]), int(rep[c]), int(round(float(dist[r, c])))) for r, c in zip(rows[keep], cols[keep])]
    return out


def feature_pairs(features: np.ndarray, min_cosine: float) -> list[tuple[int, int, float]]:
    """(i, j, cosine) for every i < j whose feature vectors have cosine >= ``min_cosine``."""
    x = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    out: list[tuple[int, int, float]] = []
    for start in range(0, len(x), _BLOCK):
        sim = x[start:start + _BLOCK] @ x.T
        rows, cols = np.nonzero(sim >= min_cosine)
        keep = cols > rows + start
        out += [(int(r + start), int(c), round(float(sim[r, c]), 5)) for r, c in zip(rows[keep], cols[keep])]
    return out


def groups_from_pairs(n: int, pairs: Iterable[tuple[int, int, object]]) -> list[list[int]]:
    """Connected components of the pairs (2 or more rows each), sorted by their first row."""
    from allwen.data.groups import UnionFind

    sets = UnionFind(n)
    touched = set()
    for i, j, _ in pairs:
        sets.union(i, j)
        touched.update((i, j))
    members: dict[int, list[int]] = {}
    for i in sorted(touched):
        members.setdefault(sets.find(i), []).append(i)
    return sorted((m for m in members.values() if len(m) > 1), key=lambda m: m[0])


def group_labels(n: int, groups: Sequence[Sequence[int]], prefix: str = "near") -> list[str]:
    """A label per row: ``prefix:<k>`` for rows of group k, "" for rows in no group."""
    labels = [""] * n
    for k, members in enumerate(groups):
        for i in members:
            labels[i] = f"{prefix}:{k}"
    return labels

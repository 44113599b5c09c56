"""The OOD detector's rows from the run's caches, when they hold exactly what the member computes.

Training decoded every image once (``RUN/cache/decoded/``) and, with the backbone frozen, pushed
each through the backbone once (``RUN/cache/features/``, both content-keyed). When the bundle's
OOD member kept that frozen backbone (a stage-1 unit), those rows are its pooled features and
the decoded images give its input statistics, so export reads them instead of pushing up to
3 x ``ood_max_images`` images through the network again (most of an export's time).

Which stores hold the member's numbers is checked, never assumed from keys: the first
:data:`CHECK_IMAGES` images are computed by the member itself and compared. A member whose
backbone was fine-tuned, a run without caches or with another preprocessing gets ``None``, and
export computes every row as before.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence

import numpy as np

from allwen.data.hashes import HashRecord
from allwen.evaluation import ood
from allwen.runfolder import RunFolder
from allwen.serve.predict import Member
from allwen.training.array_store import ArrayStore

log = logging.getLogger(__name__)

#: ``RUN/cache/`` folders of :class:`allwen.training.unit.RunCaches` (named here: importing it loads Lightning, 15 s).
FEATURES, DECODED = "features", "decoded"
#: Images computed by the member to find (and check) the stores that hold its numbers.
CHECK_IMAGES = 4
#: Largest difference allowed between a cached row and the member's own, relative to the row's largest value:
#: the cache may come from another runtime (ONNX Runtime vs PyTorch differ by about 1e-6).
TOLERANCE = 1e-4


def _stores(folder, rank: int, dtype: str | None = None) -> list[ArrayStore]:
    """Every store under ``folder`` whose rows have ``rank`` dimensions (and ``dtype``)."""
    if not folder.is_dir():
        return []
    out = []
    for index in sorted(folder.glob("*.json")):
        try:
            meta = json.loads(index.read_text())
            shape, kind = tuple(meta["shape"]), meta["dtype"]
        except (ValueError, KeyError, TypeError, OSError):
            continue
        if len(shape) == rank and (dtype is None or np.dtype(kind) == np.dtype(dtype)):
            out.append(ArrayStore(folder, index.stem, shape, kind))
    return out


def _input_statistics(images: np.ndarray, member: Member) -> np.ndarray:
    """:func:`allwen.evaluation.ood.input_statistics` of decoded uint8 rows (n, 3, S, S), normalised as the member does."""
    pre = member.spec.preprocessing
    mean = np.asarray(pre.mean, np.float32)[:, None, None]
    std = np.asarray(pre.std, np.float32)[:, None, None]
    return ood.input_statistics((np.asarray(images, np.float32) / np.float32(255.0) - mean) / std)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and float(np.abs(a - b).max()) <= TOLERANCE * max(1.0, float(np.abs(b).max()))


def cached_ood_rows(folder: RunFolder, member: Member, paths: Sequence[str],
                    compute: Callable[[list[str]], np.ndarray]) -> Callable[[list[str]], np.ndarray] | None:
    """A function ``paths -> rows`` (pooled features, then input statistics) reading the run's caches for
    ``paths`` (every image the detector needs), or None when the caches do not hold the member's numbers.

    ``compute(paths)`` is the member's own computation, used on the first images as the check.
    """
    paths = list(dict.fromkeys(paths))
    if not paths:
        return None
    record = HashRecord.load(folder.hashes_path)
    hashes = [record.known(p) for p in paths]
    if any(h is None for h in hashes):
        log.info("OOD rows: some images are not in %s (or changed since); computing them", folder.hashes_path)
        return None
    feature_stores = [s for s in _stores(folder.cache_dir / FEATURES, 2, "float32") if s.shape[0] == 1]
    image_stores = [s for s in _stores(folder.cache_dir / DECODED, 3, "uint8") if s.shape[0] == 3]
    feature_stores = [s for s in feature_stores if not s.missing(hashes)]
    image_stores = [s for s in image_stores if not s.missing(hashes)]
    if not feature_stores or not image_stores:
        log.info("OOD rows: the run's caches do not hold every image; computing them")
        return None
    check = compute(paths[:CHECK_IMAGES])
    dim = check.shape[1] - ood.N_INPUT_STATS
    sample = hashes[:CHECK_IMAGES]
    features = next((s for s in feature_stores
                     if s.shape[1] == dim and _close(np.asarray(s.array()[s.rows(sample), 0]), check[:, :dim])), None)
    images = next((s for s in image_stores
                   if _close(_input_statistics(s.array()[s.rows(sample)], member), check[:, dim:])), None)
    if features is None or images is None:
        log.info("OOD rows: no cached %s matches %s's own; computing them",
                 "features" if features is None else "images", member.name)
        return None
    by_path = dict(zip(paths, hashes))
    log.info("OOD rows: %s's features and input statistics read from the run's caches (%s, %s)",
             member.name, features.name, images.name)

    def rows(items: list[str]) -> np.ndarray:
        keys = [by_path[p] for p in items]
        feats = np.asarray(features.array()[features.rows(keys), 0], dtype=np.float64)
        at = images.rows(keys)
        stats = [_input_statistics(images.array()[at[i:i + 64]], member) for i in range(0, len(at), 64)]
        return np.concatenate([feats, np.concatenate(stats) if stats else np.zeros((0, ood.N_INPUT_STATS))], axis=1)

    return rows


__all__ = ["CHECK_IMAGES", "TOLERANCE", "cached_ood_rows"]

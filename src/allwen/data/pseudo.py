"""Pseudo-patients: groups that stand in for patient ids a dataset does not have.

Taleqani's file names carry no patient, but its numbers run consecutively through each
patient's smear, so an image-level split puts one smear on both sides. Two stand-ins, both
feeding the grouped splitters and the cluster statistics exactly like subject ids:

* ``sequence``: per class, blocks of ``block`` consecutive file numbers (``(number - 1) //
  block``), for datasets whose files are numbered in acquisition order;
* ``cluster``: per class, agglomerative clustering (scikit-learn ``AgglomerativeClustering``,
  Ward linkage, on standardised stain-colour statistics: per-channel mean, standard deviation
  and 10/50/90th percentiles in RGB and HSV) into ``n_class / block`` clusters, when no order
  exists.

The default ``block`` comes from what is known of the data: the Taleqani authors report 89
patients for 3,256 images, 36.6 images per patient, so 37 (``docs/splits.md``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

# images per patient the dataset's own authors report (source name -> (images, patients, where))
KNOWN_IMAGES_PER_PATIENT = {
    "taleqani": (3256, 89, "Ghaderzadeh et al., Int. J. Intell. Syst. 37 (2022): 3,256 images of 89 patients"),
}
_NUMBER = re.compile(r"(\d+)(?!.*\d)")


class PseudoPatientError(ValueError):
    """Pseudo-patients cannot be made as configured; the message names the setting or file."""


def default_block(source: str) -> int:
    """Images per pseudo-patient from the dataset's reported images and patients."""
    if source not in KNOWN_IMAGES_PER_PATIENT:
        raise PseudoPatientError(
            f"split.sequence_block: no known images-per-patient figure for source {source!r}; "
            "set split.sequence_block to the number of images one patient contributes"
        )
    images, patients, _ = KNOWN_IMAGES_PER_PATIENT[source]
    return int(round(images / patients))


def file_number(path: str) -> int:
    """The last run of digits in the file's name (``WBC-Malignant-Pre-017.jpg`` -> 17)."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    match = _NUMBER.search(name)
    if match is None:
        raise PseudoPatientError(
            f"{path}: split.group_by=sequence needs a file number in every name; "
            "use split.group_by=cluster for files without acquisition order"
        )
    return int(match.group(1))


def sequence_groups(paths: Sequence[str], labels: Sequence[str], block: int) -> list[str]:
    """``<class>#<k>`` per row: block k of ``block`` consecutive file numbers within its class."""
    return [f"{label}#{(file_number(p) - 1) // block}" for p, label in zip(paths, labels)]


def colour_statistics(paths: Sequence[str], max_pixels: int | None = None, side: int = 64) -> np.ndarray:
    """Per-image stain statistics (30 numbers): mean, std and 10/50/90th percentiles of R, G, B,
    H, S, V on a ``side``-pixel thumbnail; the appearance a smear's staining gives all its cells."""
    from allwen.data.images import ImageReadError, read_rgb
    from allwen.progress import track

    out = np.zeros((len(paths), 30), dtype=np.float64)
    for i, path in enumerate(track(paths, len(paths), "stain statistics")):
        try:
            image = read_rgb(path, max_pixels).image.resize((side, side))
        except ImageReadError:
            continue
        rgb = np.asarray(image, dtype=np.float64).reshape(-1, 3)
        hsv = np.asarray(image.convert("HSV"), dtype=np.float64).reshape(-1, 3)
        both = np.concatenate([rgb, hsv], axis=1)
        out[i] = np.concatenate([both.mean(0), both.std(0), *np.percentile(both, [10, 50, 90], axis=0)])
    return out


def cluster_groups(stats: np.ndarray, labels: Sequence[str], block: int) -> list[str]:
    """``<class>~<k>`` per row: Ward clusters of the standardised statistics within each class,
    ``max(1, round(n_class / block))`` of them."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.preprocessing import StandardScaler

    labels = list(labels)
    out = [""] * len(labels)
    for name in sorted(set(labels)):
        rows = np.flatnonzero(np.array(labels) == name)
        k = max(1, int(round(len(rows) / block)))
        if k == 1 or len(rows) < 2:
            assigned = np.zeros(len(rows), dtype=int)
        else:
            x = StandardScaler().fit_transform(stats[rows])
            assigned = AgglomerativeClustering(n_clusters=min(k, len(rows)), linkage="ward").fit_predict(x)
        for r, c in zip(rows, assigned):
            out[r] = f"{name}~{int(c)}"
    return out

"""Synthetic white-blood-cell images laid out exactly like C-NMC 2019.

Why: the real data set is large, licensed and not always beside the checkout, yet the
reader, the subject- and duplicate-aware splits, training and the reports all need a data
set with the same *traps* as the real one: per-subject stain tints (an image-level split
leaks the subject), byte-identical cells filed under two subjects, a preliminary test set
whose names hide the original file, and a class signal that is morphological rather
than a plain colour difference.

Every cell is drawn with numpy from a handful of parameters: a star-shaped outline (a
polar radius with a few random harmonics), an eccentric nucleus with its own outline,
chromatin texture (smooth noise upscaled from a coarse grid), nucleoli (Gaussian spots),
then a per-subject tint, per-cell exposure, blur and noise. Pixels outside the cell are
exactly 0, as in the segmented real images.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

SYNTHETIC_MARKER = "ALLWEN_SYNTHETIC.json"  # read by allwen.export.card

log = logging.getLogger(__name__)

ROOT_NAME = "C-NMC_Leukemia"
PRELIM_DIR = "C-NMC_test_prelim_phase_data"
PRELIM_CSV = "C-NMC_test_prelim_phase_data_labels.csv"
CLASSES = ("all", "hem")

# Base stain colours (RGB in 0..1): violet nucleus, pale blue-pink cytoplasm, lighter nucleoli.
_NUCLEUS_RGB = np.array([0.42, 0.30, 0.55], dtype=np.float32)
_CYTOPLASM_RGB = np.array([0.68, 0.56, 0.92], dtype=np.float32)
_NUCLEOLUS_RGB = np.array([0.60, 0.50, 0.82], dtype=np.float32)

# Stream salts so subject-, naming- and cell-level draws never share random numbers.
_SALT_SUBJECT, _SALT_NAMES, _SALT_CELL, _SALT_LAYOUT = 11, 23, 37, 41


@dataclass(frozen=True, eq=False)
class _Subject:
    """One patient (ALL) or healthy donor (hem) with its own stain and scale."""

    cls: str  # "all" or "hem"
    number: int
    split: str  # "fold_k" or "prelim_test"
    gain: np.ndarray  # per-channel stain gain
    offset: np.ndarray  # per-channel stain offset
    nucleus_rgb: np.ndarray
    cytoplasm_rgb: np.ndarray
    scale: float  # magnification / typical cell size of this subject
    bias: float  # subject-level shift of the class "typicality"

    @property
    def key(self) -> str:
        """The subject id as it appears in file names: ``57`` or ``H10``."""
        return f"H{self.number}" if self.cls == "hem" else str(self.number)

    @property
    def class_code(self) -> int:
        return 1 if self.cls == "all" else 0


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in units of the image side, origin at the centre."""
    axis = ((np.arange(size, dtype=np.float32) + 0.5) / size - 0.5).astype(np.float32)
    return axis[None, :].repeat(size, 0), axis[:, None].repeat(size, 1)


@lru_cache(maxsize=8)
def _angle_basis(bins: int, max_k: int) -> np.ndarray:
    """``e^{i k theta}`` for ``k = 0..max_k`` on ``bins`` angles: outlines are tabulated on it."""
    theta = np.arange(bins) * (2 * np.pi / bins)
    return np.exp(1j * np.arange(max_k + 1)[:, None] * theta[None, :]).astype(np.complex64)


def _outline(dx: np.ndarray, dy: np.ndarray, radius: float, coeffs: np.ndarray, first_k: int) -> np.ndarray:
    """Signed radial distance ``r - R(phi)`` of a star shape with harmonics ``first_k..``.

    ``R(phi) = radius * (1 + Re sum_k c_k e^{ik phi})`` is tabulated on a fine angle grid
    (a fraction of a pixel per step) and looked up per pixel, so the per-pixel cost does not
    grow with the number of harmonics.
    """
    bins = max(256, 8 * dx.shape[0])
    basis = _angle_basis(bins, first_k + len(coeffs) - 1)[first_k:]
    table = (radius * (1.0 + (coeffs[:, None] * basis).sum(0).real)).astype(np.float32)  # no BLAS: no thread spin
    r = np.sqrt(dx * dx + dy * dy)
    idx = (np.arctan2(dy, dx) * np.float32(bins / (2 * np.pi)) + np.float32(bins + 0.5)).astype(np.intp) % bins
    return r - table[idx]


def _harmonics(rng: np.random.Generator, n: int, amplitude: float) -> np.ndarray:
    """Random complex coefficients whose moduli sum to ``amplitude`` (bounds the wobble)."""
    weights = rng.uniform(0.2, 1.0, n)
    weights *= amplitude / weights.sum()
    return (weights * np.exp(1j * rng.uniform(0, 2 * np.pi, n))).astype(np.complex64)


def _smooth_noise(rng: np.random.Generator, size: int, cells: float) -> np.ndarray:
    """Unit-variance smooth noise with about ``cells`` blobs across the image."""
    g = max(2, int(round(cells)))
    coarse = rng.standard_normal((g, g)).astype(np.float32)
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    return field / (field.std() + 1e-6)


def _draw_cell(subject: _Subject, rng: np.random.Generator, size: int, difficulty: float,
               nucleus_only: bool = False, nucleus_mask: list[np.ndarray] | None = None) -> np.ndarray:
    """Render one segmented cell as a ``size x size x 3`` uint8 image (background exactly 0).

    A latent "typicality" ``t`` (ALL ~0.85, hem ~0.15) drives every morphological feature;
    ``difficulty`` scales the spread of ``t`` (shared across features and per feature), so
    it sets how much the classes overlap without touching the stain colours.
    ``nucleus_only``: the cell's and the nucleus' sizes and outlines are drawn at a neutral ``t``
    (0.5) for both classes, so the class shows only inside the nucleus (chromatin, nucleoli,
    density); the random draws are the same either way.
    ``nucleus_mask``: a list the nucleus' boolean mask (inside the cell) is appended to.
    """
    base = 0.85 if subject.cls == "all" else 0.15
    shared = rng.standard_normal()
    per_feature = rng.standard_normal(6)
    t = np.clip(base + subject.bias + difficulty * (0.24 * shared + 0.24 * per_feature), -0.2, 1.2)
    t_size, t_nc, t_shape, t_nucleoli, t_chromatin, t_density = (float(v) for v in t)
    if nucleus_only:
        t_size, t_nc, t_shape = 0.5, 0.5, 0.5

    xs, ys = _grid(size)
    px = 1.0 / size  # one pixel in normalised units

    # Cell outline: hem round, ALL irregular (lobed low harmonics plus ragged high ones).
    rc = float(np.clip(_lerp(0.255, 0.315, t_size) * subject.scale * np.exp(rng.normal(0, 0.04)), 0.14, 0.34))
    elong = float(rng.uniform(0.0, 0.07))
    cell_irr = max(0.0, _lerp(0.012, 0.07, t_shape))
    cell_rag = max(0.0, _lerp(0.002, 0.018, t_shape))
    cell_coeffs = np.concatenate([
        [elong * np.exp(1j * rng.uniform(0, 2 * np.pi))],
        _harmonics(rng, 5, cell_irr),  # k = 3..7
        np.zeros(3),
        _harmonics(rng, 6, cell_rag),  # k = 11..16
    ]).astype(np.complex64)
    reach = rc * (1 + elong + cell_irr + cell_rag)
    room = max(0.0, 0.5 - reach - 2 * px)
    cx, cy = (float(v) for v in rng.uniform(-1, 1, 2) * min(room, 0.06))  # Python floats keep float32
    d_cell = _outline(xs - cx, ys - cy, rc, cell_coeffs, 2) / px  # in pixels
    inside = d_cell < 0
    if not inside.any():  # degenerate tiny image: keep at least the centre pixel
        inside[size // 2, size // 2] = True

    # Nucleus: high N/C ratio and lobed for ALL, smaller, rounder and eccentric for hem.
    rn = rc * float(np.clip(_lerp(0.68, 0.87, t_nc), 0.5, 0.93))
    nuc_irr = max(0.0, _lerp(0.02, 0.11, t_shape))
    nuc_rag = max(0.0, _lerp(0.003, 0.03, t_shape))
    nuc_coeffs = np.concatenate([
        _harmonics(rng, 4, nuc_irr),  # k = 2..5
        np.zeros(3),
        _harmonics(rng, 7, nuc_rag),  # k = 9..15
    ]).astype(np.complex64)
    slack = max(0.0, rc * (1 - elong - cell_irr) - rn * (1 + nuc_irr + nuc_rag))
    angle = float(rng.uniform(0, 2 * np.pi))
    shift = slack * float(rng.uniform(0.15, 0.9))
    nx, ny = cx + shift * np.cos(angle), cy + shift * np.sin(angle)
    dnx, dny = xs - nx, ys - ny
    d_nuc = _outline(dnx, dny, rn, nuc_coeffs, 2) / px
    alpha_n = np.clip(0.5 - d_nuc / max(1.0, 0.8 * size / 64), 0.0, 1.0)[..., None]

    # Cytoplasm: faint texture and a slightly darker membrane rim.
    cyto_tex = 1.0 + 0.04 * _smooth_noise(rng, size, 10)
    rim = 1.0 - 0.12 * np.exp(np.minimum(d_cell, 0.0) / max(1.0, 1.5 * size / 64))
    cyto = subject.cytoplasm_rgb * (cyto_tex * rim)[..., None]

    # Nucleus: hem dense and coarse chromatin, ALL paler and fine chromatin.
    density = float(np.clip(_lerp(0.60, 0.95, t_density), 0.45, 1.05))
    grain = float(np.clip(_lerp(8, 22, t_chromatin), 6, 26))
    amp = float(np.clip(_lerp(0.28, 0.10, t_chromatin), 0.06, 0.34))
    chromatin = np.clip(1.0 + amp * _smooth_noise(rng, size, grain), 0.3, 1.7)
    nuc = subject.nucleus_rgb * (density * chromatin)[..., None]

    # Nucleoli: 1-3 lighter spots in blasts, usually none in normal cells.
    n_nucleoli = int(np.clip(np.round(_lerp(-0.3, 2.6, t_nucleoli) + rng.uniform(-0.5, 0.5)), 0, 3))
    if n_nucleoli:
        spots = np.zeros((size, size), dtype=np.float32)
        for _ in range(n_nucleoli):
            a, r = float(rng.uniform(0, 2 * np.pi)), rn * 0.5 * float(np.sqrt(rng.uniform()))
            s = rn * float(rng.uniform(0.08, 0.14))
            sx, sy = dnx - r * np.cos(a), dny - r * np.sin(a)
            peak = float(rng.uniform(0.45, 0.85))
            spots = np.maximum(spots, peak * np.exp((sx * sx + sy * sy) * (-0.5 / (s * s))))
        spots = spots[..., None]
        nuc = nuc * (1 - spots) + _NUCLEOLUS_RGB * (density + 0.15) * spots

    img = cyto * (1 - alpha_n) + nuc * alpha_n
    img = img * subject.gain + subject.offset
    img *= (inside * np.float32(np.exp(rng.normal(0, 0.05))))[..., None]  # per-cell exposure, cut out

    sigma = float(rng.uniform(0.3, 1.0)) * size / 64
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), sigmaX=sigma)
    speckle = float(rng.uniform(0.0, 0.08))
    gauss = float(rng.uniform(0.008, 0.03))
    noise = rng.standard_normal((2, size, size, 3), dtype=np.float32)
    img = img * (1 + speckle * noise[0]) + gauss * noise[1]

    out = np.clip(img * 255.0 + 0.5, 1.0, 255.0).astype(np.uint8)
    out[~inside] = 0
    if nucleus_mask is not None:
        nucleus_mask.append((d_nuc < 0) & inside)
    return out


def draw_cell(cls: str, seed: int, size: int = 64, difficulty: float = 0.5,
              nucleus_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic cell of class ``cls`` (``all`` or ``hem``) and its nucleus mask: (RGB uint8, bool mask).

    For tests that ask where a model looks (Grad-CAM): with ``nucleus_only`` the class differs only
    inside the nucleus (see :func:`_draw_cell`), so a model that learned the class must look there.
    """
    if cls not in CLASSES:
        raise ValueError(f"cls {cls!r}: choose from {', '.join(CLASSES)}")
    subject = _make_subject(cls, 1, "fold_0", seed)
    mask: list[np.ndarray] = []
    image = _draw_cell(subject, np.random.default_rng((seed, _SALT_CELL, 7)), size, difficulty, nucleus_only, mask)
    return image, mask[0]


def _make_subject(cls: str, number: int, split: str, seed: int) -> _Subject:
    """Per-subject stain tint and scale, strong enough that the subject is recognisable."""
    rng = np.random.default_rng((seed, _SALT_SUBJECT, 1 if cls == "all" else 0, number))
    brightness = np.exp(rng.normal(0, 0.10))
    gain = (brightness * np.exp(rng.normal(0, 0.18, 3))).astype(np.float32)
    offset = rng.normal(0, 0.03, 3).astype(np.float32)
    return _Subject(
        cls=cls,
        number=number,
        split=split,
        gain=gain,
        offset=offset,
        nucleus_rgb=np.clip(_NUCLEUS_RGB + rng.normal(0, 0.04, 3), 0.05, 1).astype(np.float32),
        cytoplasm_rgb=np.clip(_CYTOPLASM_RGB + rng.normal(0, 0.04, 3), 0.05, 1).astype(np.float32),
        scale=float(np.exp(rng.normal(0, 0.05))),
        bias=float(rng.normal(0, 0.05)),
    )


def _cell_ids(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    """``(image N, cell C)`` pairs: 1-3 segmented cells per microscope image, like C-NMC."""
    ids: list[tuple[int, int]] = []
    image = int(rng.integers(1, 20))
    while len(ids) < n:
        for c in range(1, int(rng.integers(1, 4)) + 1):
            ids.append((image, c))
        image += int(rng.integers(1, 4))
    return ids[:n]


def _file_name(subject: _Subject, image: int, cell: int) -> str:
    return f"UID_{subject.key}_{image}_{cell}_{subject.cls}.bmp"


def _save_bmp(arr: np.ndarray, path: Path) -> None:
    Image.fromarray(arr, "RGB").save(path, format="BMP")


def _check_args(n_all: int, n_hem: int, cells: int, size: int, folds: int, prelim: tuple[int, int],
                seed: int, difficulty: float, duplicates: int) -> None:
    if n_all < 0 or n_hem < 0 or n_all + n_hem == 0:
        raise ValueError("need at least one training subject (n_all_subjects + n_hem_subjects > 0)")
    if cells < 1:
        raise ValueError("cells_per_subject must be >= 1")
    if size < 16:
        raise ValueError("image_size must be >= 16 pixels")
    if folds < 1:
        raise ValueError("folds must be >= 1")
    if len(prelim) != 2 or min(prelim) < 0:
        raise ValueError("prelim_subjects must be two non-negative counts (ALL, hem)")
    if seed < 0:
        raise ValueError("seed must be >= 0")
    if not np.isfinite(difficulty) or difficulty < 0:
        raise ValueError("difficulty must be a finite number >= 0")
    if duplicates < 0:
        raise ValueError("duplicates must be >= 0")
    if duplicates:
        if max(n_all, n_hem) < 2:
            raise ValueError("duplicates need two training subjects of one class")
        if duplicates > cells:
            raise ValueError(f"duplicates ({duplicates}) cannot exceed cells_per_subject ({cells})")


def _refuse_existing(root: Path) -> None:
    """Never touch an existing data set: a real C-NMC copy may live at the same path."""
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} already exists and is not empty; refusing to overwrite a data set")


def generate_cnmc(out: Path, *, n_all_subjects: int = 6, n_hem_subjects: int = 4, cells_per_subject: int = 20,
                  image_size: int = 64, folds: int = 3, prelim_subjects: tuple[int, int] = (2, 2),
                  seed: int = 0, difficulty: float = 1.0, duplicates: int = 0) -> dict:
    """Write a synthetic ``out/C-NMC_Leukemia`` tree and return what was written.

    Training subjects are spread round-robin over ``fold_0..fold_{folds-1}`` (each subject
    in one fold); ``prelim_subjects`` extra (ALL, hem) subjects form the preliminary test
    set ``validation_data/C-NMC_test_prelim_phase_data/<i>.bmp`` with its labels CSV
    (omitted when both counts are 0). ``duplicates`` training cells of one ALL patient (hem
    if fewer than two ALL patients) are copied byte-for-byte under another subject of the
    same class, preferably in another fold. Output is a pure function of the arguments;
    the tree is built in a hidden temporary folder and renamed into place, so a crash
    never leaves half a data set.

    Returns ``root``, ``n_images``, ``n_train``, ``n_prelim``, ``per_class`` and
    ``per_split`` (counts per class, all splits), ``per_subject`` (files per subject),
    ``subject_split`` and ``subject_class`` (subject id -> split / class), ``duplicates``
    (pairs of paths relative to ``root``, original first) and ``labels_csv``.
    """
    prelim = (int(prelim_subjects[0]), int(prelim_subjects[1]))
    _check_args(n_all_subjects, n_hem_subjects, cells_per_subject, image_size, folds, prelim,
                seed, difficulty, duplicates)
    out = Path(out)
    root = out / ROOT_NAME
    _refuse_existing(root)
    out.mkdir(parents=True, exist_ok=True)

    # Subjects and folds: shuffle each class, deal round-robin, hem continuing after ALL.
    layout = np.random.default_rng((seed, _SALT_LAYOUT))
    subjects: list[_Subject] = []
    start = 0
    for cls, n_train, n_pre in (("all", n_all_subjects, prelim[0]), ("hem", n_hem_subjects, prelim[1])):
        order = layout.permutation(n_train)
        for rank, i in enumerate(order):
            subjects.append(_make_subject(cls, int(i) + 1, f"fold_{(start + rank) % folds}", seed))
        subjects.extend(_make_subject(cls, n_train + j + 1, "prelim_test", seed) for j in range(n_pre))
        start += n_train

    tmp = Path(tempfile.mkdtemp(prefix=f".{ROOT_NAME}.", suffix=".partial", dir=out))
    try:
        summary = _write_tree(tmp, subjects, cells_per_subject, image_size, folds, seed, difficulty,
                              duplicates, layout)
        # says that these cells are generated, so a model card never calls them C-NMC data
        (tmp / SYNTHETIC_MARKER).write_text('{"generator": "allwen synth", "layout": "C-NMC 2019", '
                                            '"note": "synthetic cells, not real patient images"}\n')
        _refuse_existing(root)
        if root.exists():
            root.rmdir()
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    summary["root"] = root
    summary["labels_csv"] = root / summary["labels_csv"] if summary["labels_csv"] else None
    log.info("synthetic C-NMC: %d images (%d train, %d prelim) in %s", summary["n_images"],
             summary["n_train"], summary["n_prelim"], root)
    return summary


def _write_tree(base: Path, subjects: list[_Subject], cells: int, size: int, folds: int, seed: int,
                difficulty: float, duplicates: int, layout: np.random.Generator) -> dict:
    """Draw and save every image under ``base`` (the future ``C-NMC_Leukemia``)."""
    train = base / "training_data"
    for k in range(folds):
        for cls in CLASSES:
            (train / f"fold_{k}" / cls).mkdir(parents=True, exist_ok=True)

    per_split: dict[str, dict[str, int]] = {f"fold_{k}": {c: 0 for c in CLASSES} for k in range(folds)}
    per_subject: dict[str, int] = {}
    files: dict[str, list[Path]] = {}
    last_image: dict[str, int] = {}
    # The prelim set hides class and subject behind shuffled numbers 1..n, fixed up front so
    # each image is written straight to its final name (450 px sets need not fit in memory).
    n_prelim = cells * sum(s.split == "prelim_test" for s in subjects)
    prelim_numbers = iter((layout.permutation(n_prelim) + 1).tolist())
    prelim_dir = base / "validation_data" / PRELIM_DIR
    if n_prelim:
        prelim_dir.mkdir(parents=True)
        per_split["prelim_test"] = {c: 0 for c in CLASSES}
    prelim_rows: list[tuple[int, str, int]] = []
    jobs: list[tuple[_Subject, int, Path]] = []  # every cell's name fixed first, drawn after

    for subject in subjects:
        ids = _cell_ids(np.random.default_rng((seed, _SALT_NAMES, subject.class_code, subject.number)), cells)
        last_image[subject.key] = ids[-1][0]
        per_subject[subject.key] = cells
        is_prelim = subject.split == "prelim_test"
        folder = prelim_dir if is_prelim else train / subject.split / subject.cls
        written = files.setdefault(subject.key, [])
        for k, (image, cell) in enumerate(ids):
            name = _file_name(subject, image, cell)
            if is_prelim:
                number = next(prelim_numbers)
                prelim_rows.append((number, name, subject.class_code))
                name = f"{number}.bmp"
            jobs.append((subject, k, folder / name))
            written.append(folder / name)
        per_split[subject.split][subject.cls] += cells
    _draw_all(jobs, size, seed, difficulty)

    pairs: list[tuple[str, str]] = []
    if duplicates:
        target, pairs = _copy_duplicates(base, subjects, files, last_image, duplicates, layout)
        per_subject[target.key] += duplicates
        per_split[target.split][target.cls] += duplicates

    labels_csv = ""
    if prelim_rows:
        lines = ["Patient_ID,new_names,labels"]
        lines += [f"{name},{number}.bmp,{label}" for number, name, label in sorted(prelim_rows)]
        labels_csv = f"validation_data/{PRELIM_CSV}"
        (base / labels_csv).write_text("\n".join(lines) + "\n")

    per_class = {c: sum(v[c] for v in per_split.values()) for c in CLASSES}
    return {
        "n_images": sum(per_class.values()),
        "n_train": sum(per_class.values()) - n_prelim,
        "n_prelim": n_prelim,
        "per_class": per_class,
        "per_split": per_split,
        "per_subject": per_subject,
        "subject_split": {s.key: s.split for s in subjects},
        "subject_class": {s.key: s.cls for s in subjects},
        "duplicates": pairs,
        "labels_csv": labels_csv,
        "image_size": size,
        "seed": seed,
        "difficulty": difficulty,
    }


_POOL_FROM = 500  # cells: below this a process pool's start costs more than it saves


def _draw_one(job: tuple[_Subject, int, Path], size: int, seed: int, difficulty: float) -> None:
    """Draw and save one cell: its own random stream, so the order cells are drawn in is free."""
    subject, k, path = job
    rng = np.random.default_rng((seed, _SALT_CELL, subject.class_code, subject.number, k))
    _save_bmp(_draw_cell(subject, rng, size, difficulty), path)


def _draw_all(jobs: list[tuple[_Subject, int, Path]], size: int, seed: int, difficulty: float) -> None:
    """Every cell, in threads (the thread budget's CPUs; numpy, OpenCV and PIL release the GIL
    in their array work) for a large set: at 450 px a cell costs about 0.1 CPU-second, so
    C-NMC's 12,528 cells are 20 CPU-minutes."""
    from allwen.threads import budget

    workers = min(budget(), max(1, len(jobs) // 50))
    if workers < 2 or len(jobs) < _POOL_FROM:
        for job in jobs:
            _draw_one(job, size, seed, difficulty)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(lambda job: _draw_one(job, size, seed, difficulty), jobs):
            pass


def _copy_duplicates(base: Path, subjects: list[_Subject], files: dict[str, list[Path]],
                     last_image: dict[str, int], n: int,
                     layout: np.random.Generator) -> tuple[_Subject, list[tuple[str, str]]]:
    """Copy ``n`` cells of one subject byte-for-byte under another's name (the C-NMC 20/21 trap)."""
    train = [s for s in subjects if s.split != "prelim_test"]
    cls = "all" if sum(s.cls == "all" for s in train) >= 2 else "hem"
    pool = sorted((s for s in train if s.cls == cls), key=lambda s: s.number)
    source = pool[int(layout.integers(len(pool)))]
    others = [s for s in pool if s.key != source.key]
    elsewhere = [s for s in others if s.split != source.split]
    candidates = elsewhere or others
    target = candidates[int(layout.integers(len(candidates)))]
    picks = sorted(layout.choice(len(files[source.key]), size=n, replace=False).tolist())
    image = last_image[target.key]
    pairs = []
    for j, pick in enumerate(picks):
        src = files[source.key][pick]
        dst = base / "training_data" / target.split / target.cls / _file_name(target, image + 1 + j, 1)
        shutil.copyfile(src, dst)
        pairs.append((str(src.relative_to(base)), str(dst.relative_to(base))))
    return target, pairs

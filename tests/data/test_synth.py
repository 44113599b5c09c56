"""The synthetic C-NMC generator must mimic the real layout and its traps, and stay fast."""

from __future__ import annotations

import csv
import hashlib
import re
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from allwen.data.synth import generate_cnmc

ALL_RE = re.compile(r"UID_(\d+)_(\d+)_(\d+)_all\.bmp")
HEM_RE = re.compile(r"UID_[Hh](\d+)_(\d+)_(\d+)_hem\.bmp")


def _subject(name: str) -> str:
    """Subject id of a C-NMC file name: ``57`` for ALL patients, ``H10`` for healthy donors."""
    if m := ALL_RE.fullmatch(name):
        return m.group(1)
    if m := HEM_RE.fullmatch(name):
        return "H" + m.group(1)
    raise AssertionError(f"{name} does not match the C-NMC name patterns")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _train_files(root: Path) -> list[Path]:
    return sorted((root / "training_data").glob("fold_*/*/*.bmp"))


def _all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def default_set(tmp_path_factory) -> dict:
    """The default arguments (6 ALL + 4 hem subjects, 20 cells, 3 folds, 2+2 prelim) at 64 px."""
    start = time.perf_counter()
    summary = generate_cnmc(tmp_path_factory.mktemp("cnmc"), seed=5)
    summary["seconds"] = time.perf_counter() - start
    return summary


def test_layout_names_and_counts(default_set):
    root = default_set["root"]
    assert root.name == "C-NMC_Leukemia"
    for k in range(3):
        for cls in ("all", "hem"):
            assert (root / "training_data" / f"fold_{k}" / cls).is_dir()

    folds_of: dict[str, set[str]] = defaultdict(set)
    per_subject: dict[str, int] = defaultdict(int)
    per_class: dict[str, int] = defaultdict(int)
    for path in _train_files(root):
        cls, fold = path.parent.name, path.parent.parent.name
        assert (ALL_RE if cls == "all" else HEM_RE).fullmatch(path.name), path.name
        subject = _subject(path.name)
        folds_of[subject].add(fold)
        per_subject[subject] += 1
        per_class[cls] += 1

    assert all(len(f) == 1 for f in folds_of.values()), "a subject spans several folds"
    assert sum(not s.startswith("H") for s in per_subject) == 6
    assert sum(s.startswith("H") for s in per_subject) == 4
    assert set(per_subject.values()) == {20}
    assert dict(per_class) == {"all": 120, "hem": 80}
    assert {f for fs in folds_of.values() for f in fs} == {"fold_0", "fold_1", "fold_2"}

    assert default_set["n_train"] == 200 and default_set["n_prelim"] == 80 and default_set["n_images"] == 280
    assert default_set["per_class"] == {"all": 160, "hem": 120}
    for subject, folds in folds_of.items():
        assert default_set["subject_split"][subject] == next(iter(folds))
        assert default_set["per_subject"][subject] == 20
    for fold in ("fold_0", "fold_1", "fold_2"):
        for cls in ("all", "hem"):
            on_disk = len(list((root / "training_data" / fold / cls).glob("*.bmp")))
            assert default_set["per_split"][fold][cls] == on_disk


def test_prelim_test_set_and_labels(default_set):
    root = default_set["root"]
    folder = root / "validation_data" / "C-NMC_test_prelim_phase_data"
    csv_path = root / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv"
    assert default_set["labels_csv"] == csv_path
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["Patient_ID", "new_names", "labels"]
    assert sorted(r["new_names"] for r in rows) == sorted(f"{i}.bmp" for i in range(1, 81))
    assert sorted(p.name for p in folder.glob("*.bmp")) == sorted(r["new_names"] for r in rows)
    assert len({r["Patient_ID"] for r in rows}) == 80

    labels = np.array([int(r["labels"]) for r in rows])
    for row, label in zip(rows, labels):
        assert (label == 1) == row["Patient_ID"].endswith("_all.bmp")
    assert labels.sum() == 40 and (labels == 0).sum() == 40
    assert labels[:40].sum() not in (0, 40), "prelim order should be shuffled, not sorted by class"

    prelim_subjects = {_subject(r["Patient_ID"]) for r in rows}
    train_subjects = {_subject(p.name) for p in _train_files(root)}
    assert len(prelim_subjects) == 4 and not prelim_subjects & train_subjects


def test_images_are_segmented_rgb_bmps(default_set):
    files = _train_files(default_set["root"])
    files += sorted((default_set["root"] / "validation_data").rglob("*.bmp"))
    fractions = []
    for path in files:
        with Image.open(path) as img:
            assert img.format == "BMP" and img.mode == "RGB" and img.size == (64, 64)
            arr = np.asarray(img)
        cell = arr.max(-1) > 0
        # Exact segmentation: a pixel is either pure black background or fully inside the cell.
        assert np.array_equal(cell, arr.min(-1) > 0)
        assert not cell[0].any() and not cell[-1].any() and not cell[:, 0].any() and not cell[:, -1].any()
        fractions.append(cell.mean())
    assert min(fractions) > 0.08 and max(fractions) < 0.6


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kwargs = dict(n_all_subjects=2, n_hem_subjects=2, cells_per_subject=3, image_size=32, prelim_subjects=(1, 1))
    a = _all_bytes(generate_cnmc(tmp_path / "a", seed=7, **kwargs)["root"])
    b = _all_bytes(generate_cnmc(tmp_path / "b", seed=7, **kwargs)["root"])
    c = _all_bytes(generate_cnmc(tmp_path / "c", seed=8, **kwargs)["root"])
    assert a == b
    assert a != c
    shared = set(a) & set(c)
    assert all(a[k] != c[k] for k in shared if "training_data" in k), "another seed must draw other cells"


def test_cells_drawn_in_threads_are_the_same_bytes_as_one_by_one(tmp_path, monkeypatch):
    import allwen.data.synth as synth

    kwargs = dict(n_all_subjects=3, n_hem_subjects=3, cells_per_subject=20, image_size=16, prelim_subjects=(1, 1),
                  duplicates=2)
    monkeypatch.setattr(synth, "_POOL_FROM", 10**9)
    one_by_one = _all_bytes(generate_cnmc(tmp_path / "a", **kwargs)["root"])
    monkeypatch.setattr(synth, "_POOL_FROM", 1)
    monkeypatch.setenv("ALLWEN_THREADS", "2")
    drawn = []
    original = synth._draw_one
    monkeypatch.setattr(synth, "_draw_one", lambda *a: drawn.append(threading.current_thread().name) or original(*a))
    threaded = _all_bytes(generate_cnmc(tmp_path / "b", **kwargs)["root"])
    assert len(drawn) == 160 and all(name != "MainThread" for name in drawn)
    assert threaded == one_by_one


def test_refuses_to_overwrite(tmp_path):
    kwargs = dict(n_all_subjects=1, n_hem_subjects=1, cells_per_subject=2, image_size=32, prelim_subjects=(0, 0))
    root = generate_cnmc(tmp_path, seed=1, **kwargs)["root"]
    before = _all_bytes(root)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        generate_cnmc(tmp_path, seed=2, **kwargs)
    assert _all_bytes(root) == before
    assert [p.name for p in tmp_path.iterdir()] == ["C-NMC_Leukemia"], "no temporary folder left behind"
    assert not (root / "validation_data").exists()

    (tmp_path / "empty" / "C-NMC_Leukemia").mkdir(parents=True)  # an empty folder is fine to fill
    assert generate_cnmc(tmp_path / "empty", seed=1, **kwargs)["n_images"] == 4


def test_duplicates_are_byte_identical_across_two_subjects(tmp_path):
    summary = generate_cnmc(tmp_path, n_all_subjects=3, n_hem_subjects=2, cells_per_subject=5, image_size=32,
                            duplicates=3, seed=2)
    files = _train_files(summary["root"])
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        groups[_sha(path)].append(path)
    dup_groups = [g for g in groups.values() if len(g) > 1]
    assert len(dup_groups) == 3 and all(len(g) == 2 for g in dup_groups)
    subjects = {tuple(sorted(_subject(p.name) for p in g)) for g in dup_groups}
    assert len(subjects) == 1, "all copies go from one subject to one other subject"
    (pair,) = subjects
    assert pair[0] != pair[1]
    assert all(g[0].parent.name == g[1].parent.name for g in dup_groups), "copies keep their class"

    assert len(files) == 5 * 5 + 3 and summary["n_train"] == 28
    listed = {frozenset(summary["root"] / p for p in pair) for pair in summary["duplicates"]}
    assert listed == {frozenset(g) for g in dup_groups}
    assert sorted(summary["per_subject"].values())[-1] == 8


def _cell_stats(path: Path) -> tuple[float, np.ndarray]:
    """Fraction of dark cell pixels (a nucleus-area proxy) and the mean RGB of the cell."""
    arr = np.asarray(Image.open(path)).astype(np.float32)
    pixels = arr[arr.max(-1) > 0]
    lum = pixels.mean(1)
    lo, hi = np.percentile(lum, [5, 95])
    return float((lum < (lo + hi) / 2).mean()), pixels.mean(0)


def test_class_signal_is_morphological_not_colour(tmp_path):
    summary = generate_cnmc(tmp_path, n_all_subjects=12, n_hem_subjects=12, cells_per_subject=6, image_size=48,
                            prelim_subjects=(0, 0), seed=3)
    files = _train_files(summary["root"])
    dark: dict[str, list[float]] = defaultdict(list)
    rgb_by_subject: dict[str, list[np.ndarray]] = defaultdict(list)
    for path in files:
        frac, rgb = _cell_stats(path)
        dark[path.parent.name].append(frac)
        rgb_by_subject[_subject(path.name)].append(rgb)

    # Blasts have the larger nucleus: more of the cell is dark.
    assert np.mean(dark["all"]) - np.mean(dark["hem"]) > 0.08

    subject_means = {s: np.mean(v, 0) for s, v in rgb_by_subject.items()}
    class_of = {s: "hem" if s.startswith("H") else "all" for s in subject_means}
    class_means = {c: np.mean([m for s, m in subject_means.items() if class_of[s] == c], 0) for c in ("all", "hem")}
    class_gap = np.linalg.norm(class_means["all"] - class_means["hem"])
    tint_spread = np.sqrt(np.mean([np.sum((m - class_means[class_of[s]]) ** 2) for s, m in subject_means.items()]))
    assert class_gap < 0.75 * tint_spread, (class_gap, tint_spread)
    assert tint_spread > 15  # per-subject stain tints are strong (0..255 scale)

    # A colour-only 1-NN works when the subject is on both sides, not across subjects.
    rgb = np.array([_cell_stats(p)[1] for p in files])
    label = np.array([p.parent.name == "all" for p in files])
    subject = np.array([_subject(p.name) for p in files])
    dist = ((rgb[:, None] - rgb[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    image_level = (label[dist.argmin(1)] == label).mean()
    dist[subject[:, None] == subject[None]] = np.inf
    subject_grouped = (label[dist.argmin(1)] == label).mean()
    assert image_level > 0.8 and subject_grouped < 0.7 and image_level - subject_grouped > 0.2


def test_difficulty_controls_overlap(tmp_path):
    def separation(difficulty: float) -> float:
        summary = generate_cnmc(tmp_path / str(difficulty), n_all_subjects=4, n_hem_subjects=4, cells_per_subject=10,
                                image_size=48, prelim_subjects=(0, 0), seed=4, difficulty=difficulty)
        dark = defaultdict(list)
        for path in _train_files(summary["root"]):
            dark[path.parent.name].append(_cell_stats(path)[0])
        a, h = np.array(dark["all"]), np.array(dark["hem"])
        return (a.mean() - h.mean()) / np.sqrt((a.var() + h.var()) / 2)

    assert separation(0.25) > separation(2.0) + 0.5


def test_large_images_and_speed(tmp_path):
    summary = generate_cnmc(tmp_path / "big", n_all_subjects=1, n_hem_subjects=1, cells_per_subject=1,
                            image_size=450, prelim_subjects=(0, 0))
    for path in _train_files(summary["root"]):
        with Image.open(path) as img:
            assert img.size == (450, 450) and img.mode == "RGB"

    start = time.perf_counter()
    fast = generate_cnmc(tmp_path / "fast", n_all_subjects=5, n_hem_subjects=5, cells_per_subject=30,
                         prelim_subjects=(0, 0))
    elapsed = time.perf_counter() - start
    assert fast["n_images"] == 300
    assert elapsed < 4.0, f"300 images of 64 px took {elapsed:.1f} s (budget: 1,000 in well under 5 s)"


@pytest.mark.parametrize("kwargs", [
    dict(n_all_subjects=0, n_hem_subjects=0),
    dict(cells_per_subject=0),
    dict(image_size=8),
    dict(folds=0),
    dict(prelim_subjects=(-1, 0)),
    dict(difficulty=-1.0),
    dict(duplicates=2, n_all_subjects=1, n_hem_subjects=1),
    dict(duplicates=30, cells_per_subject=5),
    dict(seed=-1),
])
def test_rejects_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_cnmc(tmp_path, **kwargs)
    assert not (tmp_path / "C-NMC_Leukemia").exists()

"""Near-duplicates: generated variants of a cell are found, distinct cells are not grouped."""

import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from allwen.config.schema import SplitConfig
from allwen.data import load_source
from allwen.data.audit import audit_table
from allwen.data.neardup import feature_pairs, groups_from_pairs, hash_pairs, phashes
from allwen.data.splits import leakage_summary, make_split

VARIANTS = ("shifted", "jpeg", "tinted")


def _variant(image: Image.Image, kind: str) -> Image.Image:
    w, h = image.size
    if kind == "shifted":  # a crop shifted by 1 pixel (0.6% of the side), back to the same size
        return image.crop((1, 1, w, h)).resize((w, h), Image.BILINEAR)
    if kind == "jpeg":  # re-encoded at quality 70
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=70)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    arr = np.asarray(image, dtype=np.float32)  # a small colour change: red +6%, blue -4%
    return Image.fromarray(np.clip(arr * np.array([1.06, 1.0, 0.96]), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def cells_with_variants(tmp_path_factory):
    """Class folders of 40 distinct synthetic cells (160 px, 10 subjects), 3 of them with one near-duplicate each.

    160 px because the perceptual hash tolerates shifts of about 1% of the side: on these smooth
    synthetic cells a 2-pixel shift at 96 px moves it as far as a distinct cell (docs/splits.md)."""
    from allwen.data.synth import generate_cnmc

    base = tmp_path_factory.mktemp("near")
    generate_cnmc(base / "gen", n_all_subjects=5, n_hem_subjects=5, cells_per_subject=4, image_size=160,
                  prelim_subjects=(0, 0), seed=3, folds=1)
    sources = sorted((base / "gen").rglob("*.bmp"))
    root = base / "cells"
    originals = {}
    for i, src in enumerate(sources):
        cls = "all" if src.name.endswith("_all.bmp") else "hem"
        (root / cls).mkdir(parents=True, exist_ok=True)
        image = Image.open(src).convert("RGB")
        path = root / cls / f"cell_{i:03d}.png"
        image.save(path)
        originals[i] = (cls, image, path)
    pairs = []
    for k, kind in enumerate(VARIANTS):
        cls, image, path = originals[5 + 7 * k]
        copy = root / cls / f"cell_{100 + k:03d}_{kind}.png"
        _variant(image, kind).save(copy)
        pairs.append({str(path), str(copy)})
    return root, pairs


def test_generated_near_duplicates_are_found_and_distinct_cells_are_not(cells_with_variants):
    root, pairs = cells_with_variants
    table = load_source(root, "folder")
    report = audit_table(table)
    found = [set(g["paths"]) for g in report.near_duplicate_groups]
    assert sorted(map(sorted, found)) == sorted(map(sorted, pairs))  # each variant with its original, nothing else
    assert report.duplicate_groups == []  # none is byte-identical
    assert all(not g["spans_classes"] for g in report.near_duplicate_groups)


def test_inspect_json_lists_near_duplicate_groups(cells_with_variants):
    from allwen.cli import app

    root, pairs = cells_with_variants
    result = CliRunner().invoke(app, ["inspect", str(root), "--source", "folder", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{"):])
    assert len(data["near_duplicate_groups"]) == len(VARIANTS)
    assert data["near_duplicate_phash_distance"] == SplitConfig().phash_distance


def test_duplicate_aware_split_keeps_near_duplicates_together_and_image_level_reports_them(cells_with_variants):
    root, pairs = cells_with_variants
    table = load_source(root, "folder")
    paths = table.frame["path"].tolist()
    rows = [[paths.index(p) for p in pair] for pair in pairs]
    hashes = phashes(paths)  # once, as the audit does for a run
    for seed in range(4):
        split = make_split(table, SplitConfig(test=0.3, folds=2, group_by="image", duplicate_aware=True, seed=seed),
                           hashes=hashes)
        for train, val in split.folds:
            for side in (train, val, split.test):
                for a, b in rows:
                    assert (a in side) == (b in side)
        assert all(r["shared_near_duplicate_groups"] == 0 for r in split.leakage)
    leaky = [make_split(table, SplitConfig(test=0.3, folds=2, group_by="image", duplicate_aware=False, seed=s),
                        hashes=hashes) for s in range(8)]
    shared = [r["shared_near_duplicate_groups"] for sp in leaky for r in sp.leakage]
    assert max(shared) > 0  # some seed splits a pair, and the check says so
    worst = next(sp for sp in leaky if any(r["shared_near_duplicate_groups"] for r in sp.leakage))
    assert "LEAKS" in leakage_summary(worst.leakage)


def test_hash_pairs_counts_bits_and_links_equal_hashes_once():
    h = np.zeros((5, 4), dtype=np.uint64)
    h[0, 0] = 0b1011
    h[1, 0] = 0b1001  # 1 bit from row 0
    h[2] = h[0]       # equal to row 0
    h[3, 3] = np.uint64(2**63)  # 4 bits from row 0 (3 + 1)
    # row 4 is all zeros: unreadable / not hashed, never grouped
    assert sorted((min(i, j), max(i, j), d) for i, j, d in hash_pairs(h, 1)) == [(0, 1, 1), (0, 2, 0)]
    assert groups_from_pairs(5, hash_pairs(h, 4)) == [[0, 1, 2, 3]]
    assert groups_from_pairs(5, hash_pairs(h, 0)) == [[0, 2]]


def test_feature_pairs_by_cosine():
    x = np.array([[1.0, 0.0], [0.99, 0.05], [0.0, 1.0], [0.0, 0.0]])
    assert [(i, j) for i, j, _ in feature_pairs(x, 0.99)] == [(0, 1)]
    assert feature_pairs(x, 0.999) == []


@pytest.mark.slow
def test_taleqani_near_duplicates_on_shared(shared):
    """On the real images: the measured default finds groups inside one class only (docs/splits.md)."""
    root = shared("data", "taleqani", "Original")
    table = load_source(root, "taleqani")
    hashes = phashes(table.frame["path"].tolist())
    groups = groups_from_pairs(len(table), hash_pairs(hashes, SplitConfig().phash_distance))
    labels = table.frame["label"].to_numpy()
    assert len(groups) >= 40
    assert all(len(set(labels[g])) == 1 for g in groups)


def test_hash_pairs_by_matrix_product_equal_xor_and_popcount_on_every_pair(monkeypatch):
    """The BLAS route finds exactly the pairs and distances of the direct count, across blocks."""
    import allwen.data.neardup as neardup

    rng = np.random.default_rng(3)
    h = rng.integers(0, 2**63, size=(300, 4), dtype=np.uint64)
    for k in range(0, 60, 2):  # near pairs: flip 0..29 bits of a copy
        h[k + 1] = h[k]
        for bit in rng.choice(256, size=k // 2, replace=False):
            h[k + 1, bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    direct = {(i, j, int(np.bitwise_count(h[i] ^ h[j]).sum())) for i in range(300) for j in range(i + 1, 300)}
    want = sorted(p for p in direct if p[2] <= 24)
    monkeypatch.setattr(neardup, "_BLOCK", 7)  # several blocks, one not full
    assert sorted((min(i, j), max(i, j), d) for i, j, d in hash_pairs(h, 24)) == want
    assert len(want) >= 20

"""Pseudo-patients: sequence blocks and appearance clusters stand in for missing patient ids."""

import numpy as np
import pytest
from PIL import Image

from allwen.config.schema import SplitConfig
from allwen.data import load_source
from allwen.data.pseudo import cluster_groups, colour_statistics, default_block, file_number, sequence_groups
from allwen.data.splits import SplitError, leakage_summary, make_split, save_split
from allwen.runfolder import RunFolder

CLASSES = ("Benign", "Early", "Pre", "Pro")
PATIENTS, PER_PATIENT = 4, 10


@pytest.fixture(scope="module")
def fake_taleqani(tmp_path_factory):
    """Taleqani's layout and names: 4 classes x 4 "patients" x 10 consecutively numbered images;
    each patient's smear has its own stain colour, each image its own noise."""
    root = tmp_path_factory.mktemp("taleqani") / "Original"
    rng = np.random.default_rng(0)
    truth = {}
    for c, cls in enumerate(CLASSES):
        (root / cls).mkdir(parents=True)
        prefix = "WBC-Benign" if cls == "Benign" else f"WBC-Malignant-{cls}"
        for p in range(PATIENTS):
            stain = rng.uniform(40, 215, 3)
            for k in range(PER_PATIENT):
                number = p * PER_PATIENT + k + 1
                pixels = np.clip(stain + rng.normal(0, 25, (24, 24, 3)), 0, 255).astype(np.uint8)
                path = root / cls / f"{prefix}-{number:03d}.jpg"
                Image.fromarray(pixels).save(path, quality=95)
                truth[str(path)] = f"{cls}/{p}"
    return root, truth


def test_file_numbers_and_sequence_blocks():
    assert file_number("/x/WBC-Malignant-Pre-017.jpg") == 17
    assert sequence_groups(["a/WBC-Benign-001.jpg", "a/WBC-Benign-037.jpg", "a/WBC-Benign-038.jpg"],
                           ["Benign"] * 3, 37) == ["Benign#0", "Benign#0", "Benign#1"]
    assert default_block("taleqani") == 37  # 3,256 images / 89 patients
    with pytest.raises(ValueError, match="needs a file number"):
        file_number("/x/cell.jpg")


def test_sequence_split_shares_no_block_and_image_level_split_shares_many(fake_taleqani):
    root, truth = fake_taleqani
    table = load_source(root, "taleqani")
    cfg = SplitConfig(test=0.25, folds=2, group_by="sequence", sequence_block=PER_PATIENT, seed=1)
    split = make_split(table, cfg)
    blocks = np.array(split.pseudo)
    assert len(set(blocks)) == len(CLASSES) * PATIENTS
    # the blocks are the patients exactly
    patients = np.array([truth[p] for p in table.frame["path"]])
    assert all(len(set(patients[blocks == b])) == 1 for b in set(blocks))
    assert all(r["shared_pseudo_patients"] == 0 and r["shared_near_duplicate_groups"] == 0 for r in split.leakage)
    assert "0 shared pseudo-patients (sequence)" in leakage_summary(split.leakage)
    assert split.grouping["pseudo_patients"] == "sequence" and split.grouping["pseudo_patients_used"]

    image = make_split(table, cfg.model_copy(update={"group_by": "image"}))
    assert max(r["shared_pseudo_patients"] for r in image.leakage) > 0  # reported, not used
    assert not image.grouping["pseudo_patients_used"]
    assert "LEAKS" in leakage_summary(image.leakage)


def test_cluster_grouping_recovers_stain_groups(fake_taleqani):
    root, truth = fake_taleqani
    table = load_source(root, "taleqani")
    paths = table.frame["path"].tolist()
    labels = cluster_groups(colour_statistics(paths), table.frame["label"].tolist(), PER_PATIENT)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score([truth[p] for p in paths], labels) == pytest.approx(1.0)
    split = make_split(table, SplitConfig(test=0.25, folds=2, group_by="cluster", sequence_block=PER_PATIENT))
    assert all(r["shared_pseudo_patients"] == 0 for r in split.leakage)


def test_pseudo_patients_need_a_block_size_where_none_is_known(tmp_path):
    for cls in ("all", "hem"):
        (tmp_path / cls).mkdir()
        for i in range(6):
            Image.new("RGB", (8, 8), (i * 40, 20, 90 if cls == "all" else 10)).save(tmp_path / cls / f"img_{i}.png")
    table = load_source(tmp_path, "folder")
    with pytest.raises(SplitError, match="split.sequence_block"):
        make_split(table, SplitConfig(test=0.3, folds=2, group_by="sequence"))


def test_evaluation_clusters_by_pseudo_patients(fake_taleqani, tmp_path):
    from allwen.evaluation.run import subject_clusters

    root, truth = fake_taleqani
    table = load_source(root, "taleqani")
    split = make_split(table, SplitConfig(test=0.25, folds=2, group_by="sequence", sequence_block=PER_PATIENT))
    save_split(split, table, RunFolder(tmp_path))
    test_paths = table.frame["path"].iloc[split.test].tolist()
    clusters = subject_clusters(RunFolder(tmp_path), test_paths)
    assert clusters is not None
    assert clusters.max() + 1 == len({truth[p] for p in test_paths})

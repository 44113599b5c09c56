import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from allwen.data import DataSourceError, cnmc_subject, load_source


def test_cnmc_subject_parsing():
    assert cnmc_subject("UID_1_2_2_all.bmp") == ("all", "1")
    assert cnmc_subject("UID_H10_14_1_hem.bmp") == ("hem", "H10")
    assert cnmc_subject("UID_h3_4_1_hem.bmp") == ("hem", "H3")  # the dataset's lowercase h
    assert cnmc_subject("1105.bmp") is None
    assert cnmc_subject("UID_H10_14_1_all.bmp") is None


def _placeholder_tree(root: Path, manifest: Path, with_labels: bool, data: bytes) -> int:
    prelim = 0
    with open(manifest) as handle:
        for rec in csv.DictReader(handle):
            rel = rec["path"]
            if not rel.endswith(".bmp"):
                continue
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            prelim += "C-NMC_test_prelim_phase_data/" in rel
    if with_labels:
        labels = root / "C-NMC_Leukemia/validation_data/C-NMC_test_prelim_phase_data_labels.csv"
        with open(labels, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["Patient_ID", "new_names", "labels"])
            for i in range(1, prelim + 1):  # made-up labels: odd names ALL, even names hem
                label = i % 2
                pid = f"UID_{60 + i % 13}_{i}_1_all.bmp" if label else f"UID_H{30 + i % 15}_{i}_1_hem.bmp"
                writer.writerow([pid, f"{i}.bmp", label])
    return prelim


def test_cnmc_full_file_list(tmp_path, shared, tiny_bmp):
    manifest = shared("data", "cnmc2019", "file_manifest.csv")
    n_prelim = _placeholder_tree(tmp_path, manifest, True, tiny_bmp)
    table = load_source(tmp_path, "auto", hash_files=False)
    assert table.source == "cnmc"
    frame = table.frame
    train = frame[frame["source_split"].str.startswith("fold_")]
    assert len(train) == 10661
    assert train.loc[train.label == "all", "subject"].nunique() == 47
    assert train.loc[train.label == "hem", "subject"].nunique() == 26
    assert len(train[(train.source_split == "fold_0") & (train.label == "all")]) == 2397
    assert len(train[(train.source_split == "fold_0") & (train.label == "hem")]) == 1130
    prelim = frame[frame["source_split"] == "prelim_test"]
    assert len(prelim) == n_prelim == 1867
    assert (prelim["label"] == "all").sum() == 934 and (prelim["label"] == "hem").sum() == 933
    assert prelim["subject"].nunique() == 13 + 15
    final = frame[frame["source_split"] == "final_test"]
    assert len(final) == 2586 and (final["label"] == "").all()
    # any part of the tree works too
    fold0 = load_source(tmp_path / "C-NMC_Leukemia/training_data/fold_0", hash_files=False)
    assert len(fold0) == 3527 and fold0.source == "cnmc"

    # Experiment A pools the two labelled sets (12,528 images); its subject variant keeps the
    # official split: the preliminary test set (1,867) is the test side
    from allwen.config import load_config
    from allwen.data.splits import make_split

    pooled = make_split(table, load_config("experiment_a", [f"data.path={tmp_path}"]).split)
    assert len(pooled.test) + len(pooled.folds[0][0]) + len(pooled.folds[0][1]) == 10661 + 1867 == 12528
    assert abs(len(pooled.test) - 0.2 * 12528) < 2
    official = make_split(table, load_config("experiment_a_subject", [f"data.path={tmp_path}"]).split)
    assert len(official.test) == 1867 and set(official.test) == set(np.flatnonzero(frame["source_split"] == "prelim_test"))


def test_cnmc_prelim_without_labels_is_unlabelled(tmp_path, shared, tiny_bmp):
    manifest = shared("data", "cnmc2019", "file_manifest.csv")
    _placeholder_tree(tmp_path, manifest, False, tiny_bmp)
    table = load_source(tmp_path / "C-NMC_Leukemia/validation_data", hash_files=False)
    assert len(table) == 1867 and (table.frame["label"] == "").all()
    assert any("no C-NMC_test_prelim_phase_data_labels.csv" in n for n in table.notes)


def test_real_cnmc_samples_load_with_subjects(shared):
    table = load_source(shared("data", "cnmc2019", "samples"))
    assert table.source == "cnmc"
    got = dict(zip(table.frame["path"].map(lambda p: Path(p).name), zip(table.frame["label"], table.frame["subject"])))
    assert got["UID_1_2_2_all.bmp"] == ("all", "1")
    assert got["UID_53_4_8_all.bmp"] == ("all", "53")
    assert got["UID_H10_14_1_hem.bmp"] == ("hem", "H10")
    assert got["UID_h3_5_1_hem.bmp"] == ("hem", "H3")
    assert table.frame["sha256"].str.len().eq(64).all()


def test_taleqani_and_binary_view(shared):
    root = shared("data", "taleqani")
    table = load_source(root)
    assert table.source == "taleqani" and table.classes == ["Benign", "Early", "Pre", "Pro"]
    assert len(table) == 2612 and not table.has_subjects
    binary = load_source(root, view="binary")
    assert binary.classes == ["hem", "all"]
    assert (binary.frame["label"] == "hem").sum() == 420


def test_class_folders_and_manifest(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / "tree" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "tree" / cls / f"{i}.png")
    table = load_source(tmp_path / "tree")
    assert table.source == "folder" and table.classes == ["a", "b"] and len(table) == 6
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,subject\ntree/a/0.png,a,s1\ntree/b/1.png,b,s2\n")
    table = load_source(manifest)
    assert table.source == "csv" and list(table.frame["subject"]) == ["s1", "s2"]
    assert Path(table.frame["path"][0]).is_absolute()


def test_bad_sources_name_the_problem(tmp_path):
    with pytest.raises(DataSourceError, match="no such file"):
        load_source(tmp_path / "missing")
    (tmp_path / "m.csv").write_text("file,class\nx.png,a\n")
    with pytest.raises(DataSourceError, match="missing column 'path'"):
        load_source(tmp_path / "m.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match="no images"):
        load_source(tmp_path / "empty", "folder")

import numpy as np
import pytest

from allwen.config.schema import SplitConfig
from allwen.data import load_source
from allwen.data.splits import SplitError, leakage_summary, load_split, make_split, save_split
from allwen.runfolder import RunFolder


def _pairs(split, a, b):
    return [r for r in split.leakage if r["a"] == a and r["b"] == b]


def test_subject_grouped_kfold_shares_no_subject(synth_root):
    table = load_source(synth_root)
    train_only = table.subset(table.frame["source_split"].str.startswith("fold_"))
    split = make_split(train_only, SplitConfig(test=0.2, folds=5, group_by="subject", duplicate_aware=True))
    frame = train_only.frame
    for train, val in split.folds:
        assert not set(frame.subject.iloc[train]) & set(frame.subject.iloc[val])
        assert not set(frame.subject.iloc[train]) & set(frame.subject.iloc[split.test])
        assert len(np.intersect1d(train, val)) == 0
    assert all(r["shared_subjects"] == 0 and r["shared_duplicate_groups"] == 0 for r in split.leakage)
    assert "LEAKS" not in leakage_summary(split.leakage)
    # every non-test image is validated exactly once
    vals = np.concatenate([v for _, v in split.folds])
    assert sorted(vals.tolist()) == sorted(set(range(len(frame))) - set(split.test.tolist()))


def test_image_level_split_reports_shared_subjects(synth_root):
    table = load_source(synth_root)
    train_only = table.subset(table.frame["source_split"].str.startswith("fold_"))
    split = make_split(train_only, SplitConfig(test=0.2, folds=5, group_by="image", duplicate_aware=False))
    assert all(r["shared_subjects"] > 0 for r in _pairs(split, "train", "val"))
    assert "LEAKS" in leakage_summary(split.leakage)
    # the generator copied 3 cells byte-identically under another subject: image-level splits may split them
    assert len(train_only.duplicate_groups()) == 3


def test_duplicate_aware_keeps_identical_images_together(synth_root):
    table = load_source(synth_root)
    train_only = table.subset(table.frame["source_split"].str.startswith("fold_"))
    for seed in range(5):
        split = make_split(train_only, SplitConfig(test=0.3, folds=3, group_by="image", duplicate_aware=True, seed=seed))
        assert all(r["shared_duplicate_groups"] == 0 for r in split.leakage)
        roles = split.roles(len(train_only))
        for group in train_only.duplicate_groups():
            for col in roles:
                assert roles[col].iloc[group].nunique() == 1


def test_stratified_holdout_fraction(synth_root):
    table = load_source(synth_root)
    split = make_split(table, SplitConfig(test=0.25, folds=1, val_fraction=0.2, group_by="image", duplicate_aware=False))
    labelled = int((table.label_indices() >= 0).sum())
    assert abs(len(split.test) - 0.25 * labelled) <= 1
    y = table.label_indices()
    assert abs(y[split.test].mean() - y[y >= 0].mean()) < 0.05  # stratified


def test_official_split_uses_the_prelim_test_set(synth_root):
    table = load_source(synth_root)
    split = make_split(table, SplitConfig(test="official", folds=3, group_by="subject"))
    frame = table.frame
    assert set(frame.source_split.iloc[split.test]) == {"prelim_test"}
    for train, val in split.folds:
        assert set(frame.source_split.iloc[train]) | set(frame.source_split.iloc[val]) <= {"fold_0", "fold_1", "fold_2"}


def test_split_round_trip_and_mismatch(tmp_path, synth_root):
    table = load_source(synth_root)
    split = make_split(table, SplitConfig(test=0.2, folds=3, group_by="subject"))
    folder = RunFolder(tmp_path)
    save_split(split, table, folder)
    again = load_split(folder, table)
    assert np.array_equal(again.test, split.test)
    for (t1, v1), (t2, v2) in zip(split.folds, again.folds):
        assert np.array_equal(t1, t2) and np.array_equal(v1, v2)
    assert again.leakage == split.leakage
    with pytest.raises(SplitError, match="other images"):
        load_split(folder, table.subset(np.arange(len(table)) > 0))


def test_errors_say_what_to_change(synth_root, shared):
    table = load_source(synth_root)
    with pytest.raises(SplitError, match="fewer than the 20 parts"):
        make_split(table, SplitConfig(test=0.2, folds=20, group_by="subject"))
    taleqani = load_source(shared("data", "taleqani"))
    with pytest.raises(SplitError, match="no subject ids"):
        make_split(taleqani, SplitConfig(group_by="subject"))


def test_official_split_keeps_groups_touching_the_test_set_out_of_training(tmp_path):
    from allwen.data.synth import generate_cnmc

    summary = generate_cnmc(tmp_path, n_all_subjects=6, n_hem_subjects=5, cells_per_subject=4, image_size=16,
                            prelim_subjects=(2, 2), seed=1)
    root = tmp_path / "C-NMC_Leukemia"
    # copy one prelim test image into the training folds under a training subject's name
    prelim = sorted((root / "validation_data" / "C-NMC_test_prelim_phase_data").glob("*.bmp"))[0]
    fold_file = next((root / "training_data").rglob("UID_*_all.bmp"))
    (fold_file.parent / "UID_1_99_1_all.bmp").write_bytes(prelim.read_bytes())
    table = load_source(root)
    split = make_split(table, SplitConfig(test="official", folds=2, group_by="subject", duplicate_aware=True))
    assert all(r["shared_duplicate_groups"] == 0 for r in split.leakage)
    assert split.notes and "left out" in split.notes[0]
    assert summary["n_prelim"] == len(split.test)


def test_folder_source_with_all_and_hem_keeps_all_as_the_positive_class(tmp_path):
    from PIL import Image

    for cls in ("all", "hem"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / cls / "x.png")
    assert load_source(tmp_path, "folder").classes == ["hem", "all"]


@pytest.mark.parametrize("group_by", ["subject", "image"])
def test_test_parts_are_disjoint_cover_every_image_and_keep_groups(synth_root, group_by):
    table = load_source(synth_root)
    train_only = table.subset(table.frame["source_split"].str.startswith("fold_"))
    frame = train_only.frame
    base = dict(test=0.25, folds=2, group_by=group_by, duplicate_aware=True)
    sides = [make_split(train_only, SplitConfig(**base, test_part=k)) for k in range(4)]
    tested = np.concatenate([s.test for s in sides])
    assert sorted(tested.tolist()) == list(range(len(frame)))  # each image is tested exactly once
    for split in sides:
        assert all(r["shared_duplicate_groups"] == 0 for r in split.leakage)
        if group_by == "subject":
            assert all(r["shared_subjects"] == 0 for r in split.leakage)
            outside = np.setdiff1d(np.arange(len(frame)), split.test)
            assert not set(frame.subject.iloc[split.test]) & set(frame.subject.iloc[outside])
    assert sides[2].method.startswith("testpart2of4+2fold/")
    if group_by == "subject":  # part 0 of the grouped parts is the plain hold-out
        plain = make_split(train_only, SplitConfig(**base))
        assert np.array_equal(plain.test, sides[0].test)


def test_test_part_must_exist():
    with pytest.raises(ValueError, match="gives 5 parts, numbered 0 to 4"):
        SplitConfig(test=0.2, test_part=5)
    with pytest.raises(ValueError, match="not 'official'"):
        SplitConfig(test="official", test_part=0)

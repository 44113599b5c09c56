"""allwen export builds a bundle from one RunFolder and one Summary: the run is opened once."""

from __future__ import annotations

from collections import Counter

import pytest

from allwen.bundle import parse_manifest


def test_export_opens_the_run_once(tiny_run, tmp_path, monkeypatch):
    """One RunFolder, one summary load, each prediction file read once (it was 7 + 3 x members opens)."""
    import allwen.evaluation.results as results
    import allwen.export.choice as choice
    import allwen.runfolder.layout as layout
    from allwen.export import export_bundle

    folders, summaries, reads = [], [], Counter()
    real_init, real_load, real_read = layout.RunFolder.__init__, choice.load_summary, layout.read_predictions

    def counting_init(self, *args, **kwargs):
        folders.append(args[0] if args else kwargs.get("root"))
        real_init(self, *args, **kwargs)

    def counting_load(*args, **kwargs):
        summaries.append(args)
        return real_load(*args, **kwargs)

    def counting_read(path, *args, **kwargs):
        reads[str(path)] += 1
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(layout.RunFolder, "__init__", counting_init)
    monkeypatch.setattr(choice, "load_summary", counting_load)
    monkeypatch.setattr(results, "load_summary", counting_load)
    monkeypatch.setattr(layout, "read_predictions", counting_read)
    out = export_bundle(tiny_run, tmp_path / "b", "inter[lr=0.01]/uniform", fmt="safetensors")
    assert len(folders) == 1 and len(summaries) == 1, (folders, summaries)
    assert reads and set(reads.values()) == {1}, reads  # validation and test files of every unit of the recipe
    assert len(reads) == 4  # 2 folds x (val, test): members and recipe share the cached reads
    spec = parse_manifest(out)
    assert [m.name for m in spec.members] == ["lr=0.01/fold_0", "lr=0.01/fold_1"]


def test_a_member_carries_the_preprocessing_its_unit_recorded(tiny_run):
    """Written once at training (weights metadata), copied unchanged into the member spec."""
    from allwen.bundle import PREPROCESSING_KEY, Preprocessing, safetensors_metadata
    from allwen.export.members import member_spec
    from allwen.runfolder import RunFolder

    folder = RunFolder(tiny_run)
    spec, unit = member_spec(folder, 0, "lr=0.01/fold_0", 1.0)
    recorded = Preprocessing.model_validate(safetensors_metadata(unit.weights)[PREPROCESSING_KEY])
    assert spec.preprocessing == recorded and spec.folder == "members/00_lr=0.01_fold_0"
    assert recorded.image_size == 32 and recorded.clahe is False and recorded.clahe_grid == 8


def test_a_unit_trained_before_the_record_gets_it_from_its_metadata_and_config(tiny_run, tmp_path):
    """Legacy units (size, CLAHE on/off and timm's config in the metadata): the scenario config gives the rest."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from allwen.bundle import PREPROCESSING_KEY, safetensors_metadata
    from allwen.export.members import member_spec
    from allwen.runfolder import RunFolder

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    folder = RunFolder(run)
    unit = folder.unit("lr=0.01", 0)
    meta = safetensors_metadata(unit.weights)
    new, _ = member_spec(RunFolder(tiny_run), 0, "lr=0.01/fold_0", 1.0)
    pre = meta.pop(PREPROCESSING_KEY)
    meta.pop("dropout")
    meta.update(image_size=pre["image_size"], clahe=pre["clahe"],
                data_config={k: pre[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")})
    import json

    save_file(load_file(str(unit.weights)), str(unit.weights), metadata={k: json.dumps(v) for k, v in meta.items()})
    old, _ = member_spec(folder, 0, "lr=0.01/fold_0", 1.0)
    assert old == new


@pytest.mark.parametrize("name", ["nope", "lr=0.5/fold_0"])
def test_an_unknown_model_lists_what_the_run_holds(tiny_run, tmp_path, name):
    from allwen.export import export_bundle

    with pytest.raises(ValueError, match="choose from: .*lr=0.01/fold_0"):
        export_bundle(tiny_run, tmp_path / "b", name)
    assert not (tmp_path / "b").exists()

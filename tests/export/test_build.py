"""allwen export builds a bundle from one RunFolder and one Summary: the run is opened once."""

from __future__ import annotations

from collections import Counter

import pytest

from allwen.bundle import BundleFolder, parse_manifest


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


@pytest.fixture(scope="module")
def stage1_run(tiny_run, tmp_path_factory):
    """The tiny run's data, stage 1 only (the backbone stays the frozen one whose features the run cached)."""
    from allwen.config import load_config
    from allwen.pipeline import run_pipeline
    from allwen.runfolder import RunFolder

    data = RunFolder(tiny_run).config_yaml()["data"]["path"]
    cfg = load_config("demo", [
        f"data.path={data}", "split.folds=2", "split.test=0.3", "train.stage1.epochs=1", "train.stage2=null",
        "train.batch_size=16", "evaluation.bootstrap=50", "evaluation.tta=false", "scenarios={train.lr: [0.01]}",
        "evaluation.stratify=false",
    ])
    out = tmp_path_factory.mktemp("stage1") / "run"
    run_pipeline(cfg, out, quiet=True)
    return out


def test_the_ood_rows_come_from_the_runs_caches_and_equal_the_computed_ones(stage1_run, tmp_path, monkeypatch):
    """A stage-1 member: features and input statistics read from RUN/cache (no image through the network beyond
    the check), and the bundle equals the one whose rows were all computed (OOD section, predictions)."""
    import json

    import allwen.export.cached_rows as cached_rows
    import allwen.export.sections as sections
    from allwen.export import export_bundle

    computed = []
    real_features = sections.member_features

    def counting(member, items, *args, **kwargs):
        computed.append(len(items))
        return real_features(member, items, *args, **kwargs)

    monkeypatch.setattr(sections, "member_features", counting)
    fast = export_bundle(stage1_run, tmp_path / "fast", "lr=0.01/fold_0", fmt="safetensors")
    assert computed == [cached_rows.CHECK_IMAGES], computed  # only the check
    computed.clear()
    monkeypatch.setattr(cached_rows, "cached_ood_rows", lambda *a, **k: None)
    slow = export_bundle(stage1_run, tmp_path / "slow", "lr=0.01/fold_0", fmt="safetensors")
    assert sum(computed) > cached_rows.CHECK_IMAGES
    a, b = (json.loads(BundleFolder(p).manifest_path.read_text()) for p in (fast, slow))
    for key in ("n_fit", "n_validation", "feature_dim", "member", "quantile"):
        assert a["ood"][key] == b["ood"][key], key
    assert a["ood"]["threshold"] == pytest.approx(b["ood"]["threshold"], rel=1e-4)
    assert a["card"]["ood"]["test_flagged"] == b["card"]["ood"]["test_flagged"]
    for key in ("selective", "conformal", "patient", "calibration"):
        assert a[key] == b[key], key


def test_a_backbone_that_moved_is_never_read_from_the_cache(stage1_run, tmp_path):
    """A member whose backbone differs from the one the run cached (fine-tuned in stage 2, here nudged by hand)
    gets no cached rows: the check computes the first images and compares."""
    import torch

    from allwen.export import export_bundle
    from allwen.export.cached_rows import cached_ood_rows
    from allwen.export.sections import member_features
    from allwen.runfolder import RunFolder
    from allwen.serve.bundle import load_bundle

    folder = RunFolder(stage1_run)
    bundle = export_bundle(stage1_run, tmp_path / "b", "lr=0.01/fold_0", fmt="safetensors")
    member = load_bundle(bundle, runtime="torch").members[0]
    paths = list(folder.unit_predictions_of("lr=0.01/fold_0").val_paths)
    compute = lambda items: member_features(member, items)  # noqa: E731
    assert cached_ood_rows(folder, member, paths, compute) is not None
    with torch.no_grad():
        for p in member.model().backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert cached_ood_rows(folder, member, paths, compute) is None


def test_the_cache_folders_export_reads_are_the_ones_training_writes(tmp_path):
    from allwen.export.cached_rows import DECODED, FEATURES
    from allwen.training.unit import RunCaches

    caches = RunCaches(tmp_path)
    assert caches.features.folder == tmp_path / FEATURES
    assert caches.decoded.__func__  # the decoded store's folder is written inline there:
    import inspect

    assert f'self.folder / "{DECODED}"' in inspect.getsource(RunCaches.decoded)


def test_export_verbose_prints_the_time_of_each_phase(stage1_run, tmp_path):
    """``allwen export --verbose``: one line per phase, what no phase covered, and the total; the phases add up."""
    import re

    from typer.testing import CliRunner

    from allwen.cli import app

    result = CliRunner().invoke(app, ["export", str(stage1_run), "--out", str(tmp_path / "b"), "--format",
                                      "safetensors", "--verbose"])
    assert result.exit_code == 0, result.output
    lines = result.output.split("time by phase (wall seconds):\n")[1].splitlines()
    seconds = {m[1].strip(): float(m[2]) for m in (re.match(r"\s+(.+?)\s+([\d.]+) s", line) for line in lines) if m}
    for phase in ("open run and predictions", "calibration and test card", "sections: prediction sets",
                  "sections: OOD rows from the run's caches", "sections: OOD detector", "model card",
                  "hashes, manifest and seal", "load the written bundle", "other", "total"):
        assert phase in seconds, (phase, lines)
    parts = sum(v for k, v in seconds.items() if k != "total")
    assert abs(parts - seconds["total"]) <= 0.05 * len(seconds), seconds

"""End to end on tiny synthetic data: split -> train -> ensembles -> statistics -> report."""

import json
import os

import pandas as pd
import pytest
from typer.testing import CliRunner

from allwen.cli import app
from allwen.config import load_config
from allwen.evaluation.metrics import ALL_METRIC_NAMES as METRIC_NAMES
from allwen.pipeline import PipelineError, rebuild_report, run_pipeline
from allwen.runfolder import RunFolder

runner = CliRunner()


def tiny_args(data_path):
    return [
        f"data.path={data_path}", "data.image_size=32", "split.folds=2", "split.test=0.3",
        "train.stage1.epochs=2", "train.stage2.epochs=1", "train.batch_size=16", "evaluation.bootstrap=200",
    ]


@pytest.fixture(scope="module")
def finished_run(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    args = ["run", "demo", "--out", str(out), "--quiet"]
    for item in tiny_args(synth_root / "training_data"):
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "report:" in result.output
    return out


def test_summary_has_every_model_and_answer(finished_run):
    summary = json.loads(RunFolder(finished_run).summary_path.read_text())
    assert len(summary["single_models"]) == 3 * 2
    assert len(summary["champions"]) == 3
    weightings = {"accuracy", "f1", "kappa", "auc", "uniform", "vote"}
    assert len(summary["ensembles"]) == (3 + 1) * len(weightings) + 1  # + scenarios/greedy
    assert {e["weighting"] for e in summary["ensembles"]} == weightings | {"greedy"}
    assert sorted({e["kind"] for e in summary["ensembles"]}) == ["inter", "intra", "scenarios"]
    withheld = summary["evaluation"]["intervals_withheld"]  # this tiny cohort: one ALL cluster on the test side
    for entry in summary["single_models"] + summary["champions"] + summary["ensembles"]:
        metrics = entry["metrics"]
        for name in METRIC_NAMES:
            assert isinstance(metrics[name], float), (entry["name"], name)
            if withheld:
                assert name not in metrics["ci"]  # no cluster interval over one cluster
                continue
            lo, hi = metrics["ci"][name]
            assert lo <= metrics[name] + 1e-9 and metrics[name] <= hi + 1e-9
    for ens in summary["ensembles"]:
        assert sum(ens["weights"]) == pytest.approx(1.0)
        assert len(ens["members"]) == len(ens["weights"]) == (2 if ens["kind"] == "inter" else 3)
    greedy = next(e for e in summary["ensembles"] if e["kind"] == "scenarios")
    assert greedy["members"] == ["lr=0.01", "lr=0.003", "lr=0.001"] and sum(greedy["scores"]) == 25
    # the demo's split keeps subjects apart, so the statistics run over the test subjects
    stats = summary["evaluation"]
    assert stats["unit"] == "subject" and stats["n_subjects"] >= 2
    if stats["intervals_withheld"]:
        assert f"a single cluster among the {stats['n_subjects']} test subjects" in stats["interval_method"]
    else:
        assert f"over {stats['n_subjects']} test subjects" in stats["interval_method"]
    intra = [e for e in summary["ensembles"] if e["kind"] == "intra"]
    assert sorted(intra[0]["members"]) == sorted(c["name"] for c in summary["champions"])
    assert all(r["p_holm"] >= r["p"] for r in summary["comparisons"]["best_single_vs_ensembles"])
    assert {(r["test"], r["metric"]) for r in summary["comparisons"]["scenarios"]} == {
        ("permutation", "accuracy"), ("permutation", "auc")}
    facts = summary["questions"]
    assert all(facts[q] for q in ("lr_effect", "wen_vs_single", "intra_best", "best_weighting"))
    assert facts["intra_best"]["best_intra"] == summary["best_ensembles"]["intra"]
    assert facts["wen_vs_single"]["best_single"] == summary["best_single"]
    assert summary["selection"]["test_set_selection"] is False
    assert "no leakage" in summary["split"]["leakage_summary"]


def test_tiny_cohort_warns_in_summary_and_report(finished_run):
    """A deliberately tiny cohort (about 2 subjects per class on the test side): the statistics say
    they cannot be trusted, in summary.json, next to the intervals and in the answers."""
    summary = json.loads(RunFolder(finished_run).summary_path.read_text())
    stats = summary["evaluation"]
    per_class = stats["clusters_per_class"]
    assert min(per_class.values()) < stats["min_clusters"] == 6
    few = next(w for w in stats["warnings"] if w["kind"] in ("few_clusters", "one_cluster"))
    assert few["consequence"] and few["count"] == min(per_class.values())
    html = RunFolder(finished_run).report_html.read_text()
    assert "STATISTICS WARNING" in html and few["what"] in html
    assert "! few clusters" in html or "! one cluster" in html  # beside the affected intervals
    answers = html[html.index('id="questions"'):html.index('id="questions"') + 20000]
    assert "Caution: " + few["what"] in answers


def test_subject_level_results_on_the_test_subjects(finished_run):
    summary = json.loads(RunFolder(finished_run).summary_path.read_text())
    levels = summary["subject_level"]
    assert levels and levels[0]["model"] == summary["best_single"]
    first = levels[0]
    assert first["n_subjects"] == summary["evaluation"]["n_subjects"] == len(first["rows"])
    assert sum(r["n_cells"] for r in first["rows"]) == summary["evaluation"]["n_test"]
    called = [r["predicted"] == r["label"] for r in first["rows"]]
    assert first["accuracy"] == pytest.approx(sum(called) / len(called))
    html = RunFolder(finished_run).report_html.read_text()
    assert 'id="subjects"' in html and "Patient-level results" in html


def test_run_folder_says_what_happened(finished_run, synth_root):
    from allwen.evaluation.results import LeakageRow, load_summary
    from allwen.io import file_sha256
    from allwen.runfolder import RunFolder

    folder = RunFolder(finished_run)
    cfg = load_config("demo", tiny_args(synth_root / "training_data"))
    saved = folder.load_config()  # config.yaml: the config the run was made with (its pretrained tag resolved)
    assert saved.model_dump(exclude={"model"}) == cfg.model_dump(exclude={"model"})
    assert saved.model.backbone == cfg.model.backbone
    status = json.loads(folder.status_path.read_text())
    assert status["state"] == "finished" and status["units"] == 6
    assert status["files"] == {"config.yaml": file_sha256(folder.config_path),
                               "report/summary.json": file_sha256(folder.summary_path)}
    audit = json.loads(folder.audit_path.read_text())
    split = pd.read_csv(folder.split_csv, keep_default_na=False)
    assert audit["n_images"] - len(audit["unreadable"]) == len(split) == len(set(split["path"]))
    assert sorted(split["label"].unique()) == sorted(audit["classes"])
    summary = load_summary(finished_run)
    leakage = [LeakageRow(**row) for row in folder.leakage()]
    assert leakage == summary.split.leakage and not any(r.leaks for r in leakage)
    assert (split["fold_0"] == "test").sum() == summary.split.n_test == summary.evaluation.n_test
    report = folder.report_md.read_text()
    best = summary.model(summary.best_single)
    assert f"allwen report: {summary.name}" in report and f"| {best.name} |" in report
    assert f"{best.metrics.accuracy:.3f}" in report
    metrics = pd.read_csv(RunFolder(finished_run).metrics_csv)
    assert len(metrics) == 6 + 3 + 24 + 1
    html = RunFolder(finished_run).report_html.read_text()
    for section in ("questions", "summary", "data", "split", "single-models", "champions", "ensembles", "tests", "roc",
                    "confusion", "curves"):
        assert f'id="{section}"' in html


def _results(run) -> dict:
    """summary.json without its timestamp: every number and name evaluation recorded."""
    summary = json.loads(RunFolder(run).summary_path.read_text())
    summary.pop("created")
    return summary


def _report_text(run) -> str:
    """report.md without the line that says when it was made."""
    return "\n".join(line for line in RunFolder(run).report_md.read_text().splitlines() if "created " not in line)


def test_rerun_resumes_and_changes_nothing(finished_run, synth_root):
    cfg = load_config("demo", tiny_args(synth_root / "training_data"))
    units = [u.info_path for u in RunFolder(finished_run).units_on_disk() if u.done]
    before = {p: p.stat().st_mtime_ns for p in units}
    results, metrics = _results(finished_run), RunFolder(finished_run).metrics_csv.read_text()
    result = run_pipeline(cfg, finished_run, quiet=True)
    assert {p: p.stat().st_mtime_ns for p in units} == before
    assert _results(finished_run) == results  # the same numbers and choices, not just the same files
    assert RunFolder(finished_run).metrics_csv.read_text() == metrics
    assert result.summary.default_export == results["default_export"]


def test_speed_and_logging_keys_may_change_on_resume(finished_run, synth_root):
    cfg = load_config("demo", tiny_args(synth_root / "training_data") + [
        "data.num_workers=1", "train.logger=tensorboard", "data.decode_cache=false", "train.eval_batch_size=7"])
    units = [u.info_path for u in RunFolder(finished_run).units_on_disk() if u.done]
    before = {p: p.stat().st_mtime_ns for p in units}
    run_pipeline(cfg, finished_run, quiet=True)  # resumes (nothing left to train), no refusal
    assert {p: p.stat().st_mtime_ns for p in units} == before
    run_pipeline(load_config("demo", tiny_args(synth_root / "training_data")), finished_run, quiet=True)


def test_another_config_never_overwrites_a_run(finished_run, synth_root):
    cfg = load_config("demo", tiny_args(synth_root / "training_data") + ["train.lr=0.5"])
    with pytest.raises(PipelineError, match="another config.*train.lr"):
        run_pipeline(cfg, finished_run, quiet=True)


def test_report_rebuilds_from_saved_predictions(finished_run):
    results, metrics = _results(finished_run), RunFolder(finished_run).metrics_csv.read_text()
    markdown = _report_text(finished_run)
    RunFolder(finished_run).report_html.unlink()
    RunFolder(finished_run).summary_path.unlink()
    assert rebuild_report(finished_run) == RunFolder(finished_run).report_html
    assert _results(finished_run) == results  # every number recomputed from the saved predictions alone
    assert RunFolder(finished_run).metrics_csv.read_text() == metrics
    assert _report_text(finished_run) == markdown  # the same report, word for word (but its date)
    page = RunFolder(finished_run).report_html.read_text()
    best = results["best_single"]
    accuracy = next(m for m in results["single_models"] if m["name"] == best)["metrics"]["accuracy"]
    assert best in page and f"{accuracy:.3f}" in page
    result = runner.invoke(app, ["report", str(finished_run)])
    assert result.exit_code == 0, result.output
    assert _results(finished_run) == results


def test_cli_rejects_bad_config_with_the_key_named(tmp_path):
    result = runner.invoke(app, ["run", "demo", "--out", str(tmp_path / "x"), "--set", "train.optimiser=adam"])
    assert result.exit_code == 2
    assert "train.optimiser: unknown key" in result.output


def test_a_failed_first_start_does_not_block_the_folder(synth_root, tmp_path):
    out = tmp_path / "r"
    bad = load_config("demo", tiny_args(synth_root / "nope"))
    with pytest.raises(ValueError, match="no such file"):
        run_pipeline(bad, out, quiet=True)
    assert not RunFolder(out).config_path.exists()
    # a run that split but trained nothing may take a corrected config
    from allwen.pipeline import prepare_run

    prepare_run(load_config("demo", tiny_args(synth_root / "training_data")), out)
    fixed = load_config("demo", tiny_args(synth_root / "training_data") + ["split.folds=3"])
    prepared = prepare_run(fixed, out)
    assert prepared.split.n_folds == 3


def test_evaluation_refuses_an_unfinished_grid(finished_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    (RunFolder(copy).unit("lr=0.003", 1).info_path).unlink()
    with pytest.raises(PipelineError, match="5 of 6 units are finished.*lr=0.003/fold_1"):
        rebuild_report(copy)


def test_headline_quotes_the_summary(finished_run):
    summary = json.loads(RunFolder(finished_run).summary_path.read_text())
    result = runner.invoke(app, ["report", str(finished_run), "--headline"])
    assert result.exit_code == 0, result.output
    best = next(s for s in summary["single_models"] if s["name"] == summary["best_single"])
    assert f"| best single model (by validation accuracy) | {summary['best_single']} |" in result.output
    ci = best["metrics"]["ci"].get("accuracy")
    assert (f"{best['metrics']['accuracy']:.3f} [{ci[0]:.3f}" if ci else f"{best['metrics']['accuracy']:.3f}") in result.output
    from allwen.evaluation.results import load_summary
    from allwen.report.questions import answer_questions

    assert all(q.answer in result.output for q in answer_questions(load_summary(finished_run)))


def test_compare_puts_two_protocols_side_by_side(tmp_path):
    """``allwen compare`` on a subject-grouped and an image-level run of the same images; the runs hold
    synthetic predictions (``write_synthetic_run``): the comparison is tested here, not training."""
    from allwen.evaluation.synthetic import write_synthetic_run

    finished_run, image_level = tmp_path / "subject", tmp_path / "image"
    shape = dict(n_test=120, n_test_subjects=8, n_pool=240, n_pool_subjects=12, bootstrap=100, lrs=(0.01, 0.003, 0.001),
                 folds=2)
    write_synthetic_run(finished_run, **shape)
    write_synthetic_run(image_level, subjects=False, overrides=["split.group_by=image", "split.duplicate_aware=false"],
                        **shape)
    for run in (finished_run, image_level):
        rebuild_report(run)
    result = runner.invoke(app, ["compare", str(finished_run), str(image_level), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["label"] for r in data["runs"]] == ["holdout+2fold/subject", "holdout+2fold/image"]
    subject_run = json.loads(RunFolder(finished_run).summary_path.read_text())
    image_run = json.loads(RunFolder(image_level).summary_path.read_text())
    best = next(r for r in data["rows"] if r["key"] == "best single model")
    gap = best["gaps"]["accuracy"][0]["value"]
    accuracy = {s["name"]: s["metrics"]["accuracy"] for s in subject_run["single_models"]}
    accuracy_image = {s["name"]: s["metrics"]["accuracy"] for s in image_run["single_models"]}
    assert gap == pytest.approx(accuracy_image[image_run["best_single"]] - accuracy[subject_run["best_single"]])
    # best single, best of 3 kinds, default export, champions, units, ensembles
    assert len(data["rows"]) == 1 + 3 + 1 + 3 + 6 + 25
    assert best["names"] == [subject_run["best_single"], image_run["best_single"]]
    page = (tmp_path / "cmp" / "index.html").read_text()
    assert "Gap of the best single model" in page and f"{gap:+.3f}" in page
    # each run's own model beside its numbers, and a link back to each run's report
    assert f"subject: {subject_run['best_single']}" in page and f"image: {image_run['best_single']}" in page
    assert [r["protocol"] for r in data["runs"]] == ["subject", "image"]
    assert "Accuracy (subject)" in page and "Accuracy gap (image - subject)" in page and "run 1" not in page
    for run in (finished_run, image_level):
        href = os.path.relpath(RunFolder(run).report_html, tmp_path / "cmp")
        assert f'href="{href}"' in page and (tmp_path / "cmp" / href).resolve().is_file()
    other_data = tmp_path / "other"
    import shutil

    shutil.copytree(image_level, other_data)
    split_csv = RunFolder(other_data).split_csv
    frame = pd.read_csv(split_csv, dtype=str, keep_default_na=False)
    frame.loc[0, "sha256"] = "0" * 64  # one image differs: another dataset
    frame.to_csv(split_csv, index=False)
    result = runner.invoke(app, ["compare", str(finished_run), str(other_data), "--out", str(tmp_path / "cmp2")])
    assert result.exit_code == 2 and "other data" in result.output



def test_a_resume_of_a_finished_run_hashes_no_image(finished_run, synth_root, monkeypatch):
    """Recorded content hashes (RUN/data/hashes.json) are reused for files whose path, size and
    mtime are unchanged; only a changed file is hashed again (issue 20 item 4, issue 16)."""
    import os

    from allwen.data import sources

    hashed: list[str] = []
    real = sources.file_sha256
    monkeypatch.setattr(sources, "file_sha256", lambda path: hashed.append(str(path)) or real(path))
    recorded = json.loads(RunFolder(finished_run).hashes_path.read_text())["files"]
    split = pd.read_csv(RunFolder(finished_run).split_csv, keep_default_na=False)
    for path, digest in zip(split["path"], split["sha256"]):  # the split's hashes are the recorded ones
        assert recorded[path][-1] == digest
    cfg = load_config("demo", tiny_args(synth_root / "training_data"))
    run_pipeline(cfg, finished_run, quiet=True)
    rebuild_report(finished_run)
    assert hashed == []
    some = sorted((synth_root / "training_data").rglob("*.bmp"))[0]
    stat = some.stat()
    os.utime(some, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touched: hashed again
    try:
        run_pipeline(cfg, finished_run, quiet=True)
    finally:
        os.utime(some, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert hashed == [str(some)]

"""The results ledger (tools/ledger.py): records, extractors, placeholders, and the pages that quote it.

The page tests are the point: docs/results.md, docs/speed.md and the README may quote a measured
number only through the ledger, so a number typed by hand (or left from an older run) fails here.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from allwen.runfolder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("allwen_ledger", ROOT / "tools" / "ledger.py")
ledger = importlib.util.module_from_spec(spec)
sys.modules.setdefault("allwen_ledger", ledger)
spec.loader.exec_module(ledger)

PAGES = ["docs/results.md", "docs/speed.md", "README.md"]
# prose facts that look measured but are not (inputs such as config values go in `code` instead)
#: a Python version; the confidence level of every interval; prediction-set levels (settings of
#: `--conformal-levels`) and the goal thresholds the sets section measures itself against
ALLOWED = frozenset({"3.11", "95%", "90%", "98%", "99%", "0.03", "2%",
                     # the speed goals the pages measure against (issue text: 1.25x, 0.95 / 5%, 2.5x,
                     # under 10%, within 1e-6) and the benchmark sizes (images per scale step)
                     "1.25x", "0.95", "5%", "2.5x", "10%", "1e-6",
                     "1,000", "4,000", "8,000", "12,528", "100,000"})
# sections of docs/speed.md whose numbers their owner converts separately (benchmarks/scale.py,
# contention.py, the estimate, GPU, Ray): checked once they carry placeholders
NOT_YET: dict[str, list[str]] = {}  # sections a page may keep out of the checks (none now)


def _without_sections(text: str, headings: list[str]) -> str:
    """TEXT with each named level-2 section blanked (line numbers kept)."""
    lines = text.splitlines()
    skip = False
    for i, line in enumerate(lines):
        if line.startswith("## "):
            skip = any(line.startswith(h) for h in headings)
        if skip:
            lines[i] = ""
    return "\n".join(lines)


def _record(name: str = "r", **numbers) -> dict:
    return {"name": name, "command": "true", "commit": "abc1234def", "date": "2026-12-07T03:00:00+00:00",
            "finished": "2026-12-07T03:05:36+00:00", "wall_s": 336.2,
            "load": {"start": [1.0, 1.2, 1.3], "end": [1.6, 1.3, 1.3], "samples_1min": [1.2, 1.4]},
            "machine": {"cpus": 2, "platform": "Linux"}, "numbers": numbers}


# ------------------------------------------------------------------ the checker of pages


@pytest.mark.parametrize("page", PAGES)
def test_pages_quote_no_measured_number_outside_the_ledger(page):
    text = _without_sections((ROOT / page).read_text(), NOT_YET.get(page, []))
    stray = ledger.stray_numbers(text, ALLOWED)
    assert not stray, (f"{page} quotes numbers the ledger does not hold (use {{{{ledger NAME PATH FORMAT}}}}, "
                       "or a README block):\n" + "\n".join(f"  line {n}: {tok}" for n, tok in stray))


@pytest.mark.parametrize("page", ["docs/results.md", "docs/speed.md", "docs/user-guide/getting-started.md"])
def test_every_placeholder_of_the_pages_resolves(page):
    ledger.render((ROOT / page).read_text(), where=page)  # raises, naming page, record and path


@pytest.mark.parametrize("page", ["docs/results.md", "docs/speed.md"])
def test_result_pages_read_as_results_not_as_a_changelog(page):
    text = _without_sections((ROOT / page).read_text(), NOT_YET.get(page, []))
    words = re.compile(r"\b(this change|since this change|before issue|second round|the earlier protocol|"
                       r"last session|issue \d+)\b", re.I)
    hits = [f"{page}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1) if words.search(line)]
    assert not hits, "say what a number is, not which change made it:\n" + "\n".join(hits)


def test_readme_blocks_are_up_to_date_with_the_ledger():
    text = (ROOT / "README.md").read_text()
    assert "<!-- ledger:begin" in text, "the README's numbers live in ledger blocks"
    assert ledger.render_blocks(text) == text, "run `python tools/ledger.py readme`"


@pytest.mark.parametrize("good", [
    "5 folds x 3 learning rates at 224 px, seed 0, 2026-12-07",
    "scores {{ledger tal4-cv roles.default_export.accuracy .3f}} on 84 pseudo-patients",
    "a command `allwen run x --set train.lr=0.001 --tol 1e-4` and ```\n0.983 [0.972, 0.994]\n```",
    "<!-- ledger:begin\n{{ledger r x .3f}}\n-->\n0.983\n<!-- ledger:end -->",
    "Python 3.11 is allowed, [a link](speed.md#1.5-section) and http://127.0.0.1:8000/ too",
])
def test_checker_passes_counts_code_placeholders_and_blocks(good):
    assert ledger.stray_numbers(good, ALLOWED) == []


@pytest.mark.parametrize(("bad", "token"), [
    ("accuracy 0.983 [0.972, 0.994]", "0.983"),
    ("2,612 images", "2,612"),
    ("20% of the images", "20%"),
    ("it took 5 min 36 s", "5 min 36 s"),
    ("a wall time of 336 s", "336 s"),
    ("**9.7x** faster", "9.7x"),
    ("6x faster", "6x"),
    ("largest difference 1.3e-5", "1.3e-5"),
    ("{{ledger r x}} beside a typed 0.5", "0.5"),
])
def test_checker_finds_measured_numbers_typed_by_hand(bad, token):
    assert token in [t for _, t in ledger.stray_numbers(bad, ALLOWED)]


# ------------------------------------------------------------------ placeholders


def test_placeholders_render_numbers_intervals_and_metadata(tmp_path):
    record = _record(acc={"value": 0.98312, "ci": [0.9721, 0.99449]}, n=2612, rows=[{"x": 0.5}, {"x": 0.25}],
                     gap={"value": 0.016, "ci": [-0.01, 0.04]})
    ledger.write_record("r", record, tmp_path)
    text = ("{{ledger r acc .3f}} | {{ledger r n ,}} | {{ledger r rows.1.x .2f}} | {{ledger r gap +.3f}} | "
            "{{ledger r meta.wall_s min_s}} | {{ledger r meta.date day}} | {{ledger r meta load}} | "
            "{{ledger r meta.commit commit}} | {{!ledger NAME PATH}}")
    assert ledger.render(text, "page.md", tmp_path) == (
        "0.983 [0.972, 0.994] | 2,612 | 0.25 | +0.016 [-0.010, +0.040] | 5 min 36 s | 2026-12-07 | 1.0-1.6 | "
        "abc1234 | {{ledger NAME PATH}}")


def test_a_missing_record_or_path_fails_naming_page_record_and_path(tmp_path):
    ledger.write_record("r", _record(acc=0.9), tmp_path)
    with pytest.raises(ledger.LedgerError, match=r"page\.md.*nope.*no record results/nope\.json"):
        ledger.render("{{ledger nope acc}}", "page.md", tmp_path)
    with pytest.raises(ledger.LedgerError, match=r"page\.md.*results/r\.json has no roles\.best"):
        ledger.render("{{ledger r roles.best .3f}}", "page.md", tmp_path)
    with pytest.raises(ledger.LedgerError, match="not a number"):
        ledger.render("{{ledger r meta.load .3f}}", "page.md", tmp_path)


def test_a_record_of_a_dirty_tree_says_so_beside_its_commit(tmp_path):
    ledger.write_record("d", {**_record(), "dirty": True}, tmp_path)
    assert ledger.render("{{ledger d meta.commit commit}}", "p", tmp_path) == "abc1234 (with uncommitted changes)"


def test_a_stand_in_record_says_so_on_the_page(tmp_path):
    ledger.write_record("s", {**_record(), "stand_in": "typed from a note"}, tmp_path)
    assert ledger.render("{{ledger s meta.wall_s min_s}}, {{ledger s meta load}}", "p", tmp_path) == \
        "5 min 36 s (stand-in), 1.0-1.6 (stand-in)"


def test_the_readme_blocks_are_rewritten_from_their_templates(tmp_path):
    ledger.write_record("r", _record(acc=0.98312), tmp_path)
    old = "intro 1\n<!-- ledger:begin\nscores {{ledger r acc .3f}}\n-->\nscores 0.5\n<!-- ledger:end -->\nend\n"
    new = ledger.render_blocks(old, results=tmp_path)
    assert new == "intro 1\n<!-- ledger:begin\nscores {{ledger r acc .3f}}\n-->\nscores 0.983\n<!-- ledger:end -->\nend\n"
    assert ledger.render_blocks(new, results=tmp_path) == new


def test_the_mkdocs_hook_renders_and_fails_the_build_on_a_missing_record(monkeypatch, tmp_path):
    pytest.importorskip("mkdocs")
    from mkdocs.exceptions import PluginError

    hspec = importlib.util.spec_from_file_location("allwen_mkdocs_hooks", ROOT / "tools" / "mkdocs_hooks.py")
    hooks = importlib.util.module_from_spec(hspec)
    hspec.loader.exec_module(hooks)
    ledger.write_record("r", _record(acc=0.98312), tmp_path)
    monkeypatch.setattr(hooks._ledger(), "RESULTS", tmp_path)

    class Page:
        class file:  # noqa: N801 - MkDocs' attribute name
            src_path = "results.md"

    assert hooks.on_page_markdown("acc {{ledger r acc .3f}}", Page, None, None) == "acc 0.983"
    with pytest.raises(PluginError, match=r"docs/results\.md.*results/gone\.json"):
        hooks.on_page_markdown("{{ledger gone acc}}", Page, None, None)


# ------------------------------------------------------------------ records and extractors


def test_run_writes_the_record_with_command_commit_load_and_numbers(tmp_path):
    code = "import json; print('noise'); print(json.dumps({'ratio': 6.4, 'images_per_s': {'a': 1.0}}))"
    record = ledger.run_command("bench", [sys.executable, "-c", code], extract="json", results=tmp_path,
                                keep=["ratio"])
    on_disk = json.loads((tmp_path / "bench.json").read_text())
    assert on_disk == record and on_disk["numbers"] == {"ratio": 6.4}
    assert on_disk["commit"] and isinstance(on_disk["dirty"], bool) and on_disk["returncode"] == 0
    assert len(on_disk["load"]["start"]) == 3 and len(on_disk["load"]["end"]) == 3 and on_disk["wall_s"] >= 0
    assert on_disk["machine"]["cpus"] >= 1 and on_disk["date"] <= on_disk["finished"]
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temporary left


def test_run_records_the_cpu_seconds_of_the_command_and_its_children(tmp_path):
    busy = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"
    code = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {busy!r}])"  # in a grandchild
    record = ledger.run_command("busy", [sys.executable, "-c", code], results=tmp_path)
    assert 0.4 <= record["cpu_s"]["user"] + record["cpu_s"]["system"] <= record["wall_s"] * 2 + 0.5


def test_run_of_a_failing_command_writes_nothing(tmp_path):
    with pytest.raises(ledger.LedgerError, match="exited with 3"):
        ledger.run_command("bad", [sys.executable, "-c", "raise SystemExit(3)"], results=tmp_path)
    assert not (tmp_path / "bad.json").exists()


def test_pytest_counts_from_an_xdist_summary_have_no_deselected_number():
    # pytest-xdist (make test) does not print the deselected count: no number rather than a wrong 0
    line = "============ 1077 passed, 1 skipped, 1 warning in 306.57s (0:05:06) ============"
    assert ledger.extract_pytest(line) == {"passed": 1077, "failed": 0, "skipped": 1}


def test_import_takes_the_wrappers_metadata_and_extracts_pytest_counts(tmp_path):
    meta = {"command": "make test", "cwd": str(tmp_path), "commit": "217d077", "started": "2026-12-07T03:00:00+00:00",
            "finished": "2026-12-07T03:08:26+00:00", "wall_s": 506.0, "returncode": 0,
            "load_start": ["1.40", "1.3", "1.2"], "load_end": ["1.6", "1.5", "1.3"],
            "load_1min_samples_every_30s": [1.5], "machine": {"cpus": 2, "platform": "Linux"}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "test.log").write_text("...\n= 963 passed, 1 skipped, 28 deselected in 506.31s (0:08:26) =\n")
    record = ledger.import_meta("make-test", tmp_path / "meta.json", "pytest", "test.log", results=tmp_path / "r")
    assert record["numbers"] == {"passed": 963, "failed": 0, "skipped": 1, "deselected": 28}
    assert record["load"]["start"] == [1.4, 1.3, 1.2] and record["date"] == meta["started"]
    assert ledger.render("{{ledger make-test meta.wall_s min_s}}, {{ledger make-test passed}} passed", "p",
                         tmp_path / "r") == "8 min 26 s, 963 passed"
    assert "cpu_s" not in record  # no time report given: no CPU seconds made up


def test_import_reads_the_cpu_seconds_from_a_gnu_time_report(tmp_path):
    meta = {"command": "make test", "cwd": str(tmp_path), "commit": "c524956", "started": "2026-12-07T06:51:00+00:00",
            "finished": "2026-12-07T06:56:10+00:00", "wall_s": 310.0, "returncode": 0, "load_start": ["1", "1", "1"],
            "load_end": ["2", "2", "2"], "machine": {"cpus": 2, "platform": "Linux"}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "time.txt").write_text("\tCommand being timed: \"pytest\"\n\tUser time (seconds): 489.35\n"
                                       "\tSystem time (seconds): 76.42\n\tPercent of CPU this job got: 182%\n")
    record = ledger.import_meta("t", tmp_path / "meta.json", results=tmp_path / "r", time_report=tmp_path / "time.txt")
    assert record["cpu_s"] == {"user": 489.35, "system": 76.42}
    (tmp_path / "time.txt").write_text("real 1.0\n")
    with pytest.raises(ledger.LedgerError, match="/usr/bin/time -v"):
        ledger.import_meta("t", tmp_path / "meta.json", results=tmp_path / "r", time_report=tmp_path / "time.txt")


def test_run_extractor_keeps_the_headline_roles_of_a_run(tmp_path):
    """On a synthetic run (real evaluation, no training): the roles pages quote, with their intervals."""
    from allwen.evaluation.results import load_summary
    from allwen.evaluation.synthetic import write_synthetic_run
    from allwen.pipeline import rebuild_report

    run = tmp_path / "run"
    write_synthetic_run(run, n_test=40, n_test_subjects=8, n_pool=80, n_pool_subjects=12, lrs=(1e-2, 1e-3),
                        folds=2, bootstrap=50)
    rebuild_report(run)
    numbers = ledger.extract_numbers("run", str(run))
    summary = load_summary(run)
    export = next(m for m in [*summary.single_models, *summary.champions, *summary.ensembles]
                  if m.name == summary.default_export)
    assert numbers["roles"]["default_export"]["name"] == summary.default_export
    assert numbers["roles"]["default_export"]["accuracy"] == {"value": export.metrics.accuracy,
                                                              "ci": list(export.metrics.ci["accuracy"])}
    assert numbers["split"]["n_test"] == 40 and numbers["evaluation"]["n_subjects"] == summary.evaluation.n_subjects
    assert set(numbers["champions"]) == {"lr_0_01", "lr_0_001"}  # dotted paths can name them
    assert len(json.dumps(numbers)) < len(RunFolder(run).summary_path.read_text()) / 5  # small, not a copy
    with pytest.raises(ledger.LedgerError, match="needs --source"):
        ledger.extract_numbers("run", None)


def test_the_command_line_runs_what_follows_the_double_dash(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ledger, "RESULTS", tmp_path)
    code = "import json; print(json.dumps({'ratio': 2.5}))"
    assert ledger.main(["run", "cli", "--extract", "json", "--", sys.executable, "-c", code]) == 0
    assert json.loads((tmp_path / "cli.json").read_text())["numbers"] == {"ratio": 2.5}
    assert ledger.main(["run", "nothing", "--extract", "run", "--source", "missing", "--", "true"]) == 2
    assert "needs --source PATH that exists" in capsys.readouterr().err
    ledger.write_record("typed", {**_record("typed"), "stand_in": "from a note"}, tmp_path)
    assert ledger.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["cli", "typed"] and "STAND-IN: from a note" in lines[1]


def test_compare_extractor_keeps_each_headline_row_and_its_gap(tmp_path):
    """Two synthetic runs on the same images, compared as `allwen compare` does: rows by slug, the gap."""
    from allwen.evaluation.compare import compare_runs
    from allwen.evaluation.synthetic import write_synthetic_run
    from allwen.pipeline import rebuild_report

    small = dict(n_test=24, n_test_subjects=6, n_pool=48, n_pool_subjects=8, lrs=(1e-2, 1e-3), folds=2, bootstrap=20)
    for name, seed in (("a", 0), ("b", 1)):
        write_synthetic_run(tmp_path / name, seed=seed, **small)
        rebuild_report(tmp_path / name)
    comparison = compare_runs([tmp_path / "a", tmp_path / "b"])
    (tmp_path / "cmp").mkdir()
    (tmp_path / "cmp" / "compare.json").write_text(comparison.model_dump_json())
    numbers = ledger.extract_numbers("compare", str(tmp_path / "cmp"))
    best = next(r for r in comparison.rows if r.key == "best single model")
    row = numbers["rows"]["best_single_model"]
    assert row["names"] == best.names
    assert row["runs"][1]["accuracy"]["value"] - row["runs"][0]["accuracy"]["value"] == \
        pytest.approx(row["gap"]["accuracy"]["value"])
    assert "champion_of_lr_0_01" in numbers["rows"] and numbers["n_rows"] == len(numbers["rows"])
    gaps = [r["gap"]["accuracy"]["value"] for r in numbers["rows"].values()]
    assert numbers["accuracy_gap_range"] == [min(gaps), max(gaps)]

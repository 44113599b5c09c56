"""Report pages a person reads: cells named in words, dots over categories, patients named for what
they are, compare columns by protocol, and nothing wider than a 1280-px window."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from allwen.evaluation.results import load_summary
from allwen.evaluation.synthetic import MULTI_CLASSES, write_synthetic_run
from allwen.pipeline import rebuild_report
from allwen.report import charts
from allwen.report.format import fmt_settings, settings_words
from allwen.runfolder import RunFolder

WEIGHTS = "/abs/weights/{0}/{0}.safetensors"
MODELS = ("scenarios={model: [" + ", ".join(f"{{backbone: {b}, weights: {WEIGHTS.format(b)}}}"
                                             for b in ("mobilenetv2_100", "tf_efficientnet_lite0")) + "]}")
SMALL = dict(n_test=120, n_test_subjects=8, n_pool=240, n_pool_subjects=12, bootstrap=100)


def test_cells_in_words_without_dicts_or_paths():
    cells = [{"model": {"backbone": b, "weights": WEIGHTS.format(b), "head": "sigmoid", "dropout": 0.0}}
             for b in ("mobilenetv2_100", "tf_efficientnet_lite0")]
    assert settings_words(cells) == ["backbone: mobilenetv2_100", "backbone: tf_efficientnet_lite0"]
    assert settings_words(cells, keys=False) == ["mobilenetv2_100", "tf_efficientnet_lite0"]
    assert fmt_settings({"train.batch_size": 16, "train.stage2.epochs": 2}) == "batch_size: 16, epochs: 2"
    assert fmt_settings({"model.weights": "/a/b/m.safetensors"}) == "weights: m.safetensors"


def test_categories_get_dots_and_room_for_their_labels():
    names = ["tf_efficientnet_lite0", "mobilenetv2_100", "tf_efficientnetv2_m"]
    chart = charts.lines("acc", names, [("test", [0.9, 0.8, 0.85])], "model", "acc")
    assert chart.kind == "dots"
    xs = [x for x, _ in chart.x_ticks]
    assert min(b - a for a, b in zip(xs, xs[1:])) >= 6 * max(map(len, names))  # 10-px labels do not overlap
    assert charts.lines("acc", [0.01, 0.001], [("test", [0.9, 0.8])], "lr", "acc").kind == "lines"


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory) -> Path:
    """taleqani_4class's grid shape: model sections with weight files, four classes."""
    run = tmp_path_factory.mktemp("grid") / "run"
    write_synthetic_run(run, lrs=(1e-3,), folds=3, classes=MULTI_CLASSES, overrides=[MODELS], **SMALL)
    rebuild_report(run)
    return run


def test_grid_section_and_chart_read_in_words(grid_run):
    page = RunFolder(grid_run).report_html.read_text(encoding="utf-8")
    grid = page[page.index('id="grid"'):]
    grid = grid[:grid.index("</details>") if "</details>" in grid else len(grid)]
    assert "backbone: mobilenetv2_100" in grid and "backbone: tf_efficientnet_lite0" in grid
    assert "/abs/weights" not in page and "{&#39;" not in page and "{'" not in page
    chart = (RunFolder(grid_run).report_figures_dir / "grid_test_accuracy.svg").read_text(encoding="utf-8")
    assert "<polyline" not in chart and chart.count("<circle") == 2 and ">tf_efficientnet_lite0<" in chart


def test_patients_named_for_what_they_are(grid_run):
    from allwen.report.build import report_document

    summary = load_summary(grid_run)
    assert summary.subject_level  # the synthetic run has subject ids
    def patient_answer() -> str:
        doc = report_document(grid_run, summary)
        return next(b.text for b in doc.answers.blocks if b.kind == "para" and "cells' mean probability" in b.text)

    answer = patient_answer()
    assert "test subjects right" in answer and "pseudo-patients" not in answer and "also have cells" not in answer
    summary.split.grouping.pseudo_patients = "sequence"  # Taleqani: no subject ids
    summary.config.split.group_by = "image"  # and an image-level split
    answer = patient_answer()
    assert "test pseudo-patients right" in answer and "subject" not in answer
    assert "The split was image-level: these pseudo-patients also have cells in the training" in answer


@pytest.fixture(scope="module")
def demo_like(tmp_path_factory) -> tuple[Path, Path]:
    """Experiment A's shape (3 learning rates x 5 folds, ensembles) under both protocols, and their comparison."""
    from allwen.evaluation.compare import compare_runs
    from allwen.report.compare import write_comparison

    root = tmp_path_factory.mktemp("demo")
    write_synthetic_run(root / "run", **SMALL)
    write_synthetic_run(root / "run-image", subjects=False, overrides=["split.group_by=image"], **SMALL)
    for run in ("run", "run-image"):
        rebuild_report(root / run)
    page = write_comparison(compare_runs([root / "run", root / "run-image"]), root / "compare")
    return RunFolder(root / "run").report_html, page


def test_compare_columns_are_named_by_protocol(demo_like):
    page = demo_like[1].read_text(encoding="utf-8")
    assert "Accuracy (subject)" in page and "Accuracy (image)" in page and "Accuracy gap (image - subject)" in page
    assert not re.search(r"\brun [12]\b", page)


PAPER = ("paper={citation: 'A paper', split: image, selected_on: unstated, average: unstated, numbers: ["
         "{metric: accuracy, value: 0.0, where: abstract}, {metric: kappa, value: 0.0, where: Table 2}, "
         "{metric: auc, value: 0.0, where: Table 3}]}")


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory) -> Path:
    """A report with a paper block: one number inside the run's interval, one outside, one without an interval."""
    from allwen.evaluation.results import write_summary
    from allwen.report.build import build_report

    run = tmp_path_factory.mktemp("paper") / "run"
    write_synthetic_run(run, lrs=(1e-3,), folds=2, overrides=[PAPER], **SMALL)
    rebuild_report(run)
    summary = load_summary(run)
    within, outside, none = summary.paper_comparison
    assert outside.inside is False and within.low is not None
    within.paper, within.inside = (within.low + within.high) / 2, True
    none.low = none.high = none.inside = None
    write_summary(summary, run)
    build_report(run)
    return run


def test_paper_badges_say_within_in_green_and_outside_in_amber(paper_run):
    page = RunFolder(paper_run).report_html.read_text(encoding="utf-8")
    table = page[page.index("Paper inside the run&#39;s interval"):]
    rows = table[:table.index("</table>")].split("<tr>")[1:]
    assert [r.split("</td>")[0].removeprefix("<td>") for r in rows] == ["accuracy", "kappa", "auc"]
    assert '<span class="badge ok">within</span>' in rows[0] and '<span class="badge warn">outside</span>' in rows[1]
    assert "badge" not in rows[2]  # no interval: neither
    css = (Path(charts.__file__).parent / "templates" / "report.css").read_text(encoding="utf-8")
    assert re.search(r"\.badge\.warn \{ background: #b45309", css)
    md = RunFolder(paper_run).report_md.read_text(encoding="utf-8")
    assert "**yes** (within)" in md and "**no** (outside)" in md


# tools/screenshots.py holds the 1280-px checks; the docs' pictures of real reports pass the same ones
_spec = importlib.util.spec_from_file_location("screenshots", Path(__file__).parents[2] / "tools" / "screenshots.py")
screenshots = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(screenshots)


def test_pages_fit_a_1280_px_window(demo_like, grid_run, paper_run, chromium, launched):
    pages = {"report_demo_like": demo_like[0], "report_grid": RunFolder(grid_run).report_html,
             "compare_protocols": demo_like[1], "report_paper": RunFolder(paper_run).report_html}
    with launched(chromium) as browser:
        page = browser.new_page(viewport={"width": screenshots.WIDTH, "height": screenshots.HEIGHT})
        for name, path in pages.items():
            page.goto(path.resolve().as_uri())
            assert not screenshots.problems(page), name
            if name == "report_paper":
                colours = {b["text"]: b["background"] for b in page.evaluate(screenshots.BADGES)
                           if b["text"] in ("within", "outside")}
                assert colours == {"within": "rgb(5, 150, 105)", "outside": "rgb(180, 83, 9)"}
        page.set_content('<p>fits</p><div style="width: 1900px">too wide</div>')  # the check sees an overflow
        assert [b.split(" right")[0] for b in page.evaluate(screenshots.OVERFLOW)["bad"]] == ["DIV."]
        page.set_content('<table style="border-collapse: collapse"><tr><td><span class="badge" style="display: table; '
                         'padding: 0 6px">outside</span></td></tr></table>')
        # the old badge: a table box inherits border-collapse, which drops its padding
        assert screenshots.problems(page) == ["clipped badge: outside"]


@pytest.mark.slow  # a second browser and five copies of runs: 11 s at load 11; the checks above run by default
def test_the_screenshot_tool_pictures_each_page_at_1280_px(demo_like, grid_run, paper_run, chromium, tmp_path):
    """tools/screenshots.py on copies (the runs are not written to), as the docs' pictures are made."""
    from PIL import Image

    demo = demo_like[1].parent.parent  # run/, run-image/ and compare/, as `allwen demo` leaves them
    before = RunFolder(grid_run).report_html.stat().st_mtime_ns
    assert screenshots.main(["--demo", str(demo), "--grid", str(grid_run), "--paper", str(paper_run),
                             "--compare", str(demo / "run"), str(demo / "run-image"), "--out", str(tmp_path),
                             "--chromium", chromium]) == 0
    sizes = {p.stem: Image.open(p).size for p in tmp_path.glob("*.png")}
    assert set(sizes) == {"report_first_screen", "compare", "report_grid", "report_paper", "compare_protocols"}
    assert sizes["report_first_screen"] == sizes["compare"] == (screenshots.WIDTH, screenshots.HEIGHT)
    assert sizes["report_grid"][0] <= screenshots.WIDTH and sizes["report_grid"][1] > 200
    assert RunFolder(grid_run).report_html.stat().st_mtime_ns == before

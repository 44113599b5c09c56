"""Rendering blocks to HTML and Markdown: escaped, the same words in both, figures written and tidied."""

from __future__ import annotations

from allwen.report import render
from allwen.report.view import Cell, Row, Table, Text

TABLE = Table(["Model", "Accuracy"], [Row([Cell("a|b <x>", badge="winner"), Cell("0.900", sub="[0.8, 1.0]", numeric=True)],
                                          "best")], caption="Test set")


def _html(blocks) -> str:
    template = render._environment()[0].from_string(
        '{% import "blocks.html.j2" as b %}{% for x in blocks %}{{ b.block(x) }}{% endfor %}')
    return template.render(blocks=blocks)


def _md(blocks) -> str:
    template = render._environment()[1].from_string(
        '{% import "blocks.md.j2" as b %}{% for x in blocks %}{{ b.block(x) }}{% endfor %}')
    return template.render(blocks=blocks)


def test_a_table_in_html_is_escaped_and_scrolls_in_its_section():
    html = _html([TABLE, Text("5 < 6 & so on", "callout", "warn")])
    assert '<div class="scroll"><table><caption>Test set</caption>' in html
    assert '<tr class="best"><td>a|b &lt;x&gt; <span class="badge ok">winner</span></td>' in html
    assert '<td class="num">0.900 <span class="ci">[0.8, 1.0]</span></td>' in html
    assert '<div class="callout warn"><strong>Note:</strong> 5 &lt; 6 &amp; so on</div>' in html


def test_the_same_table_in_markdown_escapes_pipes_and_right_aligns_numbers():
    md = _md([TABLE])
    assert "*Test set*" in md and "| Model | Accuracy |" in md and "|---|---:|" in md
    assert "**a\\|b <x>** (winner)" in md and "0.900 [0.8, 1.0]" in md


def test_md_path_keeps_names_readable_but_links_safe():
    assert render.md_path("units/lr=0.01/fold_0/curves.png") == "units/lr=0.01/fold_0/curves.png"
    assert render.md_path("figures/a b[1].svg") == "figures/a%20b%5B1%5D.svg"


def test_figures_writes_charts_and_removes_what_it_no_longer_draws(tmp_path):
    figures = render.Figures(tmp_path, "figures")
    (tmp_path / "roc.svg").write_text("<svg/>")  # drawn by an earlier report
    chart = figures.chart("forest.svg", ["<svg>1</svg>", "<svg>2</svg>"], "Forest")
    assert chart.md_path == "figures/forest.svg" and chart.svg == "<svg>1</svg>\n<svg>2</svg>"
    standalone = (tmp_path / "forest.svg").read_text()
    assert standalone.count("<g transform=") == 2 and 'translate(440,0)' in standalone  # panels side by side
    assert figures.chart("coverage.svg", [], "Coverage").text == "Coverage: n/a (nothing to draw)."
    figures.remove_undrawn()
    assert (tmp_path / "forest.svg").exists() and not (tmp_path / "roc.svg").exists()


def test_utf8_whatever_the_locale(tmp_path, monkeypatch):
    monkeypatch.setenv("LC_ALL", "C")
    path = render.write_utf8(tmp_path / "r.md", "Größe µm")
    assert path.read_bytes() == "Größe µm".encode("utf-8")

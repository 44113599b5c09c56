"""Rendering: the view as HTML and Markdown (Jinja2 templates in ``templates/``), the metrics as
CSV, and the figures a report draws into its ``figures/`` folder.

Nothing here reads the results model except :func:`metrics_rows` (raw numbers for the CSV);
the rest takes the blocks of :mod:`allwen.report.view`.
"""

from __future__ import annotations

import csv
import io
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from allwen.evaluation.results import Summary
from allwen.io import atomic_write
from allwen.evaluation.metric_registry import headline_names
from allwen.report.format import NA
from allwen.report.view import Chart, Text

#: figures whose file is removed when a rebuilt report no longer draws them
FIGURE_NAMES = frozenset({"forest.svg", "roc.svg", "coverage.svg"})


def md_path(path: str) -> str:
    """Percent-encode what breaks a Markdown link (spaces, brackets) but keep names readable."""
    return quote(path, safe="/=,+@:")


class Figures:
    """The report's ``figures/`` folder: charts written as standalone SVG files (Markdown links
    them; HTML inlines them) and sample thumbnails; remembers what it drew."""

    rel = "figures"  # the folder relative to the report's Markdown and HTML files

    def __init__(self, folder: Path, rel: str | None = None) -> None:
        self.folder = Path(folder)
        self.rel = rel or self.rel
        self.drawn: set[str] = set()

    def chart(self, name: str, svgs: list[str], caption: str) -> Chart | Text:
        """Write ``figures/<name>`` (for Markdown) and return the chart block (inline in HTML)."""
        if not svgs:
            return Text(f"{caption}: {NA} (nothing to draw).")
        svg = "\n".join(svgs)
        if len(svgs) > 1:  # one standalone file holding every panel side by side
            svg = ('<svg xmlns="http://www.w3.org/2000/svg">' + "".join(
                f'<g transform="translate({i * 440},0)">{panel}</g>' for i, panel in enumerate(svgs)) + "</svg>")
        write_utf8(self.folder / name, svg)
        self.drawn.add(name)
        return Chart("\n".join(svgs), f"{self.rel}/{name}", caption)

    def thumbnail(self, source: Path, name: str, side: int = 96) -> Path | None:
        """A small PNG of a sample image as ``figures/<name>`` (None when the image is gone)."""
        from PIL import Image

        if not source.is_file():
            return None
        out = self.folder / name
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(source) as image:
            thumb = image.convert("RGB")
            thumb.thumbnail((side, side))
            atomic_write(out, lambda tmp: thumb.save(tmp, format="PNG"))
        return out

    def remove_undrawn(self) -> None:
        """Delete the figures this report could draw but did not (its summary no longer supports them)."""
        for name in FIGURE_NAMES - self.drawn:
            (self.folder / name).unlink(missing_ok=True)


@lru_cache(maxsize=1)
def _environment():
    """Jinja2 environments for HTML (autoescaped) and Markdown, loaded once per process.

    Compiled templates are kept in Jinja2's per-user bytecode cache (a private temp folder),
    which takes compiling them (a third of a second) off every later `allwen report`.
    """
    from jinja2 import Environment, FileSystemBytecodeCache, PackageLoader, StrictUndefined, select_autoescape

    def md(text: Any) -> str:
        return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    try:
        cache = FileSystemBytecodeCache()
    except RuntimeError:  # no usable temp folder: compile every time
        cache = None
    html_env = Environment(loader=PackageLoader("allwen.report", "templates"), autoescape=select_autoescape(["j2"]),
                           undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, bytecode_cache=cache)
    md_env = Environment(loader=PackageLoader("allwen.report", "templates"), autoescape=False, bytecode_cache=cache,
                         undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    md_env.filters["md"] = md
    return html_env, md_env


def svg_macro(name: str, geometry: Any) -> str:
    """Render one chart macro of ``charts.svg.j2`` to an SVG string."""
    return str(getattr(_environment()[0].get_template("charts.svg.j2").module, name)(geometry)).strip()


def css() -> str:
    return (Path(__file__).parent / "templates" / "report.css").read_text(encoding="utf-8")


def render_html(template: str, **context: Any) -> str:
    return _environment()[0].get_template(template).render(css=css(), **context)


def render_markdown(template: str, **context: Any) -> str:
    return _environment()[1].get_template(template).render(**context)


def metrics_rows(summary: Summary) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per evaluated model with raw (unrounded) values, for downstream analysis."""
    names = headline_names()
    header = ["group", "name", "kind", "scenario", "fold", "weighting", *names]
    header += [f"{k}_{end}" for k in names for end in ("lo", "hi")]
    rows = []
    for group, models in (("single", summary.single_models), ("champion", summary.champions),
                          ("ensemble", summary.ensembles)):
        for m in models:
            row: dict[str, Any] = {"group": group, "name": m.name, "kind": getattr(m, "kind", "single"),
                                   "scenario": m.scenario, "fold": getattr(m, "fold", None),
                                   "weighting": getattr(m, "weighting", None)}
            for k in names:
                row[k] = m.metrics.value(k)
                row[f"{k}_lo"], row[f"{k}_hi"] = m.metrics.interval(k) or (None, None)
            rows.append(row)
    return header, rows


def render_csv(summary: Summary) -> str:
    header, rows = metrics_rows(summary)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def write_utf8(path: Path, text: str) -> Path:
    """UTF-8 whatever the locale (the HTML declares utf-8), written atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


__all__ = ["FIGURE_NAMES", "Figures", "css", "md_path", "metrics_rows", "render_csv", "render_html",
           "render_markdown", "svg_macro", "write_utf8"]

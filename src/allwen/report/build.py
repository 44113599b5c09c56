"""Build the run report (HTML, Markdown, CSV) from the validated ``report/summary.json``.

The report only reads saved results: it never imports training code, so it can be rebuilt
anywhere a run folder is copied. It leads with its answers: the questions in plain words,
one summary table (best single model, champions, best ensembles), the statistics used and a
forest plot of every model; the details follow, folded. Three layers, one module each: the
view (:mod:`~allwen.report.view`, typed blocks), the sections that fill it from the results
model (:mod:`~allwen.report.answers` for the first screen, :mod:`~allwen.report.sections`
for the details) and the rendering (:mod:`~allwen.report.render`: two Jinja2 templates, so
the HTML and the Markdown always say the same thing, the CSV and the figures). This module
only puts them in order and writes the files.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from allwen.evaluation.results import Summary, load_summary
from allwen.evaluation.selection import several_folds
from allwen.report import answers, sections
from allwen.report.render import Figures, render_csv, render_html, render_markdown, write_utf8
from allwen.report.sections import ReportContext
from allwen.report.view import Document
from allwen.runfolder import RunFolder

log = logging.getLogger(__name__)


def document(ctx: ReportContext) -> Document:
    """The whole report: the first screen, then every section this summary can fill, in order."""
    from allwen.report.studies import study_sections

    s = ctx.s
    folds = several_folds({m.scenario: s.units_of(m.scenario) for m in s.single_models})  # the rule ensembles were built by
    has_tests = bool(s.comparisons.scenarios or s.comparisons.best_single_vs_ensembles or ctx.answers)
    parts = [sections.config_section(ctx), sections.data_section(ctx), sections.split_section(ctx),
             *([sections.sweep_section(ctx)] if s.sweep else []),
             *([sections.grid_section(ctx)] if s.scenarios else []),
             sections.single_section(ctx),
             *([sections.tta_section(ctx)] if s.single_models_tta else []),
             *([sections.champion_section(ctx)] if folds and s.champions else []),
             *([sections.ensemble_section(ctx)] if folds and s.ensembles else []),
             *([sections.tests_section(ctx)] if has_tests else []),
             *([sections.subject_section(ctx)] if s.subject_level else []),
             sections.roc_section(ctx),
             *([sections.selective_section(ctx)] if s.selective else []),
             sections.per_class_section(ctx), sections.confusion_section(ctx),
             *([sections.parameters_section(ctx)] if s.parameters else []),
             *([sections.samples_section(ctx)] if s.samples else []),
             sections.curves_section(ctx), *study_sections(ctx)]
    return Document(f"allwen report: {s.name}", answers.meta(ctx), answers.callouts(ctx), answers.answers_section(ctx),
                    answers.headline(ctx), parts, answers.footer(ctx))


def headline_document(run_dir: Path, summary: Summary) -> Document:
    """The report's view without drawing anything (for ``allwen report --headline``)."""
    from allwen.report.paper import paper_blocks

    ctx = ReportContext.of(run_dir, summary)
    return Document(f"allwen report: {summary.name}", "", [], answers.answers_section(ctx),
                    [*paper_blocks(summary), answers.summary_table(ctx), answers.method_text(ctx)], [], [])


def report_document(run_dir: Path, summary: Summary) -> Document:
    """The report's view of ``summary``, its figures drawn into the run's ``report/figures/``
    (and the ones it no longer draws removed)."""
    folder = RunFolder(run_dir)
    figures = Figures(folder.report_figures_dir, folder.report_figures_dir.relative_to(folder.report_dir).as_posix())
    figures.folder.mkdir(parents=True, exist_ok=True)
    doc = document(ReportContext.of(run_dir, summary, figures))
    figures.remove_undrawn()
    return doc


def build_report(run_dir: Path, links: Sequence[tuple[str, str]] = ()) -> Path:
    """Write report/index.html, report.md, metrics.csv and figures/; return index.html.

    ``links`` are (text, relative href) pairs shown under the title, e.g. the comparison
    page of the demo's two protocols. Each file is written atomically.
    """
    folder = RunFolder(run_dir)
    summary = load_summary(folder.root)
    doc = report_document(folder.root, summary)
    write_utf8(folder.metrics_csv, render_csv(summary))
    write_utf8(folder.report_md, render_markdown("report.md.j2", doc=doc, links=links))
    index = write_utf8(folder.report_html, render_html("report.html.j2", doc=doc, links=links))
    log.info("report written to %s", index)
    return index


__all__ = ["build_report", "document", "headline_document", "load_summary", "report_document"]

"""The headline of a run as Markdown (answers and summary table): what ``docs/results.md`` quotes.

Rendered from the same view and template as the report's first screen, so the two never differ.
"""

from __future__ import annotations

from pathlib import Path

from allwen.evaluation.results import load_summary
from allwen.report.build import headline_document
from allwen.report.render import render_markdown


def headline_markdown(run_dir: Path) -> str:
    """Answers, best single model, champions and the best ensemble of each kind, with intervals."""
    run_dir = Path(run_dir)
    return render_markdown("headline.md.j2", doc=headline_document(run_dir, load_summary(run_dir)))

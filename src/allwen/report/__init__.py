"""The run report: self-contained HTML, Markdown and a metrics CSV from summary.json.

Reads saved results only (no training code, no torch), so a copied run folder can be
re-reported anywhere.
"""

from allwen.report.build import build_report, load_summary

__all__ = ["build_report", "load_summary"]

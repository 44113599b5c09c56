"""The report's "paper vs this run" table: the reproduced paper's headline numbers beside this
run's, and the protocol facts in which the two differ (``summary.paper_comparison``)."""

from __future__ import annotations

from typing import Any

from allwen.evaluation.results import Summary

ASPECTS = {
    "split": "split level",
    "selected_on": "reported model chosen on",
    "average": "precision / recall / F1 averaging",
    "test_images": "test images",
}


def paper_blocks(s: Summary) -> list[Any]:
    """Blocks of the report's first screen; none when the run's config had no ``paper:`` block."""
    from allwen.report.format import NA, fmt_ci, fmt_num
    from allwen.report.view import Cell, Items, Row, Table, Text

    if not s.paper_comparison or s.paper_protocol is None:
        return []
    protocol = s.paper_protocol
    rows = []
    for c in s.paper_comparison:
        verdict = NA if c.inside is None else "yes" if c.inside else "no"
        rows.append(Row([Cell(c.metric), Cell(fmt_num(c.paper), numeric=True),
                         Cell(fmt_num(c.run), sub=fmt_ci((c.low, c.high)), numeric=True),
                         Cell(verdict, badge=None if c.inside in (None, True) else "outside"),
                         Cell(c.where + (f" ({c.note})" if c.note else ""))]))
    blocks: list[Any] = [
        Text("Paper vs this run", "heading"),
        Table(["Metric", "Paper", "This run", "Paper inside the run's interval", "Where in the paper"], rows,
              caption=f"{protocol.citation}. This run's value: {protocol.model} "
                      f"({protocol.compare_to.replace('_', ' ')}), with its {s.evaluation.confidence:.0%} interval."),
        Table(["Protocol", "Paper", "This run", ""], [
            Row([Cell(ASPECTS[a.aspect]), Cell(a.paper), Cell(a.run), Cell("same" if a.same else "differs")],
                None if a.same else "leak")
            for a in protocol.aspects], caption="What differs between the two protocols"),
    ]
    if protocol.differences:
        blocks.append(Items(list(protocol.differences)))
    return blocks

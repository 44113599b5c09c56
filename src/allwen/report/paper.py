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
        run_sub = (f"{c.basis}; folds {fmt_num(c.low)}-{fmt_num(c.high)}" if c.basis else fmt_ci((c.low, c.high)))
        rows.append(Row([Cell(c.metric), Cell(fmt_num(c.paper), numeric=True),
                         Cell(fmt_num(c.run), sub=run_sub, numeric=True),
                         Cell(verdict, badge=None if c.inside is None else "within" if c.inside else "outside",
                              badge_level="ok" if c.inside else "warn"),
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
    return blocks + own_comparison_blocks(s)


def own_comparison_blocks(s: Summary) -> list[Any]:
    """What the paper reported (a cell, a per-fold range, an ensemble) and what this run sets beside it;
    where the paper contradicts itself; its own table of other methods with this run's row."""
    from allwen.report.format import fmt_num
    from allwen.report.view import Cell, Row, Table, Text

    protocol = s.paper_protocol
    if protocol is None:
        return []
    blocks: list[Any] = []
    if protocol.reported:
        beside = {"cell": f"this run's same cell, {protocol.cell}" if protocol.cell else "no cell of this run matches it",
                  "fold_range": (f"this run's per-fold values at the same cell, {protocol.cell}" if protocol.cell
                                 else "no cell of this run matches it"),
                  "ensemble": f"this run's counterpart, {protocol.model}",
                  "best_single": f"this run's best single model, {protocol.model}",
                  "best_ensemble": f"this run's most accurate ensemble, {protocol.model}"}[protocol.compare_to]
        blocks.append(Text(f"The paper reported {protocol.reported}; beside it stands {beside}."))
    for line in protocol.contradictions:
        blocks.append(Text(f"The paper contradicts itself: {line}", "callout", "warn"))
    if protocol.other_methods:
        rows = [Row([Cell(m.method), Cell(m.metric), Cell(fmt_num(m.value), numeric=True), Cell(m.where)])
                for m in protocol.other_methods]
        metrics = {m.metric for m in protocol.other_methods}
        model = s.model(protocol.model)
        rows += [Row([Cell(f"this run ({protocol.model})"), Cell(k), Cell(fmt_num(model.metrics.value(k)), numeric=True),
                      Cell("")], "leak") for k in sorted(metrics)]
        blocks.append(Table(["Method", "Metric", "Value", "Where in the paper"], rows,
                            caption="The paper's comparison with other methods, and this run"))
    return blocks

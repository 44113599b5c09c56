"""The report's first screen: what the run answers, its summary table, the statistics used and
the forest plot of every model; plus the callouts above and the footer below.

One small function per block, each built only from the results model (via
:class:`~allwen.report.sections.ReportContext`); Experiment A's questions are worded in
:mod:`allwen.report.questions`.
"""

from __future__ import annotations

from typing import Any

from allwen.report import charts
from allwen.report.format import (NA, fmt_ci, fmt_count, fmt_num, fmt_settings,
                                  settings_words)
from allwen.evaluation.metric_registry import label as metric_label, summary_names
from allwen.evaluation.results import ModelResult
from allwen.report.render import svg_macro
from allwen.report.sections import TEST_SELECTION_NOTE, ReportContext, patient_groups
from allwen.report.view import Cell, Chart, Row, Section, Table, Text


def meta(ctx: ReportContext) -> str:
    """The line under the title: when, which version, classes, split."""
    s = ctx.s
    return " · ".join((f"created {s.created}", f"allwen {s.allwen_version}", f"classes: {', '.join(s.classes)}",
                       f"positive class: {s.positive_class}" if s.positive_class else "multi-class",
                       f"split {s.split.method}", f"{s.split.n_test} test images"))


def callouts(ctx: ReportContext) -> list[Text]:
    """What a reader must know before any number: test-set selection, leakage, pseudo-patients,
    statistics warnings."""
    s = ctx.s
    out = []
    if s.selection.test_set_selection:
        out.append(Text(f"{TEST_SELECTION_NOTE}.", "callout", "error"))
    leaks = [x for x in s.split.leakage if x.leaks]
    if leaks:
        out.append(Text(f"LEAKAGE: {len(leaks)} split pair(s) share subjects, pseudo-patients, duplicate or "
                        "near-duplicate images; their metrics are not independent (see Split and leakage).",
                        "callout", "error"))
    if s.split.pseudo_patients:
        out.append(Text(f"No patient ids: pseudo-patients ({s.split.pseudo_patients}) stood in for patients "
                        "in the split, the intervals and the subject-level results.", "callout", "warn"))
    out += [Text(f"STATISTICS WARNING: {t}", "callout", "warn") for t in ctx.warning_texts()]
    return out


def answers_section(ctx: ReportContext) -> Section:
    blocks: list[Any] = []
    caution = [f"Caution: {t}" for t in ctx.warning_texts()]  # every answer rests on the test intervals
    for q in ctx.answers:
        blocks += [Text(q.question, "question"), Text(q.answer)] + [Text(c) for c in caution]
    if not ctx.answers:
        blocks += study_answers(ctx) + [Text(c) for c in caution]
    blocks += subject_answer(ctx)
    return Section("questions", "Answers", blocks, folded=False)


def subject_answer(ctx: ReportContext) -> list[Any]:
    """Is a patient's sample called right? The best single model over the test subjects."""
    if not ctx.s.subject_level:
        return []
    r = ctx.s.subject_level[0]
    what, warning = patient_groups(ctx.s)
    return [Text(f"Per patient ({what}), is the sample called right?", "question"),
            Text(f"{r.model} calls {fmt_num(r.accuracy)} {fmt_ci(r.accuracy_ci) or ''} of the "
                 f"{r.n_subjects} test {what} right by their cells' mean probability (AUC over {what} "
                 f"{fmt_num(r.auc)}; median {fmt_num(r.cells_per_subject.median, 0)} cells each, "
                 f"see Patient-level results)." + (f" {warning}" if warning else ""))]


def study_answers(ctx: ReportContext) -> list[Any]:
    """What a run that is not shaped like Experiment A answers: a sweep's winner per step,
    a grid's winner, a single model's metrics and trainable parameters."""
    s, out = ctx.s, []
    for step in (s.sweep.steps if s.sweep else []):
        index = next(i for i, v in enumerate(step.values) if v.settings == step.winner)
        winner = settings_words([v.settings for v in step.values])[index]
        out.append(Text(f"Sweep step {step.step} ({', '.join(step.keys)}): winner "
                        f"{winner}, mean validation {step.metric} {fmt_num(step.values[index].mean)}."))
    if s.grid_winner:
        row = next(r for r in s.scenarios if r.name == s.grid_winner)
        words = settings_words([r.settings for r in s.scenarios])[s.scenarios.index(row)]
        named = row.name if words == row.name else f"{words} ({row.name})"
        out.append(Text(f"Grid winner (best mean validation {s.grid_metric}) {named}, with validation "
                        f"{s.grid_metric} {fmt_num(row.val[s.grid_metric].mean)} and test accuracy "
                        f"{fmt_num(row.test['accuracy'].mean)} (mean over {row.n_folds} fold(s))."))
    if len(s.single_models) == 1:
        m = s.single_models[0]
        trainable = max((p.trainable for p in s.parameters if p.trainable is not None), default=None)
        p, r, f = ctx.averaged(("precision", "recall", "f1"))
        out.append(Text(f"Single model {m.name}: test accuracy {fmt_num(m.metrics.accuracy)}, "
                        f"{metric_label(p).lower()} {fmt_num(m.metrics.value(p))}, {metric_label(r).lower()} "
                        f"{fmt_num(m.metrics.value(r))}, {metric_label(f)} {fmt_num(m.metrics.value(f))}; "
                        f"{fmt_count(trainable)} trainable parameters."))
    return out or [Text(f"No research questions answered in this summary ({NA}).")]


def headline(ctx: ReportContext) -> list[Any]:
    from allwen.report.paper import paper_blocks

    return [*paper_blocks(ctx.s), summary_table(ctx), method_text(ctx), forest(ctx)]


def summary_table(ctx: ReportContext) -> Table:
    models = ctx.s.headline_models()
    names = ctx.averaged(summary_names())
    rows = [Row([Cell(role), Cell(m.name)] + [ctx.metric_cell(m, k) for k in names],
                "best" if i == 0 else None)
            for i, (role, m) in enumerate(models)]
    ev = ctx.s.evaluation
    return Table(["Role", "Model"] + [metric_label(k) for k in names], rows,
                 caption=f"Test set: {ev.n_test} images; values with {ev.confidence:.0%} intervals; "
                         f"{ctx.average_note()}")


def method_text(ctx: ReportContext) -> Text:
    ev = ctx.s.evaluation
    return Text(f"Intervals: {ev.interval_method}. Paired tests: {ev.paired_method}; Holm's correction "
                "within each family.")


def forest(ctx: ReportContext) -> Chart | Text:
    s = ctx.s
    champions = {c.name for c in s.champions}
    rows = []
    for m in s.single_models:
        group = "best single" if m.name == s.best_single else "champion" if m.name in champions else "single"
        rows.append(_forest_row(m.name, group, m))
    rows += [_forest_row(e.name, e.kind, e) for e in s.ensembles]
    layout = charts.forest(rows, [("accuracy", "test accuracy"), ("kappa", "test kappa")],
                           s.model(s.best_single).metrics.accuracy)
    return ctx.chart("forest.svg", [svg_macro("forest", layout)],
                       f"Every model's test accuracy and kappa with {s.evaluation.confidence:.0%} intervals "
                       "(dashed line: the best single model's accuracy)")


def _forest_row(label: str, group: str, model: ModelResult) -> charts.ForestRow:
    values = {}
    for key in ("accuracy", "kappa"):
        ci = model.metrics.interval(key) or (None, None)
        values[key] = (model.metrics.value(key), ci[0], ci[1])
    return charts.ForestRow(label, group, values)


def footer(ctx: ReportContext) -> list[str]:
    ev = ctx.s.evaluation
    return [f"Intervals: {ev.interval_method}.", f"Paired tests: {ev.paired_method}; Holm's correction within "
            "each family of comparisons.", "Research software: not for diagnostic use."]



__all__ = ["answers_section", "callouts", "footer", "forest", "headline", "meta", "method_text", "study_answers",
           "subject_answer", "summary_table"]

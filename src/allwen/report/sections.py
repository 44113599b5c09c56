"""The report's sections, one small function each, built only from the results model.

Each function takes a :class:`ReportContext` (the summary, the answers to its questions and
the figures folder) and returns a :class:`~allwen.report.view.Section`; the answers and the
first screen are :mod:`allwen.report.answers`, the order of sections is
:func:`allwen.report.build.document`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from allwen.ensemble.weighting import fitted
from allwen.evaluation.metric_registry import headline_names, label as metric_label, summary_names
from allwen.evaluation.results import Ensemble, ModelResult, SingleModel, Summary
from allwen.report import charts
from allwen.report.format import (
    NA,
    TEST_NAMES,
    fmt_ci,
    fmt_count,
    fmt_num,
    fmt_p,
    fmt_settings,
    settings_words,
)
from allwen.report.questions import Answer, answer_questions
from allwen.report.render import Figures, md_path, svg_macro
from allwen.report.view import Cell, Chart, Confusions, Fig, Gallery, Items, Row, Section, Table, Text, metric_cell

TEST_SELECTION_NOTE = (
    "champions were selected on the TEST set, as in the original study; "
    "their test metrics are optimistic"
)


@dataclass
class ReportContext:
    """What every section reads: the summary, its worded answers and where figures go
    (``figures`` None: draw nothing, e.g. for ``allwen report --headline``)."""

    s: Summary
    run_dir: Path
    figures: Figures | None = None
    answers: list[Answer] = field(default_factory=list)

    @classmethod
    def of(cls, run_dir: Path, summary: Summary, figures: Figures | None = None) -> "ReportContext":
        return cls(summary, Path(run_dir), figures, answer_questions(summary))

    @property
    def metric(self) -> str:
        return self.s.selection.champion_metric

    def metric_cell(self, m: ModelResult, key: str) -> Cell:
        return metric_cell(m.metrics, key, self.s.evaluation.warnings_for(key, m.name))

    def averaged(self, names: Sequence[str]) -> list[str]:
        """``names`` with precision, recall and F1 under the run's ``evaluation.average``."""
        return [self.s.averaged(k) for k in names]

    def average_note(self) -> str:
        avg = self.s.averaged("f1").partition("_")[2] or "binary"
        if avg == "binary":
            return f"precision, recall and F1 of the positive class ({self.s.positive_class})"
        return f"precision, recall and F1 {avg}-averaged over the classes (evaluation.average)"

    def metric_headers(self) -> list[str]:
        return [metric_label(k) for k in self.averaged(headline_names())]

    def metric_cells(self, m: ModelResult) -> list[Cell]:
        return [self.metric_cell(m, k) for k in self.averaged(headline_names())]

    def warning_texts(self) -> list[str]:
        return [f"{w.what}: {w.consequence}." for w in self.s.evaluation.warnings]

    def figure_link(self, name: str) -> str:
        """Where the Markdown report finds figure ``name``."""
        return f"{self.figures.rel if self.figures else Figures.rel}/{name}"

    def chart(self, name: str, svgs: list[str], caption: str) -> Chart | Text:
        if self.figures is None:
            raise RuntimeError(f"chart {name}: this report context draws no figures")
        return self.figures.chart(name, svgs, caption)



def comparison_rows(rows: list[Any], alpha: float) -> list[Row]:
    """One table row per paired comparison: A, B, test, metric, difference [CI], p, Holm p, significant."""
    out = []
    for r in rows:
        significant = r.p_holm is not None and r.p_holm < alpha
        out.append(Row([Cell(r.a), Cell(r.b), Cell(TEST_NAMES[r.test]), Cell(r.metric),
                        Cell(NA if r.diff is None else f"{r.diff:+.3f}", sub=fmt_ci(r.diff_ci), numeric=True),
                        Cell(fmt_p(r.p), numeric=True), Cell(fmt_p(r.p_holm), numeric=True),
                        Cell("yes" if significant else "no")], "sig" if significant else None))
    return out

def augmentation_text(cfg: Any) -> str:
    """Which stages trained on augmented images (issue 18): stage 1 on cached un-augmented
    features, or the frozen backbone on every augmented batch (``cfg``: a Config or its dict)."""
    cfg = cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else cfg
    data, train = cfg.get("data") or {}, cfg.get("train") or {}
    name = data.get("augment", "none")
    if name == "none":
        return "none"
    stage1 = (train.get("stage1") or {}).get("augment")
    stage1 = bool(train.get("stage1_augment")) if stage1 is None else stage1
    parts = []
    if ((train.get("stage1") or {}).get("epochs") or 0) > 0:
        parts.append("stage 1 augmented (the frozen backbone runs on every augmented batch)" if stage1 else
                     "stage 1 not augmented (cached features, train.stage1.augment: false)")
    stage2 = train.get("stage2")
    if stage2 is not None and (stage2.get("epochs") or 0) > 0:
        parts.append(f"stage 2 {'not ' if stage2.get('augment') is False else ''}augmented")
    return f"{name}: " + "; ".join(parts)


def config_section(ctx: ReportContext) -> Section:
    cfg, s = ctx.s.config, ctx.s
    grid = cfg.scenarios or {}
    pairs = [("Backbone", cfg.model.backbone),
             ("Image size", f"{cfg.data.image_size} x {cfg.data.image_size} px" if cfg.data.image_size else "native"),
             ("Scenario grid", "; ".join(f"{k}: {', '.join(settings_words([{k: x} for x in v], keys=False))}"
                                         for k, v in grid.items()) or "none"),
             ("Folds", str(len(s.split.folds))), ("Split method", s.split.method),
             ("Augmentation", augmentation_text(cfg)),
             ("Ensemble weightings", ", ".join(cfg.ensemble.weightings)),
             ("Champions", f"best {ctx.metric} on {s.selection.champion_by}")]
    return Section("config", "Configuration", [Items(pairs, "kv")])


def data_section(ctx: ReportContext) -> Section:
    d = ctx.s.data
    total = d.n_images or sum(d.classes.values())
    rows = [Row([Cell(c), Cell(str(n), numeric=True), Cell(f"{n / total:.1%}" if total else NA, numeric=True),
                 Cell(fmt_num(d.n_subjects.get(c)), numeric=True)]) for c, n in d.classes.items()]
    blocks: list[Any] = [Items([("Source", d.source or NA), ("Root", d.root or NA), ("Images", fmt_num(d.n_images)),
                                ("Duplicate groups", str(d.n_duplicate_groups)),
                                ("Imbalance (largest / smallest class)", fmt_num(d.imbalance, 2))], "kv")]
    blocks.append(Table(["Class", "Images", "Share", "Subjects"], rows) if rows else Text(f"Per-class counts: {NA}."))
    return Section("data", "Data", blocks)


def split_section(ctx: ReportContext) -> Section:
    sp = ctx.s.split
    blocks: list[Any] = [Items([("Method", sp.method), ("Test images", str(sp.n_test))], "kv")]
    blocks.append(Table(["Fold", "Train", "Validation"], [
        Row([Cell(str(i)), Cell(str(f.train), numeric=True), Cell(str(f.val), numeric=True)])
        for i, f in enumerate(sp.folds)], caption="Images per fold"))
    rows = []
    for item in sp.leakage:
        leaking = item.leaks
        rows.append(Row([Cell(str(item.fold)), Cell(f"{item.a} vs {item.b}"),
                         Cell(str(item.n_a), numeric=True), Cell(str(item.n_b), numeric=True),
                         Cell(str(item.shared_subjects), numeric=True),
                         Cell(str(item.shared_pseudo_patients) if item.pseudo_patients else "-", numeric=True),
                         Cell(str(item.shared_duplicate_groups), numeric=True),
                         Cell(str(item.shared_near_duplicate_groups), numeric=True),
                         Cell(", ".join(map(str, item.examples or item.pseudo_examples)) or "-"),
                         Cell("LEAKS" if leaking else "ok")], "leak" if leaking else None))
    if rows:
        blocks.append(Table(["Fold", "Sides", "n A", "n B", "Shared subjects", "Shared pseudo-patients",
                             "Shared duplicate groups", "Shared near-duplicate groups", "Examples", "Status"], rows,
                            caption="Leakage check between split sides"))
    g = sp.grouping
    if g.pseudo_patients:
        used = "grouped this split" if g.pseudo_patients_used else "checked only (not used by this split)"
        blocks.append(Text(f"Pseudo-patients ({used}): {g.n_pseudo_patients} {g.pseudo_patients_described}."))
    if g.near_duplicate_groups is not None:
        blocks.append(Text(f"Near-duplicates: {g.near_duplicate_groups} groups "
                           f"({g.images_in_near_duplicate_groups or 0} images; perceptual hash within "
                           f"{g.phash_distance} of 256 bits"
                           + (f", feature cosine >= {g.feature_cosine}" if g.feature_pairs else "")
                           + ")."))
    blocks += [Text(n) for n in sp.notes]
    if sp.leakage_summary:
        blocks.append(Text(sp.leakage_summary, "pre"))
    return Section("split", "Split and leakage", blocks)


def patient_groups(s: Summary) -> tuple[str, str | None]:
    """What the patient-level results group by, in words: ``subjects`` where the data has subject
    ids, ``pseudo-patients`` where groups stand in for them; and, on an image-level split, the
    warning that those groups also have cells in training (so their results are optimistic)."""
    g = s.split.grouping
    what = "pseudo-patients" if g.pseudo_patients else "subjects"
    if s.config.split.group_by != "image":
        return what, None
    return what, (f"The split was image-level: these {what} also have cells in the training and validation "
                  "images, so a per-patient result here says little about a new patient.")


def subject_section(ctx: ReportContext) -> Section:
    """Patient-level results: each test subject's cells aggregated, per headline model."""
    s = ctx.s
    what, warning = patient_groups(s)
    described = s.split.grouping.pseudo_patients_described
    groups = f"{what} ({described})" if what == "pseudo-patients" and described else what
    blocks: list[Any] = [Text(
        f"Each test {what[:-1]}'s cells aggregated: mean class probability and the share of cells "
        "called ALL; the call is the class of highest mean probability. Accuracy with a "
        f"{s.evaluation.confidence:.0%} bootstrap interval over {groups}; AUC over {what}.")]
    if warning:
        blocks.append(Text(warning, "callout", "warn"))
    rows = []
    for r in s.subject_level:
        c = r.cells_per_subject
        rows.append(Row([Cell(r.role), Cell(r.model), Cell(str(r.n_subjects), numeric=True),
                         Cell(fmt_num(r.accuracy), sub=fmt_ci(r.accuracy_ci), numeric=True),
                         Cell(fmt_num(r.auc), numeric=True),
                         Cell(", ".join(f"{k} {v}" for k, v in r.n_per_class.items())),
                         Cell(f"{fmt_num(c.min, 0)} / {fmt_num(c.median, 1)} / {fmt_num(c.max, 0)}")]))
    blocks.append(Table(["Role", "Model", what.capitalize(), "Accuracy", "AUC", "Per class", "Cells min / median / max"],
                        rows, caption=f"Test {what}"))
    first = s.subject_level[0]
    classes = s.classes
    blocks.append(Table([what[:-1].capitalize(), "Cells", "True", "Called", "Share called ALL"] + [f"P({c})" for c in classes], [
        Row([Cell(r.subject), Cell(str(r.n_cells), numeric=True), Cell(r.label), Cell(r.predicted),
             Cell(fmt_num(r.share_called_all), numeric=True)] +
            [Cell(fmt_num(p), numeric=True) for p in r.mean_proba], None if r.label == r.predicted else "leak")
        for r in first.rows], caption=f"{first.model}: every test {what[:-1]}"))
    return Section("subjects", "Patient-level results", blocks)


def single_section(ctx: ReportContext) -> Section:
    blocks: list[Any] = [Text(f"Test-set metrics of every trained unit (scenario x fold); 'Val {ctx.metric}' is "
                              "the validation score used for champion selection.")]
    by_scenario: dict[str, list[SingleModel]] = {}
    for m in ctx.s.single_models:
        by_scenario.setdefault(m.scenario, []).append(m)
    for scenario, models in by_scenario.items():
        blocks.append(Text(f"Scenario {scenario}", "heading"))
        blocks.append(Table(["Model", "Fold", "Best stage", f"Val {ctx.metric}"] + ctx.metric_headers(), [
            Row([Cell(m.name, badge="best single" if m.name == ctx.s.best_single else None), Cell(str(m.fold)),
                 Cell(m.best_stage or NA), Cell(fmt_num(m.val_metrics.get(ctx.metric)), numeric=True)]
                + ctx.metric_cells(m), "best" if m.name == ctx.s.best_single else None)
            for m in models]))
    return Section("single-models", "Single models", blocks)


def tta_section(ctx: ReportContext) -> Section:
    """``evaluation.tta``: each single model's test metrics without and with the 8 dihedral views."""
    tta = {m.name: m for m in ctx.s.single_models_tta}
    tests = {c.a: c for c in ctx.s.comparisons.tta_vs_plain if c.metric == "accuracy"}

    def paired(name: str) -> Cell:
        c = tests.get(name)
        return Cell(NA if c is None else f"{c.diff:+.3f}", lines=[] if c is None else
                    [f"{TEST_NAMES[c.test]} p={fmt_p(c.p)}, Holm {fmt_p(c.p_holm)}"], numeric=True)

    rows = [Row([Cell(m.name), Cell(views)] + ctx.metric_cells(e) + [paired(e.name) if e is not m else Cell("")])
            for m in ctx.s.single_models
            for views, e in (("1 (plain)", m), ("8 (TTA)", tta.get(m.name + "+tta"))) if e is not None]
    return Section("tta", "Test-time augmentation", [
        Text("Test metrics of every single model on the plain images and averaged over the 8 dihedral views "
             "(4 rotations x 2 mirror images): the same weights, no retraining. The last column is the TTA "
             "model's accuracy minus the plain one's, with a paired test on the same test images (Holm-corrected "
             "over the units). A head trained only on upright, unmirrored images can lose accuracy to TTA."),
        Table(["Model", "Views"] + ctx.metric_headers() + ["TTA - plain accuracy"], rows)])


def champion_section(ctx: ReportContext) -> Section:
    blocks: list[Any] = [Text(f"One champion per scenario: the fold with the best {ctx.metric} on the "
                              f"{ctx.s.selection.champion_by} set.")]
    if ctx.s.selection.test_set_selection:
        blocks.append(Text(f"{TEST_SELECTION_NOTE}.", "callout", "error"))
    blocks.append(Table(["Champion", "Scenario", "Fold", f"Val {ctx.metric}"] + ctx.metric_headers(), [
        Row([Cell(m.name), Cell(m.scenario), Cell(str(m.fold)), Cell(fmt_num(m.val_metrics.get(ctx.metric)),
                                                                   numeric=True)] + ctx.metric_cells(m))
        for m in ctx.s.champions]) if ctx.s.champions else Text(f"No champions ({NA})."))
    return Section("champions", "Champions", blocks)


def _spread_cell(e: Ensemble) -> Cell:
    sp = e.spread
    verdict = ("same test decisions as the plain average: indistinguishable from uniform"
               if sp.indistinguishable_from_uniform else
               f"differs from the plain average on {1 - sp.agreement_with_uniform:.1%} of test images")
    return Cell(f"{sp.min:.3f}-{sp.max:.3f}", lines=[f"max |w - 1/{len(e.weights)}| = {sp.max_deviation:.3f}", verdict])


def ensemble_section(ctx: ReportContext) -> Section:
    ens = ctx.s.ensembles
    blocks: list[Any] = [Text(
        "Weighted Ensembles of Networks: 'inter' combines the folds of one scenario, 'intra' the scenario "
        "champions, 'scenarios' (greedy) the scenarios' fold averages, selected greedily on out-of-fold "
        "validation predictions. Weights are normalised member scores (greedy: selection counts). The "
        f"highlighted rows are the best of each kind by {ctx.s.selection.champion_by} {ctx.metric}, the rule "
        "every choice of this run follows.")]
    if not ens:
        blocks.append(Text(f"No ensembles in this run ({NA})."))
        return Section("ensembles", "Weighted ensembles (WEN)", blocks)
    weighted = [e for e in ens if fitted(e.weighting)]
    same = [e for e in weighted if e.spread.indistinguishable_from_uniform]
    blocks.append(Text(f"{len(same)} of {len(weighted)} score- or greedy-weighted ensembles make exactly the test "
                       "decisions of the plain (uniform) average of their members: for them the weighting is "
                       "indistinguishable from uniform.", "callout", "info"))
    best = set(ctx.s.best_ensembles.values())
    blocks.append(Table(["Ensemble", "Kind", "Weighting", "Members: weight", "Weight spread"]
                        + [metric_label(k) for k in summary_names()], [
        Row([Cell(e.name, lines=[e.note] if e.note else [], badge="best of its kind" if e.name in best else None),
             Cell(e.kind), Cell(e.weighting),
             Cell(f"{len(e.members)} members", lines=[f"{m}: {w:.3f}" for m, w in zip(e.members, e.weights)]),
             _spread_cell(e)] + [ctx.metric_cell(e, k) for k in summary_names()],
            "best" if e.name in best else None)
        for e in ens]))
    facts = ctx.s.questions.best_weighting if ctx.s.questions else None
    if facts is not None:
        blocks.append(Table(["Weighting", "Ensembles", "Mean test accuracy"], [
            Row([Cell(m.weighting), Cell(str(m.n), numeric=True), Cell(fmt_num(m.mean), numeric=True)],
                "best" if m.weighting == facts.best_study else None) for m in facts.means],
            caption="Mean test accuracy of the ensembles of each weighting"))
    return Section("ensembles", "Weighted ensembles (WEN)", blocks)


def tests_section(ctx: ReportContext) -> Section:
    alpha = 1 - ctx.s.evaluation.confidence
    blocks: list[Any] = [Text(f"Paired tests: {ctx.s.evaluation.paired_method}. Differences are A - B with a "
                              "paired bootstrap interval over the same resamples as the metrics.")]
    for q in ctx.answers:
        if q.evidence:
            blocks += [Text(q.question, "heading"), Items(q.evidence)]
    for title, rows in (("Scenario champions against each other" if ctx.s.champions else "Scenarios against each other",
                         ctx.s.comparisons.scenarios),
                        ("Each ensemble against the best single model", ctx.s.comparisons.best_single_vs_ensembles)):
        blocks.append(Text(title, "heading"))
        if not rows:
            blocks.append(Text(f"{NA}: no comparisons recorded."))
            continue
        blocks.append(Table(["A", "B", "Test", "Metric", "Difference (A - B) [CI]", "p", "p (Holm)",
                             f"Significant (Holm, alpha {alpha:.2f})"], comparison_rows(rows, alpha)))
    return Section("tests", "Statistical tests", blocks)


def roc_section(ctx: ReportContext) -> Section:
    s = ctx.s
    reference = s.model(s.best_single)
    entries = [(f"best single: {reference.name}", reference.roc, True)]
    entries += [(f"champion {c.name}", c.roc, False) for c in s.champions if c.name != reference.name]
    entries += [(name, s.model(name).roc, False) for name in s.best_ensembles.values()]
    panels = [svg_macro("roc", p) for p in charts.roc_panels(entries) if p.curves]
    title = "Test ROC: best single model (dashed), champions and the most accurate ensemble of each kind"
    return Section("roc", "ROC curves", [ctx.chart("roc.svg", panels, title)])


def selective_section(ctx: ReportContext) -> Section:
    """When not to answer: accuracy on answered test images against coverage, per champion and best ensemble."""
    rows = ctx.s.selective
    target = rows[0].target_accuracy
    entries = [(r.name, [p.model_dump() for p in r.curve], r.model_dump()) for r in rows]
    chart = ctx.chart("coverage.svg", [svg_macro("coverage", charts.coverage_panel(entries, target))],
                        "Test accuracy on the images answered against the share answered (coverage), highest "
                        "confidence first; dot: the threshold chosen on out-of-fold validation predictions")
    table = Table(["Model", "Kind", "Threshold", "Coverage [CI]", "Accuracy on answered [CI]", "Answered / test"], [
        Row([Cell(r.name), Cell(r.kind), Cell(fmt_num(r.threshold, 4) if r.threshold is not None else "refer all",
                                               numeric=True),
             Cell(fmt_num(r.coverage), fmt_ci(tuple(r.coverage_ci) if r.coverage_ci else None), numeric=True),
             Cell(fmt_num(r.accuracy), fmt_ci(tuple(r.accuracy_ci) if r.accuracy_ci else None), numeric=True),
             Cell(f"{r.n_accepted} / {r.n_test}", numeric=True)]) for r in rows])
    text = Text(f"Each model refers to a person the images whose confidence (largest class probability) is below "
                f"the lowest threshold at which its out-of-fold validation images reach accuracy {target:.2f} "
                f"(the `allwen export` default). Intervals: {rows[0].unit}-level bootstrap. A threshold that "
                "no validation subset reached refers every image.")
    return Section("selective", "When not to answer (accuracy-coverage)", [text, chart, table])


def confusion_section(ctx: ReportContext) -> Section:
    models = [*ctx.s.champions, *(ctx.s.model(n) for n in ctx.s.best_ensembles.values())]
    if ctx.s.best_single not in {m.name for m in models}:
        models.insert(0, ctx.s.model(ctx.s.best_single))
    return Section("confusion", "Confusion matrices", [
        Text("The best single model, the champions and the most accurate ensemble of each kind on the test set: "
             "rows true, columns predicted; colour is the share of each true class (row)."),
        Confusions([(m.name, ctx.s.classes, charts.confusion_view(m.confusion, ctx.s.classes)) for m in models])])


def sweep_section(ctx: ReportContext) -> Section:
    blocks: list[Any] = [Text("Each step trains its grid with the earlier steps' winners fixed; the winner is the "
                              "value with the best mean validation metric over folds (ties: the earlier value). "
                              "The last step is this run's own grid.")]
    for step in ctx.s.sweep.steps:
        metric = step.metric
        words = dict(zip((repr(v.settings) for v in step.values), settings_words([v.settings for v in step.values])))
        winner = words.get(repr(step.winner)) or fmt_settings(step.winner)
        blocks.append(Text(f"Step {step.step}: {', '.join(step.keys)} (winner {winner})", "heading"))
        blocks.append(Table(["Value", "Train accuracy (mean)", f"Val {metric} (mean)", "sd", "Units"], [
            Row([Cell(words[repr(v.settings)], badge="winner" if v.settings == step.winner else None),
                 Cell(fmt_num(v.train_accuracy), numeric=True),
                 Cell(fmt_num(v.mean), numeric=True), Cell(fmt_num(v.sd), numeric=True),
                 Cell(str(len(v.units)), numeric=True)], "best" if v.settings == step.winner else None)
            for v in step.values]))
        series = [(f"validation {metric}", [v.mean for v in step.values])]
        if any(v.train_accuracy is not None for v in step.values):
            series.insert(0, ("train accuracy", [v.train_accuracy for v in step.values]))
        layout = charts.bars(f"step {step.step}: train and validation",
                             settings_words([v.settings for v in step.values], keys=False),
                             series, ", ".join(step.keys), "mean over folds")
        blocks.append(ctx.chart(f"sweep_step_{step.step}.svg", [svg_macro("lines", layout)],
                                  f"Sweep step {step.step}: training accuracy and validation {metric} per value"))
    return Section("sweep", "Sweep", blocks, folded=False)


def grid_section(ctx: ReportContext) -> Section:
    s = ctx.s
    metric = s.grid_metric or "accuracy"
    cols = [k for k in ctx.averaged(("accuracy", "precision", "recall", "f1", "kappa", "auc"))
            if all(k in r.test for r in s.scenarios)]
    blocks: list[Any] = [Text(f"Every configuration's validation and test metrics, mean (sd) over folds; the grid "
                              f"winner has the best mean validation {metric} (ties: the earlier configuration); "
                              f"{ctx.average_note()}.")]

    def cell(ms: Any) -> Cell:
        return Cell(fmt_num(ms.mean), sub=None if ms.sd is None else f"sd {fmt_num(ms.sd)}", numeric=True)

    evaluated = any(r.train_eval_accuracy.mean is not None for r in s.scenarios)
    headers = (["Train accuracy (evaluated)"] if evaluated else []) + ["Train accuracy (running)", f"Val {metric}"]
    headers += [f"Test {metric_label(k)}" for k in cols]

    def row(r: Any, label: str) -> Row:
        train = r.train.get("accuracy")
        first = [cell(r.train_eval_accuracy)] if evaluated else []
        folder = [] if label == r.name else [r.name]  # the words, and the name its units are filed under
        return Row([Cell(label, lines=folder, badge="grid winner" if r.name == s.grid_winner else None), *first,
                    cell(train) if train else Cell(NA, numeric=True), cell(r.val[metric])]
                   + [cell(r.test[k]) for k in cols], "best" if r.name == s.grid_winner else None)

    keys = list(s.scenarios[0].settings) if s.scenarios else []
    if len(keys) < 2:
        words = settings_words([r.settings for r in s.scenarios])
        blocks.append(Table(["Configuration"] + headers, [row(r, w) for r, w in zip(s.scenarios, words)]))
    else:  # C: one table per batch size, a row per epoch count (the last varied key)
        last = keys[-1]
        groups: dict[str, list[Any]] = {}
        others = settings_words([{k: v for k, v in r.settings.items() if k != last} for r in s.scenarios])
        lasts = settings_words([{last: r.settings[last]} for r in s.scenarios], keys=False)
        for r, label in zip(s.scenarios, others):
            groups.setdefault(label, []).append(r)
        blocks.append(Text("Train accuracy (evaluated) is the kept model on its training images in eval mode after "
                           "training (train_eval_accuracy), the number Experiment C's training-accuracy tables "
                           "show; the running one is the kept epoch's, as training reported it (over the epoch's "
                           "batches, augmented, dropout on), so it is not comparable to the validation accuracy."))
        for label, rows in groups.items():
            blocks.append(Text(label, "heading"))
            blocks.append(Table([last.split(".")[-1]] + headers,
                                [row(r, lasts[s.scenarios.index(r)]) for r in rows]))
    blocks += grid_charts(ctx)
    return Section("grid", "Grid", blocks, folded=False)


def grid_charts(ctx: ReportContext) -> list[Any]:
    """Test accuracy against the last varied key, one line per value of the others (C: vs
    epochs, one line per batch size); with folds, per-fold metrics and ROC of the winner (D)."""
    s, out = ctx.s, []
    keys = list(s.scenarios[0].settings)
    last = keys[-1]

    # a section scenario's value is a mapping: what differs between the cells, in words, labels x
    x_of = [v if not isinstance(r.settings[last], dict) else w for r, v, w in zip(
        s.scenarios, (r.settings[last] for r in s.scenarios),
        settings_words([{last: r.settings[last]} for r in s.scenarios], keys=False))]
    labels = settings_words([{k: v for k, v in r.settings.items() if k != last} for r in s.scenarios])
    xs = list(dict.fromkeys(x_of))
    groups: dict[str, dict[Any, float | None]] = {}
    for r, x, label in zip(s.scenarios, x_of, labels):
        groups.setdefault(label or "test accuracy", {})[x] = r.test["accuracy"].mean
    layout = charts.lines(f"test accuracy vs {last}", xs, [(g, [vals.get(x) for x in xs]) for g, vals in groups.items()],
                          last, "test accuracy (mean over folds)")
    out.append(ctx.chart("grid_test_accuracy.svg", [svg_macro("lines", layout)],
                           f"Test accuracy against {last}"))
    winners = [m for m in s.single_models if m.scenario == s.grid_winner]
    if len(winners) > 1:
        metrics = ("accuracy", "precision", "recall", "f1")
        winner = settings_words([r.settings for r in s.scenarios])[[r.name for r in s.scenarios].index(s.grid_winner)]
        layout = charts.bars(f"{winner}: test metrics per fold", [m.fold for m in winners],
                             [(k, [m.metrics.value(k) for m in winners]) for k in metrics], "fold", "test value",
                             width=max(420, 60 + 90 * len(winners)))
        out.append(ctx.chart("grid_winner_folds.svg", [svg_macro("lines", layout)],
                               "The grid winner's test accuracy, precision, recall and F1 per fold"))
        panels = [svg_macro("roc", p) for p in charts.roc_panels(
            [(f"fold {m.fold}", m.roc, False) for m in winners]) if p.curves]
        out.append(ctx.chart("grid_winner_roc.svg", panels, "The grid winner's test ROC per fold"))
    return out


def per_class_section(ctx: ReportContext) -> Section:
    models = [ctx.s.model(ctx.s.best_single), *ctx.s.champions,
              *(ctx.s.model(n) for n in ctx.s.best_ensembles.values())]
    seen, blocks = set(), [Text("Precision, recall and F1 per class (one class against the rest; binary too) and "
                                "their macro average, on the test set.")]
    for m in models:
        if m.name in seen or not m.per_class:
            continue
        seen.add(m.name)
        blocks += [Text(m.name, "heading"), Table(["Class", "Precision", "Recall", "Specificity", "F1", "Support"], [
            Row([Cell(r.name)] + [Cell(fmt_num(getattr(r, k)), numeric=True) for k in ("precision", "recall", "specificity", "f1")]
                + [Cell(str(r.support), numeric=True)], "best" if r.name == "macro average" else None)
            for r in m.per_class])]
    return Section("per-class", "Per-class metrics", blocks)


def parameters_section(ctx: ReportContext) -> Section:
    return Section("parameters", "Parameters", [Table(["Stage", "Total", "Trainable"], [
        Row([Cell(p.stage), Cell(fmt_count(p.total), numeric=True), Cell(fmt_count(p.trainable), numeric=True)])
        for p in ctx.s.parameters], caption="Parameters of the network, and those each stage trains")])


def samples_section(ctx: ReportContext) -> Section:
    tiles = []
    for cls, paths in ctx.s.samples.items():
        for i, path in enumerate(paths):
            name = f"sample_{_safe(cls)}_{i}.png"
            png = ctx.figures.thumbnail(Path(path), name) if ctx.figures else None
            tiles.append(Fig(png, ctx.figure_link(name), f"{cls}: {Path(path).name}"))
    return Section("samples", "Sample images", [Text("Test images of each class (the first of each in split order)."),
                                                Gallery(tiles)])


def curves_section(ctx: ReportContext) -> Section:
    blocks: list[Any] = [Text("Training curves saved by each unit (train vs validation loss and accuracy per epoch).")]
    by_scenario: dict[str, list[Fig]] = {}
    for m in ctx.s.single_models:
        path = ctx.run_dir / m.curves
        by_scenario.setdefault(m.scenario, []).append(Fig(
            path if path.is_file() else None, f"../{md_path(m.curves)}",
            f"{m.name} · fold {m.fold} · best stage {m.best_stage or NA}"))
    for scenario, tiles in by_scenario.items():
        blocks += [Text(f"Scenario {scenario}", "heading"), Gallery(tiles)]
    return Section("curves", "Training curves", blocks)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


__all__ = ["ReportContext", "augmentation_text", "champion_section", "config_section", "confusion_section",
           "curves_section", "data_section", "ensemble_section", "grid_section", "parameters_section",
           "per_class_section", "roc_section", "samples_section", "selective_section", "single_section",
           "split_section", "subject_section", "sweep_section", "tests_section", "tta_section"]

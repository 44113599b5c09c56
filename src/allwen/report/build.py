"""Build the run report (HTML, Markdown, CSV) from the validated ``report/summary.json``.

The report only reads saved results: it never imports training code, so it can be rebuilt
anywhere a run folder is copied. It leads with its answers: the questions in plain words,
one summary table (best single model, champions, best ensembles), the statistics used and a
forest plot of every model; the details follow, folded. The content is assembled once as a
small view (sections of blocks) and rendered by two Jinja2 templates (``templates/``), so
the HTML and the Markdown always say the same thing.
"""

from __future__ import annotations

import base64
import csv
import io
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

from allwen.evaluation.results import Ensemble, Metrics, ModelResult, SingleModel, Summary, load_summary
from allwen.io import atomic_write
from allwen.report import charts
from allwen.report.format import NA, fmt_ci, fmt_count, fmt_num, fmt_p
from allwen.report.questions import answer_questions

log = logging.getLogger(__name__)

METRIC_ORDER = ("accuracy", "balanced_accuracy", "precision", "recall", "specificity", "f1", "kappa", "auc")
METRIC_LABELS = {
    "accuracy": "Accuracy", "balanced_accuracy": "Bal. accuracy", "precision": "Precision",
    "recall": "Recall", "specificity": "Specificity", "f1": "F1", "kappa": "Kappa", "auc": "AUC",
}
for _name in ("precision", "recall", "f1"):
    for _avg in ("macro", "weighted"):
        METRIC_LABELS[f"{_name}_{_avg}"] = f"{METRIC_LABELS[_name]} ({_avg})"
HEADLINE_METRICS = ("accuracy", "kappa", "auc", "balanced_accuracy", "precision", "recall", "f1")
FIGURE_NAMES = frozenset({"forest.svg", "roc.svg", "coverage.svg"})
TEST_NAMES = {"mcnemar": "McNemar exact", "delong": "DeLong", "permutation": "subject permutation"}
TEST_SELECTION_NOTE = (
    "champions were selected on the TEST set, as in the original study; "
    "their test metrics are optimistic"
)


# --------------------------------------------------------------------------- view


@dataclass
class Cell:
    """A table cell: main text, an optional interval under it and optional small lines."""

    text: str
    sub: str | None = None
    lines: Sequence[str] = ()
    numeric: bool = False
    badge: str | None = None


@dataclass
class Row:
    cells: list[Cell]
    cls: str | None = None


@dataclass
class Table:
    headers: list[str]
    rows: list[Row]
    caption: str | None = None
    kind: str = "table"

    def align(self, i: int) -> str:
        return "---:" if any(r.cells[i].numeric for r in self.rows if i < len(r.cells)) else "---"


@dataclass
class Text:
    """``para``, ``heading``, ``pre`` or a ``callout`` (level warn | error | info)."""

    text: str
    kind: str = "para"
    level: str = "info"

    @property
    def label(self) -> str:
        return "Warning" if self.level == "error" else "Note"


@dataclass
class Items:
    """``bullets`` (strings) or ``kv`` (label, value pairs)."""

    items: list[Any]
    kind: str = "bullets"


@dataclass
class Fig:
    """A PNG on disk (embedded in HTML) and the relative path Markdown links to."""

    path: Path | None
    md_path: str
    caption: str
    kind: str = "figure"

    @property
    def data_uri(self) -> str | None:
        if self.path is None or not self.path.is_file():
            return None
        return "data:image/png;base64," + base64.b64encode(self.path.read_bytes()).decode("ascii")


@dataclass
class Chart:
    """An SVG drawn by ``charts.svg.j2``: inline in HTML, a file in ``figures/`` for Markdown."""

    svg: str
    md_path: str
    caption: str
    kind: str = "chart"


@dataclass
class Confusions:
    """Confusion matrices as shaded tables: (title, class names, rows of cells)."""

    items: list[tuple[str, list[str], list[list[dict[str, Any]]]]]
    kind: str = "confusions"


@dataclass
class Gallery:
    figures: list[Fig]
    kind: str = "gallery"


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Any] = field(default_factory=list)
    folded: bool = True


@dataclass
class Document:
    title: str
    meta: str
    callouts: list[Text]
    answers: Section
    headline: list[Any]
    sections: list[Section]
    footer: list[str]


# --------------------------------------------------------------------------- formatting


def metric_cell(metrics: Metrics, key: str, warnings: Sequence[Any] = ()) -> Cell:
    """A metric with its interval, and a mark naming each statistics warning that affects it."""
    marks = [f"! {w.kind.replace('_', ' ')}" for w in warnings]
    sub = fmt_ci(metrics.interval(key))
    if sub is None and any(w.kind == "one_cluster" for w in warnings):
        sub = "no interval"
    return Cell(fmt_num(metrics.value(key)), sub=sub, numeric=True, lines=marks)


def _md_path(path: str) -> str:
    """Percent-encode what breaks a Markdown link (spaces, brackets) but keep names readable."""
    return quote(path, safe="/=,+@:")


# --------------------------------------------------------------------------- builder


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


class _Builder:
    """Turns one summary into a Document, drawing figures on the way."""

    def __init__(self, run_dir: Path, summary: Summary) -> None:
        self.run_dir = run_dir
        self.fig_dir = run_dir / "report" / "figures"
        self.s = summary
        self.answers = answer_questions(summary)
        self.metric = summary.selection.champion_metric
        self.drawn: set[str] = set()

    def _metric(self, m: ModelResult, key: str) -> Cell:
        return metric_cell(m.metrics, key, self.s.evaluation.warnings_for(key, m.name))

    def _warning_texts(self) -> list[str]:
        return [f"{w.what}: {w.consequence}." for w in self.s.evaluation.warnings]

    def _chart(self, name: str, svgs: list[str], caption: str) -> Chart | Text:
        """Write ``figures/<name>`` (for Markdown) and return the chart block (inline in HTML)."""
        if not svgs:
            return Text(f"{caption}: {NA} (nothing to draw).")
        svg = "\n".join(svgs)
        if len(svgs) > 1:  # one standalone file holding every panel side by side
            svg = ('<svg xmlns="http://www.w3.org/2000/svg">' + "".join(
                f'<g transform="translate({i * 440},0)">{panel}</g>' for i, panel in enumerate(svgs)) + "</svg>")
        write_utf8(self.fig_dir / name, svg)
        self.drawn.add(name)
        return Chart("\n".join(svgs), f"figures/{name}", caption)

    def document(self) -> Document:
        s = self.s
        meta = " · ".join((f"created {s.created}", f"allwen {s.allwen_version}", f"classes: {', '.join(s.classes)}",
                           f"positive class: {s.positive_class}" if s.positive_class else "multi-class",
                           f"split {s.split.method}", f"{s.split.n_test} test images"))
        callouts = []
        if s.selection.test_set_selection:
            callouts.append(Text(f"{TEST_SELECTION_NOTE}.", "callout", "error"))
        leaks = [x for x in s.split.leakage if x.leaks]
        if leaks:
            callouts.append(Text(f"LEAKAGE: {len(leaks)} split pair(s) share subjects, pseudo-patients, duplicate or "
                                 "near-duplicate images; their metrics are not independent (see Split and leakage).",
                                 "callout", "error"))
        if s.split.pseudo_patients:
            callouts.append(Text(f"No patient ids: pseudo-patients ({s.split.pseudo_patients}) stood in for patients "
                                 "in the split, the intervals and the subject-level results.", "callout", "warn"))
        callouts += [Text(f"STATISTICS WARNING: {t}", "callout", "warn") for t in self._warning_texts()]
        several_folds = len(s.split.folds) > 1
        has_tests = bool(s.comparisons.scenarios or s.comparisons.best_single_vs_ensembles or self.answers)
        sections = [self.config_section(), self.data_section(), self.split_section(),
                    *([self.sweep_section()] if s.sweep else []),
                    *([self.grid_section()] if s.scenarios else []),
                    self.single_section(),
                    *([self.tta_section()] if self.s.single_models_tta else []),
                    *([self.champion_section()] if several_folds and s.champions else []),
                    *([self.ensemble_section()] if several_folds and s.ensembles else []),
                    *([self.tests_section()] if has_tests else []),
                    *([self.subject_section()] if s.subject_level else []),
                    self.roc_section(),
                    *([self.selective_section()] if s.selective else []),
                    self.per_class_section(), self.confusion_section(),
                    *([self.parameters_section()] if s.parameters else []),
                    *([self.samples_section()] if s.samples else []),
                    self.curves_section()]
        return Document(f"allwen report: {s.name}", meta, callouts, self.answers_section(), self.headline(),
                        sections, self.footer())

    # ---- first screen

    def answers_section(self) -> Section:
        blocks: list[Any] = []
        caution = [f"Caution: {t}" for t in self._warning_texts()]  # every answer rests on the test intervals
        for q in self.answers:
            blocks += [Text(q.question, "question"), Text(q.answer)] + [Text(c) for c in caution]
        if not self.answers:
            blocks += self.study_answers() + [Text(c) for c in caution]
        blocks += self.subject_answer()
        return Section("questions", "Answers", blocks, folded=False)

    def subject_answer(self) -> list[Any]:
        """Is a patient's sample called right? The best single model over the test subjects."""
        if not self.s.subject_level:
            return []
        r = self.s.subject_level[0]
        what = "pseudo-patients" if self.s.split.pseudo_patients else "subjects"
        return [Text(f"Per patient ({what}), is the sample called right?", "question"),
                Text(f"{r.model} calls {fmt_num(r.accuracy)} {fmt_ci(r.accuracy_ci) or ''} of the "
                     f"{r.n_subjects} test {what} right by their cells' mean probability (AUC over {what} "
                     f"{fmt_num(r.auc)}; median {fmt_num(r.cells_per_subject.get('median'), 0)} cells each, "
                     f"see Patient-level results).")]

    def study_answers(self) -> list[Any]:
        """What a run that is not shaped like Experiment A answers: a sweep's winner per step,
        a grid's winner, a single model's metrics and trainable parameters."""
        s, out = self.s, []
        for step in (s.sweep.steps if s.sweep else []):
            won = next(v for v in step.values if v.settings == step.winner)
            out.append(Text(f"Sweep step {step.step} ({', '.join(step.keys)}): winner "
                            f"{_settings(step.winner)}, mean validation {step.metric} {fmt_num(won.mean)}."))
        if s.grid_winner:
            row = next(r for r in s.scenarios if r.name == s.grid_winner)
            out.append(Text(f"Grid winner (best mean validation {s.grid_metric}) {row.name}, with validation "
                            f"{s.grid_metric} {fmt_num(row.val[s.grid_metric].mean)} and test accuracy "
                            f"{fmt_num(row.test['accuracy'].mean)} (mean over {row.n_folds} fold(s))."))
        if len(s.single_models) == 1:
            m = s.single_models[0]
            trainable = max((p.trainable for p in s.parameters if p.trainable is not None), default=None)
            p, r, f = self.averaged(("precision", "recall", "f1"))
            out.append(Text(f"Single model {m.name}: test accuracy {fmt_num(m.metrics.accuracy)}, "
                            f"{METRIC_LABELS[p].lower()} {fmt_num(m.metrics.value(p))}, {METRIC_LABELS[r].lower()} "
                            f"{fmt_num(m.metrics.value(r))}, {METRIC_LABELS[f]} {fmt_num(m.metrics.value(f))}; "
                            f"{fmt_count(trainable)} trainable parameters."))
        return out or [Text(f"No research questions answered in this summary ({NA}).")]

    def headline(self) -> list[Any]:
        from allwen.report.paper import paper_blocks

        return [*paper_blocks(self.s), self.summary_table(), self.method_text(), self.forest()]

    def averaged(self, names: Sequence[str]) -> list[str]:
        """``names`` with precision, recall and F1 under the run's ``evaluation.average``."""
        return [self.s.averaged(k) for k in names]

    def average_note(self) -> str:
        avg = self.s.averaged("f1").partition("_")[2] or "binary"
        if avg == "binary":
            return f"precision, recall and F1 of the positive class ({self.s.positive_class})"
        return f"precision, recall and F1 {avg}-averaged over the classes (evaluation.average)"

    def summary_table(self) -> Table:
        models = self.s.headline_models()
        names = self.averaged(HEADLINE_METRICS)
        rows = [Row([Cell(role), Cell(m.name)] + [self._metric(m, k) for k in names],
                    "best" if i == 0 else None)
                for i, (role, m) in enumerate(models)]
        ev = self.s.evaluation
        return Table(["Role", "Model"] + [METRIC_LABELS[k] for k in names], rows,
                     caption=f"Test set: {ev.n_test} images; values with {ev.confidence:.0%} intervals; "
                             f"{self.average_note()}")

    def method_text(self) -> Text:
        ev = self.s.evaluation
        return Text(f"Intervals: {ev.interval_method}. Paired tests: {ev.paired_method}; Holm's correction "
                    "within each family.")

    def forest(self) -> Chart | Text:
        s = self.s
        champions = {c.name for c in s.champions}
        rows = []
        for m in s.single_models:
            group = "best single" if m.name == s.best_single else "champion" if m.name in champions else "single"
            rows.append(self._forest_row(m.name, group, m))
        rows += [self._forest_row(e.name, e.kind, e) for e in s.ensembles]
        layout = charts.forest(rows, [("accuracy", "test accuracy"), ("kappa", "test kappa")],
                               s.model(s.best_single).metrics.accuracy)
        return self._chart("forest.svg", [svg_macro("forest", layout)],
                           f"Every model's test accuracy and kappa with {s.evaluation.confidence:.0%} intervals "
                           "(dashed line: the best single model's accuracy)")

    @staticmethod
    def _forest_row(label: str, group: str, model: ModelResult) -> charts.ForestRow:
        values = {}
        for key in ("accuracy", "kappa"):
            ci = model.metrics.interval(key) or (None, None)
            values[key] = (model.metrics.value(key), ci[0], ci[1])
        return charts.ForestRow(label, group, values)

    def footer(self) -> list[str]:
        ev = self.s.evaluation
        return [f"Intervals: {ev.interval_method}.", f"Paired tests: {ev.paired_method}; Holm's correction within "
                "each family of comparisons.", "Research software: not for diagnostic use."]

    # ---- details

    def config_section(self) -> Section:
        cfg, s = self.s.config, self.s
        grid = cfg.scenarios or {}
        pairs = [("Backbone", cfg.model.backbone),
                 ("Image size", f"{cfg.data.image_size} x {cfg.data.image_size} px" if cfg.data.image_size else "native"),
                 ("Scenario grid", "; ".join(f"{k} = {', '.join(map(str, v))}" for k, v in grid.items()) or "none"),
                 ("Folds", str(len(s.split.folds))), ("Split method", s.split.method),
                 ("Augmentation", augmentation_text(cfg)),
                 ("Ensemble weightings", ", ".join(cfg.ensemble.weightings)),
                 ("Champions", f"best {self.metric} on {s.selection.champion_by}")]
        return Section("config", "Configuration", [Items(pairs, "kv")])

    def data_section(self) -> Section:
        d = self.s.data
        total = d.n_images or sum(d.classes.values())
        rows = [Row([Cell(c), Cell(str(n), numeric=True), Cell(f"{n / total:.1%}" if total else NA, numeric=True),
                     Cell(fmt_num(d.n_subjects.get(c)), numeric=True)]) for c, n in d.classes.items()]
        blocks: list[Any] = [Items([("Source", d.source or NA), ("Root", d.root or NA), ("Images", fmt_num(d.n_images)),
                                    ("Duplicate groups", str(d.n_duplicate_groups)),
                                    ("Imbalance (largest / smallest class)", fmt_num(d.imbalance, 2))], "kv")]
        blocks.append(Table(["Class", "Images", "Share", "Subjects"], rows) if rows else Text(f"Per-class counts: {NA}."))
        return Section("data", "Data", blocks)

    def split_section(self) -> Section:
        sp = self.s.split
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
        if g.get("pseudo_patients"):
            used = "grouped this split" if g.get("pseudo_patients_used") else "checked only (not used by this split)"
            blocks.append(Text(f"Pseudo-patients ({used}): {g.get('n_pseudo_patients')} "
                               f"{g.get('pseudo_patients_described')}."))
        if "near_duplicate_groups" in g:
            blocks.append(Text(f"Near-duplicates: {g['near_duplicate_groups']} groups "
                               f"({g.get('images_in_near_duplicate_groups', 0)} images; perceptual hash within "
                               f"{g.get('phash_distance')} of 256 bits"
                               + (f", feature cosine >= {g['feature_cosine']}" if g.get("feature_pairs") else "")
                               + ")."))
        blocks += [Text(n) for n in sp.notes]
        if sp.leakage_summary:
            blocks.append(Text(sp.leakage_summary, "pre"))
        return Section("split", "Split and leakage", blocks)

    def subject_section(self) -> Section:
        """Patient-level results: each test subject's cells aggregated, per headline model."""
        s = self.s
        what = f"pseudo-patients ({s.split.pseudo_patients})" if s.split.pseudo_patients else "subjects"
        blocks: list[Any] = [Text(
            f"Each test {what.split(' ')[0][:-1]}'s cells aggregated: mean class probability and the share of cells "
            "called ALL; the call is the class of highest mean probability. Accuracy with a "
            f"{s.evaluation.confidence:.0%} bootstrap interval over {what}; AUC over {what}.")]
        rows = []
        for r in s.subject_level:
            c = r.cells_per_subject
            rows.append(Row([Cell(r.role), Cell(r.model), Cell(str(r.n_subjects), numeric=True),
                             Cell(fmt_num(r.accuracy), sub=fmt_ci(r.accuracy_ci), numeric=True),
                             Cell(fmt_num(r.auc), numeric=True),
                             Cell(", ".join(f"{k} {v}" for k, v in r.n_per_class.items())),
                             Cell(f"{fmt_num(c.get('min'), 0)} / {fmt_num(c.get('median'), 1)} / {fmt_num(c.get('max'), 0)}")]))
        blocks.append(Table(["Role", "Model", "Subjects", "Accuracy", "AUC", "Per class", "Cells min / median / max"],
                            rows, caption=f"Test {what}"))
        first = s.subject_level[0]
        classes = s.classes
        blocks.append(Table(["Subject", "Cells", "True", "Called", "Share called ALL"] + [f"P({c})" for c in classes], [
            Row([Cell(r.subject), Cell(str(r.n_cells), numeric=True), Cell(r.label), Cell(r.predicted),
                 Cell(fmt_num(r.share_called_all), numeric=True)] +
                [Cell(fmt_num(p), numeric=True) for p in r.mean_proba], None if r.label == r.predicted else "leak")
            for r in first.rows], caption=f"{first.model}: every test subject"))
        return Section("subjects", "Patient-level results", blocks)

    def _metric_headers(self) -> list[str]:
        return [METRIC_LABELS[k] for k in self.averaged(METRIC_ORDER)]

    def _metric_cells(self, m: ModelResult) -> list[Cell]:
        return [self._metric(m, k) for k in self.averaged(METRIC_ORDER)]

    def single_section(self) -> Section:
        blocks: list[Any] = [Text(f"Test-set metrics of every trained unit (scenario x fold); 'Val {self.metric}' is "
                                  "the validation score used for champion selection.")]
        by_scenario: dict[str, list[SingleModel]] = {}
        for m in self.s.single_models:
            by_scenario.setdefault(m.scenario, []).append(m)
        for scenario, models in by_scenario.items():
            blocks.append(Text(f"Scenario {scenario}", "heading"))
            blocks.append(Table(["Model", "Fold", "Best stage", f"Val {self.metric}"] + self._metric_headers(), [
                Row([Cell(m.name, badge="best single" if m.name == self.s.best_single else None), Cell(str(m.fold)),
                     Cell(m.best_stage or NA), Cell(fmt_num(m.val_metrics.get(self.metric)), numeric=True)]
                    + self._metric_cells(m), "best" if m.name == self.s.best_single else None)
                for m in models]))
        return Section("single-models", "Single models", blocks)

    def tta_section(self) -> Section:
        """``evaluation.tta``: each single model's test metrics without and with the 8 dihedral views."""
        tta = {m.name: m for m in self.s.single_models_tta}
        tests = {c.a: c for c in self.s.comparisons.tta_vs_plain if c.metric == "accuracy"}

        def paired(name: str) -> Cell:
            c = tests.get(name)
            return Cell(NA if c is None else f"{c.diff:+.3f}", lines=[] if c is None else
                        [f"{TEST_NAMES[c.test]} p={fmt_p(c.p)}, Holm {fmt_p(c.p_holm)}"], numeric=True)

        rows = [Row([Cell(m.name), Cell(views)] + self._metric_cells(e) + [paired(e.name) if e is not m else Cell("")])
                for m in self.s.single_models
                for views, e in (("1 (plain)", m), ("8 (TTA)", tta.get(m.name + "+tta"))) if e is not None]
        return Section("tta", "Test-time augmentation", [
            Text("Test metrics of every single model on the plain images and averaged over the 8 dihedral views "
                 "(4 rotations x 2 mirror images): the same weights, no retraining. The last column is the TTA "
                 "model's accuracy minus the plain one's, with a paired test on the same test images (Holm-corrected "
                 "over the units). A head trained only on upright, unmirrored images can lose accuracy to TTA."),
            Table(["Model", "Views"] + self._metric_headers() + ["TTA - plain accuracy"], rows)])

    def champion_section(self) -> Section:
        blocks: list[Any] = [Text(f"One champion per scenario: the fold with the best {self.metric} on the "
                                  f"{self.s.selection.champion_by} set.")]
        if self.s.selection.test_set_selection:
            blocks.append(Text(f"{TEST_SELECTION_NOTE}.", "callout", "error"))
        blocks.append(Table(["Champion", "Scenario", "Fold", f"Val {self.metric}"] + self._metric_headers(), [
            Row([Cell(m.name), Cell(m.scenario), Cell(str(m.fold)), Cell(fmt_num(m.val_metrics.get(self.metric)),
                                                                       numeric=True)] + self._metric_cells(m))
            for m in self.s.champions]) if self.s.champions else Text(f"No champions ({NA})."))
        return Section("champions", "Champions", blocks)

    @staticmethod
    def _spread_cell(e: Ensemble) -> Cell:
        sp = e.spread
        verdict = ("same test decisions as the plain average: indistinguishable from uniform"
                   if sp.indistinguishable_from_uniform else
                   f"differs from the plain average on {1 - sp.agreement_with_uniform:.1%} of test images")
        return Cell(f"{sp.min:.3f}-{sp.max:.3f}", lines=[f"max |w - 1/{len(e.weights)}| = {sp.max_deviation:.3f}", verdict])

    def ensemble_section(self) -> Section:
        ens = self.s.ensembles
        blocks: list[Any] = [Text(
            "Weighted Ensembles of Networks: 'inter' combines the folds of one scenario, 'intra' the scenario "
            "champions, 'scenarios' (greedy) the scenarios' fold averages, selected greedily on out-of-fold "
            "validation predictions. Weights are normalised member scores (greedy: selection counts). The "
            f"highlighted rows are the best of each kind by {self.s.selection.champion_by} {self.metric}, the rule "
            "every choice of this run follows.")]
        if not ens:
            blocks.append(Text(f"No ensembles in this run ({NA})."))
            return Section("ensembles", "Weighted ensembles (WEN)", blocks)
        weighted = [e for e in ens if e.weighting not in ("uniform", "vote")]
        same = [e for e in weighted if e.spread.indistinguishable_from_uniform]
        blocks.append(Text(f"{len(same)} of {len(weighted)} score- or greedy-weighted ensembles make exactly the test "
                           "decisions of the plain (uniform) average of their members: for them the weighting is "
                           "indistinguishable from uniform.", "callout", "info"))
        best = set(self.s.best_ensembles.values())
        blocks.append(Table(["Ensemble", "Kind", "Weighting", "Members: weight", "Weight spread"]
                            + [METRIC_LABELS[k] for k in HEADLINE_METRICS], [
            Row([Cell(e.name, lines=[e.note] if e.note else [], badge="best of its kind" if e.name in best else None),
                 Cell(e.kind), Cell(e.weighting),
                 Cell(f"{len(e.members)} members", lines=[f"{m}: {w:.3f}" for m, w in zip(e.members, e.weights)]),
                 self._spread_cell(e)] + [self._metric(e, k) for k in HEADLINE_METRICS],
                "best" if e.name in best else None)
            for e in ens]))
        facts = self.s.questions.best_weighting if self.s.questions else None
        if facts is not None:
            blocks.append(Table(["Weighting", "Ensembles", "Mean test accuracy"], [
                Row([Cell(m.weighting), Cell(str(m.n), numeric=True), Cell(fmt_num(m.mean), numeric=True)],
                    "best" if m.weighting == facts.best_study else None) for m in facts.means],
                caption="Mean test accuracy of the ensembles of each weighting"))
        return Section("ensembles", "Weighted ensembles (WEN)", blocks)

    def tests_section(self) -> Section:
        alpha = 1 - self.s.evaluation.confidence
        blocks: list[Any] = [Text(f"Paired tests: {self.s.evaluation.paired_method}. Differences are A - B with a "
                                  "paired bootstrap interval over the same resamples as the metrics.")]
        for q in self.answers:
            if q.evidence:
                blocks += [Text(q.question, "heading"), Items(q.evidence)]
        for title, rows in (("Scenario champions against each other" if self.s.champions else "Scenarios against each other",
                             self.s.comparisons.scenarios),
                            ("Each ensemble against the best single model", self.s.comparisons.best_single_vs_ensembles)):
            blocks.append(Text(title, "heading"))
            if not rows:
                blocks.append(Text(f"{NA}: no comparisons recorded."))
                continue
            out = []
            for r in rows:
                significant = r.p_holm is not None and r.p_holm < alpha
                out.append(Row([Cell(r.a), Cell(r.b), Cell(TEST_NAMES[r.test]), Cell(r.metric),
                                Cell(NA if r.diff is None else f"{r.diff:+.3f}", sub=fmt_ci(r.diff_ci), numeric=True),
                                Cell(fmt_p(r.p), numeric=True), Cell(fmt_p(r.p_holm), numeric=True),
                                Cell("yes" if significant else "no")], "sig" if significant else None))
            blocks.append(Table(["A", "B", "Test", "Metric", "Difference (A - B) [CI]", "p", "p (Holm)",
                                 f"Significant (Holm, alpha {alpha:.2f})"], out))
        return Section("tests", "Statistical tests", blocks)

    def roc_section(self) -> Section:
        s = self.s
        reference = s.model(s.best_single)
        entries = [(f"best single: {reference.name}", reference.roc, True)]
        entries += [(f"champion {c.name}", c.roc, False) for c in s.champions if c.name != reference.name]
        entries += [(name, s.model(name).roc, False) for name in s.best_ensembles.values()]
        panels = [svg_macro("roc", p) for p in charts.roc_panels(entries) if p.curves]
        title = "Test ROC: best single model (dashed), champions and the most accurate ensemble of each kind"
        return Section("roc", "ROC curves", [self._chart("roc.svg", panels, title)])

    def selective_section(self) -> Section:
        """When not to answer: accuracy on answered test images against coverage, per champion and best ensemble."""
        rows = self.s.selective
        target = rows[0].target_accuracy
        entries = [(r.name, [p.model_dump() for p in r.curve], r.model_dump()) for r in rows]
        chart = self._chart("coverage.svg", [svg_macro("coverage", charts.coverage_panel(entries, target))],
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

    def confusion_section(self) -> Section:
        models = [*self.s.champions, *(self.s.model(n) for n in self.s.best_ensembles.values())]
        if self.s.best_single not in {m.name for m in models}:
            models.insert(0, self.s.model(self.s.best_single))
        return Section("confusion", "Confusion matrices", [
            Text("The best single model, the champions and the most accurate ensemble of each kind on the test set: "
                 "rows true, columns predicted; colour is the share of each true class (row)."),
            Confusions([(m.name, self.s.classes, charts.confusion_view(m.confusion, self.s.classes)) for m in models])])

    def sweep_section(self) -> Section:
        blocks: list[Any] = [Text("Each step trains its grid with the earlier steps' winners fixed; the winner is the "
                                  "value with the best mean validation metric over folds (ties: the earlier value). "
                                  "The last step is this run's own grid.")]
        for step in self.s.sweep.steps:
            metric = step.metric
            blocks.append(Text(f"Step {step.step}: {', '.join(step.keys)} (winner {_settings(step.winner)})",
                               "heading"))
            blocks.append(Table(["Value", "Train accuracy (mean)", f"Val {metric} (mean)", "sd", "Units"], [
                Row([Cell(_settings(v.settings), badge="winner" if v.settings == step.winner else None),
                     Cell(fmt_num(v.train_accuracy), numeric=True),
                     Cell(fmt_num(v.mean), numeric=True), Cell(fmt_num(v.sd), numeric=True),
                     Cell(str(len(v.units)), numeric=True)], "best" if v.settings == step.winner else None)
                for v in step.values]))
            series = [(f"validation {metric}", [v.mean for v in step.values])]
            if any(v.train_accuracy is not None for v in step.values):
                series.insert(0, ("train accuracy", [v.train_accuracy for v in step.values]))
            layout = charts.bars(f"step {step.step}: train and validation",
                                 [_settings(v.settings, keys=False) for v in step.values],
                                 series, ", ".join(step.keys), "mean over folds")
            blocks.append(self._chart(f"sweep_step_{step.step}.svg", [svg_macro("lines", layout)],
                                      f"Sweep step {step.step}: training accuracy and validation {metric} per value"))
        return Section("sweep", "Sweep", blocks, folded=False)

    def grid_section(self) -> Section:
        s = self.s
        metric = s.grid_metric or "accuracy"
        cols = [k for k in self.averaged(("accuracy", "precision", "recall", "f1", "kappa", "auc"))
                if all(k in r.test for r in s.scenarios)]
        blocks: list[Any] = [Text(f"Every configuration's validation and test metrics, mean (sd) over folds; the grid "
                                  f"winner has the best mean validation {metric} (ties: the earlier configuration); "
                                  f"{self.average_note()}.")]

        def cell(ms: Any) -> Cell:
            return Cell(fmt_num(ms.mean), sub=None if ms.sd is None else f"sd {fmt_num(ms.sd)}", numeric=True)

        evaluated = any(r.train_eval_accuracy.mean is not None for r in s.scenarios)
        headers = (["Train accuracy (evaluated)"] if evaluated else []) + ["Train accuracy (running)", f"Val {metric}"]
        headers += [f"Test {METRIC_LABELS.get(k, k)}" for k in cols]

        def row(r: Any, label: str) -> Row:
            train = r.train.get("accuracy")
            first = [cell(r.train_eval_accuracy)] if evaluated else []
            return Row([Cell(label, badge="grid winner" if r.name == s.grid_winner else None), *first,
                        cell(train) if train else Cell(NA, numeric=True), cell(r.val[metric])]
                       + [cell(r.test[k]) for k in cols], "best" if r.name == s.grid_winner else None)

        keys = list(s.scenarios[0].settings) if s.scenarios else []
        if len(keys) < 2:
            blocks.append(Table(["Configuration"] + headers, [row(r, _settings(r.settings)) for r in s.scenarios]))
        else:  # C: one table per batch size, a row per epoch count (the last varied key)
            last = keys[-1]
            groups: dict[str, list[Any]] = {}
            for r in s.scenarios:
                groups.setdefault(_settings({k: v for k, v in r.settings.items() if k != last}), []).append(r)
            blocks.append(Text("Train accuracy (evaluated) is the kept model on its training images in eval mode after "
                               "training (train_eval_accuracy), the number Experiment C's training-accuracy tables "
                               "show; the running one is the kept epoch's, as training reported it (over the epoch's "
                               "batches, augmented, dropout on), so it is not comparable to the validation accuracy."))
            for label, rows in groups.items():
                blocks.append(Text(label, "heading"))
                blocks.append(Table([last.split(".")[-1]] + headers,
                                    [row(r, _settings({last: r.settings[last]}, keys=False)) for r in rows]))
        blocks += self.grid_charts()
        return Section("grid", "Grid", blocks, folded=False)

    def grid_charts(self) -> list[Any]:
        """Test accuracy against the last varied key, one line per value of the others (C: vs
        epochs, one line per batch size); with folds, per-fold metrics and ROC of the winner (D)."""
        s, out = self.s, []
        keys = list(s.scenarios[0].settings)
        last = keys[-1]

        def x_of(value: Any) -> Any:  # a section scenario's value is a mapping: its text is the x label
            return _settings(value) if isinstance(value, dict) else value

        xs = list(dict.fromkeys(x_of(r.settings[last]) for r in s.scenarios))
        groups: dict[str, dict[Any, float | None]] = {}
        for r in s.scenarios:
            label = _settings({k: v for k, v in r.settings.items() if k != last}) or "test accuracy"
            groups.setdefault(label, {})[x_of(r.settings[last])] = r.test["accuracy"].mean
        layout = charts.lines(f"test accuracy vs {last}", xs, [(g, [vals.get(x) for x in xs]) for g, vals in groups.items()],
                              last, "test accuracy (mean over folds)")
        out.append(self._chart("grid_test_accuracy.svg", [svg_macro("lines", layout)],
                               f"Test accuracy against {last}"))
        winners = [m for m in s.single_models if m.scenario == s.grid_winner]
        if len(winners) > 1:
            metrics = ("accuracy", "precision", "recall", "f1")
            layout = charts.bars(f"{s.grid_winner}: test metrics per fold", [m.fold for m in winners],
                                 [(k, [m.metrics.value(k) for m in winners]) for k in metrics], "fold", "test value",
                                 width=max(420, 60 + 90 * len(winners)))
            out.append(self._chart("grid_winner_folds.svg", [svg_macro("lines", layout)],
                                   "The grid winner's test accuracy, precision, recall and F1 per fold"))
            panels = [svg_macro("roc", p) for p in charts.roc_panels(
                [(f"fold {m.fold}", m.roc, False) for m in winners]) if p.curves]
            out.append(self._chart("grid_winner_roc.svg", panels, "The grid winner's test ROC per fold"))
        return out

    def per_class_section(self) -> Section:
        models = [self.s.model(self.s.best_single), *self.s.champions,
                  *(self.s.model(n) for n in self.s.best_ensembles.values())]
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

    def parameters_section(self) -> Section:
        return Section("parameters", "Parameters", [Table(["Stage", "Total", "Trainable"], [
            Row([Cell(p.stage), Cell(fmt_count(p.total), numeric=True), Cell(fmt_count(p.trainable), numeric=True)])
            for p in self.s.parameters], caption="Parameters of the network, and those each stage trains")])

    def samples_section(self) -> Section:
        tiles = []
        for cls, paths in self.s.samples.items():
            for i, path in enumerate(paths):
                png = _thumbnail(Path(path), self.fig_dir / f"sample_{_safe(cls)}_{i}.png")
                tiles.append(Fig(png, f"figures/sample_{_safe(cls)}_{i}.png", f"{cls}: {Path(path).name}"))
        return Section("samples", "Sample images", [Text("Test images of each class (the first of each in split order)."),
                                                    Gallery(tiles)])

    def curves_section(self) -> Section:
        blocks: list[Any] = [Text("Training curves saved by each unit (train vs validation loss and accuracy per epoch).")]
        by_scenario: dict[str, list[Fig]] = {}
        for m in self.s.single_models:
            path = self.run_dir / m.curves
            by_scenario.setdefault(m.scenario, []).append(Fig(
                path if path.is_file() else None, f"../{_md_path(m.curves)}",
                f"{m.name} · fold {m.fold} · best stage {m.best_stage or NA}"))
        for scenario, tiles in by_scenario.items():
            blocks += [Text(f"Scenario {scenario}", "heading"), Gallery(tiles)]
        return Section("curves", "Training curves", blocks)


def _settings(settings: dict[str, Any], keys: bool = True) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" if keys else str(v) for k, v in settings.items())


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def _thumbnail(source: Path, out: Path, side: int = 96) -> Path | None:
    """A small PNG of a sample image (None when the image is gone)."""
    from PIL import Image

    if not source.is_file():
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        thumb = image.convert("RGB")
        thumb.thumbnail((side, side))
        atomic_write(out, lambda tmp: thumb.save(tmp, format="PNG"))
    return out


# --------------------------------------------------------------------------- rendering


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
    header = ["group", "name", "kind", "scenario", "fold", "weighting", *METRIC_ORDER]
    header += [f"{k}_{end}" for k in METRIC_ORDER for end in ("lo", "hi")]
    rows = []
    for group, models in (("single", summary.single_models), ("champion", summary.champions),
                          ("ensemble", summary.ensembles)):
        for m in models:
            row: dict[str, Any] = {"group": group, "name": m.name, "kind": getattr(m, "kind", "single"),
                                   "scenario": m.scenario, "fold": getattr(m, "fold", None),
                                   "weighting": getattr(m, "weighting", None)}
            for k in METRIC_ORDER:
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


def headline_document(run_dir: Path, summary: Summary) -> Document:
    """The report's view without drawing anything (for ``allwen report --headline``)."""
    from allwen.report.paper import paper_blocks

    builder = _Builder(run_dir, summary)
    return Document(f"allwen report: {summary.name}", "", [], builder.answers_section(),
                    [*paper_blocks(summary), builder.summary_table(), builder.method_text()], [], [])


def build_report(run_dir: Path, links: Sequence[tuple[str, str]] = ()) -> Path:
    """Write report/index.html, report.md, metrics.csv and figures/; return index.html.

    ``links`` are (text, relative href) pairs shown under the title, e.g. the comparison
    page of the demo's two protocols. Each file is written atomically.
    """
    run_dir = Path(run_dir)
    summary = load_summary(run_dir)
    report_dir = run_dir / "report"
    (report_dir / "figures").mkdir(parents=True, exist_ok=True)
    builder = _Builder(run_dir, summary)
    doc = builder.document()
    for name in FIGURE_NAMES - builder.drawn:  # a figure this summary cannot support any more
        (report_dir / "figures" / name).unlink(missing_ok=True)
    write_utf8(report_dir / "metrics.csv", render_csv(summary))
    write_utf8(report_dir / "report.md", render_markdown("report.md.j2", doc=doc, links=links))
    index = write_utf8(report_dir / "index.html", render_html("report.html.j2", doc=doc, links=links))
    log.info("report written to %s", index)
    return index


__all__ = ["build_report", "load_summary", "render_csv", "render_html", "render_markdown"]

"""Build the run report (HTML, Markdown, CSV) from ``RUN/report/summary.json``.

The report only reads saved results: it never imports training code, so it can be
rebuilt anywhere a run folder is copied. Content is assembled once as a small list of
blocks and rendered twice (HTML and Markdown), so both formats always say the same thing.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence, Union
from urllib.parse import quote

from allwen.io import atomic_write
from allwen.report import figures

log = logging.getLogger(__name__)

METRIC_ORDER = (
    "accuracy", "balanced_accuracy", "precision", "recall", "specificity", "f1", "kappa", "auc",
)
METRIC_LABELS = {
    "accuracy": "Accuracy", "balanced_accuracy": "Bal. accuracy", "precision": "Precision",
    "recall": "Recall", "specificity": "Specificity", "f1": "F1", "kappa": "Kappa", "auc": "AUC",
}
NA = "n/a"
FIGURE_NAMES = frozenset({
    "roc_overlay.png", "roc_ensembles_by_weighting.png", "confusion_champions.png", "confusion_ensembles.png",
})
TEST_NAMES = {"mcnemar": "McNemar", "delong": "DeLong"}
TEST_SELECTION_NOTE = (
    "champions were selected on the TEST set, as in the original study; "
    "their test metrics are optimistic"
)


# --------------------------------------------------------------------------- blocks


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


@dataclass
class Heading:
    text: str


@dataclass
class Para:
    text: str
    question: bool = False


@dataclass
class Callout:
    text: str
    level: str = "warn"  # warn | error | info

    @property
    def label(self) -> str:
        return "Warning" if self.level == "error" else "Note"


@dataclass
class Pre:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class KeyValues:
    pairs: list[tuple[str, str]]


@dataclass
class FigureRef:
    """A PNG on disk (embedded in HTML) and the relative path Markdown links to."""

    path: Path | None
    md_path: str
    caption: str


@dataclass
class Gallery:
    figures: list[FigureRef]


Block = Union[Heading, Para, Callout, Pre, Bullets, KeyValues, Table, FigureRef, Gallery]


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    title: str
    meta: str
    header: KeyValues
    callouts: list[Callout]
    sections: list[Section]
    footer: list[str]


# --------------------------------------------------------------------------- formatting


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt_num(value: Any, digits: int = 3) -> str:
    """Three decimals for floats, integers as is, n/a for anything missing or non-finite."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if _is_number(value):
        return f"{value:.{digits}f}"
    return NA


def fmt_ci(ci: Any) -> str | None:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_is_number(v) for v in ci):
        return f"[{ci[0]:.3f}, {ci[1]:.3f}]"
    return None


def fmt_p(p: Any) -> str:
    """p-values keep their magnitude when tiny instead of collapsing to 0.000."""
    if not _is_number(p):
        return NA
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _text(value: Any) -> str:
    if value is None or value == "":
        return NA
    if isinstance(value, float):
        return fmt_num(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value) if value else NA
    return str(value)


def metric_cell(metrics: dict[str, Any] | None, key: str) -> Cell:
    metrics = metrics or {}
    ci = metrics.get("ci") if isinstance(metrics.get("ci"), dict) else {}
    return Cell(fmt_num(metrics.get(key)), sub=fmt_ci(ci.get(key)), numeric=True)


# --------------------------------------------------------------------------- summary access


def load_summary(run_dir: Path) -> dict[str, Any]:
    """Read summary.json, turning absence or corruption into one clear error."""
    path = Path(run_dir) / "report" / "summary.json"
    if not path.is_file():
        raise ValueError(
            f"{path} not found: evaluate the run first with `allwen run` "
            f"(or rebuild it from saved predictions with `allwen report {run_dir}`)"
        )
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); rebuild it with `allwen report {run_dir}`") from err
    if not isinstance(summary, dict):
        raise ValueError(f"{path} must hold a JSON object; rebuild it with `allwen report {run_dir}`")
    return summary


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def metric_keys(models: Iterable[dict[str, Any]]) -> list[str]:
    """Known metrics in a fixed order, then any extra numeric ones the evaluator added."""
    found: dict[str, None] = {}
    for model in models:
        for key, value in _dict(model.get("metrics")).items():
            if key != "ci" and (_is_number(value) or value is None):
                found[key] = None
    ordered = [k for k in METRIC_ORDER if k in found]
    return ordered + [k for k in found if k not in METRIC_ORDER]


def _score(model: dict[str, Any], metric: str) -> tuple[float, float]:
    metrics = _dict(model.get("metrics"))
    main, auc = metrics.get(metric), metrics.get("auc")
    return (main if _is_number(main) else -math.inf, auc if _is_number(auc) else -math.inf)


def best_of(models: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """Highest test ``metric`` (AUC breaks ties); a descriptive marker, not a selection."""
    scored = [m for m in models if _score(m, metric)[0] > -math.inf]
    return max(scored, key=lambda m: _score(m, metric)) if scored else None


def best_single(summary: dict[str, Any], metric: str) -> dict[str, Any] | None:
    """The evaluator's reference model when its comparisons name one, else the best on test."""
    singles = _list(summary.get("single_models")) + _list(summary.get("champions"))
    by_name = {m.get("name"): m for m in singles}
    if summary.get("best_single") in by_name:  # chosen by the evaluator on validation data
        return by_name[summary["best_single"]]
    named = {r.get("b") for r in _list(_dict(summary.get("comparisons")).get("best_single_vs_ensembles"))}
    if len(named) == 1 and (name := named.pop()) in by_name:
        return by_name[name]
    return best_of(_list(summary.get("single_models")), metric) or best_of(singles, metric)


def _scenarios(models: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for model in models:
        groups.setdefault(str(model.get("scenario") or NA), []).append(model)
    return groups


# --------------------------------------------------------------------------- sections


class _Builder:
    """Turns one summary into a Document, drawing figures on the way."""

    def __init__(self, run_dir: Path, summary: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.report_dir = run_dir / "report"
        self.fig_dir = self.report_dir / "figures"
        self.s = summary
        self.singles = _list(summary.get("single_models"))
        self.champions = _list(summary.get("champions"))
        self.ensembles = _list(summary.get("ensembles"))
        self.selection = _dict(summary.get("selection"))
        self.evaluation = _dict(summary.get("evaluation"))
        self.config = _dict(summary.get("config"))
        self.classes = [str(c) for c in summary.get("classes") or []]
        self.metric = str(self.selection.get("champion_metric") or "accuracy")
        self.metrics = metric_keys(self.singles + self.champions + self.ensembles)
        self.best_single = best_single(summary, self.metric)
        self.best_ensemble = best_of(self.ensembles, self.metric)
        self.drawn: set[str] = set()

    # ---- header

    def document(self) -> Document:
        s = self.s
        name = str(s.get("name") or "experiment")
        meta = " · ".join(
            part for part in (
                f"created {_text(s.get('created'))}",
                f"allwen {_text(s.get('allwen_version'))}",
                f"classes: {', '.join(self.classes) or NA}",
                f"positive class: {s['positive_class']}" if s.get("positive_class") else "multi-class",
            )
        )
        callouts = []
        if self.selection.get("test_set_selection"):
            callouts.append(Callout(f"{TEST_SELECTION_NOTE}.", "error"))
        sections = [
            self.data_section(), self.split_section(), self.single_section(), self.champion_section(),
            self.ensemble_section(), self.roc_section(), self.confusion_section(), self.curves_section(),
            self.questions_section(),
        ]
        if _list(s.get("single_models_tta")):  # evaluation.tta
            sections.insert(3, self.tta_section())
        return Document(f"allwen report: {name}", meta, self.config_summary(), callouts, sections, self.footer())

    def config_summary(self) -> KeyValues:
        cfg = self.config
        model, data, split, train = (_dict(cfg.get(k)) for k in ("model", "data", "split", "train"))
        grid = _dict(cfg.get("scenarios"))
        lrs = grid.get("train.lr") or ([train["lr"]] if "lr" in train else None)
        folds = split.get("folds") or len(_list(_dict(self.s.get("split")).get("folds"))) or None
        image_size = data.get("image_size")
        pairs = [
            ("Backbone", _text(model.get("backbone"))),
            ("Image size", f"{image_size} x {image_size} px" if image_size
             else "native" if "image_size" in data else NA),
            ("Learning rates", ", ".join(f"{v:g}" if _is_number(v) else str(v) for v in lrs) if lrs else NA),
            ("Folds", _text(folds)),
            ("Split method", _text(_dict(self.s.get("split")).get("method"))),
        ]
        other = {k: v for k, v in grid.items() if k != "train.lr"}
        if other:
            pairs.append(("Scenario grid", "; ".join(f"{k} = {_text(v)}" for k, v in other.items())))
        weightings = _dict(cfg.get("ensemble")).get("weightings")
        if weightings:
            pairs.append(("Ensemble weightings", _text(weightings)))
        pairs.append((
            "Champions",
            f"best {self.metric} on {_text(self.selection.get('champion_by'))}",
        ))
        return KeyValues(pairs)

    def footer(self) -> list[str]:
        conf = self.evaluation.get("confidence")
        level = f"{conf:.0%}" if _is_number(conf) else NA
        return [
            f"Intervals are {level} percentile bootstrap intervals over test images "
            f"({_text(self.evaluation.get('bootstrap'))} resamples, "
            f"{_text(self.evaluation.get('n_test'))} test images).",
            "p-values are McNemar exact (accuracy) / DeLong (AUC) tests with Holm correction "
            "for multiple comparisons.",
        ]

    # ---- data and split

    def data_section(self) -> Section:
        data = _dict(self.s.get("data"))
        counts = _dict(data.get("classes"))
        subjects = data.get("n_subjects")
        subjects = subjects if isinstance(subjects, dict) else {}
        total = data.get("n_images") if _is_number(data.get("n_images")) else sum(
            v for v in counts.values() if _is_number(v))
        rows = [
            Row([Cell(str(c)), Cell(_text(n), numeric=True),
                 Cell(f"{n / total:.1%}" if _is_number(n) and total else NA, numeric=True),
                 Cell(_text(subjects.get(c)), numeric=True)])
            for c, n in counts.items()
        ]
        blocks: list[Block] = [KeyValues([
            ("Source", _text(data.get("source"))),
            ("Root", _text(data.get("root"))),
            ("Images", _text(data.get("n_images"))),
            ("Duplicate groups", _text(data.get("n_duplicate_groups"))),
            ("Imbalance (largest / smallest class)", fmt_num(data.get("imbalance"), 2)),
        ])]
        if rows:
            blocks.append(Table(["Class", "Images", "Share", "Subjects"], rows))
        else:
            blocks.append(Para(f"Per-class counts: {NA}."))
        return Section("data", "Data", blocks)

    def split_section(self) -> Section:
        split = _dict(self.s.get("split"))
        blocks: list[Block] = [KeyValues([
            ("Method", _text(split.get("method"))), ("Test images", _text(split.get("n_test"))),
        ])]
        folds = _list(split.get("folds"))
        if folds:
            blocks.append(Table(["Fold", "Train", "Validation"], [
                Row([Cell(str(i)), Cell(_text(f.get("train")), numeric=True), Cell(_text(f.get("val")), numeric=True)])
                for i, f in enumerate(folds)
            ], caption="Images per fold"))
        leakage = _list(split.get("leakage"))
        leaks = 0
        rows = []
        for item in leakage:
            shared = [item.get("shared_subjects"), item.get("shared_duplicate_groups")]
            leaking = any(_is_number(v) and v > 0 for v in shared)
            leaks += leaking
            rows.append(Row([
                Cell(_text(item.get("fold"))), Cell(f"{_text(item.get('a'))} vs {_text(item.get('b'))}"),
                Cell(_text(item.get("n_a")), numeric=True), Cell(_text(item.get("n_b")), numeric=True),
                Cell(_text(shared[0]), numeric=True), Cell(_text(shared[1]), numeric=True),
                Cell(", ".join(str(e) for e in item.get("examples") or []) or "-"),
                Cell("LEAKS" if leaking else "ok"),
            ], "leak" if leaking else None))
        if leaks:
            blocks.append(Callout(f"LEAKAGE: {leaks} split pair(s) share subjects or duplicate images; "
                                   "their metrics are not independent.", "error"))
        if rows:
            blocks.append(Table(
                ["Fold", "Sides", "n A", "n B", "Shared subjects", "Shared duplicate groups", "Examples", "Status"],
                rows, caption="Leakage check between split sides",
            ))
        else:
            blocks.append(Para(f"Leakage check: {NA}."))
        if split.get("leakage_summary"):
            blocks.append(Pre(str(split["leakage_summary"])))
        return Section("split", "Split and leakage", blocks)

    # ---- model tables

    def _metric_headers(self) -> list[str]:
        return [METRIC_LABELS.get(k, k) for k in self.metrics]

    def _val_cell(self, model: dict[str, Any]) -> Cell:
        return Cell(fmt_num(_dict(model.get("val_metrics")).get(self.metric)), numeric=True)

    def single_section(self) -> Section:
        blocks: list[Block] = [Para(
            f"Test-set metrics of every trained unit (scenario x fold) with "
            f"{self._level()} bootstrap intervals; 'Val {self.metric}' is the validation score "
            "used for champion selection."
        )]
        if not self.singles:
            blocks.append(Para(f"No single models in this summary ({NA})."))
        best_name = (self.best_single or {}).get("name")
        for scenario, models in _scenarios(self.singles).items():
            blocks.append(Heading(f"Scenario {scenario}"))
            rows = [
                Row(
                    [Cell(str(m.get("name") or NA), badge="best single" if m.get("name") == best_name else None),
                     Cell(_text(m.get("fold"))), Cell(_text(m.get("best_stage"))), self._val_cell(m)]
                    + [metric_cell(m.get("metrics"), k) for k in self.metrics],
                    "best" if m.get("name") == best_name else None,
                )
                for m in models
            ]
            blocks.append(Table(["Model", "Fold", "Best stage", f"Val {self.metric}"] + self._metric_headers(), rows))
        return Section("single-models", "Single models", blocks)

    def tta_section(self) -> Section:
        """Each single model's test metrics without and with test-time augmentation (8 dihedral views)."""
        tta = {m.get("plain"): m for m in _list(self.s.get("single_models_tta"))}
        rows = [
            Row([Cell(str(m.get("name") or NA)), Cell(views)] + [metric_cell(_dict(e).get("metrics"), k) for k in self.metrics])
            for m in self.singles
            for views, e in (("1 (plain)", m), ("8 (TTA)", tta.get(m.get("name"))))
            if e
        ]
        return Section("tta", "Test-time augmentation", [
            Para("Test metrics of every single model on the plain images and averaged over the 8 dihedral views "
                 "(4 rotations x 2 mirror images); the same weights, no retraining."),
            Table(["Model", "Views"] + self._metric_headers(), rows),
        ])

    def champion_section(self) -> Section:
        blocks: list[Block] = [Para(
            f"One champion per scenario: the fold with the best {self.metric} on the "
            f"{_text(self.selection.get('champion_by'))} set."
        )]
        if self.selection.get("test_set_selection"):
            blocks.append(Callout(f"{TEST_SELECTION_NOTE}.", "error"))
        if not self.champions:
            blocks.append(Para(f"No champions in this summary ({NA})."))
        else:
            rows = [
                Row([Cell(str(m.get("name") or NA)), Cell(_text(m.get("scenario"))), Cell(_text(m.get("fold"))),
                     Cell(_text(m.get("selected_by"))), self._val_cell(m)]
                    + [metric_cell(m.get("metrics"), k) for k in self.metrics])
                for m in self.champions
            ]
            blocks.append(Table(
                ["Champion", "Scenario", "Fold", "Selected by", f"Val {self.metric}"] + self._metric_headers(), rows))
        return Section("champions", "Champions", blocks)

    def ensemble_section(self) -> Section:
        blocks: list[Block] = [Para(
            "Weighted Ensembles of Networks: 'inter' combines the folds of one scenario, 'intra' "
            "combines models across scenarios. Weights are normalised member scores. "
            f"The highlighted row has the highest test {self.metric} (AUC breaks ties)."
        )]
        if not self.ensembles:
            blocks.append(Para(f"No ensembles in this run ({NA})."))
            return Section("ensembles", "Weighted ensembles (WEN)", blocks)
        best_name = (self.best_ensemble or {}).get("name")
        rows = []
        for e in self.ensembles:
            members = [str(m) for m in e.get("members") or []]
            weights = e.get("weights") or []
            pairs = [
                f"{m}: {fmt_num(weights[i]) if i < len(weights) else NA}" for i, m in enumerate(members)
            ]
            note = [str(e["note"])] if e.get("note") else []
            is_best = e.get("name") == best_name
            rows.append(Row(
                [Cell(str(e.get("name") or NA), lines=note, badge="best" if is_best else None),
                 Cell(_text(e.get("kind"))), Cell(_text(e.get("scenario"))), Cell(_text(e.get("weighting"))),
                 Cell(f"{len(members)} members" if members else NA, lines=pairs)]
                + [metric_cell(e.get("metrics"), k) for k in self.metrics],
                "best" if is_best else None,
            ))
        blocks.append(Table(
            ["Ensemble", "Kind", "Scenario", "Weighting", "Members: weight"] + self._metric_headers(), rows))
        return Section("ensembles", "Weighted ensembles (WEN)", blocks)

    # ---- figures

    def _figure(self, path: Path | None, caption: str) -> Block:
        if path is not None:
            self.drawn.add(path.name)
        if path is None:
            return Para(f"{caption}: {NA} (nothing to draw).")
        return FigureRef(path, f"figures/{_md_path(path.name)}", caption)

    def roc_section(self) -> Section:
        best_weighting = (self.best_ensemble or {}).get("weighting")
        entries: list[figures.RocEntry] = []
        reference = self.best_single
        if reference:
            entries.append(figures.RocEntry(f"best single: {reference.get('name')}", _dict(reference.get("roc")), True))
        for champ in self.champions:
            if reference is None or champ.get("name") != reference.get("name"):
                entries.append(figures.RocEntry(f"champion {champ.get('name')}", _dict(champ.get("roc"))))
        chosen = [e for e in self.ensembles if e.get("weighting") == best_weighting]
        entries += [figures.RocEntry(str(e.get("name")), _dict(e.get("roc"))) for e in chosen]
        weighting_text = f", and the {best_weighting}-weighted ensembles" if chosen else ""
        title = f"Test ROC: best single model, champions{weighting_text}"
        blocks: list[Block] = [self._figure(
            figures.roc_overlay(entries, self.fig_dir / "roc_overlay.png", title),
            f"{title} (dashed black: best single model; legend gives each AUC)",
        )]
        groups: dict[str, list[figures.RocEntry]] = {}
        for e in self.ensembles:
            groups.setdefault(f"weighting: {e.get('weighting') or NA}", []).append(
                figures.RocEntry(str(e.get("name")), _dict(e.get("roc"))))
        if reference:
            for group in groups.values():
                group.insert(0, figures.RocEntry("best single", _dict(reference.get("roc")), True))
        if len(groups) > 1:
            path = figures.roc_grid(groups, self.fig_dir / "roc_ensembles_by_weighting.png")
            if path is not None:
                blocks.append(self._figure(path, "All ensembles, one panel per weighting"))
        return Section("roc", "ROC curves", blocks)

    def confusion_section(self) -> Section:
        blocks: list[Block] = [Para("Counts on the test set; colour is the share of each true class (row).")]
        for group, models, filename in (
            ("Champions", self.champions, "confusion_champions.png"),
            ("Ensembles", self.ensembles, "confusion_ensembles.png"),
        ):
            matrices = [(str(m.get("name")), m.get("confusion")) for m in models]
            path = figures.confusion_grid(matrices, self.classes, self.fig_dir / filename) if matrices else None
            blocks.append(self._figure(path, f"{group}: confusion matrices (rows true, columns predicted)"))
        return Section("confusion", "Confusion matrices", blocks)

    def curves_section(self) -> Section:
        blocks: list[Block] = [Para("Training curves saved by each unit during training (loss and metric per epoch).")]
        if not self.singles:
            blocks.append(Para(f"No units ({NA})."))
        for scenario, models in _scenarios(self.singles).items():
            blocks.append(Heading(f"Scenario {scenario}"))
            tiles = []
            for m in models:
                rel = m.get("curves")
                path = self.run_dir / rel if isinstance(rel, str) and rel else None
                caption = f"{m.get('name')} · fold {_text(m.get('fold'))} · best stage {_text(m.get('best_stage'))}"
                tiles.append(FigureRef(path if path and path.is_file() else None,
                                       f"../{_md_path(rel)}" if isinstance(rel, str) and rel else "", caption))
            blocks.append(Gallery(tiles))
        return Section("curves", "Training curves", blocks)

    # ---- questions

    def questions_section(self) -> Section:
        blocks: list[Block] = []
        questions = _list(self.s.get("questions"))
        if not questions:
            blocks.append(Para(f"No research questions answered in this summary ({NA})."))
        for q in questions:
            blocks.append(Para(str(q.get("question") or q.get("id") or NA), question=True))
            blocks.append(Para(str(q.get("answer") or NA)))
            evidence = [str(e) for e in q.get("evidence") or []]
            if evidence:
                blocks.append(Bullets(evidence))
        comparisons = _dict(self.s.get("comparisons"))
        for key, title in (("scenarios", "Scenario comparisons"),
                           ("best_single_vs_ensembles", "Best single model vs ensembles")):
            blocks.append(Heading(title))
            rows = _list(comparisons.get(key))
            if rows:
                blocks.append(self.comparison_table(rows))
            else:
                blocks.append(Para(f"{NA}: no comparisons recorded."))
        return Section("questions", "Questions and statistical tests", blocks)

    def comparison_table(self, rows: list[dict[str, Any]]) -> Table:
        conf = self.evaluation.get("confidence")
        alpha = 1 - conf if _is_number(conf) else 0.05
        out = []
        for r in rows:
            diff_key = next((k for k in r if k.startswith("diff_") and k != "diff_ci"), None)
            diff = f"{diff_key[5:]} {r[diff_key]:+.3f}" if diff_key and _is_number(r.get(diff_key)) else NA
            p_holm = r.get("p_holm")
            significant = _is_number(p_holm) and p_holm < alpha
            out.append(Row([
                Cell(_text(r.get("a"))), Cell(_text(r.get("b"))),
                Cell(TEST_NAMES.get(str(r.get("test")).lower(), _text(r.get("test")))),
                Cell(fmt_num(r.get("statistic")), numeric=True), Cell(diff, sub=fmt_ci(r.get("diff_ci")), numeric=True),
                Cell(fmt_p(r.get("p")), numeric=True), Cell(fmt_p(p_holm), numeric=True),
                Cell("yes" if significant else "no" if _is_number(p_holm) else NA),
            ], "sig" if significant else None))
        return Table(["A", "B", "Test", "Statistic", "Difference (A - B) [CI]", "p", "p (Holm)",
                      f"Significant (Holm, alpha {alpha:.2f})"], out)

    def _level(self) -> str:
        conf = self.evaluation.get("confidence")
        return f"{conf:.0%}" if _is_number(conf) else ""


# --------------------------------------------------------------------------- HTML


def _css() -> str:
    try:
        return resources.files("allwen.report").joinpath("templates/report.css").read_text()
    except (FileNotFoundError, OSError):
        log.warning("report.css template missing; the report is rendered unstyled")
        return ""


def _h(text: str) -> str:
    return html.escape(text, quote=True)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html_cell(cell: Cell, tag: str = "td") -> str:
    inner = _h(cell.text)
    if cell.badge:
        inner += f' <span class="badge">{_h(cell.badge)}</span>'
    if cell.sub:
        inner += f' <span class="ci">{_h(cell.sub)}</span>'
    for line in cell.lines:
        inner += f'<span class="lines">{_h(line)}</span>'
    cls = ' class="num"' if cell.numeric else ""
    return f"<{tag}{cls}>{inner}</{tag}>"


def _html_figure(fig: FigureRef) -> str:
    if fig.path is None or not fig.path.is_file():
        return f'<figure><div class="na">{NA}: image not found</div><figcaption>{_h(fig.caption)}</figcaption></figure>'
    return (f'<figure><img src="{_data_uri(fig.path)}" alt="{_h(fig.caption)}" loading="lazy">'
            f"<figcaption>{_h(fig.caption)}</figcaption></figure>")


def _html_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h3>{_h(block.text)}</h3>"
    if isinstance(block, Para):
        return f'<p class="question">{_h(block.text)}</p>' if block.question else f"<p>{_h(block.text)}</p>"
    if isinstance(block, Callout):
        return f'<div class="callout {block.level}"><strong>{block.label}:</strong> {_h(block.text)}</div>'
    if isinstance(block, Pre):
        return f"<pre>{_h(block.text)}</pre>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_h(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, KeyValues):
        return '<dl class="kv">' + "".join(f"<dt>{_h(k)}</dt><dd>{_h(v)}</dd>" for k, v in block.pairs) + "</dl>"
    if isinstance(block, Table):
        head = "".join(f"<th>{_h(h)}</th>" for h in block.headers)
        body = "".join(
            (f'<tr class="{row.cls}">' if row.cls else "<tr>") + "".join(_html_cell(c) for c in row.cells) + "</tr>"
            for row in block.rows
        )
        caption = f"<caption>{_h(block.caption)}</caption>" if block.caption else ""
        return f'<div class="scroll"><table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    if isinstance(block, FigureRef):
        return _html_figure(block)
    if isinstance(block, Gallery):
        return '<div class="gallery">' + "".join(_html_figure(f) for f in block.figures) + "</div>"
    raise TypeError(f"unknown report block {type(block).__name__}")


def render_html(doc: Document) -> str:
    """One self-contained page: inline CSS, images as data URIs, no scripts or links out."""
    nav = "".join(f'<a href="#{s.id}">{_h(s.title)}</a>' for s in doc.sections)
    sections = "".join(
        f'<section id="{s.id}"><h2>{_h(s.title)}</h2>' + "".join(_html_block(b) for b in s.blocks) + "</section>"
        for s in doc.sections
    )
    callouts = "".join(_html_block(c) for c in doc.callouts)
    footer = "".join(f"<p>{_h(line)}</p>" for line in doc.footer)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_h(doc.title)}</title><style>{_css()}</style></head>\n"
        f'<body><div class="page"><header><h1>{_h(doc.title)}</h1><p class="meta">{_h(doc.meta)}</p>'
        f"{_html_block(doc.header)}{callouts}<nav>{nav}</nav></header>\n"
        f"<main>{sections}</main>\n<footer>{footer}</footer></div></body></html>\n"
    )


# --------------------------------------------------------------------------- Markdown


def _md_path(path: str) -> str:
    """Percent-encode what breaks a Markdown link (spaces, brackets) but keep names readable."""
    return quote(path, safe="/=,+@:")


def _md(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_cell(cell: Cell) -> str:
    parts = [cell.text]
    if cell.badge:
        parts[0] = f"**{cell.text}** ({cell.badge})"
    if cell.sub:
        parts.append(cell.sub)
    text = " ".join(parts)
    if cell.lines:
        text += "<br>" + "<br>".join(cell.lines)
    return _md(text)


def _md_figure(fig: FigureRef) -> str:
    if fig.path is None or not fig.path.is_file() or not fig.md_path:
        return f"*{fig.caption}: {NA} (image not found)*\n"
    return f"![{fig.caption}]({fig.md_path})\n\n*{fig.caption}*\n"


def _md_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"### {block.text}\n"
    if isinstance(block, Para):
        return f"**{block.text}**\n" if block.question else f"{block.text}\n"
    if isinstance(block, Callout):
        return f"> **{block.label}:** {block.text}\n"
    if isinstance(block, Pre):
        return f"```\n{block.text}\n```\n"
    if isinstance(block, Bullets):
        return "".join(f"- {i}\n" for i in block.items)
    if isinstance(block, KeyValues):
        return "".join(f"- **{k}:** {v}\n" for k, v in block.pairs)
    if isinstance(block, Table):
        lines = [f"*{block.caption}*\n"] if block.caption else []
        lines.append("| " + " | ".join(_md(h) for h in block.headers) + " |")
        lines.append("|" + "|".join("---:" if any(r.cells[i].numeric for r in block.rows if i < len(r.cells))
                                    else "---" for i in range(len(block.headers))) + "|")
        lines += ["| " + " | ".join(_md_cell(c) for c in row.cells) + " |" for row in block.rows]
        return "\n".join(lines) + "\n"
    if isinstance(block, FigureRef):
        return _md_figure(block)
    if isinstance(block, Gallery):
        return "\n".join(_md_figure(f) for f in block.figures)
    raise TypeError(f"unknown report block {type(block).__name__}")


def render_markdown(doc: Document) -> str:
    parts = [f"# {doc.title}\n", f"{doc.meta}\n", _md_block(doc.header)]
    parts += [_md_block(c) for c in doc.callouts]
    for section in doc.sections:
        parts.append(f'<a id="{section.id}"></a>\n\n## {section.title}\n')
        parts += [_md_block(b) for b in section.blocks]
    parts.append("---\n")
    parts += [f"{line}\n" for line in doc.footer]
    return "\n".join(parts)


# --------------------------------------------------------------------------- CSV


def metrics_rows(summary: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """One row per evaluated model with raw (unrounded) values, for downstream analysis."""
    groups = (("single", _list(summary.get("single_models"))), ("champion", _list(summary.get("champions"))),
              ("ensemble", _list(summary.get("ensembles"))))
    keys = metric_keys(m for _, models in groups for m in models)
    header = ["group", "name", "kind", "scenario", "fold", "weighting", *keys]
    header += [f"{k}_{end}" for k in keys for end in ("lo", "hi")]
    rows = []
    for group, models in groups:
        for m in models:
            metrics = _dict(m.get("metrics"))
            ci = _dict(metrics.get("ci"))
            row: dict[str, Any] = {
                "group": group, "name": m.get("name"),
                "kind": m.get("kind") or ("single" if group != "ensemble" else None),
                "scenario": m.get("scenario"), "fold": m.get("fold"), "weighting": m.get("weighting"),
            }
            for k in keys:
                row[k] = metrics.get(k)
                bounds = ci.get(k) if isinstance(ci.get(k), (list, tuple)) and len(ci.get(k)) == 2 else (None, None)
                row[f"{k}_lo"], row[f"{k}_hi"] = bounds
            rows.append(row)
    return header, rows


def render_csv(summary: dict[str, Any]) -> str:
    header, rows = metrics_rows(summary)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


# --------------------------------------------------------------------------- entry point


def _write_utf8(path: Path, text: str) -> Path:
    """UTF-8 whatever the locale (the HTML declares utf-8)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def build_report(run_dir: Path) -> Path:
    """Write report/index.html, report.md, metrics.csv and figures/; return index.html.

    Each file is written atomically, so a report that is being rebuilt is either the old
    one or the new one, never half of each.
    """
    run_dir = Path(run_dir)
    summary = load_summary(run_dir)
    report_dir = run_dir / "report"
    (report_dir / "figures").mkdir(parents=True, exist_ok=True)
    builder = _Builder(run_dir, summary)
    doc = builder.document()
    for name in FIGURE_NAMES - builder.drawn:  # a figure this summary cannot support any more
        (report_dir / "figures" / name).unlink(missing_ok=True)
    _write_utf8(report_dir / "metrics.csv", render_csv(summary))
    _write_utf8(report_dir / "report.md", render_markdown(doc))
    index = _write_utf8(report_dir / "index.html", render_html(doc))
    log.info("report written to %s", index)
    return index


__all__ = ["build_report", "load_summary", "render_csv", "render_html", "render_markdown"]

"""The results of a run as one typed, facts-only model: ``report/summary.json``, read back validated.

Evaluation builds a :class:`Summary` and writes it; the report, the headline, the model card,
``allwen export`` and ``allwen compare`` load it with :func:`load_summary` and use its
attributes directly, so a fact is computed once and defined once, here. It holds numbers and
names, no prose: ``allwen.report`` words them. Every optional section has a default, so a
new record (a list of typed rows, say) is one field on :class:`Summary` with a default and
its own small model beside the others. Non-finite numbers are stored as ``null``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from allwen.config.schema import Config
from allwen.evaluation.metric_registry import metric_names
from allwen.runfolder import RunFolder, SweepRecord

SCHEMA_VERSION = 3

Interval = Optional[tuple[Optional[float], Optional[float]]]


def finite(value: float | None) -> float | None:
    """``value`` as a float, or None when missing, NaN or infinite (strict JSON)."""
    return float(value) if value is not None and math.isfinite(value) else None


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Sparse(_Record):
    """A record written with only the fields it was given: optional facts that a run may not
    have (an absent key stays absent in ``summary.json``, as the files it copies wrote it)."""

    @model_serializer(mode="wrap")
    def _only_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if k in self.model_fields_set}


class Metrics(BaseModel):
    """Test-set metrics and their intervals (``ci[name] = (lo, hi)``): one ``Optional[float]`` field per
    registered metric (:mod:`allwen.evaluation.metric_registry`, read when a record is made, so a metric
    registered there is a field here), ``null`` where undefined; ``ci`` last, as always written."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Optional[float]] = Field(init=False)
    ci: dict[str, Interval] = {}

    @model_validator(mode="before")
    @classmethod
    def _registered(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        names = metric_names()
        unknown = sorted(set(data) - {"ci", *names})
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)}; registered: {', '.join(names)}")
        return {**{name: data.get(name) for name in names}, "ci": data.get("ci", {})}

    @model_serializer(mode="wrap")
    def _ci_last(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out = handler(self)
        return {**{k: v for k, v in out.items() if k != "ci"}, "ci": out["ci"]} if "ci" in out else out

    def value(self, name: str) -> float | None:
        return (self.__pydantic_extra__ or {}).get(name)

    def interval(self, name: str) -> Interval:
        return self.ci.get(name)


class PerClassRow(_Record):
    """One class against the rest on the test set (the last row: the macro average)."""

    name: str
    precision: Optional[float]
    recall: Optional[float]
    specificity: Optional[float]
    f1: Optional[float]
    support: int


class RocCurve(_Record):
    """One ROC curve on the test set: false and true positive rates at each threshold."""

    fpr: list[float]
    tpr: list[float]
    auc: float


class Roc(_Sparse):
    """A model's test ROC: binary, one curve (``fpr``, ``tpr``, ``auc``); multi-class, one curve
    per class against the rest (``per_class``) and their mean ``auc``. Empty when the test set
    lacks a class (no curve is defined)."""

    fpr: list[float] = []
    tpr: list[float] = []
    per_class: dict[str, RocCurve] = {}
    auc: Optional[float] = None

    def curves(self) -> dict[str, RocCurve]:
        """Class (or ``positive``) -> curve; empty when none is defined."""
        if self.per_class:
            return dict(self.per_class)
        return {"positive": RocCurve(fpr=self.fpr, tpr=self.tpr, auc=self.auc)} if self.fpr else {}


class ModelResult(_Record):
    """What every evaluated model has: name, test metrics, confusion counts, ROC points."""

    name: str
    metrics: Metrics
    confusion: list[list[int]]
    roc: Roc = Roc()
    per_class: list[PerClassRow] = []


class SingleModel(ModelResult):
    scenario: str
    fold: int
    best_stage: Optional[str] = None
    val_metrics: dict[str, Optional[float]]
    train_metrics: dict[str, Optional[float]] = {}  # the kept epoch's training accuracy and loss (running, as Keras reports)
    train_eval_accuracy: Optional[float] = None  # the kept model on its training images in eval mode, after training
    curves: str
    test_loss: Optional[float] = None  # cross-entropy on the test images, no class weights (Keras's evaluate loss)


class Champion(SingleModel):
    selected_by: Literal["validation", "test", "test_all"]
    selection_metric: str


class WeightSpread(_Record):
    """How far an ensemble's weights are from the plain average of its members."""

    min: float
    max: float
    max_deviation: float  # largest |w - 1/m|
    agreement_with_uniform: float  # share of test images with the uniform average's label
    indistinguishable_from_uniform: bool  # the weights change no test decision


class Ensemble(ModelResult):
    kind: Literal["inter", "intra", "scenarios"]
    scenario: Optional[str] = None
    weighting: str
    members: list[str]
    weights: list[float]
    scores: list[Optional[float]]
    note: str = ""
    spread: WeightSpread


class Comparison(_Record):
    """One paired test of model a against model b on the same test images."""

    a: str
    b: str
    test: Literal["mcnemar", "delong", "permutation", "swap"]  # swap: the cluster swap test (any confusion metric)
    metric: str  # accuracy, auc; precision / recall / F1 under the run's averaging (f1_macro...), kappa
    diff: Optional[float]  # metric(a) - metric(b)
    diff_ci: Interval = None  # paired (cluster) bootstrap interval of the difference
    statistic: Optional[float] = None
    p: float
    p_holm: Optional[float] = None
    n_subjects: Optional[int] = None
    n_permutations: Optional[int] = None


class Comparisons(_Record):
    scenarios: list[Comparison] = []
    best_single_vs_ensembles: list[Comparison] = []
    tta_vs_plain: list[Comparison] = []  # evaluation.tta: each unit with the 8 views against itself on plain images
    intra_vs_inter: list[Comparison] = []  # the best intra ensemble against the best inter ensemble
    weightings: list[Comparison] = []  # the best study weighting against each other weighting of the same members
    lr_folds: list[Comparison] = []  # A's learning-rate question: every pair of scenarios over all their folds
    baselines_vs_single: list[Comparison] = []  # baseline ensembles (uniform, vote, auc, greedy): outside the study's family


class ScenarioMean(_Record):
    """A scenario's single models: mean and sd (ddof 0) of test accuracy over its folds."""

    scenario: str
    mean: float
    sd: float
    n: int


class LrEffect(_Record):
    """Does the scenario grid (the learning rate in Experiment A) change single-model accuracy?"""

    factor: str  # the grid's keys, " x "-joined
    only_lr: bool
    scenarios: list[ScenarioMean]
    significant: list[Comparison] = []  # comparisons.scenarios (accuracy) with p_holm < alpha
    min_p_holm: Optional[float] = None
    over_folds: bool = False  # tested on every fold model of each scenario (comparisons.lr_folds), not the champions
    metrics: list[str] = []  # the metrics tested (over_folds: A's five)


class WenVsSingle(_Record):
    """Does any ensemble beat the best single model (comparisons.best_single_vs_ensembles)?"""

    best_single: str
    best_single_accuracy: Optional[float]
    n_ensembles: int
    n_higher: int  # ensembles with a higher accuracy point estimate
    better: list[Comparison] = []  # significantly more accurate (p_holm < alpha)
    better_other: list[Comparison] = []  # significantly higher in precision, recall, F1 or kappa (A's other metrics)
    n_baselines: int = 0  # baseline ensembles tested outside the family (comparisons.baselines_vs_single)


class IntraBest(_Record):
    """The best intra ensemble against the best inter ensemble, both as the selection rule chose them."""

    best_intra: str
    best_intra_accuracy: Optional[float]
    best_inter: str
    best_inter_accuracy: Optional[float]
    comparison: Optional[Comparison] = None  # comparisons.intra_vs_inter (accuracy)


class WeightingMean(_Record):
    weighting: str
    mean: float  # mean test accuracy of the ensembles with this weighting
    n: int


class BestWeighting(_Record):
    """Which weighting gives the most accurate ensembles (comparisons.weightings for the paired tests)."""

    means: list[WeightingMean]
    best_study: str  # the best of the study's weightings (accuracy, F1, kappa), by the champion rule
    chosen_by: str = "test accuracy"  # the rule best_study was picked by (ensemble.champion_by, champion_metric)
    best_overall: str
    min_p_holm: Optional[float] = None
    uniform_like: list[str] = []  # study-weighted ensembles with exactly the plain average's test decisions
    n_study: int = 0


class StudyFacts(_Record):
    """The facts behind Experiment A's four questions; ``allwen.report`` words them."""

    alpha: float  # 1 - evaluation.confidence
    lr_effect: Optional[LrEffect] = None
    wen_vs_single: Optional[WenVsSingle] = None
    intra_best: Optional[IntraBest] = None
    best_weighting: Optional[BestWeighting] = None


class StatWarning(_Record):
    """A reason not to trust some intervals (:mod:`allwen.evaluation.trust`): what, how many, the
    consequence, and which classes, metrics and models it affects (empty: every one)."""

    kind: Literal["few_clusters", "one_cluster", "class_missing", "metric_undefined"]
    what: str
    count: int
    total: int
    consequence: str
    classes: list[str] = []
    metrics: list[str] = []
    models: list[str] = []

    def affects(self, metric: str, model: str | None = None) -> bool:
        return (not self.metrics or metric in self.metrics) and (model is None or not self.models
                                                                  or model in self.models)


class Statistics(_Record):
    """How the intervals and tests were computed: over subjects when the test set has them."""

    bootstrap: int
    confidence: float
    seed: int
    n_test: int
    unit: Literal["subject", "image"]
    n_subjects: Optional[int] = None  # independent test clusters (subjects merged with shared duplicates)
    interval_method: str
    paired_method: str
    clusters: Optional[str] = None  # what a cluster is: "subjects", or the pseudo-patients that stand in for them
    clusters_per_class: dict[str, int] = {}
    min_clusters: Optional[int] = None
    warnings: list[StatWarning] = []
    intervals_withheld: bool = False  # a class with one cluster: no cluster interval is reported

    def warnings_for(self, metric: str, model: str | None = None) -> list[StatWarning]:
        return [w for w in self.warnings if w.affects(metric, model)]


class Selection(_Record):
    """The rule every choice of the run followed (see :mod:`allwen.evaluation.selection`)."""

    champion_by: Literal["validation", "test", "test_all"]
    champion_metric: str
    test_set_selection: bool


class LeakageRow(_Record):
    """Shared subjects and duplicate groups between two sides of one fold (``splits/leakage.json``)."""

    fold: int
    a: str
    b: str
    n_a: int
    n_b: int
    shared_subjects: int
    shared_duplicate_groups: int
    examples: list[str] = []  # a few shared subject ids
    shared_near_duplicate_groups: int = 0  # perceptual-hash / feature near-duplicates (docs/splits.md)
    pseudo_patients: Optional[Literal["sequence", "cluster"]] = None  # what stands in for missing patient ids
    shared_pseudo_patients: int = 0
    pseudo_examples: list[str] = []

    @property
    def leaks(self) -> bool:
        return bool(self.shared_subjects or self.shared_duplicate_groups or self.shared_near_duplicate_groups
                    or self.shared_pseudo_patients)


class FoldSize(_Record):
    train: int
    val: int


class Grouping(_Sparse):
    """What the split grouped by beyond subject ids (``splits/split.json`` "grouping"): the
    pseudo-patients that stood in for missing patient ids, and the near-duplicates found."""

    pseudo_patients: Optional[Literal["sequence", "cluster"]] = None
    pseudo_patient_block: Optional[int] = None  # images per pseudo-patient
    pseudo_patients_used: bool = False  # False: only checked (the split was image-level)
    pseudo_patients_described: Optional[str] = None
    n_pseudo_patients: Optional[int] = None
    phash_distance: Optional[int] = None  # split.phash_distance (bits of 256)
    feature_cosine: Optional[float] = None  # split.feature_cosine
    phash_links: Optional[int] = None  # near pairs found by the perceptual hash
    feature_pairs: dict[str, int] = {}  # feature cache key -> near pairs found by cosine similarity
    near_duplicate_groups: Optional[int] = None
    images_in_near_duplicate_groups: Optional[int] = None


class SplitSummary(_Record):
    method: str
    n_test: int
    folds: list[FoldSize]
    notes: list[str] = []
    leakage: list[LeakageRow] = []
    leakage_summary: str = ""
    grouping: Grouping = Grouping()

    @property
    def pseudo_patients(self) -> Optional[str]:
        """What stood in for patients, in words, when pseudo-patients grouped the split."""
        g = self.grouping
        return g.pseudo_patients_described if g.pseudo_patients_used else None


class StageParameters(_Record):
    """Total and trainable parameter counts of one training stage."""

    stage: str
    total: Optional[int] = None
    trainable: Optional[int] = None
    keras_total: Optional[int] = None  # Keras's count: parameters + BatchNorm statistics
    batchnorm_statistics: Optional[int] = None


class DataSummary(_Record):
    source: Optional[str] = None
    root: Optional[str] = None
    n_images: Optional[int] = None
    classes: dict[str, int] = {}
    n_subjects: dict[str, int] = {}
    n_duplicate_groups: int = 0
    imbalance: Optional[float] = None
    unreadable: int = 0

    @field_validator("classes", "n_subjects", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value


class MeanSd(_Record):
    mean: Optional[float] = None
    sd: Optional[float] = None  # over folds (ddof 1); None with one fold


class ScenarioSummary(_Record):
    """One grid cell: its settings and each metric's mean and sd over its folds."""

    name: str
    settings: dict[str, Any] = {}  # config key -> its value: any config type (a section scenario's: a section)
    train: dict[str, MeanSd] = {}  # accuracy, loss of the kept epoch
    train_eval_accuracy: MeanSd = MeanSd()  # the kept models on their training images, eval mode
    val: dict[str, MeanSd] = {}
    test: dict[str, MeanSd] = {}
    n_folds: int = 0


class PaperComparison(_Record):
    """One headline number of the reproduced paper beside this run's value of the same metric."""

    metric: str
    paper: float
    run: Optional[float]
    low: Optional[float] = None  # this run's interval of the metric
    high: Optional[float] = None
    inside: Optional[bool] = None  # the paper's value lies in [low, high]; None without an interval
    model: str  # this run's model the number is taken from
    where: str = ""  # where the number stands in the paper
    note: str = ""
    basis: str = ""  # compare_to fold_range: which of the cell's folds the run's value is (lowest, highest, mean)
    fold_values: list[Optional[float]] = []  # compare_to fold_range: the cell's per-fold values of the metric


class ProtocolAspect(_Record):
    """One protocol fact of the paper and of this run (split level, selection, averaging, test size)."""

    aspect: Literal["split", "selected_on", "average", "test_images"]
    paper: str
    run: str
    same: bool = False


class OtherMethodRow(_Record):
    """One row of the paper's own comparison with other methods."""

    method: str
    metric: str
    value: float
    where: str = ""


class PaperProtocol(_Record):
    citation: str
    model: str
    compare_to: str
    aspects: list[ProtocolAspect] = []
    differences: list[str] = []  # the preset's own words for what else differs
    reported: str = ""  # what the paper reported, in the preset's words
    cell: Optional[str] = None  # compare_to cell / fold_range: this run's scenario of the reported cell
    contradictions: list[str] = []  # where the paper contradicts itself
    other_methods: list[OtherMethodRow] = []  # the paper's own table of other methods
class CurvePoint(_Record):
    threshold: float
    coverage: float
    accuracy: float


class SelectiveResult(_Record):
    """Referral at a confidence threshold chosen on validation for a target accuracy, judged on test.

    The threshold is the lowest whose out-of-fold validation images reach ``target_accuracy``
    (:mod:`allwen.evaluation.selective`); coverage = share of test images answered.
    """

    name: str
    kind: str  # "champion" or an ensemble kind
    target_accuracy: float
    threshold: Optional[float] = None
    achieved: bool = False
    n_validation: int = 0
    n_test: int = 0
    n_accepted: int = 0
    coverage: float = 0.0
    coverage_ci: list[Optional[float]] = []
    accuracy: Optional[float] = None
    accuracy_ci: list[Optional[float]] = []
    unit: str = "image"
    curve: list[CurvePoint] = []


class SubjectRow(_Record):
    subject: str
    n_cells: int
    label: str
    predicted: str
    mean_proba: list[float]
    share_called_all: Optional[float] = None


class CellCounts(_Record):
    """How many test cells each subject has: quartiles and mean."""

    min: Optional[float] = None
    q25: Optional[float] = None
    median: Optional[float] = None
    q75: Optional[float] = None
    max: Optional[float] = None
    mean: Optional[float] = None


class SubjectLevel(_Record):
    """One model's test predictions aggregated per subject (:mod:`allwen.evaluation.subjects`)."""

    model: str
    role: str = ""  # best single model, champion of ..., best ensemble
    n_subjects: int
    accuracy: Optional[float] = None
    accuracy_ci: Interval = None
    auc: Optional[float] = None
    n_per_class: dict[str, int] = {}
    cells_per_subject: CellCounts = CellCounts()
    mixed: int = 0
    rows: list[SubjectRow] = []


class Summary(_Record):
    """Everything the report shows, chosen and computed once by evaluation."""

    schema_version: int = SCHEMA_VERSION
    name: str
    created: str
    allwen_version: str
    classes: list[str]
    positive_class: Optional[str] = None
    average: Optional[Literal["binary", "macro", "weighted"]] = None  # evaluation.average, resolved for these classes
    data: DataSummary = DataSummary()
    split: SplitSummary
    config: Config  # the resolved config the run was evaluated with (a sweep's: its last step)
    selection: Selection
    evaluation: Statistics
    best_single: str  # the best champion, by the selection rule
    best_ensembles: dict[str, str] = {}  # kind -> the best ensemble of that kind, by the selection rule
    best_ensemble: Optional[str] = None  # the best of all ensembles, by the selection rule
    default_export: str  # what `allwen export` writes without --model: chosen on validation data only
    single_models: list[SingleModel]
    single_models_tta: list[SingleModel] = []  # evaluation.tta: the same units, 8 dihedral views averaged
    champions: list[Champion] = []
    ensembles: list[Ensemble] = []
    comparisons: Comparisons = Comparisons()
    questions: Optional[StudyFacts] = None  # Experiment A-shaped runs: the facts behind its four questions
    scenarios: list[ScenarioSummary] = []  # runs with scenarios: per-cell mean/sd over folds
    grid_winner: Optional[str] = None  # best mean validation grid_metric (ties: the earlier cell)
    grid_metric: Optional[str] = None
    sweep: Optional[SweepRecord] = None  # sweep.json of a stepwise sweep
    parameters: list[StageParameters] = []
    samples: dict[str, list[str]] = {}  # class -> a few test image paths (the report shows them)
    subject_level: list[SubjectLevel] = []  # test subjects (or pseudo-patients) aggregated, per headline model
    paper_comparison: list[PaperComparison] = []  # the preset's paper: block, number by number
    paper_protocol: Optional[PaperProtocol] = None
    selective: list[SelectiveResult] = []  # accuracy-coverage of each champion and best ensemble (issue 21)

    def averaged(self, metric: str) -> str:
        """The metric name the headline tables show for ``metric`` (``f1`` -> ``f1_macro``...)."""
        from allwen.evaluation.metrics import averaged_name, resolve_average

        return averaged_name(metric, self.average or resolve_average("auto", len(self.classes)))

    def model(self, name: str) -> ModelResult:
        for entry in (*self.single_models, *self.champions, *self.ensembles):
            if entry.name == name:
                return entry
        raise KeyError(name)

    def units_of(self, scenario: str) -> list[SingleModel]:
        return [s for s in self.single_models if s.scenario == scenario]

    def export_members(self, name: str) -> list[tuple[str, float]]:
        """The units of model ``name`` and the weight each has in its average.

        A scenario member (the greedy ensemble's) is the mean of its fold models, so each of
        its units carries the scenario's weight divided by their number."""
        model = self.model(name)
        if not isinstance(model, Ensemble):
            return [(model.name, 1.0)]
        scenarios = {s.scenario for s in self.single_models}
        out: list[tuple[str, float]] = []
        for member, weight in zip(model.members, model.weights):
            units = self.units_of(member) if member in scenarios and model.kind == "scenarios" else []
            out += [(u.name, weight / len(units)) for u in units] if units else [(member, weight)]
        return out

    def headline_models(self) -> list[tuple[str, ModelResult]]:
        """The summary table's rows: best single model, champions, best ensemble of each kind."""
        rule = f"by {self.selection.champion_by} {self.selection.champion_metric}"
        rows: list[tuple[str, ModelResult]] = [(f"best single model ({rule})", self.model(self.best_single))]
        rows += [(f"champion of {c.scenario}", c) for c in self.champions]
        rows += [(f"best {kind} ensemble ({rule})", self.model(name)) for kind, name in self.best_ensembles.items()]
        return rows


def write_summary(summary: Summary, run_dir: Path) -> Path:
    from allwen.io import atomic_write_text

    path = RunFolder(run_dir).summary_path
    atomic_write_text(path, summary.model_dump_json(indent=1))
    return path


def load_summary(run_dir: Path | RunFolder) -> Summary:
    """Read and validate ``report/summary.json``; absence or a bad file is one clear error."""
    folder = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)
    path, run_dir = folder.summary_path, folder.root
    if not path.is_file():
        raise ValueError(
            f"{path} not found: evaluate the run first with `allwen run` "
            f"(or rebuild it from saved predictions with `allwen report {run_dir}`)"
        )
    try:
        return Summary.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(
            f"{path} is not a valid allwen summary ({err.error_count()} problem(s), first at {where}: "
            f"{first['msg']}); rebuild it with `allwen report {run_dir}`"
        ) from None

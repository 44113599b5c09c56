"""A cross-validated test: every part of the data is a test side once, and the results pooled.

One hold-out puts a fifth of the patients on the test side. On Taleqani (2,612 images, no
patient ids) that is 16 pseudo-patients, two of them Benign, and an interval over 16 clusters
is too wide to be useful. ``allwen crossval`` runs the same protocol once per test part
(``split.test_part: 0..K-1``, disjoint parts that cover every image, grouped like the split),
so every pseudo-patient is tested exactly once, by models that never saw it. Each part's run
chooses its models as any run does (on its own validation data only); this module pools,
per role (the default export, the best single model, each champion and best ensemble), the
test predictions of the model that role chose in each part, and evaluates the pooled
predictions with the same statistics as one run: a cluster bootstrap over all test
pseudo-patients (or subjects), with the warnings of :mod:`allwen.evaluation.trust`.

The pooled number estimates what the protocol's models score on patients they never saw;
it is the interval a reader should quote for a new patient.

Prediction sets are measured the same way (:func:`prediction_sets`): part p's sets are
calibrated on the other parts' pooled test predictions of the same role. Those predictions
were chosen by nobody (each part's run chose its models on its own validation data and never
looked at its test side) and come from patients disjoint from part p's, so part p's coverage is
what a lab would see on new patients; a class whose calibration has fewer pseudo-patients than
``evaluation.min_clusters`` is marked unsupported (:func:`allwen.evaluation.conformal.short_classes`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import BaseModel, ConfigDict

from allwen.config import Config
from allwen.evaluation.results import Metrics, Statistics, Summary, load_summary
from allwen.runfolder import RunFolder


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PooledModel(_Record):
    """One role's pooled test result: the model each part chose for it, and the metrics over all parts."""

    role: str  # default_export | best_single | best_ensemble:<kind> | champion:<scenario>
    models: list[str]  # the model each part's run chose for the role, part 0 first
    n_test: int
    metrics: Metrics


class PartInfo(_Record):
    part: int
    run: str  # the part's run folder
    n_test: int
    default_export: Optional[str] = None


class SetsOfClass(_Record):
    """One true class's held-out images at one level."""

    n: int  # held-out images of the class
    clusters: int  # held-out subjects or pseudo-patients of the class
    calibration_clusters: int  # in the calibration of each part, the fewest over the parts
    accuracy: float  # the role's accuracy on the class: the least coverage a set holding the predicted class can have
    coverage: float  # sets as served (the predicted class always in the set)
    coverage_ci: list[Optional[float]]
    mean_size: float
    mean_size_ci: list[Optional[float]]
    raw_coverage: float  # the conformal sets alone (crepes')
    raw_empty: float  # share of the class's images whose raw set is empty


class SetsAtLevel(_Record):
    level: float
    min_calibration_clusters: int  # evaluation.min_clusters: the calibration clusters each class needs
    supported: bool  # every class had that many calibration clusters in every part
    short: dict[str, int]  # the classes that had fewer (their fewest)
    coverage: float
    coverage_ci: list[Optional[float]]
    mean_size: float
    mean_size_ci: list[Optional[float]]
    raw_coverage: float
    raw_empty: float  # share of all held-out images whose raw set is empty
    per_class: dict[str, SetsOfClass]


class PredictionSets(_Record):
    """A role's prediction sets on the pooled held-out patients, part p calibrated on the other parts."""

    role: str
    calibration: str
    method: str
    mondrian: bool
    nonempty: bool  # the sets as served hold the predicted class too
    unit: str  # what the intervals resample: image or subject
    levels: list[SetsAtLevel]


class CrossvalResult(_Record):
    """``crossval.json``: facts only (the report words them)."""

    parts: list[PartInfo]
    classes: list[str]
    n_test: int  # every labelled image, tested once
    statistics: Statistics
    models: list[PooledModel]
    prediction_sets: list[PredictionSets] = []


def roles(summary: Summary) -> dict[str, str]:
    """Role -> the model this run chose for it (names from the results model, never recomputed)."""
    out = {"default_export": summary.default_export, "best_single": summary.best_single}
    out |= {f"best_ensemble:{kind}": name for kind, name in summary.best_ensembles.items()}
    out |= {f"champion:{c.scenario}": c.name for c in summary.champions}
    return {role: name for role, name in out.items() if name}


def _test_predictions(folder: RunFolder, summary: Summary, name: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    if name in {m.name for m in summary.single_models}:
        unit = folder.unit_predictions_of(name)
        return list(unit.test_paths), np.asarray(unit.test_y), np.asarray(unit.test_proba)
    return folder.ensemble_test_predictions(name)


SETS_ROLES = ("default_export",)
SETS_CALIBRATION = ("each test part's sets calibrated on the other parts' pooled test predictions of the same role (each "
                    "part's model on patients it never saw, used by no choice), one threshold per class (Mondrian)")


def prediction_sets(role: str, y: np.ndarray, proba: np.ndarray, parts: np.ndarray, clusters: np.ndarray | None,
                    classes: list[str], cfg: Config, levels: tuple[float, ...]) -> PredictionSets:
    """Per-class coverage, set size and empty raw sets of ``role`` at each level, part p calibrated on the others."""
    from allwen.evaluation import conformal
    from allwen.evaluation.metrics import predict_labels

    ev_cfg = cfg.evaluation
    fits = conformal.cross_fit(y, proba, parts, levels, clusters=clusters, mondrian=True, nonempty=True)
    held = conformal.clusters_per_class(y, len(classes), clusters)
    right = predict_labels(proba) == y
    out = []
    for fit in fits:
        ev = conformal.evaluate_sets(y, fit.sets, classes, fit.level, clusters=clusters, n_boot=ev_cfg.bootstrap,
                                     seed=ev_cfg.seed, confidence_level=ev_cfg.confidence, stratify=ev_cfg.stratify,
                                     raw=fit.raw)
        per_class = {name: SetsOfClass(n=v["n"], clusters=held[c], calibration_clusters=fit.calibration_clusters[c],
                                       accuracy=float(right[y == c].mean()) if v["n"] else float("nan"),
                                       coverage=v["coverage"], coverage_ci=v["coverage_ci"], mean_size=v["mean_size"],
                                       mean_size_ci=v["mean_size_ci"], raw_coverage=v["raw_coverage"],
                                       raw_empty=v["raw_empty"])
                     for c, (name, v) in enumerate(ev.per_class.items())}
        short = conformal.short_classes(fit.calibration_clusters, classes, ev_cfg.min_clusters)
        out.append(SetsAtLevel(level=fit.level, min_calibration_clusters=ev_cfg.min_clusters,
                               supported=not short, short=short, coverage=ev.coverage, coverage_ci=list(ev.coverage_ci),
                               mean_size=ev.mean_size, mean_size_ci=list(ev.mean_size_ci),
                               raw_coverage=float(ev.raw_coverage), raw_empty=float(ev.raw_empty), per_class=per_class))
    return PredictionSets(role=role, calibration=SETS_CALIBRATION,
                          method="split conformal (crepes), hinge score 1 - p(class), non-smoothed p-values",
                          mondrian=True, nonempty=True, unit="image" if clusters is None else "subject", levels=out)


def pool_parts(run_dirs: list[Path], cfg: Config,
               levels: tuple[float, ...] | None = None) -> CrossvalResult:
    """Pool the test predictions of finished part runs (one per ``split.test_part``), role by role.

    ``levels``: the prediction sets' levels (default :data:`allwen.evaluation.conformal.DEFAULT_LEVELS`).
    """
    from allwen.evaluation.comparisons import TestStatistics
    from allwen.evaluation.conformal import DEFAULT_LEVELS
    from allwen.evaluation.run import subject_clusters

    summaries = [load_summary(run) for run in run_dirs]
    classes = summaries[0].classes
    for run, s in zip(run_dirs, summaries):
        if s.classes != classes:
            raise ValueError(f"{run}: classes {s.classes} differ from {run_dirs[0]}'s {classes}; "
                             "pool only the parts of one cross-validated test")
    chosen = [roles(s) for s in summaries]
    common = [r for r in chosen[0] if all(r in c for c in chosen[1:])]
    ys, clusters, probas, parts = [], [], {r: [] for r in common}, []
    seen: set[str] = set()
    for k, (run, s, picks) in enumerate(zip(run_dirs, summaries, chosen)):
        folder = RunFolder(run)
        reference: list[str] | None = None
        for role in common:
            paths, y, proba = _test_predictions(folder, s, picks[role])
            if reference is None:
                reference, order = paths, np.arange(len(paths))
                ys.append(y)
                codes = subject_clusters(folder, paths)
                clusters.append(None if codes is None else np.array([f"{k}:{c}" for c in codes]))
            else:
                where = {p: i for i, p in enumerate(paths)}
                if set(where) != set(reference):
                    raise ValueError(f"{run}: the test images of {picks[role]} differ from those of "
                                     f"{picks[common[0]]}; rebuild the run with `allwen report {run}`")
                order = np.array([where[p] for p in reference])
            probas[role].append(proba[order])
        overlap = seen.intersection(reference or [])
        if overlap:
            raise ValueError(f"{run}: {len(overlap)} test images were already tested in an earlier part "
                             f"(e.g. {sorted(overlap)[0]}); the parts must come from one config's split.test_part values")
        seen.update(reference or [])
        parts.append(PartInfo(part=k, run=str(run), n_test=len(reference or []), default_export=s.default_export))
    y = np.concatenate(ys)
    grouped = None if any(c is None for c in clusters) else np.unique(np.concatenate(clusters), return_inverse=True)[1]
    pooled = {role: np.concatenate(values) for role, values in probas.items()}
    kind = summaries[0].evaluation.clusters or "subjects"
    stats = TestStatistics(y, grouped, cfg, pooled, classes=list(classes), cluster_kind=kind)
    models = [PooledModel(role=role, models=[c[role] for c in chosen], n_test=len(y),
                          metrics=stats.entry(role, list(classes))["metrics"]) for role in common]
    part_of = np.concatenate([np.full(len(part_y), k) for k, part_y in enumerate(ys)])
    sets = [prediction_sets(role, y, pooled[role], part_of, grouped, list(classes), cfg, tuple(levels or DEFAULT_LEVELS))
            for role in SETS_ROLES if role in pooled and len(run_dirs) > 1]
    return CrossvalResult(parts=parts, classes=list(classes), n_test=len(y), statistics=stats.description(),
                          models=models, prediction_sets=sets)

"""Ensembles of a finished training grid, built from the units' saved predictions only.

A run trains scenarios (e.g. learning rates) x k folds; every unit wrote
``RUN/units/<scenario>/fold_<k>/predictions_val.csv`` (its own validation fold) and
``predictions_test.csv`` (the common held-out test set), with columns ``path``, ``y_true``
(integer class index) and ``prob_<class>`` per class in class order. From these:

* inter ensemble (``inter[<scenario>]/<weighting>``): the k fold models of one scenario,
  built for every scenario with at least two folds;
* intra ensemble (``intra/<weighting>``): the champion of every scenario, built when there
  are at least two scenarios.
* scenario ensemble (``scenarios/greedy``): with the ``greedy`` weighting and at least two
  scenarios, greedy selection (Caruana et al. 2004) over the scenarios. A scenario's
  validation prediction is its units' out-of-fold predictions concatenated (together they
  cover the training pool once); its test prediction is the mean of its fold models' test
  probabilities. ``greedy`` is not built for inter/intra ensembles: their members
  validate on different folds, so there is no common validation set to select on.

Champions are chosen by validation metric by default, so no test data touches the choice;
``champion_by="test"`` picks by one test metric and ``"test_all"`` reproduces the study's own
rule (the mean of test accuracy, precision, recall, F1 and kappa). A tie goes to the lowest fold index,
so the choice is reproducible whatever order the units were listed in.

Loading/writing files lives in the functions here; the estimator (``WeightedEnsemble``)
never touches disk. Writes are atomic (temp file beside the target, then rename).
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from allwen.ensemble.weighting import (
    SELECTION_METRICS,
    WEIGHTINGS,
    check_weighting_name,
)
from allwen.ensemble.checks import SplitTruth, check_recorded_files, redo_hint, verify_unit_files
from allwen.ensemble.wen import WeightedEnsemble
from allwen.evaluation.metrics import compute_metrics
from allwen.failpoints import failpoint
from allwen.io import atomic_write_json, atomic_write_text, read_csv_rows, read_json, record_files

log = logging.getLogger(__name__)

VAL_FILE = "predictions_val.csv"
TEST_FILE = "predictions_test.csv"
TTA_TEST_FILE = "predictions_test_tta.csv"  # evaluation.tta: the test set, mean of 8 dihedral views
PROB_PREFIX = "prob_"
UNIT_DONE = "unit.json"
PROBA_SUM_TOLERANCE = 1e-4
_FOLD_DIR = re.compile(r"^fold_(\d+)$")


class MissingPredictionsError(ValueError):
    """A unit's prediction file is missing or unreadable: that unit did not finish."""


@dataclass
class UnitPredictions:
    """What one trained unit (scenario, fold) predicted, as saved by the training engine.

    ``test_y`` may hold -1 for unlabelled test images; validation labels never do.
    """

    scenario: str
    fold: int
    name: str
    classes: list[str]
    val_paths: list[str]
    val_y: np.ndarray
    val_proba: np.ndarray
    test_paths: list[str]
    test_y: np.ndarray
    test_proba: np.ndarray


@dataclass
class EnsembleResult:
    """One ensemble's members, weights and test probabilities (arrays stay in memory)."""

    name: str
    kind: Literal["inter", "intra", "scenarios"]
    scenario: str | None
    weighting: str
    members: list[str]
    scores: list[float]
    weights: list[float]
    note: str
    test_y: np.ndarray
    test_proba: np.ndarray
    champion_by: str | None
    champion_metric: str | None = None
    classes: list[str] = field(default_factory=list)
    test_paths: list[str] = field(default_factory=list)


def unit_name(scenario: str, fold: int) -> str:
    return f"{scenario}/fold_{fold}"


def _rerun_hint(unit_dir: Path) -> str:
    run_dir = unit_dir.parent.parent.parent
    return f"run `allwen run CONFIG --out {run_dir}` again (same config) to finish that unit"


def _read_predictions(
    path: Path, unit: str, hint: str, allow_unlabelled: bool
) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Read one predictions CSV; any defect is a MissingPredictionsError naming unit and file."""

    def fail(problem: str) -> MissingPredictionsError:
        return MissingPredictionsError(f"unit {unit}: {path} {problem}; {hint}")

    if not path.is_file():
        raise fail("is missing")
    try:
        header, body = read_csv_rows(path)
    except (ValueError, UnicodeDecodeError) as err:
        raise fail(f"cannot be parsed as CSV ({' '.join(str(err).split())})") from None
    prob_cols = [c for c in header if c.startswith(PROB_PREFIX)]
    missing = [c for c in ("path", "y_true") if c not in header]
    if missing or len(prob_cols) < 2:
        raise fail(f"lacks columns (needs path, y_true and >= 2 prob_<class>; has {header})")
    if not body:
        raise fail("has no rows")
    classes = [c[len(PROB_PREFIX):] for c in prob_cols]
    index = {name: header.index(name) for name in ("path", "y_true", *prob_cols)}

    def number(text: str) -> float:  # an empty field is missing (NaN), as pandas reads it
        return float(text) if text.strip() else float("nan")

    try:
        proba = np.array([[number(row[index[c]]) for c in prob_cols] for row in body], dtype=np.float64)
        y_float = np.array([number(row[index["y_true"]]) for row in body], dtype=np.float64)
    except ValueError as err:
        raise fail(f"holds non-numeric y_true or probabilities ({err})") from err
    if not np.all(np.isfinite(proba)) or proba.min() < -1e-6 or proba.max() > 1 + 1e-6:
        bad = int(np.flatnonzero(~np.all(np.isfinite(proba) & (proba >= -1e-6) & (proba <= 1 + 1e-6), axis=1))[0])
        raise fail(f"holds probabilities that are empty, NaN or outside [0, 1] (row {bad + 2})")
    sums = proba.sum(axis=1)
    if np.any(np.abs(sums - 1.0) > PROBA_SUM_TOLERANCE):
        bad = int(np.flatnonzero(np.abs(sums - 1.0) > PROBA_SUM_TOLERANCE)[0])
        raise fail(f"holds probabilities that do not sum to 1 (row {bad + 2} sums to {sums[bad]:.6g})")
    if not np.all(np.isfinite(y_float)) or not np.all(y_float == np.round(y_float)):
        raise fail("holds y_true values that are empty or not integer class indices")
    y = y_float.astype(np.int64)
    low = -1 if allow_unlabelled else 0
    if y.min() < low or y.max() >= len(classes):
        raise fail(f"holds y_true outside [{low}, {len(classes) - 1}]")
    paths = [row[index["path"]] for row in body]
    if not all(paths):
        raise fail("has rows with an empty path")
    return paths, classes, y, proba


def load_unit_predictions(unit_dir: Path, scenario: str, fold: int) -> UnitPredictions:
    """Load one unit's validation and test predictions from ``unit_dir``."""
    unit_dir = Path(unit_dir)
    name = unit_name(scenario, fold)
    hint = _rerun_hint(unit_dir)
    val_paths, val_classes, val_y, val_proba = _read_predictions(
        unit_dir / VAL_FILE, name, hint, allow_unlabelled=False
    )
    test_paths, test_classes, test_y, test_proba = _read_predictions(
        unit_dir / TEST_FILE, name, hint, allow_unlabelled=True
    )
    if val_classes != test_classes:
        raise MissingPredictionsError(
            f"unit {name}: {unit_dir / VAL_FILE} has classes {val_classes} but "
            f"{unit_dir / TEST_FILE} has {test_classes}; {hint}"
        )
    return UnitPredictions(
        scenario=scenario,
        fold=fold,
        name=name,
        classes=val_classes,
        val_paths=val_paths,
        val_y=val_y,
        val_proba=val_proba,
        test_paths=test_paths,
        test_y=test_y,
        test_proba=test_proba,
    )


def load_checked_unit(run_dir: Path, unit_dir: Path, scenario: str, fold: int,
                      truth: SplitTruth) -> UnitPredictions:
    """A unit's predictions, checked against its ``unit.json`` fingerprints and the split.

    The labels are the split's (they must also equal the file's): a prediction file is never
    the source of truth.
    """
    name = unit_name(scenario, fold)
    verify_unit_files(run_dir, unit_dir, name)
    unit = load_unit_predictions(unit_dir, scenario, fold)
    fix = redo_hint(run_dir, name)
    unit.val_y = truth.check(unit_dir / VAL_FILE, name, fold, "val", unit.val_paths, unit.val_y, unit.classes, fix)
    unit.test_y = truth.check(unit_dir / TEST_FILE, name, fold, "test", unit.test_paths, unit.test_y, unit.classes, fix)
    return unit


def load_tta_predictions(run_dir: Path, unit: UnitPredictions) -> np.ndarray:
    """``evaluation.tta``: a unit's test probabilities averaged over the 8 dihedral views.

    The file must list the unit's (split-checked) test images and labels in the same order;
    its fingerprint in ``unit.json`` is checked with the other prediction files.
    """
    path = Path(run_dir) / "units" / unit.scenario / f"fold_{unit.fold}" / TTA_TEST_FILE
    hint = "units trained before evaluation.tta was set have none; train the run again into a new --out"
    paths, classes, y, proba = _read_predictions(path, unit.name, hint, allow_unlabelled=True)
    if paths != unit.test_paths or classes != unit.classes or not np.array_equal(y, unit.test_y):
        raise MissingPredictionsError(f"unit {unit.name}: {path} lists other test images, labels or classes "
                                      f"than {TEST_FILE}; {redo_hint(Path(run_dir), unit.name)}")
    return proba


def discover_units(run_dir: Path | str, verify: bool = True) -> dict[str, list[UnitPredictions]]:
    """Every unit under ``RUN/units``: scenario (sorted by name) -> units sorted by fold.

    A ``fold_<k>`` folder without both prediction files is an unfinished unit and raises
    :class:`MissingPredictionsError`; folders not named ``fold_<k>`` are ignored. With
    ``verify`` (the default) every unit is checked by :func:`load_checked_unit` against
    ``splits/split.csv`` and its ``unit.json``.
    """
    run_dir = Path(run_dir)
    units_dir = run_dir / "units"
    if not units_dir.is_dir():
        raise ValueError(
            f"{run_dir} has no units/ folder: pass a run folder written by `allwen run`"
        )
    found: dict[str, list[UnitPredictions]] = {}
    truth = SplitTruth.load(run_dir) if verify else None
    for scenario_dir in sorted(p for p in units_dir.iterdir() if p.is_dir()):
        folds = []
        for fold_dir in scenario_dir.iterdir():
            match = _FOLD_DIR.match(fold_dir.name)
            if fold_dir.is_dir() and match:
                folds.append((int(match.group(1)), fold_dir))
            else:
                log.debug("ignoring %s: not a fold_<k> folder", fold_dir)
        if not folds:
            log.warning("scenario %s has no fold_<k> folders; skipped", scenario_dir.name)
            continue
        found[scenario_dir.name] = [
            load_checked_unit(run_dir, d, scenario_dir.name, k, truth) if truth is not None
            else load_unit_predictions(d, scenario_dir.name, k)
            for k, d in sorted(folds)
        ]
    if not found:
        raise ValueError(
            f"{units_dir} holds no units: run `allwen run CONFIG --out {run_dir}` to train the grid first"
        )
    fold_sets = {s: tuple(u.fold for u in us) for s, us in found.items()}
    if len(set(fold_sets.values())) > 1:
        log.warning("scenarios have different folds (some units missing?): %s", fold_sets)
    return found


CHAMPION_BY = ("validation", "test", "test_all")
#: ``champion_by="test_all"``: Experiment A's own rule, the best on the test set "judged on
#: accuracy, precision, recall, F1 and kappa together", read as their mean.
TEST_ALL_METRICS = ("accuracy", "precision", "recall", "f1", "kappa")


def _unit_score(unit: UnitPredictions, by: str, metric: str) -> float:
    if by == "test_all":
        if np.any(unit.test_y < 0):
            raise ValueError(f"unit {unit.name}: the test set has unlabelled images; use champion_by='validation'")
        values = compute_metrics(unit.test_y, unit.test_proba)
        return float(np.mean([values[k] for k in TEST_ALL_METRICS]))
    if by == "validation":
        y, proba = unit.val_y, unit.val_proba
    else:
        if np.any(unit.test_y < 0):
            raise ValueError(
                f"unit {unit.name}: the test set has unlabelled images, so a champion "
                "cannot be chosen by test metric; use champion_by='validation'"
            )
        y, proba = unit.test_y, unit.test_proba
    score = WEIGHTINGS[metric](y, proba)
    if not np.isfinite(score):
        raise ValueError(
            f"unit {unit.name}: {metric} is undefined on its {by} predictions; "
            "choose champions by another metric (e.g. accuracy)"
        )
    return score


def select_champion(
    units: list[UnitPredictions],
    by: Literal["validation", "test", "test_all"] = "validation",
    metric: str = "accuracy",
) -> UnitPredictions:
    """The unit with the best ``metric`` on its validation (default) or the test set.

    Ties go to the lowest fold index, so the choice does not depend on listing order.
    """
    if by not in CHAMPION_BY:
        raise ValueError(f"champion_by must be one of {', '.join(CHAMPION_BY)}, got {by!r}")
    if metric not in SELECTION_METRICS:
        raise ValueError(
            f"champion metric must be one of {', '.join(SELECTION_METRICS)}, got {metric!r}"
        )
    if not units:
        raise ValueError("cannot select a champion from no units")
    ranked = sorted(units, key=lambda u: u.fold)
    scores = [_unit_score(u, by, metric) for u in ranked]
    best = int(np.argmax(scores))  # first maximum = lowest fold index
    log.info(
        "champion of %s by %s %s: %s (%.4f)",
        ranked[best].scenario, by, metric, ranked[best].name, scores[best],
    )
    return ranked[best]


def select_champions(
    units_by_scenario: dict[str, list[UnitPredictions]],
    by: Literal["validation", "test", "test_all"] = "validation",
    metric: str = "accuracy",
) -> dict[str, UnitPredictions]:
    """The champion of every scenario (see :func:`select_champion`)."""
    return {s: select_champion(us, by, metric) for s, us in units_by_scenario.items()}


def _check_aligned(units: list[UnitPredictions]) -> None:
    """Members must share classes and predict the same test images in the same order."""
    first = units[0]
    for other in units[1:]:
        if other.classes != first.classes:
            raise ValueError(
                f"units {first.name} and {other.name} have different classes "
                f"({first.classes} vs {other.classes}); they cannot be ensembled"
            )
        if other.test_paths != first.test_paths:
            raise ValueError(
                f"units {first.name} and {other.name} list different test images or a "
                "different order in predictions_test.csv; the test rows must align to "
                "be ensembled (re-run the unit whose test predictions are stale)"
            )
        if not np.array_equal(other.test_y, first.test_y):
            raise ValueError(
                f"units {first.name} and {other.name} disagree on the test labels y_true "
                "for the same images; re-run the unit whose test predictions are stale"
            )


def _ensemble(
    units: list[UnitPredictions],
    weighting: str,
    name: str,
    kind: Literal["inter", "intra", "scenarios"],
    scenario: str | None,
    champion_by: str | None,
    champion_metric: str | None,
) -> EnsembleResult:
    wen = WeightedEnsemble(weighting=weighting).fit(
        [u.val_proba for u in units], [u.val_y for u in units], names=[u.name for u in units]
    )
    proba = wen.predict_proba([u.test_proba for u in units])
    return EnsembleResult(
        name=name,
        kind=kind,
        scenario=scenario,
        weighting=weighting,
        members=list(wen.names_),
        scores=[float(s) for s in wen.scores_],
        weights=[float(w) for w in wen.weights_],
        note=wen.note_,
        test_y=units[0].test_y.copy(),
        test_proba=proba,
        champion_by=champion_by,
        champion_metric=champion_metric,
        classes=list(units[0].classes),
        test_paths=list(units[0].test_paths),
    )


def build_ensembles(
    units_by_scenario: dict[str, list[UnitPredictions]],
    weightings: list[str],
    champion_by: Literal["validation", "test", "test_all"] = "validation",
    champion_metric: str = "accuracy",
) -> list[EnsembleResult]:
    """Inter ensembles (per scenario with >= 2 folds) then intra (>= 2 scenarios), per weighting.

    A run with one fold per scenario builds none: there is no champion to choose among folds,
    and the report must not show a section the run cannot fill.

    All units must predict the same test images in the same order; otherwise a ValueError
    names the first two units that differ. A weighting undefined for some member (e.g.
    ``auc`` on a single-class validation fold) raises rather than silently dropping that
    ensemble: remove the weighting from the list to build the rest.
    """
    if not weightings:
        raise ValueError("no weightings given; choose from accuracy, f1, kappa, auc, uniform, vote, greedy")
    for weighting in weightings:
        check_weighting_name(weighting)
    if len(set(weightings)) != len(weightings):
        raise ValueError(f"weightings listed twice: {weightings}")
    if champion_by not in CHAMPION_BY:
        raise ValueError(f"champion_by must be one of {', '.join(CHAMPION_BY)}, got {champion_by!r}")
    if champion_metric not in SELECTION_METRICS:
        raise ValueError(
            f"champion metric must be one of {', '.join(SELECTION_METRICS)}, "
            f"got {champion_metric!r}"
        )
    all_units = [u for us in units_by_scenario.values() for u in us]
    if not all_units:
        raise ValueError("no units to ensemble")
    _check_aligned(all_units)

    per_member = [w for w in weightings if w != "greedy"]
    results: list[EnsembleResult] = []
    for scenario, units in units_by_scenario.items():
        if len(units) < 2:
            log.info("scenario %s has %d fold(s): no inter ensemble", scenario, len(units))
            continue
        units = sorted(units, key=lambda u: u.fold)
        for weighting in per_member:
            results.append(
                _ensemble(units, weighting, f"inter[{scenario}]/{weighting}", "inter",
                          scenario, None, None)
            )
    one_fold = max(len(us) for us in units_by_scenario.values()) < 2
    if one_fold:  # a scenario's only model is no champion chosen among folds (B, C and E)
        log.info("one fold per scenario: no ensembles (inter needs folds; intra combines champions chosen among folds)")
    elif len(units_by_scenario) >= 2:
        champions = list(select_champions(units_by_scenario, champion_by, champion_metric).values())
        for weighting in per_member:
            results.append(
                _ensemble(champions, weighting, f"intra/{weighting}", "intra",
                          None, champion_by, champion_metric)
            )
        if "greedy" in weightings:
            members = [scenario_predictions(us) for us in units_by_scenario.values()]
            for member in members[1:]:
                if member.val_paths != members[0].val_paths:
                    raise ValueError(
                        f"greedy: scenarios {members[0].name} and {member.name} have validation folds over "
                        "different images; greedy selection needs one training pool split the same way"
                    )
            results.append(_ensemble(members, "greedy", "scenarios/greedy", "scenarios", None, None, champion_metric))
    else:
        log.info("only one scenario: no intra or scenario ensemble")
    return results


def scenario_predictions(units: list[UnitPredictions]) -> UnitPredictions:
    """A scenario as one member: out-of-fold validation predictions, mean test probabilities.

    Every unit predicted its own validation fold, so the concatenation covers the training
    pool once; rows are sorted by path so that scenarios line up row for row.
    """
    units = sorted(units, key=lambda u: u.fold)
    paths = [p for u in units for p in u.val_paths]
    if len(set(paths)) != len(paths):
        raise ValueError(f"scenario {units[0].scenario}: validation folds overlap; out-of-fold predictions need disjoint folds")
    order = np.argsort(np.asarray(paths, dtype=object), kind="stable")
    return UnitPredictions(
        scenario=units[0].scenario, fold=-1, name=units[0].scenario, classes=list(units[0].classes),
        val_paths=[paths[i] for i in order],
        val_y=np.concatenate([u.val_y for u in units])[order],
        val_proba=np.concatenate([u.val_proba for u in units])[order],
        test_paths=list(units[0].test_paths), test_y=units[0].test_y.copy(),
        test_proba=np.mean([u.test_proba for u in units], axis=0),
    )


def safe_name(name: str) -> str:
    """A portable folder name: ``inter[lr=0.001]/kappa`` -> ``inter_lr=0.001_kappa``."""
    cleaned = re.sub(r"[^A-Za-z0-9._=+-]+", "_", name).strip("_.")
    if not cleaned:
        raise ValueError(f"ensemble name {name!r} has no usable characters for a folder name")
    return cleaned


def write_ensemble(result: EnsembleResult, out_dir: Path | str) -> Path:
    """Write ``out_dir/<safe name>/predictions_test.csv`` and ``ensemble.json`` atomically.

    The CSV has the units' columns (``path``, ``y_true``, ``prob_<class>``) so every later
    step reads ensembles and single models alike. Returns the ensemble's folder.
    """
    n_rows, n_classes = result.test_proba.shape
    if len(result.classes) != n_classes or len(result.test_paths) != n_rows:
        raise ValueError(
            f"ensemble {result.name}: {n_rows}x{n_classes} probabilities but "
            f"{len(result.test_paths)} paths and {len(result.classes)} classes"
        )
    target = Path(out_dir) / safe_name(result.name)
    # the csv module, not pandas: a report rewrites every ensemble, and this is 5x faster
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "y_true", *(f"{PROB_PREFIX}{cls}" for cls in result.classes)])
    writer.writerows([path, int(y), *map(repr, row)]
                     for path, y, row in zip(result.test_paths, np.asarray(result.test_y), result.test_proba.tolist()))
    atomic_write_text(target / TEST_FILE, text.getvalue())
    atomic_write_json(
        target / "ensemble.json",
        {
            "name": result.name,
            "kind": result.kind,
            "scenario": result.scenario,
            "weighting": result.weighting,
            "members": result.members,
            "scores": result.scores,
            "weights": result.weights,
            "note": result.note,
            "champion_by": result.champion_by,
            "champion_metric": result.champion_metric,
            "classes": result.classes,
            "n_test": n_rows,
            "files": record_files(target, [TEST_FILE]),
        },
    )
    failpoint("ensemble_written")
    return target


def read_ensemble(folder: Path | str) -> dict:
    """An ensemble's ``ensemble.json``, after checking its predictions file is the one it wrote."""
    folder = Path(folder)
    fix = f"rebuild the run's ensembles with `allwen report {folder.parent.parent}`"
    info = read_json(folder / "ensemble.json", fix)
    check_recorded_files(folder, info.get("files"), str(folder / "ensemble.json"), fix)
    return info

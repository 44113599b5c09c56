"""The run folder: the one object that knows every name and format in it.

```
RUN/config.yaml                      the resolved config (``Config``)
RUN/run.json                         state, timings, sha256 of config.yaml and summary.json
RUN/data/audit.json                  the data audit
RUN/splits/split.csv|split.json|leakage.json
RUN/units/<scenario>/config.yaml     a scenario's resolved config
RUN/units/<scenario>/fold_<k>/       weights, data_config.json, history, curves.png,
                                     predictions_*.csv and, written last, unit.json
RUN/ensembles/<safe name>/           ensemble.json and predictions_test.csv
RUN/sweep.json, RUN/sweep/step_<k>/  a stepwise sweep's decided steps and their sub-runs
RUN/report/summary.json              the results model; the report beside it
RUN/cache/                           content-keyed caches (shared by a sweep's steps)
```

Other modules ask a :class:`RunFolder` for paths, records and predictions; nothing else joins
these names. Within one process a folder caches what it has read (the split, each unit's
``unit.json`` and predictions), so evaluation reads every file once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from allwen.config.load import ConfigError, build_config, config_to_yaml
from allwen.config.schema import Config
from allwen.failpoints import failpoint
from allwen.io import RunFileError, safe_name, atomic_write, atomic_write_json, atomic_write_text, read_csv, read_json, read_yaml, record_files
from allwen.runfolder._paths import (
    HASHES,
    CONFIG,
    STATUS,
    LOG,
    AUDIT,
    SPLIT_CSV,
    SPLIT_JSON,
    LEAKAGE,
    UNITS,
    ENSEMBLES,
    SWEEP_JSON,
    SWEEP_DIR,
    REPORT,
    SUMMARY,
    REPORT_HTML,
    REPORT_MD,
    METRICS_CSV,
    FIGURES,
    CACHE,
    DERIVED,
    UNIT_DONE,
    WEIGHTS,
    DATA_CONFIG,
    HISTORY,
    CURVES,
    VAL_FILE,
    TEST_FILE,
    TTA_TEST_FILE,
    ENSEMBLE_JSON,
    UNIT_NAME_RE,
    FOLD_DIR_RE,
)
from allwen.runfolder.checks import SPLIT_FIX, SplitTruth, check_recorded_files, redo_hint
from allwen.runfolder.predictions import MissingPredictionsError, UnitPredictions, read_predictions, write_predictions
from allwen.runfolder.records import EnsembleRecord, SweepRecord, UnitInfo

log = logging.getLogger(__name__)

def unit_name(scenario: str, fold: int) -> str:
    return f"{scenario}/fold_{fold}"


def parse_unit_name(name: str) -> tuple[str, int] | None:
    """``(scenario, fold)`` of ``<scenario>/fold_<k>``, else None."""
    match = UNIT_NAME_RE.match(name)
    return (match["scenario"], int(match["fold"])) if match else None


class UnitFolder:
    """``units/<scenario>/fold_<k>/``: the files one unit writes, ``unit.json`` last."""

    PREDICTIONS = {"val": VAL_FILE, "test": TEST_FILE, "tta": TTA_TEST_FILE}

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS

    @property
    def data_config(self) -> Path:
        return self.path / DATA_CONFIG

    @property
    def history(self) -> Path:
        return self.path / HISTORY

    @property
    def curves(self) -> Path:
        return self.path / CURVES

    @property
    def info_path(self) -> Path:
        return self.path / UNIT_DONE

    @property
    def done(self) -> bool:
        return self.info_path.is_file()

    def prediction_files(self) -> list[Path]:
        """The prediction CSVs this unit has written (validation, test, TTA test)."""
        return [p for p in (self.predictions(w) for w in self.PREDICTIONS) if p.is_file()]

    def predictions(self, which: str) -> Path:
        return self.path / self.PREDICTIONS[which]

    def files(self, tta: bool = False, predictions_only: bool = False) -> list[str]:
        """The files ``unit.json`` fingerprints (``predictions_only``: a unit with no network, as
        :mod:`allwen.evaluation.synthetic` writes)."""
        network = [] if predictions_only else [WEIGHTS, DATA_CONFIG]
        return network + [VAL_FILE, TEST_FILE] + ([TTA_TEST_FILE] if tta else [])

    def write_predictions(self, which: str, paths: list[str], labels: np.ndarray, proba: np.ndarray,
                          classes: list[str]) -> Path:
        return write_predictions(self.predictions(which), paths, labels, proba, classes)

    def write_info(self, info: dict[str, Any], tta: bool = False, predictions_only: bool = False) -> UnitInfo:
        """``unit.json`` (the finished marker) with the sha256 of the unit's files; written last."""
        files = record_files(self.path, self.files(tta, predictions_only))
        record = UnitInfo.model_validate({**info, "files": files})
        atomic_write_json(self.info_path, record.model_dump(mode="json"))
        return record

    def read_info(self, fix: str) -> UnitInfo:
        return UnitInfo.read(self.info_path, fix)


class RunFolder:
    """Paths, typed records and predictions of one run folder (or one sweep step's sub-run)."""

    def __init__(self, root: Path | str, cache_dir: Path | None = None) -> None:
        self.root = Path(root)
        self._cache_dir = cache_dir
        self._read: dict[Any, Any] = {}

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    # ---- paths

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG

    @property
    def status_path(self) -> Path:
        return self.root / STATUS

    @property
    def log_path(self) -> Path:
        return self.root / LOG

    @property
    def audit_path(self) -> Path:
        return self.root / AUDIT

    @property
    def hashes_path(self) -> Path:
        return self.root / HASHES

    @property
    def splits_dir(self) -> Path:
        return self.root / "splits"

    @property
    def split_csv(self) -> Path:
        return self.root / SPLIT_CSV

    @property
    def units_dir(self) -> Path:
        return self.root / UNITS

    @property
    def ensembles_dir(self) -> Path:
        return self.root / ENSEMBLES

    @property
    def report_dir(self) -> Path:
        return self.root / REPORT

    @property
    def split_json(self) -> Path:
        return self.root / SPLIT_JSON

    @property
    def summary_path(self) -> Path:
        return self.root / SUMMARY

    @property
    def report_html(self) -> Path:
        return self.root / REPORT_HTML

    @property
    def report_md(self) -> Path:
        return self.root / REPORT_MD

    @property
    def metrics_csv(self) -> Path:
        return self.root / METRICS_CSV

    @property
    def report_figures_dir(self) -> Path:
        return self.root / FIGURES

    @property
    def sweep_json(self) -> Path:
        return self.root / SWEEP_JSON

    @property
    def cache_dir(self) -> Path:
        return self._cache_dir or self.root / CACHE

    def step(self, k: int) -> "RunFolder":
        """Sweep step ``k``'s sub-run (its own units, the run's split and caches)."""
        return RunFolder(self.root / SWEEP_DIR / f"step_{k}", cache_dir=self.cache_dir)

    def has_trained_units(self) -> bool:
        """Any finished unit here or in a sweep step (such a folder is never overwritten)."""
        return any(self.root.glob(f"{UNITS}/*/fold_*/{UNIT_DONE}")) or any(
            self.root.glob(f"{SWEEP_DIR}/step_*/{UNITS}/*/fold_*/{UNIT_DONE}"))

    def unit_dir(self, scenario: str, fold: int) -> Path:
        return self.units_dir / scenario / f"fold_{fold}"

    def unit(self, scenario: str, fold: int) -> UnitFolder:
        return UnitFolder(self.unit_dir(scenario, fold))

    def unit_dir_of(self, name: str) -> Path:
        parsed = parse_unit_name(name)
        if parsed is None:
            raise ValueError(f"{name!r} is not a unit name (<scenario>/fold_<k>)")
        return self.unit_dir(*parsed)

    def scenario_config_path(self, scenario: str) -> Path:
        return self.units_dir / scenario / CONFIG

    def curves_rel(self, scenario: str, fold: int) -> str:
        """A unit's curves plot, relative to the run folder (the report links it)."""
        return f"{UNITS}/{scenario}/fold_{fold}/{CURVES}"

    def ensemble_dir(self, name: str) -> Path:
        return self.ensembles_dir / safe_name(name)

    def is_finished(self, scenario: str, fold: int) -> bool:
        return self.unit(scenario, fold).done

    def units_on_disk(self) -> list[UnitFolder]:
        """Every ``units/<scenario>/fold_<k>`` folder present, finished or not (none before training)."""
        return [UnitFolder(p) for p in sorted(self.units_dir.glob("*/fold_*")) if p.is_dir()]

    def unit_folders(self) -> dict[str, list[tuple[int, Path]]]:
        """``units/<scenario>/fold_<k>`` folders on disk: scenario (sorted) -> (fold, folder) by fold."""
        if not self.units_dir.is_dir():
            raise ValueError(f"{self.root} has no units/ folder: pass a run folder written by `allwen run`")
        found: dict[str, list[tuple[int, Path]]] = {}
        for scenario_dir in sorted(p for p in self.units_dir.iterdir() if p.is_dir()):
            folds = []
            for fold_dir in scenario_dir.iterdir():
                match = FOLD_DIR_RE.match(fold_dir.name)
                if fold_dir.is_dir() and match:
                    folds.append((int(match.group(1)), fold_dir))
                else:
                    log.debug("ignoring %s: not a fold_<k> folder", fold_dir)
            if folds:
                found[scenario_dir.name] = sorted(folds)
            else:
                log.warning("scenario %s has no fold_<k> folders; skipped", scenario_dir.name)
        return found

    def finished_units(self) -> list[str]:
        """Names of the finished units, sorted."""
        return sorted(unit_name(s, k) for s, folds in self.unit_folders().items() for k, d in folds
                      if (d / UNIT_DONE).is_file())

    # ---- cached reading

    def _cached(self, key: Any, load):
        if key not in self._read:
            self._read[key] = load()
        return self._read[key]

    def forget(self) -> None:
        """Drop what was read (after files changed on disk)."""
        self._read.clear()

    def split_truth(self) -> SplitTruth:
        """``splits/split.csv`` (typed; which role a fold validates on comes from ``split.json``'s settings)."""
        def load() -> SplitTruth:
            meta = self.split_meta() if self.split_json.is_file() else {}
            return SplitTruth.load(self.split_csv, (meta.get("settings") or {}).get("validate_on"))
        return self._cached("split", load)

    def split_meta(self) -> dict[str, Any]:
        return self._cached("split.json", lambda: read_json(self.root / SPLIT_JSON, SPLIT_FIX))

    def leakage(self) -> list[dict[str, Any]]:
        return self._cached("leakage", lambda: read_json(self.root / LEAKAGE, SPLIT_FIX, kind=list))

    def n_folds(self) -> int:
        return len(self.split_meta()["folds"])

    def audit(self) -> dict[str, Any] | None:
        fix = "delete it and run `allwen run` with the run's config to audit the data again"
        return self._cached("audit", lambda: read_json(self.audit_path, fix) if self.audit_path.exists() else None)

    def config_yaml(self) -> dict[str, Any]:
        """The saved config as plain YAML data (validate with ``allwen.config.build_config``)."""
        fix = "restore it from the command that made the run (`allwen config PRESET --set ... > config.yaml`)"
        return self._cached("config", lambda: read_yaml(self.config_path, fix))

    def scenario_config_yaml(self, scenario: str) -> dict[str, Any]:
        """A scenario's saved config, falling back to the run's."""
        path = self.scenario_config_path(scenario)
        if path.is_file():
            return self._cached(("config", scenario), lambda: read_yaml(path, f"delete {path.parent} and run again"))
        return self.config_yaml()

    def unit_info(self, scenario: str, fold: int) -> UnitInfo:
        """The typed ``unit.json`` of a finished unit (read once)."""
        def load() -> UnitInfo:
            path = self.unit_dir(scenario, fold) / UNIT_DONE
            return UnitInfo.read(path, redo_hint(self.root, unit_name(scenario, fold)))
        return self._cached(("unit", scenario, fold), load)

    def verify_unit_files(self, scenario: str, fold: int) -> None:
        """The unit finished and its prediction files are the ones it wrote (sha256 in ``unit.json``)."""
        folder, name = self.unit_dir(scenario, fold), unit_name(scenario, fold)
        info = self.unit_info(scenario, fold)
        recorded = {k: v for k, v in info.files.items() if k in (VAL_FILE, TEST_FILE, TTA_TEST_FILE)}
        check_recorded_files(folder, recorded or None, str(folder / UNIT_DONE), redo_hint(self.root, name))

    def unit_predictions(self, scenario: str, fold: int, verify: bool = True) -> UnitPredictions:
        """A unit's validation and test predictions; with ``verify``, checked against its
        ``unit.json`` fingerprints and the split (whose labels it then carries)."""
        return self._cached(("preds", scenario, fold, verify), lambda: self._load_unit(scenario, fold, verify))

    def _load_unit(self, scenario: str, fold: int, verify: bool) -> UnitPredictions:
        folder, name = self.unit_dir(scenario, fold), unit_name(scenario, fold)
        hint = f"run `allwen run CONFIG --out {self.root}` again (same config) to finish that unit"
        val_paths, val_classes, val_y, val_proba = read_predictions(folder / VAL_FILE, name, hint, allow_unlabelled=False)
        test_paths, test_classes, test_y, test_proba = read_predictions(folder / TEST_FILE, name, hint,
                                                                        allow_unlabelled=True)
        if val_classes != test_classes:
            raise MissingPredictionsError(f"unit {name}: {folder / VAL_FILE} has classes {val_classes} but "
                                          f"{folder / TEST_FILE} has {test_classes}; {hint}")
        unit = UnitPredictions(scenario, fold, name, val_classes, val_paths, val_y, val_proba,
                               test_paths, test_y, test_proba)
        if verify:
            self.verify_unit_files(scenario, fold)
            truth, fix = self.split_truth(), redo_hint(self.root, name)
            unit.val_y = truth.check(folder / VAL_FILE, name, fold, "val", unit.val_paths, unit.val_y, unit.classes, fix)
            unit.test_y = truth.check(folder / TEST_FILE, name, fold, "test", unit.test_paths, unit.test_y,
                                      unit.classes, fix)
        return unit

    def unit_predictions_of(self, name: str, verify: bool = True) -> UnitPredictions:
        parsed = parse_unit_name(name)
        if parsed is None:
            raise ValueError(f"{name!r} is not a unit name (<scenario>/fold_<k>)")
        return self.unit_predictions(*parsed, verify=verify)

    def tta_predictions(self, unit: UnitPredictions) -> np.ndarray:
        """``evaluation.tta``: a unit's test probabilities averaged over the 8 dihedral views.

        The file must list the unit's (split-checked) test images and labels in the same order."""
        path = self.unit_dir(unit.scenario, unit.fold) / TTA_TEST_FILE
        hint = "units trained before evaluation.tta was set have none; train the run again into a new --out"
        paths, classes, y, proba = read_predictions(path, unit.name, hint, allow_unlabelled=True)
        if paths != unit.test_paths or classes != unit.classes or not np.array_equal(y, unit.test_y):
            raise MissingPredictionsError(f"unit {unit.name}: {path} lists other test images, labels or classes "
                                          f"than {TEST_FILE}; {redo_hint(self.root, unit.name)}")
        return proba

    def discover_units(self, verify: bool = True, scenarios: Iterable[str] | None = None
                       ) -> dict[str, list[UnitPredictions]]:
        """Every unit under ``units/`` (or those of ``scenarios``, in that order): scenario ->
        units sorted by fold. A ``fold_<k>`` folder without both prediction files raises
        :class:`MissingPredictionsError`."""
        folders = self.unit_folders()
        if not folders:
            raise ValueError(f"{self.units_dir} holds no units: run `allwen run CONFIG --out {self.root}` "
                             "to train the grid first")
        order = [s for s in scenarios if s in folders] if scenarios is not None else list(folders)
        found = {s: [self.unit_predictions(s, k, verify) for k, _ in folders[s]] for s in order}
        fold_sets = {s: tuple(u.fold for u in us) for s, us in found.items()}
        if len(set(fold_sets.values())) > 1:
            log.warning("scenarios have different folds (some units missing?): %s", fold_sets)
        return found

    def subjects_of(self, paths: list[str]) -> tuple[list[str], list[str], list[str] | None] | None:
        """Subject id, sha256 and near-duplicate group of each image in ``paths`` from the split, or
        None when the split names no subjects (runs made before subjects were kept). A dataset
        without subject ids gives its pseudo-patients (``pseudo_patient``) in their place."""
        columns = self.split_truth().columns
        if "subject" not in columns:
            log.info("%s has no subject column: intervals and tests are over images", self.split_csv)
            return None
        row_of: dict[str, int] = {}
        for i, image in enumerate(columns["path"]):
            row_of.setdefault(image, i)
        missing = [p for p in paths if p not in row_of]
        if missing:
            raise ValueError(f"{self.split_csv} lists no row for test image {missing[0]} ({len(missing)} missing); "
                             "the predictions and the split disagree: run `allwen run` again on this folder")
        rows = [row_of[p] for p in paths]
        digests = columns.get("sha256", np.full(len(columns["path"]), "", dtype=object))
        subjects = [columns["subject"][i] for i in rows]
        if not any(subjects) and "pseudo_patient" in columns:  # no patient ids: pseudo-patients stand in
            subjects = [columns["pseudo_patient"][i] for i in rows]
        near = [columns["near_duplicate_group"][i] for i in rows] if "near_duplicate_group" in columns else None
        return subjects, [digests[i] for i in rows], near

    # ---- config, audit and split (their contents: allwen.config, allwen.data)

    def write_config(self, cfg: Config) -> Path:
        """``config.yaml``: the resolved config the run was made with (atomically)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._read.pop("config", None)
        return atomic_write_text(self.config_path, config_to_yaml(cfg))

    def write_scenario_config(self, scenario: str, cfg: Config) -> Path:
        """``units/<scenario>/config.yaml``: one scenario's resolved config."""
        path = self.scenario_config_path(scenario)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._read.pop(("config", scenario), None)
        return atomic_write_text(path, config_to_yaml(cfg))

    def load_config(self) -> Config:
        """The run's ``config.yaml`` validated; a missing, edited or truncated file is one clear error."""
        path = self.config_path
        if not path.exists():
            raise RunFileError(f"{path} not found: {self.root} is not an allwen run folder")
        fix = "restore it from the command that made the run (`allwen config PRESET --set ... > config.yaml`)"
        raw = read_yaml(path, fix)
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections; {fix}")
        try:
            cfg = build_config(raw)
        except ConfigError as exc:
            self.check_recorded(path, fix)  # a truncated file: say so, with the fix
            raise ConfigError(f"{path}: {exc}; {fix}") from None
        self.check_recorded(path, fix)  # a truncated file can still be valid YAML
        return cfg

    def write_audit(self, audit: dict[str, Any]) -> Path:
        self._read.pop("audit", None)
        return atomic_write_json(self.audit_path, audit)

    def write_split_files(self, frame: Any, meta: dict[str, Any], leakage: list[dict[str, Any]]) -> Path:
        """``splits/leakage.json``, ``split.json`` and, last (the marker that the split exists),
        ``split.csv`` from ``frame`` (a pandas DataFrame: one row per image, one column per fold)."""
        self.splits_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.root / LEAKAGE, leakage)
        atomic_write_json(self.split_json, meta)
        atomic_write(self.split_csv, lambda tmp: frame.to_csv(tmp, index=False))
        for key in ("split", "split.json", "leakage"):
            self._read.pop(key, None)
        return self.split_csv

    def has_split(self) -> bool:
        return self.split_csv.exists()

    def read_split_files(self, fix: str) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
        """``split.csv`` (as strings), ``split.json`` and ``leakage.json``; an incomplete split is one error."""
        names = {SPLIT_CSV: self.split_csv, SPLIT_JSON: self.split_json, LEAKAGE: self.root / LEAKAGE}
        missing = [Path(n).name for n, path in names.items() if not path.exists()]
        if missing:
            raise RunFileError(f"{self.splits_dir}: incomplete split (missing {missing}); "
                               "delete the folder to make it again")
        frame = read_csv(self.split_csv, fix, dtype=str, keep_default_na=False)
        return frame, read_json(self.split_json, fix), read_json(self.root / LEAKAGE, fix, kind=list)

    def check_summary(self) -> None:
        """``report/summary.json`` is the one evaluation wrote (its sha256 is in ``run.json``)."""
        self.check_recorded(self.summary_path,
                            f"rebuild it from the saved predictions with `allwen report {self.root}`")

    # ---- writing

    def write_ensemble(self, record: EnsembleRecord, paths: list[str], labels: np.ndarray, proba: np.ndarray) -> Path:
        """``ensembles/<safe name>/predictions_test.csv`` then ``ensemble.json`` (with its sha256)."""
        target = self.ensemble_dir(record.name)
        write_predictions(target / TEST_FILE, paths, labels, proba, record.classes)
        record = record.model_copy(update={"n_test": len(paths), "files": record_files(target, [TEST_FILE])})
        atomic_write_json(target / ENSEMBLE_JSON, record.model_dump(mode="json"))
        failpoint("ensemble_written")
        return target

    def read_ensemble(self, name_or_folder: str | Path) -> EnsembleRecord:
        """An ensemble's ``ensemble.json``, after checking its predictions file is the one it wrote."""
        folder = Path(name_or_folder)
        if not folder.is_dir():
            folder = self.ensemble_dir(str(name_or_folder))
        fix = f"rebuild the run's ensembles with `allwen report {self.root}`"
        info = read_json(folder / ENSEMBLE_JSON, fix)
        check_recorded_files(folder, info.get("files"), str(folder / ENSEMBLE_JSON), fix)
        return EnsembleRecord.model_validate(info)

    def ensemble_test_predictions(self, name: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        """An ensemble's saved test predictions (paths, labels, probabilities), checked against its record."""
        record = self.read_ensemble(name)
        path = self.ensemble_dir(record.name) / TEST_FILE
        paths, _, y, proba = read_predictions(path, record.name, f"rebuild them with `allwen report {self.root}`",
                                              allow_unlabelled=False)
        return paths, y, proba

    # ---- sweep

    def read_sweep(self) -> SweepRecord:
        path = self.sweep_json
        if not path.exists():
            return SweepRecord()
        fix = "delete it and the sweep/ folder, and run the same command again to redo the sweep"
        try:
            return SweepRecord.model_validate(read_json(path, fix))
        except ValueError as exc:
            raise RunFileError(f"{path}: not a sweep record ({' '.join(str(exc).split())[:200]}); {fix}") from None

    def write_sweep(self, record: SweepRecord) -> Path:
        return atomic_write_json(self.sweep_json, record.model_dump(mode="json"))

    # ---- status and fingerprints

    def read_status(self) -> dict[str, Any]:
        if not self.status_path.exists():
            return {}
        return read_json(self.status_path, "delete it (it only records the run's state) and run the same command again")

    def write_status(self, **fields: Any) -> None:
        status = self.read_status()
        status.update(fields)
        atomic_write_json(self.status_path, status)

    def record_in_status(self, *paths: Path) -> None:
        """Keep the sha256 of ``paths`` (files of this run) in ``run.json`` (see :meth:`check_recorded`)."""
        files = dict(self.read_status().get("files") or {})
        files.update(record_files(self.root, [Path(p).relative_to(self.root).as_posix() for p in paths]))
        self.write_status(files=files)

    def check_recorded(self, path: Path, fix: str) -> None:
        """``path`` still has the sha256 that ``run.json`` recorded, if any."""
        if not self.status_path.exists():
            return
        rel = Path(path).relative_to(self.root).as_posix()
        recorded = {k: v for k, v in (self.read_status().get("files") or {}).items() if k == rel}
        check_recorded_files(self.root, recorded or None, str(self.status_path), fix)

    def clear_derived(self) -> None:
        """Remove everything a run derives from its config (the content-keyed cache stays)."""
        import shutil

        for name in DERIVED:
            target = self.root / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()


__all__ = ["RunFolder", "UnitFolder", "parse_unit_name", "safe_name", "unit_name"]

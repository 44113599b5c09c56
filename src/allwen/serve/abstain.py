"""Know when not to answer: fit referral, prediction sets, OOD flags and the patient call at export; apply them.

At ``allwen export`` (:func:`fit_sections`), from the run's saved predictions and images:

* ``selective``: the confidence threshold for ``--target-accuracy`` on the out-of-fold validation
  predictions of the bundle's recipe (:func:`recipe_units`; :mod:`allwen.evaluation.selective`);
* ``conformal``: split-conformal thresholds per level and class on the same predictions
  (:mod:`allwen.evaluation.conformal`, computed by crepes and checked against it);
* ``ood``: a feature-distance detector fitted on the training images of one member's fold, its
  flag threshold at a quantile of that fold's validation images (:mod:`allwen.evaluation.ood`);
* ``patient``: the share-called-ALL threshold of the per-patient call, chosen on validation
  subjects when the run has subject ids (:mod:`allwen.evaluation.patient`).

Those four go into ``bundle.json`` (the numbers predict needs); the test-set evidence (coverage
and accuracy at the threshold, set coverage and size per class, the OOD flag rate, the
accuracy-coverage curve) goes into the model card. :class:`Abstainer` applies a bundle's sections
to new probabilities and features, with no training code and no crepes.

All sections are fitted on the probabilities the bundle gives by default (``probabilities``:
``calibrated`` = temperature-scaled members, combined), and :func:`allwen.serve.predict` computes
them on that scale even when a user asks for raw probabilities, so a threshold is never
compared with numbers of another scale.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from allwen.evaluation import conformal, ood, patient, selective

if TYPE_CHECKING:
    from allwen.serve.predict import Member

log = logging.getLogger(__name__)

OOD_FILE = "ood.safetensors"
CARD_FILE = "card.json"  # the model card as JSON, beside MODEL_CARD.md
#: At most this many images per side (training fold, validation fold, test) go through the backbone for the
#: OOD detector at export (a seeded random subset beyond), bounding the export's time.
OOD_MAX_IMAGES = 2000
CSV_COLUMNS = ("refer", "ood_score", "ood")  # plus one set_<level> column per conformal level


@dataclass(frozen=True)
class AbstainSettings:
    """What ``allwen export`` asks for (documented defaults)."""

    target_accuracy: float = selective.DEFAULT_TARGET_ACCURACY
    levels: tuple[float, ...] = conformal.DEFAULT_LEVELS
    mondrian: bool | str = "auto"
    ood_method: str = "mahalanobis"
    ood_quantile: float = ood.DEFAULT_QUANTILE
    ood_max_images: int = OOD_MAX_IMAGES
    nonempty_sets: bool = True  # the predicted class is always in the set (conformal.prediction_sets)
    n_boot: int = 1000
    confidence: float = 0.95
    seed: int = 0
    stratify: bool = True  # the run's evaluation.stratify: subjects drawn within each class


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    return v


# --------------------------------------------------------------------------- bundle.json sections, validated


def _models():
    """The pydantic models of the four sections (built on first use: pydantic is not needed to fit)."""
    from pydantic import BaseModel, ConfigDict, Field, field_validator

    def unit_interval(value: float | None, what: str) -> float | None:
        if value is not None and not (np.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"{what} must be a number in [0, 1] or null, not {value}")
        return value

    class Open(BaseModel):
        model_config = ConfigDict(extra="allow")

    class Selective(Open):
        target_accuracy: float = Field(..., gt=0, le=1)
        threshold: float | None
        achieved: bool
        probabilities: str = "calibrated"

        @field_validator("threshold")
        @classmethod
        def _t(cls, v: float | None) -> float | None:
            return unit_interval(v, "threshold")

    class Level(Open):
        level: float = Field(..., gt=0, lt=1)
        column: str = Field(..., pattern=r"^set_[0-9.]+$")
        mondrian: bool
        threshold: dict[str, float | None]

        @field_validator("threshold")
        @classmethod
        def _t(cls, v: dict[str, float | None]) -> dict[str, float | None]:
            for name, t in v.items():
                unit_interval(t, f"threshold of class {name!r}")
            return v

    class Conformal(Open):
        levels: list[Level] = Field(..., min_length=1)
        probabilities: str = "calibrated"

    class OOD(Open):
        method: str
        file: str = Field(..., pattern=r"^[A-Za-z0-9._-]+$")
        threshold: float = Field(..., ge=0)
        member_index: int = Field(..., ge=0)
        quantile: float = Field(..., gt=0, lt=1)
        feature_dim: int = Field(..., gt=0)

        @field_validator("method")
        @classmethod
        def _m(cls, v: str) -> str:
            if v not in ood.OOD_METHODS:
                raise ValueError(f"method {v!r}: choose from {', '.join(ood.OOD_METHODS)}")
            return v

        @field_validator("threshold")
        @classmethod
        def _f(cls, v: float) -> float:
            if not np.isfinite(v):
                raise ValueError(f"threshold must be finite, not {v}")
            return v

    class Patient(Open):
        positive_classes: list[str] | None
        threshold: float | None

        @field_validator("threshold")
        @classmethod
        def _t(cls, v: float | None) -> float | None:
            return unit_interval(v, "threshold")

    return {"selective": Selective, "conformal": Conformal, "ood": OOD, "patient": Patient}


SECTIONS = ("selective", "conformal", "ood", "patient")


def validate_sections(manifest: dict[str, Any], where: str) -> None:
    """Check the four sections of a ``bundle.json`` (each optional); ValueError naming the field.

    Cross-field rules: thresholds name exactly the bundle's classes, set columns differ, the OOD
    member exists, the patient's positive classes are bundle classes, the OOD file is hashed.
    """
    from pydantic import ValidationError

    classes = list(manifest.get("classes") or [])
    fix = "re-export the bundle with `allwen export`"
    models = _models()
    for name in SECTIONS:
        if manifest.get(name) is None:
            continue
        try:
            section = models[name].model_validate(manifest[name])
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in (name, *err["loc"]))
            raise ValueError(f"{where}: field {loc}: {str(err['msg']).removeprefix('Value error, ')}; {fix}") from None
        problem = None
        if name == "conformal":
            columns = [lv.column for lv in section.levels]
            bad = next((lv for lv in section.levels if sorted(lv.threshold) != sorted(classes)), None)
            if bad is not None:
                problem = f"conformal level {bad.level}: thresholds for {sorted(bad.threshold)}, the classes are {classes}"
            elif len(set(columns)) != len(columns):
                problem = f"conformal.levels: columns repeat ({columns})"
        elif name == "ood":
            n_members = len(manifest.get("members") or [])
            if section.member_index >= n_members:
                problem = f"ood.member_index {section.member_index}: the bundle has {n_members} members"
            elif section.file not in (manifest.get("files") or {}):
                problem = f"ood.file {section.file!r} is not listed in files (not hashed)"
        elif name == "patient" and section.positive_classes is not None:
            unknown = [c for c in section.positive_classes if c not in classes]
            if unknown:
                problem = f"patient.positive_classes {unknown} are not bundle classes {classes}"
        if problem:
            raise ValueError(f"{where}: field {problem}; {fix}")


# --------------------------------------------------------------------------- fitting (export)


def fit_selective(val_y: np.ndarray, val_p: np.ndarray, test_y: np.ndarray | None, test_p: np.ndarray | None,
                  s: AbstainSettings, clusters: np.ndarray | None = None,
                  probabilities: str = "calibrated") -> tuple[dict, dict | None]:
    """(bundle section, card section) of selective prediction."""
    chosen = selective.choose_threshold(val_y, val_p, s.target_accuracy)
    section = {
        "target_accuracy": s.target_accuracy, "threshold": chosen.threshold, "achieved": chosen.achieved,
        "score": "largest class probability", "probabilities": probabilities,
        "fitted_on": RECIPE_NOTE,
        "validation": {"n": chosen.n, "n_accepted": chosen.n_accepted, "coverage": chosen.coverage,
                       "accuracy": chosen.accuracy},
    }
    if test_y is None or test_p is None:
        return _clean(section), None
    card = selective.summarize(val_y, val_p, test_y, test_p, s.target_accuracy, clusters=clusters, n_boot=s.n_boot,
                               seed=s.seed, confidence_level=s.confidence, stratify=s.stratify)
    return _clean(section), _clean(card)


def fit_conformal(val_y: np.ndarray, val_p: np.ndarray, test_y: np.ndarray | None, test_p: np.ndarray | None,
                  classes: Sequence[str], s: AbstainSettings,
                  clusters: np.ndarray | None = None) -> tuple[dict, list[dict] | None]:
    """(bundle section, card list ``[{level, coverage, mean_size, per_class}]``); checked against crepes."""
    import crepes

    levels = conformal.calibrate(val_y, val_p, s.levels, s.mondrian, nonempty=s.nonempty_sets)
    check = [val_p] + ([test_p] if test_p is not None else [])
    for cal in levels:
        for p in check:
            if not np.array_equal(conformal.prediction_sets(p, cal, raw=True),
                                  conformal.crepes_sets(val_y, val_p, p, cal.level, cal.mondrian)):
                raise RuntimeError(f"conformal sets at {cal.level} differ from crepes' (report it)")
    section = {
        "method": "split conformal, hinge score 1 - p(class), non-smoothed p-values",
        "library": f"crepes {crepes.__version__}" if hasattr(crepes, "__version__") else "crepes",
        "probabilities": "calibrated",
        "fitted_on": RECIPE_NOTE,
        "levels": [{"level": c.level, "column": conformal.column_name(c.level), "mondrian": c.mondrian,
                    "nonempty": c.nonempty, "threshold": dict(zip(classes, c.threshold)),
                    "n_calibration": c.n_calibration} for c in levels],
    }
    if test_y is None or test_p is None:
        return section, None
    card = []
    for cal in levels:
        ev = conformal.evaluate_sets(test_y, conformal.prediction_sets(test_p, cal), classes, cal.level,
                                     clusters=clusters, n_boot=s.n_boot, seed=s.seed, confidence_level=s.confidence,
                                     stratify=s.stratify)
        raw_empty = float((conformal.prediction_sets(test_p, cal, raw=True).sum(axis=1) == 0).mean())
        card.append({"level": ev.level, "mondrian": cal.mondrian, "n_test": ev.n, "unit": ev.unit,
                     "nonempty": cal.nonempty, "raw_empty": raw_empty,
                     "coverage": ev.coverage, "coverage_ci": list(ev.coverage_ci), "mean_size": ev.mean_size,
                     "mean_size_ci": list(ev.mean_size_ci), "per_class": ev.per_class})
    return _clean(section), _clean(card)


def fit_patient(val_subjects: Sequence[str] | None, val_y: np.ndarray, val_p: np.ndarray,
                classes: Sequence[str]) -> dict:
    """The ``patient`` bundle section: positive classes and the call threshold."""
    try:
        positive = patient.positive_classes(classes)
    except ValueError as exc:
        return {"positive_classes": None, "threshold": None, "note": str(exc)}
    if val_subjects is None or not all(val_subjects):
        t = patient.PatientThreshold(patient.DEFAULT_THRESHOLD, "default", 0, None,
                                     "the run has no subject ids, so the threshold was not chosen on data")
    else:
        t = patient.choose_threshold(np.asarray(val_subjects), val_y, val_p, classes, positive)
    return _clean({"positive_classes": positive, "statistic": "share of the patient's cells called one of them",
                   **t.as_dict()})


def member_features(member: Member, items: Sequence[Any], device: Any = "cpu", batch_size: int = 32) -> np.ndarray:
    """The OOD score's rows (n, d + 6) of image files or PIL images, with the member's preprocessing:
    pooled backbone features, then :func:`allwen.evaluation.ood.input_statistics` of the input tensor."""
    import torch

    from allwen.serve.images import as_rgb, read_image_file

    model = member.model().to(device)
    out = []
    for start in range(0, len(items), batch_size):
        images = [read_image_file(i) if isinstance(i, (str, Path)) else as_rgb(i) for i in items[start:start + batch_size]]
        x = torch.stack([member.transform(im) for im in images]).to(device)
        with torch.no_grad():
            feats = model.features(x).float().cpu().numpy().astype(np.float64)
        out.append(np.concatenate([feats, ood.input_statistics(x.cpu().numpy())], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 0))


FEATURES_ONNX = "features.onnx"  # the OOD member's backbone as ONNX (pooled features), for torch-free predict


def export_features_onnx(member: Member, path: Path) -> dict[str, Any]:
    """Write the member's backbone (image batch -> pooled features) as ONNX, checked against PyTorch."""
    import warnings

    import torch

    from allwen.serve.onnx_runtime import OPSET

    backbone = member.model().backbone.eval()
    size = member.spec["data"]["image_size"]
    side = size or 224
    axes = {0: "batch"} if size else {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(backbone, (torch.zeros(2, 3, side, side),), str(path), input_names=["input"],
                          output_names=["features"], dynamic_axes={"input": axes, "features": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    backbone.eval()
    x = torch.randn(3, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = backbone(x).numpy()
    got = onnx_features(features_session(path))(x.numpy())
    worst = float(np.abs(expected - got).max() / max(1.0, float(np.abs(expected).max())))
    if worst > 1e-4:
        raise ValueError(f"{path}: ONNX features differ from PyTorch by {worst:.2e} (relative, > 1e-4)")
    return {"file": FEATURES_ONNX, "max_rel_diff_vs_torch": worst}


def features_session(path: Path, device: str = "cpu") -> Any:
    """An onnxruntime session of :data:`FEATURES_ONNX` (CUDA provider on a GPU when onnxruntime has it)."""
    import onnxruntime as ort

    from allwen.threads import session_options

    providers = ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = session_options()  # allwen.threads: the thread budget, threads that do not spin
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def onnx_features(session: Any):
    """A float32 (n, 3, H, W) array -> features (n, d) function over a features session."""
    name = session.get_inputs()[0].name
    return lambda x: np.asarray(session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0], np.float64)


def _subset(n: int, limit: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded random subset of at most ``limit`` of ``n`` items (all when n <= limit)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def ood_member(members: Sequence[Member]) -> int:
    """Index of the member whose features the OOD score uses: the heaviest (first on ties)."""
    weights = [m.weight for m in members]
    return int(np.argmax(weights))


def fit_ood(member: Member, index: int, train: tuple[list[str], np.ndarray], val: list[str],
            test: list[str] | None, s: AbstainSettings, device: Any = "cpu") -> tuple[dict, dict[str, np.ndarray], dict | None]:
    """(bundle section, detector arrays for :data:`OOD_FILE`, card section) of the OOD detector.

    Fitted on the training images of the member's fold; the threshold is the ``ood_quantile`` of
    the member's validation images' scores (each side capped at ``ood_max_images``, a seeded subset).
    """
    paths, labels = train
    keep = _subset(len(paths), s.ood_max_images, s.seed)
    val = [val[i] for i in _subset(len(val), s.ood_max_images, s.seed)]
    detector = ood.WithInputStatistics(ood.make_detector(s.ood_method))
    feats = member_features(member, [paths[i] for i in keep], device)
    val_rows = member_features(member, val, device)
    detector.fit(feats, np.asarray(labels)[keep], val_rows, s.ood_quantile)
    val_scores = detector.score(val_rows)
    threshold = ood.quantile_threshold(val_scores, s.ood_quantile)
    dim = int(feats.shape[1] - ood.N_INPUT_STATS)
    section = {
        "method": s.ood_method, "member": member.name, "member_index": index, "file": OOD_FILE,
        "features": f"{member.spec['backbone']} pooled features ({dim} dimensions)",
        "input_statistics": "per-channel mean and std of the normalised input (Mahalanobis); the score is the "
                            "larger of the two distances, each over its own validation quantile",
        "feature_dim": dim, "n_fit": int(len(keep)), "quantile": s.ood_quantile,
        "threshold": threshold, "n_validation": int(len(val)),
        "fitted_on": "training images of the member's fold; threshold on its validation images",
    }
    card = None
    if test:
        test = [test[i] for i in _subset(len(test), s.ood_max_images, s.seed)]
        test_scores = detector.score(member_features(member, test, device))
        card = {"method": s.ood_method, "threshold": threshold, "quantile": s.ood_quantile,
                "n_test": len(test), "test_flagged": float((test_scores > threshold).mean()),
                "validation_flagged": float((val_scores > threshold).mean())}
    return _clean(section), detector.to_arrays(), _clean(card)


def split_table(run_dir: Path) -> dict[str, np.ndarray]:
    """``splits/split.csv`` as text columns (path, label, subject, fold_<k>...), through the run-folder layer."""
    from allwen.runfolder import RunFolder

    return RunFolder(run_dir).split_truth().columns


def oof_ensemble(preds: Sequence[Any], weights: Sequence[float], temperature: float,
                 vote: bool = False) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Out-of-fold validation predictions of the bundle itself: (paths, labels, probabilities).

    Each validation image is predicted by the members that did not train on it (those whose
    validation fold holds it), combined as the bundle combines (temperature-scaled, weighted
    mean with the weights renormalised over those members; vote fractions for ``vote``). An
    intra ensemble of champions of one fold is then the real ensemble on that fold; fold models
    of one scenario each predict their own fold, so there each image has one member's output
    (the only out-of-fold prediction there is); a scenario ensemble combines one unit per scenario.
    """
    from allwen.serve.calibration import apply_temperature

    return selective.pooled_oof([(list(p.val_paths), p.val_y, apply_temperature(p.val_proba, temperature), float(w))
                                 for p, w in zip(preds, weights)], vote)


def recipe_units(run_dir: Path, members: Sequence[str], weights: Sequence[float]) -> tuple[list[Any], list[float]]:
    """The bundle's recipe on every fold of the run: (unit predictions, weights), for calibration.

    A bundle's members were chosen on their validation folds (the champion of a scenario is
    its best fold there; every unit keeps its best epoch there), so their own validation
    predictions are optimistic: calibrated on them, the demo's exported ensemble gave 90% sets
    that covered 0.84 of the test images and its best single model 0.79 (``docs/results.md``).
    :func:`allwen.evaluation.selective.recipe` refits what was chosen (which scenarios, with which
    weights) on each fold from the run's finished units: every training-pool image is scored once,
    by models that did not train on it and were not picked for doing well on it.
    """
    from allwen.runfolder import RunFolder, parse_unit_name

    folder = RunFolder(run_dir)
    units = [folder.unit_predictions_of(name) for name in members]
    scenarios = {parsed[0] for parsed in map(parse_unit_name, members) if parsed}
    by_scenario: dict[str, list[Any]] = {}
    for name in folder.finished_units():
        parsed = parse_unit_name(name)
        if parsed and parsed[0] in scenarios:
            by_scenario.setdefault(parsed[0], []).append(folder.unit_predictions_of(name))
    return selective.recipe(units, weights, by_scenario)


RECIPE_NOTE = ("out-of-fold validation predictions of the bundle's recipe: on each fold, the models of that fold of "
               "the members' scenarios, weighted as in the bundle, so no calibration image is scored by a model "
               "chosen for doing well on it")


def fit_sections(run_dir: Path, root: Path, classes: list[str], members: Sequence[Member], preds: Sequence[Any],
                 temperature: float, combine: Any, settings: AbstainSettings | None = None,
                 device: Any = "cpu", vote: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """All four sections of a bundle being exported into ``root``: (``bundle.json`` sections, card sections).

    ``preds``: each member's saved predictions (:class:`allwen.ensemble.build.UnitPredictions`);
    ``combine(list_of_member_probas) -> proba`` is the bundle's ensemble (``vote`` when it votes);
    referral, sets and the patient threshold are fitted on :func:`oof_ensemble` of :func:`recipe_units`.
    Writes :data:`OOD_FILE`.
    """
    from safetensors.numpy import save_file

    from allwen.serve.calibration import apply_temperature

    s = settings or AbstainSettings()
    run_dir = Path(run_dir)
    recipe, recipe_weights = recipe_units(run_dir, [m.name for m in members], [m.weight for m in members])
    val_paths, val_y, val_p = oof_ensemble(recipe, recipe_weights, temperature, vote)
    table = split_table(run_dir)
    subject_of = dict(zip(table["path"], table["subject"])) if "subject" in table else {}
    val_subjects = [subject_of.get(path, "") for path in val_paths] if subject_of else None

    test_y = np.asarray(preds[0].test_y)
    labelled = bool(len(test_y)) and bool((test_y >= 0).all())
    test_p = combine([apply_temperature(p.test_proba, temperature) for p in preds]) if labelled else None
    clusters = None
    if labelled:
        from allwen.evaluation.run import subject_clusters
        from allwen.runfolder import RunFolder

        clusters = subject_clusters(RunFolder(run_dir), list(preds[0].test_paths))
    sections: dict[str, Any] = {}
    card: dict[str, Any] = {}
    sections["selective"], card["selective"] = fit_selective(val_y, val_p, test_y if labelled else None, test_p, s,
                                                             clusters)
    sections["conformal"], card["conformal"] = fit_conformal(val_y, val_p, test_y if labelled else None, test_p,
                                                             classes, s, clusters)
    sections["patient"] = fit_patient(val_subjects, val_y, val_p, classes)

    index = ood_member(members)
    member, unit = members[index], preds[index]
    fold = f"fold_{unit.fold}"
    if fold in table:
        rows = np.flatnonzero(table[fold] == "train")
        train = ([str(table["path"][i]) for i in rows], np.array([classes.index(str(table["label"][i])) for i in rows]))
        test = list(unit.test_paths) if len(unit.test_paths) else None
        sections["ood"], arrays, card["ood"] = fit_ood(member, index, train, list(unit.val_paths), test, s, device)
        save_file(arrays, str(Path(root) / OOD_FILE))
    else:
        log.warning("%s: split.csv has no %s column; the bundle gets no OOD detector", run_dir, fold)
    return sections, card


# --------------------------------------------------------------------------- the model card


def _f(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _ci(pair: Any) -> str:
    return "n/a" if not pair or pair[0] is None else f"{pair[0]:.3f} - {pair[1]:.3f}"


def card_markdown(manifest: dict[str, Any]) -> str:
    """The model card's part on when not to answer (appended to ``MODEL_CARD.md``)."""
    card = manifest.get("card") or {}
    sel, conf, det, pat = (manifest.get(k) for k in ("selective", "conformal", "ood", "patient"))
    if not any((sel, conf, det, pat)):
        return ""
    lines = ["", "## When not to answer", ""]
    if sel:
        t = sel["threshold"]
        lines += [f"**Referral.** Images whose confidence (largest class probability) is below "
                  f"{_f(t, 4) if t is not None else 'any value'} are marked `refer`: the class is only a suggestion "
                  f"and a person should look. The threshold is the lowest whose accepted out-of-fold validation "
                  f"images of the bundle's recipe (every fold's models of its scenarios) reach the target accuracy {sel['target_accuracy']:.3f}"
                  + (f" (validation: coverage {_f(sel['validation']['coverage'])}, accuracy "
                     f"{_f(sel['validation']['accuracy'])})." if sel["achieved"] else
                     ": no threshold reached it, so every image is referred.")]
        test = card.get("selective")
        if test:
            lines += ["", f"On the test set ({test['n_test']} images; {test['confidence']:.0%} {test['unit']}-level "
                      f"bootstrap intervals, {test['bootstrap']} resamples):", "",
                      "| | value | interval |", "|---|---|---|",
                      f"| coverage (share answered) | {_f(test['coverage'])} | {_ci(test['coverage_ci'])} |",
                      f"| accuracy on answered images | {_f(test['accuracy'])} | {_ci(test['accuracy_ci'])} |",
                      "", "![accuracy-coverage curve on the test set](coverage.png)"]
    if conf:
        lines += ["", "**Prediction sets.** Columns " + ", ".join(f"`{lv['column']}`" for lv in conf["levels"])
                  + " list every class the model cannot rule out (split conformal prediction, crepes; "
                  + ("class-conditional: each class calibrated on its own images"
                     if any(lv["mondrian"] for lv in conf["levels"]) else "one threshold for all classes")
                  + ", on the out-of-fold validation predictions of the bundle's recipe: every fold's models of the "
                  "members' scenarios). A set of two or more classes means the image is ambiguous at that level"
                  + ("; the predicted class is always in the set (an empty conformal set, every class ruled out, "
                     "gets it added: coverage can only rise)." if any(lv.get("nonempty") for lv in conf["levels"])
                     else "; an empty set means it is unlike the calibration images.")]
        for ev in card.get("conformal") or []:
            lines += ["", f"Level {ev['level']:.0%} on the test set ({ev['n_test']} images, {ev['unit']}-level intervals): "
                      f"coverage {_f(ev['coverage'])} ({_ci(ev['coverage_ci'])}), mean set size "
                      f"{_f(ev['mean_size'], 2)} ({_ci(ev['mean_size_ci'])})"
                      + (f"; {_f(ev['raw_empty'])} of the test images had an empty conformal set before the predicted "
                         "class was added." if ev.get("nonempty") and ev.get("raw_empty") is not None else "."), "",
                      "| true class | images | coverage | interval | mean set size | interval |", "|---|---|---|---|---|---|"]
            lines += [f"| {c} | {v['n']} | {_f(v['coverage'])} | {_ci(v['coverage_ci'])} | {_f(v['mean_size'], 2)} | "
                      f"{_ci(v['mean_size_ci'])} |" for c, v in ev["per_class"].items()]
    if det:
        test = card.get("ood")
        lines += ["", f"**Out of distribution.** `ood_score` is the {det['method']} distance of an image's "
                  f"{det['features']} (member {det['member']}) to the {det['n_fit']} training images it was fitted on"
                  + (", or the Mahalanobis distance of its colour statistics (per-channel mean and standard deviation "
                     "of the input) to theirs, whichever is larger once each is divided by its own validation "
                     "quantile (a network trained with colour augmentation does not see a stain it never met)"
                     if det.get("input_statistics") else "")
                  + f"; `ood` is true above {det['threshold']:.4g}, the {det['quantile']:.0%} quantile of "
                  f"{det['n_validation']} validation images (about {1 - det['quantile']:.0%} of images like the "
                  "training ones are flagged too)."
                  + (f" Test images flagged: {test['test_flagged']:.3f}." if test else "")]
    if pat and pat.get("threshold") is not None:
        source = (f"chosen on {pat['n_subjects']} validation subjects (balanced accuracy "
                  f"{_f(pat['balanced_accuracy'])})" if pat["source"] == "validation_subjects" else
                  f"the default: {pat.get('note') or 'not chosen on data'}")
        lines += ["", f"**One patient.** `allwen predict --by-folder` calls a folder (a patient's cells) ALL when at "
                  f"least {pat['threshold']:.3f} of its cells are called {' or '.join(pat['positive_classes'])}; "
                  f"the threshold is {source}."]
    lines += ["", "Research software: these flags help decide what to look at; they are not a diagnosis."]
    return "\n".join(lines) + "\n"


def coverage_plot(path: Path, test: dict[str, Any]) -> Path:
    """``coverage.png``: accuracy on answered test images against coverage, the chosen point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from allwen.io import atomic_write

    pts = test["curve"]
    fig, ax = plt.subplots(figsize=(4.5, 3.4), dpi=110)
    ax.plot([p["coverage"] for p in pts], [p["accuracy"] for p in pts], lw=1.6, label="test set")
    ax.axhline(test["target_accuracy"], color="grey", ls="--", lw=1, label=f"target {test['target_accuracy']:.3f}")
    if test.get("accuracy") is not None:
        ax.plot([test["coverage"]], [test["accuracy"]], "o", color="crimson", label="chosen threshold")
    ax.set_xlabel("coverage (share of images answered)")
    ax.set_ylabel("accuracy on answered images")
    ax.set_xlim(0, 1.02)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- applying (predict, serve)


class Abstainer:
    """A bundle's ``selective``, ``conformal``, ``ood`` and ``patient`` sections, ready to apply."""

    def __init__(self, manifest: dict[str, Any], root: Path) -> None:
        self.classes = list(manifest["classes"])
        self.selective = manifest.get("selective")
        self.conformal = manifest.get("conformal")
        self.ood = manifest.get("ood")
        self.patient = manifest.get("patient")
        self._detector = None
        if self.ood:
            from safetensors.numpy import load_file

            self._detector = ood.load_detector(self.ood["method"], load_file(str(Path(root) / self.ood["file"])))

    @property
    def calibrated(self) -> bool:
        """Whether the sections were fitted on temperature-scaled probabilities (predict compares on that scale)."""
        section = self.selective or self.conformal or {}
        return section.get("probabilities", "calibrated") == "calibrated"

    @property
    def set_columns(self) -> list[str]:
        return [lv["column"] for lv in (self.conformal or {}).get("levels", [])]

    @property
    def ood_member(self) -> int | None:
        return None if not self.ood else int(self.ood["member_index"])

    def apply(self, proba: np.ndarray, features: np.ndarray | None) -> dict[str, list]:
        """Per image: ``refer`` (bool), ``set_<level>`` ('a|b'), ``ood_score`` (float or None), ``ood`` (bool or None)."""
        out: dict[str, list] = {}
        if self.selective:
            out["refer"] = selective.refer_mask(proba, self.selective["threshold"]).tolist()
        for lv in (self.conformal or {}).get("levels", []):
            cal = conformal.ConformalLevel(lv["level"], lv["mondrian"], [lv["threshold"][c] for c in self.classes],
                                           nonempty=bool(lv.get("nonempty", False)))
            out[lv["column"]] = [conformal.format_set(r, self.classes) for r in conformal.prediction_sets(proba, cal)]
        if self._detector is not None:
            if features is None:
                out["ood_score"], out["ood"] = [None] * len(proba), [None] * len(proba)
            else:
                if len(features) != len(proba):
                    raise ValueError(f"{len(features)} rows of features for {len(proba)} images")
                score = self._detector.score(features)
                out["ood_score"] = [float(v) for v in score]
                out["ood"] = [bool(v) for v in score > self.ood["threshold"]]
        return out


RESEARCH_NOTE = ("Research software, not a medical device: these calls and flags help decide which cells a "
                 "hematologist should look at; they are not a diagnosis.")


def read_paths_csv(path: Path) -> tuple[list[str], list[str] | None]:
    """A CSV of images to predict: a ``path`` column (relative paths from the CSV's folder), optional ``subject``."""
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "path" not in rows[0]:
        raise ValueError(f"{path}: a CSV of images needs a 'path' column (and optionally 'subject')")
    base = Path(path).parent
    paths = [str(p if Path(p).is_absolute() else base / p) for p in (r["path"] for r in rows)]
    subjects = [str(r.get("subject") or "") for r in rows] if "subject" in rows[0] else None
    return paths, subjects


def patient_verdicts(patients: Sequence[str], proba: np.ndarray, manifest: dict[str, Any], *, ok: np.ndarray | None = None,
                     refer: np.ndarray | None = None, flagged: np.ndarray | None = None,
                     confidence: float = 0.95) -> list[dict[str, Any]]:
    """One verdict per patient with the bundle's ``patient`` section (CLI ``--by-folder`` and the API)."""
    section = manifest.get("patient") or {}
    if section.get("threshold") is None:
        raise ValueError("this bundle has no patient section (its classes have no leukemic class to call): "
                         + str(section.get("note") or "re-export it with this allwen"))
    t = patient.PatientThreshold(float(section["threshold"]), str(section.get("source", "default")),
                                 int(section.get("n_subjects") or 0), section.get("balanced_accuracy"))
    rows = patient.verdicts(list(patients), proba, list(manifest["classes"]), t, positive=section["positive_classes"],
                            refer=refer, ood=flagged, ok=ok, confidence=confidence)
    return [_clean(r.as_dict()) for r in rows]


def patient_table(table: Any, patients: Sequence[str], manifest: dict[str, Any], confidence: float = 0.95) -> Any:
    """One row per patient from a predictions table (``allwen predict --by-folder``)."""
    import pandas as pd

    classes = list(manifest["classes"])
    ok = (table["error"] == "").to_numpy()
    proba = table[[f"prob_{c}" for c in classes]].to_numpy(dtype=float)
    refer = table["refer"].fillna(False).to_numpy(dtype=bool) if "refer" in table else None
    flagged = table["ood"].fillna(False).to_numpy(dtype=bool) if "ood" in table else None
    return pd.DataFrame(patient_verdicts(patients, proba, manifest, ok=ok, refer=refer, flagged=flagged,
                                         confidence=confidence))


__all__ = ["oof_ensemble", "RESEARCH_NOTE", "patient_table", "patient_verdicts", "read_paths_csv", "Abstainer", "AbstainSettings", "CARD_FILE", "CSV_COLUMNS", "card_markdown", "coverage_plot", "OOD_FILE", "OOD_MAX_IMAGES", "SECTIONS", "fit_conformal",
           "fit_ood", "fit_patient", "fit_sections", "fit_selective", "member_features", "ood_member", "split_table",
           "validate_sections"]

"""Know when not to answer, fitted at export: referral, prediction sets, the OOD detector, the patient call.

From the run's saved predictions and images (:func:`fit_sections`):

* ``selective``: the confidence threshold for ``--target-accuracy`` on the out-of-fold validation
  predictions of the bundle's recipe (:func:`recipe_units`; :mod:`allwen.evaluation.selective`);
* ``conformal``: split-conformal thresholds per level and class on the bundle's own test predictions,
  which no choice of the run looked at, grouped by subject (:func:`fit_conformal`;
  :mod:`allwen.evaluation.conformal`, computed by crepes and checked against it);
* ``ood``: a feature-distance detector fitted on the training images of one member's fold, its
  flag threshold at a quantile of that fold's validation images (:mod:`allwen.evaluation.ood`);
* ``patient``: the share-called-ALL threshold of the per-patient call, chosen on validation
  subjects when the run has subject ids (:mod:`allwen.evaluation.patient`).

Those four go into ``bundle.json`` (the numbers predict needs); the test-set evidence (coverage
and accuracy at the threshold, set coverage and size per class, the OOD flag rate, the
accuracy-coverage curve) goes into the model card. All sections are fitted on the
probabilities the bundle gives by default (``calibrated``: temperature-scaled members,
combined); :class:`allwen.serve.abstain.Abstainer` applies them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from allwen.io import json_safe
from allwen.bundle import OOD_FILE, BundleFolder
from allwen.ensemble.combine import pooled_oof, recipe
from allwen.evaluation import conformal, ood, patient, selective
from allwen.evaluation.trust import MIN_CLUSTERS
from allwen.export.timing import phase
from allwen.runfolder import RunFolder, UnitPredictions, parse_unit_name
from allwen.serve.calibration import apply_temperature
from allwen.serve.predict import Member

log = logging.getLogger(__name__)

#: At most this many images per side (training fold, validation fold, test) go through the backbone for the
#: OOD detector at export (a seeded random subset beyond), bounding the export's time.
OOD_MAX_IMAGES = 2000


@dataclass(frozen=True)
class AbstainSettings:
    """What ``allwen export`` asks for (documented defaults)."""

    target_accuracy: float = selective.DEFAULT_TARGET_ACCURACY
    levels: tuple[float, ...] = conformal.DEFAULT_LEVELS
    mondrian: bool | str = True  # class-conditional: each class reaches its level
    ood_method: str = "mahalanobis"
    ood_quantile: float = ood.DEFAULT_QUANTILE
    ood_max_images: int = OOD_MAX_IMAGES
    nonempty_sets: bool = True  # the predicted class is always in the set (conformal.prediction_sets)
    n_boot: int = 1000
    confidence: float = 0.95
    seed: int = 0
    stratify: bool = True  # the run's evaluation.stratify: subjects drawn within each class
    min_clusters: int = MIN_CLUSTERS  # the run's evaluation.min_clusters: calibration subjects per class for sets




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
        return json_safe(section), None
    card = selective.summarize(val_y, val_p, test_y, test_p, s.target_accuracy, clusters=clusters, n_boot=s.n_boot,
                               seed=s.seed, confidence_level=s.confidence, stratify=s.stratify)
    return json_safe(section), json_safe(card)


CONFORMAL_NOTE = ("the bundle's own predictions on the run's test side, which no choice of the run looked at (models, "
                  "epochs, weights and referral are chosen on validation data), class-conditional (Mondrian); a level "
                  "is withheld where a class has fewer test subjects or pseudo-patients than evaluation.min_clusters")
#: At most this many groups of test clusters for the card's cross-fitted sets (each calibrated on the others).
CROSS_FIT_GROUPS = 10


def choices_on_test(cfg: Any) -> list[str]:
    """The settings under which a run chose something on its test side (its test predictions are then touched)."""
    out = []
    if cfg.split.validate_on == "test":
        out.append("split.validate_on=test")
    if cfg.ensemble.champion_by != "validation":
        out.append(f"ensemble.champion_by={cfg.ensemble.champion_by}")
    if cfg.ensemble.weights_from == "test":
        out.append("ensemble.weights_from=test")
    return out


def _cross_fit_folds(n: int, clusters: np.ndarray | None, seed: int) -> np.ndarray:
    """Fold ids for the card's cross-fitted sets: whole clusters (or images) dealt into at most 10 groups."""
    codes = np.arange(n) if clusters is None else np.unique(np.asarray(clusters), return_inverse=True)[1]
    order = np.random.default_rng(seed).permutation(int(codes.max()) + 1 if n else 0)
    return order[codes] % min(CROSS_FIT_GROUPS, len(order))


def fit_conformal(y: np.ndarray | None, proba: np.ndarray | None, classes: Sequence[str], s: AbstainSettings,
                  clusters: np.ndarray | None = None, refused: str | None = None) -> tuple[dict, list[dict]]:
    """(bundle section, card list) of the prediction sets, calibrated on predictions no choice looked at.

    ``y, proba``: the bundle's own labelled test predictions (``clusters``: their subjects). The
    thresholds use all of them; the card's coverage comes from cross-fitted sets (groups of whole
    clusters, each calibrated on the others: :func:`allwen.evaluation.conformal.cross_fit`), so it
    measures the calibration rule on patients it did not see. A level is withheld (no thresholds,
    the reason in the section and the card) where a class has fewer clusters than
    ``min_clusters`` (the run's ``evaluation.min_clusters``), or when there is nothing untouched to
    calibrate on (``refused``, or no labelled test side). Raw sets are checked equal to crepes'.
    """
    import crepes

    section: dict[str, Any] = {
        "method": "split conformal, hinge score 1 - p(class), non-smoothed p-values",
        "library": f"crepes {crepes.__version__}" if hasattr(crepes, "__version__") else "crepes",
        "probabilities": "calibrated", "fitted_on": CONFORMAL_NOTE, "levels": [], "withheld": []}
    card: list[dict] = []
    if y is None or proba is None or not len(y):
        refused = refused or "the run's test side has no labelled images to calibrate on"
    counts = conformal.clusters_per_class(y, len(classes), clusters) if not refused else [0] * len(classes)
    supported = []
    short = conformal.short_classes(counts, classes, s.min_clusters)
    for level in s.levels:
        if refused or short:
            unit = "images" if clusters is None else "subjects"
            reason = refused or (f"sets need at least {s.min_clusters} calibration {unit} per class "
                                 "(evaluation.min_clusters); " + ", ".join(f"{c} has {n}" for c, n in short.items()))
            section["withheld"].append({"level": float(level), "reason": reason,
                                        "clusters": dict(zip(classes, counts))})
            card.append({"level": float(level), "withheld": reason})
        else:
            supported.append(float(level))
    if not supported:
        return json_safe(section), card
    levels = conformal.calibrate(y, proba, supported, s.mondrian, nonempty=s.nonempty_sets)
    for cal in levels:
        if not np.array_equal(conformal.prediction_sets(proba, cal, raw=True),
                              conformal.crepes_sets(y, proba, proba, cal.level, cal.mondrian)):
            raise RuntimeError(f"conformal sets at {cal.level} differ from crepes' (report it)")
    section["levels"] = [{"level": c.level, "column": conformal.column_name(c.level), "mondrian": c.mondrian,
                          "nonempty": c.nonempty, "threshold": dict(zip(classes, c.threshold)),
                          "n_calibration": c.n_calibration, "n_clusters": counts} for c in levels]
    folds = _cross_fit_folds(len(y), clusters, s.seed)
    for fit in conformal.cross_fit(y, proba, folds, supported, clusters=clusters, mondrian=s.mondrian,
                                   nonempty=s.nonempty_sets):
        ev = conformal.evaluate_sets(y, fit.sets, classes, fit.level, clusters=clusters, n_boot=s.n_boot, seed=s.seed,
                                     confidence_level=s.confidence, stratify=s.stratify, raw=fit.raw)
        card.append({"level": ev.level, "mondrian": fit.mondrian, "n_test": ev.n, "unit": ev.unit,
                     "nonempty": s.nonempty_sets, "raw_empty": ev.raw_empty, "raw_coverage": ev.raw_coverage,
                     "cross_fit_groups": int(len(np.unique(folds))),
                     "coverage": ev.coverage, "coverage_ci": list(ev.coverage_ci), "mean_size": ev.mean_size,
                     "mean_size_ci": list(ev.mean_size_ci), "per_class": ev.per_class})
    card.sort(key=lambda e: e["level"])
    return json_safe(section), json_safe(card)


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
    return json_safe({"positive_classes": positive, "statistic": "share of the patient's cells called one of them",
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
            test: list[str] | None, s: AbstainSettings, device: Any = "cpu",
            rows: Any = None) -> tuple[dict, dict[str, np.ndarray], dict | None]:
    """(bundle section, detector arrays for :data:`OOD_FILE`, card section) of the OOD detector.

    Fitted on the training images of the member's fold; the threshold is the ``ood_quantile`` of
    the member's validation images' scores (each side capped at ``ood_max_images``, a seeded subset).
    ``rows(paths)``: the detector's rows of image files (default: :func:`member_features`; export passes
    :func:`allwen.export.cached_rows.cached_ood_rows` when the run's caches hold them).
    """
    rows = rows or (lambda items: member_features(member, items, device))
    paths, labels = train
    keep = _subset(len(paths), s.ood_max_images, s.seed)
    val = [val[i] for i in _subset(len(val), s.ood_max_images, s.seed)]
    detector = ood.WithInputStatistics(ood.make_detector(s.ood_method))
    feats = rows([paths[i] for i in keep])
    val_rows = rows(val)
    detector.fit(feats, np.asarray(labels)[keep], val_rows, s.ood_quantile)
    val_scores = detector.score(val_rows)
    threshold = ood.quantile_threshold(val_scores, s.ood_quantile)
    dim = int(feats.shape[1] - ood.N_INPUT_STATS)
    section = {
        "method": s.ood_method, "member": member.name, "member_index": index, "file": OOD_FILE,
        "features": f"{member.spec.backbone} pooled features ({dim} dimensions)",
        "input_statistics": "per-channel mean and std of the normalised input (Mahalanobis); the score is the "
                            "larger of the two distances, each over its own validation quantile",
        "feature_dim": dim, "n_fit": int(len(keep)), "quantile": s.ood_quantile,
        "threshold": threshold, "n_validation": int(len(val)),
        "fitted_on": "training images of the member's fold; threshold on its validation images",
    }
    card = None
    if test:
        test = [test[i] for i in _subset(len(test), s.ood_max_images, s.seed)]
        test_scores = detector.score(rows(test))
        card = {"method": s.ood_method, "threshold": threshold, "quantile": s.ood_quantile,
                "n_test": len(test), "test_flagged": float((test_scores > threshold).mean()),
                "validation_flagged": float((val_scores > threshold).mean())}
    return json_safe(section), detector.to_arrays(), json_safe(card)


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
    return pooled_oof([(list(p.val_paths), p.val_y, apply_temperature(p.val_proba, temperature), float(w))
                       for p, w in zip(preds, weights)], vote)


def recipe_units(folder: RunFolder, members: Sequence[str], weights: Sequence[float]) -> tuple[list[Any], list[float]]:
    """The bundle's recipe on every fold of the run: (unit predictions, weights), for calibration.

    A bundle's members were chosen on their validation folds (the champion of a scenario is
    its best fold there; every unit keeps its best epoch there), so their own validation
    predictions are optimistic: calibrated on them, the demo's exported ensemble gave 90% sets
    that covered 0.84 of the test images and its best single model 0.79 (``docs/results.md``).
    :func:`allwen.ensemble.combine.recipe` refits what was chosen (which scenarios, with which
    weights) on each fold from the run's finished units: every training-pool image is scored once,
    by models that did not train on it and were not picked for doing well on it.
    """
    units = [folder.unit_predictions_of(name) for name in members]
    scenarios = {parsed[0] for parsed in map(parse_unit_name, members) if parsed}
    by_scenario: dict[str, list[Any]] = {}
    for name in folder.finished_units():
        parsed = parse_unit_name(name)
        if parsed and parsed[0] in scenarios:
            by_scenario.setdefault(parsed[0], []).append(folder.unit_predictions_of(name))
    return recipe(units, weights, by_scenario)


RECIPE_NOTE = ("out-of-fold validation predictions of the bundle's recipe: on each fold, the models of that fold of "
               "the members' scenarios, weighted as in the bundle, so no calibration image is scored by a model "
               "chosen for doing well on it")


def fit_sections(folder: RunFolder, bundle: BundleFolder, classes: list[str], members: Sequence[Member],
                 preds: Sequence[UnitPredictions], temperature: float, combine: Any,
                 settings: AbstainSettings | None = None, device: Any = "cpu",
                 vote: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """All four sections of a bundle being exported into ``bundle``: (``bundle.json`` sections, card sections).

    ``preds``: each member's saved predictions; ``combine(list_of_member_probas) -> proba`` is the
    bundle's ensemble (``vote`` when it votes); referral and the patient threshold are fitted
    on :func:`oof_ensemble` of :func:`recipe_units`, the sets on the bundle's test predictions
    (:func:`fit_conformal`). Writes the OOD detector's file.
    """
    from safetensors.numpy import save_file

    from allwen.export.cached_rows import cached_ood_rows

    s = settings or AbstainSettings()
    with phase("sections: recipe predictions"):
        recipe_preds, recipe_weights = recipe_units(folder, [m.name for m in members], [m.weight for m in members])
        val_paths, val_y, val_p = oof_ensemble(recipe_preds, recipe_weights, temperature, vote)
        split = folder.split_truth()
    subject_of = split.subject_of()
    val_subjects = [subject_of.get(path, "") for path in val_paths] if subject_of else None

    test_y = np.asarray(preds[0].test_y)
    labelled = bool(len(test_y)) and bool((test_y >= 0).all())
    test_p = combine([apply_temperature(p.test_proba, temperature) for p in preds]) if labelled else None
    clusters = None
    if labelled:
        with phase("sections: test subjects"):
            from allwen.evaluation.run import subject_clusters

            clusters = subject_clusters(folder, list(preds[0].test_paths))
    sections: dict[str, Any] = {}
    card: dict[str, Any] = {}
    with phase("sections: referral"):
        sections["selective"], card["selective"] = fit_selective(val_y, val_p, test_y if labelled else None, test_p, s,
                                                                 clusters)
    touched = choices_on_test(folder.load_config())
    with phase("sections: prediction sets"):
        sections["conformal"], card["conformal"] = fit_conformal(
            test_y if labelled else None, test_p, classes, s, clusters,
            refused=f"the run chose on its test side ({', '.join(touched)}), so no prediction it holds is untouched by "
                    "a choice" if touched else None)
    with phase("sections: patient call"):
        sections["patient"] = fit_patient(val_subjects, val_y, val_p, classes)

    index = ood_member(members)
    member, unit = members[index], preds[index]
    if split.has_fold(unit.fold):
        paths, labels = split.role_rows(unit.fold, "train")
        train = (paths, np.array([classes.index(label) for label in labels]))
        test = list(unit.test_paths) if len(unit.test_paths) else None
        with phase("sections: OOD rows from the run's caches"):
            rows = cached_ood_rows(folder, member, paths + list(unit.val_paths) + (test or []),
                                   lambda items: member_features(member, items, device))
        with phase("sections: OOD detector"):
            sections["ood"], arrays, card["ood"] = fit_ood(member, index, train, list(unit.val_paths), test, s, device,
                                                           rows)
        save_file(arrays, str(bundle.ood))
    else:
        log.warning("%s: split.csv has no fold_%d column; the bundle gets no OOD detector", folder.root, unit.fold)
    return sections, card


__all__ = ["AbstainSettings", "CONFORMAL_NOTE", "OOD_MAX_IMAGES", "RECIPE_NOTE", "fit_conformal", "fit_ood", "fit_patient", "fit_sections",
           "fit_selective", "member_features", "oof_ensemble", "ood_member", "recipe_units", "choices_on_test"]

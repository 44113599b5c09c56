"""Selective prediction: answer only above a confidence threshold, refer the rest to a person.

A lab needs to know which cells to trust. The confidence of an image is its largest class
probability; an image is *accepted* when its confidence is at least the threshold and
*referred* otherwise. The threshold is chosen on out-of-fold validation predictions as the
lowest one whose accepted images reach a target accuracy (the largest coverage at that
accuracy), and then judged on the test set: coverage (share accepted) and accuracy on the
accepted images, with (cluster) bootstrap intervals.

Everything here is arrays in, arrays or small records out: no files, no plotting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from allwen.evaluation.metrics import check_inputs, predict_labels
from allwen.evaluation.stats import bootstrap_weights, class_strata, percentile_interval

#: ``allwen export --target-accuracy`` default: accuracy wanted on the images the model answers.
DEFAULT_TARGET_ACCURACY = 0.99


def confidence(proba: np.ndarray) -> np.ndarray:
    """Largest class probability per row: what the threshold compares."""
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"proba must be 2-D (n, K >= 2), got shape {p.shape}")
    return p.max(axis=1)


@dataclass(frozen=True)
class CoverageCurve:
    """Accuracy of the accepted images at each distinct threshold, highest threshold first.

    ``threshold[i]`` accepts ``n_accepted[i]`` images (those with confidence >= it), of
    which ``accuracy[i]`` are right; ``coverage = n_accepted / n``.
    """

    threshold: np.ndarray
    n_accepted: np.ndarray
    coverage: np.ndarray
    accuracy: np.ndarray
    n: int

    def points(self, max_points: int = 101) -> list[dict[str, float]]:
        """At most ``max_points`` rows ``{threshold, coverage, accuracy}``, evenly spread, ends kept."""
        idx = np.arange(len(self.threshold))
        if len(idx) > max_points:
            idx = np.unique(np.round(np.linspace(0, len(idx) - 1, max_points)).astype(int))
        return [{"threshold": float(self.threshold[i]), "coverage": float(self.coverage[i]),
                 "accuracy": float(self.accuracy[i])} for i in idx]


def accuracy_coverage_curve(y_true: np.ndarray, proba: np.ndarray) -> CoverageCurve:
    """The accuracy-coverage curve: accepted accuracy at every distinct confidence value.

    Images with equal confidence are accepted or referred together (a threshold cannot
    split them), so the curve has one point per distinct confidence.
    """
    y, p = check_inputs(y_true, proba)
    conf = confidence(p)
    correct = (predict_labels(p) == y).astype(np.float64)
    order = np.argsort(-conf, kind="stable")
    conf, correct = conf[order], correct[order]
    cum_correct = np.cumsum(correct)
    # last index of each run of equal confidence (sorted descending)
    ends = np.flatnonzero(np.r_[conf[1:] != conf[:-1], True])
    n_acc = ends + 1
    return CoverageCurve(threshold=conf[ends], n_accepted=n_acc, coverage=n_acc / len(y),
                         accuracy=cum_correct[ends] / n_acc, n=len(y))


@dataclass(frozen=True)
class SelectiveThreshold:
    """The chosen threshold and what it gave on the data it was chosen on.

    ``threshold`` is None when no threshold reaches the target: then every image is referred
    (``achieved`` False, coverage 0), which is the honest answer for a model that cannot
    reach the accuracy asked for.
    """

    target_accuracy: float
    threshold: float | None
    coverage: float
    accuracy: float | None
    n_accepted: int
    n: int
    achieved: bool


def choose_threshold(y_true: np.ndarray, proba: np.ndarray, target_accuracy: float = DEFAULT_TARGET_ACCURACY,
                     min_accepted: int = 1) -> SelectiveThreshold:
    """The lowest threshold whose accepted images reach ``target_accuracy`` (at least ``min_accepted`` of them).

    Lowest threshold = largest coverage: selective classification with a risk target
    (Geifman & El-Yaniv 2017) with the plug-in estimate of the accepted accuracy.
    """
    if not 0.0 < target_accuracy <= 1.0:
        raise ValueError(f"target accuracy must be in (0, 1], got {target_accuracy!r}")
    if min_accepted < 1:
        raise ValueError(f"min_accepted must be at least 1, got {min_accepted}")
    curve = accuracy_coverage_curve(y_true, proba)
    ok = np.flatnonzero((curve.accuracy >= target_accuracy - 1e-12) & (curve.n_accepted >= min_accepted))
    if ok.size == 0:
        return SelectiveThreshold(float(target_accuracy), None, 0.0, None, 0, curve.n, False)
    i = int(ok[-1])  # thresholds descend, so the last one that reaches the target covers most
    return SelectiveThreshold(float(target_accuracy), float(curve.threshold[i]), float(curve.coverage[i]),
                              float(curve.accuracy[i]), int(curve.n_accepted[i]), curve.n, True)


def refer_mask(proba: np.ndarray, threshold: float | None) -> np.ndarray:
    """True for the images to refer to a person: confidence below the threshold (all when None)."""
    conf = confidence(proba)
    if threshold is None:
        return np.ones(len(conf), dtype=bool)
    return conf < threshold


@dataclass(frozen=True)
class SelectiveResult:
    """Coverage and accepted accuracy at a threshold, with percentile bootstrap intervals."""

    threshold: float | None
    n: int
    n_accepted: int
    coverage: float
    coverage_ci: tuple[float, float]
    accuracy: float | None
    accuracy_ci: tuple[float, float]
    unit: str  # "subject" (cluster bootstrap) or "image"
    n_boot: int
    undefined_resamples: int  # resamples in which no image was accepted (accuracy undefined)


def evaluate_threshold(y_true: np.ndarray, proba: np.ndarray, threshold: float | None, *,
                       clusters: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0,
                       confidence_level: float = 0.95, stratify: bool = True) -> SelectiveResult:
    """Test coverage and accuracy on accepted images at ``threshold``, with intervals.

    With ``clusters`` (subject ids) the resamples draw subjects with all their images, as
    every other interval of allwen does (within each class when the subjects are class-pure and
    ``stratify``, as ``evaluation.stratify``); accuracy on accepted images is a ratio
    (right and accepted / accepted), computed per resample.
    """
    y, p = check_inputs(y_true, proba)
    accepted = ~refer_mask(p, threshold)
    right = accepted & (predict_labels(p) == y)
    n_acc = int(accepted.sum())
    weights = bootstrap_weights(len(y), n_boot, seed, clusters, class_strata(y, clusters) if stratify else None)
    w_acc = weights @ accepted.astype(np.float64)
    w_right = weights @ right.astype(np.float64)
    cov_dist = w_acc / weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc_dist = np.where(w_acc > 0, w_right / w_acc, np.nan)
    return SelectiveResult(
        threshold=threshold, n=len(y), n_accepted=n_acc, coverage=n_acc / len(y),
        coverage_ci=percentile_interval(cov_dist, confidence_level),
        accuracy=(float(right.sum()) / n_acc) if n_acc else None,
        accuracy_ci=percentile_interval(acc_dist, confidence_level),
        unit="image" if clusters is None else "subject", n_boot=int(n_boot),
        undefined_resamples=int(np.isnan(acc_dist).sum()),
    )


def summarize(val_y: np.ndarray, val_proba: np.ndarray, test_y: np.ndarray, test_proba: np.ndarray,
              target_accuracy: float = DEFAULT_TARGET_ACCURACY, *, clusters: np.ndarray | None = None,
              n_boot: int = 1000, seed: int = 0, confidence_level: float = 0.95, max_points: int = 101,
              stratify: bool = True) -> dict:
    """Threshold chosen on validation, judged on test: the JSON record the card and the report share.

    Keys: ``target_accuracy``, ``threshold``, ``achieved``, ``validation`` (coverage, accuracy, n),
    ``n_test``, ``n_accepted``, ``coverage`` and ``accuracy`` with ``*_ci``, ``unit``,
    ``confidence``, ``bootstrap``, ``undefined_resamples`` and the test ``curve`` points.
    """
    chosen = choose_threshold(val_y, val_proba, target_accuracy)
    res = evaluate_threshold(test_y, test_proba, chosen.threshold, clusters=clusters, n_boot=n_boot, seed=seed,
                             confidence_level=confidence_level, stratify=stratify)

    def clean(v):
        return None if v is None or not np.isfinite(v) else float(v)

    return {
        "target_accuracy": float(target_accuracy), "threshold": chosen.threshold, "achieved": chosen.achieved,
        "validation": {"n": chosen.n, "n_accepted": chosen.n_accepted, "coverage": chosen.coverage,
                       "accuracy": chosen.accuracy},
        "n_test": res.n, "n_accepted": res.n_accepted, "coverage": res.coverage,
        "coverage_ci": [clean(v) for v in res.coverage_ci], "accuracy": res.accuracy,
        "accuracy_ci": [clean(v) for v in res.accuracy_ci], "unit": res.unit, "confidence": confidence_level,
        "bootstrap": res.n_boot, "undefined_resamples": res.undefined_resamples,
        "curve": accuracy_coverage_curve(test_y, test_proba).points(max_points),
    }


__all__ = ["summarize", "DEFAULT_TARGET_ACCURACY", "CoverageCurve", "SelectiveResult", "SelectiveThreshold",
           "accuracy_coverage_curve", "choose_threshold", "confidence", "evaluate_threshold", "refer_mask"]

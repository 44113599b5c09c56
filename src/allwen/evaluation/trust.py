"""When the statistics cannot be trusted: warnings computed from the test side and the resamples.

A cluster bootstrap over a handful of subjects is not an interval one can rely on: with 5
test subjects in 4 clusters, one of them ALL, a third of the resamples hold no ALL cell, so
every kappa and F1 interval starts at 0 and AUC is defined only on the rest (a conditional,
too narrow interval). These functions say so as data (:class:`StatWarning`); the report
words them next to the intervals they affect.

Rules (``docs/splits.md``):

* ``few_clusters``: a class has fewer than ``min_clusters`` (default 6) independent clusters on
  the test side. With 6 per class of a balanced test side, a class is missing from
  ``(1/2)^12 = 0.02%`` of the resamples; with 2 of 6 clusters, ``(2/3)^6 = 9%``.
* ``one_cluster``: a class has a single cluster: resampling it says nothing about other
  patients, so the run reports no cluster interval at all (:func:`drop_intervals`).
* ``class_missing``: a class is absent from more than ``max_undefined_share`` of the resamples
  (kappa, F1, recall and AUC degenerate or undefined there).
* ``metric_undefined``: a metric is undefined (nan) in more than ``max_undefined_share`` of a
  model's resamples; its interval covers only the resamples where it is defined.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

MIN_CLUSTERS = 6
MAX_UNDEFINED_SHARE = 0.01


@dataclass(frozen=True)
class StatWarning:
    """One reason not to trust some intervals: what, how many, the consequence, what it affects."""

    kind: str  # few_clusters | one_cluster | class_missing | metric_undefined
    what: str
    count: int  # clusters of the class, or resamples affected
    total: int  # threshold clusters, or resamples drawn
    consequence: str
    classes: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)  # empty: every interval
    models: list[str] = field(default_factory=list)  # empty: every model

    def to_dict(self) -> dict:
        return asdict(self)


def clusters_per_class(y: np.ndarray, clusters: np.ndarray | None, n_classes: int) -> list[int]:
    """Independent test units per class: clusters holding an image of the class (images without clusters)."""
    y = np.asarray(y)
    if clusters is None:
        return [int((y == k).sum()) for k in range(n_classes)]
    return [len(np.unique(np.asarray(clusters)[y == k])) for k in range(n_classes)]


def class_missing_resamples(y: np.ndarray, weights: np.ndarray, n_classes: int) -> np.ndarray:
    """Per class, how many resamples (rows of the ``(n_boot, n)`` image weights) draw none of it."""
    onehot = np.eye(n_classes, dtype=np.int64)[np.asarray(y)]
    per_class = np.asarray(weights) @ onehot  # (n_boot, n_classes) images drawn of each class
    return (per_class == 0).sum(axis=0)


def cluster_warnings(y: np.ndarray, clusters: np.ndarray | None, classes: Sequence[str],
                     min_clusters: int = MIN_CLUSTERS) -> list[StatWarning]:
    """Warnings about too few independent clusters per class on the test side (none without clusters)."""
    if clusters is None:
        return []
    counts = clusters_per_class(y, clusters, len(classes))
    out = []
    single = [c for c, g in zip(classes, counts) if g == 1]
    if single:
        out.append(StatWarning(
            kind="one_cluster", what=f"class {', '.join(single)} has a single subject cluster on the test side",
            count=1, total=min_clusters, classes=single,
            consequence="no cluster interval is given: resampling one cluster says nothing about other patients",
        ))
    few = [(c, g) for c, g in zip(classes, counts) if 1 < g < min_clusters]
    if few:
        out.append(StatWarning(
            kind="few_clusters",
            what="fewer than {} subject clusters on the test side: {}".format(
                min_clusters, ", ".join(f"{c} {g}" for c, g in few)),
            count=min(g for _, g in few), total=min_clusters, classes=[c for c, _ in few],
            consequence="cluster-bootstrap intervals over so few clusters are too narrow and unstable; "
                        "treat them as rough, or test every cluster once with `allwen crossval` (docs/splits.md)",
        ))
    return out


def resample_warnings(y: np.ndarray, weights: np.ndarray | None, dists: Mapping[str, Mapping[str, np.ndarray]],
                      classes: Sequence[str], max_share: float = MAX_UNDEFINED_SHARE) -> list[StatWarning]:
    """Warnings about resamples missing a class and metrics undefined in a share of resamples."""
    out = []
    n_boot = 0
    if weights is not None and len(weights):
        n_boot = len(weights)
        missing = class_missing_resamples(y, weights, len(classes))
        worst = int(missing.max())
        if worst > max_share * n_boot:
            names = [c for c, m in zip(classes, missing) if m > max_share * n_boot]
            out.append(StatWarning(
                kind="class_missing",
                what=f"{worst} of {n_boot} bootstrap resamples contain no {' or no '.join(names)} image",
                count=worst, total=n_boot, classes=names,
                metrics=["kappa", "f1", "recall", "precision", "auc", "balanced_accuracy", "f1_macro"],
                consequence="in those resamples kappa, F1 and recall are degenerate (0) and AUC undefined: "
                            "intervals start too low, and AUC intervals are conditional on both classes drawn",
            ))
    by_metric: dict[str, tuple[int, int, list[str]]] = {}
    for model, dist in dists.items():
        for metric, values in dist.items():
            values = np.asarray(values, dtype=float)
            undefined = int(np.isnan(values).sum())
            if values.size and undefined > max_share * values.size:
                worst, total, models = by_metric.get(metric, (0, values.size, []))
                by_metric[metric] = (max(worst, undefined), values.size, models + [model])
    for metric, (worst, total, models) in sorted(by_metric.items()):
        out.append(StatWarning(
            kind="metric_undefined", what=f"{metric} is undefined in up to {worst} of {total} resamples",
            count=worst, total=total, metrics=[metric], models=sorted(models),
            consequence=f"the {metric} interval covers only the resamples where it is defined (conditional, too narrow)",
        ))
    return out


def drop_intervals(warnings: Sequence[StatWarning]) -> bool:
    """True when no cluster interval should be reported at all (a class with one cluster)."""
    return any(w.kind == "one_cluster" for w in warnings)


def affects(warning: StatWarning | Mapping, metric: str, model: str | None = None) -> bool:
    """Whether ``warning`` applies to ``metric`` of ``model`` (empty lists mean every one)."""
    get = warning.get if isinstance(warning, Mapping) else (lambda k: getattr(warning, k))
    metrics, models = get("metrics") or [], get("models") or []
    return (not metrics or metric in metrics) and (model is None or not models or model in models)


def assess(y: np.ndarray, clusters: np.ndarray | None, classes: Sequence[str],
           dists: Mapping[str, Mapping[str, np.ndarray]], n_boot: int, seed: int,
           min_clusters: int = MIN_CLUSTERS, max_share: float = MAX_UNDEFINED_SHARE,
           strata: np.ndarray | None = None) -> list[StatWarning]:
    """Every warning for one test side: its clusters, and the resamples the bootstrap drew
    (recomputed from ``seed``: :func:`allwen.evaluation.stats.bootstrap_weights` gives the same
    resamples as the distributions ``dists``)."""
    from allwen.evaluation.stats import bootstrap_weights

    y = np.asarray(y)
    weights = bootstrap_weights(len(y), n_boot, seed, clusters, strata) if n_boot and len(y) else None
    return cluster_warnings(y, clusters, classes, min_clusters) + resample_warnings(y, weights, dists, classes, max_share)

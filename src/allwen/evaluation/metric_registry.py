"""The metric registry: every metric allwen computes, records, ranks by and reports, in one place.

A metric is one :class:`Metric` passed to :func:`register`: its name (the field in
``summary.json``, ``metrics.csv`` and the config value that names it), its function of a stack
of confusion matrices, whether higher is better, how the report labels and rounds it, and where
it appears. Everything else reads this registry when it runs, never a list of its own:

* the computation (:func:`allwen.evaluation.metrics.metric_stack`, bootstrap intervals);
* the results model (:class:`allwen.evaluation.results.Metrics`: one field per metric);
* the grid (each cell's mean and sd over folds: :func:`grid_names`);
* the choices (``ensemble.champion_metric``, ``sweep_metric``: :func:`selectable_names`, read by
  :mod:`allwen.config.choices` and :mod:`allwen.evaluation.selection`);
* the report (columns, labels, number format: :func:`headline_names`, :func:`summary_names`,
  :func:`label`, :func:`fmt`).

Imports numpy only: the config reads the choices from here (``allwen config`` stays light).
The counts' building blocks (:func:`per_class`, :func:`masked_mean`, :func:`safe_divide`) live
here because the metrics are written over them; :mod:`allwen.evaluation.metrics` re-exports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np


def safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (scikit-learn's ``zero_division=0``)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row-wise mean of ``values`` over the True entries of ``mask`` (nan if none)."""
    count = mask.sum(axis=1)
    total = np.where(mask, values, 0.0).sum(axis=1)
    out = np.full(count.shape, np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


def per_class(cm: np.ndarray) -> dict[str, np.ndarray]:
    """One-vs-rest precision, recall, specificity, f1 and support per class, shape (B, K)."""
    tp = np.diagonal(cm, axis1=1, axis2=2)
    true_n, pred_n = cm.sum(axis=2), cm.sum(axis=1)
    total = cm.sum(axis=(1, 2))
    tn = total[:, None] - true_n - pred_n + tp
    return {
        "precision": safe_divide(tp, pred_n),
        "recall": safe_divide(tp, true_n),
        "specificity": safe_divide(tn, tn + pred_n - tp),
        "f1": safe_divide(2.0 * tp, true_n + pred_n),
        "support": true_n,
        "predicted": pred_n,
    }


class Counts:
    """A stack of confusion matrices ``cm`` (B, K, K; rows true, columns predicted) and what every
    count metric reads of it, each computed once: per-class rates, totals, the label set."""

    def __init__(self, cm: np.ndarray) -> None:
        self.cm = cm
        self.n_classes = cm.shape[1]

    @cached_property
    def per(self) -> dict[str, np.ndarray]:
        return per_class(self.cm)

    @cached_property
    def total(self) -> np.ndarray:
        return self.cm.sum(axis=(1, 2))

    @cached_property
    def seen(self) -> np.ndarray:
        """scikit-learn's default label set: the classes in y_true or in the predictions."""
        return (self.per["support"] + self.per["predicted"]) > 0

    @cached_property
    def observed(self) -> np.ndarray:
        return np.diagonal(self.cm, axis1=1, axis2=2).sum(axis=1) / self.total

    def headline(self, name: str) -> np.ndarray:
        """precision/recall/f1/specificity: the positive class's (class 1) for two classes
        (specificity: the recall of class 0), else the macro mean over the label set."""
        if self.n_classes == 2:
            return self.per["recall"][:, 0] if name == "specificity" else self.per[name][:, 1]
        return masked_mean(self.per[name], self.seen)

    def macro(self, name: str) -> np.ndarray:
        return masked_mean(self.per[name], self.seen)

    def weighted(self, name: str) -> np.ndarray:
        return (self.per[name] * self.per["support"]).sum(axis=1) / self.total


def _kappa(c: Counts) -> np.ndarray:
    expected = (c.per["support"] * c.per["predicted"]).sum(axis=1) / c.total**2
    kappa = np.full(c.total.shape, np.nan)
    np.divide(c.observed - expected, 1.0 - expected, out=kappa, where=expected != 1.0)
    return kappa


@dataclass(frozen=True)
class Metric:
    """One metric and everything allwen needs of it."""

    name: str  # the summary.json / metrics.csv field and the config value: a contract once published
    label: str  # the report's column header
    counts: Callable[[Counts], np.ndarray] | None  # (B,) values from a stack of confusion matrices; None: AUC (ranks)
    higher_is_better: bool = True
    digits: int = 3  # decimals in the report
    headline: bool = False  # a column of the report's model tables and metrics.csv, bootstrapped by default
    grid: bool = True  # a grid cell's mean and sd over its folds
    selectable: bool = False  # ensemble.champion_metric and sweep_metric may name it
    summary_rank: int | None = None  # its column in the report's summary table (None: not there)


_REGISTRY: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add ``metric``: the one place a metric is added (results, grids, choices and report follow)."""
    if not metric.name.isidentifier() or metric.name in _REGISTRY or metric.name == "ci":
        raise ValueError(f"metric {metric.name!r}: a new identifier is needed (registered: {', '.join(_REGISTRY)})")
    if metric.counts is None and metric.name != "auc":
        raise ValueError(f"metric {metric.name!r}: give its counts function (only AUC is computed from ranks)")
    if metric.selectable and not metric.higher_is_better:
        raise ValueError(f"metric {metric.name!r}: every choice keeps the highest score, so a lower-is-better "
                         "metric cannot be selectable")
    _REGISTRY[metric.name] = metric
    return metric


def registered() -> tuple[Metric, ...]:
    return tuple(_REGISTRY.values())


def metric(name: str) -> Metric:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; registered: {', '.join(_REGISTRY)}") from None


def metric_names() -> tuple[str, ...]:
    """Every registered metric, in registration order (the results model's field order)."""
    return tuple(_REGISTRY)


def headline_names() -> tuple[str, ...]:
    return tuple(m.name for m in _REGISTRY.values() if m.headline)


def grid_names() -> tuple[str, ...]:
    return tuple(m.name for m in _REGISTRY.values() if m.grid)


def selectable_names() -> tuple[str, ...]:
    return tuple(m.name for m in _REGISTRY.values() if m.selectable)


def summary_names() -> tuple[str, ...]:
    ranked = [m for m in _REGISTRY.values() if m.summary_rank is not None]
    return tuple(m.name for m in sorted(ranked, key=lambda m: m.summary_rank))


def label(name: str) -> str:
    return metric(name).label


def fmt(name: str, value: float | None) -> str:
    """``value`` of metric ``name`` as the report writes it (``n/a`` when undefined)."""
    return "n/a" if value is None else f"{value:.{metric(name).digits}f}"


# --------------------------------------------------------------------------- the built-in metrics
# Order: the results model's fields. Binary: class 1 (ALL) is the positive class; see metrics.py.

register(Metric("accuracy", "Accuracy", lambda c: c.observed, headline=True, selectable=True, summary_rank=0))
register(Metric("balanced_accuracy", "Bal. accuracy", lambda c: masked_mean(c.per["recall"], c.per["support"] > 0),
                headline=True, summary_rank=3))
register(Metric("precision", "Precision", lambda c: c.headline("precision"), headline=True, summary_rank=4))
register(Metric("recall", "Recall", lambda c: c.headline("recall"), headline=True, summary_rank=5))
register(Metric("specificity", "Specificity", lambda c: c.headline("specificity"), headline=True, grid=False))
register(Metric("f1", "F1", lambda c: c.headline("f1"), headline=True, selectable=True, summary_rank=6))
register(Metric("kappa", "Kappa", _kappa, headline=True, selectable=True, summary_rank=1))
register(Metric("auc", "AUC", None, headline=True, selectable=True, summary_rank=2))
for _name in ("f1", "precision", "recall"):
    for _avg in ("macro", "weighted"):
        register(Metric(f"{_name}_{_avg}", f"{_REGISTRY[_name].label} ({_avg})",
                        (lambda n, a: lambda c: getattr(c, a)(n))(_name, _avg)))

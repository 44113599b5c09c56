"""Paired comparisons and per-model results on one test set: pure functions over arrays.

:class:`TestStatistics` holds the test labels, the subject clusters and every model's test
probabilities; it computes each model's metrics with intervals (a cluster bootstrap over
subjects when there are subjects, else over images) and paired tests between models
(subject permutation; else McNemar for accuracy and DeLong for AUC), Holm-corrected within
a family. No file is read here: the orchestrator (:mod:`allwen.evaluation.run`) passes
arrays in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from allwen.config import Config
from allwen.evaluation.metrics import compute_metrics, metric_names, confusion, per_class_table, predict_labels, roc_curves
from allwen.evaluation.results import (
    Comparison,
    Metrics,
    PerClassRow,
    Roc,
    RocCurve,
    Statistics,
    StatWarning,
    WeightSpread,
    finite,
)
from allwen.evaluation.stats import (
    EXACT_MAX_SUBJECTS,
    SWAP_METRICS,
    bootstrap_distributions,
    class_strata,
    cluster_swap_test,
    delong_test,
    holm,
    intervals,
    mcnemar_exact,
    percentile_interval,
    subject_permutation_test,
)

log = logging.getLogger(__name__)


@dataclass
class TestStatistics:
    """The test labels, subject clusters and every model's bootstrap distribution."""

    y: np.ndarray
    clusters: np.ndarray | None
    cfg: Config
    probas: dict[str, np.ndarray]
    dists: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    cluster_kind: str = "subjects"  # or the pseudo-patients standing in for them
    warnings: list[StatWarning] = field(default_factory=list)

    def __post_init__(self) -> None:
        from allwen.evaluation.trust import assess

        ev = self.cfg.evaluation
        if ev.bootstrap:
            self.dists = bootstrap_distributions(self.y, self.probas, ev.bootstrap, ev.seed, metric_names(),
                                                 self.clusters, self.strata)
        classes = self.classes or [str(k) for k in range(max(int(self.y.max()) + 1, 2))]
        found = assess(self.y, self.clusters, classes, self.dists, ev.bootstrap, ev.seed, ev.min_clusters,
                       ev.max_undefined_share, self.strata)
        self.warnings = [StatWarning(**w.to_dict()) for w in found]
        for w in self.warnings:
            log.warning("statistics: %s; %s", w.what, w.consequence)

    @property
    def strata(self) -> np.ndarray | None:
        """The classes, when the cluster bootstrap resamples within them (``evaluation.stratify``)."""
        return class_strata(self.y, self.clusters) if self.cfg.evaluation.stratify else None

    @property
    def intervals_withheld(self) -> bool:
        """A class with one cluster: no cluster interval at all (docs/splits.md)."""
        return any(w.kind == "one_cluster" for w in self.warnings)

    @property
    def n_subjects(self) -> int | None:
        return None if self.clusters is None else int(self.clusters.max()) + 1

    def description(self) -> Statistics:
        ev = self.cfg.evaluation
        level = f"{ev.confidence:.0%} percentile"
        if self.clusters is None:
            interval = f"{level} bootstrap over {len(self.y)} test images ({ev.bootstrap} resamples)"
            paired = "McNemar's exact test (accuracy) and DeLong's test (AUC) over test images"
        else:
            g = self.n_subjects
            what = "test subjects" if self.cluster_kind == "subjects" else f"test pseudo-patients ({self.cluster_kind})"
            within = ", drawn within each class" if self.strata is not None else ""
            interval = (f"{level} cluster bootstrap over {g} {what} ({ev.bootstrap} resamples{within}, "
                        "all images of a drawn cluster)")
            if self.intervals_withheld:
                interval = f"none: a class has a single cluster among the {g} {what}, so no cluster interval is given"
            flips = f"exact over all 2^{g} = {2 ** g} sign flips" if g <= EXACT_MAX_SUBJECTS else "10,000 random sign flips"
            paired = f"permutation over {g} {what} (accuracy and AUC; {flips})"
        from allwen.evaluation.trust import clusters_per_class

        per_class = (dict(zip(self.classes, clusters_per_class(self.y, self.clusters, len(self.classes))))
                     if self.clusters is not None and self.classes else {})
        return Statistics(bootstrap=ev.bootstrap, confidence=ev.confidence, seed=ev.seed, n_test=len(self.y),
                          unit="image" if self.clusters is None else "subject", n_subjects=self.n_subjects,
                          interval_method=interval, paired_method=paired,
                          clusters=None if self.clusters is None else self.cluster_kind,
                          clusters_per_class=per_class, min_clusters=ev.min_clusters, warnings=self.warnings,
                          intervals_withheld=self.intervals_withheld)

    def entry(self, name: str, classes: list[str]) -> dict[str, Any]:
        """Name, metrics with intervals, confusion counts and ROC of one model."""
        proba = self.probas[name]
        values = compute_metrics(self.y, proba)
        withheld = self.intervals_withheld
        ci = intervals(self.dists[name], self.cfg.evaluation.confidence) if self.dists and not withheld else {}
        metrics = Metrics(**{k: finite(v) for k, v in values.items()},
                          ci={k: (finite(ci[k][0]), finite(ci[k][1])) for k in ci})
        return {"name": name, "metrics": metrics, "confusion": confusion(self.y, predict_labels(proba), len(classes)).tolist(),
                "roc": _roc(self.y, proba, classes), "per_class": per_class_rows(self.y, proba, classes)}

    def paired(self, a: str, b: str, metric: str, labels: tuple[str, str] | None = None) -> Comparison | None:
        """a vs b on the same test images; None when the test is undefined (AUC with a class missing)."""
        y, pa, pb = self.y, self.probas[a], self.probas[b]
        la, lb = labels or (a, b)
        diff_ci = None
        if self.dists:
            lo, hi = percentile_interval(self.dists[a][metric] - self.dists[b][metric], self.cfg.evaluation.confidence)
            diff_ci = (finite(lo), finite(hi))
        present = np.bincount(y, minlength=pa.shape[1])
        if metric == "auc" and present.min() < 2:
            return None
        if self.clusters is not None:
            r = subject_permutation_test(y, pa, pb, self.clusters, metric, seed=self.cfg.evaluation.seed)
            return Comparison(a=la, b=lb, test="permutation", metric=metric, diff=finite(r["diff"]), diff_ci=diff_ci,
                              p=r["pvalue"], n_subjects=r["n_subjects"], n_permutations=r["n_permutations"])
        if metric == "accuracy":
            mc = mcnemar_exact(y, predict_labels(pa), predict_labels(pb))
            diff = float(np.mean(predict_labels(pa) == y) - np.mean(predict_labels(pb) == y))
            return Comparison(a=la, b=lb, test="mcnemar", metric=metric, diff=diff, diff_ci=diff_ci,
                              statistic=mc["statistic"], p=mc["pvalue"])
        if pa.shape[1] != 2:
            return None  # DeLong is binary; multi-class AUCs are compared over subjects only
        dl = delong_test(y, pa[:, 1], pb[:, 1])
        return Comparison(a=la, b=lb, test="delong", metric=metric, diff=dl["diff"], diff_ci=diff_ci,
                          statistic=finite(dl["z"]), p=dl["pvalue"])

    def family(self, pairs: list[tuple[str, str, tuple[str, str] | None]],
               metrics: tuple[str, ...] = ("accuracy", "auc")) -> list[Comparison]:
        """Comparisons of each pair in ``metrics`` (accuracy and AUC by default; precision, recall, F1
        and kappa by the cluster swap test), Holm-corrected within each metric."""
        rows = []
        for a, b, labels in pairs:
            for m in metrics:
                c = self.paired(a, b, m, labels) if m in ("accuracy", "auc") else self.swapped([a], [b], m, labels)
                if c is not None:
                    rows.append(c)
        return self._holm(rows)

    @property
    def average(self) -> str:
        from allwen.evaluation.metrics import resolve_average

        return resolve_average(self.cfg.evaluation.average, max(len(self.classes), int(self.y.max()) + 1, 2))

    def swapped(self, a: list[str], b: list[str], metric: str, labels: tuple[str, str] | None = None) -> Comparison:
        """Models ``a`` against ``b`` (paired lists: fold k with fold k) on ``metric`` by the cluster swap test
        (:func:`allwen.evaluation.stats.cluster_swap_test`): the mean of ``a``'s metric minus ``b``'s."""
        from allwen.evaluation.metrics import averaged_name

        if metric not in SWAP_METRICS:
            raise ValueError(f"the swap test covers {', '.join(SWAP_METRICS)}, not {metric!r}")
        name = averaged_name(metric, self.average) if metric in ("precision", "recall", "f1") else metric
        k = self.probas[a[0]].shape[1]
        r = cluster_swap_test(self.y, [predict_labels(self.probas[m]) for m in a],
                              [predict_labels(self.probas[m]) for m in b], self.clusters, metric, self.average,
                              n_classes=k, seed=self.cfg.evaluation.seed)
        diff_ci = None
        if self.dists and all(name in self.dists.get(m, {}) for m in (*a, *b)):
            side = lambda ms: np.mean([self.dists[m][name] for m in ms], axis=0)  # noqa: E731
            lo, hi = percentile_interval(side(a) - side(b), self.cfg.evaluation.confidence)
            diff_ci = (finite(lo), finite(hi))
        la, lb = labels or (a[0] if len(a) == 1 else f"{len(a)} models", b[0] if len(b) == 1 else f"{len(b)} models")
        return Comparison(a=la, b=lb, test="swap", metric=name, diff=finite(r["diff"]), diff_ci=diff_ci, p=r["pvalue"],
                          n_subjects=r["n_clusters"] if self.clusters is not None else None,
                          n_permutations=r["n_permutations"])

    def scenario_family(self, scenarios: list[tuple[str, list[str]]], metrics: tuple[str, ...]) -> list[Comparison]:
        """Every pair of scenarios over all their folds (fold k with fold k; the mean of each side's fold
        models' metric), by the cluster swap test, Holm-corrected within each metric: Experiment A's
        learning-rate question, asked of the 5 x 3 fold models rather than of the three champions."""
        rows = []
        for i, (name_a, units_a) in enumerate(scenarios):
            for name_b, units_b in scenarios[i + 1:]:
                n = min(len(units_a), len(units_b))
                rows += [self.swapped(units_a[:n], units_b[:n], m, (name_a, name_b)) for m in metrics]
        return self._holm(rows)

    @staticmethod
    def _holm(rows: list[Comparison]) -> list[Comparison]:
        for metric in dict.fromkeys(r.metric for r in rows):
            members = [r for r in rows if r.metric == metric]
            for row, adjusted in zip(members, holm([r.p for r in members])):
                row.p_holm = float(adjusted)
        return rows


def per_class_rows(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> list[PerClassRow]:
    """Precision, recall, F1 per class (one-vs-rest; binary too) and their macro average."""
    rows = per_class_table(y, proba, classes)
    keys = ("precision", "recall", "specificity", "f1")
    macro = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    return [PerClassRow(name=r["class"], support=int(r["support"]), **{k: finite(r[k]) for k in keys}) for r in rows] + [
        PerClassRow(name="macro average", support=int(sum(r["support"] for r in rows)),
                    **{k: finite(v) for k, v in macro.items()})]


def _roc(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> Roc:
    curves = roc_curves(y, proba)
    if proba.shape[1] == 2:
        return Roc(**curves["positive"]) if "positive" in curves else Roc()
    per_class = {classes[int(k)]: RocCurve(**v) for k, v in curves.items()}
    aucs = [v.auc for v in per_class.values()]
    return Roc(per_class=per_class, auc=float(np.mean(aucs)) if aucs else None)


def weight_spread(weights: list[float], member_probas: list[np.ndarray], proba: np.ndarray) -> WeightSpread:
    """Spread of the weights and whether they change any test decision against the plain average."""
    w = np.asarray(weights)
    uniform = np.mean(member_probas, axis=0)
    agreement = float(np.mean(predict_labels(uniform) == predict_labels(proba)))
    return WeightSpread(min=float(w.min()), max=float(w.max()), max_deviation=float(np.abs(w - 1 / len(w)).max()),
                        agreement_with_uniform=agreement, indistinguishable_from_uniform=agreement == 1.0)

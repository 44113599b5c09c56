"""Uncertainty and significance for test-set results, at the level where samples are independent.

Cells of one person are not independent: a patient gives many cells, so resampling or pairing
single images makes intervals too narrow and p-values too small. When the test images carry
subject ids (``clusters``: one integer per image; images sharing a subject, or a duplicate
image across subjects, share a cluster), every function here works over clusters:

* :func:`bootstrap_ci` resamples clusters with replacement and takes all their images
  (cluster bootstrap); without clusters it resamples images (percentile bootstrap). With
  ``strata`` (one label per image, constant within a cluster: the class, see
  :func:`class_strata`) it resamples within each stratum, so every resample keeps the
  number of clusters of each class that the split put on the test side.
* :func:`subject_permutation_test` compares two models on the same images by flipping, per
  subject, which model is which (a sign flip of per-subject differences): exact over all
  ``2**G`` flips for up to :data:`EXACT_MAX_SUBJECTS` subjects, Monte Carlo beyond.
  For accuracy and AUC the difference is linear in the flips, so the null distribution
  costs one matrix product.
* Without subjects, McNemar's exact test (accuracy) and DeLong's test (AUC) compare images.

A resample is a weight per image (how often it was drawn), so every metric of every
resample follows from :func:`allwen.evaluation.metrics.metric_stack`, the same code as the
point estimates. ``tests/evaluation/test_stats.py`` measures the coverage of both intervals
on simulated subjects (see the README).
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache

import numpy as np

from allwen.evaluation.metrics import (
    half_wins,
    check_inputs,
    check_labels,
    check_metric_names,
    metric_stack,
    midranks,
    predict_labels,
)

logger = logging.getLogger(__name__)

# Bootstrap weights are drawn in blocks of at most this many (resample, image) cells,
# bounding memory for large test sets while keeping the draws a function of the seed.
_MAX_CELLS = 2_000_000
#: Up to this many subjects the permutation test enumerates every sign flip (2**G).
EXACT_MAX_SUBJECTS = 20


# ---------------------------------------------------------------------------
# bootstrap resampling
# ---------------------------------------------------------------------------


def _check_bootstrap_args(n_boot: int, confidence: float | None = None) -> None:
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if confidence is not None and not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")


def cluster_codes(labels: Sequence | np.ndarray) -> np.ndarray:
    """Any per-image cluster labels as integer codes 0..G-1."""
    return np.unique(np.asarray(labels), return_inverse=True)[1].astype(np.int64)


def _check_clusters(clusters: np.ndarray | None, n: int) -> np.ndarray | None:
    if clusters is None:
        return None
    codes = np.asarray(clusters)
    if codes.shape != (n,):
        raise ValueError(f"clusters must have one entry per image ({n}), got shape {codes.shape}")
    return cluster_codes(codes)


def _counts(draws: np.ndarray, size: int) -> np.ndarray:
    """How often each of ``size`` items occurs in each row of ``draws``, shape (rows, size)."""
    rows = draws.shape[0]
    flat = (draws + (np.arange(rows) * size)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * size).reshape(rows, size).astype(np.float64)


def _weight_blocks(n: int, n_boot: int, seed: int, clusters: np.ndarray | None,
                   unit_strata: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Weights of each resample, ``(block, n)`` at a time, from one seeded Generator.

    Image bootstrap: n images drawn with replacement, weights per image. Cluster
    bootstrap: G clusters drawn with replacement, weights per cluster ``(block, G)``:
    each image counts as often as its cluster was drawn. With ``unit_strata`` (one code
    per image, or per cluster) each stratum's units are drawn among themselves, as many
    as it holds.
    """
    rng = np.random.default_rng(seed)
    units = n if clusters is None else int(clusters.max()) + 1
    step = max(1, _MAX_CELLS // n)
    groups = None if unit_strata is None else [np.flatnonzero(unit_strata == s) for s in np.unique(unit_strata)]
    for start in range(0, n_boot, step):
        block = min(step, n_boot - start)
        if groups is None:
            yield _counts(rng.integers(0, units, size=(block, units)), units)
            continue
        weights = np.zeros((block, units))
        for members in groups:
            weights[:, members] = _counts(rng.integers(0, len(members), size=(block, len(members))), len(members))
        yield weights


def _per_cluster(labels: np.ndarray, codes: np.ndarray) -> np.ndarray | None:
    """Each cluster's label (integer labels per image), or None when some cluster holds two."""
    per_cluster = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
    per_cluster[codes] = labels
    return per_cluster if np.array_equal(per_cluster[codes], labels) else None


def class_strata(y: np.ndarray | Sequence, clusters: np.ndarray | Sequence | None) -> np.ndarray | None:
    """The labels as bootstrap strata when every cluster holds a single class, else None.

    Subjects and pseudo-patients are class-pure in these datasets (a patient is ALL or
    not), and the split fixed each class's share of the test side; resampling within
    classes keeps that design, so no resample loses a class. A cluster mixing classes
    (a duplicate filed under two labels) leaves no such design: resample all together.
    """
    if clusters is None:
        return None
    y = np.asarray(y)
    labels = np.unique(y, return_inverse=True)[1].astype(np.int64)
    return None if _per_cluster(labels, cluster_codes(clusters)) is None else y


def _unit_strata(strata: np.ndarray | Sequence | None, codes: np.ndarray | None, n: int) -> np.ndarray | None:
    """Per-unit stratum codes (per image, or per cluster when ``codes`` is given)."""
    if strata is None:
        return None
    labels = np.unique(np.asarray(strata), return_inverse=True)[1].astype(np.int64)
    if labels.shape != (n,):
        raise ValueError(f"strata must have one entry per image ({n}), got shape {np.shape(strata)}")
    if codes is None:
        return labels
    per_cluster = _per_cluster(labels, codes)
    if per_cluster is None:
        raise ValueError("strata must be constant within each cluster (use class_strata, which checks it)")
    return per_cluster


def bootstrap_weights(n: int, n_boot: int = 1000, seed: int = 0, clusters: np.ndarray | None = None,
                      strata: np.ndarray | None = None) -> np.ndarray:
    """The ``(n_boot, n)`` image weights that the bootstrap functions use for ``seed``.

    Exposed so a caller (or a test) can recompute any resample with other tools
    (``np.repeat(rows, weights[b])``).
    """
    _check_bootstrap_args(n_boot)
    if n < 1:
        raise ValueError(f"need at least 1 row to resample, got n={n}")
    codes = _check_clusters(clusters, n)
    weights = np.concatenate(list(_weight_blocks(n, n_boot, seed, codes, _unit_strata(strata, codes, n))), axis=0)
    return weights if codes is None else weights[:, codes]


def bootstrap_distributions(
    y_true: np.ndarray | list,
    probas: Mapping[str, np.ndarray],
    n_boot: int = 1000,
    seed: int = 0,
    metrics: str | Iterable[str] | None = None,  # None: the headline metrics
    clusters: np.ndarray | None = None,
    strata: np.ndarray | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Each model's metrics on each of ``n_boot`` resamples, all models on the same resamples.

    nan where a metric is undefined in a resample (AUC when a class was not drawn).
    """
    _check_bootstrap_args(n_boot)
    names = check_metric_names(metrics)
    y = check_labels(y_true)
    checked = {key: check_inputs(y, p)[1] for key, p in probas.items()}
    codes = _check_clusters(clusters, len(y))
    blocks: dict[str, list[dict[str, np.ndarray]]] = {key: [] for key in checked}
    for weights in _weight_blocks(len(y), int(n_boot), seed, codes, _unit_strata(strata, codes, len(y))):
        for key, proba in checked.items():
            blocks[key].append(metric_stack(y, proba, weights, names, codes))
    return {key: {name: np.concatenate([b[name] for b in store]) for name in names} for key, store in blocks.items()}


def bootstrap_distribution(
    y_true: np.ndarray | list,
    proba: np.ndarray | list,
    n_boot: int = 1000,
    seed: int = 0,
    metrics: str | Iterable[str] | None = None,  # None: the headline metrics
    clusters: np.ndarray | None = None,
    strata: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """One model's metrics on each resample; resample ``b`` weighs images by ``bootstrap_weights(...)[b]``."""
    return bootstrap_distributions(y_true, {"model": proba}, n_boot, seed, metrics, clusters, strata)["model"]


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """nan-aware percentile interval; (nan, nan) when no resample defined the metric."""
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - confidence) / 2.0
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return float(lo), float(hi)


def intervals(dist: Mapping[str, np.ndarray], confidence: float) -> dict[str, tuple[float, float]]:
    """Percentile interval per metric; resamples where a metric is undefined are skipped (logged).

    Metrics defined in every resample share one ``np.percentile`` call.
    """
    names = list(dist)
    values = np.stack([np.asarray(dist[n], dtype=float) for n in names])
    undefined = np.isnan(values).sum(axis=1)
    tail = 100.0 * (1.0 - confidence) / 2.0
    out: dict[str, tuple[float, float]] = {}
    complete = np.flatnonzero(undefined == 0)
    if complete.size:
        bounds = np.percentile(values[complete], [tail, 100.0 - tail], axis=1)
        out.update({names[i]: (float(lo), float(hi)) for i, lo, hi in zip(complete, bounds[0], bounds[1])})
    for i in np.flatnonzero(undefined):
        logger.info("bootstrap: %s undefined in %d of %d resamples", names[i], undefined[i], values.shape[1])
        out[names[i]] = percentile_interval(values[i], confidence)
    return {name: out[name] for name in names}


def bootstrap_ci(
    y_true: np.ndarray | list,
    proba: np.ndarray | list,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    metrics: str | Iterable[str] | None = None,  # None: the headline metrics
    clusters: np.ndarray | None = None,
    strata: np.ndarray | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval per metric, resampling images or (with ``clusters``) subjects,
    within each stratum when ``strata`` is given.

    Resamples in which a metric is undefined (AUC when a class is missing) are skipped
    for that metric only; the number skipped is logged because many skips mean the
    interval describes a conditional distribution.
    """
    _check_bootstrap_args(n_boot, confidence)
    return intervals(bootstrap_distribution(y_true, proba, n_boot, seed, metrics, clusters, strata), confidence)


# ---------------------------------------------------------------------------
# permutation over subjects
# ---------------------------------------------------------------------------


def _auc_flip_vector(is_pos: np.ndarray, a: np.ndarray, b: np.ndarray, clusters: np.ndarray, n_clusters: int) -> np.ndarray:
    """v such that AUC(a') - AUC(b') == s @ v when subject g's scores swap models iff s_g == -1.

    Writing the Mann-Whitney sums per pair of subjects, the difference is linear in the
    signs: each subject contributes half its positives' and negatives' win differences.
    """
    pos, neg = is_pos, ~is_pos
    ap, bp, an, bn = a[pos], b[pos], a[neg], b[neg]
    r = half_wins(ap, an) - half_wins(bp, bn) + half_wins(ap, bn) - half_wins(bp, an)
    q = half_wins(bn, bp) - half_wins(an, ap) - half_wins(an, bp) + half_wins(bn, ap)
    v = np.bincount(clusters[pos], weights=r, minlength=n_clusters)
    v += np.bincount(clusters[neg], weights=q, minlength=n_clusters)
    return v / (2.0 * pos.sum() * neg.sum())


def _flip_vector(y: np.ndarray, pa: np.ndarray, pb: np.ndarray, clusters: np.ndarray, metric: str) -> np.ndarray:
    n_clusters = int(clusters.max()) + 1
    if metric == "accuracy":
        right = (predict_labels(pa) == y).astype(float) - (predict_labels(pb) == y)
        return np.bincount(clusters, weights=right, minlength=n_clusters) / len(y)
    classes = [1] if pa.shape[1] == 2 else range(pa.shape[1])
    parts = []
    for k in classes:
        is_pos = y == k
        if is_pos.all() or not is_pos.any():
            raise ValueError("AUC needs both positives and negatives of every class on the test set")
        parts.append(_auc_flip_vector(is_pos, pa[:, k], pb[:, k], clusters, n_clusters))
    return np.mean(parts, axis=0)


@lru_cache(maxsize=8)
def _all_signs(n_subjects: int) -> np.ndarray:
    """Every sign vector of length n_subjects, ``(2**n, n)`` (cached: a report reuses it)."""
    bits = (np.arange(2**n_subjects)[:, None] >> np.arange(n_subjects)) & 1
    return 1.0 - 2.0 * bits


def _exact_null(v: np.ndarray) -> np.ndarray:
    """``s @ v`` for all 2**G sign vectors s, as an outer sum of the two halves' sums."""
    half = len(v) // 2
    return ((_all_signs(half) @ v[:half])[:, None] + (_all_signs(len(v) - half) @ v[half:])[None, :]).ravel()


def subject_permutation_test(
    y_true: np.ndarray | list,
    proba_a: np.ndarray | list,
    proba_b: np.ndarray | list,
    clusters: np.ndarray,
    metric: str = "accuracy",
    n_perm: int = 10_000,
    seed: int = 0,
) -> dict:
    """Paired test of metric(a) == metric(b) over subjects (sign flip of per-subject differences).

    Under H0 the two models are exchangeable within each subject, so swapping which model
    predicted a subject's images is as likely as not. ``metric`` is ``accuracy`` or ``auc``
    (binary, or one-vs-rest macro). Exact (all ``2**G`` flips) for ``G <= EXACT_MAX_SUBJECTS``,
    else ``n_perm`` random flips with p = (1 + hits) / (1 + n_perm). Two-sided.
    """
    if metric not in ("accuracy", "auc"):
        raise ValueError(f"the subject permutation test covers accuracy and auc, got {metric!r}")
    y, pa = check_inputs(y_true, proba_a)
    _, pb = check_inputs(y, proba_b)
    codes = _check_clusters(clusters, len(y))
    v = _flip_vector(y, pa, pb, codes, metric)
    n_subjects = len(v)
    observed = float(v.sum())
    exact = n_subjects <= EXACT_MAX_SUBJECTS
    if exact:
        null = _exact_null(v)
    else:
        null = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_perm, n_subjects)) @ v
    hits = int(np.sum(np.abs(null) >= abs(observed) - 1e-12))
    pvalue = hits / len(null) if exact else (1 + hits) / (1 + n_perm)
    return {"diff": observed, "pvalue": float(min(1.0, pvalue)), "n_subjects": n_subjects,
            "n_permutations": int(len(null)), "exact": exact}


#: metrics the cluster swap test covers: each a function of the confusion counts
SWAP_METRICS = ("accuracy", "precision", "recall", "f1", "kappa")
SWAP_EXACT_MAX = 12  # clusters up to which every one of the 2^G swaps is enumerated


def confusion_metric(counts: np.ndarray, metric: str, average: str = "binary") -> np.ndarray:
    """``metric`` of confusion matrices ``counts`` (..., K, K; rows true, columns predicted):
    accuracy, Cohen's kappa, or precision / recall / F1 of the positive class (``binary``, class
    1), macro- or support-weighted (``macro``, ``weighted``); 0 where undefined (scikit-learn's
    ``zero_division=0``)."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(axis=(-2, -1))
    tp = np.diagonal(counts, axis1=-2, axis2=-1)
    true_n, pred_n = counts.sum(axis=-1), counts.sum(axis=-2)

    def ratio(num, den):
        return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)

    if metric == "accuracy":
        return ratio(tp.sum(-1), n)
    if metric == "kappa":
        po, pe = ratio(tp.sum(-1), n), ratio((true_n * pred_n).sum(-1), n ** 2)
        return ratio(po - pe, 1 - pe)
    per_class = {"precision": lambda: ratio(tp, pred_n), "recall": lambda: ratio(tp, true_n),
                 "f1": lambda: ratio(2 * tp, pred_n + true_n)}[metric]()
    if average == "binary":
        return per_class[..., 1]
    if average == "macro":
        return per_class.mean(-1)
    return ratio((per_class * true_n).sum(-1), n)


def cluster_swap_test(
    y_true: np.ndarray | Sequence,
    preds_a: Sequence[np.ndarray],
    preds_b: Sequence[np.ndarray],
    clusters: np.ndarray | None,
    metric: str = "accuracy",
    average: str = "binary",
    n_classes: int | None = None,
    n_perm: int = 2000,
    seed: int = 0,
) -> dict:
    """Paired test that two sets of models score alike: ``mean_k metric(a_k) - mean_k metric(b_k)``.

    ``preds_a`` and ``preds_b`` are predicted labels of K paired models each (one model each for
    two models; the K fold models of two scenarios, fold k with fold k, for a scenario question).
    Under H0 a cluster's (subject's) predictions could as well have come from either side, so the
    null swaps whole clusters between the sides, all K models at once; without clusters every
    image is its own. Covers every metric of the confusion counts (accuracy, precision, recall, F1,
    kappa), where the sign-flip test needs a per-image score. Exact (all 2^G swaps) for G <=
    ``SWAP_EXACT_MAX``, else ``n_perm`` random swaps with p = (1 + hits) / (1 + n_perm). Two-sided.
    """
    if metric not in SWAP_METRICS:
        raise ValueError(f"the cluster swap test covers {', '.join(SWAP_METRICS)}, got {metric!r}")
    y = check_labels(y_true)
    if not preds_a or len(preds_a) != len(preds_b):
        raise ValueError(f"need as many models on each side, got {len(preds_a)} and {len(preds_b)}")
    pa = [check_labels(p, name="preds_a") for p in preds_a]
    pb = [check_labels(p, name="preds_b") for p in preds_b]
    if any(len(p) != len(y) for p in (*pa, *pb)):
        raise ValueError("every prediction vector needs one label per test image")
    k = int(n_classes or max(int(y.max()), *(int(p.max()) for p in (*pa, *pb))) + 1)
    codes = _check_clusters(clusters, len(y)) if clusters is not None else np.arange(len(y))
    g = int(codes.max()) + 1

    def per_cluster(pred: np.ndarray) -> np.ndarray:  # (G, K*K) confusion counts of each cluster
        return np.bincount(codes * k * k + y * k + pred, minlength=g * k * k).reshape(g, k * k).astype(np.float64)

    ca, cb = np.stack([per_cluster(p) for p in pa]), np.stack([per_cluster(p) for p in pb])  # (M, G, K*K)
    total_a, total_b, delta = ca.sum(1), cb.sum(1), cb - ca

    def statistic(swaps: np.ndarray) -> np.ndarray:  # swaps (P, G) in {0, 1}
        moved = np.einsum("pg,mgc->pmc", swaps, delta)
        side_a = confusion_metric((total_a[None] + moved).reshape(*moved.shape[:2], k, k), metric, average)
        side_b = confusion_metric((total_b[None] - moved).reshape(*moved.shape[:2], k, k), metric, average)
        return side_a.mean(1) - side_b.mean(1)

    observed = float(statistic(np.zeros((1, g)))[0])
    exact = g <= SWAP_EXACT_MAX
    swaps = ((np.arange(2 ** g)[:, None] >> np.arange(g)) & 1).astype(np.float64) if exact else \
        np.random.default_rng(seed).integers(0, 2, size=(n_perm, g)).astype(np.float64)
    null = np.concatenate([statistic(chunk) for chunk in np.array_split(swaps, max(1, len(swaps) // 512))])
    hits = int(np.sum(np.abs(null) >= abs(observed) - 1e-12))
    pvalue = hits / len(null) if exact else (1 + hits) / (1 + n_perm)
    return {"diff": observed, "pvalue": float(min(1.0, pvalue)), "n_clusters": g, "n_permutations": int(len(null)),
            "exact": exact}


# ---------------------------------------------------------------------------
# McNemar
# ---------------------------------------------------------------------------


def mcnemar_exact(
    y_true: np.ndarray | list, pred_a: np.ndarray | list, pred_b: np.ndarray | list
) -> dict:
    """Exact (binomial) McNemar test on the images where exactly one model is right.

    ``b`` = a right & b wrong, ``c`` = a wrong & b right; under H0 b ~ Bin(b + c, 1/2).
    The exact conditional test is used rather than the chi-square approximation because
    good classifiers disagree on few images. Returns b, c, statistic = min(b, c), pvalue.
    """
    y = check_labels(y_true)
    a = check_labels(pred_a, name="pred_a")
    b_pred = check_labels(pred_b, name="pred_b")
    if not len(y) == len(a) == len(b_pred):
        raise ValueError(
            f"y_true, pred_a and pred_b must have equal lengths, "
            f"got {len(y)}, {len(a)} and {len(b_pred)}"
        )
    right_a, right_b = a == y, b_pred == y
    b = int(np.sum(right_a & ~right_b))
    c = int(np.sum(~right_a & right_b))
    return {"b": b, "c": c, "statistic": min(b, c), "pvalue": binomial_two_sided_half(min(b, c), b + c)}


def binomial_two_sided_half(k: int, n: int) -> float:
    """Two-sided exact p-value of ``k`` successes in ``n`` trials at p = 1/2 (as ``scipy.stats.binomtest``).

    Bin(n, 1/2) is symmetric, so the two-sided p is ``2 P(X <= min(k, n - k))``, capped at 1.
    Computed in exact integers: importing ``scipy.stats`` would cost over a second per report.
    """
    if n == 0:
        return 1.0
    low = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(low + 1))
    return min(1.0, float(Fraction(2 * tail, 2**n)))


# ---------------------------------------------------------------------------
# DeLong
# ---------------------------------------------------------------------------


def _check_binary_scores(
    y_true: np.ndarray | list, scores: Sequence
) -> tuple[np.ndarray, np.ndarray]:
    """Validated 0/1 labels and a (k, n) float score matrix for DeLong."""
    y = check_labels(y_true)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("DeLong needs binary 0/1 labels (1 = positive)")
    matrix = []
    for i, score in enumerate(scores):
        s = np.asarray(score, dtype=np.float64)
        if s.ndim != 1 or len(s) != len(y):
            raise ValueError(f"score {i} must be 1-D with {len(y)} values, got shape {s.shape}")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"score {i} contains NaN or infinite values")
        matrix.append(s)
    n_pos = int(y.sum())
    if n_pos < 2 or len(y) - n_pos < 2:
        raise ValueError(
            f"DeLong variance needs at least 2 positives and 2 negatives, "
            f"got {n_pos} and {len(y) - n_pos}"
        )
    return y, np.vstack(matrix)


def _delong_covariance(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their covariance matrix via midranks (Sun & Xu 2014), O(n log n)."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    rank_pos = midranks(pos)
    rank_neg = midranks(neg)
    rank_all = midranks(np.hstack([pos, neg]))
    # Structural components: for each positive, the share of negatives it outranks
    # (ties 1/2); for each negative, the share of positives that outrank it.
    v_pos = (rank_all[:, :m] - rank_pos) / n
    v_neg = 1.0 - (rank_all[:, m:] - rank_neg) / m
    aucs = v_pos.mean(axis=1)
    cov = np.atleast_2d(np.cov(v_pos)) / m + np.atleast_2d(np.cov(v_neg)) / n
    return aucs, cov


def delong_auc_variance(y_true: np.ndarray | list, score: np.ndarray | list) -> tuple[float, float]:
    """AUC of ``score`` for positive class 1 and its DeLong variance."""
    y, scores = _check_binary_scores(y_true, [score])
    aucs, cov = _delong_covariance(y, scores)
    return float(aucs[0]), float(cov[0, 0])


def delong_test(
    y_true: np.ndarray | list, score_a: np.ndarray | list, score_b: np.ndarray | list
) -> dict:
    """DeLong, DeLong & Clarke-Pearson (1988) test of AUC(a) == AUC(b) on the same cases.

    Returns auc_a, auc_b, diff, z, two-sided pvalue and ``covariance`` (2x2 nested
    list, JSON-ready). Identical scores give z = 0, p = 1; a nonzero difference with
    zero variance gives z = +-inf, p = 0.
    """
    y, scores = _check_binary_scores(y_true, [score_a, score_b])
    aucs, cov = _delong_covariance(y, scores)
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    if diff == 0.0:
        z = 0.0
    elif var <= 0.0:
        z = float(np.copysign(np.inf, diff))
    else:
        z = diff / float(np.sqrt(var))
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "diff": diff,
        "z": z,
        "pvalue": math.erfc(abs(z) / math.sqrt(2.0)),  # two-sided normal tail
        "covariance": cov.tolist(),
    }


# ---------------------------------------------------------------------------
# multiple comparisons
# ---------------------------------------------------------------------------


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values in the input order (monotone, capped at 1)."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be 1-D, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("pvalues must be finite and within [0, 1]")
    m = p.size
    order = np.argsort(p, kind="mergesort")
    scaled = (m - np.arange(m)) * p[order]
    adjusted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out

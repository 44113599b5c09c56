"""Bootstrap, McNemar, DeLong and Holm against sklearn, slow references and published numbers."""

from __future__ import annotations

import time
from math import comb

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from allwen.evaluation import (
    ALL_METRIC_NAMES,
    bootstrap_ci,
    bootstrap_distribution,
    bootstrap_weights,
    compute_metrics,
    delong_auc_variance,
    delong_test,
    holm,
    mcnemar_exact,
    subject_permutation_test,
)


def _case(seed: int, n_classes: int, n: int = 400, decimals: int | None = None):
    """Informative probabilities; rounding them creates ties that exercise midranks."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(n_classes), rng.integers(0, n_classes, n - n_classes)])
    proba = rng.dirichlet(np.ones(n_classes), size=n)
    proba[np.arange(n), y] += rng.uniform(0.0, 0.7, size=n)
    proba /= proba.sum(axis=1, keepdims=True)
    if decimals is not None:
        proba = np.round(proba, decimals)
    return y, proba


# ---------------------------------------------------------------------------
# bootstrap
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("n_classes", "decimals"), [(2, None), (2, 1), (4, 2)])
def test_vectorised_bootstrap_equals_compute_metrics_on_the_same_resamples(
    n_classes: int, decimals: int | None
) -> None:
    y, proba = _case(3, n_classes, n=120, decimals=decimals)
    dist = bootstrap_distribution(y, proba, n_boot=25, seed=7, metrics=ALL_METRIC_NAMES)
    weights = bootstrap_weights(len(y), n_boot=25, seed=7).astype(int)
    assert (weights.sum(axis=1) == len(y)).all()
    for b in range(25):
        rows = np.repeat(np.arange(len(y)), weights[b])
        expected = compute_metrics(y[rows], proba[rows])
        for name in ALL_METRIC_NAMES:
            np.testing.assert_allclose(dist[name][b], expected[name], atol=1e-12, err_msg=name)


def test_bootstrap_matches_sklearn_when_classes_go_missing_in_resamples() -> None:
    # 12 rows, 2 positives, 4 classes with one rare: many resamples lose a class, so the
    # nan/zero-division paths must agree with compute_metrics too.
    y = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3])
    proba = np.random.default_rng(0).dirichlet(np.ones(4), size=len(y))
    dist = bootstrap_distribution(y, proba, n_boot=40, seed=1, metrics=ALL_METRIC_NAMES)
    weights = bootstrap_weights(len(y), n_boot=40, seed=1).astype(int)
    assert np.isnan(dist["auc"]).any()
    for b in range(40):
        rows = np.repeat(np.arange(len(y)), weights[b])
        expected = compute_metrics(y[rows], proba[rows])
        for name in ALL_METRIC_NAMES:
            np.testing.assert_allclose(dist[name][b], expected[name], atol=1e-12, err_msg=name)


def test_bootstrap_ci_contains_estimate_and_is_reproducible() -> None:
    y, proba = _case(0, 2, n=500)
    point = compute_metrics(y, proba)
    ci = bootstrap_ci(y, proba, n_boot=400, seed=11)
    for name, (lo, hi) in ci.items():
        assert lo <= point[name] <= hi, name
    assert bootstrap_ci(y, proba, n_boot=400, seed=11) == ci
    assert bootstrap_ci(y, proba, n_boot=400, seed=12) != ci
    narrow = bootstrap_ci(y, proba, n_boot=400, confidence=0.5, seed=11)
    for name in ci:
        assert ci[name][0] <= narrow[name][0] <= narrow[name][1] <= ci[name][1]
        assert narrow[name][1] - narrow[name][0] < ci[name][1] - ci[name][0]


def test_bootstrap_skips_undefined_resamples() -> None:
    y = np.array([1] + [0] * 9)  # a resample misses the positive with prob. 0.9^10 ~ 0.35
    proba = np.c_[np.linspace(0.9, 0.1, 10), np.linspace(0.1, 0.9, 10)]
    ci = bootstrap_ci(y, proba, n_boot=200, seed=0, metrics=("auc", "accuracy"))
    assert np.all(np.isfinite(ci["auc"])) and np.all(np.isfinite(ci["accuracy"]))
    single = bootstrap_ci(np.zeros(10, int), proba, n_boot=50, metrics=["auc", "accuracy"])
    assert np.isnan(single["auc"]).all() and np.isfinite(single["accuracy"]).all()


def test_bootstrap_is_fast_enough_for_a_test_set() -> None:
    y, proba = _case(1, 2, n=2000)
    start = time.perf_counter()
    ci = bootstrap_ci(y, proba, n_boot=1000, metrics=ALL_METRIC_NAMES)
    assert time.perf_counter() - start < 10.0  # ~0.3 s on one core; generous for CI
    assert set(ci) == set(ALL_METRIC_NAMES)


def test_paired_differences_from_shared_resamples() -> None:
    """Evaluation takes a difference's interval from two models' distributions on the same resamples."""
    from allwen.evaluation import bootstrap_distributions
    from allwen.evaluation.stats import percentile_interval

    y, good = _case(2, 2, n=400)
    rng = np.random.default_rng(9)
    noisy = 0.5 * good + 0.5 * rng.dirichlet(np.ones(2), size=len(y))
    dist = bootstrap_distributions(y, {"good": good, "noisy": noisy}, n_boot=300, seed=4, metrics=("auc", "kappa"))
    diff = compute_metrics(y, good)["auc"] - compute_metrics(y, noisy)["auc"]
    lo, hi = percentile_interval(dist["good"]["auc"] - dist["noisy"]["auc"], 0.95)
    assert 0.0 < lo <= diff <= hi
    flipped = percentile_interval(dist["noisy"]["auc"] - dist["good"]["auc"], 0.95)
    assert flipped == pytest.approx((-hi, -lo))
    # paired: much narrower than the two separate intervals side by side
    a, b = percentile_interval(dist["good"]["auc"], 0.95), percentile_interval(dist["noisy"]["auc"], 0.95)
    assert hi - lo < (a[1] - a[0]) + (b[1] - b[0])


# ---------------------------------------------------------------------------
# subjects: cluster bootstrap, permutation over subjects, coverage
# ---------------------------------------------------------------------------


def test_cluster_bootstrap_resamples_whole_subjects() -> None:
    y, proba = _case(5, 3, n=90)
    subjects = np.repeat([f"s{i}" for i in range(9)], 10)
    weights = bootstrap_weights(len(y), n_boot=30, seed=2, clusters=subjects).astype(int)
    dist = bootstrap_distribution(y, proba, n_boot=30, seed=2, metrics=ALL_METRIC_NAMES, clusters=subjects)
    for b in range(30):
        per_subject = weights[b].reshape(9, 10)
        assert (per_subject == per_subject[:, :1]).all()  # a subject is drawn with all its images
        assert per_subject[:, 0].sum() == 9  # 9 subjects drawn with replacement
        rows = np.repeat(np.arange(len(y)), weights[b])
        expected = compute_metrics(y[rows], proba[rows])
        for name in ALL_METRIC_NAMES:
            np.testing.assert_allclose(dist[name][b], expected[name], atol=1e-12, err_msg=name)
    # one subject per image is the image bootstrap's distribution family, not its draws
    with pytest.raises(ValueError, match="one entry per image"):
        bootstrap_weights(len(y), 5, clusters=subjects[:-1])


def test_permutation_over_subjects_hand_example() -> None:
    # 3 subjects, 2 images each; model a right on every image, b right on one image per
    # subject: per-subject differences (1, 1, 1)/6. Of the 2**3 sign flips only all-plus
    # and all-minus reach |diff| = 3/6, so p = 2/8.
    y = np.ones(6, dtype=int)
    right, wrong = [0.2, 0.8], [0.8, 0.2]
    pa = np.array([right] * 6)
    pb = np.array([right, wrong] * 3)
    result = subject_permutation_test(y, pa, pb, clusters=np.repeat([0, 1, 2], 2), metric="accuracy")
    assert result == {"diff": pytest.approx(0.5), "pvalue": 0.25, "n_subjects": 3, "n_permutations": 8,
                      "exact": True}
    # b wrong everywhere: 2 subjects of 3 images give p = 2/4; the same 6 images as 6
    # independent subjects give p = 2/64, the overconfidence of an image-level test
    pb = np.array([wrong] * 6)
    assert subject_permutation_test(y, pa, pb, np.repeat([0, 1], 3))["pvalue"] == 0.5
    assert subject_permutation_test(y, pa, pb, np.arange(6))["pvalue"] == pytest.approx(2 / 64)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_permutation_auc_flips_match_brute_force(n_classes: int) -> None:
    from allwen.evaluation.stats import _flip_vector

    rng = np.random.default_rng(n_classes)
    y, pa = _case(6, n_classes, n=70, decimals=1)  # rounded: ties exercise the 1/2 rule
    _, pb = _case(7, n_classes, n=70, decimals=1)
    clusters = rng.integers(0, 8, size=70)
    v = _flip_vector(y, pa, pb, clusters, "auc")
    for _ in range(6):
        signs = rng.choice([-1.0, 1.0], size=8)
        swap = (signs[clusters] < 0)[:, None]
        a2, b2 = np.where(swap, pb, pa), np.where(swap, pa, pb)
        expected = compute_metrics(y, a2)["auc"] - compute_metrics(y, b2)["auc"]
        assert signs @ v == pytest.approx(expected, abs=1e-12)
    result = subject_permutation_test(y, pa, pb, clusters, metric="auc")
    assert result["diff"] == pytest.approx(compute_metrics(y, pa)["auc"] - compute_metrics(y, pb)["auc"])
    assert result["exact"] and result["n_permutations"] == 2**8 and 0 < result["pvalue"] <= 1


def test_permutation_with_many_subjects_is_monte_carlo_and_finds_a_real_difference() -> None:
    y, good = _case(8, 2, n=400)
    noisy = 0.3 * good + 0.7 * np.random.default_rng(3).dirichlet(np.ones(2), size=len(y))
    clusters = np.repeat(np.arange(40), 10)
    result = subject_permutation_test(y, good, noisy, clusters, metric="auc", n_perm=2000, seed=1)
    assert not result["exact"] and result["n_permutations"] == 2000
    assert result["pvalue"] < 0.01
    same = subject_permutation_test(y, good, good.copy(), clusters, metric="accuracy")
    assert same["diff"] == 0.0 and same["pvalue"] == 1.0
    with pytest.raises(ValueError, match="accuracy and auc"):
        subject_permutation_test(y, good, noisy, clusters, metric="kappa")


def _subject_simulation(n_subjects: int, per_subject: int, reps: int, seed: int):
    """``reps`` test sets of one model on subjects whose accuracy has its own offset.

    Subject g is right on each image with probability sigmoid(1.4 + 1.2 z_g), z_g ~ N(0, 1):
    images of one subject are correlated, subjects independent. The true accuracy is the
    population mean of sigmoid(1.4 + 1.2 Z) (Gauss-Hermite quadrature). Labels and subject
    layout are shared by the repetitions, so one set of bootstrap weights serves all.
    """
    rng = np.random.default_rng(seed)
    clusters = np.repeat(np.arange(n_subjects), per_subject)
    y = rng.integers(0, 2, size=len(clusters))
    z = rng.standard_normal((reps, n_subjects))
    p_right = 1.0 / (1.0 + np.exp(-(1.4 + 1.2 * z)))[:, clusters]
    right = rng.random(p_right.shape) < p_right
    predicted = np.where(right, y, 1 - y)
    probas = {r: np.c_[1.0 - predicted[r], predicted[r]] * 0.8 + 0.1 for r in range(reps)}
    nodes, w = np.polynomial.hermite_e.hermegauss(60)
    truth = float(np.sum(w / (1.0 + np.exp(-(1.4 + 1.2 * nodes)))) / np.sqrt(2 * np.pi))
    return y, clusters, probas, truth


def test_cluster_intervals_cover_at_the_nominal_rate_where_image_intervals_fall_short() -> None:
    """Coverage of 95% intervals for accuracy, 40 subjects x 15 images, 800 repetitions.

    Measured (seeds 0/1, 300 resamples each): cluster bootstrap 0.922, image bootstrap 0.681.
    The image-level interval ignores that a subject's cells succeed or fail together; the
    cluster one is a little under nominal, as percentile bootstraps are with 40 clusters.
    (Repetitions share one set of bootstrap weights, which keeps this to ~2 s.)
    """
    from allwen.evaluation import bootstrap_distributions
    from allwen.evaluation.stats import percentile_interval

    y, clusters, probas, truth = _subject_simulation(40, 15, reps=800, seed=0)
    coverage = {}
    for label, groups in (("cluster", clusters), ("image", None)):
        dist = bootstrap_distributions(y, probas, n_boot=300, seed=1, metrics=("accuracy",), clusters=groups)
        hits = [lo <= truth <= hi for lo, hi in (percentile_interval(d["accuracy"], 0.95) for d in dist.values())]
        coverage[label] = float(np.mean(hits))
    print(f"coverage of 95% intervals: {coverage}")
    assert 0.90 <= coverage["cluster"] <= 0.98, coverage
    assert coverage["image"] <= 0.80, coverage


# ---------------------------------------------------------------------------
# McNemar
# ---------------------------------------------------------------------------


def _pairs(both_right: int, b: int, c: int, both_wrong: int):
    """Labels and two prediction vectors with the given 2x2 agreement table."""
    y = np.ones(both_right + b + c + both_wrong, dtype=int)
    a_right = np.r_[np.ones(both_right + b), np.zeros(c + both_wrong)].astype(bool)
    b_right = np.r_[np.ones(both_right), np.zeros(b), np.ones(c), np.zeros(both_wrong)]
    return y, np.where(a_right, 1, 0), np.where(b_right.astype(bool), 1, 0)


def test_mcnemar_published_example_armitage_berry() -> None:
    # Armitage & Berry (1994, p. 127), as worked in the StatsDirect manual (exact
    # matched-pairs test): 50 sputum specimens on two media; growth on both 20, A only 12,
    # B only 2, neither 16. Published exact two-sided P = 0.0129.
    # By hand: 2 * (C(14,0) + C(14,1) + C(14,2)) / 2^14 = 2 * 106 / 16384 = 0.01294
    y, pred_a, pred_b = _pairs(20, 12, 2, 16)
    result = mcnemar_exact(y, pred_a, pred_b)
    assert (result["b"], result["c"], result["statistic"]) == (12, 2, 2)
    assert result["pvalue"] == pytest.approx(0.0129, abs=5e-5)
    assert result["pvalue"] == pytest.approx(2 * sum(comb(14, i) for i in range(3)) / 2**14)


def test_mcnemar_fagerland_example_and_edge_cases() -> None:
    # Fagerland, Lydersen & Laake (2013), BMC Med Res Methodol 13:91, Table 1 (Bentur et
    # al.: airway hyper-responsiveness before/after stem cell transplantation, 21 children):
    # discordant pairs 1 and 7. Their exact conditional p = 2 * binomcdf(1, 8, 0.5)
    # = 2 * (1 + 8) / 256 = 0.0703 (reported as 0.070).
    y, pred_a, pred_b = _pairs(1, 1, 7, 12)
    result = mcnemar_exact(y, pred_a, pred_b)
    assert (result["b"], result["c"]) == (1, 7)
    assert result["pvalue"] == pytest.approx(18 / 256)
    assert mcnemar_exact([0, 1, 1], [0, 1, 0], [0, 1, 0])["pvalue"] == 1.0  # b + c == 0
    assert mcnemar_exact(*_pairs(0, 3, 3, 0))["pvalue"] == 1.0
    with pytest.raises(ValueError, match="equal lengths"):
        mcnemar_exact([0, 1], [0, 1], [0])
    with pytest.raises(ValueError, match="1-D"):
        mcnemar_exact([0, 1], [[0.2, 0.8], [0.6, 0.4]], [0, 1])


# ---------------------------------------------------------------------------
# DeLong
# ---------------------------------------------------------------------------


def _slow_delong(y: np.ndarray, scores: list[np.ndarray]):
    """Direct O(m*n) DeLong: structural components from the psi kernel, no ranks."""
    components_pos, components_neg = [], []
    for s in scores:
        pos, neg = s[y == 1], s[y == 0]
        psi = np.zeros((len(pos), len(neg)))
        for i, x in enumerate(pos):
            for j, z in enumerate(neg):
                psi[i, j] = 1.0 if x > z else (0.5 if x == z else 0.0)
        components_pos.append(psi.mean(axis=1))  # V10 in DeLong et al.
        components_neg.append(psi.mean(axis=0))  # V01
    v10, v01 = np.array(components_pos), np.array(components_neg)
    aucs = v10.mean(axis=1)
    k = len(scores)
    s10 = np.array([[np.sum((v10[r] - aucs[r]) * (v10[t] - aucs[t])) for t in range(k)]
                    for r in range(k)]) / (v10.shape[1] - 1)  # fmt: skip
    s01 = np.array([[np.sum((v01[r] - aucs[r]) * (v01[t] - aucs[t])) for t in range(k)]
                    for r in range(k)]) / (v01.shape[1] - 1)  # fmt: skip
    return aucs, s10 / v10.shape[1] + s01 / v01.shape[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_matches_slow_structural_components(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 90)
    a = np.round(y * 0.8 + rng.normal(0, 1, 90), 1)  # rounded: ties within and across classes
    b = np.round(0.6 * a + rng.normal(0, 0.7, 90), 0)
    aucs, cov = _slow_delong(y, [a, b])
    auc_a, var_a = delong_auc_variance(y, a)
    assert auc_a == pytest.approx(aucs[0], abs=1e-12)
    assert auc_a == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert var_a == pytest.approx(cov[0, 0], rel=1e-10)
    result = delong_test(y, a, b)
    np.testing.assert_allclose(result["covariance"], cov, rtol=1e-10, atol=1e-15)
    z = (aucs[0] - aucs[1]) / np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert result["z"] == pytest.approx(z, rel=1e-10)


# pROC's aSAH data (Turck et al. 2010, Intensive Care Med 36:107-115; shipped with the R
# package pROC): 113 patients, outcome "Poor" = 1 (41 cases). The values are a public
# transcription of the dataset; they reproduce head(aSAH) and, to ~1e-14, all three DeLong
# statistics that pROC's own test suite (tests/testthat/test-roc.test.R) pins:
#   roc.test(r.wfns, r.s100b): Z = 2.20898359144091, p = 0.0271757822291882
#   roc.test(r.wfns, r.ndka):  Z = 2.79777591868904, p = 0.00514557970691098
#   roc.test(r.ndka, r.s100b): Z = -1.39077002573558, p = 0.164295175223054
# pROC's documentation example roc.test(roc(outcome, s100b), roc(outcome, wfns)) prints
# Z = -2.209, p-value = 0.02718, AUCs 0.7313686 and 0.8236789.
ASAH_POOR = np.array([
    0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0,
    1, 0, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0,
    1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0,
])  # fmt: skip
ASAH_S100B = np.array([
    0.13, 0.14, 0.10, 0.04, 0.13, 0.10, 0.47, 0.16, 0.18, 0.10, 0.12, 0.10, 0.44, 0.71,
    0.04, 0.08, 0.49, 0.04, 0.07, 0.33, 0.09, 0.09, 0.07, 0.11, 0.07, 0.17, 0.07, 0.11,
    0.13, 0.19, 0.05, 0.16, 0.41, 0.14, 0.34, 0.35, 0.48, 0.09, 0.96, 0.25, 0.50, 0.46,
    0.16, 0.07, 0.43, 0.45, 0.11, 0.08, 0.09, 0.86, 0.52, 0.08, 0.06, 0.13, 2.07, 0.10,
    0.14, 0.15, 0.07, 0.06, 0.77, 0.05, 0.09, 0.30, 0.03, 0.09, 0.04, 0.23, 0.70, 0.09,
    0.27, 0.71, 0.08, 0.26, 0.08, 0.16, 0.09, 0.13, 0.10, 0.08, 0.11, 0.33, 0.11, 0.28,
    0.07, 0.10, 0.32, 0.22, 0.07, 0.05, 0.24, 0.38, 0.10, 0.15, 0.08, 0.14, 0.10, 0.07,
    0.04, 0.19, 0.56, 0.14, 0.58, 0.32, 0.82, 0.74, 0.15, 0.47, 0.17, 0.44, 0.15, 0.50,
    0.48,
])  # fmt: skip
ASAH_WFNS = np.array([
    1, 1, 1, 1, 3, 2, 5, 4, 1, 2, 5, 2, 5, 5, 1, 2, 5, 2, 2, 5, 2, 1, 1, 1, 1, 2, 1, 2, 1,
    1, 3, 4, 2, 1, 4, 5, 4, 1, 4, 2, 5, 5, 1, 1, 2, 4, 1, 1, 2, 5, 5, 2, 1, 2, 5, 1, 2, 2,
    2, 1, 5, 1, 1, 2, 5, 2, 1, 4, 5, 2, 4, 4, 1, 4, 1, 2, 1, 4, 2, 1, 2, 3, 2, 4, 2, 1, 4,
    5, 1, 1, 5, 4, 2, 2, 1, 1, 1, 3, 1, 2, 5, 2, 2, 5, 5, 5, 2, 4, 4, 5, 1, 1, 1,
])  # fmt: skip
ASAH_NDKA = np.array([
    3.01, 8.54, 8.09, 10.42, 17.40, 12.75, 6.00, 13.20, 15.54, 6.01, 15.96, 17.86, 5.18,
    8.90, 13.41, 20.75, 11.60, 16.11, 32.37, 54.82, 32.41, 49.94, 40.34, 9.47, 6.29,
    12.53, 6.54, 6.30, 80.30, 12.80, 9.80, 9.81, 9.85, 18.21, 5.03, 14.04, 21.93, 8.02,
    7.42, 8.38, 6.59, 9.63, 13.12, 7.96, 14.34, 41.43, 7.63, 7.06, 12.59, 13.56, 3.87,
    9.44, 7.66, 12.98, 419.19, 27.19, 22.27, 9.95, 21.22, 11.73, 10.40, 58.83, 6.39,
    11.09, 12.22, 13.67, 17.21, 22.63, 12.90, 9.70, 21.57, 8.23, 72.57, 15.54, 10.51,
    10.60, 14.57, 5.19, 9.63, 4.61, 21.48, 17.30, 12.71, 9.44, 11.07, 19.46, 10.83, 5.37,
    11.97, 7.75, 9.83, 10.55, 28.49, 8.53, 12.57, 12.90, 46.83, 11.68, 12.67, 9.01, 9.57,
    34.06, 11.72, 14.26, 47.61, 11.67, 24.58, 10.33, 13.87, 15.89, 22.43, 6.79, 13.45,
])  # fmt: skip


def test_delong_reproduces_proc_on_asah() -> None:
    assert (len(ASAH_POOR), int(ASAH_POOR.sum())) == (113, 41)
    doc = delong_test(ASAH_POOR, ASAH_S100B, ASAH_WFNS)
    assert round(doc["z"], 3) == -2.209
    assert doc["pvalue"] == pytest.approx(0.02718, abs=5e-6)
    assert (round(doc["auc_a"], 7), round(doc["auc_b"], 7)) == (0.7313686, 0.8236789)
    for a, b, z, p in [
        (ASAH_WFNS, ASAH_S100B, 2.20898359144091, 0.0271757822291882),
        (ASAH_WFNS, ASAH_NDKA, 2.79777591868904, 0.00514557970691098),
        (ASAH_NDKA, ASAH_S100B, -1.39077002573558, 0.164295175223054),
    ]:
        result = delong_test(ASAH_POOR, a, b)
        assert result["z"] == pytest.approx(z, rel=1e-9)
        assert result["pvalue"] == pytest.approx(p, rel=1e-9)


def test_delong_edge_cases_and_bad_input() -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    same = delong_test(y, s, s.copy())
    assert same["z"] == 0.0 and same["pvalue"] == 1.0
    with pytest.raises(ValueError, match="0/1"):
        delong_test([0, 1, 2, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="at least 2 positives"):
        delong_auc_variance([0, 0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="6 values"):
        delong_test(y, s, s[:-1])


# ---------------------------------------------------------------------------
# Holm
# ---------------------------------------------------------------------------


def test_holm_hand_example() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max(0.06, 0.04)
    # back in input order [0.01, 0.04, 0.03, 0.005] -> [0.03, 0.06, 0.06, 0.02]
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.6, 0.5]), [1.0, 1.0])  # 0.5*2 = 1.0 caps both
    assert holm([]).size == 0
    with pytest.raises(ValueError, match="within"):
        holm([0.2, 1.5])


# ---------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------


def test_bootstrap_bad_input_raises_value_error() -> None:
    y, proba = _case(0, 2, n=20)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(y, proba, confidence=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(y, proba, n_boot=0)
    with pytest.raises(ValueError, match="unknown"):
        bootstrap_ci(y, proba, metrics=["acc"])
    with pytest.raises(ValueError, match="rows"):
        bootstrap_ci(y[:-1], proba)
    with pytest.raises(ValueError, match="one entry per image"):
        bootstrap_ci(y, proba, clusters=np.arange(len(y) - 1))


def test_exact_binomial_and_midranks_match_scipy() -> None:
    """The SciPy-free McNemar p-value and midranks equal scipy.stats on many cases."""
    from scipy.stats import binomtest, rankdata

    from allwen.evaluation.metrics import midranks
    from allwen.evaluation.stats import binomial_two_sided_half

    for n in (1, 2, 5, 17, 80, 301, 1200):
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            assert binomial_two_sided_half(k, n) == pytest.approx(binomtest(k, n, 0.5).pvalue, rel=1e-9, abs=1e-300)
    rng = np.random.default_rng(3)
    for values in (rng.random((4, 50)), rng.integers(0, 5, (3, 40)).astype(float), np.ones((1, 7)), rng.random(9)):
        np.testing.assert_allclose(midranks(values), rankdata(values, axis=-1))


def test_class_stratified_cluster_intervals_cover_and_are_narrower() -> None:
    """A stratified design: 8 ALL and 20 hem subjects of 15 cells (class-pure, as patients are),
    each class with its own accuracy; 600 repetitions. The truth is the design's accuracy
    (each class's population accuracy weighted by its share of cells). Drawing subjects within
    each class keeps that share, so its interval covers about as often as nominal and is
    narrower than drawing all subjects together, which also varies the class mix."""
    from allwen.evaluation import bootstrap_distributions
    from allwen.evaluation.stats import class_strata, percentile_interval

    rng = np.random.default_rng(3)
    counts, per_subject, reps = (8, 20), 15, 600
    offsets = (2.6, 0.4)  # ALL cells easy, hem cells hard: the class mix moves accuracy
    subject_class = np.repeat([0, 1], counts)
    clusters = np.repeat(np.arange(len(subject_class)), per_subject)
    y = subject_class[clusters]
    z = rng.standard_normal((reps, len(subject_class)))
    logit = np.asarray(offsets)[subject_class] + 1.0 * z
    right = rng.random((reps, len(y))) < (1.0 / (1.0 + np.exp(-logit)))[:, clusters]
    predicted = np.where(right, y, 1 - y)
    probas = {r: np.c_[1.0 - predicted[r], predicted[r]] * 0.8 + 0.1 for r in range(reps)}
    nodes, w = np.polynomial.hermite_e.hermegauss(60)
    per_class = [float(np.sum(w / (1.0 + np.exp(-(o + nodes)))) / np.sqrt(2 * np.pi)) for o in offsets]
    truth = float(np.dot(counts, per_class) / sum(counts))
    strata = class_strata(y, clusters)
    assert strata is not None
    found = {}
    for label, s in (("stratified", strata), ("pooled", None)):
        dist = bootstrap_distributions(y, probas, n_boot=300, seed=1, metrics=("accuracy",), clusters=clusters,
                                       strata=s)
        bounds = [percentile_interval(d["accuracy"], 0.95) for d in dist.values()]
        found[label] = (float(np.mean([lo <= truth <= hi for lo, hi in bounds])),
                        float(np.mean([hi - lo for lo, hi in bounds])))
    print(f"coverage and mean width of 95% intervals: {found}")
    assert 0.88 <= found["stratified"][0] <= 0.98, found
    assert found["stratified"][1] < 0.9 * found["pooled"][1], found

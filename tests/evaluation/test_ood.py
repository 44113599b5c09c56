"""OOD detectors against direct formulas, their save/load round trip, threshold and AUROC."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from allwen.evaluation.ood import KNNOOD, MahalanobisOOD, auroc, load_detector, make_detector, quantile_threshold


def _clusters(seed, n, d=8, shift=0.0):
    """Two classes apart along axis 0 (all points pushed out along axis 1, so directions mean something);
    ``shift`` moves images along axis 2, where no training image goes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, d)) + 3.0 * y[:, None] * np.eye(d)[0] + 4.0 * np.eye(d)[1] + shift * np.eye(d)[2]
    return x, y


def test_mahalanobis_equals_the_formula():
    x, y = _clusters(0, 200)
    det = MahalanobisOOD().fit(x, y)
    means = np.stack([x[y == c].mean(0) for c in (0, 1)])
    prec = LedoitWolf(assume_centered=True).fit(x - means[y]).precision_
    q = np.random.default_rng(1).normal(size=(5, 8))
    expected = np.min([[np.sqrt((r - m) @ prec @ (r - m)) for m in means] for r in q], axis=1)
    np.testing.assert_allclose(det.score(q), expected, rtol=1e-10)
    again = load_detector("mahalanobis", det.to_arrays())
    np.testing.assert_allclose(again.score(q), expected, rtol=1e-5)  # float32 storage


def test_knn_equals_brute_force_and_round_trips():
    x, _ = _clusters(2, 60)
    det = KNNOOD(k=3).fit(x)
    q = np.random.default_rng(3).normal(size=(4, 8))
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    d = np.sort(np.linalg.norm(qn[:, None] - xn[None], axis=2), axis=1)[:, 2]
    np.testing.assert_allclose(det.score(q), d, rtol=1e-10)
    np.testing.assert_allclose(load_detector("knn", det.to_arrays()).score(q), d, rtol=1e-5)


@pytest.mark.parametrize("method", ["mahalanobis", "knn"])
def test_shifted_images_score_higher(method):
    x, y = _clusters(4, 300)
    val, _ = _clusters(5, 200)
    far, _ = _clusters(6, 200, shift=6.0)
    det = make_detector(method).fit(x, y)
    threshold = quantile_threshold(det.score(val), 0.95)
    assert (det.score(val) > threshold).mean() <= 0.05
    assert (det.score(far) > threshold).mean() > 0.5
    a = auroc(det.score(val), det.score(far))
    assert a > 0.9
    assert a == pytest.approx(roc_auc_score(np.r_[np.zeros(200), np.ones(200)], np.r_[det.score(val), det.score(far)]))


def test_bad_inputs():
    with pytest.raises(ValueError, match="choose from"):
        make_detector("isolation")
    det = MahalanobisOOD().fit(*_clusters(0, 50))
    with pytest.raises(ValueError, match="dimensions"):
        det.score(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="quantile"):
        quantile_threshold(np.ones(3), 95)


def test_input_statistics_flag_a_colour_shift_the_features_do_not_see():
    """Features blind to colour (as after colour augmentation): the input statistics part flags the shift."""
    from allwen.evaluation.ood import N_INPUT_STATS, WithInputStatistics, input_statistics

    rng = np.random.default_rng(0)

    def rows(n, shift=0.0):
        x = rng.normal(size=(n, 3, 8, 8)) * 0.5 + shift  # the normalised input batch
        feats = rng.normal(size=(n, 5))  # the same distribution whatever the colour
        return np.concatenate([feats, input_statistics(x)], axis=1)

    train, val, test, darker = rows(300), rows(200), rows(200), rows(50, shift=-0.8)
    assert train.shape[1] == 5 + N_INPUT_STATS
    assert np.allclose(input_statistics(np.ones((2, 3, 4, 4)))[:, :3], 1.0)
    det = WithInputStatistics(MahalanobisOOD()).fit(train, np.zeros(300, int), val, 0.95)
    feature_only = MahalanobisOOD().fit(train[:, :5], np.zeros(300, int))
    assert auroc(feature_only.score(test[:, :5]), feature_only.score(darker[:, :5])) < 0.7
    assert auroc(det.score(test), det.score(darker)) > 0.99
    threshold = quantile_threshold(det.score(val), 0.95)
    assert (det.score(darker) > threshold).all() and (det.score(test) > threshold).mean() < 0.15
    np.testing.assert_allclose(det.parts(val).max(axis=1), det.score(val))
    again = load_detector("mahalanobis", det.to_arrays())  # the bundle's safetensors round trip
    np.testing.assert_allclose(again.score(darker), det.score(darker), rtol=1e-5)
    with pytest.raises(ValueError, match="input statistics"):
        det.score(np.zeros((2, N_INPUT_STATS)))


def test_the_factored_mahalanobis_distance_equals_the_textbook_one():
    """Cholesky inverse and one multiplication by the precision's factor: the numbers of sklearn's pinvh precision
    and ``sqrt(min_k (f - mu_k) P (f - mu_k)^T)``, also for a detector loaded from its float32 arrays."""
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((300, 40)) @ rng.standard_normal((40, 40)), rng.integers(0, 3, 300)
    det = MahalanobisOOD().fit(x, y)
    centred = x - det.means_[y]
    assert np.allclose(det.precision_, LedoitWolf(assume_centered=True).fit(centred).precision_, rtol=1e-8, atol=1e-10)
    probe = rng.standard_normal((50, 40)) * 3
    diff = probe[:, None, :] - det.means_[None]
    textbook = np.sqrt(np.einsum("nkd,de,nke->nk", diff, det.precision_, diff).min(axis=1))
    assert np.allclose(det.score(probe), textbook, rtol=1e-10)
    loaded = MahalanobisOOD.from_arrays(det.to_arrays())
    assert np.allclose(loaded.score(probe), textbook, rtol=1e-4)

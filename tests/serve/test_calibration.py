"""Temperature scaling: recovers a known temperature and lowers NLL and ECE on held-out data."""

import numpy as np

from allwen.serve.calibration import apply_temperature, ece, fit_temperature, nll


def _overconfident(n: int, seed: int, true_t: float = 2.5):
    """Labels drawn from softmax(z / true_t) while the model reports softmax(z): overconfident by true_t."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, size=(n, 3))
    honest = np.exp(z / true_t) / np.exp(z / true_t).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=p) for p in honest])
    reported = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return reported, y


def test_fitted_on_one_half_it_lowers_nll_and_ece_on_the_other():
    fit_p, fit_y = _overconfident(3000, 0)
    held_p, held_y = _overconfident(3000, 1)
    t = fit_temperature(fit_p, fit_y)
    assert 2.2 < t < 2.8  # the temperature that made the labels
    calibrated = apply_temperature(held_p, t)
    assert nll(calibrated, held_y) < nll(held_p, held_y) - 0.05
    assert ece(calibrated, held_y) < 0.5 * ece(held_p, held_y)
    assert (calibrated.argmax(1) == held_p.argmax(1)).all()  # the predicted class never changes
    np.testing.assert_allclose(calibrated.sum(1), 1.0)


def test_on_probabilities_it_equals_scaling_the_logit_of_a_sigmoid_head():
    z = np.linspace(-6, 6, 25)
    p1 = 1 / (1 + np.exp(-z))
    scaled = apply_temperature(np.stack([1 - p1, p1], 1), 1.7)
    np.testing.assert_allclose(scaled[:, 1], 1 / (1 + np.exp(-z / 1.7)), rtol=1e-9, atol=1e-12)


def test_ece_by_hand():
    # two images at confidence 0.9 (one right) and two at 0.6 (both right): |0.9-0.5|/2 + |0.6-1|/2 = 0.4
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    assert abs(ece(p, np.array([0, 1, 1, 1])) - 0.4) < 1e-12

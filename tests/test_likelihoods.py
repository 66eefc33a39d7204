"""Each likelihood head against SciPy, at ordinary and extreme parameters, with finite gradients."""

import math

import keras
import numpy as np
import pytest
from keras import ops
from scipy import integrate, special, stats

from conftest import value_and_gradient
from likelihoods import (
    LearnedLogScale,
    bernoulli_nll,
    categorical_nll,
    check_support,
    continuous_bernoulli_log_normaliser,
    continuous_bernoulli_nll,
    gaussian_nll,
)

# The precise reference checks run in float64 where the backend computes in it; JAX does so only with
# `jax_enable_x64` (off by default), so there they run in float32 with float32's tolerance.
PRECISE = keras.backend.standardize_dtype(ops.convert_to_tensor(np.zeros(1)).dtype)


def rtol(float64_rtol):
    """``float64_rtol`` in float64; a few float32 units in the last place otherwise."""
    return float64_rtol if PRECISE == "float64" else 2e-6


EXTREME_LOGITS = np.array([-1e4, -30.0, -1.0, -0.1, -1e-3, -1e-6, 0.0, 1e-6, 1e-3, 0.1, 1.0, 30.0, 1e4])


def numpy(values):
    return ops.convert_to_numpy(values).astype("float64")


def test_bernoulli_nll_against_scipy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 7)) * 4
    x = (rng.random((5, 7)) < 0.5).astype("float64")
    expected = -stats.bernoulli(special.expit(logits)).logpmf(x).sum(axis=-1)
    np.testing.assert_allclose(numpy(bernoulli_nll(x, ops.convert_to_tensor(logits))), expected, rtol=rtol(1e-10))


def reference_log_normaliser(logit):
    """``log 1 / ∫_0^1 lambda^x (1 - lambda)^(1 - x) dx`` by quadrature (float64), for moderate logits."""
    log_lambda, log_one_minus = -np.logaddexp(0, -logit), -np.logaddexp(0, logit)
    integral, _ = integrate.quad(
        lambda x: np.exp(x * log_lambda + (1 - x) * log_one_minus), 0, 1, epsabs=0, epsrel=1e-13
    )
    return -math.log(integral)


def test_continuous_bernoulli_normaliser_against_quadrature_at_and_near_one_half():
    logits = EXTREME_LOGITS[np.abs(EXTREME_LOGITS) <= 30]
    ours64 = numpy(continuous_bernoulli_log_normaliser(ops.convert_to_tensor(logits, PRECISE)))
    ours32 = numpy(continuous_bernoulli_log_normaliser(ops.convert_to_tensor(logits, "float32")))
    expected = np.array([reference_log_normaliser(logit) for logit in logits])
    np.testing.assert_allclose(ours64, expected, rtol=rtol(1e-9), atol=rtol(1e-9))
    np.testing.assert_allclose(ours32, expected, rtol=1e-6, atol=1e-6)
    assert ours64[logits == 0][0] == pytest.approx(math.log(2), abs=rtol(1e-12))


def test_continuous_bernoulli_normaliser_at_logits_of_ten_thousand():
    """For |l| = 1e4, ``C = l / tanh(l / 2) = 1e4`` to double precision: ``log C = log 1e4``."""
    for dtype in sorted({"float32", PRECISE}):
        values = numpy(continuous_bernoulli_log_normaliser(ops.convert_to_tensor([-1e4, 1e4], dtype)))
        np.testing.assert_allclose(values, [math.log(1e4)] * 2, rtol=1e-6)


def test_continuous_bernoulli_nll_is_a_normalised_density_against_scipy():
    """Integrates to one over [0, 1], and matches quadrature-normalised SciPy-free reference pointwise."""
    rng = np.random.default_rng(1)
    for logit in (-5.0, -1e-4, 0.0, 0.7, 12.0):
        density = lambda x, logit=logit: math.exp(  # noqa: E731
            -float(numpy(continuous_bernoulli_nll(np.array([[x]]), ops.convert_to_tensor([[logit]], PRECISE)))[0])
        )
        total, _ = integrate.quad(density, 0, 1, epsrel=1e-10)
        assert total == pytest.approx(1.0, abs=rtol(1e-8)), logit
    x = rng.random((4, 6))
    logits = rng.normal(size=(4, 6)) * 3
    expected = -np.sum(
        x * -np.logaddexp(0, -logits)
        + (1 - x) * -np.logaddexp(0, logits)
        + np.vectorize(reference_log_normaliser)(logits),
        axis=-1,
    )
    np.testing.assert_allclose(
        numpy(continuous_bernoulli_nll(x, ops.convert_to_tensor(logits))), expected, rtol=rtol(1e-9)
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_continuous_bernoulli_is_finite_with_finite_gradients_at_extreme_logits(dtype):
    logits = np.tile(EXTREME_LOGITS, (3, 1)).astype(dtype)
    x = np.tile(np.linspace(0, 1, len(EXTREME_LOGITS)), (3, 1)).astype(dtype)
    nll, gradient = value_and_gradient(lambda t: continuous_bernoulli_nll(x, t), logits)
    assert np.all(np.isfinite(nll)) and np.all(np.isfinite(gradient))
    # d log C / d l is odd and smooth through 0 (l / 6 near 0), and x - sigmoid(l) comes from the Bernoulli part.
    near_zero = np.abs(EXTREME_LOGITS) < 1e-2
    np.testing.assert_allclose(
        gradient[0, near_zero], (special.expit(EXTREME_LOGITS) - x[0] - EXTREME_LOGITS / 6)[near_zero], atol=1e-5
    )


def test_gaussian_nll_against_scipy_homoscedastic_and_heteroscedastic():
    rng = np.random.default_rng(2)
    x, mean = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    per_output = rng.normal(size=(5, 3))
    per_dimension = rng.normal(size=3)
    for log_scale in (per_output, per_dimension):
        expected = -stats.norm(mean, np.exp(log_scale)).logpdf(x).sum(axis=-1)
        ours = gaussian_nll(x, ops.convert_to_tensor(mean), ops.convert_to_tensor(np.broadcast_to(log_scale, (5, 3))))
        np.testing.assert_allclose(numpy(ours), expected, rtol=rtol(1e-10))


def test_gaussian_nll_broadcasts_over_monte_carlo_samples_and_stays_finite():
    x = np.array([[0.0, 1e3]])
    mean = ops.convert_to_tensor(np.zeros((1, 4, 2)), "float32")
    log_scale = ops.convert_to_tensor(np.full((1, 4, 2), -20.0), "float32")
    values = numpy(gaussian_nll(x, mean, log_scale))
    assert values.shape == (1, 4) and np.all(np.isfinite(values))


def test_learned_log_scale_head_outputs_one_scale_per_dimension():
    head = LearnedLogScale(initial_log_scale=-1.0)
    mean, log_scale = head(np.zeros((2, 5, 3), "float32"))
    assert tuple(log_scale.shape) == (2, 5, 3) and np.all(numpy(log_scale) == -1.0)
    assert LearnedLogScale.from_config(head.get_config()).initial_log_scale == -1.0


def test_categorical_nll_against_scipy_and_at_huge_logits():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(6, 10)) * 3
    labels = rng.integers(0, 10, size=6)
    expected = [
        -stats.multinomial(1, special.softmax(row)).logpmf(np.eye(10)[label])
        for row, label in zip(logits, labels, strict=True)
    ]
    np.testing.assert_allclose(numpy(categorical_nll(labels, ops.convert_to_tensor(logits))), expected, rtol=rtol(1e-9))
    huge = ops.convert_to_tensor([[1e4, -1e4, 0.0]], "float32")
    np.testing.assert_allclose(numpy(categorical_nll(np.array([1]), huge)), [2e4], rtol=1e-6)
    samples = ops.convert_to_tensor(np.zeros((2, 4, 3)), "float32")
    np.testing.assert_allclose(
        numpy(categorical_nll(np.array([0, 2]), samples)), np.full((2, 4), math.log(3)), rtol=1e-6
    )


def test_data_outside_the_support_gives_clear_errors():
    with pytest.raises(ValueError, match="binary data .* Received a value 1.5"):
        check_support("bernoulli", [[0.0, 1.5]])
    with pytest.raises(ValueError, match=r"\[0, 1\] for a continuous Bernoulli"):
        check_support("continuous_bernoulli", [[0.2, -0.1]])
    with pytest.raises(ValueError, match=r"labels in \[0, 9\] for 10 classes. Received: min=0, max=10"):
        check_support("categorical", [0, 10], num_classes=10)
    with pytest.raises(ValueError, match="integer class labels"):
        check_support("categorical", [0.5], num_classes=10)
    with pytest.raises(ValueError, match="finite"):
        check_support("gaussian", [[np.nan]])
    with pytest.raises(ValueError, match="Expected a likelihood in"):
        check_support("poisson", [1])
    assert check_support("continuous_bernoulli", [[0.0, 0.3, 1.0]]).dtype == np.float32


def test_continuous_bernoulli_mean_against_quadrature():
    """E[x] = ∫ x C λ^x (1-λ)^(1-x) dx by quadrature for moderate logits; 1/|l| (or 1 - 1/l) at ±1e4, no warning."""
    from training import continuous_bernoulli_mean

    for logit in (-20.0, -2.0, -1e-4, 0.0, 1e-4, 0.5, 3.0, 20.0):
        # The density is proportional to exp(logit * x) on [0, 1].
        first_moment = integrate.quad(lambda x, k=logit: x * np.exp(k * x), 0, 1)[0]
        expected = first_moment / integrate.quad(lambda x, k=logit: np.exp(k * x), 0, 1)[0]
        assert continuous_bernoulli_mean(logit) == pytest.approx(expected, abs=1e-9), logit
    np.testing.assert_allclose(continuous_bernoulli_mean(np.array([-1e4, 1e4])), [1e-4, 1 - 1e-4], rtol=1e-9)

"""The importance-sampling log-likelihood estimator, checked against closed forms.

The reference is a linear-Gaussian model, p(z) = N(0, I) and
p(x|z) = N(W z + b, sigma^2 I), whose marginal likelihood
p(x) = N(b, W W^T + sigma^2 I) SciPy computes independently. With W's
columns orthogonal the exact posterior is a diagonal Gaussian, so it is a
``q(z|x)`` our estimator accepts.
"""

import math

import keras
import numpy as np
import pytest
from keras import ops
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from kl_divergence import gaussian_log_density
from log_likelihood import (
    importance_sampled_log_likelihood,
    log_importance_weights,
    log_mean_exp,
    samples_per_chunk,
    vae_log_likelihood,
    vae_parts,
)
from train import binarize_once
from variational_autoencoder import build_vae

SIGMA = 0.5


@pytest.fixture(scope="module")
def linear_gaussian():
    """W (5 x 2) with orthogonal columns, b, six data points, and the exact log p(x)."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((5, 2)))
    w = q * np.array([2.0, 0.7])  # orthogonal columns of lengths 2 and 0.7
    b = rng.standard_normal(5)
    x = rng.multivariate_normal(b, w @ w.T + SIGMA**2 * np.eye(5), size=6)
    log_px = multivariate_normal(b, w @ w.T + SIGMA**2 * np.eye(5)).logpdf(x)
    # Exact posterior: covariance (I + W^T W / sigma^2)^-1 (diagonal here), mean cov W^T (x - b) / sigma^2.
    posterior_var = 1.0 / (1.0 + np.sum(w**2, axis=0) / SIGMA**2)
    posterior_mean = (x - b) @ w / SIGMA**2 * posterior_var
    z_log_var = np.broadcast_to(np.log(posterior_var), posterior_mean.shape)

    def log_likelihood(x_batch, z):
        mean = ops.matmul(z, ops.convert_to_tensor(w.T, "float32")) + ops.convert_to_tensor(b, "float32")
        return gaussian_log_density(ops.expand_dims(ops.convert_to_tensor(x_batch), -2), mean, 2 * math.log(SIGMA))

    return {
        "x": x.astype("float32"),
        "log_px": log_px,
        "z_mean": posterior_mean.astype("float32"),
        "z_log_var": z_log_var.astype("float32"),
        "log_likelihood": log_likelihood,
    }


def test_log_mean_exp_is_exact_and_finite_at_extremes():
    values = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype="float32")
    expected = logsumexp(values.astype("float64"), axis=-1) - math.log(3)
    np.testing.assert_allclose(ops.convert_to_numpy(log_mean_exp(values)), expected, rtol=1e-7)
    assert float(log_mean_exp(np.array([5.0], "float32"))) == 5.0  # a single sample is its own mean


def test_gaussian_log_density_matches_scipy():
    rng = np.random.default_rng(1)
    z, mean, log_var = rng.standard_normal((3, 4, 2))
    expected = multivariate_normal(np.zeros(2), np.eye(2)).logpdf((z - mean) / np.exp(0.5 * log_var))
    expected -= 0.5 * log_var.sum(axis=-1)
    actual = gaussian_log_density(z.astype("float32"), mean.astype("float32"), log_var.astype("float32"))
    np.testing.assert_allclose(ops.convert_to_numpy(actual), expected, rtol=1e-5)


def test_exact_posterior_makes_both_bounds_equal_log_px(linear_gaussian):
    g = linear_gaussian
    eps = np.random.default_rng(2).standard_normal((6, 50, 2)).astype("float32")
    log_w = ops.convert_to_numpy(log_importance_weights(g["x"], g["z_mean"], g["z_log_var"], g["log_likelihood"], eps))
    np.testing.assert_allclose(log_w.mean(axis=-1), g["log_px"], atol=1e-4)  # ELBO
    np.testing.assert_allclose(ops.convert_to_numpy(log_mean_exp(log_w)), g["log_px"], atol=1e-4)  # IWAE bound
    log_px, _ = importance_sampled_log_likelihood(
        g["x"], g["z_mean"], g["z_log_var"], g["log_likelihood"], num_samples=100
    )
    np.testing.assert_allclose(log_px, g["log_px"], atol=1e-4)


def test_wrong_posterior_estimate_converges_and_elbo_stays_below(linear_gaussian):
    g = linear_gaussian
    z_mean, z_log_var = g["z_mean"] + 0.3, g["z_log_var"] + 0.5  # a deliberately wrong q
    log_px, stderr = importance_sampled_log_likelihood(
        g["x"], z_mean, z_log_var, g["log_likelihood"], num_samples=5000, seed=3
    )
    # Within 5 Monte Carlo standard errors plus the bound's O(1/K) bias.
    np.testing.assert_array_less(np.abs(log_px - g["log_px"]), 5 * stderr + 1e-3)
    eps = np.random.default_rng(4).standard_normal((6, 5000, 2)).astype("float32")
    log_w = ops.convert_to_numpy(log_importance_weights(g["x"], z_mean, z_log_var, g["log_likelihood"], eps))
    elbo, elbo_stderr = log_w.mean(axis=-1), log_w.std(axis=-1) / math.sqrt(5000)
    np.testing.assert_array_less(elbo + 5 * elbo_stderr, g["log_px"])


def test_estimator_is_seeded_chunk_free_and_its_error_shrinks_as_one_over_root_k(linear_gaussian):
    g = linear_gaussian
    args = (g["x"], g["z_mean"] + 0.3, g["z_log_var"] + 0.5, g["log_likelihood"])
    first, _ = importance_sampled_log_likelihood(*args, num_samples=300, seed=5)
    again, _ = importance_sampled_log_likelihood(*args, num_samples=300, seed=5, chunk_size=7)
    other, _ = importance_sampled_log_likelihood(*args, num_samples=300, seed=6)
    np.testing.assert_allclose(again, first, rtol=1e-6)
    assert not np.allclose(other, first, rtol=1e-6)
    _, stderr_small = importance_sampled_log_likelihood(*args, num_samples=200, seed=7)
    _, stderr_large = importance_sampled_log_likelihood(*args, num_samples=3200, seed=7)
    # 16 times the samples: a quarter of the error, within the noise of the error estimate.
    np.testing.assert_allclose(stderr_small / stderr_large, 4.0, rtol=0.3)


def test_importance_weighted_bound_is_above_the_elbo_and_grows_with_k(mnist_subset):
    (x_train, _), _ = mnist_subset
    x = binarize_once(x_train[:50], seed=0)
    keras.utils.set_random_seed(0)
    vae, _, _ = build_vae(mc_samples=1)
    encoder, decoder = vae_parts(vae)
    z_mean, z_log_var = (ops.convert_to_numpy(t) for t in encoder(x))

    def log_likelihood(x_batch, z):
        from variational_autoencoder import BernoulliNegativeLogLikelihood

        return -BernoulliNegativeLogLikelihood(reduction=None)(x_batch, decoder(z))

    eps = np.random.default_rng(8).standard_normal((50, 2000, 2)).astype("float32")
    log_w = ops.convert_to_numpy(log_importance_weights(x, z_mean, z_log_var, log_likelihood, eps))
    bounds = {}
    for k in (1, 5, 50):
        groups = log_w[:, : (2000 // k) * k].reshape(50, -1, k)  # disjoint groups of k samples
        iwae = ops.convert_to_numpy(log_mean_exp(groups))
        assert np.all(iwae >= groups.mean(axis=-1) - 1e-4)  # Jensen, on the same samples
        bounds[k] = iwae.mean()
    assert bounds[1] < bounds[5] < bounds[50], bounds


def test_samples_per_chunk_respects_the_budget():
    """The chunk is the largest whose working set (four float32 copies of the per-sample tensors) fits the
    budget: it scales with the budget, falls with the batch size, and never exceeds the samples asked for."""
    floats, batch, budget = 1184, 100, 1 << 30
    chunk = samples_per_chunk(batch_size=batch, num_samples=5000, floats_per_sample=floats, budget_bytes=budget)
    working_set = 4 * 4 * floats * batch  # bytes per sample of the chunk
    assert chunk * working_set <= budget < (chunk + 1) * working_set
    assert abs(samples_per_chunk(batch, 5000, floats, 2 * budget) - 2 * chunk) <= 1
    assert abs(samples_per_chunk(2 * batch, 5000, floats, budget) - chunk // 2) <= 1
    assert samples_per_chunk(100, 10, 1184) == 10
    with pytest.raises(ValueError, match="smaller `batch_size`"):
        samples_per_chunk(batch_size=10**6, num_samples=5, floats_per_sample=10**4, budget_bytes=1 << 20)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"num_samples": 0}, "num_samples=0"), ({"chunk_size": 0}, "chunk_size=0")],
    ids=["k-0", "chunk-0"],
)
def test_estimator_rejects_bad_settings(linear_gaussian, kwargs, match):
    g = linear_gaussian
    with pytest.raises(ValueError, match=match):
        importance_sampled_log_likelihood(g["x"], g["z_mean"], g["z_log_var"], g["log_likelihood"], **kwargs)


def test_estimator_rejects_mismatched_shapes(linear_gaussian):
    g = linear_gaussian
    with pytest.raises(ValueError, match="same shape"):
        importance_sampled_log_likelihood(g["x"], g["z_mean"], g["z_log_var"][:, :1], g["log_likelihood"])


def test_a_model_that_is_not_ours_is_refused():
    inputs = keras.Input((4,))
    other = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="Expected a VAE built by `build_vae`"):
        vae_log_likelihood(other, np.zeros((2, 4), "float32"))


def test_estimator_draws_z_from_q():
    """The draws the estimator weighs come from q(z|x) = N(z_mean, exp(z_log_var)), per example."""
    z_mean = np.array([[0.0, 3.0], [-2.0, 1.0]], "float32")
    z_log_var = np.array([[0.0, -2.0], [1.0, 0.5]], "float32")
    seen = []

    def log_likelihood(x_batch, z):
        seen.append(ops.convert_to_numpy(z))
        return ops.zeros(ops.shape(z)[:-1])

    importance_sampled_log_likelihood(np.zeros((2, 3), "float32"), z_mean, z_log_var, log_likelihood, 20_000, seed=0)
    z = np.concatenate(seen, axis=1)  # (2, 20000, 2)
    std = np.exp(0.5 * z_log_var)
    # Means within 5 standard errors; standard deviations within 5 standard errors (sd / sqrt(2n)).
    np.testing.assert_array_less(np.abs(z.mean(axis=1) - z_mean), 5 * std / np.sqrt(20_000))
    np.testing.assert_array_less(np.abs(z.std(axis=1) - std), 5 * std / np.sqrt(2 * 20_000))

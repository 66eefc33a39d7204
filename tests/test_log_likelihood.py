"""The importance-sampled test log-likelihood and its Monte Carlo error, checked against closed forms.

The reference is a linear-Gaussian model, p(z) = N(0, I) and
p(x|z) = N(W z + b, sigma^2 I), whose marginal likelihood
p(x) = N(b, W W^T + sigma^2 I) SciPy computes independently. It is a composed
VAE with linear layers: the hidden ones set to the identity, the decoder's to
W and b, and the encoder's to the exact posterior (W's columns orthogonal make
it a diagonal Gaussian) or to a deliberately wrong one.
"""

import math

import keras
import numpy as np
import pytest
from keras import ops
from scipy import stats
from scipy.special import logsumexp

from compose import NegativeObjective, compose_vae
from kl_divergence import gaussian_log_density
from log_likelihood import load_vae, log_likelihood, summarise
from objectives import log_mean_exp

DATA_DIM, LATENT_DIM, SIGMA = 5, 2, 0.3


def linear_gaussian_vae(shift=0.0, log_var_shift=0.0, seed=0):
    """``(vae, x, log_px)``: the linear-Gaussian VAE with its posterior moved by ``shift`` and ``log_var_shift``,
    six data points drawn from the model, and their exact ``log p(x)``."""
    rng = np.random.default_rng(seed)
    w = np.linalg.qr(rng.normal(size=(DATA_DIM, LATENT_DIM)))[0] * np.array([1.5, 0.7])  # orthogonal columns
    b = rng.normal(size=DATA_DIM)
    vae = compose_vae(DATA_DIM, LATENT_DIM, divergence="monte_carlo", likelihood="gaussian", hidden_units=DATA_DIM,
                      activation="linear")  # fmt: skip
    encoder, decoder = vae.get_layer("encoder"), vae.get_layer("decoder")
    encoder.get_layer("encoder_hidden").set_weights([np.eye(DATA_DIM), np.zeros(DATA_DIM)])
    decoder.get_layer("decoder_hidden").set_weights([w.T, np.zeros(DATA_DIM)])
    decoder.get_layer("x_parameters").set_weights([np.eye(DATA_DIM), b])
    decoder.get_layer("log_scale").set_weights([np.full(DATA_DIM, np.log(SIGMA))])
    # The exact posterior: precision I + W^T W / sigma^2 (diagonal here), mean (its inverse) W^T (x - b) / sigma^2.
    posterior_var = 1.0 / (1.0 + np.sum(w**2, axis=0) / SIGMA**2)
    mean_kernel, mean_bias = w / SIGMA**2 * posterior_var, -(b @ w) / SIGMA**2 * posterior_var
    encoder.get_layer("z_mean").set_weights([mean_kernel, mean_bias + shift])
    encoder.get_layer("z_log_var").set_weights(
        [np.zeros((DATA_DIM, LATENT_DIM)), np.log(posterior_var) + log_var_shift]
    )
    marginal = stats.multivariate_normal(b, w @ w.T + SIGMA**2 * np.eye(DATA_DIM))
    x = marginal.rvs(size=6, random_state=rng).astype("float32")
    return vae, x, marginal.logpdf(x)


def test_log_mean_exp_is_exact_and_finite_at_extremes():
    values = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype="float32")
    expected = logsumexp(values.astype("float64"), axis=-1) - math.log(3)
    np.testing.assert_allclose(ops.convert_to_numpy(log_mean_exp(values)), expected, rtol=1e-7)
    assert float(log_mean_exp(np.array([5.0], "float32"))) == 5.0  # a single sample is its own mean


def test_gaussian_log_density_matches_scipy():
    rng = np.random.default_rng(1)
    z, mean, log_var = rng.standard_normal((3, 4, 2))
    expected = stats.multivariate_normal(np.zeros(2), np.eye(2)).logpdf((z - mean) / np.exp(0.5 * log_var))
    expected -= 0.5 * log_var.sum(axis=-1)
    actual = gaussian_log_density(z.astype("float32"), mean.astype("float32"), log_var.astype("float32"))
    np.testing.assert_allclose(ops.convert_to_numpy(actual), expected, rtol=1e-5)


def test_exact_posterior_makes_every_weight_p_x_and_both_bounds_equal_log_px():
    vae, x, log_px = linear_gaussian_vae()
    estimate, stderr = log_likelihood(vae, x, "gaussian", num_samples=16, return_stderr=True)
    np.testing.assert_allclose(estimate, log_px, atol=2e-3)
    assert np.all(stderr < 1e-3)  # every weight is p(x): no spread
    eps = np.random.default_rng(2).standard_normal((6, 50, LATENT_DIM)).astype("float32")
    outputs = vae([x, eps])
    for objective in ("elbo", "iwae"):  # the mean and the log-mean-exp of constant weights
        bound = -ops.convert_to_numpy(NegativeObjective(objective, "gaussian", reduction=None)(x, outputs))
        np.testing.assert_allclose(bound, log_px, atol=2e-3)


def test_wrong_posterior_estimate_converges_within_its_error_and_the_elbo_stays_below():
    vae, x, log_px = linear_gaussian_vae(shift=0.3, log_var_shift=0.5)
    estimate, stderr = log_likelihood(vae, x, "gaussian", num_samples=5000, seed=3, return_stderr=True)
    # Within 5 Monte Carlo standard errors plus the bound's O(1/M) bias.
    np.testing.assert_array_less(np.abs(estimate - log_px), 5 * stderr + 1e-3)
    assert np.all(stderr > 1e-4)  # a wrong q: the weights do spread
    eps = np.random.default_rng(4).standard_normal((6, 5000, LATENT_DIM)).astype("float32")
    parameters, log_ratio = vae([x, eps])
    mean, log_scale = np.split(ops.convert_to_numpy(parameters).astype("float64"), 2, axis=-1)
    log_w = stats.norm.logpdf(x[:, None], mean, np.exp(log_scale)).sum(-1) + ops.convert_to_numpy(log_ratio)
    elbo, elbo_stderr = log_w.mean(axis=-1), log_w.std(axis=-1) / math.sqrt(5000)
    np.testing.assert_array_less(elbo + 5 * elbo_stderr, log_px)


def test_the_monte_carlo_error_is_calibrated_and_shrinks_as_one_over_root_m():
    """The reported standard error matches the spread of the estimate over 40 seeds (within the noise of 40
    draws, about 11 %, so a factor 1.5), and 16 times the samples give a quarter of it."""
    vae, x, _ = linear_gaussian_vae(shift=0.3, log_var_shift=0.5)
    runs = [log_likelihood(vae, x, "gaussian", num_samples=200, seed=seed, return_stderr=True) for seed in range(40)]
    estimates, stderrs = np.array([r[0] for r in runs]), np.array([r[1] for r in runs])
    ratio = estimates.std(axis=0, ddof=1) / stderrs.mean(axis=0)
    assert np.all((ratio > 1 / 1.5) & (ratio < 1.5)), ratio
    _, large = log_likelihood(vae, x, "gaussian", num_samples=3200, seed=0, return_stderr=True)
    np.testing.assert_allclose(stderrs.mean(axis=0) / large, 4.0, rtol=0.3)


def test_estimate_is_seeded_and_the_same_without_its_error():
    vae, x, _ = linear_gaussian_vae(shift=0.3, log_var_shift=0.5)
    first, stderr = log_likelihood(vae, x, "gaussian", num_samples=300, seed=5, return_stderr=True)
    np.testing.assert_array_equal(log_likelihood(vae, x, "gaussian", num_samples=300, seed=5), first)
    assert not np.allclose(log_likelihood(vae, x, "gaussian", num_samples=300, seed=6), first, rtol=1e-6)
    _, single = log_likelihood(vae, x, "gaussian", num_samples=1, return_stderr=True)
    assert np.all(np.isnan(single)) and np.all(np.isfinite(stderr))


def test_summary_combines_the_two_errors():
    log_px, stderr = np.array([-90.0, -92.0, -94.0]), np.array([0.3, 0.4, 0.0])
    summary = summarise(log_px, stderr)
    assert summary["log_likelihood"] == pytest.approx(-92.0)
    assert summary["stderr_over_examples"] == pytest.approx(2.0 / math.sqrt(3))
    assert summary["monte_carlo_stderr"] == pytest.approx(0.5 / 3)  # sqrt(0.09 + 0.16) / 3
    assert summary["num_examples"] == 3


def test_a_model_without_a_density_or_not_ours_is_refused(tmp_path):
    inputs = keras.Input((4,))
    other = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    other.save(tmp_path / "other.keras")
    with pytest.raises(ValueError, match="Expected a model from `compose_vae`"):
        load_vae(tmp_path / "other.keras")
    implicit = compose_vae(784, 2, "implicit", "adversarial", hidden_units=4, discriminator_units=4)
    implicit.save(tmp_path / "implicit.keras")
    with pytest.raises(ValueError, match="An implicit posterior has no density"):
        load_vae(tmp_path / "implicit.keras")
    with pytest.raises(ValueError, match="Model file not found"):
        load_vae(tmp_path / "missing.keras")

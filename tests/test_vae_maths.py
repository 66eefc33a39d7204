"""The model's maths against independent NumPy/SciPy computations."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats
from scipy.special import expit

from variational_autoencoder import (
    BernoulliNegativeLogLikelihood,
    KLDivergenceLayer,
    build_vae,
    reparameterize,
)

BATCH, MC_SAMPLES, LATENT_DIM, ORIGINAL_DIM, HIDDEN = 3, 4, 5, 6, 7


def numpy_kl(z_mean, z_log_var):
    return -0.5 * np.sum(1 + z_log_var - z_mean**2 - np.exp(z_log_var), axis=-1)


def test_kl_layer_matches_numpy_closed_form():
    rng = np.random.default_rng(1)
    z_mean = rng.normal(size=(BATCH, LATENT_DIM)).astype("float32")
    z_log_var = rng.normal(size=(BATCH, LATENT_DIM)).astype("float32")
    layer = KLDivergenceLayer()
    outputs = layer([z_mean, z_log_var])
    np.testing.assert_array_equal(outputs[0], z_mean)  # passes its inputs through
    np.testing.assert_array_equal(outputs[1], z_log_var)
    assert len(layer.losses) == 1
    # Summed over latent dimensions, averaged over the batch.
    np.testing.assert_allclose(float(layer.losses[0]), numpy_kl(z_mean, z_log_var).mean(), rtol=1e-6)


@pytest.mark.parametrize(
    "mean, log_var",
    [(0.0, 0.0), (1.5, -1.0), (-3.0, 2.0), (0.5, -10.0), (-0.5, 10.0)],
    ids=["prior", "narrow", "wide", "log-var-minus-10", "log-var-plus-10"],
)
def test_kl_layer_matches_scipy_monte_carlo(mean, log_var):
    """KL(q || p) = E_q[log q(z) - log p(z)], estimated from 200,000 draws; within 4 standard errors."""
    z_mean = np.full((1, LATENT_DIM), mean, dtype="float32")
    z_log_var = np.full((1, LATENT_DIM), log_var, dtype="float32")
    layer = KLDivergenceLayer()
    layer([z_mean, z_log_var])
    closed_form = float(layer.losses[0])
    assert np.isfinite(closed_form)

    q = stats.norm(loc=mean, scale=np.exp(log_var / 2))
    z = q.rvs(size=(200_000, LATENT_DIM), random_state=np.random.default_rng(0))
    log_ratio = (q.logpdf(z) - stats.norm.logpdf(z)).sum(axis=-1)
    estimate, stderr = log_ratio.mean(), log_ratio.std(ddof=1) / np.sqrt(len(log_ratio))
    # (At the prior both are exactly 0; the 1e-6 absolute slack covers float32 rounding.)
    assert abs(closed_form - estimate) <= 4 * stderr + 1e-6 * (1 + abs(estimate)), (closed_form, estimate, stderr)


def test_bernoulli_nll_matches_scipy():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 2, size=(BATCH, ORIGINAL_DIM)).astype("float32")
    x_logits = rng.normal(scale=4.0, size=(BATCH, MC_SAMPLES, ORIGINAL_DIM)).astype("float32")
    values = keras.ops.convert_to_numpy(BernoulliNegativeLogLikelihood(reduction=None)(x, x_logits))
    expected = -stats.bernoulli.logpmf(x[:, None, :], expit(x_logits.astype("float64"))).sum(axis=-1)
    assert values.shape == (BATCH, MC_SAMPLES)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)
    # The default reduction averages over the batch and the samples.
    reduced = float(BernoulliNegativeLogLikelihood()(x, x_logits))
    np.testing.assert_allclose(reduced, expected.mean(), rtol=1e-5)


def test_bernoulli_nll_targets_broadcast_like_explicit_tiling():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 2, size=(BATCH, ORIGINAL_DIM)).astype("float32")
    x_logits = rng.normal(size=(BATCH, MC_SAMPLES, ORIGINAL_DIM)).astype("float32")
    tiled = np.repeat(x[:, None, :], MC_SAMPLES, axis=1)
    nll = BernoulliNegativeLogLikelihood(reduction=None)
    np.testing.assert_allclose(nll(x, x_logits), nll(tiled, x_logits), rtol=1e-6)
    # Keras' own binary cross-entropy refuses the mismatched shapes: the reason we broadcast.
    with pytest.raises(ValueError, match="same shape"):
        keras.ops.binary_crossentropy(x[:, None, :], x_logits, from_logits=True)


def test_bernoulli_nll_finite_at_extreme_logits():
    x = np.array([[1.0, 0.0, 1.0, 0.0]], dtype="float32")
    x_logits = tf.Variable(np.array([[[1e4, 1e4, -1e4, -1e4]]], dtype="float32"))
    nll = BernoulliNegativeLogLikelihood(reduction=None)
    with tf.GradientTape() as tape:
        value = nll(x, x_logits)
    gradient = tape.gradient(value, x_logits).numpy()
    # Right with certainty costs 0 nats, wrong with certainty costs |logit| nats.
    np.testing.assert_allclose(value.numpy(), [[2e4]], rtol=1e-6)
    assert np.all(np.isfinite(gradient))
    np.testing.assert_allclose(gradient, [[[0.0, 1.0, -1.0, 0.0]]], atol=1e-6)


def reparameterization_model(mc_samples):
    z_mean = keras.Input(shape=(LATENT_DIM,))
    z_log_var = keras.Input(shape=(LATENT_DIM,))
    eps = keras.Input(shape=(mc_samples, LATENT_DIM))
    return keras.Model([z_mean, z_log_var, eps], reparameterize(z_mean, z_log_var, eps))


def test_sampled_z_has_mc_axis_and_right_moments():
    mc_samples = 20_000
    rng = np.random.default_rng(4)
    z_mean = rng.normal(size=(BATCH, LATENT_DIM)).astype("float32")
    z_log_var = rng.uniform(-3, 2, size=(BATCH, LATENT_DIM)).astype("float32")
    eps = rng.standard_normal((BATCH, mc_samples, LATENT_DIM), dtype="float32")
    z = reparameterization_model(mc_samples).predict([z_mean, z_log_var, eps], verbose=0)
    assert z.shape == (BATCH, mc_samples, LATENT_DIM)
    z_scale = np.exp(z_log_var / 2)
    # Standard errors: scale / sqrt(S) for the mean, about scale / sqrt(2 S) for the std.
    np.testing.assert_array_less(np.abs(z.mean(axis=1) - z_mean), 5 * z_scale / np.sqrt(mc_samples))
    np.testing.assert_array_less(np.abs(z.std(axis=1) - z_scale), 5 * z_scale / np.sqrt(2 * mc_samples))


@pytest.fixture
def small_vae():
    keras.utils.set_random_seed(5)
    vae, encoder, decoder = build_vae(ORIGINAL_DIM, HIDDEN, LATENT_DIM, MC_SAMPLES)
    vae.compile(optimizer="adam", loss=BernoulliNegativeLogLikelihood())
    return vae, encoder, decoder


def test_eps_is_really_an_input(small_vae):
    vae, _, _ = small_vae
    rng = np.random.default_rng(6)
    x = rng.integers(0, 2, size=(BATCH, ORIGINAL_DIM)).astype("float32")
    eps = rng.standard_normal((BATCH, MC_SAMPLES, LATENT_DIM), dtype="float32")
    other_eps = rng.standard_normal((BATCH, MC_SAMPLES, LATENT_DIM), dtype="float32")
    first = vae.predict([x, eps], verbose=0)
    assert first.shape == (BATCH, MC_SAMPLES, ORIGINAL_DIM)
    np.testing.assert_array_equal(first, vae.predict([x, eps], verbose=0))  # no hidden noise
    assert np.abs(first - vae.predict([x, other_eps], verbose=0)).max() > 1e-3


def numpy_negative_elbo(vae, encoder, decoder, x, eps):
    """-ELBO from the weights, in NumPy: mean over samples of each sample's NLL, plus the KL, mean over the batch."""
    (w_h, b_h), (w_mean, b_mean), (w_log_var, b_log_var) = (
        encoder.get_layer(name).get_weights() for name in ("encoder_hidden", "z_mean", "z_log_var")
    )
    (w_dh, b_dh), (w_out, b_out) = (decoder.get_layer(name).get_weights() for name in ("decoder_hidden", "x_logits"))
    x, eps = x.astype("float64"), eps.astype("float64")
    h = np.maximum(x @ w_h + b_h, 0)
    z_mean, z_log_var = h @ w_mean + b_mean, h @ w_log_var + b_log_var
    z = z_mean[:, None, :] + np.exp(z_log_var / 2)[:, None, :] * eps
    x_logits = np.maximum(z @ w_dh + b_dh, 0) @ w_out + b_out
    nll_per_sample = (np.logaddexp(0, x_logits) - x[:, None, :] * x_logits).sum(axis=-1)
    return (nll_per_sample.mean(axis=1) + numpy_kl(z_mean, z_log_var)).mean()


def test_reported_loss_is_numpy_negative_elbo(small_vae):
    vae, encoder, decoder = small_vae
    rng = np.random.default_rng(7)
    x = rng.integers(0, 2, size=(BATCH, ORIGINAL_DIM)).astype("float32")
    eps = rng.standard_normal((BATCH, MC_SAMPLES, LATENT_DIM), dtype="float32")
    reported = vae.evaluate([x, eps], x, batch_size=BATCH, verbose=0)
    expected = numpy_negative_elbo(vae, encoder, decoder, x, eps)
    np.testing.assert_allclose(reported, expected, rtol=1e-5)
    # And not what averaging the logits over samples first would give.
    assert abs(reported - expected) < 0.01 * abs(
        reported
        - numpy_negative_elbo(vae, encoder, decoder, x, np.repeat(eps.mean(axis=1, keepdims=True), MC_SAMPLES, axis=1))
    )

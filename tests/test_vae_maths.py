"""The model's maths against independent NumPy/SciPy computations."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats
from scipy.special import expit

from conftest import value_and_gradient
from train import negative_elbo_per_example
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


def test_bernoulli_nll_value_and_gradient_match_numpy_at_zero_and_extreme_logits():
    """Value ``softplus(l) - x l`` and gradient ``sigmoid(l) - x``, against NumPy in float64: at logits of
    exactly 0 (where max(l, 0) and |l| have kinks; their autodiff gradient there is -x, not 1/2 - x) and at
    |l| = 1e4 (no NaN or inf), on every (pixel, sign) combination."""
    rng = np.random.default_rng(11)
    x = rng.integers(0, 2, size=(BATCH, ORIGINAL_DIM)).astype("float32")
    x[0, :2] = [0.0, 1.0]
    x_logits = rng.normal(scale=4.0, size=(BATCH, MC_SAMPLES, ORIGINAL_DIM)).astype("float32")
    x_logits[0, :, :2] = 0.0  # both pixel values, every sample, at the kink
    x_logits[1, 0, :] = 1e4
    x_logits[1, 1, :] = -1e4
    nll = BernoulliNegativeLogLikelihood(reduction=None)
    values, gradient = value_and_gradient(lambda t: nll(x, t), x_logits)

    logits, targets = x_logits.astype("float64"), x[:, None, :].astype("float64")
    expected_values = (np.logaddexp(0.0, logits) - targets * logits).sum(axis=-1)
    expected_gradient = expit(logits) - targets
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(gradient))
    np.testing.assert_allclose(values, expected_values, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(gradient, np.broadcast_to(expected_gradient, gradient.shape), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(gradient[0, :, :2], np.broadcast_to([0.5, -0.5], (MC_SAMPLES, 2)))


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
    vae, encoder, decoder = build_vae(ORIGINAL_DIM, HIDDEN, LATENT_DIM)
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


def numpy_negative_elbo_per_example(vae, encoder, decoder, x, eps):
    """-ELBO from the weights, in NumPy (float64): mean over samples of each sample's NLL, plus the KL."""
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
    return nll_per_sample.mean(axis=1) + numpy_kl(z_mean, z_log_var)


def numpy_negative_elbo(vae, encoder, decoder, x, eps):
    """The mean over the batch of `numpy_negative_elbo_per_example`: the loss Keras reports."""
    return numpy_negative_elbo_per_example(vae, encoder, decoder, x, eps).mean()


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


def test_one_model_trains_with_one_sample_and_is_scored_with_any_number():
    """S is data: one model, built once, takes a training step with S = 1 and is then called with S = 5 and
    S = 5000 samples of eps, with no rebuild and no copied weights."""
    keras.utils.set_random_seed(9)
    vae, encoder, decoder = build_vae(784, 8, 2)
    vae.compile(optimizer=keras.optimizers.Adam(1e-2), loss=BernoulliNegativeLogLikelihood())
    rng = np.random.default_rng(10)
    x = (rng.uniform(size=(BATCH, 784)) < 0.3).astype("float32")
    before = [w.copy() for w in vae.get_weights()]
    vae.train_on_batch([x, rng.standard_normal((BATCH, 1, 2), dtype="float32")], x)
    trained = vae.get_weights()
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, trained, strict=True))

    eps = rng.standard_normal((BATCH, 5000, 2), dtype="float32")
    x_logits = vae.predict_on_batch([x, eps[:, :5]])
    assert x_logits.shape == (BATCH, 5, 784)
    loss_5 = vae.evaluate([x, eps[:, :5]], x, batch_size=BATCH, verbose=0)
    assert np.isfinite(loss_5)
    # Each sample is decoded on its own: the first five of 5000 are the five fed alone.
    np.testing.assert_allclose(vae.predict_on_batch([x, eps])[:, :5], x_logits, rtol=1e-5, atol=1e-5)
    # With 5000 samples the loss is the float64 NumPy -ELBO of those samples (exact KL, Monte Carlo
    # distortion), and the same as one sample each for the examples repeated 5000 times.
    loss_5000 = vae.evaluate([x, eps], x, batch_size=BATCH, verbose=0)
    np.testing.assert_allclose(loss_5000, numpy_negative_elbo(vae, encoder, decoder, x, eps), rtol=1e-5)
    repeated = np.repeat(x, 5000, axis=0)
    one_each = vae.evaluate([repeated, eps.reshape(-1, 1, 2)], repeated, batch_size=len(repeated), verbose=0)
    np.testing.assert_allclose(loss_5000, one_each, rtol=1e-5)
    # Scoring changed nothing: the model is the trained one.
    for a, b in zip(trained, vae.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_negative_elbo_per_example_takes_the_number_of_samples_and_not_the_chunk_size(small_vae):
    vae, encoder, decoder = small_vae
    rng = np.random.default_rng(12)
    x = rng.integers(0, 2, size=(7, ORIGINAL_DIM)).astype("float32")
    values = negative_elbo_per_example(vae, encoder, x, mc_samples=MC_SAMPLES, batch_size=3, seed=13)
    eps = np.random.default_rng(13).standard_normal((7, MC_SAMPLES, LATENT_DIM), dtype="float32")
    assert values.shape == (7,)
    np.testing.assert_allclose(values, numpy_negative_elbo_per_example(vae, encoder, decoder, x, eps), rtol=1e-5)
    whole = negative_elbo_per_example(vae, encoder, x, mc_samples=MC_SAMPLES, batch_size=1000, seed=13)
    np.testing.assert_allclose(whole, values, rtol=1e-6)
    one_sample = negative_elbo_per_example(vae, encoder, x, seed=13)
    assert not np.allclose(one_sample, values)
    with pytest.raises(ValueError, match=r"`mc_samples` to be a positive integer. Received: mc_samples=0"):
        negative_elbo_per_example(vae, encoder, x, mc_samples=0)

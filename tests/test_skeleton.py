"""The skeleton with the likelihood as an argument: losses, builders, fitting, and the examples' claims."""

import math

import keras
import numpy as np
import pytest
from keras import ops
from scipy import special, stats

from likelihoods import NegativeLogLikelihood, continuous_bernoulli_mean, sample_from
from skeleton import (
    BayesianDense,
    GlobalPosterior,
    build_decoder,
    build_global_encoder,
    build_linear_decoder,
    build_model,
    build_task_model,
    fit,
    load_task,
    log_likelihood,
    log_predictive_density,
    predictive_samples,
)
from variational_autoencoder import build_encoder

RNG = np.random.default_rng(0)


def numpy(values):
    return ops.convert_to_numpy(values).astype("float64")


# --- the loss, against SciPy --------------------------------------------------------------------


def test_gaussian_loss_reads_mean_then_log_scale():
    y = RNG.normal(size=(4, 3))
    mean, log_scale = RNG.normal(size=(4, 2, 3)), RNG.normal(size=(4, 2, 3)) * 0.5
    parameters = np.concatenate([mean, log_scale], axis=-1).astype("float32")
    expected = -stats.norm.logpdf(y[:, None, :], mean, np.exp(log_scale)).sum(axis=-1)
    got = numpy(NegativeLogLikelihood("gaussian", reduction=None)(y.astype("float32"), parameters))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


@pytest.mark.parametrize("label_shape", [(5,), (5, 1)])
def test_categorical_loss_against_scipy(label_shape):
    labels = RNG.integers(0, 4, size=5)
    logits = RNG.normal(size=(5, 3, 4)) * 3
    log_probs = logits - special.logsumexp(logits, axis=-1, keepdims=True)
    expected = -np.take_along_axis(log_probs, labels[:, None, None].repeat(3, 1), axis=-1)[..., 0]
    got = numpy(NegativeLogLikelihood("categorical", reduction=None)(labels.reshape(label_shape), logits))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_bernoulli_loss_scale_multiplies():
    x = (RNG.random((3, 6)) < 0.5).astype("float32")
    logits = RNG.normal(size=(3, 1, 6)).astype("float32")
    expected = -stats.bernoulli(special.expit(logits)).logpmf(x[:, None, :]).sum(axis=-1)
    got = numpy(NegativeLogLikelihood("bernoulli", scale=7.0, reduction=None)(x, logits))
    np.testing.assert_allclose(got, 7.0 * expected, rtol=1e-5)


def test_loss_serialises():
    loss = NegativeLogLikelihood("continuous_bernoulli", scale=3.0)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert (again.likelihood, again.scale) == ("continuous_bernoulli", 3.0)


# --- clear errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "likelihood, y_shape, parameter_shape, message",
    [
        ("gaussian", (2, 3), (2, 1, 3), "a mean and a log scale per dimension"),
        ("bernoulli", (2, 3), (2, 1, 4), "one logit per dimension"),
        ("continuous_bernoulli", (2, 5), (2, 1, 3), "one logit per dimension"),
        ("categorical", (2, 3), (2, 1, 10), "labels of shape \\(batch,\\)"),
    ],
)
def test_shape_mismatch_is_a_clear_error(likelihood, y_shape, parameter_shape, message):
    y = np.zeros(y_shape, dtype="float32")
    with pytest.raises(ValueError, match=message):
        NegativeLogLikelihood(likelihood)(y, np.zeros(parameter_shape, dtype="float32"))


def test_unknown_likelihood_is_a_clear_error():
    with pytest.raises(ValueError, match="Expected a likelihood in"):
        NegativeLogLikelihood("poisson")


def test_fit_refuses_targets_outside_the_support():
    model, likelihood = build_task_model("digits", 4)
    x = np.zeros((3, 4), dtype="float32")
    with pytest.raises(ValueError, match=r"labels in \[0, 9\] for 10 classes"):
        fit(model, likelihood, x, np.array([0, 3, 10]), num_epochs=1, verbose=0)
    vae = build_model(build_encoder(4, 8, 2), build_decoder("continuous_bernoulli", 4, 8, 2), 4, 2)
    with pytest.raises(ValueError, match=r"data in \[0, 1\]"):
        fit(vae, "continuous_bernoulli", np.full((3, 4), 1.5, dtype="float32"), num_epochs=1, verbose=0)
    bernoulli = build_model(build_encoder(4, 8, 2), build_decoder("bernoulli", 4, 8, 2), 4, 2)
    with pytest.raises(ValueError, match="Expected binary data"):
        fit(bernoulli, "bernoulli", np.full((3, 4), 0.5, dtype="float32"), num_epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"inputs of shape \(count, 4\)"):
        fit(vae, "continuous_bernoulli", np.zeros((3, 5), dtype="float32"), num_epochs=1, verbose=0)


def test_bayesian_dense_refuses_a_wrong_weight_width():
    with pytest.raises(ValueError, match=r"\(in_dim \+ 1\) \* units = 8"):
        BayesianDense(2)([keras.Input((3,)), keras.Input((5, 7))])


# --- the pieces, against NumPy ------------------------------------------------------------------


def test_bayesian_dense_is_a_linear_model_per_sample():
    x = RNG.normal(size=(4, 3)).astype("float32")
    z = RNG.normal(size=(4, 5, BayesianDense.latent_dim(3, 2))).astype("float32")
    kernel, bias = z[..., :6].reshape(4, 5, 3, 2), z[..., 6:]
    expected = np.einsum("bi,bsiu->bsu", x, kernel) + bias
    np.testing.assert_allclose(numpy(BayesianDense(2)([x, z])), expected, rtol=1e-5, atol=1e-6)


def test_global_posterior_gives_every_example_the_same_row():
    layer = GlobalPosterior(3, initial_log_var=-4.0)
    z_mean, z_log_var = layer(np.zeros((5, 7), dtype="float32"))
    assert z_mean.shape == (5, 3) and np.all(numpy(z_log_var) == -4.0) and np.all(numpy(z_mean) == 0.0)


@pytest.mark.parametrize(
    "likelihood, heteroscedastic", [("bernoulli", False), ("continuous_bernoulli", False), ("gaussian", False),
                                    ("gaussian", True)]
)  # fmt: skip
def test_every_head_trains_and_round_trips(tmp_path, mnist_subset, likelihood, heteroscedastic):
    (x_train, _), _ = mnist_subset
    levels = np.floor(x_train[:200] * 255.0) / 256.0
    decoder = build_decoder(likelihood, 784, 32, 2, heteroscedastic=heteroscedastic)
    model = build_model(build_encoder(784, 32, 2), decoder, 784, 2, mc_samples=3)
    assert model.outputs[0].shape == (None, 3, 2 * 784 if likelihood == "gaussian" else 784)
    support = "continuous_bernoulli" if likelihood == "bernoulli" else None
    history = fit(model, likelihood, levels, num_epochs=1, batch_size=50, dequantize=True, verbose=0, support=support)
    assert np.isfinite(history["loss"][0])
    path = tmp_path / "model.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    inputs = [levels[:4], RNG.normal(size=(4, 3, 2)).astype("float32")]
    np.testing.assert_allclose(again.predict(inputs, verbose=0), model.predict(inputs, verbose=0), rtol=1e-5)


def test_log_likelihood_of_a_linear_gaussian_model_is_exact():
    """``x = W z + b + sigma n``: ``p(x) = N(b, W W^T + sigma^2 I)``, and with the exact posterior as the encoder
    every importance weight equals ``p(x)``, so the estimate matches the closed form to float precision."""
    data_dim, latent_dim, sigma = 5, 2, 0.3
    w = np.linalg.qr(RNG.normal(size=(data_dim, latent_dim)))[0] * np.array([1.5, 0.7])  # orthogonal columns
    b = RNG.normal(size=data_dim)
    decoder = build_decoder("gaussian", data_dim, latent_dim=latent_dim, hidden_layers=0)
    decoder.get_layer("x_parameters").set_weights([w.T, b])
    decoder.get_layer("log_scale").set_weights([np.full(data_dim, math.log(sigma))])
    # The exact posterior: precision I + W^T W / sigma^2 (diagonal here), mean (its inverse) W^T (x - b) / sigma^2.
    posterior_var = 1.0 / (1.0 + np.sum(w**2, axis=0) / sigma**2)
    encoder = build_encoder(data_dim, latent_dim=latent_dim, hidden_layers=0)
    encoder.get_layer("z_mean").set_weights([w / sigma**2 * posterior_var, -(b @ w) / sigma**2 * posterior_var])
    encoder.get_layer("z_log_var").set_weights([np.zeros((data_dim, latent_dim)), np.log(posterior_var)])
    model = build_model(encoder, decoder, data_dim, latent_dim)
    x = RNG.multivariate_normal(b, w @ w.T + sigma**2 * np.eye(data_dim), size=6).astype("float32")
    log_px, _ = log_likelihood(model, "gaussian", x, num_samples=16)
    expected = stats.multivariate_normal(b, w @ w.T + sigma**2 * np.eye(data_dim)).logpdf(x)
    np.testing.assert_allclose(log_px, expected, atol=2e-3)


def test_log_predictive_density_is_a_log_mean_of_densities():
    y = RNG.normal(size=(4, 1)).astype("float32")
    mean, log_scale = RNG.normal(size=(4, 6, 1)), RNG.normal(size=(4, 6, 1)) * 0.3
    parameters = np.concatenate([mean, log_scale], axis=-1).astype("float32")
    expected = np.log(np.mean(stats.norm.pdf(y[:, None, :], mean, np.exp(log_scale))[..., 0], axis=1))
    np.testing.assert_allclose(log_predictive_density("gaussian", y, parameters), expected, rtol=1e-4)


def test_sample_from_a_continuous_bernoulli_has_its_mean():
    """Inverse-CDF draws against the closed-form mean: 100,000 draws, 5 standard errors (the sd is < 0.3)."""
    logits = np.array([-50.0, -3.0, -1e-7, 0.0, 0.4, 3.0, 50.0])
    _, draws = sample_from("continuous_bernoulli", np.tile(logits, (100_000, 1)), np.random.default_rng(1))
    assert np.all((draws >= 0) & (draws <= 1))
    np.testing.assert_allclose(draws.mean(axis=0), continuous_bernoulli_mean(logits), atol=5 * 0.3 / math.sqrt(1e5))


# --- the examples' claims -----------------------------------------------------------------------


def test_gaussian_head_recovers_a_known_noise_level():
    """y = x w + b + 0.5 n on 2,000 points: the learned scale is within 5% of 0.5 (its standard error is
    0.5 / sqrt(2 * 2000) = 1.6%), and the posterior mean is the exact conjugate one within 0.05."""
    from likelihood_experiments import exact_posterior

    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 3)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.5 * rng.normal(size=2000)).astype("float32")[:, None]
    latent_dim = BayesianDense.latent_dim(3, 1)
    model = build_model(build_global_encoder(3, latent_dim), build_linear_decoder("gaussian", 3, 1), 3, latent_dim,
                        conditional=True)  # fmt: skip
    fit(model, "gaussian", x, y, num_epochs=40, batch_size=100, learning_rate=1e-2, loss_scale=len(x), verbose=0)
    noise_scale = float(np.exp(model.get_layer("decoder").get_layer("log_scale").get_weights()[0][0]))
    assert abs(noise_scale - 0.5) < 0.05 * 0.5, noise_scale
    w_mean, _ = exact_posterior(x, y, noise_scale)
    vi_mean = model.get_layer("encoder").get_layer("posterior").get_weights()[0]
    np.testing.assert_allclose(vi_mean, w_mean, atol=0.05)


def test_regression_intervals_reach_nominal_coverage():
    """Held-out diabetes (111 points): the 50% and 90% predictive intervals cover within 3 binomial standard
    errors of nominal (0.14 and 0.085)."""
    from likelihood_experiments import central_intervals

    (x_train, y_train), (x_test, y_test) = load_task("diabetes", seed=5)
    model, likelihood = build_task_model("diabetes", x_train.shape[-1])
    fit(model, likelihood, x_train, y_train, num_epochs=60, batch_size=32, learning_rate=1e-2,
        loss_scale=len(x_train), verbose=0)  # fmt: skip
    mean, log_scale = np.split(predictive_samples(model, x_test, 2000), 2, axis=-1)
    draws = (mean + np.exp(log_scale) * RNG.standard_normal(mean.shape))[..., 0]
    y = y_test[:, 0]
    for level, tolerance in ((0.5, 0.14), (0.9, 0.085)):
        low, high = central_intervals(draws, [level])[level]
        coverage = np.mean((y >= low) & (y <= high))
        assert abs(coverage - level) <= tolerance, (level, coverage)


def test_bayesian_softmax_regression_beats_chance_widely():
    """Digits, 450 held-out images: accuracy above 0.9 where chance is 0.1."""
    (x_train, y_train), (x_test, y_test) = load_task("digits")
    model, likelihood = build_task_model("digits", x_train.shape[-1])
    fit(model, likelihood, x_train, y_train, num_epochs=20, batch_size=32, learning_rate=1e-2,
        loss_scale=len(x_train), verbose=0)  # fmt: skip
    probabilities = ops.convert_to_numpy(ops.mean(ops.softmax(predictive_samples(model, x_test, 100), axis=-1), 1))
    assert np.mean(probabilities.argmax(-1) == y_test) > 0.9

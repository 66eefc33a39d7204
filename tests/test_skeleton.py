"""The likelihood as an argument of the composed VAE: losses, decoders, the global posterior, fitting, and the
examples' claims."""

import math

import keras
import numpy as np
import pytest
from keras import ops
from scipy import special, stats

from compose import compose_vae
from likelihoods import NegativeLogLikelihood
from skeleton import BayesianDense, GlobalPosterior, load_task, log_predictive_density, task_vae
from training import continuous_bernoulli_mean, fit_vae, posterior_predictive, sample_from

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
    vae, likelihood = task_vae("digits", 4, num_examples=3)
    x = np.zeros((3, 4), dtype="float32")
    with pytest.raises(ValueError, match=r"labels in \[0, 9\] for 10 classes"):
        fit_vae(vae, x, likelihood, epochs=1, y=np.array([0, 3, 10]), verbose=0)
    vae = compose_vae(4, 2, likelihood="continuous_bernoulli", hidden_units=8)
    with pytest.raises(ValueError, match=r"data in \[0, 1\]"):
        fit_vae(vae, np.full((3, 4), 1.5, dtype="float32"), "continuous_bernoulli", epochs=1, verbose=0)
    bernoulli = compose_vae(4, 2, hidden_units=8)
    with pytest.raises(ValueError, match="Expected binary data"):
        fit_vae(bernoulli, np.full((3, 4), 0.5, dtype="float32"), "bernoulli", epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"data of shape \(count, 4\)"):
        fit_vae(vae, np.zeros((3, 5), dtype="float32"), "continuous_bernoulli", epochs=1, verbose=0)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"latent_dim": 7}, r"latent_dim = \(data_dim \+ 1\) \* 1 = 4\. Received: latent_dim=7"),
        ({"num_examples": None}, "Expected `num_examples`"),
        ({"posterior": "gaussian"}, "Expected `num_examples`"),
        ({"objective": "iwae", "divergence": "monte_carlo"}, "objective='elbo'"),
        ({"decoder": "deconv"}, "Expected `decoder` to be one of"),
        ({"decoder": "conv"}, "A convolutional network reads x as an image"),
    ],
)
def test_a_linear_decoder_and_a_global_posterior_are_refused_with_sizes_that_do_not_fit(changes, message):
    parts = {"data_dim": 3, "latent_dim": 4, "posterior": "global", "likelihood": "gaussian", "decoder": "linear",
             "num_examples": 10, **changes}  # fmt: skip
    with pytest.raises(ValueError, match=message):
        compose_vae(**parts)


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
    model = compose_vae(784, 2, likelihood=likelihood, hidden_units=32, heteroscedastic=heteroscedastic)
    assert model.outputs[0].shape == (None, None, 2 * 784 if likelihood == "gaussian" else 784)
    history = fit_vae(model, levels, likelihood, epochs=1, batch_size=50, mc_samples=3, dequantize=True, verbose=0)
    assert np.isfinite(history["loss"][0])
    path = tmp_path / "model.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    inputs = [levels[:4], RNG.normal(size=(4, 3, 2)).astype("float32")]
    for ours, theirs in zip(model(inputs), again(inputs), strict=True):
        np.testing.assert_allclose(numpy(theirs), numpy(ours), rtol=1e-5)


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


@pytest.mark.parametrize("kl_share", ["one N-th", "whole"])
def test_gaussian_head_recovers_a_known_noise_level(kl_share):
    """y = x w + b + 0.5 n on 2,000 points: the learned scale is within 5% of 0.5 (its standard error is
    0.5 / sqrt(2 * 2000) = 1.6%), and the posterior mean is the exact conjugate one within 0.05. With the
    whole KL on every example (num_examples=1), the prior weighs N times too much and the mean misses."""
    from likelihood_experiments import exact_posterior

    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 3)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.5 * rng.normal(size=2000)).astype("float32")[:, None]
    keras.utils.set_random_seed(0)
    model = compose_vae(3, BayesianDense.latent_dim(3, 1), posterior="global", likelihood="gaussian",
                        decoder="linear", num_examples=len(x) if kl_share == "one N-th" else 1)  # fmt: skip
    fit_vae(model, x, "gaussian", epochs=40, batch_size=100, learning_rate=1e-2, y=y, verbose=0)
    noise_scale = float(np.exp(model.get_layer("decoder").get_layer("log_scale").get_weights()[0][0]))
    w_mean, _ = exact_posterior(x, y, noise_scale)
    vi_mean = model.get_layer("posterior").get_weights()[0]
    if kl_share == "whole":
        assert np.max(np.abs(vi_mean - w_mean)) > 1.0
        return
    assert abs(noise_scale - 0.5) < 0.05 * 0.5, noise_scale
    np.testing.assert_allclose(vi_mean, w_mean, atol=0.05)


def test_regression_intervals_reach_nominal_coverage():
    """Held-out diabetes (111 points): the 50% and 90% predictive intervals cover within 3 binomial standard
    errors of nominal (0.14 and 0.085)."""
    from likelihood_experiments import central_intervals

    (x_train, y_train), (x_test, y_test) = load_task("diabetes", seed=5)
    model, likelihood = task_vae("diabetes", x_train.shape[-1], len(x_train))
    fit_vae(model, x_train, likelihood, epochs=60, batch_size=32, learning_rate=1e-2, y=y_train, verbose=0)
    mean, log_scale = np.split(posterior_predictive(model, x_test, 2000), 2, axis=-1)
    draws = (mean + np.exp(log_scale) * RNG.standard_normal(mean.shape))[..., 0]
    y = y_test[:, 0]
    for level, tolerance in ((0.5, 0.14), (0.9, 0.085)):
        low, high = central_intervals(draws, [level])[level]
        coverage = np.mean((y >= low) & (y <= high))
        assert abs(coverage - level) <= tolerance, (level, coverage)


def test_bayesian_softmax_regression_beats_chance_widely():
    """Digits, 450 held-out images: accuracy above 0.9 where chance is 0.1."""
    (x_train, y_train), (x_test, y_test) = load_task("digits")
    model, likelihood = task_vae("digits", x_train.shape[-1], len(x_train))
    fit_vae(model, x_train, likelihood, epochs=20, batch_size=32, learning_rate=1e-2, y=y_train, verbose=0)
    probabilities = ops.convert_to_numpy(ops.mean(ops.softmax(posterior_predictive(model, x_test, 100), -1), 1))
    assert np.mean(probabilities.argmax(-1) == y_test) > 0.9

"""The KL-divergence layers against NumPy closed forms and Monte Carlo with stated tolerances."""

import math

import keras
import numpy as np
import pytest
from keras import ops
from scipy.special import expit

from discriminator import build_discriminator, discriminator_loss
from kl_divergence import (
    ADVERSARIAL_ESTIMATORS,
    AdaptiveContrastKL,
    AdversarialKL,
    ClosedFormKL,
    MonteCarloKL,
    make_kl_layer,
)


def numpy_gaussian_kl(mean, log_var):
    """KL[N(mean, diag(exp(log_var))) || N(0, I)] summed over the last axis, in float64."""
    var = np.exp(log_var)
    return 0.5 * np.sum(var + mean**2 - 1.0 - log_var, axis=-1)


SETTINGS = [
    (np.array([[0.0, 0.0]]), np.array([[0.0, 0.0]])),
    (np.array([[1.0, -2.0]]), np.array([[-1.0, 0.5]])),
    (np.array([[3.0, 0.5]]), np.array([[-10.0, 10.0]])),
    (np.array([[-0.5, 0.0]]), np.array([[10.0, -10.0]])),
]


@pytest.mark.parametrize("mean, log_var", SETTINGS, ids=["standard", "moderate", "extreme-a", "extreme-b"])
def test_closed_form_matches_numpy(mean, log_var):
    layer = ClosedFormKL()
    inputs = {"z_mean": mean.astype("float32"), "z_log_var": log_var.astype("float32")}
    outputs = layer(inputs)
    np.testing.assert_allclose(float(layer.losses[0]), numpy_gaussian_kl(mean, log_var).mean(), rtol=1e-5, atol=1e-6)
    assert outputs is inputs or all(np.array_equal(outputs[k], inputs[k]) for k in inputs)  # pass-through


@pytest.mark.parametrize("mean, log_var", SETTINGS, ids=["standard", "moderate", "extreme-a", "extreme-b"])
def test_monte_carlo_agrees_with_closed_form_within_four_standard_errors(mean, log_var):
    samples = 200_000
    eps = np.random.default_rng(0).standard_normal((1, samples, 2))
    z = mean[:, None] + np.exp(0.5 * log_var)[:, None] * eps
    layer = MonteCarloKL()
    inputs = {name: value.astype("float32") for name, value in (("z", z), ("z_mean", mean), ("z_log_var", log_var))}
    terms = ops.convert_to_numpy(layer.kl_terms({k: ops.convert_to_tensor(v) for k, v in inputs.items()}))
    assert np.all(np.isfinite(terms))
    layer(inputs)
    estimate, stderr = float(layer.losses[0]), terms.std() / math.sqrt(samples)
    exact = numpy_gaussian_kl(mean, log_var).item()
    # float32 rounding of z at log variance +10 adds a little on top of the sampling error.
    assert abs(estimate - exact) < 4 * stderr + 1e-3 * max(1.0, exact), (estimate, exact, stderr)


def test_density_ratio_estimator_learns_the_kl_of_two_gaussians():
    """Trained on z ~ q = N(mean, var) against z ~ p = N(0, I), T(z) approaches log q - log p.

    Tolerance: the mean of T over held-out draws from q within 0.15 nats of the
    true KL (0.88 nats; an under-trained discriminator underestimates it).
    """
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    mean, log_var = np.array([1.0, -0.5]), np.array([-1.0, 0.5])
    std = np.exp(0.5 * log_var)
    n = 20_000
    z_q = mean + std * rng.standard_normal((n, 2))
    z_p = rng.standard_normal((n, 2))
    z = np.concatenate([z_q, z_p])[:, None, :].astype("float32")
    labels = np.concatenate([np.ones(n), np.zeros(n)])[:, None].astype("float32")
    x = np.zeros((2 * n, 1), "float32")  # no data: T depends on z only
    discriminator = build_discriminator(data_dim=1, latent_dim=2, hidden_units=64)
    discriminator.compile(optimizer=keras.optimizers.Adam(3e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    discriminator.fit([x, z], labels, batch_size=256, epochs=40, shuffle=True, verbose=0)

    def log_ratio(points):
        log_q = -0.5 * np.sum(((points - mean) / std) ** 2 + log_var + math.log(2 * math.pi), axis=-1)
        log_p = -0.5 * np.sum(points**2 + math.log(2 * math.pi), axis=-1)
        return log_q - log_p

    held_out = mean + std * rng.standard_normal((5000, 2))
    t = ops.convert_to_numpy(discriminator([np.zeros((5000, 1), "float32"), held_out[:, None].astype("float32")]))[:, 0]
    exact = numpy_gaussian_kl(mean, log_var)
    layer = AdversarialKL(discriminator)
    layer({"x": np.zeros((5000, 1), "float32"), "z": held_out[:, None].astype("float32")})
    assert abs(float(layer.losses[0]) - exact) < 0.15, (float(layer.losses[0]), exact)
    mixed = np.concatenate([held_out, rng.standard_normal((5000, 2))])
    t_mixed = ops.convert_to_numpy(discriminator([np.zeros((10000, 1), "float32"), mixed[:, None].astype("float32")]))
    assert np.corrcoef(t_mixed[:, 0], log_ratio(mixed))[0, 1] > 0.95
    assert np.corrcoef(t, log_ratio(held_out))[0, 1] > 0.9


def test_discriminator_loss_is_the_logistic_loss():
    """-mean log sigmoid(T_q) - mean log(1 - sigmoid(T_p)), finite at extreme logits."""
    t_q = np.array([-50.0, 0.0, 3.0], "float32")
    t_p = np.array([2.0, 60.0, -1.0], "float32")
    expected = np.mean(np.logaddexp(0.0, -t_q.astype("float64"))) + np.mean(np.logaddexp(0.0, t_p.astype("float64")))
    np.testing.assert_allclose(float(discriminator_loss(t_q, t_p)), expected, rtol=1e-6)
    moderate = np.array([0.5, -0.5], "float32")
    direct = -np.mean(np.log(expit(moderate))) - np.mean(np.log(1 - expit(moderate)))
    np.testing.assert_allclose(float(discriminator_loss(moderate, moderate)), direct, rtol=1e-5)


@pytest.mark.parametrize("name", ["closed_form", "monte_carlo", "adversarial", "adaptive_contrast"])
def test_each_layer_round_trips_through_a_keras_file(name, tmp_path):
    keras.utils.set_random_seed(2)
    x = keras.Input((3,), name="x")
    z_mean = keras.layers.Dense(2, name="z_mean")(x)
    z_log_var = keras.layers.Dense(2, name="z_log_var")(x)
    z = keras.Input((4, 2), name="z")
    discriminator = build_discriminator(3, 2, hidden_units=8) if name in ADVERSARIAL_ESTIMATORS else None
    outputs = make_kl_layer(name, discriminator=discriminator, name="kl")(
        {"x": x, "z": z, "z_mean": z_mean, "z_log_var": z_log_var}
    )
    model = keras.Model([x, z], outputs["z"])
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    data = [np.random.default_rng(3).standard_normal((5, 3)).astype("float32"),
            np.random.default_rng(4).standard_normal((5, 4, 2)).astype("float32")]  # fmt: skip
    model(data)
    loaded(data)
    assert type(loaded.get_layer("kl")) is type(model.get_layer("kl"))
    np.testing.assert_allclose(float(loaded.losses[0]), float(model.losses[0]), rtol=1e-6)


def test_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match="Expected an estimator in"):
        make_kl_layer("kde")
    with pytest.raises(ValueError, match="needs a `discriminator`"):
        make_kl_layer("adversarial")
    with pytest.raises(ValueError, match="same shape"):
        ClosedFormKL()({"z_mean": np.zeros((2, 3), "float32"), "z_log_var": np.zeros((2, 4), "float32")})
    with pytest.raises(ValueError, match=r"expects a dict with the tensors \['z', 'z_mean', 'z_log_var'\]"):
        MonteCarloKL()({"z_mean": np.zeros((2, 3), "float32"), "z_log_var": np.zeros((2, 3), "float32")})
    with pytest.raises(ValueError, match="Expected `z` of shape"):
        MonteCarloKL()({"z": np.zeros((2, 3), "float32"), "z_mean": np.zeros((2, 3)), "z_log_var": np.zeros((2, 3))})
    x, z = keras.Input((3,)), keras.Input((4, 2))
    wrong = keras.Model([x, z], keras.layers.Dense(5)(z))  # (batch, 4, 5), not (batch, 4)
    with pytest.raises(ValueError, match="one value per sample of z"):
        AdversarialKL(wrong)


@pytest.mark.parametrize("mean, log_var", SETTINGS[:3], ids=["standard", "moderate", "extreme-a"])
def test_adaptive_contrast_adds_the_fitted_gaussians_kl(mean, log_var):
    """With T = 0 the estimate is E_q[log r - log p], r fitted to the samples: for a Gaussian q, its KL.

    Tolerance: 4 standard errors of the Monte Carlo mean plus the bias of fitting r to the same
    20,000 samples (of order latent_dim / samples).
    """
    samples = 20_000
    discriminator = build_discriminator(3, 2, hidden_units=4)
    for weight in discriminator.get_layer("logit").weights:
        weight.assign(np.zeros(weight.shape))
    eps = np.random.default_rng(5).standard_normal((1, samples, 2))
    z = (mean[:, None] + np.exp(0.5 * log_var)[:, None] * eps).astype("float32")
    layer = AdaptiveContrastKL(discriminator)
    inputs = {"x": np.zeros((1, 3), "float32"), "z": z}
    terms = ops.convert_to_numpy(layer.kl_terms({k: ops.convert_to_tensor(v) for k, v in inputs.items()}))
    layer(inputs)
    exact = numpy_gaussian_kl(mean, log_var).item()
    assert np.all(np.isfinite(terms))
    stderr = terms.std() / math.sqrt(samples)
    assert abs(float(layer.losses[0]) - exact) < 4 * stderr + 2 / samples + 1e-3 * max(1.0, exact)


def test_adaptive_contrast_needs_two_samples_per_example():
    layer = AdaptiveContrastKL(build_discriminator(3, 2, hidden_units=4))
    with pytest.raises(ValueError, match="needs `mc_samples` >= 2"):
        layer({"x": np.zeros((2, 3), "float32"), "z": np.zeros((2, 1, 2), "float32")})


def test_adaptive_contrast_cannot_tell_a_gaussian_q_from_the_prior():
    """Standardised by their own moments, draws of any diagonal Gaussian equal the standardised
    standard-normal draws they came from, so the optimal T is 0 for a Gaussian q at any sample size."""
    eps = np.random.default_rng(6).standard_normal((3, 4, 2)).astype("float32")
    z = np.array([1.5, -3.0], "float32") + np.array([0.2, 5.0], "float32") * eps
    layer = AdaptiveContrastKL(build_discriminator(3, 2, hidden_units=4))
    np.testing.assert_allclose(layer.contrast(z)[0], layer.prior_contrast(eps), atol=1e-4)

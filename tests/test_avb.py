"""Adversarial Variational Bayes as parts of the composed VAE: the divergences swap and nothing else does,
the implicit posterior, and the adversarial estimator's gradient routing."""

import keras
import numpy as np
import pytest
from keras import ops

from compose import compose_vae
from discriminator import build_discriminator, discriminator_loss
from kl_divergence import (
    ADVERSARIAL_ESTIMATORS,
    AdaptiveContrastKL,
    AdversarialKL,
    ClosedFormKL,
    MonteCarloKL,
)
from training import elbo_terms, fit_vae

SMALL = {"data_dim": 12, "hidden_units": 8, "latent_dim": 3, "hidden_layers": 1, "discriminator_units": 6}
SAMPLES = 4


def data(batch=5, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.random((batch, SMALL["data_dim"])) < 0.5).astype("float32")
    eps = rng.standard_normal((batch, SAMPLES, SMALL["latent_dim"])).astype("float32")
    z_prior = rng.standard_normal(eps.shape).astype("float32")
    return x, eps, z_prior


def test_the_divergence_swaps_and_nothing_else():
    """The four divergences with the same seed: same encoder and decoder weights, one estimator different;
    the adversarial models add the prior's draws as an input and the discriminator's loss."""
    models = {}
    for divergence in ("closed_form", "monte_carlo", *ADVERSARIAL_ESTIMATORS):
        keras.utils.set_random_seed(0)
        models[divergence] = compose_vae(divergence=divergence, **SMALL)
    estimators = {name: type(model.get_layer("log_ratio").estimator) for name, model in models.items()}
    assert estimators == {
        "closed_form": ClosedFormKL,
        "monte_carlo": MonteCarloKL,
        "adversarial": AdversarialKL,
        "adaptive_contrast": AdaptiveContrastKL,
    }
    for part in ("encoder", "decoder"):
        for name in ("monte_carlo", *ADVERSARIAL_ESTIMATORS):
            reference, other = models["closed_form"].get_layer(part), models[name].get_layer(part)
            for a, b in zip(reference.weights, other.weights, strict=True):
                np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
    x, eps, z_prior = data()
    for name, model in models.items():
        adversarial = name in ADVERSARIAL_ESTIMATORS
        parameters, log_ratio = model([x, eps, z_prior] if adversarial else [x, eps])
        assert tuple(parameters.shape) == (5, SAMPLES, SMALL["data_dim"]) and tuple(log_ratio.shape) == (5, SAMPLES)
        assert len(model.losses) == (1 if adversarial else 0)  # the discriminator's logistic loss


def test_the_implicit_posterior_feeds_noise_through_the_network():
    keras.utils.set_random_seed(1)
    vae = compose_vae(posterior="implicit", divergence="adversarial", **SMALL)
    x, eps, z_prior = data()
    z = ops.convert_to_numpy(vae.get_layer("encoder")([x, eps]))
    assert z.shape == eps.shape
    # Not a location-scale family: z is not an affine function of eps.
    residual = z - (z.mean(1, keepdims=True) + (eps - eps.mean(1, keepdims=True)) * z.std(1, keepdims=True))
    assert np.abs(residual).max() > 1e-3
    parameters, _ = vae([x, eps, z_prior])
    assert tuple(parameters.shape) == (5, SAMPLES, SMALL["data_dim"])


@pytest.mark.parametrize("divergence", ADVERSARIAL_ESTIMATORS)
def test_gradients_of_the_adversarial_losses_go_to_their_own_weights(divergence):
    """The model's loss (minus its log ratio plus its added losses) gives the discriminator exactly the
    logistic loss's gradient and the encoder exactly the gradient of the KL estimate."""
    import tensorflow as tf

    keras.utils.set_random_seed(2)
    vae = compose_vae(divergence=divergence, **SMALL)
    estimator = vae.get_layer("log_ratio").estimator
    discriminator, encoder = estimator.discriminator, vae.get_layer("encoder")
    x, eps, z_prior = (ops.convert_to_tensor(a) for a in data())
    d_weights, e_weights = discriminator.trainable_weights, encoder.trainable_weights

    with tf.GradientTape(persistent=True) as tape:
        _, log_ratio = vae([x, eps, z_prior])
        routed = -ops.mean(log_ratio) + ops.sum(ops.stack(vae.losses))
        z_mean, z_log_var = encoder(x)
        z = ops.expand_dims(z_mean, 1) + ops.exp(0.5 * ops.expand_dims(z_log_var, 1)) * eps
        z_seen, _ = estimator.contrast(z)
        t_prior = discriminator([x, estimator.prior_contrast(z_prior)])
        logistic = discriminator_loss(discriminator([x, z_seen]), t_prior)
        kl_estimate = ops.mean(estimator.kl_terms({"x": x, "z": z}))
    np.testing.assert_allclose(float(routed), float(logistic + kl_estimate), rtol=1e-5)
    for got, want in zip(tape.gradient(routed, d_weights), tape.gradient(logistic, d_weights), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    for got, want in zip(tape.gradient(routed, e_weights), tape.gradient(kl_estimate, e_weights), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert any(np.abs(g).max() > 1e-4 for g in tape.gradient(routed, e_weights))


@pytest.mark.slow
@pytest.mark.parametrize(
    "posterior, divergence",
    [("gaussian", "closed_form"), ("gaussian", "adversarial"), ("implicit", "adversarial"),
     ("gaussian", "adaptive_contrast"), ("implicit", "adaptive_contrast")],
)  # fmt: skip
def test_every_divergence_trains_the_same_model(posterior, divergence, tmp_path):
    """A few epochs on four binary prototypes: the model learns to reconstruct them (distortion below half
    of the 12 log 2 nats of a decoder that ignores z), its terms are finite, and it reloads to the same terms."""
    rng = np.random.default_rng(3)
    prototypes = (rng.random((4, 12)) < 0.5).astype("float32")
    x_train = prototypes[rng.integers(0, 4, 2000)]
    keras.utils.set_random_seed(3)
    vae = compose_vae(12, 2, posterior, divergence, hidden_units=16, discriminator_units=16)
    history = fit_vae(vae, x_train, epochs=6, mc_samples=2, learning_rate=1e-2, seed=3, verbose=0)
    terms = elbo_terms(vae, prototypes, mc_samples=20)
    assert set(terms) == {"distortion", "rate"} | ({"rate_exact"} if posterior == "gaussian" else set())
    assert all(np.all(np.isfinite(v)) for v in terms.values())
    assert terms["distortion"].mean() < 0.5 * 12 * np.log(2), (divergence, posterior, history["loss"])
    vae.save(tmp_path / "vae.keras")
    again = elbo_terms(keras.saving.load_model(tmp_path / "vae.keras", safe_mode=True), prototypes, mc_samples=20)
    for name, values in terms.items():
        np.testing.assert_allclose(again[name], values, rtol=1e-5, atol=1e-5)


def test_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match="only a discriminator can estimate"):
        compose_vae(4, posterior="implicit", divergence="monte_carlo")
    layer = AdversarialKL(build_discriminator(3, 2, hidden_units=4))
    with pytest.raises(ValueError, match="Expected `z_prior` of the shape of `z`"):
        layer({"x": np.zeros((2, 3), "float32"), "z": np.zeros((2, 4, 2), "float32"),
               "z_prior": np.zeros((2, 4, 3), "float32")})  # fmt: skip
    with pytest.raises(ValueError, match="needs `mc_samples` >= 2"):
        AdaptiveContrastKL(build_discriminator(3, 2, hidden_units=4)).build(
            {"x": (None, 3), "z": (None, 1, 2), "z_prior": (None, 1, 2)}
        )

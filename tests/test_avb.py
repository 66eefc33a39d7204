"""One builder for every KL estimator, and the adversarial estimator's gradient routing."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from avb import build_kl_vae, evaluate_kl_vae, kl_vae_batches, train_kl_vae
from kl_divergence import (
    ADVERSARIAL_ESTIMATORS,
    AdaptiveContrastKL,
    AdversarialKL,
    ClosedFormKL,
    MonteCarloKL,
    build_discriminator,
    discriminator_loss,
)
from variational_autoencoder import build_vae

SMALL = {"original_dim": 12, "intermediate_dim": 8, "latent_dim": 3, "mc_samples": 4, "hidden_layers": 1}
CHOICES = [("closed_form", "gaussian"), ("monte_carlo", "gaussian"), ("adversarial", "gaussian")]


def data(batch=5, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.random((batch, SMALL["original_dim"])) < 0.5).astype("float32")
    eps = rng.standard_normal((batch, SMALL["mc_samples"], SMALL["latent_dim"])).astype("float32")
    z_prior = rng.standard_normal(eps.shape).astype("float32")
    return x, eps, z_prior


def test_one_builder_swaps_the_estimator_and_nothing_else():
    """The three estimators from the same builder: same layers and weights, one KL layer different."""
    models = {}
    for estimator, posterior in [*CHOICES, ("adaptive_contrast", "gaussian")]:
        keras.utils.set_random_seed(0)
        models[estimator], _, _ = build_kl_vae(estimator, posterior, discriminator_units=6, **SMALL)
    kl_types = {name: type(model.get_layer("kl_divergence")) for name, model in models.items()}
    assert kl_types == {
        "closed_form": ClosedFormKL,
        "monte_carlo": MonteCarloKL,
        "adversarial": AdversarialKL,
        "adaptive_contrast": AdaptiveContrastKL,
    }
    layer_names = {name: [layer.name for layer in model.layers] for name, model in models.items()}
    assert layer_names["closed_form"] == layer_names["monte_carlo"]
    for name in ADVERSARIAL_ESTIMATORS:
        assert [n for n in layer_names[name] if n != "z_prior"] == layer_names["closed_form"]
    # Same encoder and decoder weights for the same seed; the adversarial models add only T's.
    for part in ("encoder", "decoder"):
        for name in ("monte_carlo", *ADVERSARIAL_ESTIMATORS):
            reference, other = models["closed_form"].get_layer(part), models[name].get_layer(part)
            for a, b in zip(reference.weights, other.weights, strict=True):
                np.testing.assert_array_equal(a.numpy(), b.numpy())
    x, eps, z_prior = data()
    for name, model in models.items():
        inputs = [x, eps, z_prior] if name in ADVERSARIAL_ESTIMATORS else [x, eps]
        assert model(inputs).shape == (5, SMALL["mc_samples"], SMALL["original_dim"])
        assert len(model.losses) == (2 if name in ADVERSARIAL_ESTIMATORS else 1)
    # And the closed-form model is the main post's model: same weights, same outputs, same KL.
    keras.utils.set_random_seed(0)
    main_post, _, _ = build_vae(**SMALL)
    main_post.set_weights(models["closed_form"].get_weights())
    np.testing.assert_allclose(main_post([x, eps]), models["closed_form"]([x, eps]), rtol=1e-6)
    np.testing.assert_allclose(float(main_post.losses[0]), float(models["closed_form"].losses[0]), rtol=1e-6)


def test_the_implicit_posterior_feeds_noise_through_the_network():
    keras.utils.set_random_seed(1)
    vae, encoder, _ = build_kl_vae("adversarial", "implicit", discriminator_units=6, **SMALL)
    x, eps, z_prior = data()
    z = ops.convert_to_numpy(encoder([x, eps]))
    assert z.shape == eps.shape
    # Not a location-scale family: z is not an affine function of eps.
    residual = z - (z.mean(1, keepdims=True) + (eps - eps.mean(1, keepdims=True)) * z.std(1, keepdims=True))
    assert np.abs(residual).max() > 1e-3
    assert vae([x, eps, z_prior]).shape == (5, SMALL["mc_samples"], SMALL["original_dim"])


@pytest.mark.parametrize("estimator", ["adversarial", "adaptive_contrast"])
def test_gradients_of_the_adversarial_losses_go_to_their_own_weights(estimator):
    """The model's summed losses give the discriminator exactly the logistic loss's gradient and the
    encoder exactly the gradient of the KL estimate (plus nothing from the logistic loss)."""
    keras.utils.set_random_seed(2)
    vae, encoder, _ = build_kl_vae(estimator, "gaussian", discriminator_units=6, **SMALL)
    kl_layer = vae.get_layer("kl_divergence")
    discriminator = vae.get_layer("kl_divergence").discriminator
    x, eps, z_prior = (ops.convert_to_tensor(a) for a in data())
    d_weights, e_weights = discriminator.trainable_weights, encoder.trainable_weights

    with tf.GradientTape(persistent=True) as tape:
        vae([x, eps, z_prior])
        routed = ops.sum(ops.stack(vae.losses))
        z_mean, z_log_var = encoder(x)
        z = ops.expand_dims(z_mean, 1) + ops.exp(0.5 * ops.expand_dims(z_log_var, 1)) * eps
        z_seen, _ = kl_layer.contrast(z)
        t_prior = discriminator([x, kl_layer.prior_contrast(z_prior)])
        logistic = discriminator_loss(discriminator([x, z_seen]), t_prior)
        kl_estimate = ops.mean(kl_layer.kl_terms({"x": x, "z": z}))
    np.testing.assert_allclose(float(routed), float(logistic + kl_estimate), rtol=1e-5)
    for got, want in zip(tape.gradient(routed, d_weights), tape.gradient(logistic, d_weights), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    for got, want in zip(tape.gradient(routed, e_weights), tape.gradient(kl_estimate, e_weights), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert any(np.abs(g).max() > 1e-4 for g in tape.gradient(routed, e_weights))


@pytest.mark.slow
def test_every_estimator_trains_the_same_model(tmp_path):
    """A few epochs on four binary prototypes: every estimator's model learns to reconstruct them
    (distortion below half of the 12 log 2 nats of an untrained decoder), and reloads."""
    rng = np.random.default_rng(3)
    prototypes = (rng.random((4, 12)) < 0.5).astype("float32")
    x_train = prototypes[rng.integers(0, 4, 2000)]
    settings = {"num_epochs": 6, "batch_size": 100, "latent_dim": 2, "intermediate_dim": 16, "discriminator_units": 16}
    settings["learning_rate"] = 1e-2
    choices = [
        *CHOICES,
        ("adversarial", "implicit"),
        ("adaptive_contrast", "gaussian"),
        ("adaptive_contrast", "implicit"),
    ]
    for estimator, posterior in choices:
        vae, _, _, history = train_kl_vae(
            x_train, verbose=0, estimator=estimator, posterior=posterior, mc_samples=2, **settings
        )
        terms = evaluate_kl_vae(vae, prototypes, mc_samples=20)
        assert all(np.all(np.isfinite(v)) for v in terms.values())
        assert terms["distortion"].mean() < 0.5 * 12 * np.log(2), (estimator, posterior, history["loss"])
        path = tmp_path / f"{estimator}_{posterior}.keras"
        vae.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        again = evaluate_kl_vae(loaded, prototypes, mc_samples=20)
        for name, values in terms.items():
            np.testing.assert_allclose(again[name], values, rtol=1e-5, atol=1e-5)


def test_batches_carry_prior_draws_only_for_the_adversarial_estimator():
    x = np.random.default_rng(4).random((10, 6)).astype("float32")
    (inputs, _) = next(iter(kl_vae_batches(x, 5, 3, 2, adversarial=False, seed=0)))
    assert len(inputs) == 2
    (inputs, _) = next(iter(kl_vae_batches(x, 5, 3, 2, adversarial=True, seed=0)))
    x_batch, eps, z_prior = (np.asarray(t) for t in inputs)
    assert eps.shape == z_prior.shape == (5, 3, 2)
    assert not np.allclose(eps, z_prior)


def test_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match=r"Expected an estimator in .*Received: 'kde'"):
        build_kl_vae("kde")
    with pytest.raises(ValueError, match=r"Expected a posterior in .*Received: 'flow'"):
        build_kl_vae("closed_form", "flow")
    with pytest.raises(ValueError, match="only the adversarial estimator"):
        build_kl_vae("monte_carlo", "implicit")
    with pytest.raises(ValueError, match="Expected `mc_samples` to be a positive integer"):
        build_kl_vae("closed_form", mc_samples=0)
    with pytest.raises(ValueError, match="needs `mc_samples` >= 2"):
        build_kl_vae("adaptive_contrast", mc_samples=1)
    with pytest.raises(ValueError, match=r"Unknown settings \['epochs'\]"):
        train_kl_vae(np.zeros((4, 3), "float32"), epochs=3)
    layer = AdversarialKL(build_discriminator(3, 2, hidden_units=4))
    with pytest.raises(ValueError, match="Expected `z_prior` of the shape of `z`"):
        layer({"x": np.zeros((2, 3), "float32"), "z": np.zeros((2, 4, 2), "float32"),
               "z_prior": np.zeros((2, 4, 3), "float32")})  # fmt: skip
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="Expected a model built by `build_kl_vae`"):
        evaluate_kl_vae(other, np.zeros((2, 3), "float32"))

"""Model basics: save/load, the classic's Lambda, training lowers the loss, bad input."""

import keras
import numpy as np
import pytest
from keras import ops

import variational_autoencoder_classic as classic
from train import binarize_once
from variational_autoencoder import (
    BernoulliNegativeLogLikelihood,
    KLDivergenceLayer,
    MonteCarloBatches,
    build_vae,
)


def test_vae_save_load_safe_mode_gives_identical_outputs(tmp_path):
    vae, _, _ = build_vae(original_dim=6, intermediate_dim=7, latent_dim=5, mc_samples=4)
    vae.compile(optimizer="adam", loss=BernoulliNegativeLogLikelihood())
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(3, 6)).astype("float32")
    eps = rng.standard_normal((3, 4, 5), dtype="float32")
    vae.save(tmp_path / "vae.keras")
    reloaded = keras.saving.load_model(tmp_path / "vae.keras", safe_mode=True)  # no custom_objects
    np.testing.assert_array_equal(vae.predict([x, eps], verbose=0), reloaded.predict([x, eps], verbose=0))
    assert isinstance(reloaded.get_layer("kl_divergence"), KLDivergenceLayer)
    assert isinstance(reloaded.loss, BernoulliNegativeLogLikelihood)
    np.testing.assert_allclose(
        vae.evaluate([x, eps], x, verbose=0), reloaded.evaluate([x, eps], x, verbose=0), rtol=1e-6
    )


def test_our_vae_has_no_lambda_layer():
    vae, _, _ = build_vae()

    def all_layers(model):
        for layer in model.layers:
            yield layer
            if isinstance(layer, keras.Model):
                yield from all_layers(layer)

    names = {type(layer).__name__ for layer in all_layers(vae)}
    assert "Lambda" not in names
    assert {"Dense", "Multiply", "Add", "Sequential", "KLDivergenceLayer"} <= names


def test_kl_layer_config_round_trip():
    layer = KLDivergenceLayer(name="kl")
    clone = KLDivergenceLayer.from_config(layer.get_config())
    assert clone.name == "kl" and clone.get_config() == layer.get_config()


def test_classic_lambda_does_not_survive_safe_mode_load(tmp_path):
    vae, _, _ = classic.build_classic_vae()
    vae.save(tmp_path / "classic.keras")
    # Even with its (unregistered) loss layer supplied, the Lambda's function
    # is not in the file and cannot be located.
    with pytest.raises(TypeError, match="Could not locate function 'sampling'"):
        keras.saving.load_model(
            tmp_path / "classic.keras",
            safe_mode=True,
            custom_objects={"CustomVariationalLayer": classic.CustomVariationalLayer},
        )


def test_anonymous_lambda_is_refused_by_safe_mode(tmp_path):
    z_log_var = keras.Input(shape=(2,))
    model = keras.Model(z_log_var, keras.layers.Lambda(lambda t: ops.exp(t / 2))(z_log_var))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="safe_mode"):
        keras.saving.load_model(tmp_path / "lambda.keras", safe_mode=True)


def test_our_vae_lowers_its_loss_in_one_epoch(mnist_subset):
    (x_train, _), _ = mnist_subset
    keras.utils.set_random_seed(0)
    vae, _, _ = build_vae(mc_samples=2)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3), loss=BernoulliNegativeLogLikelihood())
    x_fixed = binarize_once(x_train, seed=1)

    def fixed_loss():
        return vae.evaluate(MonteCarloBatches(x_fixed, 100, 2, 2, binarize=False, shuffle=False, seed=2), verbose=0)

    before = fixed_loss()
    vae.fit(MonteCarloBatches(x_train, 100, 2, 2, seed=3), epochs=1, verbose=0)
    after = fixed_loss()
    assert after < before - 50, (before, after)  # about 543 -> 300 nats


def test_classic_lowers_its_loss_in_one_epoch(mnist_subset):
    (x_train, _), _ = mnist_subset
    keras.utils.set_random_seed(0)
    vae, _, _ = classic.build_classic_vae()
    before = vae.evaluate(x_train, batch_size=100, verbose=0)
    vae.fit(x_train, epochs=1, batch_size=100, shuffle=True, verbose=0)
    after = vae.evaluate(x_train, batch_size=100, verbose=0)
    assert after < before - 50, (before, after)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mc_samples": 0}, r"`mc_samples` to be a positive integer. Received: mc_samples=0"),
        ({"mc_samples": 2.5}, r"mc_samples=2.5"),
        ({"latent_dim": 0}, r"`latent_dim` to be a positive integer. Received: latent_dim=0"),
        ({"intermediate_dim": -3}, r"intermediate_dim=-3"),
    ],
    ids=["mc-samples-0", "mc-samples-float", "latent-dim-0", "hidden-negative"],
)
def test_build_vae_rejects_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_vae(**kwargs)


def test_kl_layer_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        KLDivergenceLayer()([np.zeros((3, 2), "float32"), np.zeros((3, 5), "float32")])


def test_nll_rejects_mismatched_data_dimension():
    with pytest.raises(ValueError, match="same last dimension"):
        BernoulliNegativeLogLikelihood()(np.zeros((3, 784), "float32"), np.zeros((3, 1, 10), "float32"))


@pytest.mark.parametrize(
    "x, kwargs, match",
    [
        (np.zeros((4, 28, 28), "float32"), {}, r"shape \(count, dim\)"),
        (np.zeros((4, 784), "uint8"), {}, "dtype=uint8"),
        (np.full((4, 784), 255.0, "float32"), {}, r"values in \[0, 1\]"),
        (np.zeros((4, 784), "float32"), {"mc_samples": 0}, "mc_samples=0"),
        (np.zeros((4, 784), "float32"), {"batch_size": 0}, "batch_size=0"),
    ],
    ids=["images-not-flat", "uint8", "not-scaled", "mc-samples-0", "batch-size-0"],
)
def test_monte_carlo_batches_reject_bad_data(x, kwargs, match):
    settings = {"batch_size": 2, "mc_samples": 3, "latent_dim": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        MonteCarloBatches(x, **settings)


def test_monte_carlo_batches_shapes_and_binarisation():
    x = np.random.default_rng(0).uniform(size=(7, 6)).astype("float32")
    batches = MonteCarloBatches(x, batch_size=3, mc_samples=4, latent_dim=5, seed=0)
    assert len(batches) == 3
    (x_batch, eps), target = batches[2]
    assert x_batch.shape == (1, 6) and eps.shape == (1, 4, 5)
    assert target is x_batch and set(np.unique(x_batch)) <= {0.0, 1.0}
    # Each pixel is 1 with probability equal to its intensity: 4,000 draws of
    # the first batch average to the intensities within 5 standard errors.
    draws = np.stack([batches[0][0][0] for _ in range(4000)])
    intensities = x[batches.order[:3]]
    tolerance = 5 * np.sqrt(intensities * (1 - intensities) / len(draws)) + 1e-6
    np.testing.assert_array_less(np.abs(draws.mean(axis=0) - intensities), tolerance)

"""The convolutional networks: the dense networks' shapes, the samples folded into the batch and back (checked
against a loop over the samples), the parameters laid out as the likelihoods read them, reloading in safe mode,
and bad sizes refused in one line. Runs under every backend (tests/test_backends.py)."""

import keras
import numpy as np
import pytest

from convolutional import (
    FoldSamples,
    UnfoldSamples,
    build_conv_decoder,
    build_conv_encoder,
    check_image_parts,
)
from compose import NegativeObjective, compose_vae
from skeleton import build_decoder
from variational_autoencoder import build_encoder


def images(count, seed=0):
    return np.random.default_rng(seed).random((count, 784), dtype="float32")


def test_the_conv_networks_have_the_dense_networks_shapes(latent_dim=3):
    x = images(3)
    dense, conv = build_encoder(784, 32, latent_dim), build_conv_encoder(latent_dim)
    for a, b in zip(dense(x), conv(x), strict=True):
        assert a.shape == b.shape == (3, latent_dim)
    for likelihood, heteroscedastic in (("bernoulli", False), ("gaussian", False), ("gaussian", True)):
        dense = build_decoder(likelihood, 784, 32, latent_dim, heteroscedastic=heteroscedastic)
        conv = build_conv_decoder(likelihood, latent_dim, heteroscedastic=heteroscedastic)
        for samples in (1, 4):  # S is data: one model, any number of samples
            z = np.random.default_rng(samples).normal(size=(3, samples, latent_dim)).astype("float32")
            assert dense(z).shape == conv(z).shape, (likelihood, heteroscedastic, samples)


def test_folding_the_samples_decodes_each_sample_as_its_own_example():
    """The decoder of (batch, S, latent_dim) equals the decoder of each sample alone, S = 1 at a time."""
    decoder = build_conv_decoder("bernoulli", latent_dim=3)
    z = np.random.default_rng(1).normal(size=(2, 5, 3)).astype("float32")
    together = keras.ops.convert_to_numpy(decoder(z))
    one_at_a_time = np.stack([keras.ops.convert_to_numpy(decoder(z[:, s : s + 1]))[:, 0] for s in range(5)], axis=1)
    np.testing.assert_allclose(together, one_at_a_time, rtol=1e-5, atol=1e-5)
    fold, unfold = FoldSamples(), UnfoldSamples()
    folded = keras.ops.convert_to_numpy(fold(z))
    np.testing.assert_array_equal(folded, z.reshape(10, 3))  # sample s of example b is row b * S + s
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(unfold([folded, z])), z)


def test_a_heteroscedastic_decoder_lays_out_all_means_then_all_log_scales():
    """The likelihood splits the last axis in halves (means, log scales): the first half is the last
    convolution's channel 0 at every pixel in row-major order, the second half its channel 1."""
    decoder = build_conv_decoder("gaussian", latent_dim=2, heteroscedastic=True)
    z = np.random.default_rng(2).normal(size=(2, 1, 2)).astype("float32")
    pixels = keras.Model(decoder.inputs[0], decoder.get_layer("pixel_parameters").output)(z)  # (2, 28, 28, 2)
    pixels = keras.ops.convert_to_numpy(pixels)
    parameters = keras.ops.convert_to_numpy(decoder(z))[:, 0]  # (2, 1568)
    np.testing.assert_array_equal(parameters[:, :784], pixels[..., 0].reshape(2, 784))
    np.testing.assert_array_equal(parameters[:, 784:], pixels[..., 1].reshape(2, 784))


def test_the_conv_networks_reload_in_safe_mode_with_the_same_outputs(tmp_path):
    x, z = images(4), np.random.default_rng(3).normal(size=(4, 2, 2)).astype("float32")
    for network, inputs in ((build_conv_encoder(2), x), (build_conv_decoder("continuous_bernoulli", 2), z)):
        path = tmp_path / f"{network.name}.keras"
        network.save(path)
        reloaded = keras.saving.load_model(path, safe_mode=True)
        for a, b in zip(keras.tree.flatten(network(inputs)), keras.tree.flatten(reloaded(inputs)), strict=True):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


@pytest.mark.parametrize(
    "data_dim, likelihood, image_shape, message",
    [
        (100, "bernoulli", (28, 28, 1), "data_dim=784. Received: data_dim=100"),
        (1, "categorical", (28, 28, 1), "data_dim=784. Received: data_dim=1"),
        (784, "categorical", (28, 28, 1), "likelihood in .* Received: likelihood='categorical'"),
        (30 * 30, "bernoulli", (30, 30, 1), "divisible by 4. Received: image_shape=\\(30, 30, 1\\)"),
    ],
    ids=["not-an-image", "a-label", "categorical-pixels", "odd-size"],
)
def test_sizes_a_conv_network_cannot_take_are_refused(data_dim, likelihood, image_shape, message):
    with pytest.raises(ValueError, match=message):
        check_image_parts(data_dim, likelihood, image_shape)


# ---------------------------------------------------------------------------
# The conv networks as parts of the composed VAE
# ---------------------------------------------------------------------------

CONV_PARTS = [  # (encoder, decoder, posterior, likelihood): each network and posterior at least once
    ("conv", "conv", "gaussian", "bernoulli"),
    ("conv", "mlp", "iaf", "continuous_bernoulli"),
    ("mlp", "conv", "planar", "gaussian"),
]


def composed(encoder, decoder, posterior, likelihood, objective="elbo"):
    divergence = "closed_form" if posterior == "gaussian" and objective == "elbo" else "monte_carlo"
    return compose_vae(784, 2, posterior, divergence, likelihood, objective, hidden_units=8, flow_hidden_units=4,
                       encoder=encoder, decoder=decoder)  # fmt: skip


@pytest.mark.parametrize("parts", CONV_PARTS, ids="-".join)
def test_conv_parts_go_through_the_skeleton_like_the_dense_ones_and_reload(parts, tmp_path):
    """The same outputs' shapes as the all-dense model for any S, and a safe-mode reload to identical outputs."""
    rng = np.random.default_rng(4)
    vae, dense = composed(*parts), composed("mlp", "mlp", *parts[2:])
    x = images(3)
    for samples in (1, 3):
        inputs = [x, rng.standard_normal((3, samples, 2)).astype("float32")]
        ours, theirs = vae(inputs), dense(inputs)
        assert [tuple(t.shape) for t in ours] == [tuple(t.shape) for t in theirs], samples
    path = tmp_path / "vae.keras"
    vae.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    for a, b in zip(vae(inputs), reloaded(inputs), strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_a_short_run_of_the_conv_vae_lowers_its_loss_on_mnist(objective, mnist_subset):
    """A few epochs on 256 images of the committed MNIST subset lower the negative bound on them, with the
    noise held fixed (the same images and draws before and after)."""
    (x_train, _), _ = mnist_subset
    x = (x_train[:256] > 0.5).astype("float32")
    eps = np.random.default_rng(5).standard_normal((256, 2, 2)).astype("float32")
    keras.utils.set_random_seed(0)
    vae = composed("conv", "conv", "gaussian", "bernoulli", objective)
    vae.compile(optimizer=keras.optimizers.Adam(3e-3), loss=NegativeObjective(objective, "bernoulli"))
    before = vae.evaluate([x, eps], x, batch_size=64, verbose=0)
    vae.fit([x, eps], x, batch_size=32, epochs=3, verbose=0)
    after = vae.evaluate([x, eps], x, batch_size=64, verbose=0)
    assert np.isfinite(after) and after < before - 50, (before, after)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"encoder": "cnn"}, "Expected `encoder` to be one of \\('mlp', 'conv'\\). Received: encoder='cnn'"),
        ({"decoder": "deconv"}, "Expected `decoder` to be one of .* Received: decoder='deconv'"),
        ({"encoder": "conv", "posterior": "implicit", "divergence": "adversarial"}, "posterior='implicit'"),
        ({"encoder": "conv", "posterior": "global", "num_examples": 10}, "posterior='global'"),
        ({"decoder": "conv", "data_dim": 100}, "data_dim=784. Received: data_dim=100"),
        ({"encoder": "conv", "data_dim": 100}, "data_dim=784. Received: data_dim=100"),
        ({"decoder": "conv", "data_dim": 1, "likelihood": "categorical", "num_classes": 3}, "data_dim=784"),
    ],
    ids=["unknown-encoder", "unknown-decoder", "implicit", "global", "decoder-not-an-image", "encoder-not-an-image",
         "categorical"],  # fmt: skip
)
def test_conv_parts_that_do_not_fit_are_refused(kwargs, message):
    kwargs = {"data_dim": 784, **kwargs}
    with pytest.raises(ValueError, match=message):
        compose_vae(latent_dim=2, hidden_units=8, **kwargs)

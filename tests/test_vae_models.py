"""Model basics: save/load, the classic's Lambda, training lowers the loss, bad input."""

import keras
import numpy as np
import pytest
from keras import ops

import train
import variational_autoencoder_classic as classic
from mnist_data import binarize_once
from train import monte_carlo_batches, random_streams
from variational_autoencoder import (
    BernoulliNegativeLogLikelihood,
    KLDivergenceLayer,
    build_vae,
)


def test_vae_save_load_safe_mode_gives_identical_outputs(tmp_path):
    vae, _, _ = build_vae(original_dim=6, intermediate_dim=7, latent_dim=5)
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
    vae, _, _ = build_vae()
    vae.compile(optimizer=keras.optimizers.Adam(1e-3), loss=BernoulliNegativeLogLikelihood())
    x_fixed = binarize_once(x_train, seed=1)

    def fixed_loss():
        return vae.evaluate(monte_carlo_batches(x_fixed, 100, 2, 2, binarize=False, shuffle=False, seed=2), verbose=0)

    before = fixed_loss()
    vae.fit(monte_carlo_batches(x_train, 100, 2, 2, seed=3), epochs=1, shuffle=False, verbose=0)
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
        ({"hidden_layers": 0}, r"`hidden_layers` to be a positive integer. Received: hidden_layers=0"),
        ({"original_dim": 2.5}, r"original_dim=2.5"),
        ({"latent_dim": 0}, r"`latent_dim` to be a positive integer. Received: latent_dim=0"),
        ({"intermediate_dim": -3}, r"intermediate_dim=-3"),
    ],
    ids=["hidden-layers-0", "original-dim-float", "latent-dim-0", "hidden-negative"],
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
        (np.zeros((4, 784), "float32"), {"seed": 1.5}, r"`seed` to be an integer, a tf.random.Generator or None"),
    ],
    ids=["images-not-flat", "uint8", "not-scaled", "mc-samples-0", "batch-size-0", "seed-float"],
)
def test_monte_carlo_batches_reject_bad_data(x, kwargs, match):
    settings = {"batch_size": 2, "mc_samples": 3, "latent_dim": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        monte_carlo_batches(x, **settings)


def one_epoch(dataset):
    """The images, eps and targets of one pass over ``dataset``, as NumPy arrays."""
    batches = [(x.numpy(), eps.numpy(), target.numpy()) for (x, eps), target in dataset]
    return [np.concatenate(parts) for parts in zip(*batches, strict=True)], [len(b[0]) for b in batches]


def test_monte_carlo_batches_shapes_order_and_determinism():
    x = np.linspace(0.0, 1.0, 7 * 6, dtype="float32").reshape(7, 6)
    (images, eps, targets), sizes = one_epoch(monte_carlo_batches(x, 3, 4, 5, binarize=False, seed=0))
    assert sizes == [3, 3, 1] and eps.shape == (7, 4, 5)
    np.testing.assert_array_equal(images, targets)
    # Every example exactly once per epoch, in a new order each epoch.
    order = np.argsort(images[:, 0])
    np.testing.assert_array_equal(images[order], x)
    dataset = monte_carlo_batches(x, 3, 4, 5, binarize=False, seed=0)
    first, second = one_epoch(dataset)[0][0], one_epoch(dataset)[0][0]
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(np.sort(first, axis=0), np.sort(second, axis=0))
    # The same seed gives the same stream; shuffle=False keeps the order.
    np.testing.assert_array_equal(first, one_epoch(monte_carlo_batches(x, 3, 4, 5, binarize=False, seed=0))[0][0])
    in_order = one_epoch(monte_carlo_batches(x, 3, 4, 5, binarize=False, shuffle=False, seed=0))[0][0]
    np.testing.assert_array_equal(in_order, x)


def test_monte_carlo_batches_draw_bernoulli_pixels_and_standard_normal_eps():
    intensities = np.random.default_rng(0).uniform(size=(1, 8)).astype("float32")
    x = np.repeat(intensities, 20_000, axis=0)
    dataset = monte_carlo_batches(x, batch_size=1000, mc_samples=3, latent_dim=2, shuffle=False, seed=0)
    (images, eps, targets), _ = one_epoch(dataset)
    assert set(np.unique(images)) == {0.0, 1.0}
    np.testing.assert_array_equal(images, targets)
    # Each pixel is 1 with probability equal to its intensity: 20,000 draws
    # average to the intensities within 5 standard errors.
    tolerance = 5 * np.sqrt(intensities * (1 - intensities) / len(images))
    np.testing.assert_array_less(np.abs(images.mean(axis=0) - intensities[0]), tolerance[0])
    # ... and afresh every epoch (dynamic binarisation).
    assert not np.array_equal(images, one_epoch(dataset)[0][0])
    # eps ~ N(0, I): 120,000 draws have mean 0 and variance 1 within 5 standard errors.
    assert abs(eps.mean()) < 5 / np.sqrt(eps.size)
    assert abs(eps.var() - 1.0) < 5 * np.sqrt(2 / eps.size)


def test_monte_carlo_batches_take_a_generator_and_an_int_seed_is_that_seeds_generator():
    import tensorflow as tf

    x = np.linspace(0.0, 1.0, 7 * 6, dtype="float32").reshape(7, 6)
    from_int = one_epoch(monte_carlo_batches(x, 3, 4, 5, seed=3))[0]
    from_generator = one_epoch(monte_carlo_batches(x, 3, 4, 5, seed=tf.random.Generator.from_seed(3)))[0]
    for a, b in zip(from_int, from_generator, strict=True):
        np.testing.assert_array_equal(a, b)


def raw_draws(stream, count=2000):
    """The first ``count`` 64-bit words of a TensorFlow generator or a NumPy seed, as unsigned integers."""
    import tensorflow as tf

    if isinstance(stream, tf.random.Generator):
        return stream.uniform_full_int((count,), dtype="int64").numpy().view("uint64")
    return np.random.default_rng(stream).bit_generator.random_raw(count)


def test_the_streams_of_a_training_run_do_not_overlap():
    """Each stream's first 2000 64-bit words share none with another's (TensorFlow's from_seed(seed) and
    from_seed(seed + 1) share all but one block: the same stream shifted), for more than one seed."""
    for seed in (0, 1):
        streams = random_streams(seed)
        assert set(streams) == {"train_batches", "test_batches", "test_binarization", "train_binarization",
                                "evaluation"}  # fmt: skip
        draws = {name: raw_draws(stream) for name, stream in streams.items()}
        for name, values in draws.items():
            assert len(np.unique(values)) == len(values), name
            for other, other_values in draws.items():
                if other < name:
                    assert not np.intersect1d(values, other_values).size, (name, other)
    # The same seed, the same streams.
    np.testing.assert_array_equal(
        raw_draws(random_streams(0)["test_batches"]), raw_draws(random_streams(0)["test_batches"])
    )


def test_train_vae_draws_from_its_streams(mnist_subset, monkeypatch):
    """The batches and the test set's binarisation come from `random_streams(seed)`, so the final estimates
    (scripts/train_main_post.py) can binarise the test set as training saw it."""
    import tensorflow as tf

    (x_train, _), (x_test, _) = mnist_subset
    calls = []

    def recording_batches(x, *args, seed=None, **kwargs):
        assert isinstance(seed, tf.random.Generator)
        calls.append((x.copy(), seed.state.numpy().copy()))
        return monte_carlo_batches(x, *args, seed=seed, **kwargs)

    monkeypatch.setattr(train, "monte_carlo_batches", recording_batches)
    train.train_vae(x_train[:20], x_test[:10], num_epochs=1, batch_size=10, intermediate_dim=4, seed=5,
                    jit_compile=False, steps_per_execution=1, verbose=0)  # fmt: skip
    streams = random_streams(5)
    (train_x, train_state), (test_x, test_state) = calls
    np.testing.assert_array_equal(train_x, x_train[:20])  # binarised afresh in the pipeline
    np.testing.assert_array_equal(test_x, binarize_once(x_test[:10], streams["test_binarization"]))
    np.testing.assert_array_equal(train_state, streams["train_batches"].state.numpy())
    np.testing.assert_array_equal(test_state, streams["test_batches"].state.numpy())

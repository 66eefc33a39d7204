"""scripts/conv_experiments.py: a quick run on the committed MNIST and Fashion-MNIST subsets writes both records,
whose paired differences are those of the per-image estimates saved beside them, whose saved models score the
same again, and whose data pipelines feed each likelihood its own kind of pixels."""

import json

import numpy as np
import pytest

import conv_experiments
from conftest import MNIST_SUBSET_DIR, committed_part, full_mnist, run_python

SUBSETS = {"MNIST_DIR": str(MNIST_SUBSET_DIR), "FASHION_MNIST_DIR": str(MNIST_SUBSET_DIR.with_name("fashion-mnist"))}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("conv")
    result = run_python(["scripts/conv_experiments.py", "--quick", "--output-dir", output_dir], env=SUBSETS)
    assert result.returncode == 0, result.stderr[-2000:]
    return output_dir


@pytest.mark.slow
@pytest.mark.parametrize("part", conv_experiments.DATA_SETS)
def test_a_quick_run_records_both_networks_and_their_paired_difference(part, quick_run):
    settings = conv_experiments.QUICK[part]
    record = json.loads((quick_run / f"{part}.json").read_text())
    results = record["results"]
    with np.load(quick_run / part / "log_px.npz") as arrays:
        log_px = dict(arrays)
    for network in conv_experiments.NETWORKS:
        row = results[network]
        assert len(log_px[network]) == results["num_test"] == settings["num_test"]
        assert row["test_nll"] == pytest.approx(-log_px[network].mean(), rel=1e-9)
        assert len(row["kl_per_dimension"]) == settings["latent_dim"] and min(row["kl_per_dimension"]) >= 0
        assert 0 <= row["active_units"] <= settings["latent_dim"]
        assert row["bias"]["num_samples"] == settings["bias"]["num_samples"]
        assert (quick_run / part / f"{network}.keras").is_file()
    difference = -(log_px["conv"] - log_px["mlp"])
    paired = results["paired_with_mlp"]["conv"]
    assert paired["difference"] == pytest.approx(difference.mean(), rel=1e-9)
    assert paired["stderr"] == pytest.approx(difference.std(ddof=1) / np.sqrt(len(difference)), rel=1e-9)
    with np.load(quick_run / f"{part}_images.npz") as arrays:
        images = dict(arrays)
    assert images["conv/reconstruction"].shape == images["data"].shape == (settings["num_images"], 784)
    again = run_python(["scripts/conv_experiments.py", "--quick", "--if-stale", "--output-dir", quick_run],
                       env=SUBSETS)  # fmt: skip
    assert again.returncode == 0 and "nothing to run" in again.stdout


@pytest.mark.parametrize("part", conv_experiments.DATA_SETS)
def test_each_likelihood_gets_its_own_kind_of_pixels(part, monkeypatch):
    """Bernoulli: binary test images and intensities for `fit_vae` to binarise; continuous Bernoulli: grey
    levels strictly inside (0, 1), the test images dequantised once (no two pixels of a level alike)."""
    for variable, folder in SUBSETS.items():
        monkeypatch.setenv(variable, folder)
    settings = conv_experiments.QUICK[part]
    x_train, x_test, pixels = conv_experiments.load_pixels(settings)
    assert x_train.shape == (settings["num_train"], 784) and x_test.shape == (settings["num_test"], 784)
    if settings["likelihood"] == "bernoulli":
        assert pixels == {"binarize": True} and set(np.unique(x_test)) <= {0.0, 1.0}
        assert len(np.unique(x_train)) > 2 and x_train.max() == 1.0  # intensities, binarised by fit_vae
    else:
        assert pixels == {"dequantize": True}
        assert 0 < x_test.min() and x_test.max() < 1 and len(np.unique(x_test)) > 256
        assert np.allclose(x_train * 256, np.round(x_train * 256)) and x_train.max() < 1


@pytest.mark.slow
def test_a_quick_run_trains_keras_ios_vae_and_our_twin_from_the_same_weights(quick_run):
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("keras.io's VAE trains in a TensorFlow train_step")
    results = json.loads((quick_run / "keras_io.json").read_text())["results"]
    settings = conv_experiments.QUICK["keras_io"]
    assert results["num_parameters"]["ours"] == results["num_parameters"]["keras_io"]
    for name in ("keras_io", "ours"):
        assert len(results[name]["loss"]) == settings["num_epochs"] and np.isfinite(results[name]["test_loss"])
    paired = results["paired_with_keras_io"]["ours"]
    assert paired["difference"] == pytest.approx(results["ours"]["test_loss"] - results["keras_io"]["test_loss"])


def test_our_twin_computes_keras_ios_loss_at_the_same_weights_and_noise():
    """keras.io's VAE and our composed twin with its weights copied: the same number of parameters, and per test
    image the same loss (keras.io's, by its own code, against our negative ELBO with a Bernoulli cross-entropy
    from logits) at the same draws of eps, to float32 rounding; also where the decoder's logits saturate (beyond
    the 1e-7 at which Keras clips probabilities), because TensorFlow's sigmoid keeps its logits for the loss."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("keras.io's VAE trains in a TensorFlow train_step")
    from compose import NegativeObjective
    from keras_io_conv_vae import build_keras_io_vae

    keras.utils.set_random_seed(0)
    theirs = build_keras_io_vae(seed=0)
    ours = conv_experiments.twin_of(theirs)
    assert ours.count_params() == theirs.encoder.count_params() + theirs.decoder.count_params()
    rng = np.random.default_rng(0)
    x = rng.random((6, 28, 28, 1), dtype="float32")
    eps = rng.standard_normal((6, 2))
    loss = NegativeObjective("elbo", "bernoulli", reduction=None)
    for offset in (0.0, 40.0):  # logits of 40: far past the 16.1 where clipping probabilities at 1e-7 would show
        if offset:
            kernel, bias = theirs.decoder.layers[-1].get_weights()
            theirs.decoder.layers[-1].set_weights([kernel, bias + offset])
            ours.get_layer("decoder").set_weights(theirs.decoder.get_weights())
            logits = keras.ops.convert_to_numpy(ours.get_layer("decoder")(theirs.encoder(x)[0][:, None, :]))
            assert logits.min() > 30
        expected = conv_experiments.keras_io_losses(theirs, x, eps)
        got = loss(x.reshape(6, 784), ours([x.reshape(6, 784), eps[:, None, :].astype("float32")]))
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, rtol=1e-5)


@pytest.mark.slow
def test_the_figures_draw_from_a_quick_run(quick_run):
    import plot_conv

    figures = run_python(["scripts/plot_conv.py", "--results-dir", quick_run, "--output-dir", quick_run / "images"])
    assert figures.returncode == 0, figures.stderr[-2000:]
    assert all((quick_run / "images" / name).stat().st_size > 1000 for name in plot_conv.FIGURES)


@pytest.mark.parametrize("part", conv_experiments.DATA_SETS)
def test_the_committed_records_hold_their_settings_and_what_they_were_computed_from(part):
    """Each committed record: the committed settings; each network's test NLL and the paired difference are
    those of the per-image estimates beside it; the KL per dimension and the active units fit the latent size."""
    results, settings, log_px = committed_part(conv_experiments, part)
    for network in settings["networks"]:
        row = results[network]
        assert len(log_px[network]) == results["num_test"] == settings["num_test"]
        assert row["test_nll"] == pytest.approx(-log_px[network].mean(), rel=1e-9)
        assert len(row["kl_per_dimension"]) == settings["latent_dim"]
        assert 0 < row["active_units"] <= settings["latent_dim"]
        assert len(row["train_loss_per_epoch"]) == settings["num_epochs"]
        assert row["bias"]["difference"] < 2 * row["bias"]["stderr"]  # fewer samples: a lower bound, in expectation
    paired = results["paired_with_mlp"]["conv"]
    assert paired["difference"] == pytest.approx((log_px["mlp"] - log_px["conv"]).mean(), rel=1e-9)


@full_mnist
def test_the_committed_conv_model_gives_its_recorded_latent_dimensions_again():
    """The saved MNIST convolutional model, reloaded in safe mode, gives the recorded KL per dimension and active
    units on the same test images (recomputed here from its encoder)."""
    from log_likelihood import load_vae
    from posterior_collapse import active_units, kl_per_dimension, posterior_statistics

    record = json.loads((conv_experiments.OUTPUT_DIR / "mnist.json").read_text())
    settings = record["settings"]
    _, x_test, _ = conv_experiments.load_pixels(settings)
    vae = load_vae(conv_experiments.OUTPUT_DIR / "mnist" / "conv.keras")  # in safe mode
    z_mean, z_log_var = posterior_statistics(vae, x_test)
    np.testing.assert_allclose(kl_per_dimension(z_mean, z_log_var), record["results"]["conv"]["kl_per_dimension"],
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    assert active_units(z_mean) == record["results"]["conv"]["active_units"]


def test_the_committed_keras_io_record_compares_the_two_on_the_same_images():
    record = json.loads((conv_experiments.OUTPUT_DIR / "keras_io.json").read_text())
    settings, results = record["settings"], record["results"]
    assert settings == conv_experiments.SETTINGS["keras_io"] and results["num_test"] == settings["num_test"]
    for name in ("keras_io", "ours"):
        assert len(results[name]["loss"]) == settings["num_epochs"]
    # The mean of the per-image differences is the difference of the means.
    assert results["paired_with_keras_io"]["ours"]["difference"] == pytest.approx(
        results["ours"]["test_loss"] - results["keras_io"]["test_loss"], abs=1e-6)
    assert results["num_parameters"]["keras_io"] == results["num_parameters"]["ours"]

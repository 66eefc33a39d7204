"""Train and measure what the post "Convolutional VAEs, and a second data set" shows.

Writes, in ``--output-dir`` (default ``results/conv``), one record per data
set, each with the SHA-256 of the inputs it came from:

* ``mnist.json``: MNIST with a Bernoulli likelihood on binarised pixels
  (every training image binarised afresh each epoch; the test images once);
* ``fashion_mnist.json``: Fashion-MNIST with a continuous Bernoulli
  likelihood on grey levels (dequantised ``(k + u) / 256``);
* ``keras_io.json``: keras.io's convolutional VAE (``listings/vae/
  keras_io_conv_vae.py``, TensorFlow only) and our composed twin, with its
  architecture, settings and initial weights, trained side by side: the
  loss per epoch, and on the test images at the same draws of ``eps``.

For each, the same VAE with dense networks and with convolutional ones
(`compose_vae(encoder=..., decoder=...)`), trained from the same seed with
the same budget; the test NLL by importance sampling with ``M`` samples on
the first test images, with the bias of that estimate measured against
``M_ref`` samples on fewer images; the paired difference of the two models
on the same images and draws; the KL per latent dimension and the active
units; and, beside the record, the models, the per-image estimates and a
few reconstructions and samples (``<part>_images.npz``).

``--parts`` picks parts; ``--if-stale`` runs only the parts whose inputs
changed; ``--check`` exits 1 when a record does not match its inputs;
``--quick`` is a seconds-long run for tests (into another ``--output-dir``);
``--seed`` trains from another seed (``scripts/seeds.py``).
"""

import math
import os
import pathlib
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "listings" / "vae"))
sys.path.insert(0, str(REPO_ROOT / "scripts"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import provenance  # noqa: E402

OUTPUT_DIR = REPO_ROOT / "results" / "conv"
PARTS = ("mnist", "fashion_mnist", "keras_io")
DATA_PARTS = {"mnist": "mnist", "fashion_mnist": "fashion_mnist", "keras_io": "mnist"}  # the data files hashed
DATA_SETS = ("mnist", "fashion_mnist")
# What each data set is modelled as: the likelihood, and how the pixels are fed to it.
DATA = {
    "mnist": {"likelihood": "bernoulli", "pixels": "binarised"},
    "fashion_mnist": {"likelihood": "continuous_bernoulli", "pixels": "grey_levels"},
}
NETWORKS = ("mlp", "conv")  # the reference first: the paired differences are conv minus mlp
SETTINGS = {
    part: {
        "dataset": part,
        **DATA[part],
        "networks": list(NETWORKS),
        "latent_dim": 16,
        "hidden_units": 256,
        "num_train": 60000,
        "num_epochs": 10,
        "batch_size": 100,
        "learning_rate": 1e-3,
        "num_test": 1000,
        "num_samples": 200,
        "bias": {"num_examples": 100, "num_samples": 5000},
        "num_images": 8,
        "seed": 0,
    }
    for part in DATA_SETS
}
# keras.io's example and our composed twin: its architecture (latent_dim 2) and settings (Adam at 0.001, batches
# of 128, 30 epochs), MNIST's grey levels under a Bernoulli cross-entropy, from the same initial weights.
SETTINGS["keras_io"] = {"dataset": "mnist", "latent_dim": 2, "num_train": 60000, "num_epochs": 30, "batch_size": 128,
                        "learning_rate": 1e-3, "num_test": 10000, "seed": 0}  # fmt: skip
QUICK = {
    part: {
        **SETTINGS[part],
        "latent_dim": 3,
        "hidden_units": 8,
        "num_train": 200,
        "num_epochs": 1,
        "num_test": 10,
        "num_samples": 4,
        "bias": {"num_examples": 3, "num_samples": 16},
        "num_images": 2,
    }  # fmt: skip
    for part in DATA_SETS
}
SCORE_BATCH = 500  # test images per call when the keras_io part scores both models
QUICK["keras_io"] = {**SETTINGS["keras_io"], "num_train": 256, "num_epochs": 1, "num_test": 16}
FINGERPRINT = QUICK


def load_pixels(settings):
    """``(x_train, x_test)`` as the likelihood sees them, and what `fit_vae` does to ``x_train`` every epoch.

    Binarised: intensities in [0, 1], binarised afresh by `fit_vae`; the test
    images binarised once from ``seed + 1``. Grey levels: ``k / 256``,
    dequantised afresh by `fit_vae`; the test images dequantised once.
    """
    from mnist_data import binarize_once, flatten_and_scale, load_dataset

    (x_train, _), (x_test, _) = load_dataset(settings["dataset"])
    x_train, x_test = x_train[: settings["num_train"]], x_test[: settings["num_test"]]
    if settings["pixels"] == "binarised":
        x_test = binarize_once(flatten_and_scale(x_test), settings["seed"] + 1)
        return flatten_and_scale(x_train), x_test, {"binarize": True}
    rng = np.random.default_rng(settings["seed"] + 1)
    levels = x_test.reshape(len(x_test), -1).astype("float32")
    x_test = (levels + rng.random(levels.shape, dtype="float32")) / 256.0
    return x_train.reshape(len(x_train), -1).astype("float32") / 256.0, x_test, {"dequantize": True}


def train_and_score(network, settings, x_train, x_test, pixels, output_dir):
    """One model: trained, scored, its latent dimensions measured; returns its row and per-image ``log p(x)``."""
    import keras

    from compose import compose_vae
    from log_likelihood import log_likelihood
    from posterior_collapse import active_units, kl_per_dimension, posterior_statistics
    from training import fit_vae

    likelihood, seed = settings["likelihood"], settings["seed"]
    keras.utils.set_random_seed(seed)
    vae = compose_vae(784, settings["latent_dim"], likelihood=likelihood, hidden_units=settings["hidden_units"],
                      encoder=network, decoder=network)  # fmt: skip
    start = time.perf_counter()
    history = fit_vae(vae, x_train, likelihood, epochs=settings["num_epochs"], batch_size=settings["batch_size"],
                      learning_rate=settings["learning_rate"], seed=seed, verbose=1 if sys.stdout.isatty() else 2,
                      **pixels)  # fmt: skip
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    log_px, monte_carlo = log_likelihood(vae, x_test, likelihood, settings["num_samples"], seed=seed,
                                         return_stderr=True)  # fmt: skip
    score_seconds = time.perf_counter() - start
    # The bias of the M-sample estimate: on the first images, minus an M_ref-sample estimate (from other draws).
    bias = settings["bias"]
    reference = log_likelihood(vae, x_test[: bias["num_examples"]], likelihood, bias["num_samples"], seed=seed + 1)
    shortfall = log_px[: bias["num_examples"]] - reference
    z_mean, z_log_var = posterior_statistics(vae, x_test)
    row = {
        "num_parameters": int(vae.count_params()),
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / settings["num_epochs"],
        "train_loss_per_epoch": [float(v) for v in history["loss"]],
        "test_nll": float(-log_px.mean()),
        "test_nll_stderr_over_examples": float(log_px.std(ddof=1) / math.sqrt(len(log_px))),
        "test_nll_monte_carlo_stderr": float(np.sqrt(np.mean(monte_carlo**2) / len(log_px))),
        "score_seconds": score_seconds,
        "bias": {
            "num_examples": bias["num_examples"],
            "num_samples": bias["num_samples"],
            "difference": float(shortfall.mean()),  # the M-sample bound minus the M_ref one: <= 0 in expectation
            "stderr": float(shortfall.std(ddof=1) / math.sqrt(len(shortfall))),
        },
        "kl_per_dimension": [float(v) for v in kl_per_dimension(z_mean, z_log_var)],
        "active_units": active_units(z_mean),
    }
    provenance.save_model(vae, output_dir / settings["dataset"] / f"{network}.keras")
    return row, log_px, vae


def pictures(vae, settings, x_test, rng):
    """Reconstructions (the likelihood's mean at ``z_mean``) and decoded prior draws, as (count, 784) arrays."""
    import keras

    from training import sample_from

    shown = x_test[: settings["num_images"]]
    z_mean, _ = vae.get_layer("encoder")(shown, training=False)
    z_prior = rng.standard_normal((settings["num_images"], 1, settings["latent_dim"]), dtype="float32")
    decoder = vae.get_layer("decoder")
    out = {}
    for key, z in (("reconstruction", keras.ops.expand_dims(z_mean, 1)), ("sample", z_prior)):
        mean, _ = sample_from(settings["likelihood"], keras.ops.convert_to_numpy(decoder(z, training=False))[:, 0], rng)
        out[key] = mean
    return out


def keras_io_losses(theirs, x, eps):
    """keras.io's loss per image, by its own code (`VAE.losses_per_image`, which its ``train_step`` averages): the
    binary cross-entropy of the grey levels ``x`` (count, 28, 28, 1) under the decoded probabilities, summed over
    the pixels, plus the Gaussian KL, at ``z = z_mean + exp(z_log_var / 2) * eps``."""
    import keras

    z_mean, z_log_var, _ = theirs.encoder(x)
    z = z_mean + keras.ops.exp(0.5 * z_log_var) * keras.ops.convert_to_tensor(eps, "float32")
    reconstruction_loss, kl_loss = theirs.losses_per_image(keras.ops.convert_to_tensor(x), z_mean, z_log_var, z)
    return keras.ops.convert_to_numpy(reconstruction_loss + kl_loss).astype("float64")


def twin_of(theirs):
    """Our composed VAE with keras.io's architecture, its encoder's and decoder's weights copied from ``theirs``."""
    from compose import compose_vae

    ours = compose_vae(784, theirs.encoder.outputs[0].shape[-1], encoder="conv", decoder="conv", hidden_units=16)
    ours.get_layer("encoder").set_weights(theirs.encoder.get_weights())
    ours.get_layer("decoder").set_weights(theirs.decoder.get_weights())
    return ours


def keras_io(settings, output_dir):
    """keras.io's VAE and our twin, trained from the same weights: losses per epoch and on the test images."""
    import keras

    from compose import NegativeObjective
    from keras_io_conv_vae import build_keras_io_vae, load_images
    from mnist_data import load_dataset
    from training import MonteCarloBatches

    images = load_images("mnist", split="train")[: settings["num_train"]]
    _, (x_test, _) = load_dataset("mnist")
    x_test = np.expand_dims(x_test[: settings["num_test"]], -1).astype("float32") / 255
    seed, epochs, batch_size = settings["seed"], settings["num_epochs"], settings["batch_size"]
    keras.utils.set_random_seed(seed)
    theirs = build_keras_io_vae(settings["latent_dim"], seed=seed)
    theirs.optimizer.learning_rate = settings["learning_rate"]
    ours = twin_of(theirs)
    verbose = 1 if sys.stdout.isatty() else 2
    results = {"num_parameters": {"keras_io": int(theirs.encoder.count_params() + theirs.decoder.count_params()),
                                  "ours": int(ours.count_params())}}  # fmt: skip
    print("  keras_io: keras.io's VAE ...", flush=True)
    start = time.perf_counter()
    history = theirs.fit(images, epochs=epochs, batch_size=batch_size, verbose=verbose).history
    results["keras_io"] = {"train_seconds": time.perf_counter() - start,
                           **{key: [float(v) for v in values] for key, values in history.items()}}  # fmt: skip
    print("  keras_io: our composed twin ...", flush=True)
    start = time.perf_counter()
    # Compiled and fitted as keras.io's is (Keras's defaults), on the grey levels themselves: the Bernoulli
    # cross-entropy of grey levels, which `fit_vae` refuses as no likelihood, is the example's loss.
    ours.compile(
        optimizer=keras.optimizers.Adam(settings["learning_rate"]), loss=NegativeObjective("elbo", "bernoulli")
    )
    batches = MonteCarloBatches(images.reshape(len(images), 784), batch_size, 1, settings["latent_dim"], seed=seed)
    history = ours.fit(batches, epochs=epochs, verbose=verbose).history
    results["ours"] = {"train_seconds": time.perf_counter() - start, "loss": [float(v) for v in history["loss"]]}
    # Both losses on the test images at the same draws of eps, image by image (in batches: the convolutions'
    # activations of all 10,000 images at once would take gigabytes).
    eps = np.random.default_rng(seed + 1).standard_normal((len(x_test), settings["latent_dim"]))
    loss = NegativeObjective("elbo", "bernoulli", reduction=None)
    per_image = {"keras_io": [], "ours": []}
    for start in range(0, len(x_test), SCORE_BATCH):
        x, e = x_test[start : start + SCORE_BATCH], eps[start : start + SCORE_BATCH]
        per_image["keras_io"].append(keras_io_losses(theirs, x, e))
        parameters, log_ratio = ours([x.reshape(len(x), 784), e[:, None, :].astype("float32")])
        per_image["ours"].append(keras.ops.convert_to_numpy(loss(x.reshape(len(x), 784), [parameters, log_ratio])))
    per_image = {name: np.concatenate(values).astype("float64") for name, values in per_image.items()}
    for name, values in per_image.items():
        results[name]["test_loss"] = float(values.mean())
        results[name]["test_loss_stderr_over_examples"] = float(values.std(ddof=1) / math.sqrt(len(values)))
    results["paired_with_keras_io"] = provenance.paired_differences(per_image, "keras_io")
    results["num_test"] = len(x_test)
    return results


def run_part(part, settings, output_dir):
    if part == "keras_io":
        return keras_io(settings, output_dir)
    (output_dir / settings["dataset"]).mkdir(parents=True, exist_ok=True)
    x_train, x_test, pixels = load_pixels(settings)
    results = {"dim": 784, "num_test": len(x_test)}
    per_image, images = {}, {"data": x_test[: settings["num_images"]]}
    for network in settings["networks"]:
        print(f"  {part} {network} ...", flush=True)
        row, per_image[network], vae = train_and_score(network, settings, x_train, x_test, pixels, output_dir)
        rng = np.random.default_rng(settings["seed"] + 2)
        for key, value in pictures(vae, settings, x_test, rng).items():
            images[f"{network}/{key}"] = value
        results[network] = row
        print(f"  {part} {network}: test NLL {row['test_nll']:.2f} nats, {row['active_units']} active units",
              flush=True)  # fmt: skip
    # Paired on the same test images (and the same draws of eps): each network's NLL minus the dense one's.
    nll = {network: -values for network, values in per_image.items()}
    results["paired_with_mlp"] = provenance.paired_differences(nll, "mlp")
    provenance.save_arrays(output_dir / settings["dataset"] / "log_px.npz", per_image)
    provenance.save_arrays(output_dir / f"{part}_images.npz", {k: np.asarray(v, "float32") for k, v in images.items()})
    return results


def main(argv=None):
    return provenance.run_experiments(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())

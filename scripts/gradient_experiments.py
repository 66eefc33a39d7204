"""Measure the encoder's gradient estimators: their spread against the number of samples, and the models they train.

Writes, in ``--output-dir`` (default ``results/gradients``), one record per
part, each with the SHA-256 of the inputs it came from:

* ``toy.json``: the same measurement on one image of a linear-Gaussian model
  whose posterior is known in closed form, with ``q`` set a little off it
  (``offset`` added to its mean and log variance): there the importance
  weights are nearly equal and the asymptotic rates hold (Rainforth et al.
  2018: the total derivative's encoder SNR falls like ``S**-0.5``; Tucker
  et al. 2019: DReG's rises like ``S**0.5``).
* ``spread.json``: on two trained rows of the IWAE table (``vae-k1`` for the
  ELBO, ``iwae-k50`` for the IWAE bound), the gradient of the loss on one
  batch of test images over many draws of the noise, for each number of
  samples ``S`` (``k`` for the IWAE bound) and each estimator: ``total``
  and ``stl`` for the ELBO, ``total`` and ``dreg`` for the IWAE bound. Per
  network (encoder, decoder): the variance summed over the weights, the
  squared norm of the mean gradient, and the signal-to-noise ratio
  ``|mean| / sd`` of each weight, averaged over the weights (Rainforth et
  al. 2018), with the slope of its logarithm against ``log S``.
* ``training.json``: Burda et al.'s MNIST VAE (784-200-200-50, tanh,
  Bernoulli on binarised pixels) trained from the same seed for the same
  epochs with each estimator: the ELBO (``S = 1``) with ``total`` and ``stl``
  and the IWAE bound (``k = 5``) with ``total`` and ``dreg``. For each: the
  test NLL by importance sampling on the first test images (binarised once),
  and the paired difference of its per-image ``log p(x)`` from the same
  objective's ``total`` model, on the same images and draws.

``--parts`` picks parts; ``--if-stale`` runs only the parts whose inputs
changed; ``--check`` exits 1 when a record does not match its inputs;
``--quick`` is a seconds-long run for tests (into another ``--output-dir``);
``--seed`` trains from another seed (``scripts/seeds.py``).
"""

import math
import os
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "listings" / "vae"))
sys.path.insert(0, str(REPO_ROOT / "scripts"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


import provenance  # noqa: E402

OUTPUT_DIR = REPO_ROOT / "results" / "gradients"
TABLE_DIR = REPO_ROOT / "results" / "iwae"
PARTS = ("toy", "spread", "training")
MNIST_PARTS = ("spread", "training")
ARCHITECTURE = {"latent_dim": 50, "hidden_units": 200, "hidden_layers": 2, "activation": "tanh"}  # Burda et al.'s
ESTIMATORS = {"elbo": ("total", "stl"), "iwae": ("total", "dreg")}  # the reference first
SETTINGS = {
    "toy": {
        "data_dim": 5,
        "offset": 0.3,
        "mc_samples": [1, 3, 10, 30, 100, 300, 1000],
        "draws": 1000,
        "seed": 0,
    },
    "spread": {
        "rows": {"elbo": "vae-k1", "iwae": "iwae-k50"},
        "mc_samples": [1, 3, 10, 30, 100, 300, 1000],
        "batch_size": 10,
        "draws": 400,
        "seed": 0,
    },
    "training": {
        **ARCHITECTURE,
        "mc_samples": {"elbo": 1, "iwae": 5},
        "num_train": 60000,
        "num_epochs": 10,
        "batch_size": 100,
        "learning_rate": 1e-3,
        "num_test": 1000,
        "num_samples": 1000,
        "seed": 0,
    },
}
QUICK = {
    "toy": {**SETTINGS["toy"], "mc_samples": [1, 4], "draws": 6},
    "spread": {**SETTINGS["spread"], "mc_samples": [1, 4], "batch_size": 3, "draws": 6},
    "training": {
        **SETTINGS["training"],
        "latent_dim": 4,
        "hidden_units": 8,
        "mc_samples": {"elbo": 1, "iwae": 3},
        "num_train": 200,
        "num_epochs": 2,
        "num_test": 10,
        "num_samples": 8,
    },
}
FINGERPRINT = QUICK


def linear_gaussian_vae(objective, gradient, x, offset=0.0):
    """A linear-Gaussian VAE whose q(z|x) is its exact posterior (plus ``offset`` on its mean and log variance);
    also its log p(x) from SciPy.

    p(z) = N(0, I), p(x|z) = N(V z + c, tau^2 I) with orthogonal columns of V, so the posterior
    N(Sigma V^T (x - c) / tau^2, Sigma), Sigma = (I + V^T V / tau^2)^-1, is diagonal: the encoder's family.
    (In the code: w is V, b is c, scale is tau, covariance is Sigma.)
    """
    import numpy as np
    from scipy import stats

    from compose import compose_vae

    data_dim, latent_dim, scale = x.shape[-1], 2, 0.7
    w = np.linalg.qr(np.random.default_rng(3).standard_normal((data_dim, latent_dim)))[0] * np.array([1.5, 0.8])
    b = np.linspace(-0.5, 0.5, data_dim)
    covariance = np.linalg.inv(np.eye(latent_dim) + w.T @ w / scale**2)
    assert np.allclose(covariance, np.diag(np.diag(covariance)))
    vae = compose_vae(data_dim, latent_dim, divergence="monte_carlo", likelihood="gaussian", objective=objective,
                      hidden_units=data_dim, activation="linear", gradient=gradient)  # fmt: skip
    gain = covariance @ w.T / scale**2  # z_mean = gain (x - b)
    weights = {
        "encoder_hidden": [np.eye(data_dim), np.zeros(data_dim)],
        "z_mean": [gain.T, -gain @ b + offset],
        "z_log_var": [np.zeros((data_dim, latent_dim)), np.log(np.diag(covariance)) + offset],
        "decoder_hidden": [w.T, np.zeros(data_dim)],
        "x_parameters": [np.eye(data_dim), b],
        "log_scale": [np.full(data_dim, math.log(scale))],
    }
    for network in ("encoder", "decoder"):
        for layer in vae.get_layer(network).layers:
            for name, values in weights.items():
                if layer.name.startswith(name):
                    layer.set_weights([v.astype("float32") for v in values])
    log_px = stats.multivariate_normal(b, w @ w.T + scale**2 * np.eye(data_dim)).logpdf(x)
    return vae, log_px


def spread_by_samples(models, objective, likelihood, x, latent_dim, settings):
    """The spread of each model's gradient draws at each S (the same eps for every model), and the SNR slopes."""
    import numpy as np

    from gradients import gradient_function
    from objectives import NegativeObjective

    functions = {
        (gradient, network): gradient_function(vae, NegativeObjective(objective, likelihood),
                                               vae.get_layer(network).trainable_weights)  # fmt: skip
        for gradient, vae in models.items()
        for network in ("encoder", "decoder")
    }
    rng = np.random.default_rng(settings["seed"])
    per_samples = {}
    for mc_samples in settings["mc_samples"]:
        print(f"  {objective}, S = {mc_samples} ...", flush=True)
        draws = {key: [] for key in functions}
        for _ in range(settings["draws"]):  # the same eps for every estimator
            eps = rng.standard_normal((len(x), mc_samples, latent_dim), dtype="float32")
            for key, gradient_of in functions.items():
                draws[key].append(gradient_of(x, eps))
        per_samples[str(mc_samples)] = {
            gradient: {network: spread_of(np.array(draws[gradient, network])) for network in ("encoder", "decoder")}
            for gradient in models
        }
    slopes = {
        gradient: {
            network: log_slope(settings["mc_samples"], [per_samples[str(s)][gradient][network]["mean_snr"]
                                                        for s in settings["mc_samples"]])  # fmt: skip
            for network in ("encoder", "decoder")
        }
        for gradient in models
    }
    return {"by_samples": per_samples, "snr_log_slope": slopes}


def run_toy(settings):
    import numpy as np

    x = np.random.default_rng(settings["seed"]).normal(size=(1, settings["data_dim"])).astype("float32")
    results = {}
    for objective, estimators in ESTIMATORS.items():
        models = {gradient: linear_gaussian_vae(objective, gradient, x, settings["offset"])[0]
                  for gradient in estimators}  # fmt: skip
        results[objective] = spread_by_samples(models, objective, "gaussian", x, 2, settings)
        print(f"  {objective}: SNR slopes {results[objective]['snr_log_slope']}", flush=True)
    return results


def twin(vae, objective, gradient):
    """A model of ``vae``'s architecture and weights whose encoder gradient is ``gradient``'s."""
    from compose import compose_vae

    other = compose_vae(784, vae.inputs[1].shape[-1], divergence="monte_carlo", objective=objective,
                        hidden_units=ARCHITECTURE["hidden_units"], hidden_layers=ARCHITECTURE["hidden_layers"],
                        activation=ARCHITECTURE["activation"], gradient=gradient)  # fmt: skip
    for network in ("encoder", "decoder"):
        other.get_layer(network).set_weights(vae.get_layer(network).get_weights())
    return other


def spread_of(draws):
    """Summaries of gradient draws (draws, weights): summed variance, squared norm of the mean, mean SNR."""
    import numpy as np

    mean, sd = draws.mean(axis=0), draws.std(axis=0, ddof=1)
    return {
        "total_variance": float(np.sum(sd**2)),
        "squared_norm_of_mean": float(mean @ mean),
        "mean_snr": float(np.mean(np.abs(mean) / np.maximum(sd, 1e-30))),
    }


def log_slope(xs, ys):
    """The least-squares slope of ``log y`` against ``log x``."""
    import numpy as np

    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def run_spread(settings, x_test, table_dir=TABLE_DIR):
    from mc_samples_experiments import load_row

    x, results = x_test[: settings["batch_size"]], {}
    for objective, row in settings["rows"].items():
        trained = load_row(table_dir, row)
        models = {gradient: twin(trained, objective, gradient) for gradient in ESTIMATORS[objective]}
        results[objective] = {"row": row, **spread_by_samples(models, objective, "bernoulli", x,
                                                               trained.inputs[1].shape[-1], settings)}  # fmt: skip
        print(f"  {objective}: SNR slopes {results[objective]['snr_log_slope']}", flush=True)
    return results


def run_training(settings, x_train, x_test, output_dir):
    import keras

    from compose import compose_vae
    from log_likelihood import log_likelihood
    from training import fit_vae

    seed, results, per_image, paired = settings["seed"], {}, {}, {}
    architecture = {key: settings[key] for key in ("hidden_units", "hidden_layers", "activation")}
    for objective, gradients in ESTIMATORS.items():
        for gradient in gradients:
            key = f"{objective}-{gradient}"
            print(f"  {key} ...", flush=True)
            keras.utils.set_random_seed(seed)  # the same initial weights for both estimators
            vae = compose_vae(784, settings["latent_dim"], divergence="monte_carlo", objective=objective,
                              gradient=gradient, **architecture)  # fmt: skip
            history = fit_vae(vae, x_train, "bernoulli", objective, epochs=settings["num_epochs"],
                              batch_size=settings["batch_size"], mc_samples=settings["mc_samples"][objective],
                              learning_rate=settings["learning_rate"], binarize=True, seed=seed,
                              verbose=1 if sys.stdout.isatty() else 2)  # fmt: skip
            log_px = log_likelihood(vae, x_test, "bernoulli", settings["num_samples"], seed=seed)
            per_image[key] = log_px
            results[key] = {
                "objective": objective,
                "gradient": gradient,
                "train_loss_per_epoch": [float(v) for v in history["loss"]],
                "test_nll": float(-log_px.mean()),
                "test_nll_stderr_over_examples": float(log_px.std(ddof=1) / math.sqrt(len(log_px))),
            }
            print(f"  {key}: test NLL {results[key]['test_nll']:.2f}", flush=True)
        # log p(x) of the estimator's model minus the total derivative's, on the same images and draws
        reference = f"{objective}-{gradients[0]}"
        pair = {key: values for key, values in per_image.items() if key.startswith(f"{objective}-")}
        paired.update(provenance.paired_differences(pair, reference))
    (output_dir / "training").mkdir(parents=True, exist_ok=True)
    provenance.save_arrays(output_dir / "training" / "log_px.npz", per_image)
    return {"models": results, "paired_with_total": paired, "num_test": len(x_test)}


def run_part(part, settings, output_dir):
    from mnist_data import binarize_once, flatten_and_scale, load_mnist

    if part == "toy":
        return run_toy(settings)
    (x_train, _), (x_test, _) = load_mnist()
    num_test = settings["batch_size"] if part == "spread" else settings["num_test"]
    x_test = binarize_once(flatten_and_scale(x_test[:num_test]), settings["seed"] + 1)
    if part == "spread":
        return run_spread(settings, x_test)
    return run_training(settings, flatten_and_scale(x_train[: settings["num_train"]]), x_test, output_dir)


def main(argv=None):
    return provenance.run_experiments(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())

"""Train and measure what the post "One skeleton, many likelihoods" shows.

Writes, in ``--output-dir`` (default ``results/likelihoods``), one record per
part, each with the SHA-256 of the inputs it came from:

* ``mnist.json`` and ``mnist_images.npz``: the main post's VAE trained on
  dequantised grey-level MNIST with a Bernoulli, a continuous Bernoulli and
  a Gaussian head (one learned scale per pixel, and one per output); test
  log-likelihoods by importance sampling, in nats and as bits per 8-bit
  pixel; reconstructions, decoded prior samples and draws from ``p(x|z)``;
* ``regression.json``: Bayesian linear regression on scikit-learn's diabetes
  data (global posterior, Gaussian likelihood) over several random splits:
  held-out log predictive density and the coverage of central predictive
  intervals at several nominal levels, against least squares with a plug-in
  Gaussian and against the exact conjugate posterior;
* ``classification.json``: Bayesian softmax regression on scikit-learn's
  digits against the same model fitted by maximum likelihood: accuracy, log
  predictive density, expected calibration error and reliability bins.

``--parts`` picks parts; ``--if-stale`` runs only the parts whose inputs
changed; ``--check`` exits 1 when a record does not match its inputs;
``--quick`` is a seconds-long run for tests (into another ``--output-dir``).
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

OUTPUT_DIR = REPO_ROOT / "results" / "likelihoods"
# The parts that read MNIST (their records hash the data files).
MNIST_PARTS = ("mnist",)
PARTS = ("mnist", "regression", "classification")
MNIST_HEADS = {
    "bernoulli": {"likelihood": "bernoulli", "heteroscedastic": False},
    "continuous_bernoulli": {"likelihood": "continuous_bernoulli", "heteroscedastic": False},
    "gaussian": {"likelihood": "gaussian", "heteroscedastic": False},
    "gaussian_heteroscedastic": {"likelihood": "gaussian", "heteroscedastic": True},
}
LEVELS = [0.5, 0.8, 0.9, 0.95]
SETTINGS = {
    "mnist": {
        "heads": MNIST_HEADS,
        "num_train": 60000,
        "num_test": 10000,
        "num_epochs": 50,
        "batch_size": 100,
        "learning_rate": 1e-3,
        "log_likelihood_samples": 1000,
        "num_images": 8,
        "seed": 0,
    },
    "regression": {"splits": 10, "num_epochs": 300, "batch_size": 32, "learning_rate": 1e-2, "predictive_samples": 2000,
                   "levels": LEVELS, "seed": 0},
    "classification": {"num_epochs": 300, "batch_size": 32, "learning_rate": 1e-2, "predictive_samples": 1000,
                       "bins": 10, "seed": 0},
}  # fmt: skip
QUICK = {
    "mnist": {**SETTINGS["mnist"], "num_train": 300, "num_test": 20, "num_epochs": 1, "log_likelihood_samples": 10,
              "heads": {name: MNIST_HEADS[name] for name in ("bernoulli", "gaussian")}},
    "regression": {**SETTINGS["regression"], "splits": 2, "num_epochs": 3, "predictive_samples": 50},
    "classification": {**SETTINGS["classification"], "num_epochs": 2, "predictive_samples": 20},
}  # fmt: skip
# The fingerprints (fingerprint.py): the quick runs with every MNIST head, so each likelihood's code runs.
FINGERPRINT = {**QUICK, "mnist": {**QUICK["mnist"], "heads": MNIST_HEADS, "num_train": 200}}


def bits_per_dim(nll_nats, dim):
    """``-log2 P`` per pixel of 8-bit data bounded by a density's NLL on ``(k + u) / 256``."""
    return (nll_nats / dim + math.log(256.0)) / math.log(2.0)


def head_model(choice):
    """The main post's VAE (its settings in `train.DEFAULTS`) with the head ``choice`` names, uncompiled."""
    from compose import compose_vae
    from train import DEFAULTS

    return compose_vae(
        784, DEFAULTS["latent_dim"], likelihood=choice["likelihood"], hidden_units=DEFAULTS["intermediate_dim"],
        hidden_layers=DEFAULTS["hidden_layers"], activation=DEFAULTS["activation"],
        heteroscedastic=choice["heteroscedastic"],
    )  # fmt: skip


def dequantised_mnist(settings):
    """``(x_train, x_test, rng)``: the training images as 8-bit levels ``k / 256`` (dequantised afresh every
    epoch by the training loop) and the test images with one fixed dequantisation ``(k + u) / 256``, drawn by
    ``rng`` (seeded with ``seed + 1``), which the caller may go on drawing from. Every model scored on grey
    levels is scored on these test images."""
    from mnist_data import load_mnist

    (x_train, _), (x_test, _) = load_mnist()
    x_train = x_train[: settings["num_train"]].reshape(-1, 784).astype("float32") / 256.0
    levels_test = x_test[: settings["num_test"]].reshape(-1, 784).astype("float32")
    rng = np.random.default_rng(settings["seed"] + 1)
    return x_train, (levels_test + rng.random(levels_test.shape, dtype="float32")) / 256.0, rng


def mnist(settings, output_dir):
    """Each head trained with the same budget; test log-likelihoods and images."""
    import keras

    from log_likelihood import log_likelihood
    from train import DEFAULTS
    from training import fit_vae, sample_from

    x_train, x_test, rng = dequantised_mnist(settings)
    shown = x_test[: settings["num_images"]]
    z_prior = rng.standard_normal((settings["num_images"], 1, DEFAULTS["latent_dim"]), dtype="float32")
    images, per_image, proper = {"data": shown}, {}, {}
    results = {"architecture": {k: DEFAULTS[k] for k in ("latent_dim", "intermediate_dim", "hidden_layers")}}
    verbose = 1 if sys.stdout.isatty() else 2
    for head, choice in settings["heads"].items():
        print(f"  mnist {head} ...", flush=True)
        likelihood = choice["likelihood"]
        keras.utils.set_random_seed(settings["seed"])
        model = head_model(choice)
        encoder, decoder = model.get_layer("encoder"), model.get_layer("decoder")
        start = time.perf_counter()
        # The Bernoulli row is the quickstart's choice: dequantised grey levels under a Bernoulli "likelihood".
        history = fit_vae(
            model, x_train, likelihood, epochs=settings["num_epochs"], batch_size=settings["batch_size"],
            mc_samples=DEFAULTS["mc_samples"], learning_rate=settings["learning_rate"], dequantize=True,
            seed=settings["seed"], verbose=verbose,
        )  # fmt: skip
        train_seconds = time.perf_counter() - start
        # Bernoulli: its own number (not a likelihood) and the same decoder read as a continuous Bernoulli.
        scored_as = {"bernoulli": ["bernoulli", "continuous_bernoulli"]}.get(likelihood, [likelihood])
        row = {**choice, "train_seconds": train_seconds, "final_train_loss": float(history["loss"][-1]),
               "train_loss_per_epoch": [float(v) for v in history["loss"]], "test": {}}  # fmt: skip
        for name in scored_as:
            start = time.perf_counter()
            log_px = log_likelihood(model, x_test, name, settings["log_likelihood_samples"], seed=settings["seed"])
            per_image[f"{head}/{name}"] = log_px
            nll = float(-log_px.mean())
            row["test"][name] = {
                "nll": nll,
                "nll_stderr": float(log_px.std(ddof=1) / math.sqrt(len(log_px))),
                "bits_per_dim": bits_per_dim(nll, 784),
                "seconds": time.perf_counter() - start,
            }
            print(f"  mnist {head} scored as {name}: test NLL {nll:.1f} nats", flush=True)
        proper[head] = per_image[f"{head}/{scored_as[-1]}"]  # a density on [0, 1]^784 or R^784
        z_mean, _ = encoder(shown, training=False)
        reconstruction = decoder(keras.ops.expand_dims(z_mean, 1), training=False)
        generated = decoder(z_prior, training=False)
        draw_rng = np.random.default_rng(settings["seed"] + 2)
        for key, parameters in (("reconstruction", reconstruction), ("sample", generated)):
            mean, draw = sample_from(likelihood, keras.ops.convert_to_numpy(parameters)[:, 0], draw_rng)
            images[f"{head}/{key}_mean"] = mean
            images[f"{head}/{key}_draw"] = draw
        results[head] = row
        provenance.save_model(model, output_dir / "mnist" / f"{head}.keras")
    # Paired on the same test images: each head's log p(x) minus the continuous Bernoulli model's.
    for head, paired in provenance.paired_differences(proper, "continuous_bernoulli").items():
        results[head]["paired_with_continuous_bernoulli"] = paired
    provenance.save_arrays(output_dir / "mnist_images.npz", {k: np.asarray(v, "float32") for k, v in images.items()})
    provenance.save_arrays(output_dir / "mnist" / "log_px.npz", per_image)
    results["dim"] = 784
    return results


def level_key(level):
    """``"90"`` for 0.9: a record key that a dotted result path can name."""
    return str(round(100 * level))


def central_intervals(draws, levels):
    """``{level: (low, high)}``: central intervals from draws of shape (count, samples)."""
    return {level: np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=1) for level in levels}


def exact_posterior(x, y, noise_scale):
    """The conjugate posterior of ``y = x w + b + noise``, prior ``N(0, I)``: mean and covariance of ``(w, b)``."""
    design = np.hstack([x, np.ones((len(x), 1))]).astype("float64")
    precision = np.eye(design.shape[1]) + design.T @ design / noise_scale**2
    covariance = np.linalg.inv(precision)
    return covariance @ design.T @ y[:, 0].astype("float64") / noise_scale**2, covariance


def regression(settings):
    """Bayesian linear regression over several splits: coverage and log predictive density."""
    import keras
    from scipy import stats

    from skeleton import load_task, log_predictive_density, task_vae
    from training import fit_vae, posterior_predictive

    splits = []
    for split in range(settings["splits"]):
        (x_train, y_train), (x_test, y_test) = load_task("diabetes", seed=settings["seed"] + split)
        keras.utils.set_random_seed(settings["seed"] + split)
        model, likelihood = task_vae("diabetes", x_train.shape[-1], len(x_train))
        fit_vae(model, x_train, likelihood, epochs=settings["num_epochs"], batch_size=settings["batch_size"],
                learning_rate=settings["learning_rate"], seed=settings["seed"] + split, y=y_train,
                verbose=0)  # fmt: skip
        parameters = posterior_predictive(model, x_test, settings["predictive_samples"], seed=split)
        mean, log_scale = np.split(parameters, 2, axis=-1)
        rng = np.random.default_rng(split)
        draws = (mean + np.exp(log_scale) * rng.standard_normal(mean.shape))[..., 0]
        intervals = central_intervals(draws, settings["levels"])
        y = y_test[:, 0]
        noise_scale = float(np.exp(model.get_layer("decoder").get_layer("log_scale").get_weights()[0][0]))
        # Least squares with the maximum-likelihood noise: a plug-in Gaussian predictive.
        design = np.hstack([x_train, np.ones((len(x_train), 1))])
        coef, *_ = np.linalg.lstsq(design, y_train[:, 0], rcond=None)
        ols_scale = float(np.sqrt(np.mean((design @ coef - y_train[:, 0]) ** 2)))
        ols_mean = np.hstack([x_test, np.ones((len(x_test), 1))]) @ coef
        # The exact posterior of the same model at the learned noise level.
        w_mean, w_cov = exact_posterior(x_train, y_train, noise_scale)
        test_design = np.hstack([x_test, np.ones((len(x_test), 1))])
        exact_mean = test_design @ w_mean
        exact_scale = np.sqrt(np.einsum("ni,ij,nj->n", test_design, w_cov, test_design) + noise_scale**2)
        posterior = model.get_layer("posterior")
        row = {
            "noise_scale": noise_scale,
            "log_predictive_density": float(log_predictive_density(likelihood, y_test, parameters).mean()),
            "coverage": {
                level_key(level): float(np.mean((y >= low) & (y <= high))) for level, (low, high) in intervals.items()
            },
            "ols_log_predictive_density": float(stats.norm.logpdf(y, ols_mean, ols_scale).mean()),
            "ols_coverage": {
                level_key(level): float(np.mean(np.abs(y - ols_mean) <= stats.norm.ppf((1 + level) / 2) * ols_scale))
                for level in settings["levels"]
            },
            "exact_log_predictive_density": float(stats.norm.logpdf(y, exact_mean, exact_scale).mean()),
            "max_abs_mean_difference_from_exact": float(np.max(np.abs(np.mean(draws, axis=1) - exact_mean))),
            "weight_mean_vi": [float(v) for v in posterior.get_weights()[0]],
            "weight_mean_exact": [float(v) for v in w_mean],
            "num_train": len(x_train),
            "num_test": len(x_test),
        }
        if split == 0:
            order = np.argsort(np.mean(draws, axis=1))
            row["figure"] = {
                "y": y[order].tolist(),
                "mean": np.mean(draws, axis=1)[order].tolist(),
                **{f"interval_{level}": intervals[level][:, order].tolist() for level in (0.5, 0.9)},
            }
        splits.append(row)
        print(f"  split {split}: coverage {row['coverage']}, log p {row['log_predictive_density']:.3f}", flush=True)
    summary = {}
    for key in ("coverage", "ols_coverage"):
        summary[key] = {
            level_key(level): float(np.mean([s[key][level_key(level)] for s in splits])) for level in settings["levels"]
        }
    for key in ("log_predictive_density", "ols_log_predictive_density", "exact_log_predictive_density", "noise_scale"):
        summary[key] = float(np.mean([s[key] for s in splits]))
    summary["test_points"] = int(sum(s["num_test"] for s in splits))
    return {"summary": summary, "splits": splits}


def reliability(probabilities, labels, bins):
    """Reliability bins of the top-class confidence, and the expected calibration error."""
    confidence, correct = probabilities.max(axis=1), probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            rows.append({
                "low": float(edges[b]), "high": float(edges[b + 1]), "count": int(mask.sum()),
                "confidence": float(confidence[mask].mean()), "accuracy": float(correct[mask].mean()),
            })  # fmt: skip
            ece += mask.mean() * abs(confidence[mask].mean() - correct[mask].mean())
    return {"bins": rows, "ece": float(ece)}


def classification(settings):
    """Bayesian softmax regression against maximum likelihood on digits."""
    import keras

    from likelihoods import NegativeLogLikelihood, categorical_nll
    from skeleton import load_task, task_vae
    from training import fit_vae, posterior_predictive

    (x_train, y_train), (x_test, y_test) = load_task("digits", seed=settings["seed"])
    keras.utils.set_random_seed(settings["seed"])
    model, likelihood = task_vae("digits", x_train.shape[-1], len(x_train))
    fit_vae(model, x_train, likelihood, epochs=settings["num_epochs"], batch_size=settings["batch_size"],
            learning_rate=settings["learning_rate"], seed=settings["seed"], y=y_train, verbose=0)  # fmt: skip
    logits = posterior_predictive(model, x_test, settings["predictive_samples"], seed=settings["seed"])
    log_probs = keras.ops.convert_to_numpy(keras.ops.log_softmax(logits, axis=-1))
    bayes = np.exp(np.logaddexp.reduce(log_probs, axis=1) - math.log(log_probs.shape[1]))
    # The same model at its posterior mean only: separates the posterior's spread from its mean.
    posterior = model.get_layer("posterior")
    w_mean, w_log_var = (keras.ops.convert_to_numpy(weight) for weight in posterior.weights)
    z = np.broadcast_to(w_mean, (len(x_test), 1, len(w_mean)))
    mean_logits = model.get_layer("decoder")([keras.ops.convert_to_tensor(x_test), keras.ops.convert_to_tensor(z)])
    mean_logits = keras.ops.convert_to_numpy(mean_logits)[:, 0]
    mean_probs = keras.ops.convert_to_numpy(keras.ops.softmax(mean_logits, axis=-1))
    # Maximum likelihood: the same linear softmax model, a point estimate, the same optimiser and epochs.
    keras.utils.set_random_seed(settings["seed"])
    ml = keras.Sequential([keras.Input((x_train.shape[-1],)), keras.layers.Dense(10, name="logits")])
    ml.compile(keras.optimizers.Adam(settings["learning_rate"]), loss=NegativeLogLikelihood("categorical"))
    ml.fit(x_train, y_train, epochs=settings["num_epochs"], batch_size=settings["batch_size"], verbose=0)
    ml_logits = ml.predict(x_test, verbose=0)
    ml_probs = keras.ops.convert_to_numpy(keras.ops.softmax(ml_logits, axis=-1))
    ml_nll = keras.ops.convert_to_numpy(categorical_nll(y_test, ml_logits))
    results = {
        "num_train": len(x_train), "num_test": len(x_test), "chance": 0.1,
        "posterior_scale": {"mean": float(np.mean(np.exp(0.5 * w_log_var))),
                            "max": float(np.max(np.exp(0.5 * w_log_var)))},
        "weight_norm": {"bayes_mean": float(np.linalg.norm(w_mean)),
                        "ml": float(np.sqrt(sum(np.sum(w**2) for w in ml.get_weights())))},
    }  # fmt: skip
    per_image = {}
    for name, probs, log_p in (
        ("bayes", bayes, np.log(bayes[np.arange(len(y_test)), y_test])),
        ("bayes_mean", mean_probs, -keras.ops.convert_to_numpy(categorical_nll(y_test, mean_logits))),
        ("ml", ml_probs, -ml_nll),
    ):
        per_image[name] = log_p
        results[name] = {
            "accuracy": float(np.mean(probs.argmax(axis=1) == y_test)),
            "log_predictive_density": float(np.mean(log_p)),
            **reliability(probs, y_test, settings["bins"]),
        }
        r = results[name]
        print(f"  {name}: accuracy {r['accuracy']:.3f}, log p {r['log_predictive_density']:.3f}, ECE {r['ece']:.3f}")
    # log p(y|x) of each test image minus maximum likelihood's, paired on the same images.
    results["paired_with_ml"] = provenance.paired_differences(per_image, "ml")
    return results


def run_part(part, settings, output_dir):
    if part == "mnist":
        (output_dir / "mnist").mkdir(parents=True, exist_ok=True)
        return mnist(settings, output_dir)
    return {"regression": regression, "classification": classification}[part](settings)


def main(argv=None):
    return provenance.run_experiments(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())

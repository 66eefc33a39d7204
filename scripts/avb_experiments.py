"""Train and measure what the Adversarial Variational Bayes post shows.

Writes, in ``--output-dir`` (default ``results/avb``), one record per part,
each with the SHA-256 of the inputs it came from:

* ``estimators.json``: the three KL estimators on pairs of Gaussians whose KL
  is known: the Monte Carlo estimator's per-sample spread, and the
  discriminator's estimate ``mean T`` on held-out draws as it trains;
* ``toy.json`` and ``toy/<model>.keras``: four one-hot points in R^4 with a
  2-D latent space, fitted by a VAE with a Gaussian posterior (closed-form
  KL) and by AVB with an implicit posterior; ``log p(x)`` of each point by
  sampling the prior, and the negative ELBO;
* ``mnist.json`` and ``mnist/<row>.keras``: the same model trained on MNIST
  with each estimator (and the adversarial ones with the implicit posterior
  too): test negative ELBO
  with the exact KL where the posterior is Gaussian, the discriminator's KL
  estimate where there is one, and the test log-likelihood by importance
  sampling where ``q`` has a density (per image in ``mnist/log_px.npz``).
  Every model is the composed VAE (`compose.py`) with the row's posterior
  and divergence, trained by `training.fit_vae`.

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


import provenance  # noqa: E402

OUTPUT_DIR = REPO_ROOT / "results" / "avb"
# The parts that read MNIST (their records hash the data files).
MNIST_PARTS = ("mnist",)
PARTS = ("estimators", "toy", "mnist")
GAUSSIAN_PAIRS = {
    "near-2d": {"mean": [1.0, -0.5], "log_var": [-1.0, 0.5]},
    "far-2d": {"mean": [2.0, -2.0], "log_var": [-2.0, -2.0]},
    "far-8d": {"mean": [2.0] * 8, "log_var": [-3.0] * 8},
}
SETTINGS = {
    "estimators": {
        "pairs": GAUSSIAN_PAIRS,
        "num_train": 20000,
        "num_held_out": 10000,
        "batch_size": 500,
        "epochs": 100,
        "discriminator_units": 256,
        "discriminator_layers": 2,
        "learning_rate": 1e-3,
        "seed": 0,
    },
    "toy": {
        "models": {
            "gaussian": {"posterior": "gaussian", "divergence": "closed_form"},
            "implicit": {"posterior": "implicit", "divergence": "adversarial"},
        },
        "architecture": {
            "latent_dim": 2,
            "hidden_units": 64,
            "hidden_layers": 2,
            "activation": "relu",
            "discriminator_units": 256,
            "discriminator_layers": 2,
        },
        "copies": 12500,
        "num_epochs": 150,
        "batch_size": 500,
        "mc_samples": 1,
        "learning_rate": 1e-3,
        "log_likelihood_samples": 100000,
        "elbo_samples": 1000,
        "seed": 0,
    },
    "mnist": {
        "rows": {
            "closed_form": {"posterior": "gaussian", "divergence": "closed_form"},
            "monte_carlo": {"posterior": "gaussian", "divergence": "monte_carlo"},
            "adversarial": {"posterior": "gaussian", "divergence": "adversarial"},
            "adaptive_contrast": {"posterior": "gaussian", "divergence": "adaptive_contrast"},
            "adversarial_implicit": {"posterior": "implicit", "divergence": "adversarial"},
            "adaptive_contrast_implicit": {"posterior": "implicit", "divergence": "adaptive_contrast"},
        },
        "architecture": {
            "latent_dim": 8,
            "hidden_units": 256,
            "hidden_layers": 2,
            "activation": "relu",
            "discriminator_units": 256,
            "discriminator_layers": 2,
        },
        "num_epochs": 30,
        "batch_size": 100,
        "learning_rate": 1e-3,
        "mc_samples": 8,
        "num_train": 60000,
        "num_test": 10000,
        "test_binarization_seed": 1,
        "log_likelihood_samples": 1000,
        "seed": 0,
    },
}
QUICK = {
    "estimators": {**SETTINGS["estimators"], "pairs": {"near-2d": GAUSSIAN_PAIRS["near-2d"]}, "epochs": 2,
                   "num_train": 1000, "num_held_out": 500},
    "toy": {**SETTINGS["toy"], "copies": 250, "num_epochs": 2, "log_likelihood_samples": 1000, "elbo_samples": 10},
    "mnist": {**SETTINGS["mnist"], "num_epochs": 1, "num_train": 500, "num_test": 50,
              "log_likelihood_samples": 10},
}  # fmt: skip
# The fingerprints (fingerprint.py): the quick runs, with every pair of Gaussians the full settings use.
FINGERPRINT = {**QUICK, "estimators": {**QUICK["estimators"], "pairs": GAUSSIAN_PAIRS}}


def numpy_gaussian_kl(mean, log_var):
    """KL[N(mean, diag(exp(log_var))) || N(0, I)] in nats, in float64."""
    import numpy as np

    mean, log_var = np.asarray(mean, "float64"), np.asarray(log_var, "float64")
    return float(0.5 * np.sum(np.exp(log_var) + mean**2 - 1.0 - log_var))


def density_ratio_model(latent_dim, settings):
    """A model whose only losses are those of an `AdversarialKL` fed ``z ~ q`` and ``z_prior ~ p``."""
    import keras

    from discriminator import build_discriminator
    from kl_divergence import AdversarialKL

    x = keras.Input((1,), name="x")  # no data: T depends on z only
    z = keras.Input((1, latent_dim), name="z")
    z_prior = keras.Input((1, latent_dim), name="z_prior")
    units, hidden_layers = settings["discriminator_units"], settings["discriminator_layers"]
    discriminator = build_discriminator(1, latent_dim, units, hidden_layers)
    kl = AdversarialKL(discriminator, name="kl_divergence")
    outputs = kl({"x": x, "z": z, "z_prior": z_prior})["z"]
    return keras.Model([x, z, z_prior], outputs), discriminator


def estimators(settings):
    """Per pair: exact KL, Monte Carlo spread, and ``mean T`` on held-out draws after every epoch."""
    import numpy as np

    rng = np.random.default_rng(settings["seed"])
    results = {}
    for name, pair in settings["pairs"].items():
        results[name] = estimate_pair(pair, settings, rng)
        r = results[name]
        print(f"  {name}: KL {r['exact_kl']:.2f}, T {r['adversarial_final']:.2f}, MC sd {r['monte_carlo_sd']:.2f}")
    return results


def estimate_pair(pair, settings, rng):
    """The estimators for ``q = N(mean, diag(exp(log_var)))`` against ``p = N(0, I)``."""
    import keras
    import numpy as np
    from keras import ops

    keras.utils.set_random_seed(settings["seed"])
    mean, log_var = np.array(pair["mean"]), np.array(pair["log_var"])
    std, dim, n = np.exp(0.5 * log_var), len(mean), settings["num_train"]

    def log_ratio(z):
        return np.sum(-0.5 * ((z - mean) / std) ** 2 - 0.5 * log_var + 0.5 * z**2, axis=-1)

    z_q = (mean + std * rng.standard_normal((n, 1, dim))).astype("float32")
    z_p = rng.standard_normal((n, 1, dim)).astype("float32")
    held_out = (mean + std * rng.standard_normal((settings["num_held_out"], dim))).astype("float32")
    mixed = np.concatenate([held_out, rng.standard_normal(held_out.shape).astype("float32")])
    model, discriminator = density_ratio_model(dim, settings)
    model.compile(optimizer=keras.optimizers.Adam(settings["learning_rate"]), jit_compile=True)

    def t_of(points):
        return ops.convert_to_numpy(discriminator([np.zeros((len(points), 1), "float32"), points[:, None]]))[:, 0]

    curve = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: curve.append(float(t_of(held_out).mean())))
    model.fit([np.zeros((n, 1), "float32"), z_q, z_p], epochs=settings["epochs"], batch_size=settings["batch_size"],
              verbose=0, callbacks=[record])  # fmt: skip
    terms, t_final = log_ratio(held_out.astype("float64")), t_of(held_out)
    return {
        "latent_dim": dim,
        "exact_kl": numpy_gaussian_kl(mean, log_var),
        "monte_carlo_mean": float(terms.mean()),
        "monte_carlo_sd": float(terms.std()),
        "steps_per_epoch": math.ceil(n / settings["batch_size"]),
        "adversarial_curve": curve,
        "adversarial_final": float(t_final.mean()),
        "adversarial_sd": float(t_final.std()),
        "adversarial_correlation": float(np.corrcoef(t_of(mixed), log_ratio(mixed.astype("float64")))[0, 1]),
    }


def prior_log_likelihood(vae, x, num_samples, seed):
    """``log p(x)`` by importance sampling with the prior as proposal (any posterior): ``(log_px, stderr)``.

    ``log (1/M) sum_m p(x|z_m)`` with ``z_m ~ p(z)``, by log-sum-exp; the
    standard error is the delta method's, ``sd(w) / (sqrt(M) mean(w))``.
    """
    import numpy as np
    from keras import ops

    from likelihoods import negative_log_likelihood

    decoder = vae.get_layer("decoder")
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((len(x), num_samples, decoder.inputs[0].shape[-1])).astype("float32")
    log_w = -ops.convert_to_numpy(negative_log_likelihood("bernoulli", x, decoder(z))).astype("float64")
    shift = log_w.max(axis=1, keepdims=True)
    w = np.exp(log_w - shift)
    log_px = np.log(w.mean(axis=1)) + shift[:, 0]
    return log_px, w.std(axis=1) / (np.sqrt(num_samples) * w.mean(axis=1))


def train(x_train, parts, settings, verbose=0, callbacks=None):
    """`compose_vae` with ``parts`` and the settings' architecture, fitted by `fit_vae`: ``(vae, history)``."""
    import keras

    from compose import compose_vae
    from training import fit_vae

    keras.utils.set_random_seed(settings["seed"])
    vae = compose_vae(x_train.shape[-1], **parts, **settings["architecture"])
    history = fit_vae(
        vae, x_train, epochs=settings["num_epochs"], batch_size=settings["batch_size"],
        mc_samples=settings["mc_samples"], learning_rate=settings["learning_rate"], binarize=True,
        seed=settings["seed"], verbose=verbose, callbacks=callbacks,
    )  # fmt: skip
    return vae, history


def toy(settings, output_dir):
    """Four one-hot points: a Gaussian-posterior VAE against AVB with an implicit posterior."""
    import numpy as np

    from training import elbo_terms

    x_points = np.eye(4, dtype="float32")
    x_train = np.tile(x_points, (settings["copies"], 1))
    results = {"optimum_log_likelihood": -math.log(4)}
    for name, parts in settings["models"].items():
        start = time.perf_counter()
        vae, history = train(x_train, parts, settings)
        seconds = time.perf_counter() - start
        terms = elbo_terms(vae, x_points, mc_samples=settings["elbo_samples"], seed=settings["seed"])
        log_px, stderr = prior_log_likelihood(vae, x_points, settings["log_likelihood_samples"], settings["seed"])
        kl = terms.get("rate_exact", terms["rate"])
        results[name] = {
            **parts,
            "log_likelihood": log_px.tolist(),
            "log_likelihood_stderr": stderr.tolist(),
            "mean_log_likelihood": float(log_px.mean()),
            "distortion": terms["distortion"].tolist(),
            "kl": kl.tolist(),
            "kl_kind": "exact" if "rate_exact" in terms else "adversarial estimate",
            "mean_negative_elbo": float((terms["distortion"] + kl).mean()),
            "final_train_loss": float(history["loss"][-1]),
            "train_seconds": seconds,
        }
        if output_dir is not None:
            provenance.save_model(vae, output_dir / "toy" / f"{name}.keras")
        print(f"  toy {name}: mean log p(x) {log_px.mean():.3f} (optimum {-math.log(4):.3f}), {seconds:.0f} s")
    return results


def mnist(settings, output_dir):
    """The same model trained with each estimator; test negative ELBO, KL estimates and log-likelihood."""
    import numpy as np

    from epoch_timer import make_epoch_timer
    from log_likelihood import log_likelihood
    from mnist_data import binarize_once, flatten_and_scale, load_mnist
    from training import elbo_terms

    (x_train, _), (x_test, _) = load_mnist()
    x_train = flatten_and_scale(x_train[: settings["num_train"]])
    x_test = binarize_once(flatten_and_scale(x_test[: settings["num_test"]]), settings["test_binarization_seed"])
    results, per_image = {}, {}
    verbose = 1 if sys.stdout.isatty() else 2
    for row, parts in settings["rows"].items():
        print(f"  mnist {row} ...", flush=True)
        timer = make_epoch_timer()
        start = time.perf_counter()
        vae, history = train(x_train, parts, settings, verbose, [timer])
        train_seconds = time.perf_counter() - start
        terms = elbo_terms(vae, x_test, mc_samples=settings["mc_samples"], seed=settings["seed"])
        result = {
            **parts,
            "num_epochs": len(timer.seconds),
            "train_seconds": train_seconds,
            "seconds_per_epoch": float(np.median(timer.seconds[1:] or timer.seconds)),
            "final_train_loss": float(history["loss"][-1]),
            "test_distortion": float(terms["distortion"].mean()),
        }
        if "rate_exact" in terms:  # a posterior with a density: the exact ELBO and log p(x)
            negative_elbo = terms["distortion"] + terms["rate_exact"]
            result["test_kl_exact"] = float(terms["rate_exact"].mean())
            result["test_negative_elbo"] = float(negative_elbo.mean())
            result["test_negative_elbo_stderr"] = float(negative_elbo.std(ddof=1) / math.sqrt(len(x_test)))
            start = time.perf_counter()
            log_px = log_likelihood(vae, x_test, "bernoulli", settings["log_likelihood_samples"], seed=settings["seed"])
            result["test_nll"] = float(-log_px.mean())
            result["test_nll_stderr"] = float(log_px.std(ddof=1) / math.sqrt(len(log_px)))
            result["log_likelihood_seconds"] = time.perf_counter() - start
            per_image[row] = log_px
        if parts["divergence"] in ("adversarial", "adaptive_contrast"):
            result["test_kl_adversarial"] = float(terms["rate"].mean())
            result["test_negative_elbo_adversarial"] = float((terms["distortion"] + terms["rate"]).mean())
        results[row] = result
        if output_dir is not None:
            provenance.save_model(vae, output_dir / "mnist" / f"{row}.keras")
        print(f"  mnist {row}: " + ", ".join(f"{k} {v:.2f}" for k, v in result.items() if isinstance(v, float)))
    # Each row against the closed form on the same test images: the mean per-image difference of log p(x).
    results["paired_with_closed_form"] = provenance.paired_differences(per_image, "closed_form")
    if output_dir is not None:  # log p(x) per test image, for paired comparisons of the rows
        provenance.save_arrays(output_dir / "mnist" / "log_px.npz", per_image)
    return results


def run_part(part, settings, output_dir):
    if part == "estimators":
        return estimators(settings)
    return {"toy": toy, "mnist": mnist}[part](settings, output_dir)


def main(argv=None):
    return provenance.run_experiments(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())

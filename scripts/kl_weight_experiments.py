"""Train MNIST VAEs with a KL weight (beta) or a KL warm-up and measure what each does to the latent code.

Writes, in ``--output-dir`` (default ``results/kl-weight``), one record per
part, each with the SHA-256 of the inputs it came from:

* ``beta.json``: the ELBO's KL term weighted by ``beta`` throughout training;
* ``warmup.json``: the weight rising linearly over the first epochs, from
  ``1 / W`` at the first of the ``W`` steps to 1, then 1
  (`objectives.KLWeight`).

Every model is Burda et al.'s one-stochastic-layer MNIST VAE (784-200-200-50,
tanh, Bernoulli on binarised pixels, as the IWAE table's), trained from the
same seed with the same budget. For each: the test NLL by importance
sampling on the first test images (binarised once), the rate (the KL term)
and the distortion (``-log p(x|z)``) of the ELBO on them, the KL per latent
dimension and the active units, and the paired difference of its test NLL
from the unweighted model's (``beta = 1``, no warm-up) on the same images
and draws.

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

OUTPUT_DIR = REPO_ROOT / "results" / "kl-weight"
PARTS = ("beta", "warmup")
MNIST_PARTS = PARTS
ARCHITECTURE = {"latent_dim": 50, "hidden_units": 200, "hidden_layers": 2, "activation": "tanh"}  # Burda et al.'s
COMMON = {
    **ARCHITECTURE,
    "num_train": 60000,
    "num_epochs": 13,
    "batch_size": 100,
    "learning_rate": 1e-3,
    "num_test": 1000,
    "num_samples": 1000,
    "elbo_samples": 10,
    "seed": 0,
}
# The values swept: beta; the epochs of warm-up. The unweighted ELBO (beta = 1, no warm-up) is in both.
SETTINGS = {  # the reference value first
    "beta": {**COMMON, "values": [1.0, 0.25, 0.5, 2.0, 4.0]},
    "warmup": {**COMMON, "values": [0, 1, 3, 9]},
}
QUICK = {
    part: {
        **SETTINGS[part],
        "latent_dim": 4,
        "hidden_units": 8,
        "num_train": 200,
        "num_epochs": 2,
        "num_test": 10,
        "num_samples": 8,
        "elbo_samples": 2,
        "values": SETTINGS[part]["values"][:3],
    }  # fmt: skip
    for part in PARTS
}
FINGERPRINT = QUICK
REFERENCE = {"beta": 1.0, "warmup": 0}  # the unweighted ELBO


def value_key(value):
    """``"0.25"``, ``"4"``: a record key a dotted result path can name (no ``.0``)."""
    return f"{value:g}".replace(".", "_")


def kl_weight_options(part, value, settings):
    """``compose_vae``'s ``kl_weight`` and ``kl_warmup_steps`` for one value of the sweep."""
    if part == "beta":
        return {"kl_weight": float(value), "kl_warmup_steps": 0}
    steps_per_epoch = math.ceil(settings["num_train"] / settings["batch_size"])
    return {"kl_weight": 1.0, "kl_warmup_steps": int(value) * steps_per_epoch}


def run_part(part, settings, output_dir):
    import keras

    from compose import compose_vae
    from log_likelihood import log_likelihood
    from mnist_data import binarize_once, flatten_and_scale, load_mnist
    from posterior_collapse import active_units, kl_per_dimension, posterior_statistics
    from training import elbo_terms, fit_vae

    if REFERENCE[part] not in settings["values"]:
        raise ValueError(f"Expected the {part} values to include the unweighted ELBO's, {REFERENCE[part]}: the "
                         f"paired differences are from it. Received: {settings['values']}")  # fmt: skip
    (x_train, _), (x_test, _) = load_mnist()
    x_train = flatten_and_scale(x_train[: settings["num_train"]])
    x_test = binarize_once(flatten_and_scale(x_test[: settings["num_test"]]), settings["seed"] + 1)
    seed, results, per_image = settings["seed"], {}, {}
    architecture = {key: settings[key] for key in ("hidden_units", "hidden_layers", "activation")}
    for value in settings["values"]:
        key = value_key(value)
        print(f"  {part} = {value} ...", flush=True)
        options = kl_weight_options(part, value, settings)
        keras.utils.set_random_seed(seed)
        vae = compose_vae(784, settings["latent_dim"], **architecture, **options)
        history = fit_vae(vae, x_train, "bernoulli", epochs=settings["num_epochs"], batch_size=settings["batch_size"],
                          learning_rate=settings["learning_rate"], binarize=True, seed=seed,
                          verbose=1 if sys.stdout.isatty() else 2)  # fmt: skip
        log_px = log_likelihood(vae, x_test, "bernoulli", settings["num_samples"], seed=seed)
        terms = elbo_terms(vae, x_test, "bernoulli", settings["elbo_samples"], seed=seed)
        z_mean, z_log_var = posterior_statistics(vae, x_test)
        per_image[key] = log_px
        results[key] = {
            "value": value,
            **options,
            "train_loss_per_epoch": [float(v) for v in history["loss"]],
            "test_nll": float(-log_px.mean()),
            "test_nll_stderr_over_examples": float(log_px.std(ddof=1) / math.sqrt(len(log_px))),
            "rate": float(terms["rate_exact"].mean()),
            "distortion": float(terms["distortion"].mean()),
            "negative_elbo": float((terms["rate_exact"] + terms["distortion"]).mean()),
            "kl_per_dimension": [float(v) for v in kl_per_dimension(z_mean, z_log_var)],
            "active_units": active_units(z_mean),
        }
        if "kl_weight" in [layer.name for layer in vae.layers]:  # the steps the weight counted: fit's steps
            results[key]["steps_counted"] = int(keras.ops.convert_to_numpy(vae.get_layer("kl_weight").step))
        row = results[key]
        print(f"  {part} = {value}: test NLL {row['test_nll']:.2f}, rate {row['rate']:.2f}, distortion "
              f"{row['distortion']:.2f}, {row['active_units']} active units", flush=True)  # fmt: skip
    # The NLL of each setting minus the unweighted model's, on the same images and draws.
    nll = {key: -values for key, values in per_image.items()}
    paired = provenance.paired_differences(nll, value_key(REFERENCE[part]))
    (output_dir / part).mkdir(parents=True, exist_ok=True)
    provenance.save_arrays(output_dir / part / "log_px.npz", per_image)
    return {"values": results, "paired_with_unweighted": paired, "num_test": len(x_test)}


def main(argv=None):
    return provenance.run_experiments(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())

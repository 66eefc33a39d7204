"""Train and score a combination of parts that no single post builds: IWAE, an IAF posterior, a continuous Bernoulli.

Writes, in ``--output-dir`` (default ``results/composition``), one record per
part, each with the SHA-256 of the inputs it came from:

* ``iaf_iwae_cb.json``: the main post's architecture (784-256-2, relu) with
  an inverse autoregressive flow after the Gaussian posterior, a continuous
  Bernoulli head, trained on the IWAE bound with S samples, on dequantised
  grey-level MNIST, with the likelihoods post's budget (epochs, batch,
  learning rate and its cosine decay); the test log-likelihood by
  importance sampling, in nats and as bits per 8-bit pixel, on the test
  images the likelihoods post scores (the same dequantisation), and the
  per-image difference from that post's continuous-Bernoulli model (its
  committed model scored again, with the same number of samples);
  ``iaf_iwae_cb/vae.keras`` and ``iaf_iwae_cb/log_px.npz`` (``log p(x)``
  per test image, ours and the reference's).

``--if-stale`` runs only the parts whose inputs changed; ``--check`` exits 1
when a record does not match its inputs; ``--quick`` is a seconds-long run
for tests (into another ``--output-dir``).
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

OUTPUT_DIR = REPO_ROOT / "results" / "composition"
MNIST_PARTS = ("iaf_iwae_cb",)
PARTS = ("iaf_iwae_cb",)
SETTINGS = {
    "iaf_iwae_cb": {
        "parts": {"posterior": "iaf", "divergence": "monte_carlo", "likelihood": "continuous_bernoulli",
                  "objective": "iwae"},
        "architecture": {"latent_dim": 2, "hidden_units": 256, "hidden_layers": 1, "activation": "relu",
                         "num_flows": 2, "flow_hidden_units": 64},
        "mc_samples": 5,
        "num_train": 60000,
        "num_test": 10000,
        "num_epochs": 50,
        "batch_size": 100,
        "learning_rate": 1e-3,
        "log_likelihood_samples": 1000,
        "seed": 0,
    },
}  # fmt: skip
# The fingerprint (fingerprint.py): the same run, tiny, on the committed MNIST subset.
FINGERPRINT = {"iaf_iwae_cb": {**SETTINGS["iaf_iwae_cb"], "num_train": 200, "num_test": 10, "num_epochs": 1,
                               "log_likelihood_samples": 10}}  # fmt: skip
# The likelihoods post's continuous-Bernoulli model, scored again on the same images.
REFERENCE_MODEL = REPO_ROOT / "results" / "likelihoods" / "mnist" / "continuous_bernoulli.keras"
INPUT_FILES = {"iaf_iwae_cb": [REFERENCE_MODEL]}


def summary(log_px):
    nll = float(-log_px.mean())
    return {"nll": nll, "nll_stderr": float(log_px.std(ddof=1) / math.sqrt(len(log_px))),
            "bits_per_dim": (nll / 784 + math.log(256.0)) / math.log(2.0)}  # fmt: skip


def iaf_iwae_cb(settings, output_dir):
    import keras

    from compose import compose_vae
    from likelihood_experiments import dequantised_mnist
    from log_likelihood import log_likelihood
    from training import fit_vae

    reference = None
    if settings["num_test"] >= 100:  # the full run compares with the likelihoods post's model: loaded first
        from outputs import load_saved_model

        reference = load_saved_model(REFERENCE_MODEL, "the likelihoods post's continuous Bernoulli model")
    x_train, x_test, _ = dequantised_mnist(settings)  # the likelihoods post's images
    parts, likelihood = settings["parts"], settings["parts"]["likelihood"]
    keras.utils.set_random_seed(settings["seed"])
    start = time.perf_counter()
    vae = compose_vae(784, **parts, **settings["architecture"])
    history = fit_vae(
        vae, x_train, likelihood, parts["objective"], epochs=settings["num_epochs"],
        batch_size=settings["batch_size"], mc_samples=settings["mc_samples"], learning_rate=settings["learning_rate"],
        dequantize=True, seed=settings["seed"], verbose=1 if sys.stdout.isatty() else 2,
    )  # fmt: skip
    results = {"train_seconds": time.perf_counter() - start,
               "train_loss_per_epoch": [float(v) for v in history["loss"]]}  # fmt: skip
    start = time.perf_counter()
    samples = settings["log_likelihood_samples"]
    log_px = log_likelihood(vae, x_test, likelihood, samples, seed=settings["seed"])
    results["test"] = {**summary(log_px), "seconds": time.perf_counter() - start}
    print(f"  test NLL {results['test']['nll']:.2f} nats", flush=True)
    per_image = {"log_px": log_px}
    if reference is not None:  # the full run: the paired difference
        reference_log_px = log_likelihood(reference, x_test, likelihood, samples, seed=settings["seed"])
        # Per image, positive where our combination scores higher.
        paired = provenance.paired_differences({"ours": log_px, "reference": reference_log_px}, "reference")["ours"]
        results["reference"] = {
            "model": str(REFERENCE_MODEL.relative_to(REPO_ROOT)),
            **summary(reference_log_px),
            "paired_difference": paired["difference"],
            "paired_difference_stderr": paired["stderr"],
        }
        per_image["reference_log_px"] = reference_log_px
    if output_dir is not None:  # the model, and log p(x) per test image (for paired comparisons)
        (output_dir / "iaf_iwae_cb").mkdir(parents=True, exist_ok=True)
        provenance.save_model(vae, output_dir / "iaf_iwae_cb" / "vae.keras")
        provenance.save_arrays(output_dir / "iaf_iwae_cb" / "log_px.npz", per_image)
    return results


def run_part(part, settings, output_dir):
    return iaf_iwae_cb(settings, output_dir)


def main(argv=None):
    return provenance.run_experiments(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())

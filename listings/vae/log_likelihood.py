"""Estimate the test log-likelihood of a trained VAE by importance sampling.

For an image ``x`` the marginal likelihood ``p(x) = E_{q(z|x)}[w]``, with the
importance weight ``w = p(x|z) p(z) / q(z|x)``, is estimated by the mean of
``M`` weights of independent draws from the posterior ``q(z|x)``:

    log p(x) ~ log (1/M) sum_m w_m,

computed from the log weights with log-sum-exp (`log_likelihood`).
The estimate is itself the importance-weighted bound of Burda et al. (2015)
with ``M`` samples: below ``log p(x)`` on average, and closer as ``M`` grows.
Its Monte Carlo standard error, by the delta method, is
``sqrt(Var(w) / (M mean(w)**2))``.

Run ``python log_likelihood.py --model results/iwae/iwae-k50/vae.keras`` to
estimate it on the MNIST test set, binarised once, for any model of
`compose.compose_vae` with a Bernoulli likelihood.
"""

import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import compose  # noqa: E402, F401 (registers the layers a saved composed model is made of)
from flows import FlowKL  # noqa: E402
from kl_divergence import MonteCarloKL  # noqa: E402
from likelihoods import negative_log_likelihood  # noqa: E402
from mnist_data import MNISTError, binarize_once, flatten_and_scale, load_mnist  # noqa: E402
from outputs import check_output_file, load_saved_model, write_atomically  # noqa: E402
from variational_autoencoder import check_positive_int, check_positive_ints  # noqa: E402


def density_terms(vae):
    """The tensors of a composed model's graph that ``log q(z|x)`` needs.

    ``z``, ``z_mean`` and ``z_log_var`` for a Gaussian posterior; for a flow
    also ``z_0`` (the Gaussian draw) and ``log_det``, with ``z`` the flow's
    output. An implicit posterior has no density: a ValueError says so.
    """
    names = {layer.name for layer in vae.layers}
    if "log_ratio" not in names:
        raise ValueError(f"Expected a model from `compose_vae`. Received a model with layers {sorted(names)}")
    terms = vae.get_layer("log_ratio").terms()
    if "z_mean" not in terms:
        raise ValueError("An implicit posterior has no density: log q(z|x) cannot be evaluated at its samples.")
    return {name: terms[name] for name in ("z", "z_mean", "z_log_var", "z_0", "log_det") if name in terms}


# [start score]
def exact_log_ratio_model(vae):
    """``[x, eps] -> [parameters, log p(z) - log q(z|x) per sample]`` with the posterior's own density.

    Whatever divergence ``vae`` trained with (a closed form, a discriminator),
    a Gaussian or flow posterior has a density, so ``log q(z|x)`` is
    evaluated exactly at every sample: the same layers and weights, another
    head on the graph.
    """
    terms = density_terms(vae)
    scorer = keras.Model(vae.inputs[:2], {"parameters": vae.get_layer("parameters").output, **terms})
    estimator = FlowKL() if "log_det" in terms else MonteCarloKL()

    def score(x, eps):
        outputs = scorer([x, eps], training=False)
        return outputs["parameters"], -estimator.kl_terms(outputs), outputs

    return score


def log_weight_model(vae, likelihood="bernoulli"):
    """``[x, eps] -> log w`` per sample: ``log p(x|z) + log p(z) - log q(z|x)``, one compiled function.

    The graph of `exact_log_ratio_model` with the likelihood on top, so that
    the whole batch of ``M`` draws per image is one call, XLA-compiled where
    the backend can (``jit_compile="auto"``: JAX and TensorFlow).
    """
    x, eps = vae.inputs[:2]
    terms = density_terms(vae)
    scorer = keras.Model([x, eps], {"parameters": vae.get_layer("parameters").output, **terms})
    outputs = scorer([x, eps])
    estimator = FlowKL() if "log_det" in terms else MonteCarloKL()
    log_w = -negative_log_likelihood(likelihood, x, outputs["parameters"]) - estimator.kl_terms(outputs)
    model = keras.Model([x, eps], log_w, name="log_weights")
    model.compile(jit_compile="auto")
    return model


def log_likelihood(vae, x, likelihood="bernoulli", num_samples=1000, batch_size=10, seed=0, verbose=0,
                   return_stderr=False):  # fmt: skip
    """Importance-sampled ``log p(x)`` per image, in nats, from ``M = num_samples`` draws of ``eps``.

    With ``z_m ~ q(z|x)`` and weights ``w_m = p(x|z_m) p(z_m) / q(z_m|x)``,
    ``log (1/M) sum_m w_m`` is the importance-weighted bound with ``M``
    samples: below ``log p(x)`` in expectation, and tighter as ``M`` grows
    (Burda, Grosse & Salakhutdinov 2015). The log weights are the ones the
    IWAE objective reduces, on a batch of ``M`` draws per image, so nothing
    is rebuilt, whatever ``S`` the model trained with (one compiled call per
    batch, `log_weight_model`); their log-mean-exp is taken in ``float64``.
    It needs ``log q(z|x)`` at every sample, which any posterior with a
    density has (see `exact_log_ratio_model`).

    With ``return_stderr``, returns ``(log_px, stderr)``: ``stderr`` is the
    Monte Carlo standard error of each estimate by the delta method,
    ``sqrt(Var(w) / (M mean(w)**2))`` (``nan`` for ``M = 1``).
    """
    check_positive_ints(num_samples=num_samples, batch_size=batch_size)
    log_weights = log_weight_model(vae, likelihood)
    x = np.asarray(x, dtype="float32")
    log_px, stderr = np.empty(len(x)), np.full(len(x), np.nan)
    progress = keras.utils.Progbar(len(x), unit_name="image", verbose=verbose)
    for start in range(0, len(x), batch_size):
        x_batch = x[start : start + batch_size]
        rows = slice(start, start + len(x_batch))
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(start,)))
        eps = rng.standard_normal((len(x_batch), num_samples, vae.inputs[1].shape[-1]), dtype="float32")
        log_w = keras.ops.convert_to_numpy(log_weights.predict_on_batch([x_batch, eps])).astype("float64")
        peak = log_w.max(axis=-1, keepdims=True)
        log_px[rows] = peak[:, 0] + np.log(np.mean(np.exp(log_w - peak), axis=-1))
        if num_samples > 1:  # w / mean(w), each at most M: no overflow
            stderr[rows] = np.std(np.exp(log_w - log_px[rows, None]), axis=-1, ddof=1) / np.sqrt(num_samples)
        progress.add(len(x_batch))
    return (log_px, stderr) if return_stderr else log_px


# [end score]


def summarise(log_px, stderr):
    """The mean over examples, its standard error over examples, and the Monte Carlo error of the mean."""
    return {
        "log_likelihood": float(np.mean(log_px)),
        "stderr_over_examples": float(np.std(log_px, ddof=1) / np.sqrt(len(log_px))) if len(log_px) > 1 else None,
        "monte_carlo_stderr": float(np.sqrt(np.sum(stderr**2)) / len(log_px)),
        "num_examples": len(log_px),
    }


def load_vae(path):
    """A composed VAE saved by these listings, with a density to score; a ValueError otherwise."""
    path = pathlib.Path(path)
    vae = load_saved_model(path, "a composed model saved by these listings")
    density_terms(vae)  # a model of compose_vae whose posterior has a density
    if vae.outputs[0].shape[-1] != 784:
        raise ValueError(f"Expected a model of 784-pixel MNIST images. Received outputs {vae.outputs[0].shape}")
    return vae


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a vae.keras saved by importance_weighted.py or fit_vae")
    parser.add_argument(
        "--num-samples", type=int, default=5000, help="M, importance samples per image (default: %(default)s)"
    )
    parser.add_argument("--num-examples", type=int, default=None, help="the first N test images (default: all 10,000)")
    parser.add_argument("--batch-size", type=int, default=10, help="images at once (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default: %(default)s)")
    parser.add_argument(
        "--binarization-seed", type=int, default=1, help="seed of the fixed test binarisation (default: %(default)s)"
    )
    parser.add_argument(
        "--mnist-dir", default=None, help="MNIST folder (default: $MNIST_DIR, else ../shared/data/mnist)"
    )
    parser.add_argument("--output", default=None, help="also write the result as JSON to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        check_positive_ints(num_samples=args.num_samples, batch_size=args.batch_size)
        if args.num_examples is not None:
            check_positive_int("num_examples", args.num_examples)
        if args.output:  # before the work: a folder that can take the file
            check_output_file(args.output)
        vae = load_vae(args.model)
        _, (x_test, _) = load_mnist(args.mnist_dir)
        x = binarize_once(flatten_and_scale(x_test[: args.num_examples]), args.binarization_seed)
        log_px, stderr = log_likelihood(vae, x, "bernoulli", args.num_samples, args.batch_size, args.seed,
                                        verbose=0 if args.quiet else 1, return_stderr=True)  # fmt: skip
    except (MNISTError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    result = {**summarise(log_px, stderr), "num_samples": args.num_samples, "model": str(args.model)}
    print(
        f"test log-likelihood {result['log_likelihood']:.2f} nats per image "
        f"(standard error {result['stderr_over_examples'] or float('nan'):.2f} over "
        f"{result['num_examples']} images, Monte Carlo error {result['monte_carlo_stderr']:.3f}, "
        f"M = {args.num_samples})"
    )
    if args.output:
        write_atomically(args.output, lambda partial: partial.write_text(json.dumps(result, indent=2) + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Estimate the test log-likelihood of a trained VAE by importance sampling.

For an image ``x`` the marginal likelihood ``p(x) = E_{q(z|x)}[w]``, with the
importance weight ``w = p(x|z) p(z) / q(z|x)``, is estimated by the mean of
``K`` weights of independent draws from the encoder's ``q(z|x)``:

    log p(x) ~ log (1/K) sum_k w_k,

computed from the log weights with log-sum-exp. The estimate is itself the
importance-weighted bound of Burda et al. (2015) with ``K`` samples: below
``log p(x)`` on average, and closer as ``K`` grows. Run
``python log_likelihood.py --model vae_output/vae.keras`` to estimate it on
the MNIST test set.
"""

import argparse
import json
import math
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from importance_weighted import LogDensityRatio, log_density_ratio, log_mean_exp  # noqa: E402, F401
from mnist_data import MNISTError, flatten_and_scale, load_mnist  # noqa: E402
from train import binarize_once  # noqa: E402
from variational_autoencoder import (  # noqa: E402
    BernoulliNegativeLogLikelihood,
    KLDivergenceLayer,
    check_positive_int,
    check_positive_ints,
)

# Memory for one chunk of samples: the decoder's activations for every
# (example, sample) pair, float32, with room for the intermediates.
MEMORY_BUDGET_BYTES = 1 << 30


# [start log-weights]
def log_importance_weights(x, z_mean, z_log_var, log_likelihood, eps):
    """``log w = log p(x|z) + log p(z) - log q(z|x)`` at ``z = z_mean + exp(z_log_var / 2) * eps``.

    ``z_mean`` and ``z_log_var`` have shape (batch, latent_dim), ``eps`` has
    shape (batch, samples, latent_dim) and ``log_likelihood(x, z)`` returns
    ``log p(x|z)`` of shape (batch, samples); so does this function. The
    prior and posterior terms are the training objective's `log_density_ratio`.
    """
    z = ops.expand_dims(z_mean, -2) + ops.exp(0.5 * ops.expand_dims(z_log_var, -2)) * eps
    return log_likelihood(x, z) + log_density_ratio(z, z_log_var, eps)


# [end log-weights]


def samples_per_chunk(batch_size, num_samples, floats_per_sample, budget_bytes=MEMORY_BUDGET_BYTES):
    """How many of the ``num_samples`` to draw at once so a chunk fits in ``budget_bytes``."""
    per_sample = 4 * 4 * floats_per_sample * batch_size  # float32, ~4 live copies
    chunk = budget_bytes // per_sample
    if chunk < 1:
        raise ValueError(
            f"One sample for a batch of {batch_size} examples needs {per_sample:,} bytes, more than the "
            f"budget of {budget_bytes:,}. Expected a smaller `batch_size`."
        )
    return int(min(num_samples, chunk))


# [start estimator]
def importance_sampled_log_likelihood(
    x, z_mean, z_log_var, log_likelihood, num_samples=5000, chunk_size=None, seed=0, floats_per_sample=None
):
    """Importance-sampling estimate of ``log p(x)`` for each row of ``x``, in nats.

    Args:
        x: array (batch, dim), the data.
        z_mean, z_log_var: arrays (batch, latent_dim), the Gaussian ``q(z|x)``.
        log_likelihood: function ``(x, z) -> log p(x|z)``, with ``z`` of
            shape (batch, samples, latent_dim) and the result (batch, samples).
        num_samples: ``K``, draws of ``z`` per example.
        chunk_size: draws evaluated at once (default: as many as fit in
            ``MEMORY_BUDGET_BYTES``, given ``floats_per_sample``).
        seed: seed of the draws; the estimate does not depend on ``chunk_size``.
        floats_per_sample: floats the log-likelihood keeps per sample and
            example (default: ``x``'s dimension), to size the chunks.

    Returns:
        ``(log_px, stderr)``: arrays (batch,), the estimate and its Monte Carlo
        standard error (delta method; ``nan`` when ``num_samples`` is 1).
    """
    num_samples = check_positive_int("num_samples", num_samples)
    x, z_mean, z_log_var = (np.asarray(a, dtype="float32") for a in (x, z_mean, z_log_var))
    if z_mean.shape != z_log_var.shape or z_mean.shape[0] != x.shape[0]:
        raise ValueError(
            "Expected `z_mean` and `z_log_var` of the same shape (batch, latent_dim), batch as in `x`. "
            f"Received: x.shape={x.shape}, z_mean.shape={z_mean.shape}, z_log_var.shape={z_log_var.shape}"
        )
    batch, latent_dim = z_mean.shape
    if chunk_size is None:
        chunk_size = samples_per_chunk(batch, num_samples, floats_per_sample or x.shape[-1])
    chunk_size = check_positive_int("chunk_size", chunk_size)
    eps = np.random.default_rng(seed).standard_normal((batch, num_samples, latent_dim), dtype="float32")
    # Running log-sums of w and w**2 over the chunks, in float64.
    log_sum_w = np.full(batch, -np.inf)
    log_sum_w2 = np.full(batch, -np.inf)
    for start in range(0, num_samples, chunk_size):
        log_w = log_importance_weights(x, z_mean, z_log_var, log_likelihood, eps[:, start : start + chunk_size])
        log_w = ops.convert_to_numpy(log_w).astype("float64")
        log_sum_w = np.logaddexp(log_sum_w, _logsumexp(log_w))
        log_sum_w2 = np.logaddexp(log_sum_w2, _logsumexp(2 * log_w))
    log_px = log_sum_w - math.log(num_samples)
    # Var(w) / E[w]**2, estimated without leaving log space until the end.
    relative_variance = np.expm1(np.maximum(log_sum_w2 - math.log(num_samples) - 2 * log_px, 0.0))
    if num_samples == 1:
        return log_px, np.full(batch, np.nan)
    return log_px, np.sqrt(relative_variance / (num_samples - 1))


# [end estimator]


def _logsumexp(values):
    peak = np.max(values, axis=-1)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    return peak + np.log(np.sum(np.exp(values - peak[:, None]), axis=-1))


# [start vae-log-likelihood]
def vae_parts(vae):
    """The encoder and decoder of a VAE of ours (`build_vae` or `build_bound_vae`); a clear error otherwise."""
    names = {layer.name for layer in vae.layers}
    ours = any(isinstance(layer, (KLDivergenceLayer, LogDensityRatio)) for layer in vae.layers)
    if not {"encoder", "decoder"} <= names or not ours:
        raise ValueError(
            "Expected a VAE built by `build_vae` or `build_bound_vae` (nested models 'encoder' and 'decoder' "
            f"and a KLDivergenceLayer or LogDensityRatio). Received a model with layers {sorted(names)}"
        )
    return vae.get_layer("encoder"), vae.get_layer("decoder")


def vae_log_likelihood(vae, x, num_samples=5000, batch_size=100, seed=0, verbose=1):
    """``log p(x)`` for each row of binary ``x`` under a trained VAE: ``(log_px, stderr)``."""
    encoder, decoder = vae_parts(vae)
    batch_size = check_positive_int("batch_size", batch_size)
    nll = BernoulliNegativeLogLikelihood(reduction=None)

    def log_likelihood(x_batch, z):
        return -nll(x_batch, decoder(z, training=False))

    widths = sum(layer.units for layer in decoder.layers if hasattr(layer, "units"))
    progress = keras.utils.Progbar(len(x), unit_name="image", verbose=verbose)
    log_px, stderr = np.empty(len(x)), np.empty(len(x))
    for start in range(0, len(x), batch_size):
        x_batch = x[start : start + batch_size]
        z_mean, z_log_var = encoder(x_batch, training=False)
        rows = slice(start, start + len(x_batch))
        log_px[rows], stderr[rows] = importance_sampled_log_likelihood(
            x_batch,
            ops.convert_to_numpy(z_mean),
            ops.convert_to_numpy(z_log_var),
            log_likelihood,
            num_samples=num_samples,
            seed=seed + start,
            floats_per_sample=widths,
        )
        progress.add(len(x_batch))
    return log_px, stderr


# [end vae-log-likelihood]


def summarise(log_px, stderr):
    """The mean over examples, its standard error over examples, and the Monte Carlo error of the mean."""
    return {
        "log_likelihood": float(np.mean(log_px)),
        "stderr_over_examples": float(np.std(log_px, ddof=1) / np.sqrt(len(log_px))) if len(log_px) > 1 else None,
        "monte_carlo_stderr": float(np.sqrt(np.sum(stderr**2)) / len(log_px)),
        "num_examples": len(log_px),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a vae.keras saved by train.py")
    parser.add_argument(
        "--num-samples", type=int, default=5000, help="K, importance samples per image (default: %(default)s)"
    )
    parser.add_argument(
        "--num-examples", type=int, default=None, help="use the first N test images (default: all 10,000)"
    )
    parser.add_argument("--batch-size", type=int, default=100, help="images at once (default: %(default)s)")
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
        path = pathlib.Path(args.model)
        if not path.is_file():
            raise ValueError(f"Model file not found: {path}")
        try:
            vae = keras.saving.load_model(path, safe_mode=True)
        except Exception as error:  # noqa: BLE001 (any unreadable file gets the same one-line report)
            raise ValueError(f"Could not load {path} as a Keras model: {type(error).__name__}") from None
        vae_parts(vae)
        _, (x_test, _) = load_mnist(args.mnist_dir)
        x = binarize_once(flatten_and_scale(x_test[: args.num_examples]), args.binarization_seed)
        log_px, stderr = vae_log_likelihood(
            vae, x, args.num_samples, args.batch_size, args.seed, verbose=0 if args.quiet else 1
        )
    except (MNISTError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    result = {**summarise(log_px, stderr), "num_samples": args.num_samples, "model": str(args.model)}
    print(
        f"test log-likelihood {result['log_likelihood']:.2f} nats per image "
        f"(standard error {result['stderr_over_examples'] or float('nan'):.2f} over "
        f"{result['num_examples']} images, Monte Carlo error {result['monte_carlo_stderr']:.3f}, "
        f"K = {args.num_samples})"
    )
    if args.output:
        pathlib.Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

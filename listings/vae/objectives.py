"""The objectives: the ELBO and the importance-weighted bound, two reductions of the same log weights.

For an image ``x`` and ``S`` draws ``z_s ~ q(z|x)``, every part of the
model contributes to one log weight per sample,

    log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x),

and the objective reduces the ``S`` weights to one number per image: the
ELBO is their mean, the bound of Burda, Grosse & Salakhutdinov (2015)

    L_S = log (1/S) sum_s w_s

their log-mean-exp, computed with ``logsumexp`` so that no weight is
exponentiated on its own. ``L_1`` is the ELBO, ``L_S`` never decreases
with ``S``, and it tends to ``log p(x)`` as ``S`` grows.

Run ``python objectives.py`` to print both bounds of a few log weights.
"""

import argparse
import math
import sys

import keras
import numpy as np
from keras import ops

from variational_autoencoder import PACKAGE

OBJECTIVES = ("elbo", "iwae")


def check_objective(objective):
    if objective not in OBJECTIVES:
        raise ValueError(f"Expected `objective` to be one of {OBJECTIVES}. Received: objective={objective!r}")
    return objective


# [start log-weights]
def log_mean_exp(values, axis=-1):
    """``log(mean(exp(values)))`` along ``axis``, without overflow or underflow.

    >>> float(log_mean_exp(np.array([1e4, 1e4], dtype="float32")))
    10000.0
    """
    count = ops.shape(values)[axis]  # a tensor when the number of samples is left free in a traced graph
    log_count = math.log(count) if isinstance(count, int) else ops.log(ops.cast(count, values.dtype))
    return ops.logsumexp(values, axis=axis) - log_count


def bound_from_log_weights(log_w, objective):
    """The ELBO (mean) or the importance-weighted bound (log-mean-exp) of ``log_w`` over its last axis."""
    if check_objective(objective) == "iwae":
        return log_mean_exp(log_w, axis=-1)
    return ops.mean(log_w, axis=-1)


# [end log-weights]


# [start bound-model]
@keras.saving.register_keras_serializable(package=PACKAGE)
class BoundModel(keras.Model):
    """A functional model whose one loss sees all its outputs at once.

    Keras scores each output of a model with its own loss; a bound couples
    the likelihood's parameters and the log density ratio inside one
    log-mean-exp, so this model hands both outputs to its one loss.
    Everything else (``fit``, ``evaluate``, XLA, saving) is ordinary Keras.
    """

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        losses = [self.loss(y, y_pred, sample_weight)]
        losses += [ops.sum(loss) for loss in self.losses]  # a discriminator's loss, weight regularisers
        return ops.sum(ops.stack(losses)) if len(losses) > 1 else losses[0]


# [end bound-model]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=5, help="S, log weights per image (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the log weights (default: 0)")
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.exit(2, f"{parser.prog}: error: expected --samples to be a positive integer, received {args.samples}\n")
    log_w = np.random.default_rng(args.seed).normal(-100.0, 3.0, size=(3, args.samples)).astype("float32")
    for objective in OBJECTIVES:
        bound = ops.convert_to_numpy(bound_from_log_weights(log_w, objective))
        print(f"{objective}: " + ", ".join(f"{value:.3f}" for value in bound) + " nats")
    return 0


if __name__ == "__main__":
    sys.exit(main())

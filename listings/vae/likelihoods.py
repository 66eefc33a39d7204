"""Likelihood heads: the negative log-likelihoods one VAE skeleton can be trained on.

Each function maps what a network outputs to the parameters of a
distribution and returns the exact negative log-likelihood of the data under
it, in nats, summed over the data dimensions (the last axis), normalising
constants included:

* `bernoulli_nll`: binary data, from logits (the first post's loss);
* `continuous_bernoulli_nll`: intensities in [0, 1], from logits, with the
  normaliser of Loaiza-Ganem & Cunningham (2019, arXiv:1907.06845) computed
  stably at and near logit 0 and for logits of any size;
* `gaussian_nll`: real values, from a mean and a log standard deviation,
  either one per dimension learned as a weight (`LearnedLogScale`,
  homoscedastic) or one per output (heteroscedastic);
* `categorical_nll`: class labels, from logits.

When the parameters carry a Monte Carlo axis, shape (batch, samples, dim),
the data of shape (batch, dim) are broadcast against every sample.
`check_support` gives a clear error for data outside a likelihood's support.

Run ``python likelihoods.py --x 0.2 0.5 0.9 --logit 0.0`` to print the NLL of
each value under every likelihood that supports it.
"""

import argparse
import math
import sys

import keras
import numpy as np
from keras import layers, ops

from variational_autoencoder import PACKAGE

LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian", "categorical")


def check_support(likelihood, x, num_classes=None):
    """``x`` as a float32 (or int, for labels) array after checking it lies in the likelihood's support."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"Expected a likelihood in {LIKELIHOODS}. Received: {likelihood!r}")
    x = np.asarray(x)
    if likelihood == "categorical":
        if num_classes is None:
            raise ValueError("A categorical likelihood needs `num_classes`.")
        if not np.issubdtype(x.dtype, np.integer) and not np.all(np.mod(x, 1) == 0):
            raise ValueError(f"Expected integer class labels. Received dtype={x.dtype} with non-integer values")
        if x.size and (x.min() < 0 or x.max() >= num_classes):
            raise ValueError(
                f"Expected labels in [0, {num_classes - 1}] for {num_classes} classes. "
                f"Received: min={x.min()}, max={x.max()}"
            )
        return x.astype("int32")
    if not np.all(np.isfinite(x)):
        raise ValueError("Expected finite data. Received NaN or inf.")
    if likelihood == "bernoulli" and x.size and not np.all((x == 0) | (x == 1)):
        bad = x[(x != 0) & (x != 1)].flat[0]
        raise ValueError(f"Expected binary data (0 or 1) for a Bernoulli likelihood. Received a value {bad}")
    if likelihood == "continuous_bernoulli" and x.size and (x.min() < 0 or x.max() > 1):
        raise ValueError(
            f"Expected data in [0, 1] for a continuous Bernoulli likelihood. Received: min={x.min()}, max={x.max()}"
        )
    return x.astype("float32")


def broadcast_to_samples(x, parameters):
    """``x`` of shape (batch, dim) as (batch, 1, dim) when the parameters have a samples axis."""
    x = ops.convert_to_tensor(x, dtype=parameters.dtype)
    while len(x.shape) < len(parameters.shape):
        x = ops.expand_dims(x, axis=-2)
    return x


# [start bernoulli]
def bernoulli_nll(x, logits):
    """``-log Bernoulli(x; sigmoid(logits))`` summed over the last axis: ``softplus(l) - x l`` per dimension.

    ``softplus`` is computed without overflow for any logit, and its gradient
    is ``sigmoid(l)`` everywhere; writing it as
    ``relu(l) + log1p(exp(-|l|))`` would give the same values but a gradient
    off by 1/2 at exactly ``l = 0``, where ``relu`` and ``abs`` have kinks.
    """
    x = broadcast_to_samples(x, logits)
    return ops.sum(ops.softplus(logits) - x * logits, axis=-1)


# [end bernoulli]


# [start continuous-bernoulli]
def continuous_bernoulli_log_normaliser(logits):
    """``log C(lambda)``, ``lambda = sigmoid(logits)``, of the continuous Bernoulli, elementwise.

    ``C(lambda) = 2 artanh(1 - 2 lambda) / (1 - 2 lambda)``, which in terms of the
    logit ``l`` is ``l / tanh(l / 2)``: even in ``l``, 2 at ``l = 0``. For
    ``a = |l| >= 0.1`` it is computed as
    ``log a - log(1 - e^-a) + log(1 + e^-a)``, finite for any ``a``; below,
    by its series ``log 2 + a^2 / 12 - 7 a^4 / 1440``, whose error there is
    below 1e-9, because the closed form cancels catastrophically at 0.
    """
    a = ops.abs(logits)
    small = a < 0.1
    safe = ops.where(small, ops.ones_like(a), a)  # keeps the unused branch finite (and its gradient)
    closed_form = ops.log(safe) - ops.log(-ops.expm1(-safe)) + ops.log1p(ops.exp(-safe))
    series = math.log(2.0) + ops.square(a) / 12.0 - 7.0 * ops.square(ops.square(a)) / 1440.0
    return ops.where(small, series, closed_form)


def continuous_bernoulli_nll(x, logits):
    """``-log CB(x; sigmoid(logits))`` for ``x`` in [0, 1], summed over the last axis.

    The density is ``C(lambda) lambda^x (1 - lambda)^(1 - x)``, so the NLL is
    the Bernoulli "NLL" of the same intensities minus ``log C``.
    """
    return bernoulli_nll(x, logits) - ops.sum(continuous_bernoulli_log_normaliser(logits), axis=-1)


# [end continuous-bernoulli]


# [start gaussian]
def gaussian_nll(x, mean, log_scale):
    """``-log N(x; mean, exp(log_scale)^2)`` summed over the last axis, in nats.

    ``log_scale`` (the log standard deviation) broadcasts against ``mean``:
    one per dimension (homoscedastic) or one per output (heteroscedastic).
    """
    x = broadcast_to_samples(x, mean)
    standardised = (x - mean) * ops.exp(-log_scale)
    return ops.sum(0.5 * math.log(2.0 * math.pi) + log_scale + 0.5 * ops.square(standardised), axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class LearnedLogScale(layers.Layer):
    """A homoscedastic Gaussian head: returns ``[mean, log_scale]`` with one learned ``log_scale`` per dimension.

    Call arguments:
        inputs: the mean, shape (..., dim).

    Returns:
        ``[mean, log_scale]``, the second broadcast to the mean's shape.
    """

    def __init__(self, initial_log_scale=0.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_log_scale = float(initial_log_scale)

    def build(self, input_shape):
        initializer = keras.initializers.Constant(self.initial_log_scale)
        self.log_scale = self.add_weight(shape=(input_shape[-1],), initializer=initializer, name="log_scale")

    def call(self, mean):
        return [mean, ops.zeros_like(mean) + self.log_scale]

    def compute_output_shape(self, input_shape):
        return [tuple(input_shape), tuple(input_shape)]

    def get_config(self):
        return {**super().get_config(), "initial_log_scale": self.initial_log_scale}


# [end gaussian]


# [start categorical]
def categorical_nll(labels, logits):
    """``-log softmax(logits)[label]`` for integer ``labels`` of shape (batch,), in nats.

    ``logsumexp(logits) - logits[label]``: never exponentiates a large logit.
    With a samples axis, logits (batch, samples, classes), the labels are
    broadcast against every sample.
    """
    labels = ops.cast(labels, "int32")
    one_hot = ops.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    one_hot = broadcast_to_samples(one_hot, logits)
    return ops.logsumexp(logits, axis=-1) - ops.sum(one_hot * logits, axis=-1)


# [end categorical]


def check_likelihood(likelihood):
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"Expected a likelihood in {LIKELIHOODS}. Received: likelihood={likelihood!r}")
    return likelihood


# [start loss]
def parameter_width(likelihood, data_dim, heteroscedastic=False):
    """Outputs the decoder needs per example: one per dimension, two for a heteroscedastic Gaussian."""
    check_likelihood(likelihood)
    return 2 * data_dim if likelihood == "gaussian" and heteroscedastic else data_dim


def negative_log_likelihood(likelihood, y, parameters):
    """``-log p(y | parameters)`` per example and sample, shape (batch, samples): see `NegativeLogLikelihood`."""
    parameters = ops.convert_to_tensor(parameters)
    y = ops.convert_to_tensor(y)
    check_parameter_shape(likelihood, y, parameters)
    if likelihood == "categorical":
        labels = ops.reshape(y, (-1,)) if len(y.shape) > 1 else y
        return categorical_nll(labels, parameters)
    if likelihood == "gaussian":
        mean, log_scale = ops.split(parameters, 2, axis=-1)
        return gaussian_nll(y, mean, log_scale)
    if likelihood == "continuous_bernoulli":
        return continuous_bernoulli_nll(y, parameters)
    return bernoulli_nll(y, parameters)


def check_parameter_shape(likelihood, y, parameters):
    """A clear error unless ``parameters`` has the width the likelihood needs for targets ``y``."""
    if likelihood == "categorical":
        if len(y.shape) > 1 and y.shape[-1] != 1:
            raise ValueError(
                "Expected integer labels of shape (batch,) for a categorical likelihood. "
                f"Received: y.shape={tuple(y.shape)}"
            )
        return
    expected = 2 * y.shape[-1] if likelihood == "gaussian" else y.shape[-1]
    if parameters.shape[-1] != expected:
        what = "a mean and a log scale per dimension" if likelihood == "gaussian" else "one logit per dimension"
        raise ValueError(
            f"Expected {what} ({expected} outputs) for targets of shape {tuple(y.shape)} under the "
            f"{likelihood} likelihood. Received: parameters.shape={tuple(parameters.shape)}"
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class NegativeLogLikelihood(keras.losses.Loss):
    """``-log p(y | parameters)`` in nats for a named likelihood, summed over data dimensions.

    ``parameters`` has shape (batch, samples, width): logits of width ``dim``
    (Bernoulli, continuous Bernoulli), a mean and a log standard deviation
    side by side, width ``2 * dim`` (Gaussian), or class logits (categorical,
    with integer labels ``y`` of shape (batch,)). The result has shape
    (batch, samples) and is multiplied by ``scale``: 1 for a VAE, whose loss
    is per example, and the training-set size for a global posterior, whose
    KL is paid once per data set (the loss is then that data set's -ELBO).
    """

    def __init__(self, likelihood="bernoulli", scale=1.0, name=None, **kwargs):
        super().__init__(name=name or f"{check_likelihood(likelihood)}_nll", **kwargs)
        self.likelihood = likelihood
        self.scale = float(scale)

    def call(self, y, parameters):
        return self.scale * negative_log_likelihood(self.likelihood, y, parameters)

    def get_config(self):
        return {**super().get_config(), "likelihood": self.likelihood, "scale": self.scale}


# [end loss]


# [start head]
def likelihood_head(outputs, likelihood, heteroscedastic=False):
    """The decoder's last linear outputs as the likelihood's parameters.

    Only the homoscedastic Gaussian adds anything: one learned log scale per
    dimension, concatenated after the mean. Every other head is its logits,
    or (heteroscedastic Gaussian) a mean and a log scale per output already.
    """
    if check_likelihood(likelihood) == "gaussian" and not heteroscedastic:
        mean, log_scale = LearnedLogScale(name="log_scale")(outputs)
        return layers.Concatenate(name="mean_and_log_scale")([mean, log_scale])
    return outputs


# [end head]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--x", type=float, nargs="+", default=[0.0, 0.2, 0.5, 1.0], help="data values (default: %(default)s)"
    )
    parser.add_argument("--logit", type=float, default=0.0, help="the logit, or the mean (default: %(default)s)")
    parser.add_argument("--log-scale", type=float, default=0.0, help="Gaussian log standard deviation (default: 0)")
    args = parser.parse_args(argv)
    for name, values in (("x", args.x), ("logit", [args.logit]), ("log_scale", [args.log_scale])):
        bad = [value for value in values if not math.isfinite(value)]
        if bad:
            parser.exit(2, f"{parser.prog}: error: Expected `{name}` to be finite. Received: {name}={bad[0]}\n")
    x = np.array(args.x, dtype="float64")[:, None]
    logit = ops.convert_to_tensor(np.full_like(x, args.logit))
    rows = {
        "continuous_bernoulli": lambda: continuous_bernoulli_nll(x, logit),
        "bernoulli": lambda: bernoulli_nll(x, logit),
        "gaussian": lambda: gaussian_nll(x, logit, ops.convert_to_tensor(np.full_like(x, args.log_scale))),
    }
    print("x        " + "  ".join(f"{name:>22}" for name in rows))
    for i, value in enumerate(args.x):
        cells = []
        for name, nll in rows.items():
            try:
                check_support(name, x[i : i + 1])
                cells.append(f"{float(ops.convert_to_numpy(nll())[i]):22.6f}")
            except ValueError:
                cells.append(f"{'outside support':>22}")
        print(f"{value:<8g} " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())

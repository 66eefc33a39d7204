"""One skeleton, many likelihoods: the decoders and the posterior that make the likelihood a choice.

The main post's model is an encoder, a KL term, the reparameterisation with
``eps`` as an input, and a decoder whose outputs parametrise ``p(x|z)``; its
loss is a negative log-likelihood. Nothing in that skeleton is specific to
binary images, so `compose.compose_vae` takes the likelihood as a name and
builds its decoder from this module:

* `build_decoder` ends the generative network in the parameters the named
  likelihood needs (logits, or a mean and a log scale);
* `GlobalPosterior` is one ``q(w)`` for the whole data set, as in Bayesian
  regression (``posterior="global"``), and `BayesianDense` a linear model
  whose weights are ``z`` (``decoder="linear"``): the same skeleton then
  models a target ``y`` given ``x``.

Run ``python skeleton.py --task diabetes`` (or ``digits``) to train a
Bayesian linear (softmax) model and print its held-out numbers.
"""

import argparse
import math
import sys

import keras
import numpy as np
from keras import layers, ops

from likelihoods import NegativeLogLikelihood, likelihood_head, parameter_width
from variational_autoencoder import PACKAGE, check_positive_int, check_positive_ints, hidden_name

DECODERS = ("mlp", "conv", "linear")  # a network of z (dense or convolutional), or a linear model whose weights are z


# [start decoder]
def build_decoder(
    likelihood, data_dim=784, intermediate_dim=256, latent_dim=2, hidden_layers=1, activation="relu",
    heteroscedastic=False,
):  # fmt: skip
    """Generative network: ``z`` (batch, samples, latent_dim) to the parameters of ``p(x|z)``."""
    z = keras.Input(shape=(None, latent_dim), name="z")
    h = z
    for i in range(hidden_layers):
        h = layers.Dense(intermediate_dim, activation=activation, name=hidden_name("decoder_hidden", i))(h)
    outputs = layers.Dense(parameter_width(likelihood, data_dim, heteroscedastic), name="x_parameters")(h)
    return keras.Model(z, likelihood_head(outputs, likelihood, heteroscedastic), name="decoder")


# [end decoder]


# [start global-posterior]
@keras.saving.register_keras_serializable(package=PACKAGE)
class GlobalPosterior(layers.Layer):
    """An encoder that ignores its input: one ``q(w) = N(w_mean, diag(exp(w_log_var)))`` for all data.

    Returns ``[z_mean, z_log_var]`` of shape (batch, latent_dim), the same row
    for every example, so the skeleton's KL layer and reparameterisation
    work unchanged. The variances start small (``initial_log_var``), as
    usual for weight posteriors, so early training sees a near point estimate.
    """

    def __init__(self, latent_dim, initial_log_var=-6.0, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        self.initial_log_var = float(initial_log_var)

    def build(self, input_shape):
        self.w_mean = self.add_weight(shape=(self.latent_dim,), initializer="zeros", name="w_mean")
        initializer = keras.initializers.Constant(self.initial_log_var)
        self.w_log_var = self.add_weight(shape=(self.latent_dim,), initializer=initializer, name="w_log_var")

    def call(self, x):
        rows = ops.ones_like(x[:, :1])  # (batch, 1)
        return [rows * self.w_mean, rows * self.w_log_var]

    def compute_output_shape(self, input_shape):
        return [(input_shape[0], self.latent_dim)] * 2

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "initial_log_var": self.initial_log_var}


@keras.saving.register_keras_serializable(package=PACKAGE)
class BayesianDense(layers.Layer):
    """A dense layer whose weights are a sample ``z``: ``[x, z]`` to ``x @ W(z) + b(z)`` per sample.

    ``x`` has shape (batch, in_dim) and ``z`` shape (batch, samples,
    (in_dim + 1) * units): the flattened kernel, then the bias. Returns
    (batch, samples, units).
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)

    @staticmethod
    def latent_dim(in_dim, units):
        return (in_dim + 1) * units

    def build(self, input_shape):
        x_shape, z_shape = input_shape
        if z_shape[-1] != self.latent_dim(x_shape[-1], self.units):
            raise ValueError(
                f"Expected z of width (in_dim + 1) * units = {self.latent_dim(x_shape[-1], self.units)} for "
                f"x of shape {tuple(x_shape)} and {self.units} units. Received: z.shape={tuple(z_shape)}"
            )

    def call(self, inputs):
        x, z = inputs
        in_dim = x.shape[-1]
        kernel = ops.reshape(z[..., : in_dim * self.units], (-1, ops.shape(z)[1], in_dim, self.units))
        bias = z[..., in_dim * self.units :]
        return ops.einsum("bi,bsiu->bsu", x, kernel) + bias

    def compute_output_shape(self, input_shape):
        return (input_shape[1][0], input_shape[1][1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def build_linear_decoder(likelihood, data_dim, units, heteroscedastic=False):
    """``p(y | x, w)`` with ``w = z``: a linear model (regression) or softmax regression (classification)."""
    x = keras.Input(shape=(data_dim,), name="x")
    z = keras.Input(shape=(None, BayesianDense.latent_dim(data_dim, units)), name="z")
    outputs = BayesianDense(units, name="y_parameters")([x, z])
    return keras.Model([x, z], likelihood_head(outputs, likelihood, heteroscedastic), name="decoder")


# [end global-posterior]


# [start evaluate]
def log_predictive_density(likelihood, y, parameters):
    """``log (1/S) sum_s p(y | parameters_s)`` per row: the Monte Carlo predictive, by log-sum-exp."""
    log_p = -ops.convert_to_numpy(NegativeLogLikelihood(likelihood, reduction=None)(y, parameters))
    return keras.ops.convert_to_numpy(ops.logsumexp(log_p, axis=-1)) - math.log(log_p.shape[-1])


# [end evaluate]


def check_sizes(data_dim, latent_dim, posterior, likelihood, decoder, num_classes, target_dim, num_examples):
    """The width of the decoder's target, after a ValueError for sizes that do not fit the parts."""
    if decoder not in DECODERS:
        raise ValueError(f"Expected `decoder` to be one of {DECODERS}. Received: decoder={decoder!r}")
    if (posterior == "global") != (num_examples is not None):
        raise ValueError(
            "Expected `num_examples` (the size of the training set, which shares a global posterior's KL) "
            f"exactly when posterior='global'. Received: posterior={posterior!r}, num_examples={num_examples}"
        )
    if num_examples is not None:
        check_positive_ints(num_examples=num_examples)
    if likelihood == "categorical":
        check_positive_ints(num_classes=num_classes)
    if decoder != "linear":
        if target_dim is not None:
            raise ValueError(f"`target_dim` is for decoder='linear'; a network's target is x. Received: {target_dim}")
        if likelihood == "categorical" and data_dim != 1:
            raise ValueError(f"A categorical likelihood models one label per example: data_dim=1. Received: {data_dim}")
        return num_classes if likelihood == "categorical" else data_dim
    width = num_classes if likelihood == "categorical" else (1 if target_dim is None else target_dim)
    check_positive_ints(width=width)
    if latent_dim != BayesianDense.latent_dim(data_dim, width):
        raise ValueError(
            f"A linear decoder's z holds its weights: latent_dim = (data_dim + 1) * {width} = "
            f"{BayesianDense.latent_dim(data_dim, width)}. Received: latent_dim={latent_dim}"
        )
    return width


def load_task(task, seed=0):
    """``(x_train, y_train), (x_test, y_test)``: diabetes (standardised with the training statistics), or digits."""
    from sklearn.datasets import load_diabetes, load_digits

    if task == "diabetes":
        x, y = load_diabetes(return_X_y=True, scaled=False)
        y = y[:, None].astype("float64")
    else:
        x, y = load_digits(return_X_y=True)
        x = x / 16.0
    order = np.random.default_rng(seed).permutation(len(x))
    train, test = order[: int(0.75 * len(x))], order[int(0.75 * len(x)) :]
    x_train, x_test, y_train, y_test = x[train], x[test], y[train], y[test]
    if task == "diabetes":
        x_mean, x_std = x_train.mean(0), x_train.std(0)
        y_mean, y_std = y_train.mean(0), y_train.std(0)
        x_train, x_test = (x_train - x_mean) / x_std, (x_test - x_mean) / x_std
        y_train, y_test = (y_train - y_mean) / y_std, (y_test - y_mean) / y_std
    return (x_train.astype("float32"), y_train.astype("float32" if task == "diabetes" else "int32")), (
        x_test.astype("float32"),
        y_test.astype("float32" if task == "diabetes" else "int32"),
    )


def task_vae(task, data_dim, num_examples):
    """``(vae, likelihood)`` for a task: a global posterior over the weights of a linear (softmax) model."""
    from compose import compose_vae  # compose builds its decoders from this module

    likelihood, units = ("gaussian", 1) if task == "diabetes" else ("categorical", 10)
    vae = compose_vae(
        data_dim, BayesianDense.latent_dim(data_dim, units), posterior="global", likelihood=likelihood,
        decoder="linear", num_classes=units if likelihood == "categorical" else None, num_examples=num_examples,
    )  # fmt: skip
    return vae, likelihood


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--task", choices=("diabetes", "digits"), default="diabetes", help="example (default: diabetes)"
    )
    parser.add_argument("--epochs", type=int, default=300, help="training epochs (default: 300)")
    parser.add_argument("--samples", type=int, default=1000, help="posterior draws for predictions (default: 1000)")
    args = parser.parse_args(argv)
    try:
        check_positive_ints(epochs=args.epochs, samples=args.samples)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    from training import fit_vae, posterior_predictive

    (x_train, y_train), (x_test, y_test) = load_task(args.task)
    vae, likelihood = task_vae(args.task, x_train.shape[-1], len(x_train))
    fit_vae(vae, x_train, likelihood, epochs=args.epochs, batch_size=32, learning_rate=1e-2, y=y_train, verbose=0)
    parameters = posterior_predictive(vae, x_test, args.samples)
    log_p = log_predictive_density(likelihood, y_test, parameters)
    print(f"{args.task}: {len(x_train)} training and {len(x_test)} test examples, {args.epochs} epochs")
    print(f"test log predictive density: {log_p.mean():.3f} nats per example")
    if likelihood == "categorical":
        probabilities = ops.convert_to_numpy(ops.mean(ops.softmax(parameters, axis=-1), axis=1))
        print(f"test accuracy: {np.mean(probabilities.argmax(-1) == y_test):.3f}")
    else:
        mean, log_scale = np.split(parameters, 2, axis=-1)
        draws = mean + np.exp(log_scale) * np.random.default_rng(1).standard_normal(mean.shape)
        low, high = np.quantile(draws[..., 0], [0.05, 0.95], axis=1)
        print(f"coverage of the 90% predictive interval: {np.mean((y_test[:, 0] >= low) & (y_test[:, 0] <= high)):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One skeleton, many likelihoods: the VAE builder with the likelihood as an argument.

The main post's model is an encoder, a KL layer, the reparameterisation with
``eps`` as an input, and a decoder whose outputs parametrise ``p(x|z)``; its
loss is a negative log-likelihood. Nothing in that skeleton is specific to
binary images, so this module keeps it and makes the likelihood a name:

* `NegativeLogLikelihood` is one registered Keras loss for every likelihood
  of `likelihoods.py`, with a clear error when the targets do not match the
  parameters' shape;
* `build_decoder` ends the generative network in the parameters the named
  likelihood needs (logits, or a mean and a log scale);
* `build_model` wires any encoder and decoder into the skeleton. The encoder
  may be amortised (a network of ``x``) or global (`GlobalPosterior`: one
  ``q(w)`` for the whole data set, as in Bayesian regression), and the
  decoder may read ``x`` as well as ``z`` (`BayesianDense`: a linear model
  whose weights are ``z``);
* `fit` trains any of them from a ``tf.data`` pipeline that draws fresh
  ``eps`` (and, for 8-bit images, fresh dequantisation noise) every batch.

Run ``python skeleton.py --task diabetes`` (or ``digits``) to train a
Bayesian linear (softmax) model and print its held-out numbers.
"""

import argparse
import math
import sys

import keras
import numpy as np
from keras import layers, ops

from likelihoods import (
    NegativeLogLikelihood,
    check_support,
    likelihood_head,
    parameter_width,
)
from log_likelihood import importance_sampled_log_likelihood
from variational_autoencoder import (
    PACKAGE,
    KLDivergenceLayer,
    check_positive_int,
    check_positive_ints,
    hidden_name,
    reparameterize,
)


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


def build_global_encoder(data_dim, latent_dim):
    """The encoder of a Bayesian model: a `GlobalPosterior`, called on ``x`` only for its batch size."""
    x = keras.Input(shape=(data_dim,), name="x")
    return keras.Model(x, GlobalPosterior(latent_dim, name="posterior")(x), name="encoder")


def build_linear_decoder(likelihood, data_dim, units, heteroscedastic=False):
    """``p(y | x, w)`` with ``w = z``: a linear model (regression) or softmax regression (classification)."""
    x = keras.Input(shape=(data_dim,), name="x")
    z = keras.Input(shape=(None, BayesianDense.latent_dim(data_dim, units)), name="z")
    outputs = BayesianDense(units, name="y_parameters")([x, z])
    return keras.Model([x, z], likelihood_head(outputs, likelihood, heteroscedastic), name="decoder")


# [end global-posterior]


# [start build-model]
def build_model(encoder, decoder, data_dim, latent_dim, mc_samples=1, conditional=False, name="vae"):
    """The skeleton: inputs ``[x, eps]``, output the likelihood's parameters per sample of ``z``.

    ``encoder(x)`` gives ``[z_mean, z_log_var]``; the KL layer adds
    ``KL[q || N(0, I)]``; ``z = z_mean + exp(z_log_var / 2) * eps``; the
    decoder maps ``z`` (or ``[x, z]`` when ``conditional``: ``z`` is then the
    weights of a model of ``y`` given ``x``) to the parameters.
    """
    check_positive_ints(data_dim=data_dim, latent_dim=latent_dim, mc_samples=mc_samples)
    x = keras.Input(shape=(data_dim,), name="x")
    eps = keras.Input(shape=(mc_samples, latent_dim), name="eps")
    z_mean, z_log_var = encoder(x)
    z_mean, z_log_var = KLDivergenceLayer(name="kl_divergence")([z_mean, z_log_var])
    z = reparameterize(z_mean, z_log_var, eps)
    parameters = decoder([x, z] if conditional else z)
    return keras.Model(inputs=[x, eps], outputs=parameters, name=name)


# [end build-model]


# [start batches]
def batches(x, y, batch_size, mc_samples, latent_dim, dequantize=False, shuffle=True, seed=None):
    """A ``tf.data.Dataset`` of ``((x, eps), y)`` with fresh ``eps`` every batch.

    ``y=None`` makes the targets ``x`` itself (an autoencoder). With
    ``dequantize=True``, ``x`` holds 8-bit levels ``k / 256`` and every batch
    adds ``u / 256``, ``u ~ U(0, 1)``, so the model sees ``(k + u) / 256``:
    a density on [0, 1] fitted to such data bounds the log-probability of
    the 8-bit levels from below (Theis, van den Oord & Bethge 2016).
    """
    import tensorflow as tf  # only for tf.data, which can feed every Keras backend

    batch_size = check_positive_int("batch_size", batch_size)
    count, steps = len(x), -(-len(x) // batch_size)
    if y is not None and len(y) != count:
        raise ValueError(f"Expected as many targets as inputs. Received: {len(x)} inputs and {len(y)} targets")
    generator = (
        tf.random.Generator.from_non_deterministic_state() if seed is None else tf.random.Generator.from_seed(seed)
    )
    inputs = tf.constant(np.asarray(x, dtype="float32"))
    targets = None if y is None else tf.constant(np.asarray(y))

    def one_epoch(_):
        order = tf.argsort(generator.uniform((count,))) if shuffle else tf.range(count)
        return tf.data.Dataset.range(steps).map(lambda step: order[step * batch_size : (step + 1) * batch_size])

    def draw(indices):
        x_batch = tf.gather(inputs, indices)
        if dequantize:
            x_batch = x_batch + generator.uniform(tf.shape(x_batch)) / 256.0
        eps = generator.normal((tf.shape(indices)[0], mc_samples, latent_dim))
        return (x_batch, eps), x_batch if targets is None else tf.gather(targets, indices)

    dataset = tf.data.Dataset.range(1).flat_map(one_epoch).map(draw)
    return dataset.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(tf.data.AUTOTUNE)


# [end batches]


# [start fit]
def fit(model, likelihood, x, y=None, num_epochs=50, batch_size=100, learning_rate=1e-3, loss_scale=1.0,
        dequantize=False, seed=0, verbose=1, callbacks=None, support=None):  # fmt: skip
    """Compile ``model`` with the named likelihood's NLL and train it; return the history dict.

    The targets are checked against the likelihood's support first (a label
    of 10 for 10 classes, an intensity of 1.5: a clear error, not a NaN);
    ``support`` names another likelihood whose support to check instead
    (only to reproduce the quickstart's Bernoulli loss on grey levels). The
    learning rate decays to zero along a cosine over the run, so the weights
    returned are not one noisy step of a stochastic optimiser.
    """
    if np.ndim(x) != 2 or np.shape(x)[-1] != model.inputs[0].shape[-1]:
        raise ValueError(
            f"Expected inputs of shape (count, {model.inputs[0].shape[-1]}) for this model. Received: {np.shape(x)}"
        )
    targets = x if y is None else y
    num_classes = model.outputs[0].shape[-1] if likelihood == "categorical" else None
    check_support(support or likelihood, targets, num_classes=num_classes)
    if dequantize and (np.min(x) < 0 or np.max(x) > 255 / 256):
        raise ValueError(f"Expected 8-bit levels k / 256 in [0, 255/256] to dequantize. Received max={np.max(x)}")
    _, mc_samples, latent_dim = model.inputs[1].shape
    keras.utils.set_random_seed(seed)
    num_epochs = check_positive_int("num_epochs", num_epochs)
    steps = num_epochs * -(-len(x) // check_positive_int("batch_size", batch_size))
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps)),
        loss=NegativeLogLikelihood(likelihood, scale=loss_scale),
        jit_compile=True,
        steps_per_execution=10,
    )
    data = batches(x, y, batch_size, mc_samples, latent_dim, dequantize=dequantize, shuffle=True, seed=seed)
    # shuffle=False: the dataset draws a new order itself every epoch.
    history = model.fit(data, epochs=num_epochs, shuffle=False, verbose=verbose, callbacks=callbacks)
    return history.history


# [end fit]


# [start evaluate]
def log_likelihood(model, likelihood, x, num_samples=1000, batch_size=100, seed=0, verbose=0):
    """Importance-sampled ``log p(x)`` per row of ``x`` for an amortised encoder: ``(log_px, stderr)``."""
    encoder, decoder = model.get_layer("encoder"), model.get_layer("decoder")
    nll = NegativeLogLikelihood(likelihood, reduction=None)
    log_px, stderr = np.empty(len(x)), np.empty(len(x))
    progress = keras.utils.Progbar(len(x), unit_name="image", verbose=verbose)
    for start in range(0, len(x), batch_size):
        x_batch = np.asarray(x[start : start + batch_size], dtype="float32")
        z_mean, z_log_var = (ops.convert_to_numpy(t) for t in encoder(x_batch, training=False))
        rows = slice(start, start + len(x_batch))
        log_px[rows], stderr[rows] = importance_sampled_log_likelihood(
            x_batch, z_mean, z_log_var, lambda x_, z: -nll(x_, decoder(z, training=False)),
            num_samples=num_samples, seed=seed + start, floats_per_sample=4 * x_batch.shape[-1],
        )  # fmt: skip
        progress.add(len(x_batch))
    return log_px, stderr


def predictive_samples(model, x, num_samples=1000, seed=0):
    """The decoder's parameters at ``num_samples`` draws of ``z`` for each row of ``x``: (count, samples, width)."""
    _, _, latent_dim = model.inputs[1].shape
    eps = np.random.default_rng(seed).standard_normal((len(x), num_samples, latent_dim), dtype="float32")
    encoder, decoder = model.get_layer("encoder"), model.get_layer("decoder")
    x = ops.convert_to_tensor(np.asarray(x, dtype="float32"))
    z_mean, z_log_var = encoder(x, training=False)
    z = ops.expand_dims(z_mean, 1) + ops.exp(0.5 * ops.expand_dims(z_log_var, 1)) * eps
    conditional = len(decoder.inputs) == 2
    return ops.convert_to_numpy(decoder([x, z] if conditional else z, training=False))


def log_predictive_density(likelihood, y, parameters):
    """``log (1/S) sum_s p(y | parameters_s)`` per row: the Monte Carlo predictive, by log-sum-exp."""
    log_p = -ops.convert_to_numpy(NegativeLogLikelihood(likelihood, reduction=None)(y, parameters))
    return keras.ops.convert_to_numpy(ops.logsumexp(log_p, axis=-1)) - math.log(log_p.shape[-1])


# [end evaluate]


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


def build_task_model(task, data_dim, mc_samples=1):
    """The skeleton for a task: a global posterior over the weights of a linear (softmax) model."""
    likelihood, units = ("gaussian", 1) if task == "diabetes" else ("categorical", 10)
    latent_dim = BayesianDense.latent_dim(data_dim, units)
    encoder = build_global_encoder(data_dim, latent_dim)
    decoder = build_linear_decoder(likelihood, data_dim, units)
    return build_model(encoder, decoder, data_dim, latent_dim, mc_samples, conditional=True, name=task), likelihood


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
    (x_train, y_train), (x_test, y_test) = load_task(args.task)
    model, likelihood = build_task_model(args.task, x_train.shape[-1])
    fit(model, likelihood, x_train, y_train, num_epochs=args.epochs, batch_size=32, learning_rate=1e-2,
        loss_scale=len(x_train), verbose=0)  # fmt: skip
    parameters = predictive_samples(model, x_test, args.samples)
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

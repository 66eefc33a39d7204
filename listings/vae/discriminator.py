"""The discriminator ``T(x, z)`` of adversarial variational Bayes, and its loss.

``T`` is trained to tell samples of the posterior, ``z ~ q(z|x)``, from
samples of the prior, ``z ~ p(z)``, with the logistic loss; at its optimum
``T(x, z) = log q(z|x) - log p(z)`` (Mescheder, Nowozin & Geiger 2017), so
the KL layers of `kl_divergence` read the KL off its output at the posterior
samples, for a posterior whose density is unknown.

Run ``python discriminator.py`` to print the summary of one.
"""

import argparse
import sys

import keras
from keras import layers, ops

from variational_autoencoder import PACKAGE, check_positive_ints


def check_discriminator(discriminator):
    """A clear error unless ``discriminator`` maps ``[x, z]`` to one value per sample."""
    if not isinstance(discriminator, keras.Model) or len(discriminator.inputs) != 2:
        raise ValueError(f"Expected a Keras model with inputs [x, z]. Received: {discriminator!r}")
    z_shape, out_shape = tuple(discriminator.inputs[1].shape), tuple(discriminator.outputs[0].shape)
    if out_shape != z_shape[:-1]:
        raise ValueError(
            "Expected the discriminator to output one value per sample of z, shape "
            f"{z_shape[:-1]}. Received: output shape {out_shape}"
        )
    return discriminator


# [start discriminator]
@keras.saving.register_keras_serializable(package=PACKAGE)
class BroadcastToSamples(layers.Layer):
    """``x`` of shape (batch, dim) repeated along the samples axis of ``z``: (batch, samples, dim)."""

    def call(self, inputs):
        x, z = inputs
        return ops.expand_dims(x, -2) + ops.zeros_like(z[..., :1])

    def compute_output_shape(self, input_shape):
        x_shape, z_shape = input_shape
        return (*z_shape[:-1], x_shape[-1])


def build_discriminator(data_dim, latent_dim, hidden_units=64, hidden_layers=2, name="discriminator"):
    """``T(x, z)``: an MLP on ``x`` joined to each sample of ``z``, one logit per sample.

    The first layer is a dense layer on the concatenation ``[x, z]``, written
    as the sum of a projection of ``x``, computed once per example, and a
    projection of each sample of ``z``: the same function, without copying
    ``x`` and multiplying it by the same weights once per sample.
    """
    check_positive_ints(
        data_dim=data_dim, latent_dim=latent_dim, hidden_units=hidden_units, hidden_layers=hidden_layers
    )
    x = keras.Input(shape=(data_dim,), name="x")
    z = keras.Input(shape=(None, latent_dim), name="z")
    x_projection = layers.Dense(hidden_units, name="x_projection")(x)
    z_projection = layers.Dense(hidden_units, use_bias=False, name="z_projection")(z)
    h = layers.Add(name="xz")([BroadcastToSamples(name="x_per_sample")([x_projection, z]), z_projection])
    h = layers.Activation("relu", name="hidden_1")(h)
    for i in range(1, hidden_layers):
        h = layers.Dense(hidden_units, activation="relu", name=f"hidden_{i + 1}")(h)
    t = layers.Dense(1, name="logit")(h)
    t = layers.Reshape((-1,), name="t")(t)
    return keras.Model([x, z], t, name=name)


def discriminator_loss(t_posterior, t_prior):
    """Logistic loss: label 1 for ``z ~ q(z|x)``, 0 for ``z ~ p(z)``, from the logits ``T``.

    ``softplus(-T)`` is ``-log sigmoid(T)`` and ``softplus(T)`` is
    ``-log(1 - sigmoid(T))``, both finite for any ``T``.
    """
    return ops.mean(ops.softplus(-t_posterior)) + ops.mean(ops.softplus(t_prior))


# [end discriminator]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dim", type=int, default=784, help="dimension of x (default: %(default)s)")
    parser.add_argument("--latent-dim", type=int, default=2, help="dimension of z (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        discriminator = build_discriminator(args.data_dim, args.latent_dim)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    discriminator.summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())

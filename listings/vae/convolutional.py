"""Convolutional encoder and decoder networks for the composed VAE.

The same interfaces as the dense networks, so the rest of the skeleton (the
posterior, the divergence, the likelihood, the objective) is unchanged:

* `build_conv_encoder`: ``x`` (batch, 784) to ``[z_mean, z_log_var]``, through
  the image (28, 28, 1), two strided ``Conv2D`` layers that halve it twice,
  and a small dense layer (the flows' context);
* `build_conv_decoder`: ``z`` (batch, samples, latent_dim) to the parameters of
  ``p(x|z)`` for every sample, through ``Conv2DTranspose`` layers that double
  the image twice back to (28, 28, channels), one channel per parameter of a
  pixel.

Convolutions take images, not (batch, samples, ...) stacks: `FoldSamples`
folds the samples into the batch before the decoder's layers and
`UnfoldSamples` restores them after, so ``S`` stays free (the number of
samples is data). The architecture is that of keras.io's convolutional VAE
(Chollet, "Variational AutoEncoder", keras.io/examples/generative/vae):
32 and 64 filters of 3 x 3 with stride 2, a dense layer of 16 units.

Run ``python convolutional.py`` to print the two networks' summaries.
"""

import argparse
import math
import sys

import keras
from keras import layers, ops

from likelihoods import likelihood_head, parameter_width
from variational_autoencoder import PACKAGE, check_positive_ints, hidden_name

IMAGE_SHAPE = (28, 28, 1)
IMAGE_LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian")  # a parameter (or two) per pixel
NETWORKS = ("mlp", "conv")  # the choices of `compose_vae`'s encoder and decoder networks


# [start fold]
@keras.saving.register_keras_serializable(package=PACKAGE)
class FoldSamples(layers.Layer):
    """(batch, samples, ...) to (batch * samples, ...): every sample of ``z`` one example for the layers after."""

    def call(self, z):
        return ops.reshape(z, (-1, *z.shape[2:]))

    def compute_output_shape(self, input_shape):
        return (None, *input_shape[2:])


@keras.saving.register_keras_serializable(package=PACKAGE)
class UnfoldSamples(layers.Layer):
    """``[h, z]``: ``h`` (batch * samples, ...) back to (batch, samples, ...), the two leading sizes read from ``z``."""

    def call(self, inputs):
        h, z = inputs
        return ops.reshape(h, (ops.shape(z)[0], ops.shape(z)[1], *h.shape[1:]))

    def compute_output_shape(self, input_shape):
        h_shape, z_shape = input_shape
        return (z_shape[0], z_shape[1], *h_shape[1:])


# [end fold]


def check_image_parts(data_dim, likelihood, image_shape=IMAGE_SHAPE):
    """A ValueError unless ``x`` is a flattened image of ``image_shape`` and ``likelihood`` models its pixels."""
    if data_dim != math.prod(image_shape):
        raise ValueError(f"A convolutional network reads x as an image of shape {tuple(image_shape)}: data_dim="
                         f"{math.prod(image_shape)}. Received: data_dim={data_dim}")  # fmt: skip
    if likelihood not in IMAGE_LIKELIHOODS:
        raise ValueError(f"A convolutional decoder draws an image: likelihood in {IMAGE_LIKELIHOODS}. "
                         f"Received: likelihood={likelihood!r}")  # fmt: skip
    if len(image_shape) != 3 or image_shape[2] != 1:  # the decoder's channels are a grey pixel's parameters
        raise ValueError(f"The convolutional networks read grey images: image_shape=(height, width, 1). Received: "
                         f"image_shape={tuple(image_shape)}")  # fmt: skip
    if image_shape[0] % 4 or image_shape[1] % 4:
        raise ValueError(f"Two stride-2 layers halve the image twice: height and width divisible by 4. "
                         f"Received: image_shape={tuple(image_shape)}")  # fmt: skip


def check_networks(encoder, decoder, posterior, likelihood, data_dim, image_shape=IMAGE_SHAPE):
    """A ValueError unless a convolutional encoder or decoder fits the other parts (the dense ones always do)."""
    for part, value, choices in (("encoder", encoder, NETWORKS), ("decoder", decoder, (*NETWORKS, "linear"))):
        if value not in choices:
            raise ValueError(f"Expected `{part}` to be one of {choices}. Received: {part}={value!r}")
    if encoder == "conv" and posterior in ("implicit", "global"):
        raise ValueError(
            "encoder='conv' computes z_mean and z_log_var of a Gaussian (or a flow's base) from the image: "
            f"posterior in ('gaussian', 'planar', 'iaf'). Received: posterior={posterior!r}"
        )
    if encoder == "conv":
        check_image_parts(data_dim, "bernoulli", image_shape)
    if decoder == "conv":
        check_image_parts(data_dim, likelihood, image_shape)


# [start encoder]
def build_conv_encoder(latent_dim=2, image_shape=IMAGE_SHAPE, filters=(32, 64), hidden_units=16):
    """Inference network: ``x`` (batch, 784) to ``[z_mean, z_log_var]``, through two strided convolutions."""
    check_positive_ints(latent_dim=latent_dim, hidden_units=hidden_units, **{f"filters_{i}": f for i, f in
                                                                             enumerate(filters)})  # fmt: skip
    x = keras.Input(shape=(math.prod(image_shape),), name="x")
    h = layers.Reshape(image_shape, name="image")(x)
    for i, count in enumerate(filters):
        h = layers.Conv2D(count, 3, strides=2, padding="same", activation="relu", data_format="channels_last",
                          name=f"encoder_conv_{i + 1}")(h)  # fmt: skip
    h = layers.Flatten(name="features")(h)
    h = layers.Dense(hidden_units, activation="relu", name=hidden_name("encoder_hidden", 0))(h)
    z_mean = layers.Dense(latent_dim, name="z_mean")(h)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(h)
    return keras.Model(x, [z_mean, z_log_var], name="encoder")


# [end encoder]


# [start decoder]
def build_conv_decoder(likelihood="bernoulli", latent_dim=2, image_shape=IMAGE_SHAPE, filters=(64, 32),
                       heteroscedastic=False):  # fmt: skip
    """Generative network: ``z`` (batch, samples, latent_dim) to the parameters of ``p(x|z)``, (batch, samples, width).

    The last transposed convolution has one channel per parameter of a pixel
    (two for a heteroscedastic Gaussian: mean and log scale); its output is
    laid out as the dense decoder's, every pixel's first parameter, then
    every pixel's second.
    """
    check_image_parts(math.prod(image_shape), likelihood, image_shape)
    check_positive_ints(latent_dim=latent_dim)
    height, width, _ = image_shape
    data_dim = math.prod(image_shape)
    channels = parameter_width(likelihood, data_dim, heteroscedastic) // (height * width)
    z = keras.Input(shape=(None, latent_dim), name="z")
    h = FoldSamples(name="fold_samples")(z)
    h = layers.Dense(height // 4 * width // 4 * filters[0], activation="relu", name=hidden_name("decoder_hidden", 0))(h)
    h = layers.Reshape((height // 4, width // 4, filters[0]), name="feature_maps")(h)
    for i, count in enumerate(filters):
        h = layers.Conv2DTranspose(count, 3, strides=2, padding="same", activation="relu",
                                   data_format="channels_last", name=f"decoder_deconv_{i + 1}")(h)  # fmt: skip
    h = layers.Conv2DTranspose(channels, 3, padding="same", data_format="channels_last",
                               name="pixel_parameters")(h)  # (height, width, parameters per pixel)
    h = layers.Permute((3, 1, 2), name="parameter_major")(h)  # (parameters per pixel, height, width)
    h = layers.Flatten(name="x_parameters")(h)
    outputs = UnfoldSamples(name="unfold_samples")([h, z])
    return keras.Model(z, likelihood_head(outputs, likelihood, heteroscedastic), name="decoder")


# [end decoder]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latent-dim", type=int, default=2, help="dimension of z (default: 2)")
    parser.add_argument("--likelihood", default="bernoulli", help=f"one of {IMAGE_LIKELIHOODS} (default: bernoulli)")
    args = parser.parse_args(argv)
    try:
        encoder = build_conv_encoder(args.latent_dim)
        decoder = build_conv_decoder(args.likelihood, args.latent_dim)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    encoder.summary()
    decoder.summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Keras 2.0.8 variational autoencoder example, ported to Keras 3.

Reference: "Auto-Encoding Variational Bayes" https://arxiv.org/abs/1312.6114

This is the classic quickstart (keras/examples/variational_autoencoder.py at
tag 2.0.8), kept as close to the original as Keras 3 allows: sampling happens
in a ``Lambda`` layer, one custom layer computes the whole loss, and the
decoder ends in a sigmoid. Comments marked "Keras 3:" say what had to change
and why. The model-building code is wrapped in functions so that tests and
benchmarks can import it; ``main()`` runs the original script's steps.
"""

import argparse
import sys

# Keras 3: `keras.backend` no longer offers tensor functions such as
# `K.random_normal`, `K.exp` or `K.sum`; `keras.ops` and `keras.random`
# replace them and run on every backend.
# Keras 3: `keras.metrics.binary_crossentropy` is now `keras.losses.binary_crossentropy`.
import keras
import numpy as np
from keras import ops
from keras.layers import Dense, Input, Lambda, Layer
from keras.models import Model

batch_size = 100
original_dim = 784
latent_dim = 2
intermediate_dim = 256
epochs = 50
epsilon_std = 1.0


# [start classic-sampling]
def sampling(args):
    z_mean, z_log_var = args
    epsilon = keras.random.normal(shape=(ops.shape(z_mean)[0], latent_dim), mean=0.0, stddev=epsilon_std)
    return z_mean + ops.exp(z_log_var / 2) * epsilon


# [end classic-sampling]


# [start classic-loss-layer]
# Custom loss layer
class CustomVariationalLayer(Layer):
    # Keras 3: the original read `z_mean` and `z_log_var` as global tensors
    # from inside the layer; a Keras 3 layer may only use tensors it is
    # called on, so they are passed in as inputs 3 and 4. `is_placeholder`
    # no longer exists and `add_loss` takes a single argument.
    def vae_loss(self, x, x_decoded_mean, z_mean, z_log_var):
        xent_loss = original_dim * keras.losses.binary_crossentropy(x, x_decoded_mean)
        kl_loss = -0.5 * ops.sum(1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1)
        return ops.mean(xent_loss + kl_loss)

    def call(self, inputs):
        x, x_decoded_mean, z_mean, z_log_var = inputs
        loss = self.vae_loss(x, x_decoded_mean, z_mean, z_log_var)
        self.add_loss(loss)
        # We won't actually use the output.
        return x


# [end classic-loss-layer]


def build_classic_vae():
    """Return ``(vae, encoder, generator)`` built exactly as the 2017 script did."""
    x = Input(shape=(original_dim,))
    h = Dense(intermediate_dim, activation="relu")(x)
    z_mean = Dense(latent_dim)(h)
    z_log_var = Dense(latent_dim)(h)

    # note that "output_shape" isn't necessary with the TensorFlow backend
    z = Lambda(sampling, output_shape=(latent_dim,))([z_mean, z_log_var])

    # we instantiate these layers separately so as to reuse them later
    decoder_h = Dense(intermediate_dim, activation="relu")
    decoder_mean = Dense(original_dim, activation="sigmoid")
    h_decoded = decoder_h(z)
    x_decoded_mean = decoder_mean(h_decoded)

    y = CustomVariationalLayer()([x, x_decoded_mean, z_mean, z_log_var])
    vae = Model(x, y)
    # Keras 3: `loss=None` still means "only the losses the layers added".
    vae.compile(optimizer="rmsprop", loss=None)

    # build a model to project inputs on the latent space
    encoder = Model(x, z_mean)

    # build a digit generator that can sample from the learned distribution
    decoder_input = Input(shape=(latent_dim,))
    _h_decoded = decoder_h(decoder_input)
    _x_decoded_mean = decoder_mean(_h_decoded)
    generator = Model(decoder_input, _x_decoded_mean)
    return vae, encoder, generator


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--epochs", type=int, default=epochs, help="passes over the training set (default: %(default)s)"
    )
    parser.add_argument(
        "--mnist-dir",
        default=None,
        help="folder with the MNIST IDX .gz files (default: $MNIST_DIR, else ../shared/data/mnist)",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the two matplotlib windows")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.exit(
            2, f"{parser.prog}: error: Expected `epochs` to be a positive integer. Received: epochs={args.epochs}\n"
        )

    # Keras 3: read the local IDX files first (`keras.datasets.mnist` downloads).
    from mnist_data import MNISTError, load_mnist

    try:
        (x_train, y_train), (x_test, y_test) = load_mnist(args.mnist_dir)
    except MNISTError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")

    vae, encoder, generator = build_classic_vae()

    x_train = x_train.astype("float32") / 255.0
    x_test = x_test.astype("float32") / 255.0
    x_train = x_train.reshape((len(x_train), np.prod(x_train.shape[1:])))
    x_test = x_test.reshape((len(x_test), np.prod(x_test.shape[1:])))

    # Keras 3: with `loss=None` there are no targets, so validation_data
    # passes `None` where the original passed `x_test` a second time.
    vae.fit(
        x_train,
        shuffle=True,
        epochs=args.epochs,
        batch_size=batch_size,
        validation_data=(x_test, None),
    )
    if args.no_plots:
        return 0

    import matplotlib.pyplot as plt
    from scipy.stats import norm

    # display a 2D plot of the digit classes in the latent space
    x_test_encoded = encoder.predict(x_test, batch_size=batch_size)
    plt.figure(figsize=(6, 6))
    plt.scatter(x_test_encoded[:, 0], x_test_encoded[:, 1], c=y_test)
    plt.colorbar()
    plt.show()

    # display a 2D manifold of the digits
    n = 15  # figure with 15x15 digits
    digit_size = 28
    figure = np.zeros((digit_size * n, digit_size * n))
    # linearly spaced coordinates on the unit square were transformed through the inverse CDF (ppf) of the Gaussian
    # to produce values of the latent variables z, since the prior of the latent space is Gaussian
    grid_x = norm.ppf(np.linspace(0.05, 0.95, n))
    grid_y = norm.ppf(np.linspace(0.05, 0.95, n))

    for i, yi in enumerate(grid_x):
        for j, xi in enumerate(grid_y):
            z_sample = np.array([[xi, yi]])
            x_decoded = generator.predict(z_sample, verbose=0)
            digit = x_decoded[0].reshape(digit_size, digit_size)
            figure[i * digit_size : (i + 1) * digit_size, j * digit_size : (j + 1) * digit_size] = digit

    plt.figure(figsize=(10, 10))
    plt.imshow(figure, cmap="Greys_r")
    plt.show()
    return 0


if __name__ == "__main__":
    sys.exit(main())

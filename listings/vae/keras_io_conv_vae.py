"""keras.io's convolutional variational autoencoder, written on Keras 3 as the baseline of the conv post.

The example most readers meet today is François Chollet's "Variational
AutoEncoder" on keras.io (examples/generative/vae.py, 2020): a ``Sampling``
layer that draws the noise inside the model, two strided convolutions to a
two-dimensional latent space and back, and a ``keras.Model`` subclass whose
custom ``train_step`` computes the whole loss with ``tf.GradientTape``. This
listing keeps its architecture, loss and training settings (Adam, batches of
128, 30 epochs, MNIST's training and test images together, grey levels) and
its structure; comments marked "Ours:" say where it differs and why. Written
by us for Keras 3; the architecture and settings are the example's.

The custom ``train_step`` is TensorFlow code, so the model trains only with
``KERAS_BACKEND=tensorflow``; our composed skeleton trains on every backend.

Run ``python keras_io_conv_vae.py --epochs 1`` for a quick run.
"""

import argparse
import sys

import keras
import numpy as np
from keras import layers, ops

LATENT_DIM = 2
EPOCHS = 30
BATCH_SIZE = 128


# [start sampling]
class Sampling(layers.Layer):
    """Uses (z_mean, z_log_var) to sample z: the noise is drawn inside the model, one sample per image."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)  # Ours: seeded, so that tests can repeat a run

    def call(self, inputs):
        z_mean, z_log_var = inputs
        epsilon = keras.random.normal(shape=ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon


# [end sampling]


def build_encoder(latent_dim=LATENT_DIM, seed=None):
    encoder_inputs = keras.Input(shape=(28, 28, 1))
    x = layers.Conv2D(32, 3, activation="relu", strides=2, padding="same")(encoder_inputs)
    x = layers.Conv2D(64, 3, activation="relu", strides=2, padding="same")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(16, activation="relu")(x)
    z_mean = layers.Dense(latent_dim, name="z_mean")(x)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(x)
    z = Sampling(seed)([z_mean, z_log_var])
    return keras.Model(encoder_inputs, [z_mean, z_log_var, z], name="encoder")


def build_decoder(latent_dim=LATENT_DIM):
    latent_inputs = keras.Input(shape=(latent_dim,))
    x = layers.Dense(7 * 7 * 64, activation="relu")(latent_inputs)
    x = layers.Reshape((7, 7, 64))(x)
    x = layers.Conv2DTranspose(64, 3, activation="relu", strides=2, padding="same")(x)
    x = layers.Conv2DTranspose(32, 3, activation="relu", strides=2, padding="same")(x)
    decoder_outputs = layers.Conv2DTranspose(1, 3, activation="sigmoid", padding="same")(x)
    return keras.Model(latent_inputs, decoder_outputs, name="decoder")


# [start train-step]
class VAE(keras.Model):
    """The encoder and decoder, trained by a custom ``train_step`` that computes the loss itself."""

    def __init__(self, encoder, decoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")

    @property
    def metrics(self):
        return [self.total_loss_tracker, self.reconstruction_loss_tracker, self.kl_loss_tracker]

    def train_step(self, data):
        import tensorflow as tf  # the example's training step is TensorFlow code

        with tf.GradientTape() as tape:
            z_mean, z_log_var, z = self.encoder(data)
            reconstruction_loss, kl_loss = self.losses_per_image(data, z_mean, z_log_var, z)
            reconstruction_loss, kl_loss = ops.mean(reconstruction_loss), ops.mean(kl_loss)
            total_loss = reconstruction_loss + kl_loss
        grads = tape.gradient(total_loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights, strict=True))
        self.total_loss_tracker.update_state(total_loss)
        self.reconstruction_loss_tracker.update_state(reconstruction_loss)
        self.kl_loss_tracker.update_state(kl_loss)
        return {
            "loss": self.total_loss_tracker.result(),
            "reconstruction_loss": self.reconstruction_loss_tracker.result(),
            "kl_loss": self.kl_loss_tracker.result(),
        }

    def losses_per_image(self, data, z_mean, z_log_var, z):
        """Ours: the example's two loss terms image by image (``train_step`` averages them), so that the same
        code scores the model. Keras' cross-entropy of the sigmoid's probabilities works from its logits only
        because TensorFlow's sigmoid keeps them on its output."""
        reconstruction = self.decoder(z)
        reconstruction_loss = ops.sum(keras.losses.binary_crossentropy(data, reconstruction), axis=(1, 2))
        kl_loss = -0.5 * (1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
        return reconstruction_loss, ops.sum(kl_loss, axis=1)

    def call(self, x):
        z_mean, z_log_var, z = self.encoder(x)
        return self.decoder(z)


# [end train-step]


def build_keras_io_vae(latent_dim=LATENT_DIM, seed=None):
    """The compiled model, ready for ``fit`` on images of shape (count, 28, 28, 1) in [0, 1]."""
    if keras.backend.backend() != "tensorflow":
        raise ValueError("keras.io's VAE trains in a custom train_step written with tf.GradientTape: "
                         f"KERAS_BACKEND=tensorflow. Received: {keras.backend.backend()}")  # fmt: skip
    vae = VAE(build_encoder(latent_dim, seed), build_decoder(latent_dim))
    vae.compile(optimizer=keras.optimizers.Adam())
    return vae


def load_images(dataset="mnist", folder=None, split="all"):
    """The example's data: the training and test images together (``split="all"``), grey levels in [0, 1],
    shape (count, 28, 28, 1); ``split="train"`` keeps the test images out, so that they can score the model."""
    from mnist_data import load_dataset  # Ours: the local IDX files first (keras.datasets downloads)

    (x_train, _), (x_test, _) = load_dataset(dataset, folder)
    images = np.concatenate([x_train, x_test], axis=0) if split == "all" else x_train
    return np.expand_dims(images, -1).astype("float32") / 255


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="passes over the data (default: %(default)s)")
    parser.add_argument("--dataset", default="mnist", help="mnist or fashion_mnist (default: mnist)")
    parser.add_argument("--mnist-dir", default=None, help="the data set's folder (default: the loader's)")
    parser.add_argument("--split", default="all", choices=("all", "train"), help="all: the training and test "
                        "images, as the example; train: the training images only")  # fmt: skip
    parser.add_argument("--seed", type=int, default=None, help="seed of the weights and the noise (default: none)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.exit(2, f"{parser.prog}: error: Expected `epochs` to be a positive integer. Received: "
                       f"epochs={args.epochs}\n")  # fmt: skip
    from mnist_data import MNISTError

    if args.seed is not None:
        keras.utils.set_random_seed(args.seed)  # the weights are drawn when the model is built
    try:
        vae = build_keras_io_vae(seed=args.seed)
        images = load_images(args.dataset, args.mnist_dir, args.split)
    except (MNISTError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    history = vae.fit(images, epochs=args.epochs, batch_size=BATCH_SIZE, verbose=2)
    print(f"last epoch: loss {history.history['loss'][-1]:.2f} nats per image (reconstruction "
          f"{history.history['reconstruction_loss'][-1]:.2f}, KL {history.history['kl_loss'][-1]:.2f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

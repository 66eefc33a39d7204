"""Look at a trained VAE: the latent space of the test set and the decoded manifold.

Loads a model saved by ``train.py`` (``vae.keras``) and writes two figures:
``latent_space.png``, the posterior means of the MNIST test images coloured by
digit, and ``manifold.png``, the decoder's Bernoulli means on a grid of ``z``.
Both need a two-dimensional latent space.
"""

import argparse
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from scipy.special import expit  # noqa: E402
from scipy.stats import norm  # noqa: E402

import compose  # noqa: E402,F401  (registers the layers of every model the site trains, for loading)
from mnist_data import MNISTError, flatten_and_scale, load_mnist  # noqa: E402
from outputs import check_output_dir, load_saved_model, write_atomically  # noqa: E402


# [start encode]
def encode(encoder, x, batch_size=1000):
    """Posterior means ``z_mean`` of the images ``x``, shape (count, latent_dim)."""
    z_mean, _ = encoder.predict(x, batch_size=batch_size, verbose=0)
    return z_mean


# [end encode]


# [start manifold]
def decode_manifold(decoder, grid_size=15, quantiles=(0.05, 0.95), digit_size=28):
    """Bernoulli means decoded on a grid of ``z``, tiled into one image.

    Evenly spaced probabilities go through the inverse CDF of the standard
    normal, so the grid covers the prior evenly in probability mass. Rows run
    from high ``z_2`` (top) to low, columns from low ``z_1`` (left) to high.
    Returns the image, of shape (grid_size * 28, grid_size * 28), and the
    grid coordinates.
    """
    z_grid_1d = norm.ppf(np.linspace(*quantiles, grid_size))
    z_1, z_2 = np.meshgrid(z_grid_1d, z_grid_1d[::-1])
    z = np.stack([z_1, z_2], axis=-1).reshape(-1, 1, 2).astype("float32")
    x_logits = decoder.predict(z, verbose=0)  # (grid_size**2, 1, 784): one sample each
    digits = expit(x_logits).reshape(grid_size, grid_size, digit_size, digit_size)
    image = digits.transpose(0, 2, 1, 3).reshape(grid_size * digit_size, grid_size * digit_size)
    return image, z_grid_1d


# [end manifold]


def plot_latent_space(ax, z_mean, labels):
    scatter = ax.scatter(z_mean[:, 0], z_mean[:, 1], c=labels, cmap="tab10", s=2, vmin=-0.5, vmax=9.5, rasterized=True)
    ax.set_xlabel("$z_1$ (posterior mean)")
    ax.set_ylabel("$z_2$ (posterior mean)")
    ax.set_aspect("equal", adjustable="datalim")
    return scatter


def plot_manifold(ax, image, z_grid_1d):
    half_step = (z_grid_1d[-1] - z_grid_1d[0]) / (len(z_grid_1d) - 1) / 2
    low, high = z_grid_1d[0] - half_step, z_grid_1d[-1] + half_step
    ax.imshow(image, cmap="Greys_r", extent=(low, high, low, high), interpolation="nearest")
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")


def load_vae(path):
    """Load a saved VAE (safe mode) and return ``(vae, encoder, decoder)``."""
    path = pathlib.Path(path)
    vae = load_saved_model(path, "a vae.keras written by train.py")
    if vae.name != "vae":  # a composed model (flows, IWAE, AVB, ...) draws its own figures: scripts/plot_*.py
        raise ValueError(f"Expected a model of train.py (the first post's VAE). Received the model {vae.name!r}")
    encoder, decoder = vae.get_layer("encoder"), vae.get_layer("decoder")
    latent_dim = encoder.outputs[0].shape[-1]
    if latent_dim != 2:
        raise ValueError(f"Expected a model with latent_dim=2 to draw. Received: latent_dim={latent_dim}")
    return vae, encoder, decoder


def main(argv=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vae_output/vae.keras", help="saved model (default: %(default)s)")
    parser.add_argument(
        "--mnist-dir",
        default=None,
        help="folder with the MNIST IDX .gz files (default: $MNIST_DIR, else ../shared/data/mnist)",
    )
    parser.add_argument("--output-dir", default="vae_output", help="where to write the figures (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        output_dir = check_output_dir(args.output_dir, ["latent_space.png", "manifold.png"])  # before the work
        _, encoder, decoder = load_vae(args.model)
        _, (x_test, y_test) = load_mnist(args.mnist_dir)
    except (FileNotFoundError, MNISTError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    fig, ax = plt.subplots(figsize=(6, 5))
    fig.colorbar(plot_latent_space(ax, encode(encoder, flatten_and_scale(x_test)), y_test), ax=ax, label="digit")
    write_atomically(output_dir / "latent_space.png", lambda path: fig.savefig(path, bbox_inches="tight"))
    fig, ax = plt.subplots(figsize=(7, 7))
    plot_manifold(ax, *decode_manifold(decoder))
    write_atomically(output_dir / "manifold.png", lambda path: fig.savefig(path, bbox_inches="tight"))
    print(f"wrote latent_space.png and manifold.png to {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

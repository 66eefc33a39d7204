"""Draw the main post's figures from the trained model and its history.

Reads ``results/vae/vae.keras`` and ``history.json`` (written by
``train_main_post.py``) and the MNIST test set, and writes to ``--output-dir``:

* ``loss_curve.svg``: train and test negative ELBO per epoch;
* ``latent_space.png``: the posterior means of the test images, coloured by digit;
* ``manifold.png``: decoded Bernoulli means on a 15x15 grid of ``z`` placed
  through the Gaussian inverse CDF;
* ``lead.png``: the two side by side, for the post's preview;
* ``figures.json``: the record of the inputs they came from.

Output is deterministic for a given model and data (fixed seeds, no dates).
"""

import os
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "listings" / "vae"))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import provenance  # noqa: E402
from mnist_data import MNIST_FILES, MNISTError, resolve_mnist_dir  # noqa: E402

RESULTS_DIR = REPO_ROOT / "results" / "vae"
OUTPUT_DIR = REPO_ROOT / "images" / "vae"
FIGURES = ("loss_curve.svg", "latent_space.png", "manifold.png", "lead.png")
RECORD_NAME = "figures.json"
SETTINGS = {"grid_size": 15, "grid_quantiles": [0.05, 0.95], "digit_size": 28}


def input_paths(results_dir, mnist_dir=None):
    """The trained model, its history and the MNIST test files; MNISTError without a local MNIST folder."""
    folder = resolve_mnist_dir(mnist_dir)
    if folder is None:
        raise MNISTError("no local MNIST folder; set MNIST_DIR")
    results_dir = pathlib.Path(results_dir)
    return [results_dir / "vae.keras", results_dir / "history.json", *(folder / name for name in MNIST_FILES["test"])]


def setup_matplotlib():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.hashsalt": "beyond-the-quickstart", "font.size": 10})
    import matplotlib.pyplot as plt

    return plt


def save(fig, path):
    metadata = {"Date": None} if path.suffix == ".svg" else {"Software": None}
    fig.savefig(path, metadata=metadata, dpi=100, bbox_inches="tight")


def plot_loss_curve(plt, history, path):
    epochs = range(1, len(history["loss"]) + 1)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(epochs, history["loss"], label="train (average over the epoch)")
    ax.plot(epochs, history["val_loss"], label="test (end of epoch)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO (nats per image)")
    # The first epoch's training average starts far higher; keep the scale for the rest.
    top = max(history["val_loss"][0], history["loss"][min(1, len(history["loss"]) - 1)])
    bottom = min(min(history["loss"]), min(history["val_loss"]))
    ax.set_ylim(bottom - 0.05 * (top - bottom), top + 0.1 * (top - bottom))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save(fig, path)
    plt.close(fig)


def draw(results_dir, output_dir):

    from mnist_data import flatten_and_scale, load_mnist
    from visualize import decode_manifold, encode, load_vae, plot_latent_space, plot_manifold

    plt = setup_matplotlib()
    output_dir.mkdir(parents=True, exist_ok=True)
    history = provenance.read_json(results_dir / "history.json", ["loss", "val_loss"])
    plot_loss_curve(plt, history, output_dir / "loss_curve.svg")

    _, encoder, decoder = load_vae(results_dir / "vae.keras")
    _, (x_test, y_test) = load_mnist()
    z_mean = encode(encoder, flatten_and_scale(x_test))

    fig, ax = plt.subplots(figsize=(6, 5))
    scatter = plot_latent_space(ax, z_mean, y_test)
    fig.colorbar(scatter, ax=ax, ticks=range(10), label="digit")
    save(fig, output_dir / "latent_space.png")
    plt.close(fig)

    image, z_grid_1d = decode_manifold(
        decoder, SETTINGS["grid_size"], SETTINGS["grid_quantiles"], SETTINGS["digit_size"]
    )
    fig, ax = plt.subplots(figsize=(7, 7))
    plot_manifold(ax, image, z_grid_1d)
    save(fig, output_dir / "manifold.png")
    plt.close(fig)

    fig, (ax_left, ax_right) = plt.subplots(1, 2, figsize=(9, 4.2))
    plot_latent_space(ax_left, z_mean, y_test)
    plot_manifold(ax_right, image, z_grid_1d)
    fig.tight_layout()
    save(fig, output_dir / "lead.png")
    plt.close(fig)


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return provenance.draw_figures(
        __doc__, OUTPUT_DIR, FIGURES, draw, SETTINGS, results=("--results-dir", RESULTS_DIR),
        input_paths=input_paths, made_by="scripts/train_main_post.py", errors=(MNISTError,), argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

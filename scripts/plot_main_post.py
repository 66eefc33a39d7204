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

import argparse
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


def current_inputs(results_dir, mnist_dir=None):
    folder = resolve_mnist_dir(mnist_dir)
    if folder is None:
        raise MNISTError("no local MNIST folder; set MNIST_DIR")
    test_files = [folder / name for name in MNIST_FILES["test"]]
    results_dir = pathlib.Path(results_dir)
    paths = [
        results_dir / "vae.keras",
        results_dir / "history.json",
        pathlib.Path(__file__),
        REPO_ROOT / "listings" / "vae" / "visualize.py",
        *test_files,
    ]
    for path in paths[:2]:
        if not path.is_file():
            raise FileNotFoundError(f"Missing {path}: run scripts/train_main_post.py first")
    for path in test_files:
        if not path.is_file():
            raise MNISTError(f"Missing MNIST file: expected {path.name} in {folder}")
    return provenance.input_hashes(paths, SETTINGS)


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


def run(results_dir, output_dir, inputs):
    import json

    from mnist_data import flatten_and_scale, load_mnist
    from visualize import decode_manifold, encode, load_vae, plot_latent_space, plot_manifold

    plt = setup_matplotlib()
    output_dir.mkdir(parents=True, exist_ok=True)
    history = json.loads((results_dir / "history.json").read_text())
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

    provenance.write_record(output_dir / RECORD_NAME, {"settings": SETTINGS, "inputs": inputs})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--results-dir", default=str(RESULTS_DIR), help="folder with vae.keras and history.json (default: results/vae)"
    )
    parser.add_argument(
        "--output-dir", default=str(OUTPUT_DIR), help="where to write the figures (default: images/vae)"
    )
    parser.add_argument("--if-stale", action="store_true", help="do nothing when the record matches the inputs")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    results_dir, output_dir = pathlib.Path(args.results_dir), pathlib.Path(args.output_dir)
    try:
        inputs = current_inputs(results_dir)
    except (MNISTError, FileNotFoundError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    outputs = [output_dir / name for name in (*FIGURES, RECORD_NAME)]
    if args.if_stale and provenance.is_current(output_dir / RECORD_NAME, inputs, outputs):
        print(f"{output_dir / RECORD_NAME} is current; no figures to draw")
        return 0
    run(results_dir, output_dir, inputs)
    print(f"wrote {', '.join(FIGURES)} to {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

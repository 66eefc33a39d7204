"""Draw the figures of the post "Convolutional VAEs, and a second data set".

Reads ``results/conv/{mnist,fashion_mnist,keras_io}.json`` and ``<part>_images.npz``
(from ``conv_experiments.py``) and writes, in ``--output-dir`` (default
``images/conv``):

* ``images.svg``: per data set (a column each), eight test images, their reconstructions
  (the mean of ``p(x|z)`` at the posterior mean) and the means of
  ``p(x|z)`` at eight draws of ``z`` from the prior, by the dense and by the
  convolutional VAE;
* ``kl_per_dimension.svg``: per data set and network, the KL of each latent
  dimension, largest first, with the active units (Burda et al.'s
  criterion) counted in the legend;
* ``conv_model.svg``: the graph of the convolutional VAE, drawn by graphviz
  from the model `compose_vae` builds;
* ``keras_io_loss.svg``: the training loss per epoch of keras.io's VAE and of
  our composed twin (``keras_io.json``), from the same initial weights;
* ``figures.json``: the record of the inputs they came from.

With ``--if-stale`` it does nothing when the record matches the inputs.
"""

import os
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "listings" / "vae"))
sys.path.insert(0, str(REPO_ROOT / "scripts"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import provenance  # noqa: E402
from plot_iwae import setup_matplotlib  # noqa: E402

RESULTS_DIR = REPO_ROOT / "results" / "conv"
OUTPUT_DIR = REPO_ROOT / "images" / "conv"
PARTS = ("mnist", "fashion_mnist")
FIGURES = ("images.svg", "kl_per_dimension.svg", "conv_model.svg", "keras_io_loss.svg")
SETTINGS = {"dpi": 110, "diagram": {"data_dim": 784, "latent_dim": 16, "encoder": "conv", "decoder": "conv"}}
TITLES = {"mnist": "MNIST, binarised (Bernoulli)", "fashion_mnist": "Fashion-MNIST, grey (continuous Bernoulli)"}
NETWORK_LABELS = {"mlp": "dense", "conv": "convolutional"}


def input_paths(results_dir):
    results_dir = pathlib.Path(results_dir)
    paths = [results_dir / name for part in PARTS for name in (f"{part}.json", f"{part}_images.npz")]
    return [*paths, results_dir / "keras_io.json"]


def drawn_settings():
    """The settings and the graphviz version (a RuntimeError when graphviz is missing)."""
    from make_diagrams import graphviz_version

    return {**SETTINGS, "graphviz": graphviz_version()}


def save(fig, path):
    fig.savefig(path, metadata={"Date": None}, bbox_inches="tight", dpi=SETTINGS["dpi"])


def plot_images(images, path):
    import numpy as np

    plt = setup_matplotlib()
    rows = [("data", "test images")]
    for network, label in NETWORK_LABELS.items():
        rows += [(f"{network}/reconstruction", f"{label}: reconstruction"),
                 (f"{network}/sample", f"{label}: mean at z ~ p(z)")]  # fmt: skip
    count = images[PARTS[0]]["data"].shape[0]
    fig, axes = plt.subplots(len(rows), len(PARTS), figsize=(len(PARTS) * count * 0.6 + 2.4, len(rows) * 0.75),
                             squeeze=False)  # fmt: skip
    for column, part in enumerate(PARTS):
        for row, (key, label) in enumerate(rows):
            ax = axes[row, column]
            strip = np.clip(images[part][key].reshape(count, 28, 28), 0.0, 1.0)
            ax.imshow(strip.transpose(1, 0, 2).reshape(28, count * 28), cmap="gray", vmin=0.0, vmax=1.0,
                      interpolation="nearest")  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        axes[0, column].set_title(TITLES[part], fontsize=9, loc="left")
    fig.tight_layout(h_pad=0.2, w_pad=0.6)
    save(fig, path)
    plt.close(fig)


def plot_kl_per_dimension(records, path):
    from matplotlib.ticker import MaxNLocator

    from posterior_collapse import ACTIVITY_THRESHOLD

    plt = setup_matplotlib()
    fig, axes = plt.subplots(1, len(PARTS), figsize=(4.2 * len(PARTS), 3.2), sharey=True)
    for ax, part in zip(axes, PARTS, strict=True):
        results = records[part]["results"]
        for (network, label), marker in zip(NETWORK_LABELS.items(), "os", strict=True):
            kl = sorted(results[network]["kl_per_dimension"], reverse=True)
            ax.plot(range(1, len(kl) + 1), kl, marker=marker, ms=4, lw=1,
                    label=f"{label} ({results[network]['active_units']} active)")  # fmt: skip
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("latent dimension, by its KL")
        ax.set_title(TITLES[part], fontsize=9)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("KL per dimension (nats)")
    fig.suptitle(f"Active: posterior mean varies over test images by more than {ACTIVITY_THRESHOLD}", fontsize=8,
                 y=0.02, va="bottom")  # fmt: skip
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    save(fig, path)
    plt.close(fig)


def plot_keras_io_loss(record, path):
    plt = setup_matplotlib()
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    results = record["results"]
    for (name, label), marker in zip((("keras_io", "keras.io's VAE (custom train_step)"),
                                      ("ours", "composed twin (compose_vae)")), "os", strict=True):  # fmt: skip
        loss = results[name]["loss"]
        ax.plot(range(1, len(loss) + 1), loss, marker=marker, ms=3, lw=1, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (nats per image)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)


def draw_model(path):
    from compose import compose_vae
    from make_diagrams import model_to_svg

    pathlib.Path(path).write_text(model_to_svg(compose_vae(**SETTINGS["diagram"]), show_shapes=True))


def draw(results_dir, output_dir):
    import numpy as np

    records = {part: provenance.read_json(results_dir / f"{part}.json", ["results"]) for part in PARTS}
    images = {}
    for part in PARTS:
        with np.load(results_dir / f"{part}_images.npz") as arrays:
            images[part] = dict(arrays)
    plot_images(images, output_dir / FIGURES[0])
    plot_kl_per_dimension(records, output_dir / FIGURES[1])
    draw_model(output_dir / FIGURES[2])
    plot_keras_io_loss(provenance.read_json(results_dir / "keras_io.json", ["results"]), output_dir / FIGURES[3])


def main(argv=None):
    return provenance.draw_figures(
        __doc__, OUTPUT_DIR, FIGURES, draw, drawn_settings, results=("--results-dir", RESULTS_DIR),
        input_paths=input_paths, made_by="conv_experiments.py", argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

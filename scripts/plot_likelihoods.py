"""Draw the figures and the model diagram of the post "One skeleton, many likelihoods".

Reads ``results/likelihoods/{mnist,regression,classification}.json`` and
``mnist_images.npz`` (from ``likelihood_experiments.py``) and writes, in
``--output-dir`` (default ``images/likelihoods``):

* ``mnist_heads.svg``: eight test digits, then for each head their
  reconstructions (the mean of ``p(x|z)`` at the posterior mean), the means
  of ``p(x|z)`` at eight draws of ``z`` from the prior, and one draw of
  ``x`` from each of those;
* ``regression.svg``: held-out diabetes targets with 50% and 90% predictive
  intervals, and the coverage of the intervals against their nominal level;
* ``reliability.svg``: the reliability diagram of Bayesian and
  maximum-likelihood softmax regression on digits;
* ``regression_model.svg``: the graph of the regression model, drawn by
  graphviz from the model `skeleton.task_vae` builds;
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

RESULTS_DIR = REPO_ROOT / "results" / "likelihoods"
OUTPUT_DIR = REPO_ROOT / "images" / "likelihoods"
FIGURES = ("mnist_heads.svg", "regression.svg", "reliability.svg", "regression_model.svg")
SETTINGS = {"dpi": 110, "diagram": {"task": "diabetes", "data_dim": 10, "num_examples": 331}}
HEAD_LABELS = {
    "bernoulli": "Bernoulli",
    "continuous_bernoulli": "continuous Bernoulli",
    "gaussian": "Gaussian, scale per pixel",
    "gaussian_heteroscedastic": "Gaussian, scale per output",
}


def input_paths(results_dir):
    results_dir = pathlib.Path(results_dir)
    names = ("mnist.json", "mnist_images.npz", "regression.json", "classification.json")
    return [*(results_dir / name for name in names)]


def drawn_settings():
    """The settings and the graphviz version (a RuntimeError when graphviz is missing)."""
    from make_diagrams import graphviz_version

    return {**SETTINGS, "graphviz": graphviz_version()}


def save(fig, path):
    fig.savefig(path, metadata={"Date": None}, bbox_inches="tight", dpi=SETTINGS["dpi"])


def plot_mnist(mnist, images, path):
    import numpy as np

    plt = setup_matplotlib()
    heads = [head for head in HEAD_LABELS if head in mnist["results"]]
    rows = [("data", "test digits")]
    for head in heads:
        rows += [(f"{head}/reconstruction_mean", "reconstruction"), (f"{head}/sample_mean", "mean at z ~ p(z)"),
                 (f"{head}/sample_draw", "x ~ p(x|z)")]  # fmt: skip
    count = images["data"].shape[0]
    fig, axes = plt.subplots(len(rows), 1, figsize=(count * 0.75 + 2.2, len(rows) * 0.8))
    for ax, (key, label) in zip(axes, rows, strict=True):
        strip = np.clip(images[key].reshape(count, 28, 28), 0.0, 1.0).transpose(1, 0, 2).reshape(28, count * 28)
        ax.imshow(strip, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        head = key.split("/")[0]
        if key.endswith("reconstruction_mean"):
            ax.set_title(HEAD_LABELS[head], fontsize=9, loc="left")
    fig.tight_layout(h_pad=0.2)
    save(fig, path)
    plt.close(fig)


def plot_regression(regression, path):
    import numpy as np

    plt = setup_matplotlib()
    figure = regression["results"]["splits"][0]["figure"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.6), gridspec_kw={"width_ratios": [1.6, 1]})
    index = np.arange(len(figure["y"]))
    for level, alpha in (("0.9", 0.25), ("0.5", 0.45)):
        low, high = figure[f"interval_{level}"]
        left.fill_between(index, low, high, color="tab:blue", alpha=alpha, lw=0, label=f"{float(level):.0%} interval")
    left.plot(index, figure["mean"], color="tab:blue", lw=1, label="predictive mean")
    left.scatter(index, figure["y"], s=6, color="black", zorder=3, label="held-out target")
    left.set_xlabel("held-out patients, by predicted progression")
    left.set_ylabel("disease progression (standardised)")
    left.legend(fontsize=7, loc="upper left")
    summary = regression["results"]["summary"]
    keys = sorted(summary["coverage"], key=int)
    levels = [int(key) / 100 for key in keys]
    right.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="nominal")
    right.plot(levels, [summary["coverage"][key] for key in keys], "o-", label="Bayesian, global q(w)")
    right.plot(levels, [summary["ols_coverage"][key] for key in keys], "s--", label="least squares, plug-in")
    right.set_xlim(0.4, 1.0)
    right.set_ylim(0.4, 1.0)
    right.set_xlabel("nominal coverage")
    right.set_ylabel(f"held-out coverage ({regression['settings']['splits']} splits)")
    right.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)


def plot_reliability(classification, path):
    plt = setup_matplotlib()
    results = classification["results"]
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="perfect calibration")
    for name, label, marker, style in (("bayes", "Bayesian", "o", "-"), ("ml", "maximum likelihood", "s", "--")):
        bins = results[name]["bins"]
        x, y = [b["confidence"] for b in bins], [b["accuracy"] for b in bins]
        (line,) = ax.plot(x, y, style, lw=1, label=f"{label} (ECE {results[name]['ece']:.3f})")
        # Marker area proportional to the number of test images in the bin.
        ax.scatter(x, y, s=[16 * b["count"] ** 0.5 for b in bins], marker=marker, color=line.get_color(), zorder=3)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)


def draw_model(path):
    from make_diagrams import model_to_svg
    from skeleton import task_vae

    model, _ = task_vae(**SETTINGS["diagram"])
    pathlib.Path(path).write_text(model_to_svg(model, show_shapes=True))


def draw(results_dir, output_dir):
    import numpy as np

    names = ("mnist", "regression", "classification")
    records = {name: provenance.read_json(results_dir / f"{name}.json", ["results"]) for name in names}
    with np.load(results_dir / "mnist_images.npz") as images:
        plot_mnist(records["mnist"], dict(images), output_dir / FIGURES[0])
    plot_regression(records["regression"], output_dir / FIGURES[1])
    plot_reliability(records["classification"], output_dir / FIGURES[2])
    draw_model(output_dir / FIGURES[3])


def main(argv=None):
    return provenance.draw_figures(
        __doc__, OUTPUT_DIR, FIGURES, draw, drawn_settings, results=("--results-dir", RESULTS_DIR),
        input_paths=input_paths, made_by="likelihood_experiments.py", argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

"""Draw the IWAE post's figures from the recorded measurements.

Reads ``results/iwae/experiments.json`` (from ``mc_samples_experiments.py``)
and writes, in ``--output-dir`` (default ``images/iwae``):

* ``gradient_variance.svg``: variance of the encoder gradient against the
  number of samples, for the ELBO and the IWAE bound;
* ``batch_mc_grid.svg``: test negative ELBO over batch size x samples, at a
  fixed number of steps and at a fixed wall-clock time;
* ``bounds_vs_k.svg``: the ELBO and the bound L_M against the number M of
  importance samples, for a VAE and an IWAE trained with S = 50;
* ``reconstructions.svg``: one test digit decoded from single samples of z;
* ``learning_curves.svg``: the test NLL at the end of every stage of the
  paper's schedule, per row of ``results/iwae-long/table.json`` (from
  ``train_iwae_table.py``), with the paper's numbers after 3,280 epochs;
* ``figures.json``: the record of the inputs they came from.

With ``--if-stale`` it draws only when the record is stale (``provenance.draw_figures``).
"""

import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import provenance  # noqa: E402

EXPERIMENTS = REPO_ROOT / "results" / "iwae" / "experiments.json"
LONG_TABLE = REPO_ROOT / "results" / "iwae-long" / "table.json"  # the rows trained on, stage by stage
PAPER_EPOCHS = 3280  # Burda et al.'s eight stages
OUTPUT_DIR = REPO_ROOT / "images" / "iwae"
FIGURES = ("gradient_variance.svg", "batch_mc_grid.svg", "bounds_vs_k.svg", "reconstructions.svg",
           "learning_curves.svg")  # fmt: skip
RECORD_NAME = "figures.json"
LABELS = {"elbo": "ELBO", "iwae": "IWAE bound", "vae-k50": "VAE, S = 50", "iwae-k50": "IWAE, S = 50"}


SETTINGS = {"figures": FIGURES}


def setup_matplotlib():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.hashsalt": "beyond-the-quickstart", "font.size": 10})
    import matplotlib.pyplot as plt

    return plt


def save(fig, path):
    fig.savefig(path, metadata={"Date": None}, bbox_inches="tight")


def plot_gradient_variance(results, repeats, path):
    plt = setup_matplotlib()
    fig, (ax, ax_snr) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    for objective, marker in (("elbo", "o"), ("iwae", "s")):
        samples = sorted(int(s) for s in results[objective])
        cells = [results[objective][str(s)] for s in samples]
        variance = [cell["total_variance"] for cell in cells]
        ax.plot(samples, variance, marker=marker, label=f"negative {LABELS[objective]}")
        # |mean of R draws|^2 overestimates |E g|^2 by the variance over R.
        snr = [
            (cell["squared_norm_of_mean"] - cell["total_variance"] / repeats) / cell["total_variance"] for cell in cells
        ]
        ax_snr.plot(samples, snr, marker=marker, label=f"negative {LABELS[objective]}")
        if objective == "elbo":
            ax.plot(samples, [variance[0] / s for s in samples], "k:", label="1/S from S = 1")
    for axis in (ax, ax_snr):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("Monte Carlo samples S per example")
        axis.grid(True, which="major", alpha=0.3)
    ax.set_ylabel("variance of the encoder gradient\n(summed over weights)")
    ax_snr.set_ylabel("squared norm of the mean gradient\n/ its variance")
    ax.legend(frameon=False)
    save(fig, path)
    plt.close(fig)


def plot_grid(results, path):
    import numpy as np

    plt = setup_matplotlib()
    budgets = (("fixed_steps", "same number of steps"), ("fixed_time", "same wall-clock time"))
    cells = [cell for budget, _ in budgets for cell in results[budget].values()]
    batch_sizes = sorted({cell["batch_size"] for cell in cells})
    samples = sorted({cell["mc_samples"] for cell in cells})
    values = [cell["test_negative_elbo"] for cell in cells]
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.8), constrained_layout=True)
    for ax, (budget, title) in zip(axes, budgets, strict=True):
        grid = np.array([[results[budget][f"b{b}-s{s}"]["test_negative_elbo"] for s in samples] for b in batch_sizes])
        image = ax.imshow(grid, cmap="viridis_r", vmin=min(values), vmax=max(values), origin="lower")
        for i, b in enumerate(batch_sizes):
            for j, s in enumerate(samples):
                cell = results[budget][f"b{b}-s{s}"]
                ax.text(
                    j,
                    i,
                    f"{cell['test_negative_elbo']:.1f}\n({cell['train_negative_elbo']:.1f})\n{cell['epochs']:.1f} ep",
                    ha="center",
                    va="center",
                    color="black" if grid[i, j] < np.mean(values) else "white",
                    fontsize=8,
                )
        ax.set_xticks(range(len(samples)), [str(s) for s in samples])
        ax.set_yticks(range(len(batch_sizes)), [str(b) for b in batch_sizes])
        ax.set_xlabel("Monte Carlo samples S")
        ax.set_ylabel("batch size")
        ax.set_title(title)
    fig.colorbar(image, ax=axes, label="test negative ELBO (nats)")
    save(fig, path)
    plt.close(fig)


def plot_bounds(results, path):
    plt = setup_matplotlib()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for row, marker in zip(results, "osd^v", strict=False):
        ks = sorted(int(key[1:]) for key in results[row] if key.startswith("k"))
        (line,) = ax.plot(
            ks, [results[row][f"k{k}"] for k in ks], marker=marker, label=f"{LABELS.get(row, row)}: $L_M$"
        )
        ax.axhline(results[row]["elbo"], color=line.get_color(), linestyle="--", label=f"{LABELS.get(row, row)}: ELBO")
    ax.set_xscale("log")
    ax.set_xlabel("importance samples M")
    ax.set_ylabel("bound on log p(x) (nats per image)")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    save(fig, path)
    plt.close(fig)


def plot_reconstructions(results, path):
    import numpy as np

    plt = setup_matplotlib()
    images = [results["digit"], *results["samples"], results["average"]]
    titles = ["test digit", *[f"z$_{i + 1}$" for i in range(len(results["samples"]))], "average"]
    fig, axes = plt.subplots(1, len(images), figsize=(1.0 * len(images), 1.35))
    for ax, image, title in zip(axes, images, titles, strict=True):
        ax.imshow(np.reshape(image, (28, 28)), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    save(fig, path)
    plt.close(fig)


STYLE_OF_S = {1: ("C0", "o"), 5: ("C1", "s"), 50: ("C2", "D")}


def plot_learning_curves(table, path):
    plt = setup_matplotlib()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True, sharey=True, constrained_layout=True)
    for ax, objective, title in zip(axes, ("elbo", "iwae"), ("VAE (ELBO)", "IWAE"), strict=True):
        rows = sorted((row for row in table["rows"].values() if row["settings"]["objective"] == objective),
                      key=lambda row: row["settings"]["k"])  # fmt: skip
        for row in rows:
            colour, marker = STYLE_OF_S[row["settings"]["k"]]  # the same S looks the same in both panels
            epochs = sorted(map(int, row["stage_test_nll"]))
            nll = [row["stage_test_nll"][str(epoch)]["test_nll"] for epoch in epochs]
            ax.plot(epochs, nll, marker=marker, color=colour, label=f"S = {row['settings']['k']}")
            ax.plot([PAPER_EPOCHS], [row["paper_test_nll"]], marker=marker, color=colour, fillstyle="none",
                    linestyle="none")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xticks([1, 4, 13, 40, 121, 364, PAPER_EPOCHS], ["1", "4", "13", "40", "121", "364", "3,280"])
        ax.minorticks_off()
        ax.set_xlim(0.7, PAPER_EPOCHS * 1.5)
        ax.set_xlabel("epochs (the end of each stage of the schedule)")
        ax.set_title(title)
        ax.grid(True, which="major", alpha=0.3)
        ax.axvline(PAPER_EPOCHS, color="0.6", linestyle=":", linewidth=1)
        if rows:
            ax.legend(frameon=False, title="open: the paper, 3,280 epochs", title_fontsize=9)
        else:  # a table still growing
            ax.text(0.5, 0.5, "not trained this far yet", ha="center", transform=ax.transAxes, color="0.4")
    axes[0].set_ylabel("test NLL, nats (K = 5000,\nfirst 1,000 test images)")
    save(fig, path)
    plt.close(fig)


def draw(experiments_path, output_dir):
    results = provenance.read_json(experiments_path)
    plot_learning_curves(provenance.read_json(LONG_TABLE), output_dir / "learning_curves.svg")
    plot_gradient_variance(
        results["gradient_variance"],
        results["settings"]["gradient_variance"]["repeats"],
        output_dir / "gradient_variance.svg",
    )
    plot_grid(results["grid"], output_dir / "batch_mc_grid.svg")
    plot_bounds(results["bounds"], output_dir / "bounds_vs_k.svg")
    plot_reconstructions(results["reconstructions"], output_dir / "reconstructions.svg")


def main(argv=None):
    return provenance.draw_figures(
        __doc__, OUTPUT_DIR, FIGURES, draw, SETTINGS, results=("--experiments", EXPERIMENTS),
        input_paths=lambda path: [path, LONG_TABLE],
        made_by="mc_samples_experiments.py and train_iwae_table.py --output-dir results/iwae-long", argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

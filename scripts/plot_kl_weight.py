"""Draw the figures of the KL weight (beta) and the KL warm-up, from ``kl_weight_experiments.py``.

Reads ``results/kl-weight/{beta,warmup}.json`` and writes, in ``--output-dir``
(default ``images/kl-weight``):

* ``active_units.svg``: the active units and the test NLL of each model,
  against beta (left) and against the epochs of warm-up (right), the
  unweighted ELBO marked;
* ``rate_distortion.svg``: each model's rate (the ELBO's KL term) and
  distortion (``-log p(x|z)``) on the test images, with lines of equal
  negative ELBO (rate + distortion);
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

RESULTS_DIR = REPO_ROOT / "results" / "kl-weight"
OUTPUT_DIR = REPO_ROOT / "images" / "kl-weight"
PARTS = ("beta", "warmup")
FIGURES = ("active_units.svg", "rate_distortion.svg")
SETTINGS = {"dpi": 110}
AXIS_LABELS = {"beta": "beta (weight of the KL term)", "warmup": "epochs of KL warm-up"}
REFERENCE = {"beta": 1.0, "warmup": 0}


def input_paths(results_dir):
    return [pathlib.Path(results_dir) / f"{part}.json" for part in PARTS]


def drawn_settings():
    return dict(SETTINGS)


def save(fig, path):
    fig.savefig(path, metadata={"Date": None}, bbox_inches="tight", dpi=SETTINGS["dpi"])


def rows(record):
    """The record's models, by increasing value."""
    return sorted(record["results"]["values"].values(), key=lambda row: row["value"])


def plot_active_units(records, path):
    plt = setup_matplotlib()
    fig, axes = plt.subplots(2, len(PARTS), figsize=(8.4, 5.2), sharex="col", sharey="row")
    for column, part in enumerate(PARTS):
        models = rows(records[part])
        values = [row["value"] for row in models]
        latent_dim = records[part]["settings"]["latent_dim"]
        for ax, key, label in ((axes[0, column], "active_units", f"active units (of {latent_dim})"),
                               (axes[1, column], "test_nll", "test NLL (nats)")):  # fmt: skip
            ax.plot(values, [row[key] for row in models], "o-", lw=1, ms=5)
            reference = [row for row in models if row["value"] == REFERENCE[part]]
            ax.plot([reference[0]["value"]], [reference[0][key]], "o", ms=11, mfc="none", color="black",
                    label="unweighted ELBO")  # fmt: skip
            if column == 0:
                ax.set_ylabel(label)
        axes[1, column].ticklabel_format(axis="y", useOffset=False)
        if part == "beta":
            axes[1, column].set_xscale("log", base=2)
        axes[1, column].set_xlabel(AXIS_LABELS[part])
        axes[0, column].legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)


def plot_rate_distortion(records, path):
    import numpy as np

    plt = setup_matplotlib()
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    every = [row for part in PARTS for row in rows(records[part])]
    rates = np.array([row["rate"] for row in every])
    low, high = rates.min() * 0.9, rates.max() * 1.1
    best = min(row["negative_elbo"] for row in every)
    for total in best + np.arange(0, 4) * 5.0:  # lines of equal rate + distortion
        ax.plot([low, high], [total - low, total - high], color="grey", lw=0.6, ls=":")
    # beta's labels above the points, the warm-up's below: the unweighted model is in both sweeps.
    for part, marker, offset in zip(PARTS, "os", ((4, 3), (4, -10)), strict=True):
        models = rows(records[part])
        ax.plot([row["rate"] for row in models], [row["distortion"] for row in models], marker=marker, lw=1, ms=5,
                label=AXIS_LABELS[part])  # fmt: skip
        for row in models:
            ax.annotate(f"{row['value']:g}", (row["rate"], row["distortion"]), fontsize=7, xytext=offset,
                        textcoords="offset points")  # fmt: skip
    ax.set_xlim(low, high)
    ax.set_xlabel("rate: KL term of the ELBO (nats)")
    ax.set_ylabel("distortion: -log p(x|z) (nats)")
    ax.legend(fontsize=7, title="dotted: equal -ELBO, 5 nats apart", title_fontsize=7)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)


def draw(results_dir, output_dir):
    records = {part: provenance.read_json(results_dir / f"{part}.json", ["results"]) for part in PARTS}
    plot_active_units(records, output_dir / FIGURES[0])
    plot_rate_distortion(records, output_dir / FIGURES[1])


def main(argv=None):
    return provenance.draw_figures(
        __doc__, OUTPUT_DIR, FIGURES, draw, drawn_settings, results=("--results-dir", RESULTS_DIR),
        input_paths=input_paths, made_by="kl_weight_experiments.py", argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

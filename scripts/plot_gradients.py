"""Draw the figures of the encoder's gradient estimators, from ``gradient_experiments.py``.

Reads ``results/gradients/{toy,spread,training}.json`` (and the seeds'
record ``results/seeds/gradients.json`` when there is one) and writes, in
``--output-dir`` (default ``images/gradients``):

* ``snr.svg``: the mean signal-to-noise ratio of the gradient against the
  number of samples, log-log: the encoder of the linear-Gaussian model
  (left), the encoder and the decoder of the trained MNIST models (middle,
  right); the IWAE bound with the total derivative and with DReG, and the
  ELBO with the total derivative and with STL; dotted, the ratio a weight
  whose mean gradient is zero shows from the finite number of draws;
* ``variance.svg``: the encoder gradient's variance summed over the
  weights against the number of samples, log-log, for the same four;
* ``training.svg``: the paired difference of each estimator's test
  log-likelihood from the total derivative's, per training seed, with two
  standard errors;
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

RESULTS_DIR = REPO_ROOT / "results" / "gradients"
SEEDS_RECORD = REPO_ROOT / "results" / "seeds" / "gradients.json"
OUTPUT_DIR = REPO_ROOT / "images" / "gradients"
PARTS = ("toy", "spread", "training")
FIGURES = ("snr.svg", "variance.svg", "training.svg")
SETTINGS = {"dpi": 110}
# (objective, estimator): label, colour, line style
CURVES = {
    ("iwae", "total"): ("IWAE bound, total derivative", "C0", "-"),
    ("iwae", "dreg"): ("IWAE bound, DReG", "C0", "--"),
    ("elbo", "total"): ("ELBO, total derivative", "C1", "-"),
    ("elbo", "stl"): ("ELBO, STL", "C1", "--"),
}


def input_paths(results_dir):
    paths = [pathlib.Path(results_dir) / f"{part}.json" for part in PARTS]
    seeds = pathlib.Path(results_dir).parent / "seeds" / "gradients.json"
    return [*paths, seeds] if seeds.is_file() else paths


def drawn_settings():
    return dict(SETTINGS)


def save(fig, path):
    fig.savefig(path, metadata={"Date": None}, bbox_inches="tight", dpi=SETTINGS["dpi"])


def curve(results, objective, estimator, network, key):
    by_samples = results[objective]["by_samples"]
    samples = sorted(by_samples, key=int)
    return [int(s) for s in samples], [by_samples[s][estimator][network][key] for s in samples]


def zero_mean_floor(draws):
    """E|mean| / sd of ``draws`` normal draws whose true mean is zero: sqrt(2 / (pi * draws))."""
    import math

    return math.sqrt(2 / (math.pi * draws))


def plot_snr(toy, spread, path):
    plt = setup_matplotlib()
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.7), sharex=True)
    panels = ((toy, "encoder", "linear-Gaussian model: encoder"), (spread, "encoder", "MNIST: encoder"),
              (spread, "decoder", "MNIST: decoder"))  # fmt: skip
    for ax, (record, network, title) in zip(axes, panels, strict=True):
        results = record["results"]
        for (objective, estimator), (label, colour, style) in CURVES.items():
            samples, snr = curve(results, objective, estimator, network, "mean_snr")
            slope = results[objective]["snr_log_slope"][estimator][network]
            ax.plot(samples, snr, marker="o", ms=4, lw=1, color=colour, ls=style, label=f"{label} ({slope:+.2f})")
        ax.axhline(zero_mean_floor(record["settings"]["draws"]), color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("samples S per image")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=6, title="(slope of log SNR on log S)", title_fontsize=6)
    axes[0].set_ylabel("mean SNR, |mean| / sd per weight")
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)


def plot_variance(spread, path):
    plt = setup_matplotlib()
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for (objective, estimator), (label, colour, style) in CURVES.items():
        samples, variance = curve(spread, objective, estimator, "encoder", "total_variance")
        ax.plot(samples, variance, marker="o", ms=4, lw=1, color=colour, ls=style, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("samples S per image")
    ax.set_ylabel("encoder gradient variance, summed")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)


def plot_training(training, seeds, path):
    plt = setup_matplotlib()
    fig, ax = plt.subplots(figsize=(5.2, 2.8))
    comparisons = {"elbo-stl": "ELBO: STL - total", "iwae-dreg": "IWAE bound: DReG - total"}
    for row, key in enumerate(comparisons):
        per_seed = (seeds or {}).get(key, {}).get("per_seed") or [training["paired_with_total"][key]]
        for offset, entry in enumerate(per_seed):
            y = row + 0.12 * (offset - (len(per_seed) - 1) / 2)
            ax.errorbar([entry["difference"]], [y], xerr=[2 * entry["stderr"]], fmt="o", ms=4, color="C0",
                        capsize=2, lw=1)  # fmt: skip
    ax.axvline(0.0, color="grey", lw=0.8, ls=":")
    ax.set_yticks(range(len(comparisons)), list(comparisons.values()), fontsize=8)
    ax.set_ylim(-0.6, len(comparisons) - 0.4)
    ax.set_xlabel("test log p(x) difference (nats per image), one dot per seed, 2 SE")
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)


def draw(results_dir, output_dir):
    records = {part: provenance.read_json(results_dir / f"{part}.json", ["results"]) for part in PARTS}
    seeds_path = pathlib.Path(results_dir).parent / "seeds" / "gradients.json"
    seeds = provenance.read_json(seeds_path, ["comparisons"])["comparisons"] if seeds_path.is_file() else None
    plot_snr(records["toy"], records["spread"], output_dir / FIGURES[0])
    plot_variance(records["spread"]["results"], output_dir / FIGURES[1])
    plot_training(records["training"]["results"], seeds, output_dir / FIGURES[2])


def main(argv=None):
    return provenance.draw_figures(
        __doc__, OUTPUT_DIR, FIGURES, draw, drawn_settings, results=("--results-dir", RESULTS_DIR),
        input_paths=input_paths, made_by="gradient_experiments.py", argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

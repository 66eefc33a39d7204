"""Draw the performance page's bar chart from the benchmark results.

Reads ``results/performance/benchmark.json`` (written by ``benchmark.py``)
and writes to ``--output-dir``:

* ``seconds_per_epoch.svg``: median steady-state seconds per epoch of every
  configuration, with the range over repeats, next to the machine's limit
  for the same number of Monte Carlo samples, one panel per architecture;
* ``backends.svg``: the composed VAE's seconds per epoch under each Keras
  backend, next to our first post's core, the PyTorch reference, the
  machine's limit and the same products compiled by XLA (each limit's median
  and range over repeats), one panel per architecture;
* ``figures.json``: the record of the inputs it came from, and each
  target's verdict judged on the range over repeats as well as the median
  (``targets``, which the performance page shows).

Output is deterministic for a given results file.
"""

import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import provenance  # noqa: E402
from benchmark import (  # noqa: E402
    ARCHITECTURES,
    COMPOSED,
    CONFIG_LABELS,
    PIPELINE,
    RESULTS,
    arch_key,
    config_mc_samples,
)

OUTPUT_DIR = REPO_ROOT / "images" / "performance"
FIGURE = "seconds_per_epoch.svg"
BACKENDS_FIGURE = "backends.svg"
RECORD_NAME = "figures.json"
ORDER = [
    "classic",
    "classic-compiled",
    "torch-S1",
    "ours-S1",
    "ours-S1-binarised-once",
    "ours-S1-step-only",
    "pipeline-only",
    "pipeline-only-binarised-once",
    "ours-S5",
    "ours-S25",
]
# The rows of the backends figure: the composed VAE per backend, then what it is measured against.
BACKEND_ORDER = [*COMPOSED, "ours-S1", "torch-S1", "xla-limit-S1", "machine-limit-S1"]
BACKEND_LABELS = {
    **CONFIG_LABELS,
    "ours-S1": "first post's core, S=1 (TensorFlow)",
    "xla-limit-S1": "the products compiled by XLA, S=1",
    "machine-limit-S1": "machine limit, S=1",
}
# The limits of a record: its key and the name of its row.
LIMITS = {"machine-limit-S1": "machine_limit", "xla-limit-S1": "xla_limit"}


# Each target's ratio as a function of two timed configurations of one
# architecture, so that its range over repeats can be bounded: ``numerator``
# over ``denominator`` seconds per epoch, then ``transform`` (a share is one
# minus a ratio). The machine's limit is a single NumPy timing with no range.
RATIO_PARTS = {
    "ours_s1_over_classic": ("784-256-2", "ours-S1", "classic"),
    "ours_s1_over_torch_784_256_2": ("784-256-2", "ours-S1", "torch-S1"),
    "ours_s1_over_torch_784_200_200_50": ("784-200-200-50", "ours-S1", "torch-S1"),
    "ours_s25_over_s1_784_256_2": ("784-256-2", "ours-S25", "ours-S1"),
    "ours_s25_over_s1_784_200_200_50": ("784-200-200-50", "ours-S25", "ours-S1"),
    "binarisation_share_784_256_2": ("784-256-2", "ours-S1-binarised-once", "ours-S1"),
    "binarisation_share_784_200_200_50": ("784-200-200-50", "ours-S1-binarised-once", "ours-S1"),
    "fraction_of_machine_limit_784_200_200_50": ("784-200-200-50", "machine-limit-S1", "ours-S1"),
}
# The worst pair of a comparison with PyTorch is already the end of a range (the largest ratio over the
# repeats): its range is that of the paired ratios, and it meets its target only if every pair does.
WORST_PAIRS = {}
# The fastest backend's fraction of the machine's limit: its range is that of the largest fraction.
FASTEST_FRACTIONS = {}
for _architecture in ARCHITECTURES:
    _key = arch_key(_architecture)
    RATIO_PARTS[f"ours_s1_over_torch_median_{_key}"] = (_architecture, "ours-S1", "torch-S1")
    WORST_PAIRS[f"ours_s1_over_torch_worst_pair_{_key}"] = (_architecture, "ours-S1", "torch-S1")
    for _config, _backend in COMPOSED.items():
        RATIO_PARTS[f"composed_{_backend}_over_torch_median_{_key}"] = (_architecture, _config, "torch-S1")
        WORST_PAIRS[f"composed_{_backend}_over_torch_worst_pair_{_key}"] = (_architecture, _config, "torch-S1")
        RATIO_PARTS[f"fraction_of_machine_limit_{_backend}_{_key}"] = (_architecture, "machine-limit-S1", _config)
    FASTEST_FRACTIONS[f"fastest_backend_fraction_of_machine_limit_{_key}"] = _architecture
COMPARE = {"<=": float.__le__, "<": float.__lt__, ">=": float.__ge__}


def seconds_range(architecture, config):
    """(fastest, slowest) seconds per epoch over the repeats (of the machine's limit, when a record has them)."""
    if config in LIMITS:
        limit = architecture[LIMITS[config]]["S1"]
        median = limit["ideal_seconds_per_epoch"]
        return limit.get("ideal_seconds_per_epoch_min", median), limit.get("ideal_seconds_per_epoch_max", median)
    summary = architecture["configs"][config]
    return summary["seconds_per_epoch_min"], summary["seconds_per_epoch_max"]


def ratio_range(results, name):
    """The smallest and largest value a target's ratio takes over any pairing of the two ranges.

    A worst pair ranges over the paired ratios of the repeats; the fastest
    backend's fraction of the limit over the largest of the backends' ranges.
    """
    if name in WORST_PAIRS:
        architecture, numerator, denominator = WORST_PAIRS[name]
        configs = results["architectures"][architecture]["configs"]
        pairs = [
            n / d
            for n, d in zip(
                configs[numerator]["seconds_per_epoch_per_repeat"],
                configs[denominator]["seconds_per_epoch_per_repeat"],
                strict=True,
            )
        ]
        return min(pairs), max(pairs)
    if name in FASTEST_FRACTIONS:
        architecture = results["architectures"][FASTEST_FRACTIONS[name]]
        ranges = [
            ratio_range(results, f"fraction_of_machine_limit_{backend}_{arch_key(FASTEST_FRACTIONS[name])}")
            for config, backend in COMPOSED.items()
            if "skipped" not in architecture["configs"].get(config, {"skipped": "absent"})
        ]
        if not ranges:
            raise KeyError(name)
        return max(low for low, _ in ranges), max(high for _, high in ranges)
    architecture, numerator, denominator = RATIO_PARTS[name]
    low_n, high_n = seconds_range(results["architectures"][architecture], numerator)
    low_d, high_d = seconds_range(results["architectures"][architecture], denominator)
    low, high = low_n / high_d, high_n / low_d
    return (1.0 - high, 1.0 - low) if name.startswith("binarisation_share") else (low, high)


def range_verdicts(results):
    """Each recorded target, judged on the range: "met" or "not met" only when the whole range agrees.

    A median can meet a target while the ranges over repeats overlap (the two
    configurations' timings cannot be told apart); such a target is "within
    noise". Targets whose configurations were not timed are left out.
    """
    verdicts = {}
    for name, target in results["targets"].items():
        try:
            low, high = ratio_range(results, name)
        except KeyError:
            continue
        op, bound = target["target"].split()
        meets = [COMPARE[op](value, float(bound)) for value in (low, high)]
        verdict = "met" if all(meets) else "not met" if not any(meets) else "within noise"
        if name in WORST_PAIRS:  # the worst pair is the range's end: judged as measured
            verdict = target["verdict"]
        verdicts[name] = {**target, "low": low, "high": high, "verdict": verdict, "median_verdict": target["verdict"]}
    return verdicts


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.hashsalt": "beyond-the-quickstart", "font.size": 10})
    import matplotlib.pyplot as plt

    architectures = {name: results["architectures"][name] for name in ARCHITECTURES if name in results["architectures"]}
    fig, axes = plt.subplots(1, len(architectures), figsize=(5 * len(architectures), 4.4), sharey=True, squeeze=False)
    for ax, (name, architecture) in zip(axes[0], architectures.items(), strict=True):
        configs = architecture["configs"]
        rows = [config for config in ORDER]  # same rows in every panel, so labels line up
        for y, config in enumerate(rows):
            summary = configs.get(config)
            if summary is None or "skipped" in summary:
                reason = summary["skipped"] if summary else "n/a: the quickstart's layer sizes are fixed"
                ax.text(0.02, y, reason, va="center", transform=ax.get_yaxis_transform(), color="0.4")
                continue
            median = summary["seconds_per_epoch"]
            error = [[median - summary["seconds_per_epoch_min"]], [summary["seconds_per_epoch_max"] - median]]
            colour = "C9" if config in PIPELINE else "C0" if config.startswith("ours") else "C7"
            ax.barh(y, median, xerr=error, color=colour, ecolor="0.2", capsize=3, height=0.7)
            ax.text(summary["seconds_per_epoch_max"], y, f"  {median:.2f} s", va="center", fontsize=9)
            if config not in PIPELINE:  # the pipeline alone does no matrix products
                limit = architecture["machine_limit"][f"S{config_mc_samples(config)}"]["ideal_seconds_per_epoch"]
                ax.plot([limit, limit], [y - 0.4, y + 0.4], color="C3", linewidth=2)
        ax.set_yticks(range(len(rows)), [CONFIG_LABELS[config] for config in rows])
        ax.set_xlabel("seconds per epoch (median; bars: min to max)")
        ax.set_title(f"{name} ({architecture['layers']['activation']})")
        shown = [configs[config] for config in rows if config in configs and "skipped" not in configs[config]]
        ax.set_xlim(0, 1.25 * max(summary["seconds_per_epoch_max"] for summary in shown))
        ax.grid(True, axis="x", alpha=0.3)
    axes[0][0].invert_yaxis()  # the axes share y: invert once, first row on top
    (limit_line,) = axes[0][0].plot([], [], color="C3", linewidth=2)
    fig.legend([limit_line], ["machine limit: the step's matrix products at NumPy's speed, same S"],
               loc="lower center", bbox_to_anchor=(0.5, -0.06), frameon=False)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None}, bbox_inches="tight")
    plt.close(fig)


def plot_backends(results, path):
    """The composed VAE per Keras backend, with ours, PyTorch's and the machine's limit, one panel per architecture."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.hashsalt": "beyond-the-quickstart", "font.size": 10})
    import matplotlib.pyplot as plt

    architectures = {name: results["architectures"][name] for name in ARCHITECTURES if name in results["architectures"]}
    fig, axes = plt.subplots(1, len(architectures), figsize=(5 * len(architectures), 3.4), sharey=True, squeeze=False)
    colours = {"ours-S1": "C0", "torch-S1": "C7", "xla-limit-S1": "C1", "machine-limit-S1": "C3"}
    for ax, (name, architecture) in zip(axes[0], architectures.items(), strict=True):
        configs, slowest = architecture["configs"], 0.0
        for y, config in enumerate(BACKEND_ORDER):
            summary = configs.get(config)
            if config in LIMITS and LIMITS[config] in architecture:
                low, high = seconds_range(architecture, config)
                median = architecture[LIMITS[config]]["S1"]["ideal_seconds_per_epoch"]
            elif config in LIMITS or summary is None or "skipped" in summary:
                reason = (
                    "jax not installed"
                    if config in LIMITS
                    else summary["skipped"]
                    if summary
                    else "not in this results file"
                )
                ax.text(0.02, y, reason, va="center", transform=ax.get_yaxis_transform(), color="0.4")
                continue
            else:
                low, high = summary["seconds_per_epoch_min"], summary["seconds_per_epoch_max"]
                median = summary["seconds_per_epoch"]
            ax.barh(y, median, xerr=[[median - low], [high - median]], color=colours.get(config, "C2"), ecolor="0.2",
                    capsize=3, height=0.7)  # fmt: skip
            ax.text(high, y, f"  {median:.2f} s", va="center", fontsize=9)
            slowest = max(slowest, high)
        ax.set_yticks(range(len(BACKEND_ORDER)), [BACKEND_LABELS[config] for config in BACKEND_ORDER])
        ax.set_xlabel("seconds per epoch (median; bars: min to max)")
        ax.set_title(f"{name} ({architecture['layers']['activation']})")
        ax.set_xlim(0, 1.3 * slowest)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0][0].invert_yaxis()  # the axes share y: invert once, first row on top
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None}, bbox_inches="tight")
    plt.close(fig)
    return fig


def draw(results_path, output_dir):
    results = read_results(results_path)
    plot(results, output_dir / FIGURE)
    plot_backends(results, output_dir / BACKENDS_FIGURE)


def read_results(results_path):
    """The benchmark's results; a RecordError, in one line, for a file that is not such a results file."""
    return provenance.read_json(results_path, ["architectures", "ratios"], "the results of scripts/benchmark.py")


def main(argv=None):
    return provenance.draw_figures(
        __doc__, OUTPUT_DIR, (FIGURE, BACKENDS_FIGURE), draw, {"order": ORDER, "backend_order": BACKEND_ORDER},
        results=("--results", RESULTS), input_paths=lambda path: [path],
        made_by="scripts/benchmark.py", extra_record=lambda path: {"targets": range_verdicts(read_results(path))},
        errors=(ValueError,), argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

"""Draw the performance page's bar chart from the benchmark results.

Reads ``results/performance/benchmark.json`` (written by ``benchmark.py``)
and writes to ``--output-dir``:

* ``seconds_per_epoch.svg``: median steady-state seconds per epoch of every
  configuration, with the range over repeats, next to the machine's limit
  for the same number of Monte Carlo samples, one panel per architecture;
* ``figures.json``: the record of the inputs it came from, and each
  target's verdict judged on the range over repeats as well as the median
  (``targets``, which the performance page shows).

Output is deterministic for a given results file.
"""

import json
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import provenance  # noqa: E402
from benchmark import ARCHITECTURES, CONFIG_LABELS, PIPELINE, RESULTS, config_mc_samples  # noqa: E402

OUTPUT_DIR = REPO_ROOT / "images" / "performance"
FIGURE = "seconds_per_epoch.svg"
RECORD_NAME = "figures.json"
ORDER = [
    "classic",
    "torch-S1",
    "ours-S1",
    "ours-S1-binarised-once",
    "ours-S1-step-only",
    "pipeline-only",
    "pipeline-only-binarised-once",
    "ours-S5",
    "ours-S25",
]


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
COMPARE = {"<=": float.__le__, "<": float.__lt__, ">=": float.__ge__}


def seconds_range(architecture, config):
    """(fastest, slowest) seconds per epoch over the repeats; the machine's limit is one number."""
    if config == "machine-limit-S1":
        limit = architecture["machine_limit"]["S1"]["ideal_seconds_per_epoch"]
        return limit, limit
    summary = architecture["configs"][config]
    return summary["seconds_per_epoch_min"], summary["seconds_per_epoch_max"]


def ratio_range(results, name):
    """The smallest and largest value a target's ratio takes over any pairing of the two ranges."""
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
        ax.set_xlim(0, 1.25 * max(s["seconds_per_epoch_max"] for s in configs.values() if "skipped" not in s))
        ax.grid(True, axis="x", alpha=0.3)
    axes[0][0].invert_yaxis()  # the axes share y: invert once, first row on top
    (limit_line,) = axes[0][0].plot([], [], color="C3", linewidth=2)
    fig.legend([limit_line], ["machine limit: the step's matrix products at NumPy's speed, same S"],
               loc="lower center", bbox_to_anchor=(0.5, -0.06), frameon=False)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None}, bbox_inches="tight")
    plt.close(fig)


def read_results(results_path):
    """The benchmark's results; ValueError, in one line, when the file is not JSON."""
    try:
        return json.loads(pathlib.Path(results_path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{results_path} is not a JSON results file ({error})") from None


def main(argv=None):
    return provenance.draw_figures(
        __doc__, OUTPUT_DIR, (FIGURE,), lambda path, output_dir: plot(read_results(path), output_dir / FIGURE),
        {"order": ORDER}, results=("--results", RESULTS), input_paths=lambda path: [path],
        made_by="scripts/benchmark.py", extra_record=lambda path: {"targets": range_verdicts(read_results(path))},
        errors=(ValueError,), argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

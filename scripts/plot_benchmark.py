"""Draw the performance page's bar chart from the benchmark results.

Reads ``results/performance/benchmark.json`` (written by ``benchmark.py``)
and writes to ``--output-dir``:

* ``seconds_per_epoch.svg``: median steady-state seconds per epoch of every
  configuration, with the range over repeats, next to the machine's limit
  for the same number of Monte Carlo samples, one panel per architecture;
* ``figures.json``: the record of the inputs it came from.

Output is deterministic for a given results file.
"""

import argparse
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


def current_inputs(results_path):
    results_path = pathlib.Path(results_path)
    if not results_path.is_file():
        raise FileNotFoundError(f"Missing {results_path}: run scripts/benchmark.py first")
    return provenance.input_hashes([results_path, pathlib.Path(__file__)], {"order": ORDER})


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=str(RESULTS), help="benchmark results (default: %(default)s)")
    parser.add_argument("--output-dir", default=str(OUTPUT_DIR), help="where to write the chart (default: %(default)s)")
    parser.add_argument("--if-stale", action="store_true", help="do nothing when the record matches the inputs")
    args = parser.parse_args(argv)
    output_dir = pathlib.Path(args.output_dir)
    try:
        inputs = current_inputs(args.results)
        results = json.loads(pathlib.Path(args.results).read_text())
    except (FileNotFoundError, json.JSONDecodeError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if args.if_stale and provenance.is_current(output_dir / RECORD_NAME, inputs, [output_dir / FIGURE]):
        print(f"{output_dir / RECORD_NAME} is current; no chart to draw")
        return 0
    output_dir.mkdir(parents=True, exist_ok=True)
    plot(results, output_dir / FIGURE)
    provenance.write_record(output_dir / RECORD_NAME, {"inputs": inputs})
    print(f"wrote {FIGURE} to {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Draw the scaling figure of data-parallel training, from ``distributed_experiments.py``.

Reads ``results/distributed/scaling.json`` and writes, in ``--output-dir``
(default ``images/distributed``):

* ``scaling.svg``: for each batch size, the speed (images per second) of two
  devices and of two processes over one device, the median of the repeats
  with the range of all of them, and the line of equal speed; beside it, the
  cores each process keeps busy;
* ``figures.json``: the record of the inputs it came from.

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

RESULTS_DIR = REPO_ROOT / "results" / "distributed"
OUTPUT_DIR = REPO_ROOT / "images" / "distributed"
FIGURES = ("scaling.svg",)
SETTINGS = {"dpi": 110}
LABELS = {"one_device": "one device", "two_devices": "two devices, one process",
          "two_processes": "two processes, one device each"}  # fmt: skip
COLOURS = {"one_device": "0.55", "two_devices": "C0", "two_processes": "C1"}  # the same in both panels


def input_paths(results_dir):
    return [pathlib.Path(results_dir) / "scaling.json"]


def drawn_settings():
    return dict(SETTINGS)


def plot_scaling(record, path):
    import numpy as np

    plt = setup_matplotlib()
    results = record["results"]
    batches = [str(b) for b in record["settings"]["batch_sizes"]]
    positions = np.arange(len(batches))
    fig, (speed_ax, cores_ax) = plt.subplots(1, 2, figsize=(9.0, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    for offset, name in zip((-0.2, 0.2), ("two_devices", "two_processes"), strict=True):
        speedup = [results[name][b]["speedup"] for b in batches]
        median = np.array([s["median"] for s in speedup])
        low, high = median - [s["min"] for s in speedup], np.array([s["max"] for s in speedup]) - median
        speed_ax.bar(positions + offset, median, width=0.38, label=LABELS[name], color=COLOURS[name])
        speed_ax.errorbar(positions + offset, median, yerr=[low, high], fmt="none", color="black", capsize=3, lw=1)
    speed_ax.axhline(1.0, color="black", lw=0.8, ls="--", label="one device (the whole machine)")
    speed_ax.set_xticks(positions, [f"batch {b}" for b in batches])
    speed_ax.set_ylabel("images per second, over one device")
    speed_ax.set_ylim(0, max(1.25, max(results[n][b]["speedup"]["max"] for n in ("two_devices", "two_processes")
                                       for b in batches) * 1.1))  # fmt: skip
    speed_ax.legend(fontsize=7, loc="upper left")
    for offset, name in zip((-0.27, 0.0, 0.27), ("one_device", "two_devices", "two_processes"), strict=True):
        cores = [results[name][b]["cores_busy_per_process"]["median"] for b in batches]
        cores_ax.bar(positions + offset, cores, width=0.26, label=LABELS[name], color=COLOURS[name])
    cpu_count = record["results"]["cpu_count"]
    cores_ax.axhline(cpu_count, color="black", lw=0.8, ls=":", label="cores of the machine")
    cores_ax.set_ylim(0, cpu_count * 1.5)
    cores_ax.set_xticks(positions, [f"batch {b}" for b in batches])
    cores_ax.set_ylabel("cores busy, per process")
    cores_ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None}, bbox_inches="tight", dpi=SETTINGS["dpi"])
    plt.close(fig)


def draw(results_dir, output_dir):
    plot_scaling(provenance.read_json(results_dir / "scaling.json", ["results", "settings"]), output_dir / FIGURES[0])


def main(argv=None):
    return provenance.draw_figures(
        __doc__, OUTPUT_DIR, FIGURES, draw, drawn_settings, results=("--results-dir", RESULTS_DIR),
        input_paths=input_paths, made_by="distributed_experiments.py", argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

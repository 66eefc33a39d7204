"""Measure data-parallel training on this machine: images per second on one device, two devices, two processes.

Writes ``scaling.json`` in ``--output-dir`` (default ``results/distributed``):
the IWAE paper's MNIST model (784-200-200-50, tanh, ``k = 5``) trained with
`training.fit_vae` on the JAX backend in three configurations, each run in a
fresh process (the device count is fixed when JAX starts):

* ``one_device``: one process, one CPU device (the whole machine);
* ``two_devices``: one process, two CPU devices (``--data-parallel 2``);
* ``two_processes``: two processes of one device each, joined over the
  loopback interface (``--processes 2``).

For each batch size, a run trains for ``epochs`` epochs of the first
``images_per_epoch`` images of MNIST and times the epochs after the first
(which compiles): images per second,
and the cores each process keeps busy (its CPU time over the wall time).
Runs are interleaved: every repeat runs every configuration at every batch
size, in an order that rotates, so a slow spell of the machine falls on
neighbours alike, and the speed over one device is taken repeat by repeat.
A run that XLA aborts (its CPU rendezvous timeout) is run again, and
counted.

``--check`` exits 1 when the record does not match its inputs (the static
guard of the timed code); ``--quick`` is a seconds-long run for tests (into
another ``--output-dir``).
"""

import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import tempfile

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "listings" / "vae"))
sys.path.insert(0, str(REPO_ROOT / "scripts"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import provenance  # noqa: E402

OUTPUT_DIR = REPO_ROOT / "results" / "distributed"
PARTS = ("scaling",)
MNIST_PARTS = PARTS
TIMING_PARTS = PARTS
CONFIGS = {"one_device": (1, 1), "two_devices": (2, 1), "two_processes": (1, 2)}  # (devices, processes)
ATTEMPTS = 3  # per run, when XLA aborts one
SETTINGS = {
    "scaling": {
        "batch_sizes": [20, 100, 1000],
        "images_per_epoch": 30000,  # the first images of MNIST's training set
        "epochs": 3,
        "k": 5,
        "latent_dim": 50,
        "hidden_units": 200,
        "hidden_layers": 2,
        "repeats": 3,
        "seed": 0,
    }
}
FINGERPRINT = {"scaling": {**SETTINGS["scaling"], "batch_sizes": [4, 8], "images_per_epoch": 24, "epochs": 2, "k": 2,
                           "latent_dim": 2, "hidden_units": 8, "hidden_layers": 1, "repeats": 1}}  # fmt: skip
WORKER = "import sys; sys.path[:0] = {paths!r}; import distributed_experiments; distributed_experiments.{name}({job!r})"


def scaling_worker(job):
    """One timed run, in its own process (of a group): writes ``process-<index>.json`` into ``job["out"]``."""
    import distributed

    devices, settings = job["devices"], job["settings"]
    if devices * distributed.process_shard()[1] > 1:
        distributed.start_data_parallel(devices)
    import keras

    from epoch_timer import make_epoch_timer
    from importance_weighted import iwae_vae
    from mnist_data import flatten_and_scale, load_mnist
    from outputs import write_atomically
    from training import fit_vae

    (x_train, _), _ = load_mnist()
    x_train = flatten_and_scale(x_train[: settings["images_per_epoch"]])
    x_train, batch_size, seed = distributed.shard_of(x_train, job["batch_size"], settings["seed"])
    keras.utils.set_random_seed(settings["seed"])  # the same initial weights in every process
    vae = iwae_vae(784, "iwae", settings["latent_dim"], settings["hidden_units"], settings["hidden_layers"], "tanh")
    timer = make_epoch_timer()
    fit_vae(vae, x_train, "bernoulli", "iwae", epochs=settings["epochs"], batch_size=batch_size,
            mc_samples=settings["k"], binarize=True, seed=seed, verbose=0, callbacks=[timer])  # fmt: skip
    timed = {"seconds": timer.seconds[1:], "cpu_seconds": timer.cpu_seconds[1:]}
    path = pathlib.Path(job["out"]) / f"process-{distributed.process_shard()[0]}.json"
    write_atomically(path, lambda partial: partial.write_text(json.dumps(timed)))


def run_once(config, batch_size, settings):
    """``(images per second, [cores busy per process], aborted attempts)`` of one run of ``config``."""
    import distributed

    devices, processes = CONFIGS[config]
    for attempt in range(ATTEMPTS):
        with tempfile.TemporaryDirectory() as out:
            job = {"devices": devices, "batch_size": batch_size, "settings": settings, "out": out}
            paths = [str(REPO_ROOT / "scripts"), str(REPO_ROOT / "listings" / "vae")]
            command = [sys.executable, "-c", WORKER.format(paths=paths, name=scaling_worker.__name__, job=job)]
            if processes > 1:
                status = distributed.launch(command, processes)
            else:
                status = subprocess.run(command, env={**os.environ, "KERAS_BACKEND": "jax"}).returncode
            if status == 0:
                timed = [json.loads((pathlib.Path(out) / f"process-{i}.json").read_text()) for i in range(processes)]
                seconds = max(sum(run["seconds"]) for run in timed)  # the group is as fast as its slowest
                images = settings["images_per_epoch"] * len(timed[0]["seconds"])
                cores = [sum(run["cpu_seconds"]) / sum(run["seconds"]) for run in timed]
                return images / seconds, cores, attempt
        if status in (128 + 2, 128 + 15):  # Ctrl-C or SIGTERM, passed on to the group
            from outputs import Interrupted

            raise Interrupted(status - 128)
        if status not in (-6, 134):  # SIGABRT: XLA's rendezvous timeout; anything else is a fault
            raise RuntimeError(f"{config} at batch size {batch_size} failed with exit status {status}")
        print(f"  {config} at batch size {batch_size}: aborted by XLA (attempt {attempt + 1}), again", flush=True)
    raise RuntimeError(f"{config} at batch size {batch_size} aborted {ATTEMPTS} times")


def scaling(settings):
    """Every configuration at every batch size, ``repeats`` times, interleaved; speeds and their ratios."""
    import numpy as np

    names = list(CONFIGS)
    runs = {name: {str(b): {"images_per_second": [], "cores_busy": []} for b in settings["batch_sizes"]}
            for name in names}  # fmt: skip
    aborted = 0
    for repeat in range(settings["repeats"]):
        for batch_size in settings["batch_sizes"]:
            order = names[repeat % len(names) :] + names[: repeat % len(names)]
            for name in order:
                speed, cores, retries = run_once(name, batch_size, settings)
                aborted += retries
                runs[name][str(batch_size)]["images_per_second"].append(speed)
                runs[name][str(batch_size)]["cores_busy"].append(cores)
                print(f"  repeat {repeat + 1}, batch {batch_size}, {name}: {speed:.0f} images/s", flush=True)
    results = {"configs": {name: {"devices": d, "processes": p} for name, (d, p) in CONFIGS.items()}}
    for name in names:
        results[name] = {}
        for batch, run in runs[name].items():
            speed = run["images_per_second"]
            over = [a / b for a, b in zip(speed, runs["one_device"][batch]["images_per_second"], strict=True)]
            cores = [float(np.mean(c)) for c in run["cores_busy"]]  # per process, averaged over the group
            results[name][batch] = {
                "images_per_second": {"median": float(np.median(speed)), "per_repeat": speed},
                "speedup": {"median": float(np.median(over)), "min": min(over), "max": max(over), "per_repeat": over},
                "cores_busy_per_process": {"median": float(np.median(cores)), "min": min(cores), "max": max(cores)},
            }  # fmt: skip
    results["aborted_runs"] = aborted
    results["cpu_count"] = os.cpu_count()
    results["jax_versions"] = {name: importlib.metadata.version(name) for name in ("jax", "jaxlib")}
    return results


def run_part(part, settings, output_dir):
    return scaling(settings)


def main(argv=None):
    return provenance.run_experiments(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())

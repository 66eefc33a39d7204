"""Train and measure what the post "Normalizing flows in Keras" shows.

Writes, in ``--output-dir`` (default ``results/flows``), one record per part,
each with the SHA-256 of the inputs it came from:

* ``toy.json`` and ``toy/<target>-<flow>-<K>.keras``: planar flows and IAFs of
  length K fitted to Rezende & Mohamed's four 2-D densities by minimising the
  reverse KL, and that KL in nats (Monte Carlo, with ``log Z`` from a grid);
* ``mnist.json`` and ``mnist/<row>.keras``: the IWAE post's MNIST model with
  a diagonal Gaussian posterior (K = 0), planar flows and IAF, trained with
  the same budget; test log-likelihood by importance sampling (K = 5000 draws
  of the flow posterior) on the 10,000 test images, and seconds per epoch;
* ``cost.json``: seconds per training epoch of the same model for a range of
  flow lengths, interleaved (every repeat times each length once, each run in
  a fresh process), with each row's ratio to its neighbour repeat by repeat.

``--parts`` picks parts; ``--if-stale`` runs only the parts whose inputs
changed; ``--check`` exits 1 when a record does not match its inputs;
``--quick`` is a seconds-long run for tests (into another ``--output-dir``).
"""

import math
import os
import pathlib
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "listings" / "vae"))
sys.path.insert(0, str(REPO_ROOT / "scripts"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import provenance  # noqa: E402

OUTPUT_DIR = REPO_ROOT / "results" / "flows"
# The parts that read MNIST (their records hash the data files).
MNIST_PARTS = ("mnist", "cost")
# Parts that measure speed: their fingerprint is the static guard of the code they can run.
TIMING_PARTS = ("cost",)
PARTS = ("toy", "mnist", "cost")
SETTINGS = {
    "toy": {
        "targets": ["U1", "U2", "U3", "U4"],
        "flows": {"planar": [2, 8, 32], "iaf": [2, 8, 32]},
        "steps": 10000,
        "batch_size": 500,
        "learning_rate": 1e-2,
        "kl_samples": 100000,
        "seed": 0,
    },
    "mnist": {
        "rows": {
            "gaussian": {"posterior": "gaussian"},
            "planar-k10": {"posterior": "planar", "num_flows": 10},
            "iaf-k2": {"posterior": "iaf", "num_flows": 2},
        },
        "stages": 3,
        "num_train": 60000,
        "num_test": 10000,
        "test_binarization_seed": 1,
        "log_likelihood_samples": 5000,
        "seed": 0,
    },
    "cost": {
        "flows": {"planar": [0, 2, 8, 32], "iaf": [1, 2, 4]},
        "num_train": 20000,  # a third of an epoch, timed and scaled to 60,000 images
        "stages": 2,
        "full_epoch_examples": 60000,
        "repeats": 5,
        "seed": 0,
    },
}
# The IWAE post's model (784-200-200-50, tanh) and optimiser (Adam with epsilon 1e-4, Burda et al.'s
# schedule: stage i runs 3**i epochs at 1e-3 * 10**(-i/7)), trained on the ELBO with one sample per image.
MODEL = {
    "architecture": {"latent_dim": 50, "hidden_units": 200, "hidden_layers": 2, "activation": "tanh",
                     "flow_hidden_units": 200},
    "divergence": "monte_carlo",
    "batch_size": 20,
    "mc_samples": 1,
    "learning_rate": 1e-3,
    "adam_epsilon": 1e-4,
}  # fmt: skip
# The paper's number we quote, checked against the paper. Rezende & Mohamed
# (2015), arXiv:1505.05770, Table 2: a deep latent Gaussian model with K = 80
# planar flows on binarised MNIST, test -log p(x) <= 85.1 nats.
PAPER_TEST_NLL = {"planar-k80": 85.1}
QUICK = {
    "toy": {**SETTINGS["toy"], "targets": ["U1"], "flows": {"planar": [2], "iaf": [2]}, "steps": 200,
            "kl_samples": 1000},
    "mnist": {**SETTINGS["mnist"], "rows": {"gaussian": SETTINGS["mnist"]["rows"]["gaussian"],
              "iaf-k2": SETTINGS["mnist"]["rows"]["iaf-k2"]}, "stages": 1, "num_train": 200, "num_test": 20,
              "log_likelihood_samples": 10},
    "cost": {**SETTINGS["cost"], "flows": {"planar": [0, 2]}, "num_train": 200, "stages": 1, "repeats": 2},
}  # fmt: skip
# The fingerprints (fingerprint.py): the quick runs, widened to every target, flow kind and MNIST row, so
# every branch the full settings reach runs (a target is a branch of the potential; a row, a kind of flow).
FINGERPRINT = {
    **QUICK,
    "toy": {**QUICK["toy"], "targets": SETTINGS["toy"]["targets"], "steps": 50, "kl_samples": 500},
    "mnist": {**QUICK["mnist"], "rows": SETTINGS["mnist"]["rows"], "num_train": 100},
    "cost": {**QUICK["cost"], "flows": {"planar": [0, 2], "iaf": [1]}, "num_train": 100},
}


def planar_probe():
    """The planar flow where no fitted flow goes, for the fingerprints: ``w = 0`` and ``|w|^2`` below the
    1e-12 floor of ``u_hat``, next to an ordinary ``w``; the flowed ``z`` and the log-determinants."""
    import numpy as np
    from keras import ops

    from flows import PlanarFlow

    z = np.linspace(-2.0, 2.0, 12, dtype="float32").reshape(3, 2, 2)
    u = np.array([[0.5, -1.5]] * 3, dtype="float32")
    w = np.array([[0.0, 0.0], [1e-7, -1e-7], [0.8, 0.3]], dtype="float32")
    b = np.full((3, 1), 0.2, dtype="float32")
    z_flowed, log_det = PlanarFlow(amortized=True)([z, np.concatenate([u, w, b], axis=-1)])
    return {"z": ops.convert_to_numpy(z_flowed).tolist(), "log_det": ops.convert_to_numpy(log_det).tolist()}


# Inputs no fitted flow reaches, added to the fingerprints of the parts that fit planar flows.
FINGERPRINT_PROBES = {"toy": planar_probe, "mnist": planar_probe}


def toy(settings, output_dir):
    """Every flow length on every target: ``KL[q_K || p]`` in nats, and the fitted flows.

    Also the share of each flow's mass at ``z_1 > 0`` (U1's two arcs hold half
    each), and the longest planar flow on U1 fitted without annealing.
    """
    from flow_densities import fit_flow, flow_samples, log_normaliser, reverse_kl

    (output_dir / "toy").mkdir(parents=True, exist_ok=True)
    results = {"log_normaliser": {target: log_normaliser(target) for target in settings["targets"]}, "kl": {}}

    def fit_and_score(target, flow, num_flows, anneal=True):
        start = time.perf_counter()
        flow_model = fit_flow(
            target, flow, num_flows, settings["steps"], settings["batch_size"], settings["learning_rate"],
            settings["seed"], anneal=anneal,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        kl, stderr = reverse_kl(target, flow_model, settings["kl_samples"], settings["seed"] + 1)
        _, z, _ = flow_samples(flow_model, settings["kl_samples"], settings["seed"] + 1)
        cell = {"kl": kl, "stderr": stderr, "share_z1_positive": float(np.mean(z[:, 0] > 0)), "train_seconds": seconds}
        return flow_model, cell

    for target in settings["targets"]:
        for flow, lengths in settings["flows"].items():
            for num_flows in lengths:
                name = f"{target}-{flow}-{num_flows}"
                flow_model, results["kl"][name] = fit_and_score(target, flow, num_flows)
                provenance.write_atomically(output_dir / "toy" / f"{name}.keras", flow_model.save)
                cell = results["kl"][name]
                print(f"  {name}: KL {cell['kl']:.3f} ± {cell['stderr']:.3f} nats, {cell['train_seconds']:.0f} s")
    longest = max(settings["flows"]["planar"])
    _, results["without_annealing"] = fit_and_score(settings["targets"][0], "planar", longest, anneal=False)
    print(f"  {settings['targets'][0]}-planar-{longest} without annealing: KL {results['without_annealing']['kl']:.3f}")
    return results


def train(x_train, posterior, num_flows, stages, seed, verbose=0, callbacks=None, validation_x=None):
    """The composed VAE with a ``posterior`` of ``num_flows`` steps, fitted as `MODEL` says: ``(vae, history)``."""
    import keras

    from compose import compose_vae
    from importance_weighted import paper_schedule
    from training import fit_vae

    keras.utils.set_random_seed(seed)
    vae = compose_vae(x_train.shape[-1], posterior=posterior, divergence=MODEL["divergence"], num_flows=num_flows,
                      **MODEL["architecture"])  # fmt: skip
    steps_per_epoch = -(-len(x_train) // MODEL["batch_size"])
    epochs, learning_rate = paper_schedule(stages, steps_per_epoch, MODEL["learning_rate"])
    history = fit_vae(
        vae, x_train, epochs=epochs, batch_size=MODEL["batch_size"], mc_samples=MODEL["mc_samples"], binarize=True,
        seed=seed, verbose=verbose, callbacks=callbacks, validation_x=validation_x,
        optimizer=keras.optimizers.Adam(learning_rate, epsilon=MODEL["adam_epsilon"]),
    )  # fmt: skip
    return vae, history


def mnist(settings, output_dir):
    """Each posterior trained with the same budget; test log-likelihood (M = 5000) and seconds per epoch."""
    from epoch_timer import make_epoch_timer
    from log_likelihood import log_likelihood
    from mnist_data import binarize_once, flatten_and_scale, load_mnist

    (x_train, _), (x_test, _) = load_mnist()
    x_train = flatten_and_scale(x_train[: settings["num_train"]])
    x_test = binarize_once(flatten_and_scale(x_test[: settings["num_test"]]), settings["test_binarization_seed"])
    results, per_image = {"model": MODEL, "paper_test_nll": PAPER_TEST_NLL}, {}
    verbose = 1 if sys.stdout.isatty() else 2
    for row, choice in settings["rows"].items():
        print(f"  mnist {row} ...", flush=True)
        timer = make_epoch_timer()
        start = time.perf_counter()
        vae, history = train(x_train, choice["posterior"], choice.get("num_flows", 0), settings["stages"],
                             settings["seed"], verbose, [timer], validation_x=x_test)  # fmt: skip
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        log_px = log_likelihood(vae, x_test, "bernoulli", settings["log_likelihood_samples"], seed=settings["seed"])
        per_image[row] = log_px
        results[row] = {
            **choice,
            "train_negative_elbo_per_epoch": [float(value) for value in history["loss"]],
            "test_negative_elbo_per_epoch": [float(value) for value in history["val_loss"]],
            "first_epoch_train_negative_elbo": float(history["loss"][0]),
            "num_epochs": len(timer.seconds),
            "train_seconds": train_seconds,
            "seconds_per_epoch": float(np.median(timer.seconds[1:] or timer.seconds)),
            "final_train_negative_elbo": float(history["loss"][-1]),
            "final_test_negative_elbo": float(history["val_loss"][-1]),
            "test_nll": float(-log_px.mean()),
            "test_nll_stderr": float(log_px.std(ddof=1) / math.sqrt(len(log_px))) if len(log_px) > 1 else None,
            "log_likelihood_seconds": time.perf_counter() - start,
            "parameters": int(vae.count_params()),
        }
        if output_dir is not None:
            provenance.save_model(vae, output_dir / "mnist" / f"{row}.keras")
        r = results[row]
        print(f"  mnist {row}: test NLL {r['test_nll']:.2f}, -ELBO {r['final_test_negative_elbo']:.2f}, "
              f"{r['seconds_per_epoch']:.1f} s/epoch", flush=True)  # fmt: skip
    # Each flow against the Gaussian posterior on the same test images: the mean per-image difference of log p(x).
    results["paired_with_gaussian"] = provenance.paired_differences(per_image, "gaussian")
    if output_dir is not None:
        provenance.save_arrays(output_dir / "mnist" / "log_px.npz", per_image)
    return results


def cost_run(settings, flow, num_flows):
    """One timed run: seconds per epoch of 60,000 images with ``num_flows`` steps of ``flow``, the median of the
    epochs after the first (which compiles); ``(seconds, parameters)``."""
    from epoch_timer import make_epoch_timer
    from mnist_data import flatten_and_scale, load_mnist

    (x_train, _), _ = load_mnist()
    x_train = flatten_and_scale(x_train[: settings["num_train"]])
    timer = make_epoch_timer()
    posterior = "gaussian" if num_flows == 0 else flow
    vae, _ = train(x_train, posterior, num_flows, settings["stages"], settings["seed"], callbacks=[timer])
    timed = timer.seconds[1:] or timer.seconds
    return float(np.median(timed)) * settings["full_epoch_examples"] / len(x_train), int(vae.count_params())


def in_a_fresh_process(function, *args):
    """``function(*args)`` in a new Python process (its own start-up, compilation and memory), for timing."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def cost(settings):
    """Seconds per epoch of 60,000 images for each flow length, interleaved: every repeat runs each length
    once, in its own process, so that a slow spell of the machine falls on neighbouring rows alike."""
    names = [(flow, num_flows) for flow, lengths in settings["flows"].items() for num_flows in lengths]
    runs = {f"{flow}-{num_flows}": [] for flow, num_flows in names}
    for repeat in range(settings["repeats"]):
        for flow, num_flows in names:
            seconds, parameters = in_a_fresh_process(cost_run, settings, flow, num_flows)
            runs[f"{flow}-{num_flows}"].append((seconds, parameters))
            print(f"  repeat {repeat + 1}/{settings['repeats']}, {flow} K={num_flows}: {seconds:.1f} s per epoch",
                  flush=True)  # fmt: skip
    results = {}
    for (flow, num_flows), (name, measured) in zip(names, runs.items(), strict=True):
        seconds = [s for s, _ in measured]
        results[name] = {"flow": flow, "num_flows": num_flows, "seconds_per_epoch": float(np.median(seconds)),
                         "seconds_per_epoch_per_repeat": seconds, "parameters": measured[0][1]}  # fmt: skip
    # Each row over the row above it (the baseline for the first of a kind), repeat by repeat: the two ran
    # as neighbours in time. A ratio whose smallest and largest pairs straddle 1 orders nothing.
    results["paired"] = {}
    for (flow, num_flows), previous in zip(names, [("planar", 0), *names[:-1]], strict=True):
        if (flow, num_flows) == previous:
            continue
        if previous[0] != flow:
            previous = ("planar", 0)
        over = [a / b for a, b in zip(results[f"{flow}-{num_flows}"]["seconds_per_epoch_per_repeat"],
                                      results[f"{previous[0]}-{previous[1]}"]["seconds_per_epoch_per_repeat"],
                                      strict=True)]  # fmt: skip
        results["paired"][f"{flow}-{num_flows}_over_{previous[0]}-{previous[1]}"] = {
            "median": float(np.median(over)), "min": min(over), "max": max(over)
        }  # fmt: skip
    results["batch_size"] = MODEL["batch_size"]
    return results


def run_part(part, settings, output_dir):
    if part == "cost":
        return cost(settings)
    return {"toy": toy, "mnist": mnist}[part](settings, output_dir)


def main(argv=None):
    return provenance.run_experiments(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())

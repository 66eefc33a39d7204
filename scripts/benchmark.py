"""Benchmark the training core side by side: classic quickstart, ours, PyTorch, and the machine's limit.

Every measurement runs in a fresh Python process (so start-up and peak
memory are its own), and the configurations are interleaved, A B C A B C
..., so that a slow spell of the machine hits them all alike. Each run
trains a few epochs on the same data; the first epoch (tracing, compiling)
is reported separately from the steady state, and the report gives the
median and range over repeats of the steady seconds per epoch.

Configurations, for two architectures (the main post's 784-256-2 with relu,
and the IWAE paper's 784-200-200-50 with tanh):

* ``classic``: the Keras 2.0.8 quickstart ported to Keras 3 (784-256-2 only:
  its architecture is fixed in its code), compiled as it is written;
* ``classic-compiled``: the same model compiled with ours's settings
  (``jit_compile`` and ``steps_per_execution``), so that what compilation
  buys is told apart from what the structure costs (its optimiser, RMSprop,
  and its data, grey levels fed once, stay the quickstart's);
* ``ours-S1``, ``ours-S5``, ``ours-S25``: our VAE and training core with
  1, 5 and 25 Monte Carlo samples;
* ``ours-S1-binarised-once`` and ``ours-S1-step-only``: where the time of
  ``ours-S1`` goes: the same run with the training set binarised once (the
  difference is the cost of dynamic binarisation), and the compiled step
  alone, fed one fixed batch from memory (the rest is the input pipeline);
* ``composed-S1-tensorflow``, ``composed-S1-jax``, ``composed-S1-torch``:
  the composed VAE of the later posts (``compose_vae`` with a Gaussian
  posterior, the closed-form KL, a Bernoulli likelihood and the ELBO),
  trained by ``fit_vae`` on dynamically binarised images with S = 1, in a
  worker whose ``KERAS_BACKEND`` names the backend ("skipped: jax not
  installed" when the backend cannot be imported);
* ``torch-S1``: the same model, optimiser, batch size and loss in PyTorch,
  when ``torch`` is importable ("skipped: torch not installed" otherwise);
* ``machine-limit``: the FLOPs of one training step counted from the
  layer sizes, divided by this machine's float32 matrix-multiply throughput
  measured with NumPy at the same shapes; one more interleaved worker per
  repeat, so a slow spell hits it as it hits the others, and the median over
  repeats is the limit every fraction uses. Where JAX imports, the same
  worker also times the same products compiled by XLA (``xla_limit``): what
  a step compiled by XLA could reach at best, at XLA:CPU's speed for
  products this small.

Ratios of two configurations come as the ratio of their medians and, for
the comparisons with PyTorch, as the worst pair: the largest ratio of the
two runs of one repeat (interleaving makes them neighbours in time).

Writes a JSON results file with the versions and the machine description.
``--quick`` runs everything once for two short epochs, two workers at a time
(for tests: its times mean nothing).
"""

import argparse
import concurrent.futures
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "listings" / "vae"))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

RESULTS = REPO_ROOT / "results" / "performance" / "benchmark.json"
# [start architectures]
ARCHITECTURES = {
    "784-256-2": {
        "original_dim": 784,
        "intermediate_dim": 256,
        "latent_dim": 2,
        "hidden_layers": 1,
        "activation": "relu",
    },
    "784-200-200-50": {
        "original_dim": 784,
        "intermediate_dim": 200,
        "latent_dim": 50,
        "hidden_layers": 2,
        "activation": "tanh",
    },
}
# [end architectures]
BATCH_SIZE = 100
LEARNING_RATE = 1e-3
# [start targets]
# The targets: (ratio, comparison, bound).
TARGETS = [
    ("ours_s1_over_classic", "<=", 1.0),
    ("ours_s1_over_torch_784_256_2", "<=", 1.0),
    ("ours_s1_over_torch_784_200_200_50", "<=", 1.0),
    ("fraction_of_machine_limit_784_200_200_50", ">=", 0.5),
    ("ours_s25_over_s1_784_256_2", "<", 10.0),
    ("ours_s25_over_s1_784_200_200_50", "<", 10.0),
    ("binarisation_share_784_256_2", "<", 0.05),
    ("binarisation_share_784_200_200_50", "<", 0.05),
    ("fastest_backend_fraction_of_machine_limit_784_200_200_50", ">=", 0.6),
    ("ours_s1_over_torch_median_784_200_200_50", "<=", 0.8),
    ("ours_s1_over_torch_worst_pair_784_200_200_50", "<=", 1.0),
]
# [end targets]


# Our training core at 1, 5 and 25 Monte Carlo samples, and two variants of
# the S = 1 run that show where its time goes: the training set binarised
# once (no per-batch binarisation) and one fixed batch fed over and over
# (no input pipeline at all: the compiled step alone).
OURS = {
    "ours-S1": {"mc_samples": 1},
    "ours-S5": {"mc_samples": 5},
    "ours-S25": {"mc_samples": 25},
    "ours-S1-binarised-once": {"mc_samples": 1, "dynamic_binarization": False},
    "ours-S1-step-only": {"mc_samples": 1, "step_only": True},
}

# The composed VAE of the later posts, trained by fit_vae, once per Keras
# backend: the worker's environment names the backend before it imports
# Keras (which picks its backend at import), and the backend's own module
# must import for the configuration to run.
BACKENDS = ("tensorflow", "jax", "torch")
COMPOSED = {f"composed-S1-{backend}": backend for backend in BACKENDS}
# One more interleaved worker per repeat: the matrix products of a step, timed with NumPy.
MACHINE_LIMIT = "machine-limit"
LIMIT_MC_SAMPLES = (1, 5, 25)


# How the page and the chart name each configuration.
CONFIG_LABELS = {
    "classic": "classic quickstart (Keras 3 port)",
    "classic-compiled": "classic quickstart, compiled like ours",
    "torch-S1": "PyTorch reference, S=1",
    "ours-S1": "ours, S=1",
    "ours-S1-binarised-once": "ours, S=1, binarised once",
    "ours-S1-step-only": "ours, S=1, compiled step only",
    "ours-S5": "ours, S=5",
    "ours-S25": "ours, S=25",
    "pipeline-only": "input pipeline alone",
    "pipeline-only-binarised-once": "input pipeline alone, binarised once",
    "composed-S1-tensorflow": "composed VAE, S=1, TensorFlow backend",
    "composed-S1-jax": "composed VAE, S=1, JAX backend",
    "composed-S1-torch": "composed VAE, S=1, PyTorch backend",
}


def config_mc_samples(config):
    """Monte Carlo samples of a configuration (the classic quickstart draws one)."""
    return OURS.get(config, {}).get("mc_samples", 1)


# The input pipeline alone (no model): one pass per epoch over the batches
# train_vae would feed, with and without dynamic binarisation.
PIPELINE = {"pipeline-only": {"binarize": True}, "pipeline-only-binarised-once": {"binarize": False}}


def config_names(architecture):
    """The timed configurations of an architecture, in their interleaved order (the machine's limit last)."""
    names = [*OURS, *PIPELINE, *COMPOSED, "torch-S1", MACHINE_LIMIT]
    return (["classic", "classic-compiled"] if architecture == "784-256-2" else []) + names


def required_module(config):
    """The module a configuration needs that the site does not (None for the TensorFlow core's)."""
    return "torch" if config == "torch-S1" else COMPOSED.get(config)


def arch_key(architecture):
    """An architecture's suffix in the names of ratios: ``784-200-200-50`` -> ``784_200_200_50``."""
    return architecture.replace("-", "_")


# ---------------------------------------------------------------------------
# FLOPs and the machine's limit
# ---------------------------------------------------------------------------


# [start flops]
def dense_layers(architecture):
    """``(rows_per_example, fan_in, fan_out)`` of every Dense layer of the VAE.

    Encoder layers see one row per example; decoder layers see one row per
    Monte Carlo sample, so their row count is multiplied by ``mc_samples``
    (filled in by `matmul_shapes`).
    """
    a = ARCHITECTURES[architecture] if isinstance(architecture, str) else architecture
    hidden = [a["intermediate_dim"]] * a["hidden_layers"]
    encoder = list(zip([a["original_dim"], *hidden[:-1]], hidden, strict=True))
    encoder += [(hidden[-1], a["latent_dim"])] * 2  # z_mean and z_log_var heads
    decoder = list(zip([a["latent_dim"], *hidden], [*hidden, a["original_dim"]], strict=True))
    return [("encoder", fan_in, fan_out) for fan_in, fan_out in encoder] + [
        ("decoder", fan_in, fan_out) for fan_in, fan_out in decoder
    ]


def matmul_shapes(architecture, batch_size, mc_samples):
    """The ``(m, k, n)`` matrix products of one training step, forward and backward.

    Each Dense layer with input X (m x k) and weights W (k x n) costs a
    forward product X W, a weight gradient X^T dY (k x m times m x n) and,
    unless its input is the data itself, an input gradient dY W^T (m x n
    times n x k). Element-wise work (activations, the loss, Adam) is not
    counted: it is linear in the sizes, not cubic.
    """
    shapes = []
    for index, (part, fan_in, fan_out) in enumerate(dense_layers(architecture)):
        rows = batch_size * (mc_samples if part == "decoder" else 1)
        shapes.append((rows, fan_in, fan_out))  # forward
        shapes.append((fan_in, rows, fan_out))  # weight gradient
        if index > 0:  # the first layer's input is the data: no gradient
            shapes.append((rows, fan_out, fan_in))  # input gradient
    return shapes


def training_step_flops(architecture, batch_size, mc_samples):
    """Floating-point operations of the matrix products of one step (2 per multiply-add)."""
    return sum(2 * m * k * n for m, k, n in matmul_shapes(architecture, batch_size, mc_samples))


# [end flops]


def numpy_matmul_seconds(shapes, repeats=30):
    """Median seconds of each float32 product at the given shapes, with NumPy, summed."""
    import numpy as np

    rng = np.random.default_rng(0)
    total = 0.0
    for m, k, n in shapes:
        a = rng.standard_normal((m, k), dtype="float32")
        b = rng.standard_normal((k, n), dtype="float32")
        a @ b  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        total += float(np.median(times))
    return total


def product_operands(architecture, batch_size, mc_samples, normal):
    """The operands of a step's products, by kind: ``forward`` (X, W), ``weight_gradient`` (X, dY), ``input_gradient``
    (dY, W), each array drawn by ``normal(*shape)``. The products are X W, X^T dY and dY W^T: the shapes of
    `matmul_shapes`, with the transposes a compiled step computes."""
    kinds = {"forward": [], "weight_gradient": [], "input_gradient": []}
    for index, (part, fan_in, fan_out) in enumerate(dense_layers(architecture)):
        rows = batch_size * (mc_samples if part == "decoder" else 1)
        x, w, dy = normal(rows, fan_in), normal(fan_in, fan_out), normal(rows, fan_out)
        kinds["forward"].append((x, w))
        kinds["weight_gradient"].append((x, dy))
        if index > 0:  # the first layer's input is the data: no gradient
            kinds["input_gradient"].append((dy, w))
    return kinds


PRODUCTS = {
    "forward": lambda pairs: [x @ w for x, w in pairs],
    "weight_gradient": lambda pairs: [x.T @ dy for x, dy in pairs],
    "input_gradient": lambda pairs: [dy @ w.T for dy, w in pairs],
}


def xla_matmul_seconds(architecture, batch_size, mc_samples, repeats=30):
    """Median seconds of a step's products compiled by XLA (through JAX), one program per kind, summed.

    Each program holds the independent products of one kind, so it pays one
    dispatch, not one per product: the products at XLA:CPU's speed, without
    the element-wise work of a step or the order a step imposes on them.
    """
    import jax
    import numpy as np

    rng = np.random.default_rng(0)
    kinds = product_operands(architecture, batch_size, mc_samples,
                             lambda *shape: jax.numpy.asarray(rng.standard_normal(shape, dtype="float32")))  # fmt: skip
    total = 0.0
    for kind, pairs in kinds.items():
        program = jax.jit(PRODUCTS[kind])
        jax.block_until_ready(program(pairs))  # compile
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(program(pairs))
            times.append(time.perf_counter() - start)
        total += float(np.median(times))
    return total


def xla_limit(architecture, batch_size, mc_samples, num_examples):
    step_seconds = xla_matmul_seconds(architecture, batch_size, mc_samples)
    flops = training_step_flops(architecture, batch_size, mc_samples)
    return {
        "step_flops": flops,
        "xla_gflops_per_second": flops / step_seconds / 1e9,
        "ideal_seconds_per_epoch": step_seconds * -(-num_examples // batch_size),
    }


def machine_limit(architecture, batch_size, mc_samples, num_examples):
    shapes = matmul_shapes(architecture, batch_size, mc_samples)
    step_seconds = numpy_matmul_seconds(shapes)
    steps = -(-num_examples // batch_size)
    flops = training_step_flops(architecture, batch_size, mc_samples)
    return {
        "step_flops": flops,
        "numpy_gflops_per_second": flops / step_seconds / 1e9,
        "ideal_seconds_per_epoch": step_seconds * steps,
    }


# ---------------------------------------------------------------------------
# One measured run (in its own process)
# ---------------------------------------------------------------------------


def run_pipeline(config, architecture, num_epochs, x_train):
    """Iterate the training batches without a model; ``(wall, cpu)`` seconds per epoch."""
    from train import monte_carlo_batches

    batches = monte_carlo_batches(
        x_train, BATCH_SIZE, 1, ARCHITECTURES[architecture]["latent_dim"], shuffle=True, seed=0, **PIPELINE[config]
    )
    wall, cpu = [], []
    for _ in range(num_epochs):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in batches:
            pass
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def run_keras(config, architecture, num_epochs, x_train):
    from epoch_timer import make_epoch_timer

    if config in PIPELINE:
        return run_pipeline(config, architecture, num_epochs, x_train)
    timer = make_epoch_timer()
    if config in ("classic", "classic-compiled"):
        import variational_autoencoder_classic as classic

        vae, _, _ = classic.build_classic_vae()
        if config == "classic-compiled":  # what our training core compiles with, and nothing else of ours
            from train import DEFAULTS

            vae.compile(optimizer="rmsprop", loss=None, jit_compile=DEFAULTS["jit_compile"],
                        steps_per_execution=DEFAULTS["steps_per_execution"])  # fmt: skip
        vae.fit(x_train, epochs=num_epochs, batch_size=BATCH_SIZE, shuffle=True, verbose=0, callbacks=[timer])
        return timer.seconds, timer.cpu_seconds
    from train import train_vae

    settings = dict(OURS[config])
    if settings.pop("step_only", False):
        return run_step_only(settings["mc_samples"], architecture, num_epochs, x_train, timer)
    a = ARCHITECTURES[architecture]
    train_vae(
        x_train,
        None,
        num_epochs=num_epochs,
        batch_size=BATCH_SIZE,
        latent_dim=a["latent_dim"],
        intermediate_dim=a["intermediate_dim"],
        hidden_layers=a["hidden_layers"],
        activation=a["activation"],
        learning_rate=LEARNING_RATE,
        verbose=0,
        callbacks=[timer],
        **settings,
    )
    return timer.seconds, timer.cpu_seconds


def run_step_only(mc_samples, architecture, num_epochs, x_train, timer):
    """The compiled training step alone: one fixed batch, fed from memory every step."""
    import keras
    import numpy as np
    import tensorflow as tf

    from mnist_data import binarize_once
    from train import DEFAULTS
    from variational_autoencoder import BernoulliNegativeLogLikelihood, build_vae

    a = ARCHITECTURES[architecture]
    keras.utils.set_random_seed(0)
    vae, _, _ = build_vae(**a)  # the number of samples is the length of the eps fed below
    vae.compile(
        optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE),
        loss=BernoulliNegativeLogLikelihood(),
        jit_compile=DEFAULTS["jit_compile"],
        steps_per_execution=DEFAULTS["steps_per_execution"],
    )
    x = binarize_once(x_train[:BATCH_SIZE], seed=0)
    eps = np.random.default_rng(0).standard_normal((BATCH_SIZE, mc_samples, a["latent_dim"]), dtype="float32")
    one_batch = tf.data.Dataset.from_tensors(((x, eps), x)).repeat()
    steps = -(-len(x_train) // BATCH_SIZE)
    vae.fit(one_batch, epochs=num_epochs, steps_per_epoch=steps, shuffle=False, verbose=0, callbacks=[timer])
    return timer.seconds, timer.cpu_seconds


def run_composed(config, architecture, num_epochs, x_train):
    """The composed VAE (Gaussian posterior, closed-form KL, Bernoulli likelihood, ELBO) trained by fit_vae."""
    import keras

    from compose import compose_vae
    from epoch_timer import make_epoch_timer
    from training import fit_vae

    backend = COMPOSED[config]
    if keras.backend.backend() != backend:
        raise RuntimeError(f"Expected the {backend} backend. Received: KERAS_BACKEND={keras.backend.backend()}")
    if backend == "torch":  # as many threads as the PyTorch reference (its default is the physical cores)
        import torch

        torch.set_num_threads(os.cpu_count())
    a = ARCHITECTURES[architecture]
    keras.utils.set_random_seed(0)
    vae = compose_vae(a["original_dim"], a["latent_dim"], "gaussian", "closed_form", "bernoulli", "elbo",
                      a["intermediate_dim"], a["hidden_layers"], a["activation"])  # fmt: skip
    timer = make_epoch_timer()
    fit_vae(vae, x_train, "bernoulli", "elbo", epochs=num_epochs, batch_size=BATCH_SIZE, mc_samples=1,
            learning_rate=LEARNING_RATE, binarize=True, seed=0, verbose=0, callbacks=[timer])  # fmt: skip
    return timer.seconds, timer.cpu_seconds


def run_torch(config, architecture, num_epochs, x_train):
    import torch

    from torch_reference import train_torch_vae

    torch.set_num_threads(os.cpu_count())
    a = ARCHITECTURES[architecture]
    return train_torch_vae(
        x_train,
        num_epochs=num_epochs,
        batch_size=BATCH_SIZE,
        mc_samples=1,
        learning_rate=LEARNING_RATE,
        **a,
    )


def worker(config, architecture, num_epochs, started):
    """Train one configuration; print one JSON line with its timings."""
    from mnist_data import flatten_and_scale, load_mnist

    (x_train, _), _ = load_mnist()
    x_train = flatten_and_scale(x_train)
    ready = time.perf_counter()
    if config == MACHINE_LIMIT:
        limits = {f"S{s}": machine_limit(architecture, BATCH_SIZE, s, len(x_train)) for s in LIMIT_MC_SAMPLES}
        record = {"config": config, "architecture": architecture, "startup_seconds": ready - started,
                  "num_examples": len(x_train), "machine_limit": limits}  # fmt: skip
        if importable_here("jax"):  # the same products as XLA compiles them, S = 1
            record["xla_limit"] = {"S1": xla_limit(architecture, BATCH_SIZE, 1, len(x_train))}
        print(json.dumps(record))
        return
    runner = run_torch if config == "torch-S1" else run_composed if config in COMPOSED else run_keras
    seconds, cpu_seconds = runner(config, architecture, num_epochs, x_train)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "config": config,
                "architecture": architecture,
                "startup_seconds": ready - started,
                "first_epoch_seconds": seconds[0],
                "steady_epoch_seconds": seconds[1:],
                "steady_epoch_cpu_seconds": cpu_seconds[1:],
                "num_examples": len(x_train),
                "peak_memory_mib": peak_mib,
            }
        )
    )


# ---------------------------------------------------------------------------
# The interleaved driver
# ---------------------------------------------------------------------------


def importable_here(module):
    """Whether ``module`` imports in this process."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def importable(module):
    """Whether ``module`` imports in a fresh interpreter (PyTorch and JAX are optional)."""
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def measure(config, architecture, num_epochs):
    # Keras reads KERAS_BACKEND when it is first imported: the composed runs name theirs, the rest use TensorFlow.
    backend = COMPOSED.get(config, "tensorflow")
    result = subprocess.run(
        [sys.executable, __file__, "--worker", config, "--architecture", architecture, "--num-epochs", str(num_epochs)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONDONTWRITEBYTECODE": "1", "KERAS_BACKEND": backend},
    )
    if result.returncode != 0:
        raise RuntimeError(f"{config} on {architecture} failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def summarise(runs):
    import numpy as np

    steady = [float(np.median(run["steady_epoch_seconds"])) for run in runs]
    median = float(np.median(steady))
    return {
        "seconds_per_epoch": median,
        "seconds_per_epoch_min": min(steady),
        "seconds_per_epoch_max": max(steady),
        "seconds_per_epoch_per_repeat": steady,  # in the order of the repeats, for paired ratios
        "cpu_seconds_per_epoch": float(np.median([np.median(run["steady_epoch_cpu_seconds"]) for run in runs])),
        "examples_per_second": runs[0]["num_examples"] / median,
        "startup_seconds": float(np.median([run["startup_seconds"] for run in runs])),
        "first_epoch_seconds": float(np.median([run["first_epoch_seconds"] for run in runs])),
        "peak_memory_mib": max(run["peak_memory_mib"] for run in runs),
        "repeats": len(runs),
    }


def summarise_machine_limit(runs, key="machine_limit"):
    """A limit for each S (``key``: the machine's, or XLA's products'): the median over the repeats of the ideal
    epoch, its range and every repeat's."""
    import numpy as np

    summary = {}
    for samples in runs[0][key]:
        limits = [run[key][samples] for run in runs]
        ideal = [limit["ideal_seconds_per_epoch"] for limit in limits]
        throughput = next(name for name in limits[0] if name.endswith("_gflops_per_second"))
        summary[samples] = {
            "step_flops": limits[0]["step_flops"],
            throughput: float(np.median([limit[throughput] for limit in limits])),
            "ideal_seconds_per_epoch": float(np.median(ideal)),
            "ideal_seconds_per_epoch_min": min(ideal),
            "ideal_seconds_per_epoch_max": max(ideal),
            "ideal_seconds_per_epoch_per_repeat": ideal,
            "repeats": len(runs),
        }
    return summary


def timed(configs, config):
    """A configuration's summary, or None when it did not run (absent, or skipped)."""
    summary = configs.get(config)
    return None if summary is None or "skipped" in summary else summary


def paired_ratios(numerator, denominator):
    """Seconds per epoch of one configuration over another's, repeat by repeat (neighbours in time)."""
    return [
        n / d
        for n, d in zip(
            numerator["seconds_per_epoch_per_repeat"], denominator["seconds_per_epoch_per_repeat"], strict=True
        )
    ]


def ratios(architectures):
    """The targets of the issue, as ratios measured in this one run."""
    out = {}
    small, iwae = architectures.get("784-256-2", {}), architectures.get("784-200-200-50", {})
    configs = small.get("configs", {})
    if "classic" in configs and "ours-S1" in configs:
        out["ours_s1_over_classic"] = configs["ours-S1"]["seconds_per_epoch"] / configs["classic"]["seconds_per_epoch"]
    # Compilation against structure: the classic compiled as ours is, over the classic as written, and ours
    # over the compiled classic; the median ratio and the smallest and largest of the repeats' pairs.
    for name, (numerator, denominator) in {
        "classic_compiled_over_classic": ("classic-compiled", "classic"),
        "ours_s1_over_classic_compiled": ("ours-S1", "classic-compiled"),
    }.items():
        if timed(configs, numerator) is not None and timed(configs, denominator) is not None:
            pairs = paired_ratios(configs[numerator], configs[denominator])
            out[f"{name}_median"] = configs[numerator]["seconds_per_epoch"] / configs[denominator]["seconds_per_epoch"]
            out[f"{name}_min"], out[f"{name}_max"] = min(pairs), max(pairs)
    for name, arch in (("784-256-2", small), ("784-200-200-50", iwae)):
        c = arch.get("configs", {})
        key = arch_key(name)
        ours, torch_reference = timed(c, "ours-S1"), timed(c, "torch-S1")
        # Against PyTorch: the ratio of the medians, and the worst pair (the largest ratio of one repeat's two runs).
        against_torch = {"ours_s1": ours, **{f"composed_{b}": timed(c, config) for config, b in COMPOSED.items()}}
        for prefix, summary in against_torch.items():
            if summary is not None and torch_reference is not None:
                out[f"{prefix}_over_torch_median_{key}"] = (
                    summary["seconds_per_epoch"] / torch_reference["seconds_per_epoch"]
                )
                out[f"{prefix}_over_torch_worst_pair_{key}"] = max(paired_ratios(summary, torch_reference))
        if ours is not None and torch_reference is not None:  # the first name of the median ratio, kept for the page
            out[f"ours_s1_over_torch_{key}"] = out[f"ours_s1_over_torch_median_{key}"]
        # Each backend's composed run as a fraction of the machine's limit (the median over repeats).
        limit = arch.get("machine_limit", {}).get("S1")
        fractions = {
            backend: limit["ideal_seconds_per_epoch"] / c[config]["seconds_per_epoch"]
            for config, backend in COMPOSED.items()
            if limit is not None and timed(c, config) is not None
        }
        for backend, fraction in fractions.items():
            out[f"fraction_of_machine_limit_{backend}_{key}"] = fraction
        if fractions:
            out[f"fastest_backend_fraction_of_machine_limit_{key}"] = max(fractions.values())
        # The same against the products as XLA compiles them, and how fast those are against NumPy's.
        xla = arch.get("xla_limit", {}).get("S1")
        if xla is not None:
            for config, backend in COMPOSED.items():
                if timed(c, config) is not None:
                    out[f"fraction_of_xla_limit_{backend}_{key}"] = (
                        xla["ideal_seconds_per_epoch"] / c[config]["seconds_per_epoch"]
                    )
            if limit is not None:
                out[f"xla_products_fraction_of_machine_limit_{key}"] = (
                    limit["ideal_seconds_per_epoch"] / xla["ideal_seconds_per_epoch"]
                )
        if "ours-S1" in c and "ours-S25" in c:
            out[f"ours_s25_over_s1_{key}"] = c["ours-S25"]["seconds_per_epoch"] / c["ours-S1"]["seconds_per_epoch"]
        # What S = 25 must cost at least, if S = 1 ran at the machine's limit.
        limits = arch.get("machine_limit", {})
        if "S1" in limits and "S25" in limits:
            out[f"flops_s25_over_s1_{key}"] = limits["S25"]["step_flops"] / limits["S1"]["step_flops"]
        if "ours-S1" in c:
            out[f"fraction_of_machine_limit_{key}"] = (
                arch["machine_limit"]["S1"]["ideal_seconds_per_epoch"] / c["ours-S1"]["seconds_per_epoch"]
            )
        # Where an S = 1 epoch goes: the compiled step, the rest of the input
        # pipeline, and the per-batch binarisation, as fractions of the epoch.
        if {"ours-S1", "ours-S1-binarised-once", "ours-S1-step-only"} <= set(c):
            total = c["ours-S1"]["seconds_per_epoch"]
            once = c["ours-S1-binarised-once"]["seconds_per_epoch"]
            step = c["ours-S1-step-only"]["seconds_per_epoch"]
            out[f"binarisation_share_{key}"] = (total - once) / total
            out[f"step_share_{key}"] = step / total
        # The same split in CPU time, which the machine's noise disturbs far
        # less: the binarisation's own CPU seconds (pipeline alone, with and
        # without it) over the CPU seconds of an S = 1 epoch.
        if {"ours-S1", "pipeline-only", "pipeline-only-binarised-once"} <= set(c):
            binarise = (
                c["pipeline-only"]["cpu_seconds_per_epoch"] - c["pipeline-only-binarised-once"]["cpu_seconds_per_epoch"]
            )
            out[f"binarisation_cpu_share_{key}"] = binarise / c["ours-S1"]["cpu_seconds_per_epoch"]
            out[f"pipeline_cpu_share_{key}"] = (
                c["pipeline-only"]["cpu_seconds_per_epoch"] / c["ours-S1"]["cpu_seconds_per_epoch"]
            )
    return out


def compare_backends(architectures):
    """Which Keras backend trained the composed VAE fastest on each architecture, and by how much.

    Labels the page prints as they are, so its text follows the record:
    ``fastest_backend_{arch}`` and ``runner_up_backend_{arch}`` (by median
    seconds per epoch), ``fastest_backend_margin_{arch}`` (the runner-up's
    seconds over the fastest's, repeat by repeat, median over repeats) and
    its smallest pair ``fastest_backend_margin_worst_pair_{arch}``, whether
    the two ranges over repeats overlap, and that said in words.
    """
    import numpy as np

    out = {}
    for name, arch in architectures.items():
        key = arch_key(name)
        ran = {b: timed(arch["configs"], config) for config, b in COMPOSED.items()}
        ran = {backend: summary for backend, summary in ran.items() if summary is not None}
        if not ran:
            continue
        order = sorted(ran, key=lambda backend: ran[backend]["seconds_per_epoch"])
        out[f"fastest_backend_{key}"] = order[0]
        if len(order) == 1:
            out[f"fastest_backend_separation_{key}"] = "it was the only backend that ran"
            continue
        fastest, runner_up = ran[order[0]], ran[order[1]]
        margins = paired_ratios(runner_up, fastest)
        overlap = fastest["seconds_per_epoch_max"] >= runner_up["seconds_per_epoch_min"]
        out[f"runner_up_backend_{key}"] = order[1]
        out[f"fastest_backend_margin_{key}"] = float(np.median(margins))
        out[f"fastest_backend_margin_worst_pair_{key}"] = min(margins)
        out[f"fastest_backend_ranges_overlap_{key}"] = overlap
        out[f"fastest_backend_separation_{key}"] = (
            f"its range over repeats overlaps that of {order[1]}, so the order of the two is within noise"
            if overlap
            else f"its slowest run was faster than the fastest run of {order[1]}"
        )
    return out


def verdicts(measured):
    """Each target with its measured ratio and "met" or "not met" (absent ratios are left out)."""
    compare = {"<=": float.__le__, "<": float.__lt__, ">=": float.__ge__}
    return {
        name: {
            "measured": measured[name],
            "target": f"{op} {bound:g}",
            "verdict": "met" if compare[op](float(measured[name]), bound) else "not met",
        }
        for name, op, bound in TARGETS
        if name in measured
    }


def run_settings(args, num_examples):
    return {
        "repeats": args.repeats,
        "num_epochs": args.num_epochs,
        "architectures": args.architectures,
        "batch_size": BATCH_SIZE,
        "learning_rate": LEARNING_RATE,
        "num_examples": num_examples,
        "quick": args.quick,
    }


# What produces the timings (the workers) and the numbers derived from them. The record's guard is the
# static call graph from these (fingerprint.static_call_graph): every definition of ours they can reach,
# read from the source, so no list of timed code is kept by hand and PyTorch is never imported to check it.
TIMED_ENTRY_POINTS = [
    "worker",
    "measure",
    "summarise",
    "summarise_machine_limit",
    "ratios",
    "compare_backends",
    "verdicts",
    "machine_limit",
]


def timed_code_guard():
    """The static guard of the timed code (a docstring, comment or formatter run does not move it)."""
    import fingerprint

    return {"static_guard": fingerprint.static_call_graph_guard("benchmark", TIMED_ENTRY_POINTS)}


def settings_inputs(settings):
    """What the record depends on besides its code: the settings."""
    import provenance

    return provenance.input_hashes([], settings)


def stale_reasons(record):
    """Why the record is stale (changed settings hash, a missing or moved guard); empty when current."""
    import provenance

    stale = provenance.stale_inputs(record, settings_inputs(record["settings"]))
    return stale or provenance.moved_behaviour(record, timed_code_guard())


def versions():
    import keras
    import numpy as np
    import tensorflow as tf

    found = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
    }
    for module in ("torch", "jax"):  # optional: None when not installed
        probe = subprocess.run(
            [sys.executable, "-c", f"import {module}; print({module}.__version__)"], capture_output=True, text=True
        )
        found[module] = probe.stdout.strip() if probe.returncode == 0 else None
    return found


def main(argv=None):
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeats", type=int, default=5, help="interleaved runs per configuration (default: %(default)s)"
    )
    parser.add_argument(
        "--num-epochs", type=int, default=4, help="epochs per run, the first not counted (default: %(default)s)"
    )
    parser.add_argument(
        "--architectures", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES), help="which to run"
    )
    parser.add_argument(
        "--output", default=str(RESULTS), help="results file (default: results/performance/benchmark.json)"
    )
    parser.add_argument("--quick", action="store_true", help="one repeat of two epochs (for tests)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="run nothing; exit 1 if the results file's record does not match the timed code and settings",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--architecture", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.architecture, args.num_epochs, started)
        return 0
    if args.quick:
        args.repeats, args.num_epochs = 1, 2
    if args.repeats < 1 or args.num_epochs < 2:
        parser.exit(2, f"{parser.prog}: error: Expected --repeats >= 1 and --num-epochs >= 2. Received: "
                    f"repeats={args.repeats}, num_epochs={args.num_epochs}\n")  # fmt: skip
    if args.check:
        import provenance

        try:
            record = provenance.read_record(args.output, ["settings"])
        except provenance.RecordError as error:
            parser.exit(2, f"{parser.prog}: error: {error}\n")
        if record is None:
            parser.exit(1, f"{parser.prog}: {args.output} not found: run scripts/benchmark.py\n")
        # The check compares the code, and the settings the record was made with.
        stale = stale_reasons(record)
        if stale:
            parser.exit(1, f"{parser.prog}: {args.output} is stale ({', '.join(stale)}): run scripts/benchmark.py\n")
        print(f"{args.output} is current")
        return 0
    from mnist_data import MNISTError, load_mnist
    from outputs import check_output_file

    try:
        check_output_file(args.output)  # before the work
        (x_train, _), _ = load_mnist()
    except (MNISTError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    settings = run_settings(args, len(x_train))
    names = {architecture: config_names(architecture) for architecture in args.architectures}
    needed = {required_module(config) for configs in names.values() for config in configs} - {None}
    missing = {module for module in needed if not importable(module)}
    plan = [
        (repeat, architecture, config)
        for repeat in range(args.repeats)
        for architecture in args.architectures
        for config in names[architecture]
        if required_module(config) not in missing
    ]
    runs = {}
    # The real run times one worker at a time. --quick only checks that every part runs and the file is well
    # formed, so it runs two workers at once (one per core) and its times mean nothing.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2 if args.quick else 1) as pool:
        measured = pool.map(lambda item: measure(item[2], item[1], args.num_epochs), plan)
        for index, ((_, architecture, config), run) in enumerate(zip(plan, measured, strict=True), 1):
            runs.setdefault((architecture, config), []).append(run)
            if config == MACHINE_LIMIT:
                seconds = run["machine_limit"]["S1"]["ideal_seconds_per_epoch"]
            else:
                seconds = sum(run["steady_epoch_seconds"]) / len(run["steady_epoch_seconds"])
            xla = run.get("xla_limit", {}).get("S1")
            xla = f" (XLA's products: {xla['ideal_seconds_per_epoch']:.2f})" if xla else ""
            print(f"[{index}/{len(plan)}] {architecture} {config}: {seconds:.2f} s per epoch{xla}", flush=True)
    architectures = {}
    for architecture in args.architectures:
        configs = {}
        for config in names[architecture]:
            if required_module(config) in missing:
                configs[config] = {"skipped": f"{required_module(config)} not installed"}
                print(f"{architecture} {config}: skipped: {required_module(config)} not installed")
            elif config != MACHINE_LIMIT:
                configs[config] = summarise(runs[(architecture, config)])
        architectures[architecture] = {
            "layers": ARCHITECTURES[architecture],
            "configs": configs,
            # The median over the repeats, each timed in its turn among the other workers.
            "machine_limit": summarise_machine_limit(runs[(architecture, MACHINE_LIMIT)]),
        }
        if all("xla_limit" in run for run in runs[(architecture, MACHINE_LIMIT)]):
            architectures[architecture]["xla_limit"] = summarise_machine_limit(
                runs[(architecture, MACHINE_LIMIT)], "xla_limit"
            )
    import fingerprint
    from train_main_post import describe_machine

    measured = ratios(architectures)
    results = {
        "settings": settings,
        "architectures": architectures,
        "ratios": measured,
        "targets": verdicts(measured),
        "backends": compare_backends(architectures),
        "versions": versions(),
        "machine": describe_machine(),
        "inputs": settings_inputs(settings),
        "fingerprint": timed_code_guard(),
        "commit": fingerprint.git_commit(),
        "fingerprint_commit": fingerprint.git_commit(),
    }
    import provenance

    output = pathlib.Path(args.output)
    provenance.write_record(output, results)  # atomically: an interrupted write leaves the old record whole
    for name, value in results["ratios"].items():
        target = results["targets"].get(name)
        print(f"{name}: {value:.2f}" + (f" (target {target['target']}: {target['verdict']})" if target else ""))
    for name, value in results["backends"].items():
        print(f"{name}: {value}")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

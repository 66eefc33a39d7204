"""Measure what the number of Monte Carlo samples buys and costs, for the IWAE post.

Uses the models trained by ``train_iwae_table.py`` (``results/iwae/<row>/vae.keras``)
and the listings, and writes ``results/iwae/experiments.json``:

* ``gradient_variance``: the variance of the gradient of the negative ELBO and
  of the negative IWAE bound with respect to the encoder's weights, over
  fresh draws of ``eps``, on one fixed minibatch, for several ``mc_samples``;
* ``grid``: a VAE (the ELBO) trained from scratch for every batch size and
  number of samples, once for a fixed number of gradient steps and once for a
  fixed wall-clock time, with its train and test negative ELBO afterwards;
* ``bounds``: the ELBO and the importance-weighted bound ``L_k`` for k = 1 to
  5000 of a VAE and an IWAE, on the same draws;
* ``reconstructions``: one test digit decoded from individual samples of ``z``;
* ``cost``: seconds per training epoch for S = 1, 5, 25 and 50 samples
  (the median of the epochs after the first, which compiles the step).

Run it on an otherwise idle machine (it times things). The record holds, per
part, the SHA-256 of the data and models it read and of its settings, and the
behavioural fingerprint of its code (``fingerprint.py``): the same part run at
the quick settings on the committed MNIST subset. ``cost`` and the grid
measure speed (and the grid's fixed-step runs are not reproducible), so their
fingerprint is the static guard of the code they run. ``--if-stale`` reruns only the stale parts; ``--check``
exits 1 when one is stale; ``--quick`` is a seconds-long run for tests.
"""

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "listings" / "vae"))
sys.path.insert(0, str(REPO_ROOT / "scripts"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import fingerprint  # noqa: E402
import provenance  # noqa: E402
from mnist_data import MNISTError  # noqa: E402
from outputs import ModelFileError, check_output_file  # noqa: E402

TABLE_DIR = REPO_ROOT / "results" / "iwae"
RECORD_PATH = TABLE_DIR / "experiments.json"
MODEL_ROWS = ("vae-k1", "vae-k50", "iwae-k50")
PARTS = ("gradient_variance", "bounds", "reconstructions", "cost", "grid")
# Parts whose fingerprint is the static guard of the code they can run (``cost`` and ``grid``, read from
# the source): ``cost`` times epochs, and the grid trains for a fixed time.
TIMING_PARTS = ("cost", "grid")

SETTINGS = {
    "gradient_variance": {"row": "vae-k1", "mc_samples": [1, 2, 5, 10, 25, 50], "repeats": 64, "batch_size": 100},
    "grid": {
        "batch_sizes": [20, 100, 500],
        "mc_samples": [1, 5, 25],
        "steps": 1500,
        "seconds": 30.0,
        "eval_samples": 10,
        "num_train_eval": 10000,
    },
    "bounds": {"rows": ["vae-k50", "iwae-k50"], "num_examples": 1000, "ks": [1, 2, 5, 10, 50, 100, 500, 1000, 5000]},
    "reconstructions": {"row": "iwae-k50", "index": 0, "num_samples": 8},
    "cost": {"mc_samples": [1, 5, 25, 50], "batch_size": 20, "epochs": 4, "objective": "iwae"},
    "seed": 0,
    "test_binarization_seed": 1,
}
QUICK = {
    "gradient_variance": {"row": "vae-k1", "mc_samples": [1, 2], "repeats": 4, "batch_size": 20},
    "grid": {
        "batch_sizes": [100],
        "mc_samples": [1, 2],
        "steps": 50,
        "seconds": 1.0,
        "eval_samples": 2,
        "num_train_eval": 200,
    },
    "bounds": {"rows": ["vae-k50", "iwae-k50"], "num_examples": 20, "ks": [1, 10, 100]},
    "reconstructions": {"row": "iwae-k50", "index": 0, "num_samples": 3},
    "cost": {"mc_samples": [1], "batch_size": 100, "epochs": 1, "objective": "iwae"},
    "seed": 0,
    "test_binarization_seed": 1,
}


def input_files(table_dir):
    """The MNIST files and the trained rows the measurements read; MNISTError when one is missing."""
    data_files = provenance.mnist_data_files()
    models = [pathlib.Path(table_dir) / row / "vae.keras" for row in MODEL_ROWS]
    for path in [*data_files, *models]:
        if not path.is_file():
            raise MNISTError(f"Missing input: expected {path}")
    return [*data_files, *models]


def data_inputs(settings, table_dir):
    """What the record depends on besides the behaviour of the code: data, trained rows, settings."""
    return provenance.input_hashes(input_files(table_dir), settings)


def run_part(part, settings, table_dir):
    """One part's measurements, on the MNIST of ``MNIST_DIR`` (or the default folder)."""
    from mnist_data import binarize_once, flatten_and_scale, load_mnist

    (x_train, _), (x_test, _) = load_mnist()
    x_train, x_test = flatten_and_scale(x_train), flatten_and_scale(x_test)
    seed = settings["seed"]
    x_test_binary = binarize_once(x_test, settings["test_binarization_seed"])  # as in the table
    if part == "gradient_variance":
        return gradient_variance(settings[part], table_dir, x_test_binary, seed)
    if part == "bounds":
        return bounds(settings[part], table_dir, x_test_binary, seed)
    if part == "reconstructions":
        return reconstructions(settings[part], table_dir, x_test_binary, seed)
    if part == "cost":
        return cost(settings[part], x_train, seed)
    return grid(settings[part], x_train, x_test_binary, seed)


def fingerprint_of(part, table_dir=TABLE_DIR, run=False):
    """Today's fingerprint of ``part``: its run at the quick settings on the MNIST subset and the given rows.

    With ``run=True`` (``--quick``), run it afresh and return its results, leaving the fingerprint in the cache.
    """
    models = provenance.input_hashes(input_files(table_dir)[-len(MODEL_ROWS) :], {})
    args = ("iwae-experiments", part, QUICK, lambda part, settings, scratch: run_part(part, settings, table_dir))
    if run:
        return provenance.fingerprint_run(*args, None, extra=json.dumps(models, sort_keys=True))
    return provenance.part_fingerprint(*args, timing=part in TIMING_PARTS, extra=json.dumps(models, sort_keys=True))


def stale_parts(record, inputs, table_dir, parts=PARTS):
    """``{part: [reason, ...]}``: changed inputs, or a fingerprint missing or moved."""
    if record is None:
        return {part: ["no record"] for part in parts}
    changed = provenance.stale_inputs(record, inputs)
    stale = {}
    for part in parts:
        if changed:
            stale[part] = changed
        elif part not in record.get("fingerprint", {}):
            stale[part] = ["fingerprint missing (rerun)"]
        else:
            stale[part] = provenance.moved_behaviour(
                {"fingerprint": record["fingerprint"][part]}, fingerprint_of(part, table_dir)
            )
    return stale


def load_row(table_dir, row):
    """A trained row of the table: a composed model, which takes any number of samples."""
    import training  # noqa: F401 (registers the composed model's layers)
    from outputs import load_saved_model

    return load_saved_model(pathlib.Path(table_dir) / row / "vae.keras", "a row trained by train_iwae_table.py")


def rows_read(part_settings):
    """The trained rows of the table one part reads."""
    return [*part_settings.get("rows", []), *([part_settings["row"]] if "row" in part_settings else [])]


def fresh_vae(objective):
    """An untrained model of the table's architecture."""
    from importance_weighted import iwae_vae

    return iwae_vae(784, objective)


def gradient_variance(settings, table_dir, x_test, seed):
    """Per-weight variance of the encoder gradient over draws of eps, summed over the weights."""
    import numpy as np
    import tensorflow as tf

    from compose import NegativeObjective

    vae = load_row(table_dir, settings["row"])
    encoder_weights = vae.get_layer("encoder").trainable_weights
    latent_dim = vae.inputs[1].shape[-1]
    x = tf.constant(x_test[: settings["batch_size"]])
    rng = np.random.default_rng(seed)
    results = {}
    for objective in ("elbo", "iwae"):
        loss_fn = NegativeObjective(objective, "bernoulli")
        results[objective] = {}

        @tf.function(jit_compile=True)
        def encoder_gradient(eps, loss_fn=loss_fn):
            with tf.GradientTape() as tape:
                loss = loss_fn(x, vae([x, eps]))
            grads = tape.gradient(loss, encoder_weights)
            return tf.concat([tf.reshape(g, [-1]) for g in grads], axis=0)

        for mc_samples in settings["mc_samples"]:  # one model: S is the shape of eps
            shape = (len(x), mc_samples, latent_dim)
            grads = np.stack(
                [
                    encoder_gradient(rng.standard_normal(shape, dtype="float32")).numpy()
                    for _ in range(settings["repeats"])
                ]
            ).astype("float64")
            mean = grads.mean(axis=0)
            results[objective][str(mc_samples)] = {
                "total_variance": float(grads.var(axis=0, ddof=1).sum()),
                "squared_norm_of_mean": float(mean @ mean),
            }
    return results


def train_for(vae, x_train, batch_size, mc_samples, steps=None, seconds=None, seed=0):
    """Train the ELBO for ``steps`` gradient steps or ``seconds``; ``(steps_done, seconds_taken, untimed_steps)``.

    Adam at a constant learning rate 1e-3 (epsilon 1e-4, as in the table),
    with `training.fit_vae`'s batches and compiled step. The clock starts
    after the first call of the step, which compiles it: the steps of that
    call (``untimed_steps``) are counted in the steps, not in the seconds.
    With a time budget, training stops before a call that would overrun it
    (judged by the last call's duration).
    """
    import keras

    from importance_weighted import IWAE_DEFAULTS
    from training import fit_vae

    class Budget(keras.callbacks.Callback):
        start = last = None
        untimed_steps = 0

        def on_train_batch_end(self, batch, logs=None):
            now, done = time.perf_counter(), int(self.model.optimizer.iterations.numpy())
            if self.start is None:
                self.start, self.untimed_steps = now, done
            elif seconds is not None and (now - self.start) + (now - self.last) > seconds:
                self.model.stop_training = True
            if steps is not None and done >= steps:
                self.model.stop_training = True
            self.last = now

    budget = Budget()
    optimizer = keras.optimizers.Adam(1e-3, epsilon=IWAE_DEFAULTS["adam_epsilon"])
    fit_vae(vae, x_train, "bernoulli", "elbo", epochs=10**6, batch_size=batch_size, mc_samples=mc_samples,
            binarize=True, seed=seed, verbose=0, callbacks=[budget], optimizer=optimizer)  # fmt: skip
    return int(vae.optimizer.iterations.numpy()), time.perf_counter() - budget.start, budget.untimed_steps


def negative_elbo(vae, x_binary, eval_samples, seed):
    """Mean negative ELBO (the Monte Carlo log ratio, ``eval_samples`` draws) over binary ``x``, in nats."""
    from training import elbo_terms

    terms = elbo_terms(vae, x_binary, "bernoulli", mc_samples=eval_samples, batch_size=500, seed=seed)
    return float((terms["distortion"] + terms["rate"]).mean())


def grid(settings, x_train, x_test, seed):
    """Batch size x MC samples, at a fixed number of steps and at a fixed wall-clock time."""
    import keras

    from mnist_data import binarize_once

    x_train_eval = binarize_once(x_train[: settings["num_train_eval"]], seed + 3)
    results = {"fixed_steps": {}, "fixed_time": {}}
    for budget in ("fixed_steps", "fixed_time"):
        for batch_size in settings["batch_sizes"]:
            for mc_samples in settings["mc_samples"]:
                keras.utils.set_random_seed(seed)
                vae = fresh_vae("elbo")
                steps, seconds, untimed_steps = train_for(
                    vae,
                    x_train,
                    batch_size,
                    mc_samples,
                    steps=settings["steps"] if budget == "fixed_steps" else None,
                    seconds=settings["seconds"] if budget == "fixed_time" else None,
                    seed=seed,
                )
                results[budget][f"b{batch_size}-s{mc_samples}"] = {
                    "batch_size": batch_size,
                    "mc_samples": mc_samples,
                    "steps": steps,
                    "untimed_steps": untimed_steps,
                    "seconds": seconds,
                    "epochs": steps * batch_size / len(x_train),
                    "train_negative_elbo": negative_elbo(vae, x_train_eval, settings["eval_samples"], 1),
                    "test_negative_elbo": negative_elbo(vae, x_test, settings["eval_samples"], 2),
                }
                print(f"  {budget} b{batch_size}-s{mc_samples}: {results[budget][f'b{batch_size}-s{mc_samples}']}")
    return results


def bounds(settings, table_dir, x_test, seed):
    """ELBO and L_k (mean over disjoint groups of k of the same draws) per row, in nats per image."""
    import numpy as np
    from keras import ops

    from likelihoods import negative_log_likelihood

    x = x_test[: settings["num_examples"]]
    k_max = max(settings["ks"])
    results = {}
    for row in settings["rows"]:
        vae = load_row(table_dir, row)
        rng = np.random.default_rng(seed)
        log_w = []
        for start in range(0, len(x), 10):
            x_batch = x[start : start + 10]
            eps = rng.standard_normal((len(x_batch), k_max, vae.inputs[1].shape[-1]), dtype="float32")
            x_logits, log_ratio = vae([x_batch, eps], training=False)  # the exact log ratio: a Monte Carlo model
            log_w.append(ops.convert_to_numpy(-negative_log_likelihood("bernoulli", x_batch, x_logits) + log_ratio))
        log_w = np.concatenate(log_w).astype("float64")
        values = {"elbo": float(log_w.mean())}
        for k in settings["ks"]:
            groups = log_w[:, : (k_max // k) * k].reshape(len(x), -1, k)
            peak = groups.max(axis=-1, keepdims=True)
            bound = peak[..., 0] + np.log(np.mean(np.exp(groups - peak), axis=-1))
            values[f"k{k}"] = float(bound.mean())
        results[row] = values
    return results


def reconstructions(settings, table_dir, x_test, seed):
    """The digit, the Bernoulli means decoded from single samples of z, and their average."""
    import numpy as np
    from keras import ops

    vae = load_row(table_dir, settings["row"])
    x = x_test[settings["index"] : settings["index"] + 1]
    eps = np.random.default_rng(seed).standard_normal((1, settings["num_samples"], vae.inputs[1].shape[-1]), "float32")
    x_logits, _ = vae([x, eps], training=False)
    means = ops.convert_to_numpy(ops.sigmoid(x_logits))[0]
    return {
        "digit": np.round(x[0], 3).tolist(),
        "samples": np.round(means, 3).tolist(),
        "average": np.round(means.mean(axis=0), 3).tolist(),
    }


def cost(settings, x_train, seed):
    """Median seconds per epoch after the first (which compiles), per number of samples."""
    import keras
    import numpy as np

    from epoch_timer import make_epoch_timer
    from importance_weighted import IWAE_DEFAULTS
    from training import fit_vae

    results = {}
    for mc_samples in settings["mc_samples"]:
        keras.utils.set_random_seed(seed)
        vae = fresh_vae(settings["objective"])
        timer = make_epoch_timer()
        optimizer = keras.optimizers.Adam(1e-3, epsilon=IWAE_DEFAULTS["adam_epsilon"])
        fit_vae(vae, x_train, "bernoulli", settings["objective"], epochs=settings["epochs"],
                batch_size=settings["batch_size"], mc_samples=mc_samples, binarize=True, seed=seed, verbose=0,
                callbacks=[timer], optimizer=optimizer)  # fmt: skip
        steady = timer.seconds[1:] or timer.seconds
        results[str(mc_samples)] = float(np.median(steady))
        print(f"  cost S={mc_samples}: {results[str(mc_samples)]:.2f} s per epoch", flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table-dir", default=str(TABLE_DIR), help="trained rows (default: results/iwae)")
    parser.add_argument("--output", default=str(RECORD_PATH), help="record to write (default: %(default)s)")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts (default: all)")
    parser.add_argument("--if-stale", action="store_true", help="rerun only the parts that are stale")
    parser.add_argument("--check", action="store_true", help="exit 1 when a part does not match its inputs")
    parser.add_argument("--quick", action="store_true", help="tiny settings, for tests")
    parser.add_argument(
        "--print-fingerprint", action="store_true", help="compute today's fingerprints afresh (no cache); print them"
    )
    args = parser.parse_args(argv)
    chosen = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in PARTS]
    if unknown or not chosen:
        parser.exit(2, f"{parser.prog}: error: unknown parts {unknown}; expected some of {', '.join(PARTS)}\n")
    if args.quick and pathlib.Path(args.output).resolve() == RECORD_PATH.resolve():
        parser.exit(2, f"{parser.prog}: error: --quick needs an --output other than the committed record\n")
    settings = QUICK if args.quick else SETTINGS
    try:
        if args.print_fingerprint:
            fingerprint.CACHE_DIR = pathlib.Path(tempfile.mkdtemp())  # afresh: nothing read from, or left in, the cache
            print(json.dumps({part: fingerprint_of(part, args.table_dir) for part in chosen}, sort_keys=True))
            return 0
        inputs = data_inputs(settings, args.table_dir)
        record = provenance.read_record(args.output)
        stale = stale_parts(record, inputs, args.table_dir, chosen)
    except (MNISTError, provenance.RecordError, ModelFileError) as error:  # a corrupt row fails its fingerprint
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    todo = provenance.names_to_run(parser, args, chosen, stale, args.output, nothing="nothing to measure")
    if todo is None:
        return 0
    try:  # before the work: the record's folder can take it
        check_output_file(args.output)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")

    import keras
    import numpy as np
    import tensorflow as tf

    from train_main_post import describe_machine

    if record is None or record.get("inputs") != inputs:
        record, todo = {"settings": settings}, list(PARTS)  # other data, rows or settings: one record, all afresh
    try:  # before the work: every trained row the parts read loads
        for row in sorted({row for name in todo for row in rows_read(settings[name])}):
            load_row(args.table_dir, row)
    except ModelFileError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    for name in todo:
        print(f"{name} ...", flush=True)
        start = time.perf_counter()
        if args.quick and name not in TIMING_PARTS:  # the fingerprint's own run: its numbers are cached
            record[name] = fingerprint_of(name, args.table_dir, run=True)
        else:
            try:
                with provenance.interruptible():
                    record[name] = run_part(name, settings, args.table_dir)
            except provenance.Interrupted as interrupt:  # the record is written once, at the end
                provenance.exit_interrupted(parser, interrupt, f"measuring {name}", args.output)
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
        commit = fingerprint.git_commit()
        record.setdefault("fingerprint", {})[name] = fingerprint_of(name, args.table_dir)
        record.setdefault("commit", {})[name] = commit
        record.setdefault("fingerprint_commit", {})[name] = commit
    record["versions"] = {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
    }
    record["machine"] = describe_machine()
    record["inputs"] = inputs
    provenance.write_record(args.output, record)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

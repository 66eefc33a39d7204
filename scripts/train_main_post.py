"""Train the main post's VAE on MNIST and record the numbers the post quotes.

Uses the training listing with its default settings (the post's), then writes
to ``--output-dir``:

* ``vae.keras``: the trained model;
* ``history.json``: train and test negative ELBO per epoch (nats);
* ``main_post.json``: final train and test negative ELBO with standard errors
  (the model trained with the listing's one sample of ``z`` per image, scored
  with ``EVALUATION_MC_SAMPLES``), epochs, wall time, seconds per epoch,
  versions, machine, the commit, the SHA-256 of the settings and the data
  files, and the behavioural fingerprint of the code (``fingerprint.py``):
  the same training and evaluation run on a few hundred images of the
  committed subset for one epoch.

The record is stale when the settings or the data change, or when today's
code gives a fingerprint that is not close to the recorded one. With
``--if-stale`` it does nothing when the record is current. ``--quick`` trains
one epoch (for tests; point ``MNIST_DIR`` at a small set).
"""

import argparse
import json
import os
import pathlib
import platform
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "listings" / "vae"))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import fingerprint  # noqa: E402
import provenance  # noqa: E402
from mnist_data import MNISTError  # noqa: E402

OUTPUT_DIR = REPO_ROOT / "results" / "vae"
RECORD_NAME = "main_post.json"
OUTPUT_NAMES = (RECORD_NAME, "vae.keras", "history.json")
# The fingerprint's data: the committed subset (one epoch: ten steps at the default batch size).
FINGERPRINT_DATA = REPO_ROOT / "tests" / "data" / "mnist"
FINGERPRINT_SIZES = {"train": 1000, "test": 100}
# Samples of z per image for the final estimates: the model takes any number, whatever it was trained with.
EVALUATION_MC_SAMPLES = 10


def read_train_defaults():
    """The listing's DEFAULTS, read without importing Keras (so the staleness check is fast)."""
    import ast

    tree = ast.parse((REPO_ROOT / "listings" / "vae" / "train.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "DEFAULTS":
            return ast.literal_eval(node.value)
    raise RuntimeError("train.py defines no DEFAULTS")


def data_inputs(settings, mnist_dir=None):
    """SHA-256 of the data files and the settings: what the record depends on besides the code's behaviour."""
    return provenance.input_hashes(provenance.mnist_data_files(mnist_dir), settings)


def final_estimates(vae, encoder, x_train, x_test, seed):
    """Train and test negative ELBO per image (mean and standard error), on the sets binarised once.

    The test set as training saw it (its stream of `train.random_streams`);
    the training set binarised once from the stream that static binarisation
    would use. Each image's estimate averages ``EVALUATION_MC_SAMPLES``
    samples of ``z``, drawn from the evaluation stream.
    """
    import numpy as np

    from mnist_data import binarize_once
    from train import negative_elbo_per_example, random_streams

    streams = random_streams(seed)
    final = {}
    for split, x_binary in (
        ("train", binarize_once(x_train, streams["train_binarization"])),
        ("test", binarize_once(x_test, streams["test_binarization"])),
    ):
        values = negative_elbo_per_example(
            vae, encoder, x_binary, mc_samples=EVALUATION_MC_SAMPLES, seed=streams["evaluation"]
        )
        final[f"{split}_negative_elbo"] = float(np.mean(values))
        final[f"{split}_negative_elbo_stderr"] = float(np.std(values, ddof=1) / np.sqrt(len(values)))
    return final


def behaviour(settings):
    """The fingerprint: the record's training and evaluation, for one epoch on a few hundred subset images."""
    from mnist_data import binarize_once, flatten_and_scale, load_mnist
    from train import negative_elbo_per_example, random_streams, train_vae

    (x_train, _), (x_test, _) = load_mnist(FINGERPRINT_DATA)
    x_train = flatten_and_scale(x_train)[: FINGERPRINT_SIZES["train"]]
    x_test = flatten_and_scale(x_test)[: FINGERPRINT_SIZES["test"]]
    vae, encoder, _, history = train_vae(x_train, x_test, verbose=0, **{**settings, "num_epochs": 1})
    streams = random_streams(settings["seed"])
    first_images = negative_elbo_per_example(
        vae,
        encoder,
        binarize_once(x_test[:8], streams["test_binarization"]),
        mc_samples=EVALUATION_MC_SAMPLES,
        seed=streams["evaluation"],
    )
    return fingerprint.numbers(
        {
            "history": history,
            "first_test_images": first_images.tolist(),
            **final_estimates(vae, encoder, x_train, x_test, settings["seed"]),
        }
    )


def current_fingerprint(settings):
    """The fingerprint of today's code (cached by code and settings; the epochs do not enter it)."""
    settings = {**settings, "num_epochs": 1}
    return fingerprint.cached("main_post", settings, lambda: behaviour(settings))


def stale_parts(record, settings, mnist_dir=None):
    """What makes the record stale: changed inputs, a missing or moved fingerprint (empty when current)."""
    stale = provenance.stale_inputs(record, data_inputs(settings, mnist_dir))
    if stale:
        return stale  # no need to run the code to know
    if "fingerprint" not in record:
        return ["fingerprint missing: retrain"]
    moved = fingerprint.describe_differences(record["fingerprint"], current_fingerprint(settings))
    return [f"behaviour: {moved}"] if moved else []


def describe_machine():
    """CPU model and core count, e.g. 'Intel(R) Xeon(R) ..., 2 cores'."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def run(settings, output_dir, inputs, verbose):
    import keras
    import numpy as np
    import tensorflow as tf

    from epoch_timer import make_epoch_timer
    from mnist_data import flatten_and_scale, load_mnist
    from train import train_vae

    (x_train, _), (x_test, _) = load_mnist()
    x_train, x_test = flatten_and_scale(x_train), flatten_and_scale(x_test)
    timer = make_epoch_timer()
    start = time.perf_counter()
    vae, encoder, _, history = train_vae(x_train, x_test, verbose=verbose, callbacks=[timer], **settings)
    wall_time = time.perf_counter() - start

    final = final_estimates(vae, encoder, x_train, x_test, settings["seed"])

    history = {key: [round(float(v), 4) for v in values] for key, values in history.items()}
    steady = timer.seconds[1:] or timer.seconds
    record = {
        "settings": settings,
        **final,
        "num_train": int(len(x_train)),
        "num_test": int(len(x_test)),
        "num_epochs": len(timer.seconds),
        "evaluation_mc_samples": EVALUATION_MC_SAMPLES,
        "wall_time_seconds": wall_time,
        "first_epoch_seconds": timer.seconds[0],
        "seconds_per_epoch": float(np.median(steady)),
        "versions": {
            "python": platform.python_version(),
            "keras": keras.__version__,
            "keras_backend": keras.backend.backend(),
            "tensorflow": tf.__version__,
            "numpy": np.__version__,
        },
        "machine": describe_machine(),
        "inputs": inputs,
        "fingerprint": current_fingerprint(settings),
        "commit": fingerprint.git_commit(),
        "fingerprint_commit": fingerprint.git_commit(),
    }
    # The model, its history and its record, written together: a failure while writing leaves the earlier three.
    provenance.write_together({
        output_dir / "vae.keras": vae.save,
        output_dir / "history.json": lambda partial: partial.write_text(json.dumps(history, indent=2) + "\n"),
        output_dir / RECORD_NAME: provenance.record_writer(record),
    })  # fmt: skip
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default=str(OUTPUT_DIR), help="where to write (default: results/vae)")
    parser.add_argument("--if-stale", action="store_true", help="do nothing when the record is current")
    parser.add_argument("--quick", action="store_true", help="one epoch, for tests")
    parser.add_argument("--check", action="store_true", help="exit 1 when the record is not current")
    parser.add_argument(
        "--print-fingerprint", action="store_true", help="compute today's fingerprint afresh (no cache) and print it"
    )
    args = parser.parse_args(argv)
    if args.print_fingerprint:
        print(json.dumps(behaviour({**read_train_defaults(), "num_epochs": 1}), sort_keys=True))
        return 0
    output_dir = pathlib.Path(args.output_dir)
    if args.quick and output_dir.resolve() == OUTPUT_DIR.resolve():  # a one-epoch model over the committed one
        parser.exit(2, f"{parser.prog}: error: --quick needs an --output-dir other than the committed results\n")
    settings = read_train_defaults()
    if args.quick:
        settings["num_epochs"] = 1
    record_path = output_dir / RECORD_NAME
    try:
        inputs = data_inputs(settings)
        record = provenance.read_record(record_path)
        stale = stale_parts(record, settings) if record is not None else ["no record"]
    except (MNISTError, provenance.RecordError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    missing = [f"missing {name}" for name in OUTPUT_NAMES if not (output_dir / name).is_file()]
    stale = {RECORD_NAME: stale or missing}
    if provenance.names_to_run(parser, args, [RECORD_NAME], stale, record_path, nothing="nothing to train") is None:
        return 0
    try:  # before the work: the folder can take the model, its history and the record
        provenance.check_output_dir(output_dir, OUTPUT_NAMES)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(f"training ({', '.join(stale[RECORD_NAME]) or 'as asked'}) ...", flush=True)
    try:
        with provenance.interruptible():
            record = run(settings, output_dir, inputs, verbose=1 if sys.stdout.isatty() else 2)
    except provenance.Interrupted as interrupt:
        provenance.exit_interrupted(parser, interrupt, "training", f"{output_dir}'s model, history and record")
    print(
        f"train negative ELBO {record['train_negative_elbo']:.2f} nats, "
        f"test negative ELBO {record['test_negative_elbo']:.2f} nats, "
        f"{record['seconds_per_epoch']:.1f} s per epoch; wrote {output_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reproduce rows of Burda et al.'s Table 1 (MNIST, one stochastic layer) on a CPU budget.

Each row trains the IWAE paper's model with ``importance_weighted.py`` as a
VAE (the ELBO) or an IWAE with ``k`` samples, for the first ``--stages``
stages of the paper's schedule (1 + 3 + 9 + ... epochs), then estimates the
test log-likelihood with K = 5000 importance samples on the 10,000 test
images (binarised once, seed 1). Writes, under ``--output-dir``:

* ``<row>/vae.keras`` (weights, without optimiser state), ``<row>/history.json``
  and ``<row>/log_px.npz`` (every test image's estimate and its Monte Carlo
  standard error, for paired comparisons of rows on the same images);
* ``<row>/checkpoint.npz``: the row's state after its last epoch (weights,
  Adam's moments and step count, the data streams), from which a later run
  with more ``--stages`` goes on instead of starting afresh, and to which an
  interrupted run writes (``--resume``);
* ``<row>/stages.json``: the test NLL at the end of every stage, K = 5000 on
  the first 1,000 test images (the learning curves);
* ``table.json``: per row the test negative log-likelihood with its standard
  errors, the final bounds, epochs, wall time, seconds per epoch, machine,
  versions and the SHA-256 of every input, next to the paper's number.

``results/iwae`` is the 13-epoch table (three stages); ``results/iwae-long``
the rows trained on, stage by stage, towards the paper's schedule.

``--rows iwae-k5`` (re)runs only the rows named; ``--if-stale`` only those
whose inputs changed; ``--check`` exits 1 when any row is stale.
``--paper-schedule`` (``--stages 8``) is the paper's full 3,280-epoch schedule.
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
from outputs import add_checkpoint_options  # noqa: E402

OUTPUT_DIR = REPO_ROOT / "results" / "iwae"
LONG_DIR = REPO_ROOT / "results" / "iwae-long"  # the same rows trained further, stage by stage
RECORD_NAME = "table.json"
STATE_NAME = "checkpoint.npz"  # a row's state after its last epoch, or an interrupted run's
STAGES_NAME = "stages.json"  # the test NLL at every stage's end
CURVE_EXAMPLES = 1000  # test images scored at every stage's end (the first ones; all 10,000 at the last)
LONG_STAGES = 5  # results/iwae-long's rows: stages i = 0..4 of the paper's eight, 121 epochs

# Burda, Grosse & Salakhutdinov (2015), Table 1, MNIST, one stochastic layer:
# test negative log-likelihood in nats, estimated with k = 5000.
PAPER_TEST_NLL = {
    "vae-k1": 86.76,
    "vae-k5": 86.47,
    "vae-k50": 86.35,
    "iwae-k1": 86.76,
    "iwae-k5": 85.54,
    "iwae-k50": 84.78,
}
ROWS = {
    name: {"objective": "elbo" if name.startswith("vae") else "iwae", "k": int(name.split("-k")[1])}
    for name in PAPER_TEST_NLL
}
# Rows compared on the same test images: (row, reference). The difference of their test NLLs, image by
# image, has a smaller standard error than either mean, because the images' own difficulty cancels.
COMPARISONS = [("iwae-k1", "vae-k1"), ("iwae-k5", "vae-k5"), ("iwae-k50", "vae-k50"), ("vae-k5", "vae-k1"),
               ("vae-k50", "vae-k1"), ("iwae-k5", "iwae-k1"), ("iwae-k50", "iwae-k1")]  # fmt: skip
EVALUATION = {"num_samples": 5000, "num_examples": 10000, "binarization_seed": 1, "seed": 0, "batch_size": 10}


def row_settings(row, stages, seed=0):
    """A row's settings; a seed other than the default 0 (the committed table's) joins them."""
    return {**ROWS[row], "stages": stages, **({"seed": seed} if seed else {})}


def paper_epochs(stages):
    """Epochs of the schedule's first ``stages`` stages: 1 + 3 + 9 + ... + 3**(stages - 1)."""
    return (3**stages - 1) // 2


def state_settings(row, seed=0):
    """The settings a row's state belongs to: all of the run's but the stages, which a later run adds to
    (the schedule's first stages are the same whatever the number of stages)."""
    from importance_weighted import IWAE_DEFAULTS

    settings = {**IWAE_DEFAULTS, **row_settings(row, 1, seed)}
    del settings["stages"]
    return settings


# The fingerprint of a row (fingerprint.py): its own training and evaluation, for the first stage (one
# epoch) on the committed MNIST subset, scored with 20 importance samples on 100 test images.
FINGERPRINT = {"stages": 1, "evaluation": {**EVALUATION, "num_samples": 20, "num_examples": 100}}


def data_inputs(row, stages, evaluation=EVALUATION, seed=0):
    """What a row depends on besides the behaviour of the code: its settings and the data."""
    settings = {"row": row_settings(row, stages, seed), "evaluation": evaluation}
    return provenance.input_hashes(provenance.mnist_data_files(), settings)


def fingerprint_of(row, output_dir=None):
    """Today's fingerprint of ``row`` (cached by the normalised source of our code).

    With an ``output_dir`` (``--quick``), train the row afresh there as the fingerprint does and return its
    results, leaving the fingerprint in the cache.
    """

    def run(part, settings, output_dir):
        return run_row(part, settings["stages"], output_dir, 0, settings["evaluation"])

    if output_dir is not None:
        return provenance.fingerprint_run("iwae", row, FINGERPRINT, run, output_dir)
    return provenance.part_fingerprint("iwae", row, FINGERPRINT, run)


def run_row(row, stages, output_dir, verbose, evaluation=EVALUATION, checkpoint=None, seed=0):
    import keras
    import numpy as np
    import tensorflow as tf

    from epoch_timer import make_epoch_timer
    from importance_weighted import IWAE_DEFAULTS, train_iwae
    from log_likelihood import log_likelihood, summarise
    from mnist_data import binarize_once, flatten_and_scale, load_mnist
    from stage_scores import StageScores
    from train_main_post import describe_machine

    (x_train, _), (x_test, _) = load_mnist()
    x_train, x_test = flatten_and_scale(x_train), flatten_and_scale(x_test)
    x_eval = binarize_once(x_test[: evaluation["num_examples"]], evaluation["binarization_seed"])
    settings = row_settings(row, stages, seed)
    timer = make_epoch_timer()
    stage_scores = StageScores(output_dir / row / STAGES_NAME, x_eval[:CURVE_EXAMPLES], stages, evaluation,
                               first_epoch=0 if checkpoint is None else checkpoint.first_epoch)  # fmt: skip
    start = time.perf_counter()
    vae, history = train_iwae(x_train, x_test, verbose=verbose, callbacks=[timer, stage_scores], checkpoint=checkpoint,
                              **settings)  # fmt: skip
    train_seconds = time.perf_counter() - start - stage_scores.seconds

    start = time.perf_counter()
    log_px, stderr = log_likelihood(vae, x_eval, "bernoulli", evaluation["num_samples"], evaluation["batch_size"],
                                    evaluation["seed"], verbose=verbose, return_stderr=True)  # fmt: skip
    eval_seconds = time.perf_counter() - start
    summary = summarise(log_px, stderr)

    s = {**IWAE_DEFAULTS, **settings}
    row_dir = output_dir / row
    history = {key: [round(float(v), 4) for v in values] for key, values in history.items()}
    text = json.dumps(history, indent=2) + "\n"
    provenance.write_together({  # the row's three files change together or not at all
        row_dir / "vae.keras": provenance.model_writer(vae),  # no optimiser state in the repository
        # Every image's estimate, so that rows are compared on the same test images (paired differences).
        row_dir / "log_px.npz": provenance.arrays_writer({"log_px": log_px, "monte_carlo_stderr": stderr}),
        row_dir / "history.json": lambda partial: partial.write_text(text),
    })  # fmt: skip
    resumed = {}
    if checkpoint is not None:
        if stages > 1:  # the row's state after its last epoch: a run with more stages goes on from it
            checkpoint.write()
        else:  # one stage trains at a constant rate, not on the schedule's steps: more stages start afresh
            checkpoint.remove()
        if checkpoint.first_epoch:
            resumed = {"resumed": f"after epoch {checkpoint.first_epoch}; the times are this session's epochs"}
    steady = timer.seconds[1:] or timer.seconds
    return {
        "settings": s,
        "evaluation": evaluation,
        "test_nll": -summary["log_likelihood"],
        "test_nll_stderr_over_examples": summary["stderr_over_examples"],
        "test_nll_monte_carlo_stderr": summary["monte_carlo_stderr"],
        "paper_test_nll": PAPER_TEST_NLL[row],
        "final_train_negative_bound": history["loss"][-1],
        "final_test_negative_bound": history["val_loss"][-1],
        "num_epochs": len(history["loss"]),
        **resumed,
        "train_wall_time_seconds": train_seconds,
        "train_wall_time_minutes": train_seconds / 60,
        "seconds_per_epoch": float(np.median(steady)),
        "evaluation_wall_time_seconds": eval_seconds,
        "versions": {
            "python": platform.python_version(),
            "keras": keras.__version__,
            "keras_backend": keras.backend.backend(),
            "tensorflow": tf.__version__,
            "numpy": np.__version__,
        },
        "machine": describe_machine(),
    }


def continuable_state(recorded, row, output_dir, evaluation, seed):
    """Whether the state in ``<row>/checkpoint.npz`` is the end of the recorded, complete row (not an
    interrupted run's), trained on today's inputs and code, so that a run with more stages goes on from it."""
    if not recorded or "state" not in recorded or not (output_dir / row / STATE_NAME).is_file():
        return False
    earlier_inputs = data_inputs(row, recorded["settings"]["stages"], evaluation, seed)
    return not provenance.stale_inputs(recorded, earlier_inputs) and not provenance.moved_behaviour(
        recorded, fingerprint_of(row)
    )


def row_checkpoint(row, recorded, output_dir, args, evaluation):
    """The row's `checkpoints.Checkpoint`: going on from its state with ``--resume`` (an interrupted run) or
    when the row stands complete with fewer stages; ValueError (one line) when it cannot."""
    from checkpoints import Checkpoint

    path = output_dir / row / STATE_NAME
    resume = path.is_file() and (args.resume or continuable_state(recorded, row, output_dir, evaluation, args.seed))
    checkpoint = Checkpoint(path, state_settings(row, args.seed), args.checkpoint_every, resume=resume)
    if checkpoint.epoch > paper_epochs(args.stages):
        epochs, stages = paper_epochs(args.stages), stages_of(checkpoint.epoch)
        raise ValueError(f"{path} holds {checkpoint.epoch} epochs, more than the {epochs} of --stages "
                         f"{args.stages}. Expected --stages {stages} or more")  # fmt: skip
    return checkpoint


def stages_of(epochs):
    """The fewest stages whose schedule has at least ``epochs`` epochs."""
    stages = 1
    while paper_epochs(stages) < epochs:
        stages += 1
    return stages


def row_state(row_dir):
    """The record's note of a row's kept state and learning curve: ``{"state": {"epoch", "sha256"},
    "stage_test_nll": {epochs: ...}}``, for the files that exist."""
    from checkpoints import read_checkpoint

    state = {}
    if (row_dir / STATE_NAME).is_file():
        state["state"] = {"epoch": read_checkpoint(row_dir / STATE_NAME)["epoch"],
                          "sha256": provenance.file_sha256(row_dir / STATE_NAME)}  # fmt: skip
    if (row_dir / STAGES_NAME).is_file():
        state["stage_test_nll"] = json.loads((row_dir / STAGES_NAME).read_text())
    return state


def paired_comparisons(output_dir):
    """``{"row_vs_reference": {"difference", "stderr"}}`` of the test NLL, for every comparison whose two rows
    have their per-image estimates (``log_px.npz``) in ``output_dir``."""
    import numpy as np

    comparisons = {}
    for row, reference in COMPARISONS:
        paths = [pathlib.Path(output_dir) / name / "log_px.npz" for name in (row, reference)]
        if all(path.is_file() for path in paths):
            nll = {name: -np.load(path)["log_px"] for name, path in zip((row, reference), paths, strict=True)}
            comparisons[f"{row}_vs_{reference}"] = provenance.paired_differences(nll, reference)[row]
    return comparisons


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", default=None, help="comma-separated rows (default: all six; with --check, those recorded)"
    )
    parser.add_argument(
        "--stages", type=int, default=None, help="stages of the paper's schedule (default: 3; 5 in results/iwae-long)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="training seed (default: 0, the committed table's; others elsewhere)"
    )
    parser.add_argument("--paper-schedule", action="store_true", help="all 8 stages, 3,280 epochs, as in Burda et al.")
    parser.add_argument("--output-dir", default=str(OUTPUT_DIR), help="where to write (default: results/iwae)")
    parser.add_argument("--if-stale", action="store_true", help="run only the rows whose inputs changed")
    parser.add_argument("--check", action="store_true", help="exit 1 when a row's record does not match its inputs")
    parser.add_argument("--quick", action="store_true", help="one epoch, K = 20 on 100 images: for tests")
    parser.add_argument(
        "--print-fingerprint", action="store_true", help="compute today's fingerprints afresh (no cache); print them"
    )
    add_checkpoint_options(parser)  # --resume (the rows an interrupted run left a checkpoint of), --checkpoint-every
    args = parser.parse_args(argv)
    rows = [row.strip() for row in (args.rows or ",".join(ROWS)).split(",") if row.strip()]
    unknown = [row for row in rows if row not in ROWS]
    if unknown or not rows:
        parser.exit(2, f"{parser.prog}: error: unknown rows {unknown}; expected some of {', '.join(ROWS)}\n")
    if args.paper_schedule and args.stages is not None:
        parser.exit(2, f"{parser.prog}: error: give --stages or --paper-schedule, not both\n")
    long_run = pathlib.Path(args.output_dir).resolve() == LONG_DIR.resolve()
    args.stages = 8 if args.paper_schedule else (LONG_STAGES if long_run else 3) if args.stages is None else args.stages
    if args.stages < 1:
        parser.exit(2, f"{parser.prog}: error: expected --stages >= 1, received {args.stages}\n")
    if args.seed and (args.quick or pathlib.Path(args.output_dir).resolve() == OUTPUT_DIR.resolve()):
        parser.exit(2, f"{parser.prog}: error: --seed {args.seed} needs an --output-dir other than the committed "
                    "table's (seed 0), and no --quick\n")  # fmt: skip
    if args.quick and pathlib.Path(args.output_dir).resolve() == OUTPUT_DIR.resolve():
        parser.exit(2, f"{parser.prog}: error: --quick needs an --output-dir other than the committed results\n")
    evaluation = EVALUATION
    if args.quick:
        args.stages, evaluation = 1, {**EVALUATION, "num_samples": 20, "num_examples": 100}
    output_dir = pathlib.Path(args.output_dir)
    record_path = output_dir / RECORD_NAME
    try:
        table = provenance.read_record(record_path, ["rows"]) or {"rows": {}}
    except provenance.RecordError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if args.check and args.rows is None and table["rows"]:  # a table still growing: the rows it has so far
        rows = [row for row in ROWS if row in table["rows"]]
    if args.print_fingerprint:
        fingerprint.CACHE_DIR = pathlib.Path(tempfile.mkdtemp())  # afresh: nothing read from, or left in, the cache
        print(json.dumps({row: fingerprint_of(row) for row in rows}, sort_keys=True))
        return 0
    try:
        inputs = {row: data_inputs(row, args.stages, evaluation, args.seed) for row in rows}
        stale = {}
        for row in rows:
            recorded = table["rows"].get(row)
            stale[row] = provenance.stale_inputs(recorded, inputs[row]) or (
                [] if (output_dir / row / "vae.keras").is_file() else ["missing model"]
            )
            if not stale[row]:
                stale[row] = provenance.moved_behaviour(recorded, fingerprint_of(row))
    except MNISTError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    todo = provenance.names_to_run(parser, args, rows, stale, record_path, nothing="nothing to train")
    if args.check:
        if table.get("paired", {}) != paired_comparisons(output_dir):
            parser.exit(1, f"{parser.prog}: stale: the paired comparisons do not match the rows' log_px.npz\n")
        return 0
    try:  # before the work: a folder that can take the table and its rows, and the rows' checkpoints
        provenance.check_output_dir(output_dir, [RECORD_NAME])
        checkpoints = {row: row_checkpoint(row, table["rows"].get(row), output_dir, args, evaluation)
                       for row in ([] if args.quick else todo or [])}  # fmt: skip
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    for row in todo or []:
        print(f"{row}: training {args.stages} stages and estimating the test log-likelihood ...", flush=True)
        if args.quick:  # the fingerprint's own run: its numbers are cached
            result = fingerprint_of(row, output_dir)
        else:
            try:
                with provenance.interruptible():
                    result = run_row(row, args.stages, output_dir, 1 if sys.stdout.isatty() else 2, evaluation,
                                     checkpoints[row], args.seed)  # fmt: skip
            except provenance.Interrupted as interrupt:  # the row's checkpoint written: --resume goes on from it
                parser.exit(interrupt.exit_code, f"{parser.prog}: {row}: {checkpoints[row].on_interrupt(interrupt)}\n")
        commit = fingerprint.git_commit()
        table["rows"][row] = {**result, "inputs": inputs[row], "fingerprint": fingerprint_of(row), "commit": commit,
                              "fingerprint_commit": commit, **row_state(output_dir / row)}  # fmt: skip
        table["paper"] = "Burda, Grosse & Salakhutdinov (2015), arXiv:1509.00519, Table 1"
        provenance.write_record(record_path, table)
        print(
            f"{row}: test NLL {result['test_nll']:.2f} nats (paper {result['paper_test_nll']}), "
            f"{result['num_epochs']} epochs, {result['seconds_per_epoch']:.1f} s per epoch",
            flush=True,
        )
    paired = paired_comparisons(output_dir)
    if table.get("paired", {}) != paired:  # derived from the rows' log_px.npz: recomputed whenever they change
        table["paired"] = paired
        provenance.write_record(record_path, table)
        for name, comparison in paired.items():
            print(f"test NLL, {name}: {comparison['difference']:+.2f} +- {comparison['stderr']:.2f} nats (paired)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Faults lose nothing: an output location that cannot take the files is refused before the work, with one
line and a non-zero exit, and every file that was there before is left byte for byte; a save that is killed,
or runs out of disk, leaves the earlier model and history as they were.

Each CLI case runs ``main(argv)`` in this process (as tests/test_cli.py does), with ``MNIST_DIR`` pointing
nowhere: a program that checked its output only after loading the data would name the data instead, so the
check is shown to come first.
"""

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, run_python
from test_cli import assert_one_line_error, run_main_in_process

# The training CLIs, each writing vae.keras and history.json into --output-dir.
TRAINERS = {
    "train": ["listings/vae/train.py"],
    "importance-weighted": ["listings/vae/importance_weighted.py"],
    "avb": ["listings/vae/avb.py"],
    "flows": ["listings/vae/flows.py"],
}
NOWHERE = {"MNIST_DIR": "/nonexistent-mnist"}


def earlier_outputs(folder):
    """A folder holding the files of an earlier run, and their bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"vae.keras": b"earlier model", "history.json": b'{"loss": [1.0]}\n'}
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return files


def assert_untouched(folder, files):
    assert {path.name for path in folder.iterdir()} == set(files), sorted(folder.iterdir())  # no partial left
    for name, content in files.items():
        assert (folder / name).read_bytes() == content, name


def output_fault(fault, tmp_path):
    """``(output dir, fragments of the error)`` for one kind of unusable output location."""
    if fault == "is-a-file":
        (tmp_path / "out").write_text("not a folder")
        return tmp_path / "out", ["is a file", "Expected a folder"]
    if fault == "parent-is-a-file":
        (tmp_path / "parent").write_text("not a folder")
        return tmp_path / "parent" / "out", ["cannot be created", "is a file"]
    if fault == "not-writable":  # no file can be created in /proc, whoever runs the test (root included)
        return pathlib.Path("/proc/vae-output"), ["is not writable", "/proc"]
    raise ValueError(fault)


@pytest.mark.parametrize("fault", ["is-a-file", "parent-is-a-file", "not-writable"])
@pytest.mark.parametrize("trainer", TRAINERS)
def test_a_trainer_refuses_an_unusable_output_folder_before_the_work(trainer, fault, tmp_path, monkeypatch, capsys):
    output_dir, fragments = output_fault(fault, tmp_path)
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    (program,) = TRAINERS[trainer]
    result = run_main_in_process(program, ["--output-dir", output_dir], NOWHERE, monkeypatch, capsys)
    assert_one_line_error(result, str(output_dir), *fragments)
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


def test_a_folder_the_user_cannot_write_is_refused(tmp_path):
    """A read-only folder, as a user without the right to write there sees it: root may write anywhere, so
    as root the check runs as ``nobody`` (``setpriv``); otherwise the folder's own mode stops the user."""
    import shutil
    import tempfile

    folder = pathlib.Path(tempfile.mkdtemp(prefix="vae-read-only-", dir="/tmp"))  # /tmp: every user reaches it
    try:
        folder.chmod(0o555)
        command = [sys.executable, "listings/vae/outputs.py", "--output-dir", folder / "out"]
        if os.geteuid() == 0:
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert_one_line_error(result, f"Output folder {folder / 'out'} is not writable", "Permission denied")
        assert list(folder.iterdir()) == []
    finally:
        shutil.rmtree(folder)


@pytest.mark.parametrize("trainer", TRAINERS)
def test_a_history_that_is_a_folder_is_refused_before_the_model_is_replaced(trainer, tmp_path, monkeypatch, capsys):
    files = earlier_outputs(tmp_path / "out")
    (tmp_path / "out" / "history.json").unlink()
    (tmp_path / "out" / "history.json").mkdir()
    (program,) = TRAINERS[trainer]
    result = run_main_in_process(program, ["--output-dir", tmp_path / "out"], NOWHERE, monkeypatch, capsys)
    assert_one_line_error(result, "history.json", "it is a folder")
    assert (tmp_path / "out" / "vae.keras").read_bytes() == files["vae.keras"]


@pytest.mark.parametrize("fault", ["is-a-file", "parent-is-a-file", "not-writable"])
def test_visualize_refuses_an_unusable_output_folder_before_loading(fault, tmp_path, monkeypatch, capsys):
    output_dir, fragments = output_fault(fault, tmp_path)
    result = run_main_in_process("listings/vae/visualize.py", ["--model", tmp_path / "absent.keras", "--output-dir",
                                 output_dir], NOWHERE, monkeypatch, capsys)  # fmt: skip
    assert_one_line_error(result, str(output_dir), *fragments)


def test_log_likelihood_refuses_an_output_file_it_cannot_write_before_loading(tmp_path, monkeypatch, capsys):
    (tmp_path / "parent").write_text("not a folder")
    result = run_main_in_process("listings/vae/log_likelihood.py", ["--model", tmp_path / "absent.keras", "--output",
                                 tmp_path / "parent" / "result.json"], NOWHERE, monkeypatch, capsys)  # fmt: skip
    assert_one_line_error(result, "parent is a file", "Expected a folder")


# Not ours: nothing, the first bytes of a zip cut short, and bytes that are no format at all.
CORRUPT = {
    "empty": b"",
    "truncated": b"PK\x03\x04 truncated zip",
    "random": bytes((97 * i + 13) % 256 for i in range(256)),
}


@pytest.mark.parametrize("content", CORRUPT.values(), ids=CORRUPT.keys())
def test_visualize_says_it_cannot_load_a_corrupt_model_file(content, tmp_path, monkeypatch, capsys):
    (tmp_path / "vae.keras").write_bytes(content)
    result = run_main_in_process("listings/vae/visualize.py", ["--model", tmp_path / "vae.keras", "--output-dir",
                                 tmp_path / "figures"], NOWHERE, monkeypatch, capsys)  # fmt: skip
    assert_one_line_error(result, "Could not load", "vae.keras")
    assert not (tmp_path / "figures").exists()


def test_visualize_loads_every_model_the_site_trains_and_refuses_the_composed_ones_clearly(tmp_path):
    """A composed model (here a planar flow) loads (visualize.py registers every listing's layers), and is
    refused in one line; as a real process, so that only what visualize.py imports is registered."""
    from compose import compose_vae

    compose_vae(784, 2, "planar", "monte_carlo", hidden_units=4, hidden_layers=1).save(tmp_path / "flow.keras")
    result = run_python(["listings/vae/visualize.py", "--model", tmp_path / "flow.keras", "--output-dir",
                         tmp_path / "figures"], env=NOWHERE)  # fmt: skip
    assert_one_line_error(result, "Expected a model of train.py", "vae_planar_monte_carlo")
    assert not (tmp_path / "figures").exists()


# ---------------------------------------------------------------------------
# A save that fails half way
# ---------------------------------------------------------------------------


def tiny_vae():
    import keras

    from compose import compose_vae

    keras.utils.set_random_seed(0)
    return compose_vae(6, 2, "gaussian", "closed_form", hidden_units=4, hidden_layers=1)


def test_a_full_disk_while_saving_leaves_the_earlier_run_whole(tmp_path, monkeypatch):
    from outputs import save_run

    files = earlier_outputs(tmp_path / "out")
    vae = tiny_vae()

    def save_until_the_disk_is_full(path, *args, **kwargs):
        pathlib.Path(path).write_bytes(b"half a model")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(vae, "save", save_until_the_disk_is_full)
    with pytest.raises(OSError, match="No space left"):
        save_run(tmp_path / "out", vae, {"loss": [2.0]})
    assert_untouched(tmp_path / "out", files)


def test_a_history_that_fails_to_write_leaves_the_earlier_model_too(tmp_path, monkeypatch):
    """The model is written in full first, but not renamed into place until the history is written as well."""
    from outputs import save_run

    files = earlier_outputs(tmp_path / "out")
    write_text = pathlib.Path.write_text

    def full_disk_for_the_history(path, *args, **kwargs):
        if "history" in path.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(path, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", full_disk_for_the_history)
    with pytest.raises(OSError, match="No space left"):
        save_run(tmp_path / "out", tiny_vae(), {"loss": [2.0]})
    assert_untouched(tmp_path / "out", files)


def test_a_kill_while_saving_leaves_the_earlier_run_whole(tmp_path):
    """SIGKILL half way through writing the model: no handler runs, and the earlier files must still be whole."""
    files = earlier_outputs(tmp_path / "out")
    script = f"""
import os, pathlib, signal, sys
sys.path.insert(0, {str(REPO_ROOT / "listings" / "vae")!r})
from compose import compose_vae
from outputs import save_run
vae = compose_vae(6, 2, "gaussian", "closed_form", hidden_units=4, hidden_layers=1)
def save_then_die(path, *args, **kwargs):
    pathlib.Path(path).write_bytes(b"half a model")
    os.kill(os.getpid(), signal.SIGKILL)
vae.save = save_then_die
save_run({str(tmp_path / "out")!r}, vae, {{"loss": [2.0]}})
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    partial = tmp_path / "out" / ".vae.partial.keras"
    assert partial.read_bytes() == b"half a model"  # the kill came mid-save: only the partial file was hit
    partial.unlink()
    assert_untouched(tmp_path / "out", files)


def test_a_saved_run_reloads_and_holds_its_history(tmp_path):
    import keras
    import numpy as np

    from outputs import save_run

    earlier_outputs(tmp_path / "out")
    vae = tiny_vae()
    save_run(tmp_path / "out", vae, {"loss": [np.float32(2.5)], "val_loss": [3.0]})
    assert json.loads((tmp_path / "out" / "history.json").read_text()) == {"loss": [2.5], "val_loss": [3.0]}
    reloaded = keras.saving.load_model(tmp_path / "out" / "vae.keras", safe_mode=True)
    for saved, original in zip(reloaded.get_weights(), vae.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, original)
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["history.json", "vae.keras"]


# ---------------------------------------------------------------------------
# Records and results read back
# ---------------------------------------------------------------------------

# JSON a script cannot use, and the words its one-line error must hold.
BAD_JSON = {
    "empty": (b"", "is empty"),
    "corrupt": (b'{"loss": [1.0,', "is not valid JSON"),
    "not-utf8": (b'{"loss": "\xff\xfe"}', "is not UTF-8"),
    "a-list": (b"[1, 2, 3]", "holds a JSON list"),
    "wrong-keys": (b'{"something": "else"}', "has no"),
}


def bad_json_command(script, tmp_path):
    """``(program, args, the file to corrupt)``: each script reading back a record or a results file."""
    if script == "plot-benchmark":
        return (
            "scripts/plot_benchmark.py",
            ["--results", tmp_path / "benchmark.json", "--output-dir", tmp_path / "figures"],
            tmp_path / "benchmark.json",
        )
    if script == "plot-iwae":
        return (
            "scripts/plot_iwae.py",
            ["--experiments", tmp_path / "experiments.json", "--output-dir", tmp_path / "figures"],
            tmp_path / "experiments.json",
        )
    if script == "benchmark-check":
        return "scripts/benchmark.py", ["--check", "--output", tmp_path / "benchmark.json"], tmp_path / "benchmark.json"
    if script == "iwae-table-check":
        return "scripts/train_iwae_table.py", ["--check", "--output-dir", tmp_path], tmp_path / "table.json"
    if script == "main-post-check":
        return "scripts/train_main_post.py", ["--check", "--output-dir", tmp_path], tmp_path / "main_post.json"
    if script == "avb-experiments-check":
        return (
            "scripts/avb_experiments.py",
            ["--check", "--parts", "toy", "--output-dir", tmp_path],
            tmp_path / "toy.json",
        )
    raise ValueError(script)


READERS = [
    "plot-benchmark",
    "plot-iwae",
    "benchmark-check",
    "iwae-table-check",
    "main-post-check",
    "avb-experiments-check",
]


@pytest.mark.parametrize("kind", BAD_JSON)
@pytest.mark.parametrize("script", READERS)
def test_a_record_that_cannot_be_read_gives_one_line(script, kind, tmp_path, monkeypatch, capsys):
    from conftest import MNIST_SUBSET_DIR

    program, args, path = bad_json_command(script, tmp_path)
    content, fragment = BAD_JSON[kind]
    if kind == "wrong-keys" and script in ("main-post-check", "avb-experiments-check"):
        fragment = "stale"  # a record without the keys these check is stale, not unreadable: rerun, in one line
    path.write_bytes(content)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = run_main_in_process(program, args, {"MNIST_DIR": str(MNIST_SUBSET_DIR)}, monkeypatch, capsys)
    assert_one_line_error(result, fragment, *([] if fragment == "stale" else [path.name]))
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------------------
# Values that are not numbers, and counts the data does not hold
# ---------------------------------------------------------------------------

VALUES = {
    "learning-rate-nan": ("listings/vae/train.py", ["--learning-rate", "nan"], ["learning_rate", "finite number > 0"]),
    "learning-rate-negative": ("listings/vae/train.py", ["--learning-rate", "-1"], ["learning_rate", "> 0", "-1"]),
    "learning-rate-inf": ("listings/vae/train.py", ["--learning-rate", "inf"], ["learning_rate", "finite"]),
    "logit-nan": ("listings/vae/likelihoods.py", ["--logit", "nan"], ["`logit`", "finite", "nan"]),
    "x-inf": ("listings/vae/likelihoods.py", ["--x", "0.5", "inf"], ["`x`", "finite", "inf"]),
    "log-scale-nan": ("listings/vae/likelihoods.py", ["--log-scale", "nan"], ["`log_scale`", "finite"]),
    "subset-negative": ("scripts/make_mnist_subset.py", ["--num-train", "-5"], ["num_train", "positive integer"]),
    "subset-more-than-the-data": (
        "scripts/make_mnist_subset.py",
        ["--num-train", "5000"],
        ["num_train", "at most 1000"],
    ),
    "subset-over-the-committed": (
        "scripts/make_mnist_subset.py",
        ["--num-train", "5", "--output", REPO_ROOT / "tests" / "data" / "mnist"],
        ["committed test subset"],
    ),
}


@pytest.mark.parametrize("case", VALUES)
def test_a_value_out_of_range_is_refused_and_nothing_is_written(case, tmp_path, monkeypatch, capsys):
    from conftest import MNIST_SUBSET_DIR

    program, args, fragments = VALUES[case]
    if program.endswith("train.py"):
        args = [*args, "--output-dir", tmp_path / "out"]
        earlier = earlier_outputs(tmp_path / "out")
    elif "--output" not in args and program.endswith("make_mnist_subset.py"):
        args = [*args, "--output", tmp_path / "out"]
        earlier = earlier_outputs(tmp_path / "out")
    else:
        earlier = None
    committed = {p: p.read_bytes() for p in (REPO_ROOT / "tests" / "data" / "mnist").iterdir()}
    result = run_main_in_process(program, args, {"MNIST_DIR": str(MNIST_SUBSET_DIR)}, monkeypatch, capsys)
    assert_one_line_error(result, *fragments)
    if earlier is not None:
        assert_untouched(tmp_path / "out", earlier)
    assert {p: p.read_bytes() for p in (REPO_ROOT / "tests" / "data" / "mnist").iterdir()} == committed


@pytest.mark.parametrize("script", ["benchmark", "iwae-table"])
def test_a_record_script_refuses_an_unusable_output_before_the_work(script, tmp_path, monkeypatch, capsys):
    from conftest import MNIST_SUBSET_DIR

    (tmp_path / "parent").write_text("not a folder")
    program, args = {
        "benchmark": ("scripts/benchmark.py", ["--output", tmp_path / "parent" / "benchmark.json"]),
        "iwae-table": ("scripts/train_iwae_table.py", ["--output-dir", tmp_path / "parent", "--rows", "vae-k1"]),
    }[script]
    result = run_main_in_process(program, args, {"MNIST_DIR": str(MNIST_SUBSET_DIR)}, monkeypatch, capsys)
    assert_one_line_error(result, "parent is a file")
    assert (tmp_path / "parent").read_text() == "not a folder"


# ---------------------------------------------------------------------------
# Interrupts
# ---------------------------------------------------------------------------


# An interrupted training CLI (checkpoint written, earlier outputs byte for byte, --resume): test_checkpoints.py.


# The record scripts: (program, the function that does the work, arguments given an output folder).
SCRIPTS_AT_WORK = {
    "train-main-post": ("scripts/train_main_post.py", "run", ["--output-dir", "{out}"]),
    "iwae-table": ("scripts/train_iwae_table.py", "run_row", ["--output-dir", "{out}", "--rows", "vae-k1"]),
    "mc-samples": ("scripts/mc_samples_experiments.py", "run_part", ["--output", "{out}/e.json", "--parts", "cost"]),
    "flow-experiments": ("scripts/flow_experiments.py", "run_part", ["--output-dir", "{out}", "--parts", "cost"]),
}


@pytest.mark.parametrize("script", SCRIPTS_AT_WORK)
def test_a_record_script_interrupted_at_work_ends_with_one_line(script, tmp_path, monkeypatch, capsys):
    """SIGINT while a script trains or measures: exit 130, one line saying what was not written, nothing half
    written (the work itself is replaced by a signal to this process)."""
    import importlib

    from conftest import MNIST_SUBSET_DIR

    program, work, args = SCRIPTS_AT_WORK[script]
    module = importlib.import_module(pathlib.Path(program).stem)

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(module, work, interrupted)
    args = [arg.replace("{out}", str(tmp_path / "out")) for arg in args]
    result = run_main_in_process(program, args, {"MNIST_DIR": str(MNIST_SUBSET_DIR)}, monkeypatch, capsys)
    assert result.returncode == 130
    if script == "iwae-table":  # a row checkpoints its epochs: none had ended
        assert_one_line_error(result, "vae-k1: interrupted by SIGINT in epoch 1, before the first checkpoint")
    else:
        assert_one_line_error(
            result, "interrupted by SIGINT while", "not written", "every file written before is whole"
        )
    assert [path for path in tmp_path.rglob("*") if path.is_file()] == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interruptible_raises_inside_the_block_and_restores_the_handlers_after(signum):
    from outputs import Interrupted, interruptible

    before = signal.getsignal(signum)
    with pytest.raises(Interrupted) as caught, interruptible():
        os.kill(os.getpid(), signum)  # the handler runs before the next line of Python
        pytest.fail("no Interrupted")
    assert caught.value.exit_code == 128 + signum and caught.value.signal_name == signal.Signals(signum).name
    assert signal.getsignal(signum) is before


# ---------------------------------------------------------------------------
# Trained models a script reads, corrupt: refused in one line before the work
# ---------------------------------------------------------------------------


def test_mc_samples_experiments_refuses_a_corrupt_row_before_the_work(tmp_path, monkeypatch, capsys):
    import shutil

    from conftest import MNIST_SUBSET_DIR

    for row in ("vae-k1", "vae-k50", "iwae-k50"):
        (tmp_path / row).mkdir()
        shutil.copy(REPO_ROOT / "results" / "iwae" / row / "vae.keras", tmp_path / row / "vae.keras")
    (tmp_path / "iwae-k50" / "vae.keras").write_bytes(CORRUPT["truncated"])
    args = ["--table-dir", tmp_path, "--output", tmp_path / "out" / "experiments.json", "--parts", "bounds"]
    result = run_main_in_process("scripts/mc_samples_experiments.py", args, {"MNIST_DIR": str(MNIST_SUBSET_DIR)},
                                 monkeypatch, capsys)  # fmt: skip
    assert_one_line_error(result, "Could not load", "iwae-k50", "a row trained by train_iwae_table.py")
    assert not (tmp_path / "out").exists()


def test_the_composition_experiment_loads_its_reference_model_before_training(tmp_path, monkeypatch):
    import composition_experiments
    import outputs

    (tmp_path / "reference.keras").write_bytes(CORRUPT["random"])
    monkeypatch.setattr(composition_experiments, "REFERENCE_MODEL", tmp_path / "reference.keras")
    import likelihood_experiments

    def data_first(settings):
        raise AssertionError("the data were loaded, and the model would be trained, before the reference model")

    monkeypatch.setattr(likelihood_experiments, "dequantised_mnist", data_first)
    settings = {**composition_experiments.SETTINGS["iaf_iwae_cb"], "num_test": 100}
    with pytest.raises(outputs.ModelFileError, match="Could not load .*reference.keras as the likelihoods post"):
        composition_experiments.iaf_iwae_cb(settings, tmp_path)


def test_files_written_together_take_paths_as_strings_too(tmp_path):
    from outputs import write_atomically, write_together

    write_atomically(str(tmp_path / "new" / "a.txt"), lambda partial: partial.write_text("a"))
    write_together({str(tmp_path / "b.txt"): lambda partial: partial.write_text("b"), tmp_path / "c.txt": lambda
                    partial: partial.write_text("c")})  # fmt: skip
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.txt", "b.txt", "c.txt"]

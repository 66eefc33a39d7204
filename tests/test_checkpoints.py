"""Checkpoints: a run stopped by a signal and resumed ends where an uninterrupted run ends, and a checkpoint
that cannot continue this run is refused with one line, before the work, leaving every file as it was.

The resumed run is compared with the uninterrupted one weight by weight, within an absolute tolerance of 1e-6
(measured on this machine: identical, on TensorFlow, JAX and PyTorch): the checkpoint restores the weights,
Adam's moments and step count, the epochs done, and the data stream's position (the batch sequence's epoch
and Python's ``random``, with which ``fit`` orders a PyDataset's batches), so the resumed run repeats the
same arithmetic.
"""

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO_ROOT, run_python
from test_cli import TENSORFLOW_BANNER, assert_one_line_error, run_main_in_process
from test_faults import TRAINERS, assert_untouched, earlier_outputs

TOLERANCE = 1e-6  # absolute, on every weight
NOWHERE = {"MNIST_DIR": "/nonexistent-mnist"}  # a check that came after loading the data would name it


def interrupt_at(epoch, signum=signal.SIGINT):
    """A callback that signals this process as ``epoch`` (0-based) begins, as Ctrl-C would."""
    import keras

    class SignalAt(keras.callbacks.Callback):
        def on_epoch_begin(self, index, logs=None):
            if index == epoch:
                os.kill(os.getpid(), signum)

    return SignalAt()


def train(kind, checkpoint=None, callbacks=None):
    """A tiny run of ``kind`` ("fit_vae": the composed VAE; "train_vae": the first post's) for three epochs."""
    import keras

    rng = np.random.default_rng(0)
    if kind == "fit_vae":
        from compose import compose_vae
        from training import fit_vae

        x = rng.random((120, 12), dtype="float32")
        keras.utils.set_random_seed(0)
        vae = compose_vae(12, 2, hidden_units=8)
        validation_x = (x > 0.5).astype("float32")
        # Six batches an epoch: 720 orders, so that an order not restored is (almost surely) another order.
        history = fit_vae(vae, x, epochs=3, batch_size=20, binarize=True, seed=0, verbose=0, validation_x=validation_x,
                          checkpoint=checkpoint, callbacks=callbacks)  # fmt: skip
        return vae, history
    from train import train_vae

    x = rng.random((120, 784), dtype="float32")
    torch = keras.backend.backend() == "torch"  # one step per call, without XLA
    vae, _, _, history = train_vae(x, x[:40], num_epochs=3, batch_size=40, intermediate_dim=8, verbose=0,
                                   steps_per_execution=1 if torch else 2, jit_compile=not torch,
                                   checkpoint=checkpoint, callbacks=callbacks)  # fmt: skip
    return vae, history


@pytest.mark.parametrize("kind", ["fit_vae", "train_vae"])
def test_a_run_interrupted_and_resumed_ends_with_the_weights_of_an_uninterrupted_run(kind, tmp_path):
    from checkpoints import Checkpoint
    from outputs import Interrupted, interruptible

    straight, straight_history = train(kind)
    path, settings = tmp_path / "checkpoint.npz", {"kind": kind}
    checkpoint = Checkpoint(path, settings)
    with pytest.raises(Interrupted) as caught, interruptible():
        train(kind, checkpoint, [interrupt_at(1)])  # SIGINT as the second epoch begins
    message = checkpoint.on_interrupt(caught.value)
    assert message == (f"interrupted by SIGINT in epoch 2; checkpoint of epoch 1 saved to {path}: "
                       "run again with --resume to go on")  # fmt: skip
    resumed_checkpoint = Checkpoint(path, settings, resume=True)
    assert resumed_checkpoint.first_epoch == 1
    resumed, resumed_history = train(kind, resumed_checkpoint)
    for name, a, b in zip(
        [w.path for w in straight.weights], straight.get_weights(), resumed.get_weights(), strict=True
    ):
        np.testing.assert_allclose(b, a, rtol=0, atol=TOLERANCE, err_msg=name)
    assert resumed_history.keys() == straight_history.keys() and len(resumed_history["loss"]) == 3
    for key, values in straight_history.items():
        np.testing.assert_allclose(resumed_history[key], values, rtol=1e-6, err_msg=key)


def test_a_checkpoint_that_misses_the_data_stream_would_not_resume_exactly(tmp_path, monkeypatch):
    """The guard of the test above: restore everything but the position of Keras's batch order and the
    resumed run leaves the uninterrupted one (so the test can fail)."""
    import checkpoints
    from checkpoints import Checkpoint
    from outputs import Interrupted, interruptible

    straight, _ = train("fit_vae")
    checkpoint = Checkpoint(tmp_path / "c.npz", {})
    with pytest.raises(Interrupted), interruptible():
        train("fit_vae", checkpoint, [interrupt_at(1)])
    checkpoint.write()
    monkeypatch.setattr(checkpoints.random, "setstate", lambda state: None)
    resumed, _ = train("fit_vae", Checkpoint(tmp_path / "c.npz", {}, resume=True))
    assert (
        max(np.abs(a - b).max() for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True)) > TOLERANCE
    )


def test_an_interrupt_before_the_first_epoch_ends_writes_nothing(tmp_path):
    from checkpoints import Checkpoint
    from outputs import Interrupted, interruptible

    checkpoint = Checkpoint(tmp_path / "checkpoint.npz", {})
    with pytest.raises(Interrupted) as caught, interruptible():
        train("fit_vae", checkpoint, [interrupt_at(0, signal.SIGTERM)])
    assert checkpoint.on_interrupt(caught.value) == (
        f"interrupted by SIGTERM in epoch 1, before the first checkpoint; nothing written to {tmp_path}"
    )
    assert list(tmp_path.iterdir()) == []


def test_every_sets_how_often_the_checkpoint_is_written(tmp_path, monkeypatch):
    import checkpoints
    from checkpoints import Checkpoint

    written = []

    def write_checkpoint(path, settings, snapshot):
        written.append(snapshot["epoch"])

    monkeypatch.setattr(checkpoints, "write_checkpoint", write_checkpoint)
    checkpoint = Checkpoint(tmp_path / "checkpoint.npz", {}, every=2)
    train("fit_vae", checkpoint)
    assert written == [2] and checkpoint.epoch == 3
    assert checkpoint.write() == 3 and written == [2, 3]  # an interrupt now would write epoch 3


def test_a_checkpoint_of_other_settings_is_refused_naming_them(tmp_path):
    from checkpoints import Checkpoint, CheckpointError

    a_checkpoint(tmp_path / "c.npz", {"seed": 0, "epochs": 3})
    with pytest.raises(CheckpointError, match=r"other settings \(seed: 0 there, 1 here\)"):
        Checkpoint(tmp_path / "c.npz", {"seed": 1, "epochs": 3}, resume=True)


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    from checkpoints import Checkpoint, CheckpointError

    checkpoint = Checkpoint(tmp_path / "checkpoint.npz", {})
    train("train_vae", checkpoint)
    checkpoint.write()
    with pytest.raises(CheckpointError, match="holds the weights of another model"):
        train("fit_vae", Checkpoint(tmp_path / "checkpoint.npz", {}, resume=True))


# ---------------------------------------------------------------------------
# The training CLIs: a checkpoint that cannot continue the run is refused before the work
# ---------------------------------------------------------------------------


def a_checkpoint(path, settings):
    """A readable checkpoint file with ``settings`` (its weights are never reached: the settings differ)."""
    from checkpoints import write_checkpoint

    snapshot = {"epoch": 1, "history": {"loss": [1.0]}, "streams": {}, "python_random": [3, [0] * 625, None],
                "weights": [np.zeros(2, "float32")], "optimizer": [np.zeros(1, "int64")]}  # fmt: skip
    write_checkpoint(path, settings, snapshot)
    return path.read_bytes()


CHECKPOINT_FAULTS = {
    # (arguments, what the checkpoint file holds: None, bytes, or "other-settings"; fragments of the error)
    "resume-without-checkpoint": (["--resume"], None, ["No checkpoint to resume from", "checkpoint.npz"]),
    "fresh-run-over-checkpoint": ([], "other-settings", ["holds the checkpoint of an unfinished run", "--resume"]),
    "empty": (["--resume"], b"", ["Could not read", "as a checkpoint"]),
    "random-bytes": (["--resume"], bytes(range(256)) * 4, ["Could not read", "as a checkpoint"]),
    "truncated": (["--resume"], "truncated", ["Could not read", "as a checkpoint"]),
    "other-settings": (["--resume"], "other-settings", ["is of a run with other settings", "12345 there"]),
    "checkpoint-every-0": (["--checkpoint-every", "0"], None, ["--checkpoint-every", "integer >= 1", "0"]),
}


@pytest.mark.parametrize("fault", CHECKPOINT_FAULTS)
@pytest.mark.parametrize("trainer", TRAINERS)
def test_a_trainer_refuses_a_checkpoint_it_cannot_continue(trainer, fault, tmp_path, monkeypatch, capsys):
    args, content, fragments = CHECKPOINT_FAULTS[fault]
    files = earlier_outputs(tmp_path / "out")
    path = tmp_path / "out" / "checkpoint.npz"
    if content == "other-settings":
        files["checkpoint.npz"] = a_checkpoint(path, {"seed": 12345})
    elif content == "truncated":
        files["checkpoint.npz"] = a_checkpoint(path, {"seed": 12345})[:200]
        path.write_bytes(files["checkpoint.npz"])
    elif content is not None:
        path.write_bytes(content)
        files["checkpoint.npz"] = content
    (program,) = TRAINERS[trainer]
    result = run_main_in_process(program, [*args, "--output-dir", tmp_path / "out"], NOWHERE, monkeypatch, capsys)
    assert_one_line_error(result, *fragments)
    assert_untouched(tmp_path / "out", files)


@pytest.mark.parametrize("fault", ["fresh-run-over-checkpoint", "other-settings", "checkpoint-every-0"])
def test_the_iwae_table_refuses_a_row_checkpoint_it_cannot_continue(fault, tmp_path, monkeypatch, capsys):
    """The table's rows checkpoint as the training CLIs do; ``--resume`` goes on with the rows that have one."""
    from conftest import MNIST_SUBSET_DIR

    args, content, fragments = CHECKPOINT_FAULTS[fault]
    files = {}
    if content == "other-settings":
        (tmp_path / "out" / "vae-k1").mkdir(parents=True)
        files["checkpoint.npz"] = a_checkpoint(tmp_path / "out" / "vae-k1" / "checkpoint.npz", {"seed": 12345})
    args = [*args, "--rows", "vae-k1", "--output-dir", tmp_path / "out"]
    env = {"MNIST_DIR": str(MNIST_SUBSET_DIR)}
    result = run_main_in_process("scripts/train_iwae_table.py", args, env, monkeypatch, capsys)
    assert_one_line_error(result, *fragments)
    if files:
        assert_untouched(tmp_path / "out" / "vae-k1", files)


def test_the_checkpoint_cli_describes_a_checkpoint(tmp_path):
    a_checkpoint(tmp_path / "c.npz", {"seed": 0})
    result = run_python([REPO_ROOT / "listings" / "vae" / "checkpoints.py", tmp_path / "c.npz"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "after epoch 1, 2 weights, 1 optimiser variables" in result.stdout


# ---------------------------------------------------------------------------
# The whole path: a real signal to train.py, then --resume
# ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_train_py_interrupted_then_resumed_saves_the_uninterrupted_model(signum, tmp_path):
    """Ctrl-C or a kill while train.py trains: exit 130 or 143 with one line naming the checkpoint, the
    earlier model and history byte for byte; ``--resume`` then ends with the weights of an uninterrupted run."""
    import keras

    from conftest import MNIST_SUBSET_DIR

    settings = ["--num-epochs", "6", "--intermediate-dim", "32", "--mc-samples", "20", "--quiet"]
    env = {"MNIST_DIR": str(MNIST_SUBSET_DIR)}
    files = earlier_outputs(tmp_path / "out")
    process = subprocess.Popen(
        [sys.executable, "-u", "listings/vae/train.py", *settings, "--output-dir", tmp_path / "out"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **env, "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    checkpoint = tmp_path / "out" / "checkpoint.npz"
    while not checkpoint.exists() and process.poll() is None:  # until the first epoch has ended
        time.sleep(0.02)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signum, stderr[-2000:]
    lines = [line for line in stderr.strip().splitlines() if not TENSORFLOW_BANNER.match(line)]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert f"interrupted by {signal.Signals(signum).name} in epoch" in lines[0]
    assert f"saved to {checkpoint}: run again with --resume" in lines[0]
    assert_untouched(tmp_path / "out", {**files, "checkpoint.npz": checkpoint.read_bytes()})

    resumed = run_python(["listings/vae/train.py", *settings, "--resume", "--output-dir", tmp_path / "out"], env)
    straight = run_python(["listings/vae/train.py", *settings, "--output-dir", tmp_path / "straight"], env)
    assert resumed.returncode == 0 and straight.returncode == 0, resumed.stderr[-2000:] + straight.stderr[-2000:]
    assert not checkpoint.exists()  # the run is complete
    import variational_autoencoder  # noqa: F401 (registers the layers)

    a, b = (keras.saving.load_model(tmp_path / d / "vae.keras", safe_mode=True) for d in ("straight", "out"))
    for name, u, v in zip([w.path for w in a.weights], a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(v, u, rtol=0, atol=TOLERANCE, err_msg=name)
    histories = [pathlib.Path(tmp_path / d / "history.json").read_text() for d in ("straight", "out")]
    assert histories[0] == histories[1]


@pytest.mark.slow
def test_the_iwae_table_adds_stages_to_a_row_where_a_shorter_run_stands(tmp_path):
    """A row keeps its state after its last epoch; a run with more ``--stages`` goes on from it and ends where
    a run that trained every stage at once ends, bit for bit: the same state (weights, Adam's moments, the
    data streams), losses and stage-end scores. A run with fewer stages than the state holds is refused."""
    import json

    from conftest import MNIST_SUBSET_DIR

    env = {"MNIST_DIR": str(MNIST_SUBSET_DIR)}

    def table(stages, folder):
        args = ["scripts/train_iwae_table.py", "--rows", "vae-k1", "--stages", stages, "--output-dir", folder]
        return run_python(args, env=env)

    for stages in (2, 3):  # (one stage trains at a constant rate, not on the schedule, and keeps no state)
        result = table(stages, tmp_path / "grown")
        assert result.returncode == 0, result.stderr[-2000:]
    result = table(3, tmp_path / "at-once")
    assert result.returncode == 0, result.stderr[-2000:]
    grown, at_once = tmp_path / "grown" / "vae-k1", tmp_path / "at-once" / "vae-k1"
    for name in ("checkpoint.npz", "history.json", "stages.json"):
        assert (grown / name).read_bytes() == (at_once / name).read_bytes(), name
    assert sorted(json.loads((grown / "stages.json").read_text()), key=int) == ["1", "4", "13"]  # each stage's end
    row = json.loads((tmp_path / "grown" / "table.json").read_text())["rows"]["vae-k1"]
    assert row["num_epochs"] == 13 and row["resumed"].startswith("after epoch 4;")
    assert row["state"]["epoch"] == 13 and row["stage_test_nll"] == json.loads((grown / "stages.json").read_text())

    files = {path.name: path.read_bytes() for path in grown.iterdir()}
    result = table(2, tmp_path / "grown")
    assert_one_line_error(result, "holds 13 epochs", "Expected --stages 3 or more")
    assert_untouched(grown, files)

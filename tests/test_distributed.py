"""Data parallelism (listings/vae/distributed.py): what the page "Training on more devices" says it proves.

* One step on two CPU devices equals one step on one device with the whole batch: the largest difference
  of the updates is at most 1e-5 of the largest update (float32 sums in another order; measured on this
  machine: about 1e-7), while one step on half the batch (what a device would take without the all-reduce)
  differs by more than 1e-2 of it.
* Two processes on the loopback interface finish with bitwise-identical weights (SHA-256 of every weight),
  the ones process 0 saves; a run of two processes interrupted with Ctrl-C and resumed ends with the weights
  of the uninterrupted one (absolute 1e-6, as in test_checkpoints); a run stopped on one device goes on, from
  its checkpoint, on two.

The runs are subprocesses: the number of CPU devices is fixed when JAX starts, and the test process has
started it with one. They run the IWAE model on the committed 1,000-image subset of MNIST.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import LISTINGS_DIR, MNIST_SUBSET_DIR, REPO_ROOT, run_python

JAX = {"KERAS_BACKEND": "jax", "MNIST_DIR": str(MNIST_SUBSET_DIR)}
IWAE = "listings/vae/importance_weighted.py"
UPDATE_TOLERANCE = 1e-5  # of the largest update
WEIGHT_TOLERANCE = 1e-6  # absolute, on every weight

ONE_STEP = """
import json, sys
sys.path.insert(0, {listings!r})
import distributed
distributed.start_data_parallel(2)
import keras
from compose import compose_vae
from training import fit_vae

two_devices = keras.distribution.distribution()
keras.distribution.set_distribution(None)
x = __import__("numpy").random.default_rng(0).random((64, 16), dtype="float32")

def step(objective, x, distribution=None):
    keras.utils.set_random_seed(0)
    with distribution.scope() if distribution else __import__("contextlib").nullcontext():
        vae = compose_vae(16, 2, divergence="monte_carlo", objective=objective, hidden_units=8)
        before = vae.get_weights()
        fit_vae(vae, x, "bernoulli", objective, epochs=1, batch_size=len(x), mc_samples=3, binarize=True, seed=0,
                verbose=0, optimizer=keras.optimizers.SGD(0.1))
    devices = len(vae.trainable_variables[0].value.sharding.device_set)
    return [w.tolist() for w in before], [w.tolist() for w in vae.get_weights()], devices

print(json.dumps({{objective: {{"one": step(objective, x), "two": step(objective, x, two_devices),
                                "half": step(objective, x[:32])}} for objective in ("elbo", "iwae")}}))
"""


def load(path):
    import compose  # noqa: F401 (registers the layers a composed model is made of)
    from outputs import load_saved_model

    return load_saved_model(path)


def weights_of(path):
    return load(path).get_weights()


def digests(stdout):
    """The weights' digest each process printed, by process index."""
    found = {}
    for line in stdout.splitlines():
        match = re.search(r"weights sha256 ([0-9a-f]{64})", line)
        if match:
            index = re.match(r"\[process (\d+)\]", line)
            found[int(index.group(1)) if index else 0] = match.group(1)
    return found


@pytest.fixture(scope="module")
def one_step():
    result = run_python(["-c", ONE_STEP.format(listings=str(LISTINGS_DIR))], env=JAX, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_one_step_on_two_devices_equals_one_step_on_one_device_with_the_whole_batch(objective, one_step):
    runs = one_step[objective]
    assert [runs[name][2] for name in ("one", "two", "half")] == [1, 2, 1]  # the variables on 2 devices
    for name in ("two", "half"):  # the same initial weights everywhere
        for a, b in zip(runs["one"][0], runs[name][0], strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    def update(name):
        return [np.asarray(after) - np.asarray(before) for before, after in zip(*runs[name][:2], strict=True)]

    one, two, half = update("one"), update("two"), update("half")
    largest = max(np.abs(u).max() for u in one)
    assert largest > 1e-3  # the step moved the weights
    assert max(np.abs(a - b).max() for a, b in zip(one, two, strict=True)) <= UPDATE_TOLERANCE * largest
    assert max(np.abs(a - b).max() for a, b in zip(one, half, strict=True)) > 1e-2 * largest


def iwae_command(output_dir, *options):
    return [IWAE, "--stages", "2", "--quiet", "--output-dir", output_dir, *options]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Four epochs (two stages) of the IWAE CLI as two processes, uninterrupted."""
    output_dir = tmp_path_factory.mktemp("two-processes")
    result = run_python(iwae_command(output_dir, "--processes", "2"), env=JAX, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir, result


@pytest.mark.slow
def test_two_processes_finish_with_identical_weights_and_process_0_saves_them(two_processes):
    output_dir, result = two_processes
    found = digests(result.stdout)
    assert sorted(found) == [0, 1], result.stdout
    assert found[0] == found[1]
    import distributed

    assert distributed.weights_digest(load(output_dir / "vae.keras")) == found[0]
    assert sorted(path.name for path in output_dir.iterdir()) == ["history.json", "vae.keras"]  # no checkpoints
    assert len(json.loads((output_dir / "history.json").read_text())["loss"]) == 4


def interrupt_after_first_epoch(command, output_dir, checkpoints):
    """Start ``command``, send SIGINT once every checkpoint in ``checkpoints`` exists; the CompletedProcess."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **JAX}
    process = subprocess.Popen([sys.executable, *map(str, command)], cwd=REPO_ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 240
    while not all((output_dir / name).exists() for name in checkpoints):
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.slow
def test_two_processes_interrupted_and_resumed_end_with_the_uninterrupted_weights(two_processes, tmp_path):
    straight_dir, _ = two_processes
    checkpoints = ["checkpoint.npz", "checkpoint.process-1.npz"]
    stopped = interrupt_after_first_epoch(iwae_command(tmp_path, "--processes", "2"), tmp_path, checkpoints)
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr[-3000:]
    assert "run again with --resume" in stopped.stderr
    assert all((tmp_path / name).exists() for name in checkpoints) and not (tmp_path / "vae.keras").exists()
    resumed = run_python(iwae_command(tmp_path, "--processes", "2", "--resume"), env=JAX, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for a, b in zip(weights_of(straight_dir / "vae.keras"), weights_of(tmp_path / "vae.keras"), strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=WEIGHT_TOLERANCE)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["history.json", "vae.keras"]


@pytest.mark.slow
def test_a_run_stopped_on_one_device_goes_on_on_two(tmp_path):
    """Alone, a process's batches do not depend on its devices, so a one-device run's checkpoint resumes on
    two. The run goes on, not afresh: its first epoch is the checkpoint's, and its later training losses stay
    within 2% of the one-device run's (test losses 5%), where weights restarted from scratch would put the
    second epoch's loss about 35% above. Not closer: float32 sums in another order, amplified by 150 Adam
    steps, move the weights apart (uninterrupted runs on one and on two devices: losses 0.6% apart at most,
    test losses 2%, weights up to 0.04; measured)."""
    straight = run_python(iwae_command(tmp_path / "straight"), env=JAX, timeout=300)
    assert straight.returncode == 0, straight.stderr[-3000:]
    stopped = interrupt_after_first_epoch(iwae_command(tmp_path / "run"), tmp_path / "run", ["checkpoint.npz"])
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr[-3000:]
    resumed = run_python(iwae_command(tmp_path / "run", "--resume", "--data-parallel", "2"), env=JAX, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    one, two = (json.loads((tmp_path / name / "history.json").read_text()) for name in ("straight", "run"))
    assert len(two["loss"]) == 4 and two["loss"][0] == one["loss"][0] and two["val_loss"][0] == one["val_loss"][0]
    np.testing.assert_allclose(two["loss"][1:], one["loss"][1:], rtol=2e-2)
    np.testing.assert_allclose(two["val_loss"][1:], one["val_loss"][1:], rtol=5e-2)


@pytest.mark.slow
def test_resuming_with_another_number_of_processes_is_refused_in_one_line(tmp_path):
    stopped = interrupt_after_first_epoch(iwae_command(tmp_path), tmp_path, ["checkpoint.npz"])
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr[-3000:]
    refused = run_python(iwae_command(tmp_path, "--resume", "--processes", "2"), env=JAX, timeout=120)
    assert refused.returncode == 2
    lines = [line for line in refused.stderr.strip().splitlines() if "error" in line]
    assert len(lines) == 1 and "processes: '-' there, 2 here" in lines[0], refused.stderr


# Without JAX: the launcher, the shards and the checks.


def test_the_launcher_stops_the_group_when_a_process_fails_and_shows_its_last_line(capsys):
    import distributed

    command = [sys.executable, "-c", "import os, sys, time\n"
               "if os.environ['KERAS_DISTRIBUTION_PROCESS_ID'] == '1': sys.exit('process 1 broke')\n"
               "print('waiting', flush=True); time.sleep(120)"]  # fmt: skip
    start = time.monotonic()
    status = distributed.launch(command, 2, grace=1.0)
    assert status == 1 and time.monotonic() - start < 30  # process 0 killed, not waited for
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == ["[process 1] process 1 broke"]


def test_the_launcher_relays_every_process_and_gives_each_its_index(capfd):
    import distributed

    command = [sys.executable, "-c", "import os; print('index', os.environ['KERAS_DISTRIBUTION_PROCESS_ID'], "
               "os.environ['KERAS_DISTRIBUTION_NUM_PROCESSES'], os.environ['KERAS_BACKEND'])"]  # fmt: skip
    assert distributed.launch(command, 3) == 0
    lines = sorted(capfd.readouterr().out.strip().splitlines())
    assert lines == ["[process 1] index 1 3 jax", "[process 2] index 2 3 jax", "index 0 3 jax"]


def test_each_process_of_a_group_reads_its_own_images_with_its_own_seed(monkeypatch):
    import distributed

    x = np.arange(60).reshape(30, 2)
    assert distributed.shard_of(x, 10, 7)[1:] == (10, 7)  # alone: unchanged
    parts = []
    for index in range(3):
        monkeypatch.setenv("KERAS_DISTRIBUTION_JOB_ADDRESSES", "127.0.0.1:1")
        monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "3")
        monkeypatch.setenv("KERAS_DISTRIBUTION_PROCESS_ID", str(index))
        parts.append(distributed.shard_of(x, 30, 7))
    rows = np.concatenate([part[0] for part in parts])
    assert sorted(rows[:, 0].tolist()) == list(range(0, 60, 2))  # every image once, in one process
    assert [part[1] for part in parts] == [10, 10, 10]
    assert len({part[2] for part in parts} | {7}) == 4  # three seeds of their own


@pytest.mark.parametrize(
    "arguments, backend, fragment",
    [
        ((0, 1, 20), "jax", "--data-parallel to be a positive integer. Received: 0"),
        ((1, 2, 20), "tensorflow", "Expected KERAS_BACKEND=jax"),
        ((3, 1, 20), "jax", "batch size divisible by 3"),
        ((2, 2, 20, [1002]), "jax", "Received a last batch of 2"),
        ((1, 2, 20, [999]), "jax", "999 images"),
    ],
)
def test_check_data_parallel_names_the_problem(arguments, backend, fragment, monkeypatch):
    import distributed

    monkeypatch.setenv("KERAS_BACKEND", backend)
    with pytest.raises(ValueError, match=re.escape(fragment)):
        distributed.check_data_parallel(*arguments)
    if backend == "jax":
        distributed.check_data_parallel(2, 2, 20, [1000, 200])  # a split that works passes


# The scaling record (scripts/distributed_experiments.py) and its figure.

SCALING = REPO_ROOT / "results" / "distributed" / "scaling.json"


def test_the_scaling_record_and_its_figure_are_current():
    for script in ("scripts/distributed_experiments.py", "scripts/plot_distributed.py"):
        result = run_python([script, "--check"])
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_scaling_record_holds_every_run_and_its_ratios_follow_from_them():
    """Recomputed from the per-repeat speeds: each ratio is a configuration's speed over one device's in the
    same repeat (neighbours in time), and its median, smallest and largest are those of the repeats."""
    record = json.loads(SCALING.read_text())
    settings, results = record["settings"], record["results"]
    assert set(results["configs"]) == {"one_device", "two_devices", "two_processes"}
    for name in results["configs"]:
        for batch in map(str, settings["batch_sizes"]):
            row, one = results[name][batch], results["one_device"][batch]
            speeds = row["images_per_second"]["per_repeat"]
            assert len(speeds) == settings["repeats"] and min(speeds) > 0
            over = np.array(speeds) / np.array(one["images_per_second"]["per_repeat"])
            np.testing.assert_allclose(row["speedup"]["per_repeat"], over, rtol=1e-12)
            assert row["speedup"]["median"] == pytest.approx(float(np.median(over)))
            assert (row["speedup"]["min"], row["speedup"]["max"]) == pytest.approx((over.min(), over.max()))
            cores = row["cores_busy_per_process"]
            assert 0 < cores["min"] <= cores["median"] <= cores["max"] <= results["cpu_count"] + 0.5
    assert results["aborted_runs"] >= 0


@pytest.mark.slow
def test_a_quick_scaling_run_times_every_configuration(tmp_path):
    """The measurement's own code at tiny settings: every configuration runs (two processes among them)."""
    result = run_python(["scripts/distributed_experiments.py", "--quick", "--output-dir", tmp_path], env=JAX,
                        timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "scaling.json").read_text())["results"]
    for name in ("one_device", "two_devices", "two_processes"):
        assert all(results[name][batch]["images_per_second"]["median"] > 0 for batch in ("4", "8"))

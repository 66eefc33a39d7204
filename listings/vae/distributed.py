"""Data parallelism with Keras' distribution API: one VAE on several devices and processes, on JAX.

Each training step splits the batch of ``B`` images into equal blocks, one per
device; every device holds a copy of the weights, computes the loss and
gradient of its block, and an all-reduce sums the gradients, so that every
copy takes the same step. The model, the objective and the batches are those
of one device: `keras.distribution.DataParallel` does the splitting and the
all-reduce inside the compiled step.

* `start_data_parallel` sets it up: ``devices`` CPU devices per process
  (XLA's host platform), and, when the ``KERAS_DISTRIBUTION_*`` variables name
  a group of processes (`launch` sets them; on several hosts, you do),
  `keras.distribution.initialize` joins them first.
* In a group of ``P`` processes, each feeds its own part of every batch:
  `process_shard` gives it every ``P``-th image, ``B / P`` of them per step,
  drawn from streams seeded for that process.
* `launch` starts the ``P`` processes of a group on this machine, over the
  loopback interface, from one command.

It needs the JAX backend (``KERAS_BACKEND=jax``); `check_data_parallel`
says so in one line, before anything is built.

Run ``python distributed.py --data-parallel 2`` to train a small VAE on two
CPU devices, or ``--processes 2`` for two processes, and print the digest of
the weights each process ends with.
"""

import argparse
import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

PROCESS_VARIABLES = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                     "KERAS_DISTRIBUTION_PROCESS_ID")  # fmt: skip


def add_data_parallel_options(parser):
    """``--data-parallel DEVICES`` and ``--processes P`` (both 1 by default: one device, one process)."""
    parser.add_argument("--data-parallel", type=int, default=1, metavar="DEVICES",
                        help="devices per process to split every batch over (JAX only; default: 1)")  # fmt: skip
    parser.add_argument("--processes", type=int, default=1, metavar="P",
                        help="processes on this machine, joined over loopback (JAX only; default: 1)")  # fmt: skip


def _backend():
    """The Keras backend named by the environment or Keras' configuration, read without importing Keras."""
    if "KERAS_BACKEND" in os.environ:
        return os.environ["KERAS_BACKEND"]
    config = os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "keras.json")
    try:
        import json

        with open(config) as file:
            return json.load(file).get("backend", "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"


def check_data_parallel(devices, processes, batch_size, counts=()):
    """A ValueError naming the problem unless ``batch_size`` and ``counts`` split over ``processes x devices``.

    ``counts``: the sizes of the data sets the run splits into batches, each
    a multiple of ``processes``, whose last batches must split as well.
    """
    for name, value in (("--data-parallel", devices), ("--processes", processes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Expected {name} to be a positive integer. Received: {value!r}")
    if devices * processes > 1 and _backend() != "jax":
        raise ValueError(f"Expected KERAS_BACKEND=jax for --data-parallel/--processes (this listing uses JAX's "
                         f"devices and process groups). Received: {_backend()}")  # fmt: skip
    parts = devices * processes
    if batch_size % parts:
        raise ValueError(f"Expected a batch size divisible by {parts} (devices x processes) to split every batch "
                         f"evenly. Received: batch size {batch_size}")  # fmt: skip
    for count in counts:
        last = count % batch_size or batch_size
        if count % processes or last % parts:
            raise ValueError(f"Expected {count} images to split into batches of {batch_size} whose every one "
                             f"divides by {parts} (devices x processes). Received a last batch of {last}")  # fmt: skip


# [start data-parallel]
def start_data_parallel(devices=1):
    """Train with every batch split over ``devices`` devices of each process; ``(process index, count)``.

    Call it before Keras runs anything on the JAX backend: the number of CPU
    devices is fixed when JAX starts, and a group of processes must be
    joined before any computation.
    """
    import jax
    import keras

    jax.config.update("jax_num_cpu_devices", devices)  # CPU devices of XLA's host platform
    if devices > 1:  # a device waits in an all-reduce on a thread of XLA's pool: give it threads to spare
        os.environ.setdefault("PJRT_NPROC", str(devices * (os.cpu_count() or 1)))
    if all(name in os.environ for name in PROCESS_VARIABLES):
        keras.distribution.initialize()  # join the group: the address of process 0, the count, this one's index
    local = {}  # the first `devices` devices of every process, in process order
    for device in jax.devices():
        local.setdefault(device.process_index, []).append(device)
    mesh_devices = [device for process in sorted(local) for device in local[process][:devices]]
    if len(mesh_devices) != devices * jax.process_count():
        raise ValueError(f"Expected {devices} devices in every process. Received: {jax.local_device_count()}")
    keras.distribution.set_distribution(keras.distribution.DataParallel(
        devices=mesh_devices,
        auto_shard_dataset=False,  # each process feeds its own part of the batch (`process_shard`)
    ))  # fmt: skip
    return jax.process_index(), jax.process_count()


def process_shard():
    """``(index, count)`` of this process in its group: ``(0, 1)`` when it trains alone."""
    if all(name in os.environ for name in PROCESS_VARIABLES):
        return int(os.environ["KERAS_DISTRIBUTION_PROCESS_ID"]), int(os.environ["KERAS_DISTRIBUTION_NUM_PROCESSES"])
    return 0, 1


def process_rows(x):
    """This process's rows of ``x``: every ``P``-th, from its index on (all of them alone)."""
    index, count = process_shard()
    return x[index::count]


def shard_of(x, batch_size, seed):
    """This process's images, batch size and data seed: every ``P``-th image, ``B / P``, a seed of its own.

    Alone, ``(x, batch_size, seed)`` unchanged. In a group, process ``i``
    reads the images ``i, i + P, ...`` and draws its orders, binarisations
    and ``eps`` from a seed spawned from ``(seed, i)``: the processes' parts
    of a batch are distinct images with independent noise.
    """
    index, count = process_shard()
    if count == 1:
        return x, batch_size, seed
    spawned = np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(1)[0]
    return process_rows(x), batch_size // count, int(spawned)


# [end data-parallel]


def weights_digest(model):
    """SHA-256 of the model's weights, in order: equal digests, bitwise-equal weights."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def free_port():
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# [start launch]
def launch(command, processes, grace=10.0):
    """Run ``command`` (an argv) as ``processes`` processes joined over 127.0.0.1; the exit status of the group.

    Process 0 writes to this terminal; the others' lines come prefixed with
    ``[process i]``, their errors are kept aside and the last line of the
    first failure is shown. When one fails, or Ctrl-C/SIGTERM arrives and
    is passed on, the others get ``grace`` seconds, then are killed: a
    process waiting in a collective for a dead one would wait for ever.
    """
    address = f"127.0.0.1:{free_port()}"
    with contextlib.ExitStack() as files:
        children, errors, relays = [], [], []
        for index in range(processes):
            group = dict(zip(PROCESS_VARIABLES, (address, str(processes), str(index)), strict=True))
            errors.append(None if index == 0 else files.enter_context(tempfile.TemporaryFile(mode="w+")))
            # A session of its own: Ctrl-C reaches the launcher alone, which passes it on once (`_wait_all`).
            child = subprocess.Popen(command, env={**os.environ, "KERAS_BACKEND": "jax", **group}, text=True,
                                     stdout=None if index == 0 else subprocess.PIPE, stderr=errors[-1],
                                     start_new_session=True)  # fmt: skip
            children.append(child)
            if index > 0:
                files.enter_context(child.stdout)
                relays.append(threading.Thread(target=_relay, args=(child.stdout, f"[process {index}] ")))
                relays[-1].start()
        status, first_failure = _wait_all(children, grace)
        for relay in relays:
            relay.join()
        if first_failure:  # process 0 writes its own errors to this terminal
            errors[first_failure].seek(0)
            lines = [line for line in errors[first_failure].read().splitlines() if line.strip()]
            last = lines[-1] if lines else f"exit status {children[first_failure].returncode}"
            print(f"[process {first_failure}] {last}", file=sys.stderr)
    return status


def launch_script(path, argv, processes):
    """`launch` ``python path argv`` (``argv`` None: this command's arguments), the script that calls it."""
    return launch([sys.executable, os.path.abspath(path), *(sys.argv[1:] if argv is None else argv)], processes)


def _relay(stream, prefix):
    for line in stream:
        if not line.startswith("[Gloo]"):  # Gloo's own line about its connections
            print(prefix + line, end="", flush=True)


def _wait_all(children, grace):
    """Wait for every child; ``(128 + the signal passed on, None)``, else ``(the first non-zero exit status,
    the index of its process)``, else ``(0, None)``."""
    forwarded = []

    def forward(signum, frame):
        forwarded.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        first, deadline = None, None
        while [child.poll() for child in children].count(None):  # poll every child: it sets its returncode
            if first is None:
                first = next((i for i, child in enumerate(children) if child.returncode not in (None, 0)), None)
            if (first is not None or forwarded) and deadline is None:
                deadline = time.monotonic() + grace
            if deadline is not None and time.monotonic() > deadline:
                for child in children:
                    if child.poll() is None:
                        child.kill()
            time.sleep(0.1)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if first is None:
        first = next((i for i, child in enumerate(children) if child.returncode != 0), None)
    if forwarded:  # each process has said why it stopped
        return 128 + forwarded[0], None
    return (0, None) if first is None else (children[first].returncode, first)


# [end launch]


def is_launcher(processes):
    """True in the command a reader typed with ``--processes P > 1``: it launches, the processes train."""
    return processes > 1 and not all(name in os.environ for name in PROCESS_VARIABLES)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_parallel_options(parser)
    parser.add_argument("--steps", type=int, default=20, help="training steps (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        if args.steps < 1:
            raise ValueError(f"Expected --steps to be a positive integer. Received: {args.steps}")
        check_data_parallel(args.data_parallel, args.processes, 64, [64 * args.steps])
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if is_launcher(args.processes):
        return launch_script(__file__, argv, args.processes)
    index, count = start_data_parallel(args.data_parallel) if args.data_parallel * args.processes > 1 else (0, 1)
    import keras

    from compose import compose_vae
    from training import fit_vae

    grey = np.random.default_rng(0).random((64 * args.steps, 16), dtype="float32")
    grey, batch_size, seed = shard_of(grey, 64, seed=0)
    keras.utils.set_random_seed(0)  # the same initial weights in every process
    vae = compose_vae(16, 2, divergence="monte_carlo", objective="iwae", hidden_units=32)
    history = fit_vae(vae, grey, "bernoulli", "iwae", epochs=1, batch_size=batch_size, mc_samples=3,
                      binarize=True, seed=seed, verbose=0)  # fmt: skip
    print(f"process {index} of {count}, {args.data_parallel} device(s): negative IWAE bound "
          f"{history['loss'][-1]:.3f} nats, weights sha256 {weights_digest(vae)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Checkpoints: a training run that stops (Ctrl-C, a shutdown, a time limit) and goes on where it stopped.

A checkpoint holds everything the rest of a run depends on, taken at the end
of an epoch:

* the model's weights, all of them;
* the optimiser's variables: Adam's two moments per weight and its step
  count, which drives the learning-rate schedule;
* the epochs done and the history so far;
* the position in the data stream: the state of every random generator that
  draws the batches (a ``tf.random.Generator``'s counter and key, or the epoch
  of a `training.MonteCarloBatches`, whose draws are keyed by epoch), and of
  Python's ``random``, with which ``fit`` shuffles the order of a
  ``keras.utils.PyDataset``'s batches every epoch;
* the run's settings, so that a checkpoint of another run is refused.

A run resumed from the checkpoint of epoch ``n`` sees the data of epochs
``n + 1, ...`` that an uninterrupted run sees, from the same weights and
optimiser state, and so ends with the same weights.

`Checkpoint` is a Keras callback: it takes a snapshot at the end of every
epoch (a copy in memory, milliseconds for these models), writes it atomically
every ``every`` epochs, and `Checkpoint.on_interrupt` writes the last one when
a signal stops the run. The fit functions call `Checkpoint.attach` after
compiling, which restores the state when resuming.

Run ``python checkpoints.py PATH`` to describe a checkpoint file.
"""

import argparse
import json
import pathlib
import random
import sys

import keras
import numpy as np

from outputs import write_atomically


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; its message is one line naming the file."""


def stream_state(stream):
    """The position of one random stream: a ``tf.random.Generator``'s state, or a batch sequence's epoch."""
    if hasattr(stream, "state") and hasattr(stream.state, "assign"):  # a tf.random.Generator
        return {"generator_state": [int(value) for value in stream.state.numpy()]}
    return {"epoch": int(stream.epoch), "entropy": str(stream.entropy)}  # a training.MonteCarloBatches


def _jsonable(state):
    """``random.getstate()`` as lists (JSON has no tuples)."""
    version, internal, gauss_next = state
    return [version, list(internal), gauss_next]


def set_stream_state(stream, state):
    if "generator_state" in state:
        stream.state.assign(np.asarray(state["generator_state"], dtype=stream.state.dtype.as_numpy_dtype))
    else:
        stream.epoch = state["epoch"]


class Checkpoint(keras.callbacks.Callback):
    """The state of a run at the end of its last epoch, written to ``path`` every ``every`` epochs.

    Args:
        path: the checkpoint file (``.npz``).
        settings: the run's settings (JSON-able); a checkpoint written with
            other settings is refused.
        every: epochs between writes; the snapshot in memory is always the
            latest epoch's, and `on_interrupt` writes it.
        resume: go on from the checkpoint in ``path``, which is read (and
            its settings compared) at once, before any work; without it,
            a checkpoint in ``path`` is refused rather than written over.
    """

    def __init__(self, path, settings, every=1, resume=False):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise CheckpointError("Expected `every` (--checkpoint-every, epochs between checkpoints) to be an "
                                  f"integer >= 1. Received: {every!r}")  # fmt: skip
        self.path, self.settings, self.every = pathlib.Path(path), settings, every
        if not resume and self.path.exists():
            raise CheckpointError(f"{self.path} holds the checkpoint of an unfinished run. Expected --resume to go "
                                  "on from it, or delete it to start afresh")  # fmt: skip
        # The latest state: one attribute, replaced whole, so that a signal never finds half of one.
        self.snapshot = read_checkpoint(self.path, settings) if resume else None
        self.written_epoch, self.restoring = self.epoch if resume else None, resume
        self.first_epoch = self.epoch  # where this session's training begins

    @property
    def epoch(self):
        """Epochs done, by this session and the sessions before it."""
        return self.snapshot["epoch"] if self.snapshot else 0

    @property
    def history(self):
        """The losses per epoch so far (``fit``'s history of the whole run)."""
        return self.snapshot["history"] if self.snapshot else {}

    def attach(self, model, streams):
        """Follow ``model`` (compiled) and ``streams`` (name: stream); read the checkpoint when resuming.

        Returns the epoch to start from (the ``initial_epoch`` of ``fit``).
        The state is restored in `on_train_begin`: after the calls that
        ``fit`` makes to build the model and its data iterators, and before
        the first batch, where the uninterrupted run's streams stood.
        """
        self.set_model(model)
        self.streams = {name: stream for name, stream in streams.items() if stream is not None}
        return self.first_epoch

    def on_train_begin(self, logs=None):
        if self.restoring:
            self._restore(self.snapshot)
            self.restoring = False

    # [start snapshot]
    def on_epoch_end(self, epoch, logs=None):
        """Take the snapshot (weights, optimiser, streams: all of the run's state) and write it when due."""
        logs = logs or {}
        history = {key: [*self.history.get(key, []), float(value)] for key, value in logs.items()}
        snapshot = {
            "epoch": self.epoch + 1,
            "history": history,
            "streams": {name: stream_state(stream) for name, stream in self.streams.items()},
            "python_random": _jsonable(random.getstate()),
            "weights": [np.array(value) for value in self.model.get_weights()],
            "optimizer": [np.array(variable) for variable in self.model.optimizer.variables],
        }
        self.snapshot = snapshot
        if self.epoch % self.every == 0:
            self.write()

    # [end snapshot]

    def write(self):
        """Write the latest snapshot (if not on disk yet); the epoch it holds, or None before the first."""
        if self.snapshot is not None and self.written_epoch != self.snapshot["epoch"]:
            write_checkpoint(self.path, self.settings, self.snapshot)
            self.written_epoch = self.snapshot["epoch"]
        return self.written_epoch

    def on_interrupt(self, interrupt):
        """Write the latest snapshot; the one line a CLI ends with (an `outputs.Interrupted` stopped it)."""
        epoch = self.write()
        if epoch is None:
            return (f"interrupted by {interrupt.signal_name} in epoch {self.epoch + 1}, before the first "
                    f"checkpoint; nothing written to {self.path.parent}")  # fmt: skip
        return (f"interrupted by {interrupt.signal_name} in epoch {self.epoch + 1}; checkpoint of epoch {epoch} "
                f"saved to {self.path}: run again with --resume to go on")  # fmt: skip

    def remove(self):
        """Delete the checkpoint once the run's outputs are saved: the run is complete."""
        self.path.unlink(missing_ok=True)

    # [start restore]
    def _restore(self, snapshot):
        weights, optimizer = self.model.get_weights(), self.model.optimizer
        if [w.shape for w in weights] != [w.shape for w in snapshot["weights"]]:
            raise CheckpointError(f"Checkpoint {self.path} holds the weights of another model. Expected "
                                  f"{len(weights)} arrays of the shapes this run builds")  # fmt: skip
        if set(snapshot["streams"]) != set(self.streams):
            raise CheckpointError(f"Checkpoint {self.path} holds the streams {sorted(snapshot['streams'])}. "
                                  f"Expected {sorted(self.streams)}")  # fmt: skip
        self.model.set_weights(snapshot["weights"])
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        if [tuple(v.shape) for v in optimizer.variables] != [v.shape for v in snapshot["optimizer"]]:
            raise CheckpointError(f"Checkpoint {self.path} holds the state of another optimiser")
        for variable, value in zip(optimizer.variables, snapshot["optimizer"], strict=True):
            variable.assign(value)
        for name, state in snapshot["streams"].items():
            if "entropy" in state and state["entropy"] != str(self.streams[name].entropy):
                raise CheckpointError(f"Checkpoint {self.path} continues the data stream of another seed")
            set_stream_state(self.streams[name], state)
        version, internal, gauss_next = snapshot["python_random"]
        random.setstate((version, tuple(internal), gauss_next))

    # [end restore]


def write_checkpoint(path, settings, snapshot):
    """``snapshot`` and ``settings`` as one ``.npz`` (no pickled objects), written atomically."""
    metadata = {key: snapshot[key] for key in ("epoch", "history", "streams", "python_random")}
    metadata["settings"] = settings
    arrays = {"metadata": np.array(json.dumps(metadata))}
    for kind in ("weights", "optimizer"):
        arrays.update({f"{kind}_{index}": value for index, value in enumerate(snapshot[kind])})

    def write(partial):
        with open(partial, "wb") as file:
            np.savez(file, **arrays)

    write_atomically(path, write)


def read_checkpoint(path, settings=None):
    """The snapshot in ``path``; a CheckpointError naming it when it is missing, corrupt or of other ``settings``."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint to resume from at {path}. Expected the file an interrupted run wrote")
    try:
        with open(path, "rb") as file, np.load(file, allow_pickle=False) as arrays:  # closed however it fails
            metadata = json.loads(str(arrays["metadata"]))
            snapshot = {key: metadata[key] for key in ("epoch", "history", "streams", "python_random")}
            for kind in ("weights", "optimizer"):
                count = sum(name.startswith(kind + "_") for name in arrays.files)
                snapshot[kind] = [arrays[f"{kind}_{index}"] for index in range(count)]
            stored = metadata["settings"]
    except Exception as error:  # noqa: BLE001 (every unreadable file gets the same one-line report)
        raise CheckpointError(f"Could not read {path} as a checkpoint: {type(error).__name__}") from None
    if settings is not None and stored != settings:
        changed = sorted(
            (key for key in {*stored, *settings} if stored.get(key, "-") != settings.get(key, "-")),
            key=lambda key: (key not in stored or key not in settings, key),
        )  # changed values first
        differences = "; ".join(f"{key}: {stored.get(key, '-')!r} there, {settings.get(key, '-')!r} here"
                                for key in changed[:3])  # fmt: skip
        raise CheckpointError(f"Checkpoint {path} is of a run with other settings ({differences}). Expected the "
                              "settings of the run it continues, or delete it to start afresh")  # fmt: skip
    return snapshot


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="a checkpoint file (.npz) a training CLI wrote")
    args = parser.parse_args(argv)
    try:
        snapshot = read_checkpoint(args.path)
    except CheckpointError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    weights = sum(value.size for value in snapshot["weights"])
    print(f"{args.path}: after epoch {snapshot['epoch']}, {weights} weights, "
          f"{len(snapshot['optimizer'])} optimiser variables, streams {sorted(snapshot['streams'])}")  # fmt: skip
    for key, values in snapshot["history"].items():
        print(f"  {key}: {values[-1]:.3f} after epoch {len(values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

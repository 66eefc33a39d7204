"""Writing a run's outputs so that a fault loses nothing, and reading a model back.

Training takes minutes to hours; what it writes must not be lost to a
folder that cannot take it, a kill or a full disk. Three rules:

* `check_output_dir` runs *before* the work: the output folder exists or
  can be created, is a folder, takes a new file, and the files to be written
  are not folders. A problem is a ValueError naming the path and what was
  expected, so a CLI exits with one line instead of a traceback after the
  whole run.
* `write_atomically` writes a file beside its final name and renames it over
  that name: the file appears whole or not at all, and a kill or a full disk
  while writing leaves the earlier file as it was.
* `save_run` writes a model and its history together: both are written in
  full before either is renamed into place, so a failure while writing
  leaves the earlier pair untouched.

Reading a model back, `load_saved_model` turns a missing, corrupt or
foreign file into one `ModelFileError` line naming it.

While a run works, `interruptible` turns SIGINT (Ctrl-C) and SIGTERM into
`Interrupted`, so that a CLI can end with one line and the exit status a
shell expects (130, 143) instead of a traceback, after writing the latest
checkpoint (`checkpoints.Checkpoint.on_interrupt`); the outputs of an
earlier run are as they were.

Run ``python outputs.py --output-dir some/folder`` to check a folder.
"""

import argparse
import contextlib
import json
import os
import pathlib
import signal
import sys
import tempfile


def check_output_dir(path, files=()):
    """``path`` as a Path after checking a run can write ``files`` into it; a ValueError otherwise."""
    path = pathlib.Path(path)
    existing = next(folder for folder in (path, *path.parents) if folder.exists() or folder == folder.parent)
    if not existing.is_dir():
        what = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise ValueError(f"Output folder {path} {what}. Expected a folder, or a path where one can be created")
    try:  # the one test that also holds for root and read-only file systems: write a file
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-test-"):
            pass
    except OSError as error:
        raise ValueError(f"Output folder {path} is not writable: no file can be created in {existing} "
                         f"({error.strerror})") from None  # fmt: skip
    for name in files:
        if (path / name).is_dir():
            raise ValueError(f"Cannot write {path / name}: it is a folder. Expected a file or nothing there")
    return path


def check_output_file(path):
    """``path`` as a Path after checking its folder can take it (`check_output_dir`)."""
    path = pathlib.Path(path)
    check_output_dir(path.parent, [path.name])
    return path


def partial_path(path):
    """Where ``path`` is written before it is renamed into place: the same folder, so the rename is atomic."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def write_together(files):
    """``{path: write}``: every ``write(partial)`` beside its path first, then every partial renamed over its path.

    A failure while writing (a full disk, a kill) leaves every earlier file as it was; the renames that
    follow take microseconds, so files that belong together (a model, its history, its record) change
    together.
    """
    partials = {pathlib.Path(path): partial_path(pathlib.Path(path)) for path in files}
    try:
        for (path, partial), write in zip(partials.items(), files.values(), strict=True):
            path.parent.mkdir(parents=True, exist_ok=True)
            write(partial)
        for path, partial in partials.items():
            os.replace(partial, path)
    finally:
        for partial in partials.values():
            partial.unlink(missing_ok=True)


def write_atomically(path, write):
    """``write(partial)`` beside ``path``, then renamed over it: the file appears whole or not at all."""
    write_together({path: write})


def save_run(output_dir, vae, history):
    """``vae.keras`` and ``history.json`` (losses per epoch, as floats) in ``output_dir``, written together."""
    output_dir = check_output_dir(output_dir, ["vae.keras", "history.json"])
    history = {key: [float(value) for value in values] for key, values in history.items()}
    write_together({
        output_dir / "vae.keras": vae.save,
        output_dir / "history.json": lambda path: path.write_text(json.dumps(history, indent=2) + "\n"),
    })  # fmt: skip
    return history


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived while a run worked: ``signal_name``, and ``exit_code`` (128 + the signal)."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signal_name, self.exit_code = signal.Signals(signum).name, 128 + signum


@contextlib.contextmanager
def interruptible():
    """Inside the block, SIGINT and SIGTERM raise `Interrupted`; the earlier handlers return after it."""

    def interrupt(signum, frame):
        raise Interrupted(signum)

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class ModelFileError(ValueError):
    """A model file that cannot be loaded; its message is one line naming the file."""


def load_saved_model(path, expected="a Keras model saved by these listings"):
    """The model saved at ``path``, loaded with ``safe_mode=True``; a ModelFileError naming ``path`` otherwise.

    Import the listings whose layers the model is made of first: loading
    finds registered classes only.
    """
    import keras

    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelFileError(f"Model file not found: {path} (expected {expected})")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as error:  # noqa: BLE001 (any unreadable file gets the same one-line report)
        raise ModelFileError(f"Could not load {path} as {expected}: {type(error).__name__}") from None


# Arguments that do not change what a run computes: where it reads and writes, how it reports, its checkpoints.
NOT_SETTINGS = ("mnist_dir", "output_dir", "quiet", "resume", "checkpoint_every")


def settings_of(args):
    """A CLI's parsed arguments less `NOT_SETTINGS`: what a checkpoint must agree with to be continued."""
    return {key: value for key, value in vars(args).items() if key not in NOT_SETTINGS}


def add_checkpoint_options(parser):
    """``--resume`` and ``--checkpoint-every`` (`checkpoints.Checkpoint`), the same in every training CLI."""
    parser.add_argument("--resume", action="store_true",
                        help="go on from the checkpoint an interrupted run left in the output folder")  # fmt: skip
    parser.add_argument("--checkpoint-every", type=int, default=1, metavar="EPOCHS",
                        help="epochs between checkpoints, also written on Ctrl-C or SIGTERM (default: 1)")  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", required=True, help="the folder to check")
    args = parser.parse_args(argv)
    try:
        path = check_output_dir(args.output_dir, ["vae.keras", "history.json"])
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(f"{path} can take a run's outputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

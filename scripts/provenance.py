"""Records of where generated files came from, and the check that they are current.

Every script that writes something the site shows (results, figures, diagrams)
writes a JSON record with the SHA-256 of its settings and data files, the
commit, and a fingerprint of the code that made it (``fingerprint.py``). A
record is stale when an input changes or today's code behaves otherwise, so
``make site`` regenerates only what is stale and a test fails when a committed
output was not regenerated after its code or inputs changed.
"""

import hashlib
import json
import os
import pathlib
import shutil
import sys
import tempfile

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "listings" / "vae") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "listings" / "vae"))

from outputs import (  # noqa: E402,F401 (shared with the listings)
    Interrupted,
    ModelFileError,
    check_output_dir,
    interruptible,
    write_atomically,
    write_together,
)


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def settings_sha256(settings):
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def input_hashes(paths, settings):
    """SHA-256 of each input file (keyed by its path relative to the repository) and of the settings."""
    hashes = {}
    for path in paths:
        path = pathlib.Path(path).resolve()
        try:
            key = str(path.relative_to(REPO_ROOT))
        except ValueError:
            key = path.name
        hashes[key] = file_sha256(path)
    hashes["settings"] = settings_sha256(settings)
    return hashes


def mnist_data_files(mnist_dir=None, dataset="mnist"):
    """The four local IDX files of MNIST (or of ``dataset``) a record hashes; MNISTError when one is missing."""
    from mnist_data import DATASETS, MNIST_FILES, MNISTError, resolve_folder

    title, variable = DATASETS.get(dataset, (dataset, "MNIST_DIR"))[:2]
    folder = resolve_folder(dataset, mnist_dir)
    if folder is None:
        raise MNISTError(f"no local {title} folder: the record needs the IDX files to hash; set {variable}")
    data_files = [folder / name for pair in MNIST_FILES.values() for name in pair]
    for path in data_files:
        if not path.is_file():
            raise MNISTError(f"Missing {title} file: expected {path.name} in {folder}")
    return data_files


class RecordError(ValueError):
    """A record or results file that cannot be used; its message is one line naming the file and what was expected."""


def read_json(path, keys=(), expected="a JSON object"):
    """The JSON object in ``path``, after a RecordError for a file that is missing, a folder, empty, not UTF-8,
    not JSON, not an object, or without one of ``keys``."""
    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecordError(f"Missing {path}: expected {expected}") from None
    except IsADirectoryError:
        raise RecordError(f"{path} is a folder: expected a file holding {expected}") from None
    if not data.strip():
        raise RecordError(f"{path} is empty: expected {expected}")
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise RecordError(f"{path} is not UTF-8 text (byte {data[error.start]:#04x} at offset {error.start}): "
                          f"expected {expected}") from None  # fmt: skip
    except json.JSONDecodeError as error:
        raise RecordError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}): "
                          f"expected {expected}") from None  # fmt: skip
    if not isinstance(value, dict):
        raise RecordError(f"{path} holds a JSON {type(value).__name__}: expected {expected}")
    missing = [key for key in keys if key not in value]
    if missing:
        raise RecordError(f"{path} has no {', '.join(map(repr, missing))}: expected {expected} with keys "
                          f"{', '.join(keys)}")  # fmt: skip
    return value


def read_record(record_path, keys=()):
    """The record at ``record_path`` (None when there is none), read by `read_json`."""
    record_path = pathlib.Path(record_path)
    if not record_path.exists():
        return None
    return read_json(record_path, keys, "a record written by this project's scripts")


def stale_inputs(record, hashes):
    """Names of the inputs whose hash differs from the record (all of them when there is no record)."""
    if record is None:
        return sorted(hashes)
    recorded = record.get("inputs", {})
    return sorted(key for key in set(hashes) | set(recorded) if recorded.get(key) != hashes.get(key))


def describe_stale(stale, shown=3):
    """One line for ``{name: [stale input, ...]}``: ``row: a, b, c and 2 more; other: d``."""
    parts = []
    for name, inputs in stale.items():
        more = f" and {len(inputs) - shown} more" if len(inputs) > shown else ""
        parts.append(f"{name}: {', '.join(inputs[:shown])}{more}")
    return "; ".join(parts)


def names_to_run(parser, args, names, stale, where, nothing="nothing to run"):
    """What a script with ``--check`` and ``--if-stale`` should (re)compute, given ``{name: [stale input]}``.

    ``--check`` exits 1 with one line naming the stale inputs, or prints that
    ``where`` is current; ``--if-stale`` keeps only the stale names. Returns
    None when there is nothing to do (the caller returns 0).
    """
    stale = {name: inputs for name, inputs in stale.items() if inputs}
    if args.check:
        if stale:
            parser.exit(1, f"{parser.prog}: stale: {describe_stale(stale)}\n")
        print(f"{where} is current")
        return None
    todo = [name for name in names if name in stale] if args.if_stale else list(names)
    if not todo:
        print(f"{where} is current; {nothing}")
        return None
    return todo


def exit_interrupted(parser, interrupt, doing, unwritten):
    """End a script that SIGINT or SIGTERM stopped with one line and exit 130 or 143 (no traceback)."""
    parser.exit(interrupt.exit_code, f"{parser.prog}: interrupted by {interrupt.signal_name} while {doing}; "
                f"{unwritten} not written, and every file written before is whole\n")  # fmt: skip


def record_writer(record):
    """A writer of ``record`` as JSON (for `write_together`); a record that cannot be serialised fails here."""
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    return lambda partial: partial.write_text(text)


def write_record(record_path, record):
    """``record`` as JSON at ``record_path``, atomically: an interrupted write leaves the old record whole."""
    write_atomically(record_path, record_writer(record))


def model_writer(vae):
    """A writer of ``vae`` without its optimiser's state (a third of the size): a clone with its weights."""
    import keras

    config = keras.saving.serialize_keras_object(vae)
    config.pop("compile_config", None)  # no optimiser to save
    fresh = keras.saving.deserialize_keras_object(config)
    fresh.set_weights(vae.get_weights())
    return fresh.save


def arrays_writer(arrays):
    """A writer of NumPy arrays by name as one compressed ``.npz``."""
    import numpy as np

    return lambda partial: np.savez_compressed(partial, **arrays)


def save_model(vae, path):
    """``vae`` without its optimiser's state, written atomically (`model_writer`)."""
    write_atomically(path, model_writer(vae))


def save_arrays(path, arrays):
    """NumPy arrays by name in one compressed ``.npz``, written atomically."""
    write_atomically(path, arrays_writer(arrays))


def paired_differences(per_image, reference):
    """Each row's mean per-image difference from the ``reference`` row, with its standard error.

    ``per_image`` maps row names to values on the same items (say ``log p(x)``
    of the same test images), so the noise the rows share cancels.
    """
    import math

    import numpy as np

    paired = {}
    for row, values in per_image.items():
        if row != reference:
            difference = np.asarray(values, "float64") - np.asarray(per_image[reference], "float64")
            paired[row] = {"difference": float(difference.mean()),
                           "stderr": float(difference.std(ddof=1) / math.sqrt(len(difference)))}  # fmt: skip
    return paired


def part_fingerprint(script, part, quick_settings, run_part, timing=False, extra="", probe=None):
    """A part's behavioural fingerprint: its ``run_part`` at the quick settings on the committed MNIST subset.

    For a ``timing`` part (seconds per epoch, which no fingerprint sees) it is
    the static guard instead: the syntax trees of every definition of ours
    reachable from the function named like the part in ``run_part``'s module
    (``fingerprint.static_call_graph_guard``), read from the source without
    running anything. ``probe()``, when given, adds numbers from inputs the
    run cannot reach (say, a flow at a weight no fitted flow has), under
    ``probe.``. Fingerprints are cached by the normalised source of our code,
    the settings and ``extra`` (say, the hashes of trained models the run
    reads) (``fingerprint.cached``).
    """
    import inspect

    import fingerprint

    if timing:
        module = pathlib.Path(inspect.getsourcefile(run_part)).stem
        return {"static_guard": fingerprint.static_call_graph_guard(module, [part])}

    def compute():
        with tempfile.TemporaryDirectory() as scratch:
            results = on_the_fingerprint_data(lambda: run_part(part, quick_settings, pathlib.Path(scratch)))
        return fingerprint_numbers(results, probe)

    return fingerprint.cached(f"{script}:{part}", quick_settings, compute, extra=extra + _probed(probe))


def on_the_fingerprint_data(run):
    """``run()`` as a fingerprint runs it: Keras seeded with 0, ``MNIST_DIR`` (and ``FASHION_MNIST_DIR``) the
    committed subsets."""

    import keras

    # Fixed seeds for what the run does not seed itself (a model built before its training seeds).
    keras.utils.set_random_seed(0)
    folders = {
        "MNIST_DIR": FINGERPRINT_MNIST_DIR,
        "FASHION_MNIST_DIR": FINGERPRINT_MNIST_DIR.with_name("fashion-mnist"),
    }
    previous = {variable: os.environ.get(variable) for variable in folders}
    os.environ.update({variable: str(folder) for variable, folder in folders.items()})
    try:
        return run()
    finally:
        for variable, value in previous.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value


def fingerprint_numbers(results, probe=None):
    import fingerprint

    return {**fingerprint.numbers(results), **(fingerprint.numbers({"probe": probe()}) if probe else {})}


def _probed(probe):
    return f"probe:{probe.__name__}" if probe else ""


def fingerprint_run(script, part, settings, run_part, output_dir, extra="", probe=None):
    """Run a part at its fingerprint's settings as the fingerprint runs it, writing into ``output_dir``.

    What ``--quick`` does: the results' numbers are today's fingerprint, so
    they are stored in the cache (``part_fingerprint`` then finds them), and
    a quick run and a record check share one computation. Returns the results.
    """
    import fingerprint

    output_dir = None if output_dir is None else pathlib.Path(output_dir)  # None: the part writes no files
    results = on_the_fingerprint_data(lambda: run_part(part, settings, output_dir))
    name, key_extra = f"{script}:{part}", extra + _probed(probe)
    fingerprint.store(name, settings, fingerprint_numbers(results, probe), extra=key_extra)
    return results


FINGERPRINT_MNIST_DIR = REPO_ROOT / "tests" / "data" / "mnist"


def experiment_inputs(module, part, settings):
    """What a part depends on besides the behaviour of its code: its settings, for the parts in
    ``module.MNIST_PARTS`` the MNIST files (for those in ``module.DATA_PARTS``, ``{part: dataset}``, the data
    set's files; MNISTError when one is missing), and the files named in
    ``module.INPUT_FILES`` (``{part: [path]}``, say a committed model the part scores again)."""
    mnist = "mnist" if part in getattr(module, "MNIST_PARTS", ()) else None
    dataset = getattr(module, "DATA_PARTS", {}).get(part, mnist)
    paths = mnist_data_files(dataset=dataset) if dataset else []
    paths += getattr(module, "INPUT_FILES", {}).get(part, [])
    return input_hashes(paths, settings[part])


def run_experiments(module, argv=None):
    """The command line of a script that writes one record per part (``avb_experiments.py``, ...).

    ``module`` (the script) defines ``PARTS``, ``OUTPUT_DIR`` (the committed
    records), ``SETTINGS`` (per part), ``FINGERPRINT`` (tiny settings per
    part that reach every row, head and target the full ones reach),
    ``MNIST_PARTS`` (the parts that read MNIST), ``TIMING_PARTS`` (parts
    that measure speed), optionally ``FINGERPRINT_PROBES`` (``{part:
    probe}``, see ``part_fingerprint``) and ``run_part(part, settings,
    output_dir)``, which computes a part's results.

    Options ``--parts``, ``--output-dir``, ``--if-stale``, ``--check``,
    ``--quick`` (the fingerprint's own run, at its settings on the committed
    MNIST subset, refused over the committed records; it leaves today's
    fingerprints in the cache) and ``--print-fingerprint``. Each part is written to ``<output_dir>/<part>.json``
    with its settings, wall time, versions, machine, input hashes
    (``experiment_inputs``), commit and fingerprint (``part_fingerprint``: the
    part's own run at the ``FINGERPRINT`` settings; for a timing part, the
    static guard of the code it can run). A record is stale when its inputs
    change or today's fingerprint is not close to the stored one. Returns the
    exit code.
    """
    import argparse
    import platform
    import time

    from mnist_data import MNISTError

    parts, run_part, tiny = module.PARTS, module.run_part, module.FINGERPRINT
    timing_parts, probes = getattr(module, "TIMING_PARTS", ()), getattr(module, "FINGERPRINT_PROBES", {})
    parser = argparse.ArgumentParser(description=module.__doc__.split("\n\n")[0])
    default_dir = pathlib.Path(module.OUTPUT_DIR)
    parser.add_argument("--parts", default=",".join(parts), help="comma-separated parts (default: all)")
    parser.add_argument(
        "--output-dir", default=str(default_dir), help=f"where to write (default: {_shown(default_dir)})"
    )
    parser.add_argument("--if-stale", action="store_true", help="run only the parts whose inputs changed")
    parser.add_argument("--check", action="store_true", help="exit 1 when a record does not match its inputs")
    parser.add_argument(
        "--quick", action="store_true", help="the fingerprint's tiny settings on the committed MNIST subset, for tests"
    )
    parser.add_argument(
        "--print-fingerprint", action="store_true", help="compute today's fingerprints afresh (no cache); print them"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="train from this seed instead (another --output-dir; scripts/seeds.py)"
    )
    args = parser.parse_args(argv)
    script = default_dir.name  # the fingerprint cache's name for these records: avb, flows, ...
    chosen = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in parts]
    if unknown or not chosen:
        parser.exit(2, f"{parser.prog}: error: unknown parts {unknown}; expected some of {', '.join(parts)}\n")
    output_dir = pathlib.Path(args.output_dir)
    if args.quick and output_dir.resolve() == default_dir.resolve():
        parser.exit(2, f"{parser.prog}: error: --quick needs an --output-dir other than the committed results\n")
    settings = tiny if args.quick else module.SETTINGS
    if args.seed is not None:  # another training seed of the same experiment, beside the committed records
        seedless = [part for part in chosen if "seed" not in module.SETTINGS[part] or part in timing_parts]
        if args.quick or output_dir.resolve() == default_dir.resolve() or seedless:
            parser.exit(2, f"{parser.prog}: error: --seed needs an --output-dir other than the committed records, "
                        f"no --quick, and parts with a seed (not {seedless})\n")  # fmt: skip
        settings = {part: {**value, "seed": args.seed} for part, value in settings.items()}

    def fingerprint_of(part):
        return part_fingerprint(script, part, tiny[part], run_part, part in timing_parts, probe=probes.get(part))

    if args.print_fingerprint:
        import fingerprint

        fingerprint.CACHE_DIR = pathlib.Path(tempfile.mkdtemp())  # afresh: nothing read from, or left in, the cache
        print(json.dumps({part: fingerprint_of(part) for part in chosen}, sort_keys=True))
        return 0
    try:
        inputs = {part: experiment_inputs(module, part, settings) for part in chosen}
        stale = {}
        for part in chosen:
            record = read_record(output_dir / f"{part}.json")
            stale[part] = stale_inputs(record, inputs[part])
            if not stale[part]:
                stale[part] = moved_behaviour(record, fingerprint_of(part))
    except (MNISTError, RecordError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    todo = names_to_run(parser, args, chosen, stale, output_dir)
    if todo is None:
        return 0
    try:  # before the work: the folder can take every record to be written
        check_output_dir(output_dir, [f"{part}.json" for part in todo])
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")

    import keras
    import numpy as np
    import tensorflow as tf

    import fingerprint
    from train_main_post import describe_machine

    for part in todo:
        print(f"{part} ...", flush=True)
        start = time.perf_counter()
        try:
            with interruptible():
                if args.quick and part not in timing_parts:  # the fingerprint's own run: its numbers are cached
                    results = fingerprint_run(script, part, tiny[part], run_part, output_dir, probe=probes.get(part))
                else:
                    results = run_part(part, settings[part], output_dir)
        except (MNISTError, ModelFileError) as error:
            parser.exit(2, f"{parser.prog}: error: {error}\n")
        except Interrupted as interrupt:
            exit_interrupted(parser, interrupt, f"running {part}", f"{output_dir / f'{part}.json'}")
        commit = fingerprint.git_commit()
        record = {
            "settings": settings[part],
            "results": results,
            "seconds": time.perf_counter() - start,
            "versions": {"python": platform.python_version(), "keras": keras.__version__,
                         "keras_backend": keras.backend.backend(), "tensorflow": tf.__version__,
                         "numpy": np.__version__},
            "machine": describe_machine(),
            "inputs": inputs[part],
            "fingerprint": fingerprint_of(part),
            "commit": commit,
            "fingerprint_commit": commit,
        }  # fmt: skip
        write_record(output_dir / f"{part}.json", record)
        print(f"{part}: {record['seconds']:.0f} s; wrote {output_dir / f'{part}.json'}", flush=True)
    return 0


def moved_behaviour(record, current):
    """``[]`` when the record's fingerprint is close to ``current``, else one line saying what moved."""
    import fingerprint

    if "fingerprint" not in record:
        return ["fingerprint missing (rerun)"]
    moved = fingerprint.describe_differences(record["fingerprint"], current)
    return [f"behaviour: {moved}"] if moved else []


def figures_fingerprint(name, draw, paths, settings):
    """The numbers a figure script draws (``fingerprint.drawn_numbers``), drawing into a scratch folder.

    Cached by our code, the settings and the SHA-256 of the files it reads.
    """
    import fingerprint

    def compute():
        with tempfile.TemporaryDirectory() as scratch:
            return fingerprint.drawn_numbers(lambda: draw(pathlib.Path(scratch)))

    return fingerprint.cached(f"figures:{name}", settings, compute, extra=json.dumps(input_hashes(paths, {})))


def draw_figures(
    description,
    output_dir,
    figures,
    draw,
    settings,
    results=None,
    input_paths=lambda source: [],
    made_by=None,
    record_name="figures.json",
    extra_record=None,
    errors=(),
    argv=None,
):
    """The command line of a figure script: ``--output-dir``, ``--if-stale``, ``--check``, and a results option.

    ``results`` is ``(option, default path)`` of what the figures are drawn
    from (say ``("--results-dir", results/avb)``), or None. ``input_paths(source)``
    lists the files they read (a missing one is reported in one line, naming
    ``made_by``, the script that writes it); ``draw(source, output_dir)``
    writes ``figures``. ``settings`` is a dict or a function returning one
    (it may raise one of ``errors`` or RuntimeError, such as a missing
    graphviz, reported in one line).

    The record (``record_name``) holds the settings' hash, the commit, and
    the fingerprint of what was drawn: a summary of every plotted array and
    a digest of the texts and styles of every figure, and the graphviz source
    of every diagram (``fingerprint.drawn_numbers``). It is stale when the
    settings change or today's code, drawing from today's inputs, draws
    something else; the results files are not hashed, so a part of them no
    figure shows can change without a redraw. ``extra_record(source)`` adds
    keys to the record (say, verdicts the site reads). Returns the exit code.
    """
    import argparse

    import fingerprint

    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    output_dir = pathlib.Path(output_dir)
    if results is not None:
        option, default = results
        default = pathlib.Path(default)
        parser.add_argument(option, default=str(default), help=f"what is drawn (default: {_shown(default)})")
    parser.add_argument("--output-dir", default=str(output_dir), help=f"where to write (default: {_shown(output_dir)})")
    parser.add_argument("--if-stale", action="store_true", help="draw only when the record is stale")
    parser.add_argument("--check", action="store_true", help="exit 1 when the record is stale")
    args = parser.parse_args(argv)
    cache_name = f"{record_name}:{','.join(figures)}"
    source = pathlib.Path(getattr(args, results[0].lstrip("-").replace("-", "_"))) if results else None
    output_dir = pathlib.Path(args.output_dir)
    record_path = output_dir / record_name
    try:
        if not args.check:  # before the work: the folder can take the figures and the record
            check_output_dir(output_dir, [*figures, record_name])
        paths = input_paths(source)
        missing = [str(path) for path in paths if not path.is_file()]
        if missing:
            parser.exit(
                2, f"{parser.prog}: error: missing input {missing[0]}" + (f"; run {made_by}\n" if made_by else "\n")
            )
        drawn_settings = settings() if callable(settings) else settings
        inputs = input_hashes([], drawn_settings)
        if args.if_stale or args.check:
            record = read_record(record_path)
            stale = ["no record"] if record is None else stale_inputs(record, inputs)
            stale = stale or [f"missing {name}" for name in figures if not (output_dir / name).is_file()]
            if not stale:
                current = figures_fingerprint(cache_name, lambda scratch: draw(source, scratch), paths, drawn_settings)
                stale = moved_behaviour(record, current)
            if args.check and stale:
                parser.exit(1, f"{parser.prog}: stale: {describe_stale({record_path.name: stale})}\n")
            if not stale:
                print(f"{record_path} is current" + ("" if args.check else "; nothing to draw"))
                return 0
    except (RuntimeError, ValueError, *errors) as error:  # a RecordError is a ValueError
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    output_dir.mkdir(parents=True, exist_ok=True)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=".drawing-", dir=output_dir))  # the same file system
    try:
        try:
            drawn = fingerprint.drawn_numbers(lambda: draw(source, scratch))
        except (RecordError, ModelFileError, KeyError) as error:  # an input of another shape than the one drawn
            problem = error if isinstance(error, RecordError) else f"{source} has no {error}"
            parser.exit(2, f"{parser.prog}: error: {problem}" + (f"; run {made_by}\n" if made_by else "\n"))
        for path in sorted(scratch.iterdir()):  # every figure drawn in full, then each renamed into place
            os.replace(path, output_dir / path.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    fingerprint.store(f"figures:{cache_name}", drawn_settings, drawn, extra=json.dumps(input_hashes(paths, {})))
    commit = fingerprint.git_commit()
    record = {"settings": drawn_settings, "inputs": inputs, "fingerprint": drawn, "commit": commit,
              "fingerprint_commit": commit, **(extra_record(source) if extra_record else {})}  # fmt: skip
    write_record(record_path, record)
    print(f"wrote {', '.join(figures)} to {output_dir}")
    return 0


def _shown(path):
    try:
        return path.resolve().relative_to(REPO_ROOT)
    except ValueError:
        return path

"""Behavioural fingerprints: blind to spelling, sensitive to behaviour, deterministic, and covering the run.

Every record carries a fingerprint: the numbers its own code computes at tiny
settings (results), the plotted arrays, texts and styles (figures), or, for
timings, a static guard of the code that runs (a traced or a static call graph).
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import fingerprint
from conftest import MNIST_SUBSET_DIR, REPO_ROOT, full_mnist, run_python


def test_numbers_keep_results_and_drop_timings():
    results = {"loss": [3.0, 2.5], "nested": {"kl": 1, "flag": True, "name": "x"}, "seconds_per_epoch": 4.2}
    assert fingerprint.numbers(results) == {"loss.0": 3.0, "loss.1": 2.5, "nested.kl": 1.0}


def test_differences_within_and_beyond_the_tolerance():
    stored = {"a": 100.0, "b": 0.0, "c": float("nan")}
    assert (
        fingerprint.differences(stored, {"a": 100.0 * (1 + fingerprint.RTOL / 2), "b": 1e-6, "c": float("nan")}) == []
    )
    assert fingerprint.differences(stored, {"a": 100.0 * (1 + 2 * fingerprint.RTOL), "b": 0.0, "c": float("nan")}) == [
        "a"
    ]
    assert fingerprint.differences(stored, {"a": 100.0, "b": 0.0}) == ["c"]


REFERENCE = '''
def scale(x, factor=2.0):
    """Multiply."""
    return x * factor
'''


@pytest.mark.parametrize(
    "variant, same",
    [
        (
            '\ndef scale(x, factor=2.0):\n    """Multiply x by a factor (a new docstring)."""\n    return x * factor\n',
            True,
        ),
        ("\ndef scale(x, factor=2.0):\n    # a comment\n    return (\n        x\n        * factor\n    )\n", True),
        ('\ndef scale(x, factor=2.0):\n    """Multiply."""\n    return x * factor * 1.0001\n', False),
        ('\ndef scale(x, factor=3.0):\n    """Multiply."""\n    return x * factor\n', False),
    ],
    ids=["docstring", "formatting-and-comment", "arithmetic", "default"],
)
def test_normalised_source_ignores_spelling_not_code(variant, same):
    assert (fingerprint.normalised_source(REFERENCE) == fingerprint.normalised_source(variant)) is same


def test_the_static_call_graph_follows_names_and_ignores_the_module_a_function_lives_in(tmp_path, monkeypatch):
    caller = "from {home} import scale\n\n\ndef timed(x):\n    return scale(x) + OFFSET\n\n\nOFFSET = 1\n"
    for home in ("guard_home_a", "guard_home_b", "guard_home_c"):
        (tmp_path / f"caller_of_{home}.py").write_text(caller.format(home=home))
    (tmp_path / "guard_home_a.py").write_text(REFERENCE)
    (tmp_path / "guard_home_b.py").write_text(REFERENCE + "\n\ndef other():\n    return 1\n")
    (tmp_path / "guard_home_c.py").write_text(REFERENCE.replace("x * factor", "x + factor"))
    monkeypatch.setattr(fingerprint, "OUR_MODULE_FOLDERS", (tmp_path,))
    graph = fingerprint.static_call_graph("caller_of_guard_home_a", ["timed"])
    assert set(graph) == {("caller_of_guard_home_a", "timed"), ("caller_of_guard_home_a", "OFFSET"),
                          ("guard_home_a", "scale")}  # fmt: skip
    guard = {home: fingerprint.static_call_graph_guard(f"caller_of_{home}", ["timed"]) for home in ("a", "b", "c")
             for home in [f"guard_home_{home}"]}  # fmt: skip
    assert guard["guard_home_a"] == guard["guard_home_b"] != guard["guard_home_c"]


@pytest.mark.parametrize(
    "variant, same",
    [
        ("def timed(x):\n    import numpy as np\n\n    return np.sqrt(x)\n", True),  # the import inside
        ("import numpy\n\n\ndef timed(x):\n    return numpy.sqrt(x)\n", False),  # another name
        ("import math as np\n\n\ndef timed(x):\n    return np.sqrt(x)\n", False),  # another module
    ],
    ids=["import-moved-into-the-function", "name-changed", "other-module"],
)
def test_the_static_guard_ignores_where_an_import_is_written_not_what_it_imports(tmp_path, monkeypatch, variant, same):
    (tmp_path / "timed_reference.py").write_text("import numpy as np\n\n\ndef timed(x):\n    return np.sqrt(x)\n")
    (tmp_path / "timed_variant.py").write_text(variant)
    monkeypatch.setattr(fingerprint, "OUR_MODULE_FOLDERS", (tmp_path,))
    guards = [fingerprint.static_call_graph_guard(module, ["timed"]) for module in ("timed_reference", "timed_variant")]
    assert (guards[0] == guards[1]) is same


def test_the_cache_is_keyed_by_code_and_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(fingerprint, "CACHE_DIR", tmp_path)
    calls = []
    compute = lambda: calls.append(1) or {"a": 1.0}  # noqa: E731
    assert fingerprint.cached("part", {"s": 1}, compute) == {"a": 1.0}
    assert fingerprint.cached("part", {"s": 1}, compute) == {"a": 1.0}
    assert len(calls) == 1
    fingerprint.cached("part", {"s": 2}, compute)
    assert len(calls) == 2


def print_fingerprint(command, env=None):
    """Today's fingerprint, computed afresh in a new process by ``<script> --print-fingerprint``."""
    result = run_python([REPO_ROOT / command[0], *command[1:], "--print-fingerprint"], env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


FRESH = {
    "main post": (["scripts/train_main_post.py"], lambda printed: {"main_post": printed}),
    # The likelihoods' MNIST part builds its first model before anything seeds it: the fingerprint fixes that seed.
    "likelihoods mnist": (["scripts/likelihood_experiments.py", "--parts", "mnist"], lambda printed: printed),
    "avb estimators": (["scripts/avb_experiments.py", "--parts", "estimators"], lambda printed: printed),
    "iwae bounds": (["scripts/mc_samples_experiments.py", "--parts", "bounds"], lambda printed: printed),
}


def committed_fingerprint(part):
    if part == "bounds":  # one record, a fingerprint per part
        return json.loads((REPO_ROOT / "results" / "iwae" / "experiments.json").read_text())["fingerprint"][part]
    path = {"main_post": "vae/main_post", "mnist": "likelihoods/mnist", "estimators": "avb/estimators"}[part]
    return json.loads((REPO_ROOT / "results" / f"{path}.json").read_text())["fingerprint"]


@pytest.mark.slow
@pytest.mark.parametrize("name", FRESH)
def test_fingerprints_are_deterministic_and_within_tolerance_with_onednn_on_and_off(name):
    """Two processes give equal numbers; oneDNN off (another CPU path for every product) stays within RTOL;
    both match the committed record."""
    import concurrent.futures

    command, by_part = FRESH[name]
    # Three processes at once (two cores): the time of about two, and a busy machine is no excuse for a difference.
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        runs = [pool.submit(print_fingerprint, command, env) for env in (None, None, {"TF_ENABLE_ONEDNN_OPTS": "0"})]
        first, second, without_onednn = (by_part(run.result()) for run in runs)
    assert first == second
    for part, numbers in first.items():
        assert fingerprint.differences(numbers, without_onednn[part]) == [], part
        assert fingerprint.differences(committed_fingerprint(part), numbers) == [], part


def repository_copy(tmp_path):
    """The code, the migrated records and the MNIST subset in a folder of their own (no fingerprint cache)."""
    root = tmp_path / "repo"
    for folder in ("listings", "scripts"):
        shutil.copytree(REPO_ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for results in ("vae", "avb"):
        shutil.copytree(REPO_ROOT / "results" / results, root / "results" / results)
    shutil.copytree(MNIST_SUBSET_DIR, root / "tests" / "data" / "mnist")
    return root


def change_function(path, function, old, new):
    """Replace ``old`` by ``new`` once inside the top-level definition ``function`` of the file ``path``."""
    text = path.read_text()
    start = text.index(f"\ndef {function}(")
    end = text.find("\n\n\n", start)
    body = text[start:end]
    assert old in body, (old, body)
    path.write_text(text[:start] + body.replace(old, new, 1) + text[end:])


def move_function(root, listing, function, new_module):
    """Move the top-level ``function`` of ``listing`` into a module of its own (with the listing's imports),
    imported back by the listing."""
    import ast

    path = root / "listings" / "vae" / listing
    text = path.read_text()
    imports = [ast.get_source_segment(text, node) for node in ast.parse(text).body
               if isinstance(node, (ast.Import, ast.ImportFrom))]  # fmt: skip
    start = text.index(f"\ndef {function}(")
    end = text.find("\n\n\n", start)
    body = text[start:end]
    (path.parent / f"{new_module}.py").write_text('"""Moved."""\n\n' + "\n".join(imports) + f"\n\n\n{body.lstrip()}\n")
    text = text[:start] + text[end:]
    first_import = text.index("\nimport ")
    path.write_text(text[:first_import] + f"\nfrom {new_module} import {function}  # noqa: E402" + text[first_import:])


def respell(root):
    """Changes of spelling only: a docstring, ``ruff format`` at another line length, a function moved."""
    change_function(root / "listings" / "vae" / "variational_autoencoder.py", "gaussian_kl_divergence", '"""',
                    '"""Reworded. ')  # fmt: skip
    move_function(root, "mnist_data.py", "check_intensities", "intensities")
    move_function(root, "variational_autoencoder.py", "gaussian_kl_divergence", "kl_closed_form")
    ruff = pathlib.Path(sys.executable).with_name("ruff")
    formatted = subprocess.run([ruff, "format", "--line-length", "88", "--no-cache", root / "listings"], text=True,
                               capture_output=True)  # fmt: skip
    assert formatted.returncode == 0 and "reformatted" in formatted.stdout, formatted.stdout + formatted.stderr


CHECKS = {
    "main post": ["scripts/train_main_post.py", "--check"],
    "avb estimators": ["scripts/avb_experiments.py", "--parts", "estimators", "--check"],
    "avb mnist": ["scripts/avb_experiments.py", "--parts", "mnist", "--check"],
}


@full_mnist
@pytest.mark.slow
@pytest.mark.parametrize(
    "change, stale",
    [
        # Two calls below the main post's run: train_vae -> build_vae -> KLDivergenceLayer -> here.
        (("variational_autoencoder.py", "gaussian_kl_divergence", "ops.sum(1.0 +", "ops.sum(1.5 +"), {"main post"}),
        # Two calls below the AVB MNIST rows (MonteCarloKL.log_posterior -> here); not used by the others.
        (("kl_divergence.py", "gaussian_log_density", "-0.5 * ops.sum(", "-0.51 * ops.sum("), {"avb mnist"}),
        # No behaviour changes: a docstring, a formatter run over the listings, a function moved to a new module.
        ("spelling", set()),
    ],
    ids=["kl-two-calls-deep", "log-density-two-calls-deep", "docstring-format-and-move"],
)
def test_a_change_in_behaviour_makes_exactly_the_records_that_use_it_stale(tmp_path, change, stale):
    root = repository_copy(tmp_path)
    if change == "spelling":
        respell(root)
    else:
        listing, function, old, new = change
        change_function(root / "listings" / "vae" / listing, function, old, new)
    env = {"MNIST_DIR": os.environ.get("MNIST_DIR", str(REPO_ROOT.parent / "shared" / "data" / "mnist"))}
    for name, command in CHECKS.items():
        if name == "avb mnist" and name not in stale:
            continue  # the slowest fingerprint: computed only where it must move
        result = run_python([root / command[0], *command[1:]], env=env, cwd=root)
        if name in stale:
            assert result.returncode == 1 and "behaviour:" in result.stderr, (name, result.stderr[-1000:])
        else:
            assert result.returncode == 0, (name, result.stderr[-1000:])


def test_the_benchmark_guard_moves_with_the_timed_code_not_its_spelling(tmp_path):
    """The benchmark's static call graph: a helper three calls below a worker (worker -> run_keras ->
    train_vae -> monte_carlo_batches) moves it; a docstring, a formatter run and a moved function do not.
    No PyTorch is imported: the call graph is read from the source."""
    root = tmp_path / "repo"
    for folder in ("listings", "scripts"):
        shutil.copytree(REPO_ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO_ROOT / "results" / "performance", root / "results" / "performance")
    check = [root / "scripts" / "benchmark.py", "--check"]
    env = {"PYTHONPATH": ""}
    assert run_python(check, env=env, cwd=root).returncode == 0
    respell(root)
    result = run_python(check, env=env, cwd=root)
    assert result.returncode == 0, result.stderr[-1000:]
    change_function(root / "listings" / "vae" / "train.py", "monte_carlo_batches", "seed=None", "seed=1")
    result = run_python(check, env=env, cwd=root)
    assert result.returncode == 1 and "behaviour:" in result.stderr, result.stderr[-1000:]


@pytest.mark.slow
def test_the_benchmark_call_graph_covers_every_function_a_timed_run_calls(monkeypatch):
    """Traced: every configuration's run (two epochs on 200 images) and the worker that loads the data call
    nothing of ours outside the static call graph the benchmark's guard hashes; and the check can fail: a
    graph from fewer entry points misses functions the run calls."""
    import keras

    import benchmark
    from mnist_data import flatten_and_scale, load_mnist

    monkeypatch.setenv("MNIST_DIR", str(MNIST_SUBSET_DIR))
    # One configuration per code path: S = 5 and S = 25 run the same functions as S = 1.
    configs = ["classic", "ours-S1", "ours-S1-binarised-once", "ours-S1-step-only", "pipeline-only-binarised-once"]
    assert set(configs) <= set(benchmark.config_names("784-256-2"))
    # The worker itself (loading the data) once, with its cheapest configuration; every configuration on 200 images.
    called = fingerprint.trace_our_calls(benchmark.worker, "pipeline-only", "784-256-2", 2, 0.0)[1]
    (x_train, _), _ = load_mnist(MNIST_SUBSET_DIR)
    for config in configs:
        called |= fingerprint.trace_our_calls(
            benchmark.run_keras, config, "784-256-2", 2, flatten_and_scale(x_train[:200])
        )[1]
    # The composed VAE under this process's backend (the benchmark runs each backend in a worker of its own).
    composed = f"composed-S1-{keras.backend.backend()}"
    assert composed in benchmark.config_names("784-256-2")
    called |= fingerprint.trace_our_calls(
        benchmark.run_composed, composed, "784-256-2", 2, flatten_and_scale(x_train[:200])
    )[1]
    top_level = {name.split(".")[1] for name in called}

    def names(entry_points):
        return {name for _, name in fingerprint.static_call_graph("benchmark", entry_points)}

    assert top_level - names(benchmark.TIMED_ENTRY_POINTS) == set()
    assert "monte_carlo_batches" in top_level and "build_classic_vae" in top_level
    assert {"compose_vae", "fit_vae", "MonteCarloBatches"} <= top_level
    assert top_level - names(["summarise"]), "a smaller graph must miss what the run calls"


# Functions that write files or measure time, not the numbers a fingerprint holds.
PLUMBING = {"train_main_post.run", "train_main_post.describe_machine", "train_main_post.current_fingerprint"}
PLUMBING_MODULES = ("provenance.", "fingerprint.", "epoch_timer.", "outputs.")  # records, caches, timers, files


@pytest.mark.slow
def test_the_fingerprint_runs_every_function_the_record_run_calls(tmp_path, monkeypatch):
    """Traced: the record's own run (on the subset, one epoch) calls nothing the fingerprint does not."""
    import mnist_data
    import train_main_post

    monkeypatch.setenv("MNIST_DIR", str(MNIST_SUBSET_DIR))
    monkeypatch.setattr(mnist_data, "DEFAULT_MNIST_DIR", MNIST_SUBSET_DIR, raising=False)
    settings = {**train_main_post.read_train_defaults(), "num_epochs": 1}
    _, run_calls = fingerprint.trace_our_calls(train_main_post.run, settings, tmp_path, {}, verbose=0)
    _, fingerprint_calls = fingerprint.trace_our_calls(train_main_post.behaviour, settings)
    missing = {
        name
        for name in run_calls - fingerprint_calls
        if name.split(".<locals>")[0] not in PLUMBING and not name.startswith(PLUMBING_MODULES)
    }
    assert missing == set(), f"the record's run calls functions its fingerprint never runs: {sorted(missing)}"
    assert "variational_autoencoder.gaussian_kl_divergence" in fingerprint_calls


def structure(settings):
    """The names a setting chooses between (rows, heads, targets, kinds of flow), not its sizes."""
    if isinstance(settings, dict):
        return {key: structure(value) for key, value in settings.items()}
    if isinstance(settings, list) and settings and all(isinstance(item, str) for item in settings):
        return sorted(settings)
    return None


@pytest.mark.parametrize("script", ["avb_experiments", "flow_experiments", "likelihood_experiments"])
def test_fingerprint_settings_reach_every_row_head_and_target_of_the_full_settings(script):
    """Sizes shrink; the choices that pick code paths (rows, heads, targets, flow kinds, models) do not."""
    import importlib

    module = importlib.import_module(script)
    for part in module.PARTS:
        assert structure(module.FINGERPRINT[part]) == structure(module.SETTINGS[part]), (script, part)


def test_a_write_that_fails_leaves_the_old_file_whole_and_no_partial_behind(tmp_path):
    import provenance

    path = tmp_path / "log_px.npz"
    provenance.write_atomically(path, lambda partial: partial.write_bytes(b"old"))

    def write_then_fail(partial):
        partial.write_bytes(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        provenance.write_atomically(path, write_then_fail)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log_px.npz"]


def test_a_record_write_that_fails_midway_leaves_the_old_record_whole(tmp_path, monkeypatch):
    import provenance

    path = tmp_path / "main_post.json"
    provenance.write_record(path, {"test_negative_elbo": 150.0})
    written = pathlib.Path.write_text

    def write_half_then_fail(self, text, *args, **kwargs):
        written(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(pathlib.Path, "write_text", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        provenance.write_record(path, {"test_negative_elbo": 140.0, "settings": {"seed": 0}})
    monkeypatch.undo()
    assert provenance.read_record(path) == {"test_negative_elbo": 150.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["main_post.json"]

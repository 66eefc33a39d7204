"""Behavioural fingerprints: blind to spelling, sensitive to behaviour, deterministic, and covering the run.

The records migrated so far: ``results/vae/main_post.json`` and
``results/avb/*.json``. The others still hash the source of listed
definitions (``provenance.definition_hashes``).
"""

import json
import os
import shutil

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


def test_static_guard_ignores_the_module_a_function_lives_in(tmp_path, monkeypatch):
    for module, extra in (("guard_home_a", ""), ("guard_home_b", "\n\ndef other():\n    return 1\n")):
        (tmp_path / f"{module}.py").write_text(REFERENCE + extra)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert fingerprint.static_guard({"guard_home_a.scale"}) == fingerprint.static_guard({"guard_home_b.scale"})
    (tmp_path / "guard_home_c.py").write_text(REFERENCE.replace("x * factor", "x + factor"))
    assert fingerprint.static_guard({"guard_home_a.scale"}) != fingerprint.static_guard({"guard_home_c.scale"})


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
}


def committed_fingerprint(part):
    path = {"main_post": "vae/main_post", "mnist": "likelihoods/mnist", "estimators": "avb/estimators"}[part]
    return json.loads((REPO_ROOT / "results" / f"{path}.json").read_text())["fingerprint"]


@pytest.mark.slow
@pytest.mark.parametrize("name", FRESH)
def test_fingerprints_are_deterministic_and_within_tolerance_with_onednn_on_and_off(name):
    """Two processes give equal numbers; oneDNN off (another CPU path for every product) stays within RTOL;
    both match the committed record."""
    command, by_part = FRESH[name]
    first, second = by_part(print_fingerprint(command)), by_part(print_fingerprint(command))
    assert first == second
    without_onednn = by_part(print_fingerprint(command, env={"TF_ENABLE_ONEDNN_OPTS": "0"}))
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
        (("log_likelihood.py", "gaussian_log_density", "-0.5 * ops.sum(", "-0.51 * ops.sum("), {"avb mnist"}),
        # A docstring changes no behaviour.
        (("variational_autoencoder.py", "gaussian_kl_divergence", '"""', '"""Reworded. '), set()),
    ],
    ids=["kl-two-calls-deep", "log-density-two-calls-deep", "docstring"],
)
def test_a_change_in_behaviour_makes_exactly_the_records_that_use_it_stale(tmp_path, change, stale):
    root = repository_copy(tmp_path)
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


# Functions that write files or measure time, not the numbers a fingerprint holds.
PLUMBING = {"train_main_post.run", "train_main_post.describe_machine", "train_main_post.current_fingerprint"}
PLUMBING_MODULES = ("provenance.", "fingerprint.", "epoch_timer.")


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

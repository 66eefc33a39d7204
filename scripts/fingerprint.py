"""Behavioural fingerprints: what a record's code does, not how its source is spelt.

A record stores the numbers its own code produces when it runs on fixed, tiny
inputs with fixed seeds (the same function that made the record, with tiny
settings: a few batches of the committed MNIST subset, one epoch, a few
importance samples). The record is stale when today's code gives numbers that
are not close to the stored ones, so a docstring, a formatter run or moving a
function to another module keeps it current, and a change of behaviour in
anything the run calls, however deep, makes it stale. No list of dependencies
is kept by hand: the fingerprint runs the code the record ran.

Timing records (seconds per epoch) depend on speed, which no fingerprint sees;
``static_guard`` hashes the syntax trees (without docstrings) of the functions
a traced run calls, keyed by qualified name, not by module.

Computing fingerprints takes seconds to minutes (models are built and
trained), so they are cached in ``cache/fingerprints/`` (not committed), keyed
by the normalised source of all our code and the settings: an up-to-date
checkout checks its records without running anything.
"""

import ast
import hashlib
import inspect
import json
import math
import os
import pathlib
import subprocess
import sys
import textwrap

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
OUR_CODE = (REPO_ROOT / "listings", REPO_ROOT / "scripts")
CACHE_DIR = REPO_ROOT / "cache" / "fingerprints"

# Relative and absolute tolerance of every fingerprint number. Chosen by
# measurement on this project's 2-core AMD EPYC machine: the same fingerprints
# computed with oneDNN on and off (another CPU path for every product), with
# one thread instead of two, or with XLA's fast-math, differ by at most ~1e-7
# relative (main post: 10 Adam steps; AVB estimators and toy: their quick
# runs); tests/test_fingerprint.py recomputes the oneDNN case. Without XLA,
# oneDNN on/off moved outputs by up to 2e-4 after 20 Adam steps, so RTOL
# leaves 2.5 times that. A behaviour change must move a number by more: a
# constant 0.5-nat shift of the KL moves the main post's negative ELBOs (about
# 400 nats) by 1.2e-3, which the guard test catches. ATOL covers numbers near zero.
RTOL = 5e-4
ATOL = 1e-5

# Numbers in a run's results that measure the machine, not the code.
MACHINE_WORDS = ("seconds", "time", "machine", "versions", "per_second", "memory")


def numbers(results, prefix=""):
    """The numeric leaves of nested results as ``{"a.b.0": float}``, without timings and machine facts."""
    flat = {}
    if isinstance(results, dict):
        items = results.items()
    elif isinstance(results, (list, tuple)):
        items = enumerate(results)
    else:
        if isinstance(results, bool) or not isinstance(results, (int, float)):
            return flat
        return {prefix: float(results)}
    for key, value in items:
        key = str(key)
        if any(word in key for word in MACHINE_WORDS):
            continue
        flat.update(numbers(value, f"{prefix}.{key}" if prefix else key))
    return flat


def differences(stored, current, rtol=RTOL, atol=ATOL):
    """Names of the fingerprint numbers that are missing on one side or not close (NaN equals NaN)."""
    changed = sorted(set(stored) ^ set(current))
    for name in sorted(set(stored) & set(current)):
        a, b = stored[name], current[name]
        if isinstance(a, str) or isinstance(b, str):  # a static guard's digest: equal or not
            if a != b:
                changed.append(name)
            continue
        if math.isnan(a) and math.isnan(b):
            continue
        if not math.isclose(a, b, rel_tol=rtol, abs_tol=atol):
            changed.append(name)
    return changed


def describe_differences(stored, current, shown=3):
    """One line: which numbers moved, and by how much."""
    changed = differences(stored, current)
    parts = []
    for name in changed[:shown]:
        parts.append(f"{name} {stored.get(name, 'missing')} -> {current.get(name, 'missing')}")
    more = f" and {len(changed) - shown} more" if len(changed) > shown else ""
    return "; ".join(parts) + more


def _without_docstrings(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = node.body[1:] or [ast.Pass()]
    return tree


def normalised_source(source):
    """The syntax tree of Python source, without docstrings, comments or formatting, as a string."""
    return ast.dump(_without_docstrings(ast.parse(textwrap.dedent(source))), annotate_fields=False)


def code_digest(paths=None):
    """SHA-256 over the normalised source of every Python file of our code (the fingerprint cache's key)."""
    digest = hashlib.sha256()
    files = paths or sorted(path for folder in OUR_CODE for path in folder.rglob("*.py"))
    for path in files:
        digest.update(path.name.encode())
        digest.update(normalised_source(path.read_text()).encode())
    return digest.hexdigest()


def cache_key(name, settings, extra=""):
    payload = json.dumps({"name": name, "settings": settings, "code": code_digest(), "extra": extra}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def cached(name, settings, compute, extra=""):
    """``compute()`` (a dict of numbers), cached under ``cache/fingerprints`` by code, settings and ``extra``."""
    path = CACHE_DIR / f"{cache_key(name, settings, extra)}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            pass  # a damaged cache entry is recomputed
    values = compute()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(values, sort_keys=True))
    temporary.replace(path)
    return values


def git_commit():
    """The commit the working tree is at (with "+changes" when it has uncommitted changes), or None."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+changes" if dirty else "")


def last_commit_of(path):
    """The last commit that changed ``path`` (the commit a committed record was made at), or None."""
    try:
        commit = subprocess.run(
            ["git", "log", "-1", "--format=%H", "--", str(path)], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return None
    return commit or None


def _is_ours(filename):
    return any(str(folder) in filename for folder in OUR_CODE)


def trace_our_calls(function, *args, **kwargs):
    """Call ``function``; return ``(result, {"module.qualname", ...})`` of our functions that ran.

    A profile hook sees every Python call, including those made while
    TensorFlow traces a compiled step, so functions that only run inside a
    graph are counted too.
    """
    called = set()

    def profile(frame, event, _arg):
        # Functions, lambdas and comprehensions only: a module or class body runs once, on import.
        if event == "call" and frame.f_code.co_flags & inspect.CO_OPTIMIZED and _is_ours(frame.f_code.co_filename):
            module = frame.f_globals.get("__name__", "?")
            called.add(f"{module}.{frame.f_code.co_qualname}")

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        result = function(*args, **kwargs)
    finally:
        sys.setprofile(previous)
    return result, called


def static_guard(qualified_names):
    """SHA-256 of the syntax trees (no docstrings) of our functions ``module.qualname``, keyed by qualname.

    The module part is dropped from the key, so moving a function to another
    module keeps the guard; nested functions are covered by their enclosing
    function's tree.
    """
    import importlib

    trees = {}
    for name in sorted(qualified_names):
        module_name, _, qualname = name.partition(".")
        module = sys.modules.get(module_name) or importlib.import_module(module_name)
        value = module
        for part in qualname.split("."):
            if part == "<locals>" or not hasattr(value, part):
                value = None
                break
            value = getattr(value, part)
        if value is None or not (inspect.isfunction(value) or inspect.isclass(value)):
            continue  # a nested function, a lambda or a comprehension: inside its parent's tree
        trees[qualname] = hashlib.sha256(normalised_source(inspect.getsource(value)).encode()).hexdigest()
    return hashlib.sha256(json.dumps(trees, sort_keys=True).encode()).hexdigest()

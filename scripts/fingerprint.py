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
``static_call_graph_guard`` hashes the syntax trees (without docstrings) of
every definition of ours reachable by name from the timed functions, read
from the source, keyed by name, not by module (``trace_our_calls`` lets a
test check that the graph covers what a run calls).

Computing fingerprints takes seconds to minutes (models are built and
trained), so they are cached in ``cache/fingerprints/`` (not committed), keyed
by the normalised source of all our code and the settings: an up-to-date
checkout checks its records without running anything.
"""

import ast
import contextlib
import hashlib
import inspect
import io
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


# A list of more numbers than this (an image, a curve) enters as a summary (``_summary``), so a record
# does not carry thousands of values.
LONG = 32


def _summary(values):
    """Length, minimum, maximum, and sums of |v|, of v squared and of position-weighted |v|: sums of
    absolute values, so that large values cannot cancel into a small sum that rounding moves."""
    n = len(values)
    return {
        "n": float(n),
        "abs_sum": math.fsum(abs(v) for v in values),
        "sum_of_squares": math.fsum(v * v for v in values),
        "weighted_abs_sum": math.fsum((i + 1) / n * abs(v) for i, v in enumerate(values)),
        "min": min(values),
        "max": max(values),
    }


def numbers(results, prefix=""):
    """The numeric leaves of nested results as ``{"a.b.0": float}``, without timings and machine facts.

    A list of more than ``LONG`` plain numbers enters as its ``_summary``.
    """
    flat = {}
    if isinstance(results, dict):
        items = results.items()
    elif isinstance(results, (list, tuple)):
        plain = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in results)
        if plain and len(results) > LONG:
            return numbers(_summary([float(v) for v in results]), prefix)
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
    """SHA-256 over the normalised source of every Python file of our code (the fingerprint cache's key).

    Kept per process while no file's size or modification time changes, so one
    process checking many records parses the code once.
    """
    files = paths or sorted(path for folder in OUR_CODE for path in folder.rglob("*.py"))
    stamp = tuple((str(path), path.stat().st_mtime_ns, path.stat().st_size) for path in files)
    if stamp not in _DIGESTS:
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.name.encode())
            digest.update(normalised_source(path.read_text()).encode())
        _DIGESTS[stamp] = digest.hexdigest()
    return _DIGESTS[stamp]


_DIGESTS = {}


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
    with contextlib.redirect_stdout(io.StringIO()):  # the run's progress lines: not for the reader here
        values = compute()
    return store(name, settings, values, extra)


def store(name, settings, values, extra=""):
    """Put ``values`` in the cache under the key ``cached`` would use (after a run that computed them anyway)."""
    path = CACHE_DIR / f"{cache_key(name, settings, extra)}.json"
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

    A trace hook sees every Python call, including those made while
    TensorFlow traces a compiled step, so functions that only run inside a
    graph are counted too. It returns no local hook, so lines are not traced.
    """
    called = set()

    def trace(frame, event, _arg):
        # Functions, lambdas and comprehensions only: a module or class body runs once, on import.
        if event == "call" and frame.f_code.co_flags & inspect.CO_OPTIMIZED and _is_ours(frame.f_code.co_filename):
            module = frame.f_globals.get("__name__", "?")
            called.add(f"{module}.{frame.f_code.co_qualname}")

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        result = function(*args, **kwargs)
    finally:
        sys.settrace(previous)
    return result, called


# ---------------------------------------------------------------------------
# The static call graph: what a timing record's code can call, read from the
# source without importing it (so the benchmark's PyTorch reference is
# covered on a machine without PyTorch).
# ---------------------------------------------------------------------------

OUR_MODULE_FOLDERS = (REPO_ROOT / "listings" / "vae", REPO_ROOT / "scripts")


def _module_file(module_name):
    for folder in OUR_MODULE_FOLDERS:
        path = folder / f"{module_name}.py"
        if path.is_file():
            return path
    return None


def _imports(nodes):
    """``{local name: (module, attribute or None)}`` of the import statements among ``nodes``."""
    found = {}
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                found[alias.asname or alias.name] = (node.module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                found[alias.asname or alias.name.split(".")[0]] = (alias.name, None)
    return found


def _module_index(module_name):
    """Top-level definitions ``{name: node}`` and imports of one of our modules, parsed, not imported."""
    path = _module_file(module_name)
    tree = ast.parse(path.read_text())
    definitions = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            definitions[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    definitions[target.id] = node
    return definitions, _imports(tree.body)


def static_call_graph(module_name, names):
    """``{(module, name): digest}`` of our top-level definitions reachable by name from ``module.names``.

    Read from the source files: a function, class or constant refers to
    another by a name (its module's or one it imports, at the top or inside
    the function) or by ``module.attribute`` for a module of ours it
    imports. Each definition's digest is that of its syntax tree without
    docstrings and import statements, plus what its names from other
    packages resolve to (`_definition_digest`), so comments, formatting,
    docstrings and where an import is written do not enter.
    """
    indices = {}
    graph = {}
    todo = [(module_name, name) for name in names]
    while todo:
        module_name, name = todo.pop()
        if (module_name, name) in graph or _module_file(module_name) is None:
            continue
        if module_name not in indices:
            indices[module_name] = _module_index(module_name)
        definitions, imports = indices[module_name]
        if name not in definitions:
            if name in imports and imports[name][1] is not None:
                todo.append(imports[name])  # a name imported from another module of ours
            continue
        node = definitions[name]
        local = {**imports, **_imports(ast.walk(node))}
        graph[(module_name, name)] = _definition_digest(node, local)
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name):
                if sub.id in local and local[sub.id][1] is not None:
                    todo.append(local[sub.id])
                elif sub.id in definitions:
                    todo.append((module_name, sub.id))
            elif isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name):
                target = local.get(sub.value.id)
                if target is not None and target[1] is None:  # module.attribute of an imported module
                    todo.append((target[0], sub.attr))
    return graph


def _copy(node):
    return ast.parse(ast.unparse(node)).body[0]


class _WithoutImports(ast.NodeTransformer):
    def visit_Import(self, node):
        return None

    visit_ImportFrom = visit_Import


def _definition_digest(node, local):
    """SHA-256 of a definition's syntax tree without docstrings or import statements, and of what the
    names it uses from modules not ours resolve to: where an import is written (at the top of the
    module or inside the function) does not enter; which module a name comes from does."""
    tree = _WithoutImports().visit(_without_docstrings(ast.Module(body=[_copy(node)], type_ignores=[])))
    used = {sub.id for sub in ast.walk(node) if isinstance(sub, ast.Name)}
    external = sorted([name, *local[name]] for name in used if name in local and _module_file(local[name][0]) is None)
    text = ast.dump(tree, annotate_fields=False) + json.dumps(external)
    return hashlib.sha256(text.encode()).hexdigest()


def static_call_graph_guard(module_name, names):
    """SHA-256 of ``static_call_graph``, keyed by definition name only (moving one between modules keeps it)."""
    by_name = {}
    for (_, name), digest in static_call_graph(module_name, names).items():
        by_name.setdefault(name, []).append(digest)
    return hashlib.sha256(json.dumps({k: sorted(v) for k, v in by_name.items()}, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------
# Figures: the plotted arrays, the texts and the styles of every figure saved.
# ---------------------------------------------------------------------------


def _array_summary(values):
    """``_summary`` of an array; of each column for points, colours and the like (two to four columns)."""
    import numpy as np

    array = np.ma.filled(np.ma.masked_invalid(np.asarray(values, dtype="float64")), 0.0)
    if array.size == 0:
        return {"n": 0.0}
    if array.ndim == 2 and 2 <= array.shape[1] <= 4:
        return {f"column{j}": _summary(array[:, j].tolist()) for j in range(array.shape[1])}
    return _summary(array.ravel().tolist())


def figure_numbers(figure):
    """What a matplotlib figure shows: a summary of each plotted array (data coordinates), and one digest
    of its texts (titles, labels, tick labels, legends) and styles (colours, widths, markers, size)."""
    arrays, words = {}, [list(map(float, figure.get_size_inches())), figure.dpi]
    for i, ax in enumerate(figure.axes):
        words += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), ax.get_xscale(), ax.get_yscale()]
        words += [label.get_text() for label in [*ax.get_xticklabels(), *ax.get_yticklabels(), *ax.texts]]
        arrays[f"{i}.limits"] = [*ax.get_xlim(), *ax.get_ylim()]
        legend = ax.get_legend()
        if legend is not None:
            words += [text.get_text() for text in legend.get_texts()]
        for j, line in enumerate(ax.lines):
            arrays[f"{i}.line{j}"] = line.get_xydata()
            words += [str(line.get_color()), line.get_linestyle(), line.get_linewidth(), str(line.get_marker())]
        for j, collection in enumerate(ax.collections):
            arrays[f"{i}.collection{j}.offsets"] = collection.get_offsets()
            if hasattr(collection, "get_coordinates"):  # a QuadMesh: its grid, not one path per quad
                arrays[f"{i}.collection{j}.paths"] = collection.get_coordinates().reshape(-1, 2)
            else:
                vertices = [path.vertices.ravel() for path in collection.get_paths()]
                arrays[f"{i}.collection{j}.paths"] = [v for block in vertices for v in block]
            if collection.get_array() is not None:
                arrays[f"{i}.collection{j}.values"] = collection.get_array()
            arrays[f"{i}.collection{j}.colours"] = collection.get_facecolor()
        for j, image in enumerate(ax.images):
            arrays[f"{i}.image{j}"] = image.get_array()
            words += [str(image.get_cmap().name), list(map(float, image.get_extent()))]
        for j, patch in enumerate(ax.patches):
            arrays[f"{i}.patch{j}"] = patch.get_patch_transform().transform(patch.get_path().vertices)
            words.append(str(patch.get_facecolor()))
    values = {name: _array_summary(array) for name, array in arrays.items()}
    values["texts_and_styles"] = hashlib.sha256(json.dumps(words, default=str).encode()).hexdigest()
    return values


def drawn_numbers(draw):
    """Run ``draw()``; return ``figure_numbers`` of every matplotlib figure it saves (by file name) and the
    SHA-256 of the graphviz source of every diagram it renders with ``make_diagrams.model_to_svg``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    import make_diagrams

    captured = {}
    save, render = Figure.savefig, make_diagrams.render_svg

    def savefig(figure, fname, *args, **kwargs):
        result = save(figure, fname, *args, **kwargs)  # drawn first, so tick labels are final
        captured[pathlib.Path(str(fname)).name] = figure_numbers(figure)
        return result

    def render_svg(source):
        captured[f"diagram{len([k for k in captured if k.startswith('diagram')])}"] = hashlib.sha256(
            source.encode()
        ).hexdigest()
        return render(source)

    Figure.savefig, make_diagrams.render_svg = savefig, render_svg
    try:
        draw()
    finally:
        Figure.savefig, make_diagrams.render_svg = save, render
    flat = {}
    for name, value in captured.items():
        if isinstance(value, str):
            flat[name] = value
        else:
            flat.update({f"{name}.{key}": v for key, v in value.items() if isinstance(v, str)})
            flat.update(numbers({key: v for key, v in value.items() if not isinstance(v, str)}, name))
    return flat

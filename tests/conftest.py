"""Shared fixtures: import paths, the committed MNIST subset, the built and served site."""

import fcntl
import functools
import http.server
import json
import os
import pathlib
import subprocess
import sys
import threading

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
LISTINGS_DIR = REPO_ROOT / "listings" / "vae"
SCRIPTS_DIR = REPO_ROOT / "scripts"
MNIST_SUBSET_DIR = REPO_ROOT / "tests" / "data" / "mnist"
VENV_BIN = pathlib.Path(sys.executable).parent
POST_SLUG = "implementing-variational-autoencoders-in-keras-beyond-the-quickstart-tutorial"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
sys.dont_write_bytecode = True
for path in (LISTINGS_DIR, SCRIPTS_DIR):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


# The fast tier (`make test-fast`, `pytest -m "not slow"`) leaves out the tests that build the site, drive
# the browser, start the programs as subprocesses or train in a quick mode; the whole suite runs them all.
SLOW_MODULES = {"test_site", "test_cli"}
SLOW_FIXTURES = {"built_site", "site_url", "browser"}


def pytest_collection_modifyitems(items):
    for item in items:
        module = getattr(item, "module", None)
        if (module is not None and module.__name__ in SLOW_MODULES) or SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


def _full_mnist_missing():
    from mnist_data import resolve_mnist_dir

    return resolve_mnist_dir() is None


# Records hash the full MNIST files, so checking them needs those files.
full_mnist = pytest.mark.skipif(
    _full_mnist_missing(), reason="the records hash the full MNIST files; set MNIST_DIR or add ../shared"
)


def assert_parts_current(experiments):
    """``<script> --check`` passes: every part record of an experiments module matches its inputs."""
    script = pathlib.Path(experiments.__file__).relative_to(REPO_ROOT)
    result = run_python([script, "--check"])
    assert result.returncode == 0, f"{experiments.OUTPUT_DIR} is stale: {result.stderr.strip()[-500:]}"


def assert_settings_recorded(experiments):
    """Every part record of an experiments module holds the settings the module now has."""
    for part in experiments.PARTS:
        recorded = json.loads((experiments.OUTPUT_DIR / f"{part}.json").read_text())["settings"]
        assert recorded == experiments.SETTINGS[part], f"{part}: rerun {pathlib.Path(experiments.__file__).name}"


def committed_part(experiments, part):
    """A committed part record of an experiments module, checked to hold the module's settings, and its
    per-image ``log p(x)`` arrays (``<part>/log_px.npz`` beside it): ``(results, settings, log_px)``."""
    import numpy as np

    record = json.loads((experiments.OUTPUT_DIR / f"{part}.json").read_text())
    settings = experiments.SETTINGS[part]
    assert record["settings"] == settings
    with np.load(experiments.OUTPUT_DIR / part / "log_px.npz") as arrays:
        return record["results"], settings, dict(arrays)


def assert_figures_current(script, output_dir, figures, tmp_path, record_name="figures.json", same_bytes=None):
    """Redrawn by today's code from the committed inputs, the figures equal the committed ones, and the fresh
    record's settings and fingerprint (the plotted arrays, texts and styles) match the committed record,
    which is what ``<script> --check`` compares; one drawing serves both checks.

    ``same_bytes`` lists the figures compared byte for byte (default: all); the others are PNG images
    compared pixel by pixel with room for a few anti-aliased pixels on another machine.
    """
    import numpy as np

    import fingerprint

    result = run_python([script, "--output-dir", tmp_path])
    assert result.returncode == 0, result.stderr[-2000:]
    committed, fresh = (json.loads((folder / record_name).read_text()) for folder in (output_dir, tmp_path))
    assert fresh["inputs"] == committed["inputs"], f"{record_name}: settings changed; run make site"
    moved = fingerprint.describe_differences(committed["fingerprint"], fresh["fingerprint"])
    assert not moved, f"{output_dir.name}/{record_name} is stale ({moved}): run make site"
    for name in figures:
        if same_bytes is None or name in same_bytes:
            assert (tmp_path / name).read_bytes() == (output_dir / name).read_bytes(), f"{name}: run make site"
        else:
            import matplotlib.image

            a, b = (matplotlib.image.imread(folder / name) for folder in (tmp_path, output_dir))
            assert a.shape == b.shape and np.mean(np.abs(a - b) > 0.1) < 0.001, f"{name} does not match: make site"


def value_and_gradient(function, values):
    """``function(values)`` and the gradient of its sum with respect to ``values``, on any Keras backend."""
    import keras
    import numpy as np

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        variable = tf.Variable(values)
        with tf.GradientTape() as tape:
            result = function(variable)
        return result.numpy(), tape.gradient(result, variable).numpy()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        result, pullback = jax.vjp(function, jnp.asarray(values))
        return np.asarray(result), np.asarray(pullback(jnp.ones_like(result))[0])
    if backend == "torch":
        import torch

        tensor = torch.tensor(values, requires_grad=True)
        result = function(tensor)
        result.sum().backward()
        return result.detach().numpy(), tensor.grad.numpy()
    raise NotImplementedError(f"no gradient helper for the {backend} backend")


@pytest.fixture(scope="session")
def mnist_subset():
    """The committed subset, flattened and scaled: (x_train, y_train), (x_test, y_test)."""
    from mnist_data import flatten_and_scale, load_mnist

    (x_train, y_train), (x_test, y_test) = load_mnist(MNIST_SUBSET_DIR)
    return (flatten_and_scale(x_train), y_train), (flatten_and_scale(x_test), y_test)


def run_python(args, env=None, cwd=REPO_ROOT, timeout=600):
    """Run ``python args...`` with the test interpreter; return the CompletedProcess."""
    full_env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout
    )


@pytest.fixture(scope="session")
def built_site():
    """Build the site with `nikola build --strict` (incremental) and return output/.

    Under two pytest workers (`make test`: pytest-xdist, one test file per worker) two files may ask for the
    site at once: a lock makes the second build wait for the first, and then find nothing to do.
    """
    lock_path = REPO_ROOT / "cache" / "site-build.lock"
    lock_path.parent.mkdir(exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = subprocess.run(
            [str(VENV_BIN / "nikola"), "build", "--strict"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return REPO_ROOT / "output"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def site_url(built_site):
    """Serve output/ on 127.0.0.1 (a free port) for the session; yield the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(built_site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()

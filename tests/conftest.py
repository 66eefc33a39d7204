"""Shared fixtures: import paths, the committed MNIST subset, the built and served site."""

import functools
import http.server
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
    """Build the site with `nikola build --strict` (incremental) and return output/."""
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

"""Every Keras backend: the core tests pass under JAX and PyTorch too, and a model saved under one backend
reloads under another with the same outputs. Each backend runs in a process of its own (Keras picks its
backend once, when it is first imported); `make test` installs both (requirements-backends.txt)."""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import REPO_ROOT

BACKENDS = ("jax", "torch")
# The composed VAE, its training, checkpoints and resume, the likelihoods' maths and the gradient estimators;
# the experiment scripts and records are TensorFlow's.
CORE_TESTS = [
    "tests/test_compose.py",
    "tests/test_training.py",
    "tests/test_checkpoints.py",
    "tests/test_likelihoods.py",
    "tests/test_convolutional.py",
    "tests/test_gradients.py",
]


def run_under(backend, args, timeout=900):
    if importlib.util.find_spec(backend) is None:
        pytest.fail(f"the {backend} backend is not installed: run `make test` (it installs requirements-backends.txt)")
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_core_tests_pass_under_another_backend(backend):
    result = run_under(backend, ["-m", "pytest", "-q", "-x", "-m", "not slow", "-p", "no:cacheprovider", *CORE_TESTS])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "passed" in result.stdout


RELOAD = """
import sys
import keras, numpy as np
sys.path.insert(0, "listings/vae")
import compose  # registers the layers
assert keras.backend.backend() == sys.argv[3], keras.backend.backend()
inputs = dict(np.load(sys.argv[2]))
vae = keras.saving.load_model(sys.argv[1], safe_mode=True)
parameters, log_ratio = (keras.ops.convert_to_numpy(t) for t in vae([inputs["x"], inputs["eps"]]))
np.savez(sys.argv[4], parameters=parameters, log_ratio=log_ratio)
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_model_saved_under_tensorflow_reloads_under_another_backend_with_the_same_outputs(backend, tmp_path):
    from compose import compose_vae

    assert keras.backend.backend() == "tensorflow"
    keras.utils.set_random_seed(0)
    vae = compose_vae(6, 2, posterior="iaf", divergence="monte_carlo", likelihood="gaussian", objective="iwae",
                      hidden_units=8, num_flows=2, flow_hidden_units=8)  # fmt: skip
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 6)).astype("float32")
    eps = rng.standard_normal((3, 4, 2)).astype("float32")
    np.savez(tmp_path / "inputs.npz", x=x, eps=eps)
    vae.save(tmp_path / "vae.keras")
    parameters, log_ratio = (keras.ops.convert_to_numpy(t) for t in vae([x, eps]))
    args = ["-c", RELOAD, tmp_path / "vae.keras", tmp_path / "inputs.npz", backend, tmp_path / "outputs.npz"]
    result = run_under(backend, args, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    theirs = np.load(tmp_path / "outputs.npz")
    np.testing.assert_allclose(theirs["parameters"], parameters, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(theirs["log_ratio"], log_ratio, rtol=1e-5, atol=1e-5)

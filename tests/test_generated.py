"""Committed diagrams, results and figures are current and come from the code.

Nothing here retrains to full length: the records' input hashes say whether
the committed outputs are stale, and the diagrams and figures are redrawn
from the committed model into a temporary folder and compared.
"""

import json

import pytest

import export_explorer
import make_diagrams
import plot_benchmark
import plot_main_post
import provenance
import train_main_post
from conftest import MNIST_SUBSET_DIR, REPO_ROOT, assert_figures_current, full_mnist, run_python

IMAGES = REPO_ROOT / "images" / "vae"
RESULTS = REPO_ROOT / "results" / "vae"


def test_diagrams_are_byte_identical_to_a_fresh_drawing(tmp_path):
    diagrams = [f"{name}.svg" for name in make_diagrams.DIAGRAMS]
    assert_figures_current("scripts/make_diagrams.py", IMAGES, diagrams, tmp_path, record_name="diagrams.json")


def test_diagrams_show_the_mc_axis():
    record = json.loads((IMAGES / "diagrams.json").read_text())["settings"]
    svg = (IMAGES / "reparameterization_shapes.svg").read_text()
    mc_shape = f"(None, {record['mc_samples']}, {record['latent_dim']})"
    assert svg.count(mc_shape) >= 3  # eps, z_eps and z
    assert f"(None, {record['latent_dim']})" in svg  # z_mean and z_scale
    assert "Lambda" not in (IMAGES / "vae.svg").read_text()


@full_mnist
def test_results_record_matches_its_inputs():
    result = run_python(["scripts/train_main_post.py", "--check"])
    assert result.returncode == 0, f"results/vae is stale, run make site: {result.stderr.strip()[-500:]}"


def test_results_record_is_consistent():
    record = json.loads((RESULTS / "main_post.json").read_text())
    history = json.loads((RESULTS / "history.json").read_text())
    settings = record["settings"]
    assert settings == train_main_post.read_train_defaults()
    assert record["num_epochs"] == settings["num_epochs"] == len(history["loss"]) == len(history["val_loss"])
    assert record["num_train"] == 60_000 and record["num_test"] == 10_000
    # The final estimate and the last epoch's test loss measure the same thing with other noise.
    assert abs(record["test_negative_elbo"] - history["val_loss"][-1]) < 5 * record["test_negative_elbo_stderr"] + 1
    assert record["test_negative_elbo"] < history["val_loss"][0]
    assert 0 < record["seconds_per_epoch"] <= record["wall_time_seconds"]


@full_mnist
def test_figures_redraw_from_committed_model(tmp_path):
    figures = plot_main_post.FIGURES
    assert_figures_current("scripts/plot_main_post.py", IMAGES, figures, tmp_path, same_bytes=["loss_curve.svg"])


@pytest.mark.slow
def test_quick_training_run_writes_every_number_the_post_needs(tmp_path):
    result = run_python(
        ["scripts/train_main_post.py", "--quick", "--output-dir", tmp_path], env={"MNIST_DIR": str(MNIST_SUBSET_DIR)}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    quick = json.loads((tmp_path / "main_post.json").read_text())
    committed = json.loads((RESULTS / "main_post.json").read_text())
    assert set(quick) == set(committed)
    assert quick["num_epochs"] == 1 and quick["num_train"] == 1000
    assert quick["inputs"]["settings"] != committed["inputs"]["settings"]
    # A second run with --if-stale finds the record current and trains nothing.
    again = run_python(
        ["scripts/train_main_post.py", "--quick", "--if-stale", "--output-dir", tmp_path],
        env={"MNIST_DIR": str(MNIST_SUBSET_DIR)},
    )
    assert again.returncode == 0 and "nothing to train" in again.stdout


def test_staleness_check_notices_a_changed_input(tmp_path):
    record = {"inputs": {"a.py": "0" * 64, "settings": "1" * 64}}
    assert provenance.stale_inputs(record, {"a.py": "0" * 64, "settings": "1" * 64}) == []
    assert provenance.stale_inputs(record, {"a.py": "f" * 64, "settings": "1" * 64}) == ["a.py"]
    assert provenance.stale_inputs(record, {"a.py": "0" * 64, "settings": "1" * 64, "b.py": "2" * 64}) == ["b.py"]
    assert provenance.stale_inputs(None, {"a.py": "0"}) == ["a.py"]


def test_benchmark_results_match_the_timed_code():
    result = run_python(["scripts/benchmark.py", "--check"])
    assert result.returncode == 0, f"rerun the benchmark (make benchmark): {result.stderr.strip()[-500:]}"
    results = json.loads(plot_benchmark.RESULTS.read_text())
    assert not results["settings"]["quick"] and results["settings"]["num_examples"] == 60_000


def test_benchmark_chart_redraws_from_the_committed_results(tmp_path):
    output_dir, figures = plot_benchmark.OUTPUT_DIR, [plot_benchmark.FIGURE, plot_benchmark.BACKENDS_FIGURE]
    assert_figures_current("scripts/plot_benchmark.py", output_dir, figures, tmp_path)


EXPLORER = REPO_ROOT / "files" / "explorer"


@full_mnist
def test_explorer_files_match_the_committed_model():
    result = run_python(["scripts/export_explorer.py", "--check"])
    assert result.returncode == 0, f"files/explorer is stale, run make site: {result.stderr.strip()[-500:]}"


def test_explorer_files_hold_the_keras_decoder_and_the_test_codes():
    """decoder.bin is the Keras decoder's kernels and biases, bit for bit, where the manifest says; codes.bin
    the encoder's posterior means of the MNIST test images (the committed subset's first images), in order."""
    import numpy as np
    from mnist_data import flatten_and_scale, load_mnist
    from visualize import load_vae

    record = json.loads((EXPLORER / export_explorer.RECORD_NAME).read_text())
    assert record["inputs"]["results/vae/vae.keras"] == provenance.file_sha256(RESULTS / "vae.keras")
    for name in export_explorer.FILES:
        assert provenance.file_sha256(EXPLORER / name) == record["files"][name]["sha256"], name
    _, encoder, decoder = load_vae(RESULTS / "vae.keras")
    weights = np.fromfile(EXPLORER / "decoder.bin", dtype="<f4")
    dense = [layer for layer in decoder.layers if layer.get_weights()]
    assert len(dense) == len(record["layers"]) == 2
    for layer, entry in zip(dense, record["layers"], strict=True):
        kernel, bias = layer.get_weights()
        start = entry["kernel"]["offset"]
        assert np.array_equal(weights[start : start + kernel.size].reshape(entry["kernel"]["shape"]), kernel)
        start = entry["bias"]["offset"]
        assert np.array_equal(weights[start : start + bias.size], bias)
        assert entry["activation"] == layer.get_config()["activation"]
    assert sum(layer.get_weights()[0].size + layer.get_weights()[1].size for layer in dense) == weights.size
    codes = np.fromfile(EXPLORER / "codes.bin", dtype="<f4").reshape(record["num_codes"], 2)
    labels = np.fromfile(EXPLORER / "labels.bin", dtype="u1")
    _, (x_test, y_test) = load_mnist(MNIST_SUBSET_DIR)
    count = len(x_test)
    z_mean, _ = encoder.predict(flatten_and_scale(x_test), verbose=0)
    assert np.abs(codes[:count] - z_mean).max() < 1e-4
    assert np.array_equal(labels[:count], y_test)
    low, high = record["extent"]
    inside = np.all((codes >= low) & (codes <= high), axis=1)
    # the plane shows the codes: each axis leaves out at most 1 - quantile at either end
    assert inside.mean() >= 1 - 4 * (1 - export_explorer.SETTINGS["extent_quantile"])
    for example in record["walk_examples"]:  # each a test image of its digit, its code inside the plane
        assert labels[example["index"]] == example["digit"] and example["index"] < count
        assert np.all((low < codes[example["index"]]) & (codes[example["index"]] < high))


def test_the_explorer_refuses_a_decoder_it_would_compute_wrongly():
    """The page runs Dense layers and puts a sigmoid on the last one's logits: a decoder with another layer,
    or a sigmoid of its own at the end (which the page would apply twice), is refused in one line."""
    import keras

    ends_in_sigmoid = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation="relu"),
                                        keras.layers.Dense(3, activation="sigmoid")])  # fmt: skip
    with pytest.raises(ValueError, match="Expected a last Dense layer with activation='linear'. Received: 'sigmoid'"):
        export_explorer.dense_layers(ends_in_sigmoid)
    with pytest.raises(ValueError, match="runs Dense layers only. Received the layer .* \\(Dropout\\)"):
        export_explorer.dense_layers(keras.Sequential([keras.Input((2,)), keras.layers.Dropout(0.1)]))
    fine = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(3)])
    assert [activation for *_, activation in export_explorer.dense_layers(fine)] == ["tanh", "linear"]

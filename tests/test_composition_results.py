"""The composition page's committed measurement is current and is what its model computes.

Nothing here retrains to full length: the record's input hashes and fingerprint say whether it is stale, the
committed model reloads (safe mode) and scores its first test images to the stored per-image values, and a
quick run checks that the script still produces every number the page reads.
"""

import json

import keras
import numpy as np
import pytest

import composition_experiments
from conftest import MNIST_SUBSET_DIR, REPO_ROOT, assert_parts_current, assert_settings_recorded, full_mnist, run_python

RESULTS = composition_experiments.OUTPUT_DIR
PAGE_NUMBERS = ["results.test.nll", "results.test.nll_stderr", "results.test.bits_per_dim", "settings.mc_samples"]
FULL_RUN_NUMBERS = ["results.reference.nll", "results.reference.paired_difference",
                    "results.reference.paired_difference_stderr"]  # fmt: skip


def lookup(record, dotted):
    for key in dotted.split("."):
        record = record[key]
    return record


def record():
    return json.loads((RESULTS / "iaf_iwae_cb.json").read_text())


def test_the_record_holds_the_committed_settings():
    assert_settings_recorded(composition_experiments)


@full_mnist
def test_the_record_matches_its_inputs():
    assert_parts_current(composition_experiments)


def test_the_committed_model_reloads_and_scores_what_the_record_holds():
    """The first 20 test images (two scoring batches, the same draws of eps) scored again by today's code."""
    from likelihood_experiments import dequantised_mnist
    from log_likelihood import log_likelihood
    from mnist_data import MNISTError

    settings = composition_experiments.SETTINGS["iaf_iwae_cb"]
    stored = np.load(RESULTS / "iaf_iwae_cb" / "log_px.npz")
    assert stored["log_px"].shape == stored["reference_log_px"].shape == (settings["num_test"],)
    np.testing.assert_allclose(-stored["log_px"].mean(), record()["results"]["test"]["nll"], rtol=1e-9)
    difference = stored["log_px"] - stored["reference_log_px"]
    np.testing.assert_allclose(difference.mean(), record()["results"]["reference"]["paired_difference"], rtol=1e-9)
    try:
        _, x_test, _ = dequantised_mnist({**settings, "num_train": 1, "num_test": 20})
    except MNISTError:
        x_test = None  # no full MNIST here: the stored values are checked above, the rescoring needs the images
    if x_test is not None:
        vae = keras.saving.load_model(RESULTS / "iaf_iwae_cb" / "vae.keras", safe_mode=True)
        samples = settings["log_likelihood_samples"]
        log_px = log_likelihood(vae, x_test, "continuous_bernoulli", samples, seed=settings["seed"])
        np.testing.assert_allclose(log_px, stored["log_px"][:20], rtol=1e-5, atol=1e-3)


@pytest.mark.slow
def test_the_quick_run_produces_every_number_the_page_reads(tmp_path):
    result = run_python(
        ["scripts/composition_experiments.py", "--quick", "--output-dir", tmp_path],
        env={"MNIST_DIR": str(MNIST_SUBSET_DIR)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    quick = json.loads((tmp_path / "iaf_iwae_cb.json").read_text())
    for dotted in PAGE_NUMBERS:
        assert np.isfinite(lookup(quick, dotted)), dotted
    for dotted in PAGE_NUMBERS + FULL_RUN_NUMBERS:
        assert np.isfinite(lookup(record(), dotted)), dotted
    assert keras.saving.load_model(tmp_path / "iaf_iwae_cb" / "vae.keras", safe_mode=True).name.startswith("vae_iaf")


def test_the_page_counts_the_valid_combinations_the_tests_build():
    from test_compose import VALID

    text = " ".join((REPO_ROOT / "posts" / "parts-that-combine.rst").read_text().split())
    assert f"every valid combination ({len(VALID)} of them" in text

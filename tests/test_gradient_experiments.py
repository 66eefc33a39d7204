"""scripts/gradient_experiments.py: a quick run on the committed MNIST subset records the spread of every estimator's
gradient against the number of samples (on the linear-Gaussian model and on trained rows) and trains one model per
estimator; the committed records hold what the
post reads, computed from the per-image estimates beside them."""

import json

import numpy as np
import pytest

import gradient_experiments
from conftest import MNIST_SUBSET_DIR, committed_part, run_python

ESTIMATORS = gradient_experiments.ESTIMATORS


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("gradients")
    result = run_python(["scripts/gradient_experiments.py", "--quick", "--output-dir", output_dir],
                        env={"MNIST_DIR": str(MNIST_SUBSET_DIR)})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return output_dir


def check_spread(results, settings):
    """Every estimator at every S; the decoder's gradient is the same draw by draw for both estimators of an
    objective, so its summaries are equal; the slopes are those of the recorded SNRs."""
    for objective, estimators in ESTIMATORS.items():
        by_samples = results[objective]["by_samples"]
        assert sorted(by_samples, key=int) == [str(s) for s in settings["mc_samples"]]
        for estimator in estimators:
            for network in ("encoder", "decoder"):
                snr = [by_samples[str(s)][estimator][network]["mean_snr"] for s in settings["mc_samples"]]
                slope = np.polyfit(np.log(settings["mc_samples"]), np.log(snr), 1)[0]
                assert results[objective]["snr_log_slope"][estimator][network] == pytest.approx(slope, rel=1e-9)
        for spread in by_samples.values():
            reference, other = (spread[estimator]["decoder"] for estimator in estimators)
            assert other == pytest.approx(reference, rel=1e-6)
            assert spread[estimators[1]]["encoder"] != spread[estimators[0]]["encoder"]


def check_training(results, settings, log_px):
    for key, row in results["models"].items():
        assert len(log_px[key]) == results["num_test"] == settings["num_test"]
        assert row["test_nll"] == pytest.approx(-log_px[key].mean(), rel=1e-9)
        assert len(row["train_loss_per_epoch"]) == settings["num_epochs"]
    for objective, (reference, estimator) in ESTIMATORS.items():
        paired = results["paired_with_total"][f"{objective}-{estimator}"]
        difference = log_px[f"{objective}-{estimator}"] - log_px[f"{objective}-{reference}"]
        assert paired["difference"] == pytest.approx(difference.mean(), rel=1e-9, abs=1e-12)


@pytest.mark.slow
def test_a_quick_run_records_every_estimator(quick_run):
    for part in ("toy", "spread"):
        check_spread(json.loads((quick_run / f"{part}.json").read_text())["results"], gradient_experiments.QUICK[part])
    with np.load(quick_run / "training" / "log_px.npz") as arrays:
        log_px = dict(arrays)
    training = json.loads((quick_run / "training.json").read_text())["results"]
    check_training(training, gradient_experiments.QUICK["training"], log_px)


@pytest.mark.slow
def test_the_figures_draw_from_a_quick_run(quick_run):
    import plot_gradients

    figures = run_python(["scripts/plot_gradients.py", "--results-dir", quick_run, "--output-dir",
                          quick_run / "images"])  # fmt: skip
    assert figures.returncode == 0, figures.stderr[-2000:]
    assert all((quick_run / "images" / name).stat().st_size > 1000 for name in plot_gradients.FIGURES)


def test_the_committed_records_hold_their_settings_and_what_they_were_computed_from():
    for part in ("toy", "spread"):
        record = json.loads((gradient_experiments.OUTPUT_DIR / f"{part}.json").read_text())
        assert record["settings"] == gradient_experiments.SETTINGS[part]
        check_spread(record["results"], record["settings"])
    results, settings, log_px = committed_part(gradient_experiments, "training")
    check_training(results, settings, log_px)

"""scripts/kl_weight_experiments.py: a quick run on the committed MNIST subset trains one model per value of beta
and of the warm-up length, with the weight the value names, and records for each what the post reads; the paired
differences are those of the per-image estimates saved beside the records."""

import json
import math

import numpy as np
import pytest

import kl_weight_experiments
from conftest import MNIST_SUBSET_DIR, committed_part, run_python


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("kl-weight")
    result = run_python(["scripts/kl_weight_experiments.py", "--quick", "--output-dir", output_dir],
                        env={"MNIST_DIR": str(MNIST_SUBSET_DIR)})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return output_dir


@pytest.mark.slow
@pytest.mark.parametrize("part", kl_weight_experiments.PARTS)
def test_a_quick_run_records_every_value_with_its_paired_difference(part, quick_run):
    settings = kl_weight_experiments.QUICK[part]
    results = json.loads((quick_run / f"{part}.json").read_text())["results"]
    with np.load(quick_run / part / "log_px.npz") as arrays:
        log_px = dict(arrays)
    reference = kl_weight_experiments.value_key(kl_weight_experiments.REFERENCE[part])
    assert sorted(row["value"] for row in results["values"].values()) == sorted(settings["values"])
    for key, row in results["values"].items():
        assert row["test_nll"] == pytest.approx(-log_px[key].mean(), rel=1e-9)
        assert row["negative_elbo"] == pytest.approx(row["rate"] + row["distortion"], rel=1e-9)
        assert row["rate"] >= 0 and row["negative_elbo"] >= row["test_nll"] - 1.0  # the ELBO bounds log p(x)
        assert len(row["kl_per_dimension"]) == settings["latent_dim"]
        assert row["rate"] == pytest.approx(sum(row["kl_per_dimension"]), rel=1e-4)  # closed form, per dimension
        if key != reference:
            difference = log_px[reference] - log_px[key]
            paired = results["paired_with_unweighted"][key]
            assert paired["difference"] == pytest.approx(difference.mean(), rel=1e-9, abs=1e-12)
            # The weight acted: it counted every step of the run, and the model differs from the unweighted one
            # trained from the same seed (which the next test shows training repeats exactly).
            assert row["steps_counted"] == settings["num_epochs"] * math.ceil(settings["num_train"] /
                                                                               settings["batch_size"])  # fmt: skip
            assert row["rate"] != results["values"][reference]["rate"]


@pytest.mark.slow
def test_the_unweighted_model_trains_the_same_in_both_sweeps(quick_run):
    """Both sweeps train the unweighted ELBO from the same seed: the same model, so a weighted one that differs
    from it differs by its weight."""
    rows = [json.loads((quick_run / f"{part}.json").read_text())["results"]["values"][
        kl_weight_experiments.value_key(kl_weight_experiments.REFERENCE[part])] for part in kl_weight_experiments.PARTS]
    assert rows[0]["rate"] == pytest.approx(rows[1]["rate"], rel=1e-6)
    assert rows[0]["test_nll"] == pytest.approx(rows[1]["test_nll"], rel=1e-6)


@pytest.mark.parametrize("part", kl_weight_experiments.PARTS)
def test_each_value_names_the_weight_it_trains_with(part):
    settings = kl_weight_experiments.SETTINGS[part]
    steps_per_epoch = math.ceil(settings["num_train"] / settings["batch_size"])
    for value in settings["values"]:
        options = kl_weight_experiments.kl_weight_options(part, value, settings)
        if part == "beta":
            assert options == {"kl_weight": value, "kl_warmup_steps": 0}
        else:
            assert options == {"kl_weight": 1.0, "kl_warmup_steps": value * steps_per_epoch}
    assert kl_weight_experiments.REFERENCE[part] in settings["values"]


@pytest.mark.slow
def test_the_figures_draw_from_a_quick_run(quick_run):
    import plot_kl_weight

    figures = run_python(["scripts/plot_kl_weight.py", "--results-dir", quick_run, "--output-dir",
                          quick_run / "images"])  # fmt: skip
    assert figures.returncode == 0, figures.stderr[-2000:]
    assert all((quick_run / "images" / name).stat().st_size > 1000 for name in plot_kl_weight.FIGURES)


@pytest.mark.parametrize("part", kl_weight_experiments.PARTS)
def test_the_committed_records_hold_their_settings_and_what_they_were_computed_from(part):
    """Each committed record: the committed settings; every model's test NLL and paired difference are those of
    the per-image estimates beside it; the weight counted every step of the run; the unweighted model is the
    same in both sweeps (training is deterministic, so the other rows differ by their weight alone)."""
    results, settings, log_px = committed_part(kl_weight_experiments, part)
    reference = kl_weight_experiments.value_key(kl_weight_experiments.REFERENCE[part])
    steps = settings["num_epochs"] * math.ceil(settings["num_train"] / settings["batch_size"])
    for key, row in results["values"].items():
        assert len(log_px[key]) == results["num_test"] == settings["num_test"]
        assert row["test_nll"] == pytest.approx(-log_px[key].mean(), rel=1e-9)
        assert len(row["kl_per_dimension"]) == settings["latent_dim"] and 0 <= row["active_units"] <= 50
        if key != reference:
            assert row["steps_counted"] == steps
            paired = results["paired_with_unweighted"][key]
            assert paired["difference"] == pytest.approx((log_px[reference] - log_px[key]).mean(), rel=1e-9)
    other_part = "warmup" if part == "beta" else "beta"
    other = json.loads((kl_weight_experiments.OUTPUT_DIR / f"{other_part}.json").read_text())
    other_key = kl_weight_experiments.value_key(kl_weight_experiments.REFERENCE[other_part])
    other_reference = other["results"]["values"][other_key]
    assert results["values"][reference]["test_nll"] == pytest.approx(other_reference["test_nll"], rel=1e-9)

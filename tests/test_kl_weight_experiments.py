"""scripts/kl_weight_experiments.py: a quick run on the committed MNIST subset trains one model per value of beta
and of the warm-up length, with the weight the value names, and records for each what the post reads; the paired
differences are those of the per-image estimates saved beside the records."""

import json
import math

import numpy as np
import pytest

import kl_weight_experiments
from conftest import MNIST_SUBSET_DIR, run_python


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

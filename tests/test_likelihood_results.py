"""The likelihoods post's committed measurements, models and figures are current and say what the post says.

Nothing here retrains to full length: the records' input hashes say whether
they are stale, a committed MNIST model is re-run against the images the
record holds, a quick run checks that the script still produces every number
the post reads, and the figures are redrawn and compared byte for byte.
"""

import json
import math

import keras
import numpy as np
import pytest

import likelihood_experiments
import plot_likelihoods
import provenance
from conftest import (
    MNIST_SUBSET_DIR,
    REPO_ROOT,
    assert_figures_current,
    assert_parts_current,
    assert_settings_recorded,
    full_mnist,
    run_python,
)

RESULTS = likelihood_experiments.OUTPUT_DIR


def record(part):
    return json.loads((RESULTS / f"{part}.json").read_text())


def test_records_hold_the_committed_settings():
    assert_settings_recorded(likelihood_experiments)


def test_the_bernoulli_number_is_not_a_likelihood():
    """The same decoder read as a continuous Bernoulli: every importance weight is multiplied by prod_d C >= 2^D
    (its log rises by sum_d log C >= D log 2), so the Bernoulli "NLL" exceeds a proper NLL of the same model
    by at least 784 log 2 = 543 nats."""
    bernoulli = record("mnist")["results"]["bernoulli"]["test"]
    gap = bernoulli["bernoulli"]["nll"] - bernoulli["continuous_bernoulli"]["nll"]
    assert gap >= 784 * math.log(2.0), gap


def test_the_mnist_claims_of_the_post_hold():
    """The continuous Bernoulli model is best, by many standard errors of the paired difference on the same test
    images; the Bernoulli number read as bits is worse than uniform; and the per-output Gaussian fits training
    images better than per-pixel but with a far wider spread on test."""
    mnist = record("mnist")["results"]
    test = {head: mnist[head]["test"] for head in likelihood_experiments.SETTINGS["mnist"]["heads"]}
    for head, (low, high) in (("bernoulli", (100, math.inf)), ("gaussian", (100, math.inf)),
                              ("gaussian_heteroscedastic", (3, 4))):  # fmt: skip
        paired = mnist[head]["paired_with_continuous_bernoulli"]  # log p(x) lower on the same images, in SEs
        assert low < -paired["difference"] / paired["stderr"] < high, (head, paired)
    for name, scores in (("bernoulli", test["bernoulli"]["continuous_bernoulli"]),
                         ("gaussian", test["gaussian"]["gaussian"]),
                         ("gaussian_heteroscedastic", test["gaussian_heteroscedastic"]["gaussian"])):  # fmt: skip
        assert scores["bits_per_dim"] < 8, name  # every proper density beats the uniform guess
    assert test["bernoulli"]["bernoulli"]["bits_per_dim"] > 8
    hetero, homo = mnist["gaussian_heteroscedastic"], mnist["gaussian"]
    assert hetero["final_train_loss"] < homo["final_train_loss"]
    assert hetero["test"]["gaussian"]["nll_stderr"] > 10 * homo["test"]["gaussian"]["nll_stderr"]


def test_the_mnist_table_is_complete_and_consistent():
    mnist = record("mnist")["results"]
    per_image = np.load(RESULTS / "mnist" / "log_px.npz")
    for head, choice in likelihood_experiments.SETTINGS["mnist"]["heads"].items():
        row = mnist[head]
        assert {key: row[key] for key in choice} == choice
        assert len(row["train_loss_per_epoch"]) == likelihood_experiments.SETTINGS["mnist"]["num_epochs"]
        for name, scores in row["test"].items():
            assert math.isfinite(scores["nll"]) and scores["nll_stderr"] > 0, (head, name)
            log_px = per_image[f"{head}/{name}"]
            assert log_px.shape == (likelihood_experiments.SETTINGS["mnist"]["num_test"],)
            np.testing.assert_allclose(-log_px.mean(), scores["nll"], rtol=1e-9)
            # bits per pixel of the 8-bit images, recomputed from the NLL: (NLL / D + log 256) / log 2
            assert scores["bits_per_dim"] == pytest.approx((scores["nll"] / 784 + math.log(256)) / math.log(2))
            assert 0 < scores["bits_per_dim"] < 8 or name == "bernoulli", (head, name)
        assert (RESULTS / "mnist" / f"{head}.keras").is_file()
    # The paired differences, recomputed from the per-image log p(x) of each head's proper density.
    reference = per_image["continuous_bernoulli/continuous_bernoulli"].astype("float64")
    for head, name in (("bernoulli", "continuous_bernoulli"), ("gaussian", "gaussian"),
                       ("gaussian_heteroscedastic", "gaussian")):  # fmt: skip
        difference = per_image[f"{head}/{name}"].astype("float64") - reference
        paired = mnist[head]["paired_with_continuous_bernoulli"]
        assert paired["difference"] == pytest.approx(difference.mean(), rel=1e-9)
        assert paired["stderr"] == pytest.approx(difference.std(ddof=1) / math.sqrt(len(difference)), rel=1e-9)


def test_a_committed_mnist_model_reproduces_its_images():
    """The continuous Bernoulli model decodes the recorded test digits' posterior means to the recorded means."""
    import compose  # noqa: F401  (registers the layers the model uses)
    from training import continuous_bernoulli_mean

    model = keras.saving.load_model(RESULTS / "mnist" / "continuous_bernoulli.keras", safe_mode=True)
    with np.load(RESULTS / "mnist_images.npz") as images:
        data, recorded = images["data"], images["continuous_bernoulli/reconstruction_mean"]
    z_mean, _ = model.get_layer("encoder")(data)
    logits = keras.ops.convert_to_numpy(model.get_layer("decoder")(keras.ops.expand_dims(z_mean, 1)))[:, 0]
    np.testing.assert_allclose(continuous_bernoulli_mean(logits), recorded, atol=1e-4)


def test_regression_intervals_cover_at_their_nominal_level():
    """Averaged over the splits, the 80-95% intervals cover within 2 points of their level; the 50% intervals
    fall short, and so do least squares' (the noise model, shared by both, not the posterior)."""
    summary = record("regression")["results"]["summary"]
    for key in ("80", "90", "95"):
        assert abs(summary["coverage"][key] - int(key) / 100) < 0.02, (key, summary["coverage"][key])
    assert 0.4 < summary["coverage"]["50"] < 0.5 and 0.4 < summary["ols_coverage"]["50"] < 0.5


def test_the_regression_claims_of_the_post_hold():
    """The variational and exact predictive densities agree within 0.01 nats, and least squares' within a few
    thousandths; the variational means are close to, not equal to, the exact posterior's."""
    regression = record("regression")["results"]
    summary = regression["summary"]
    assert abs(summary["log_predictive_density"] - summary["exact_log_predictive_density"]) < 0.01
    assert abs(summary["log_predictive_density"] - summary["ols_log_predictive_density"]) < 0.01
    for split in regression["splits"]:
        assert split["max_abs_mean_difference_from_exact"] < 0.25  # standard deviations of the target
    assert regression["splits"][0]["num_train"] == 331


def test_the_classification_claims_of_the_post_hold():
    """Both beat chance (10%) by a wide margin; the Bayesian model is underconfident in every bin and worse than
    maximum likelihood in log predictive density and ECE, with its posterior mean in between."""
    results = record("classification")["results"]
    for name in ("bayes", "ml"):
        assert results[name]["accuracy"] > 0.9, name
    assert all(b["accuracy"] > b["confidence"] for b in results["bayes"]["bins"])
    assert results["bayes"]["log_predictive_density"] < results["ml"]["log_predictive_density"]
    # On the same test images: the Bayesian predictive worse by over three standard errors, its posterior
    # mean alone within two of maximum likelihood.
    paired = results["paired_with_ml"]
    assert paired["bayes"]["difference"] < -3 * paired["bayes"]["stderr"], paired
    assert abs(paired["bayes_mean"]["difference"]) < 2 * paired["bayes_mean"]["stderr"], paired
    for name in ("bayes", "bayes_mean"):
        assert paired[name]["difference"] == pytest.approx(
            results[name]["log_predictive_density"] - results["ml"]["log_predictive_density"]
        )
    assert results["bayes"]["ece"] > results["ml"]["ece"]
    # The posterior mean alone recovers part of the gap; its weights are much smaller than maximum likelihood's.
    for key, sign in (("log_predictive_density", 1), ("ece", -1)):
        assert sign * results["bayes"][key] < sign * results["bayes_mean"][key] < sign * results["ml"][key], key
    assert results["weight_norm"]["bayes_mean"] < results["weight_norm"]["ml"] / 2
    assert 0 < results["posterior_scale"]["mean"] < results["posterior_scale"]["max"] < 1.1


@pytest.mark.slow
def test_quick_run_writes_every_number_the_post_reads(tmp_path):
    result = run_python(
        ["scripts/likelihood_experiments.py", "--quick", "--output-dir", tmp_path],
        env={"MNIST_DIR": str(MNIST_SUBSET_DIR)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for part in likelihood_experiments.PARTS:
        quick, committed = json.loads((tmp_path / f"{part}.json").read_text()), record(part)
        assert set(quick) == set(committed), part
        assert set(quick["results"]) <= set(committed["results"]), part
        for name, values in quick["results"].items():
            if isinstance(values, dict):
                assert set(values) == set(committed["results"][name]), (part, name)
    again = run_python(
        ["scripts/likelihood_experiments.py", "--quick", "--if-stale", "--output-dir", tmp_path],
        env={"MNIST_DIR": str(MNIST_SUBSET_DIR)},
    )
    assert again.returncode == 0 and "nothing to run" in again.stdout
    # The figures are drawn from the committed records in the redraw test below.


def test_a_changed_likelihood_moves_the_fingerprint_of_the_regression_part(monkeypatch, tmp_path):
    """Behaviour, not source text: a Gaussian NLL counted twice (patched in) moves the regression part's
    fingerprint away from the committed one."""
    import fingerprint
    import likelihoods

    original = likelihoods.gaussian_nll  # the loss calls it by its module's name

    def gaussian_nll(x, mean, log_scale):  # a different definition under the same name
        return 2.0 * original(x, mean, log_scale)

    monkeypatch.setattr(fingerprint, "CACHE_DIR", tmp_path)  # the cache is keyed by source, which is unchanged
    monkeypatch.setattr(likelihoods, "gaussian_nll", gaussian_nll)
    settings = likelihood_experiments.FINGERPRINT["regression"]
    moved = provenance.part_fingerprint("likelihoods", "regression", settings, likelihood_experiments.run_part)
    assert fingerprint.differences(record("regression")["fingerprint"], moved)


def test_likelihood_figures_redraw_from_the_committed_results(tmp_path):
    assert_figures_current(
        "scripts/plot_likelihoods.py", plot_likelihoods.OUTPUT_DIR, plot_likelihoods.FIGURES, tmp_path
    )


@full_mnist
def test_every_part_matches_its_inputs():
    # Last in the module: the quick run (the fingerprint's own run) has left today's fingerprints in the cache.
    assert_parts_current(likelihood_experiments)


def test_the_seed_claims_of_the_classification_section_hold():
    """Every seed's Bayesian model scored below maximum likelihood, the t-test across all seeds rejects zero at
    5%, the first three seeds alone did not (the post says so), and the posterior mean's difference does not."""
    import scipy.stats

    import claims

    study = json.loads((REPO_ROOT / "results" / "seeds" / "classification.json").read_text())["comparisons"]
    differences = [entry["difference"] for entry in study["bayes"]["per_seed"]]
    assert len(differences) >= 5 and all(d < 0 for d in differences)
    assert scipy.stats.ttest_1samp(differences, 0.0).pvalue < 0.05
    assert scipy.stats.ttest_1samp(differences[:3], 0.0).pvalue > 0.05
    assert claims.seeds_support(study["bayes"], -1)[0] and not claims.seeds_support(study["bayes_mean"], -1)[0]
    text = " ".join((REPO_ROOT / "posts" / "one-skeleton-many-likelihoods.rst").read_text().split())
    assert "the first three seeds alone fell just short of it, and we ran two more" in text

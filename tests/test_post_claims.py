"""Statements the posts make about the maths and the records, each checked against an independent computation.

Every test here guards one correction: it computes the fact the post states
(with NumPy, SciPy quadrature or optimisation, or from the committed record)
and checks that the post states it the right way round.
"""

import copy
import json
import math
import re

import numpy as np
import pytest
from scipy import integrate, optimize, stats

import plot_benchmark
from conftest import REPO_ROOT

POSTS = REPO_ROOT / "posts"


def post_text(stem):
    """The post's source with whitespace collapsed, so a sentence can be matched across line breaks."""
    return re.sub(r"\s+", " ", (POSTS / f"{stem}.rst").read_text())


MAIN = "implementing-variational-autoencoders-in-keras-beyond-the-quickstart-tutorial"
IWAE = "inference-in-variational-autoencoders-with-different-monte-carlo-sample-sizes"
AVB = "adversarial-variational-bayes-swapping-the-kl-layer"
FLOWS = "normalizing-flows-in-keras"
LIKELIHOODS = "one-skeleton-many-likelihoods"


def test_continuous_bernoulli_weights_are_the_bernoulli_ones_multiplied_by_the_normaliser():
    """log CB(x | l) = log[lambda^x (1 - lambda)^(1 - x)] + log C(lambda), with log C >= log 2 (quadrature)."""
    from likelihoods import bernoulli_nll, continuous_bernoulli_nll

    rng = np.random.default_rng(0)
    x, logits = rng.random((3, 5)), rng.normal(size=(3, 5)) * 3
    log_lambda, log_one_minus = -np.logaddexp(0, -logits), -np.logaddexp(0, logits)

    def log_normaliser(a, b):  # -log of the integral over [0, 1] of the Bernoulli form
        return -math.log(integrate.quad(lambda t: math.exp(t * a + (1 - t) * b), 0, 1, epsrel=1e-12)[0])

    log_c = np.vectorize(log_normaliser)(log_lambda, log_one_minus)
    assert np.all(log_c >= math.log(2) - 1e-12)
    # The difference of the two NLLs (in nats, summed over dimensions) is -sum_d log C: the CB log weight is higher.
    difference = np.asarray(continuous_bernoulli_nll(x, logits)) - np.asarray(bernoulli_nll(x, logits))
    np.testing.assert_allclose(difference, -log_c.sum(axis=-1), rtol=1e-6)
    assert np.all(difference <= -5 * math.log(2) + 1e-9)
    text = post_text(LIKELIHOODS)
    assert "Bernoulli ones multiplied by :math:`\\prod_d C(\\lambda_d) \\ge 2^{784}`" in text
    assert "divided by :math:`\\prod_d C" not in text


def test_mean_field_variances_are_the_inverse_precision_diagonal():
    """The diagonal Gaussian closest to N(m, Sigma) in KL[q || p] (found by SciPy) has variances 1 / Lambda_jj."""
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 3))
    covariance = a @ a.T + 0.3 * np.eye(3)
    precision = np.linalg.inv(covariance)
    mean = rng.normal(size=3)

    def kl(params):  # KL[N(mu, diag(exp(log_var))) || N(mean, covariance)], closed form
        mu, log_var = params[:3], params[3:]
        diff = mean - mu
        return 0.5 * (
            np.sum(np.diag(precision) * np.exp(log_var))
            + diff @ precision @ diff
            - 3
            + np.linalg.slogdet(covariance)[1]
            - np.sum(log_var)
        )

    fit = optimize.minimize(kl, np.zeros(6), method="BFGS", options={"gtol": 1e-10})
    np.testing.assert_allclose(fit.x[:3], mean, atol=1e-5)
    np.testing.assert_allclose(np.exp(fit.x[3:]), 1 / np.diag(precision), rtol=1e-5)
    assert np.all(np.exp(fit.x[3:]) < np.diag(covariance))  # never the marginal variances themselves
    text = post_text(LIKELIHOODS)
    assert "variances are the inverses of the diagonal of the exact posterior's precision matrix" in text
    assert "to the exact precision's diagonal" not in text


def linear_gaussian(x, weight, noise_var, q_mean, q_var):
    """z ~ N(0, 1), x | z ~ N(weight z, noise_var), q = N(q_mean, q_var): ELBO by quadrature and the exact rest."""

    def integrand(z):
        log_joint = stats.norm.logpdf(x, weight * z, math.sqrt(noise_var)) + stats.norm.logpdf(z)
        return stats.norm.pdf(z, q_mean, math.sqrt(q_var)) * (
            log_joint - stats.norm.logpdf(z, q_mean, math.sqrt(q_var))
        )

    elbo = integrate.quad(integrand, q_mean - 40 * math.sqrt(q_var), q_mean + 40 * math.sqrt(q_var), epsabs=1e-12)[0]
    log_px = stats.norm.logpdf(x, 0, math.sqrt(weight**2 + noise_var))
    post_var = 1 / (1 + weight**2 / noise_var)
    post_mean = post_var * weight * x / noise_var
    return elbo, log_px, post_mean, post_var


def gaussian_kl(m1, v1, m2, v2):
    return 0.5 * (v1 / v2 + (m1 - m2) ** 2 / v2 - 1 + math.log(v2 / v1))


def test_the_elbo_gap_is_kl_of_q_from_the_true_posterior_not_the_reverse():
    elbo, log_px, post_mean, post_var = linear_gaussian(x=1.5, weight=2.0, noise_var=0.5, q_mean=0.2, q_var=0.05)
    forward, reverse = gaussian_kl(0.2, 0.05, post_mean, post_var), gaussian_kl(post_mean, post_var, 0.2, 0.05)
    assert log_px - elbo == pytest.approx(forward, abs=1e-7)
    assert abs(forward - reverse) > 0.5  # the two directions differ here, so the test can tell them apart
    flows = post_text(FLOWS)
    assert (
        "estimates the test images' average of "
        ":math:`\\mathrm{KL}[q_K(\\mathbf{z} \\mid \\mathbf{x}) \\,\\|\\, p_\\theta(\\mathbf{z} \\mid \\mathbf{x})]`"
        in flows
    )
    assert "divergence from the approximate posterior to the true one" not in flows


def test_raising_the_elbo_in_theta_can_lower_the_likelihood():
    """With q fixed near z = 0, moving the decoder weight from its maximum-likelihood value towards 0 raises the
    ELBO (quadrature) while log p(x) (closed form) falls: the bound rose by shrinking the gap."""
    x, q_mean, q_var = 3.0, 0.0, 0.5
    theta_ml = math.sqrt(x**2 - 1)  # argmax of log N(x; 0, theta^2 + 1)
    before = linear_gaussian(x, theta_ml, 1.0, q_mean, q_var)
    after = linear_gaussian(x, theta_ml - 1.0, 1.0, q_mean, q_var)
    assert after[0] > before[0] + 0.1  # the ELBO rose
    assert after[1] < before[1] - 0.01  # the likelihood fell
    text = post_text(MAIN)
    assert "raises the bound, but not necessarily the likelihood" in text
    assert "with respect to :math:`\\theta` raises the likelihood" not in text


def test_u1_has_less_entropy_than_the_iaf_base():
    """U1's differential entropy, on a grid with the listing's potential, is below that of N(0, I) in 2-D, so a
    flow that matches U1 must shrink volume: the IAF's volume-shrinking gate cannot explain its failure there."""
    from flow_densities import log_normaliser, potential

    grid = np.linspace(-5.5, 5.5, 801)
    z = np.stack(np.meshgrid(grid, grid, indexing="ij"), axis=-1)
    log_density = -np.asarray(potential("U1", z)) - log_normaliser("U1")
    density = np.exp(log_density)
    assert np.trapezoid(np.trapezoid(density, grid, axis=1), grid) == pytest.approx(1.0, abs=1e-3)
    entropy = -np.trapezoid(np.trapezoid(density * log_density, grid, axis=1), grid)
    base_entropy = math.log(2 * math.pi * math.e)  # N(0, I) in two dimensions
    assert entropy < base_entropy - 0.1, (entropy, base_entropy)
    text = post_text(FLOWS)
    assert "U1's entropy is below the base's" in text
    assert "cannot spread the density thinner than the base. On U1" not in text


def test_adaptive_contrast_standardises_the_prior_draws_by_their_own_moments():
    """Our variant: the prior draws are standardised per example like the samples of q (Mescheder et al. use
    them as they are), so both sets have sample mean 0 and variance 1 whatever S."""
    from kl_divergence import AdaptiveContrastKL

    draws = np.random.default_rng(2).normal(size=(4, 3, 2)).astype("float32")
    standard = np.asarray(AdaptiveContrastKL.prior_contrast(None, draws))
    np.testing.assert_allclose(standard.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(standard.var(axis=1), 1, atol=1e-4)
    assert not np.allclose(draws.var(axis=1), 1, atol=1e-2)  # the raw draws are not
    assert "That second standardisation is our variant: Mescheder et al." in post_text(AVB)


def test_the_eight_dimensional_adversarial_estimate_is_still_rising_when_training_stops():
    far = json.loads((REPO_ROOT / "results" / "avb" / "estimators.json").read_text())["results"]["far-8d"]
    curve = far["adversarial_curve"]
    assert curve[-1] > curve[len(curve) * 3 // 4] > curve[len(curve) // 2]
    assert curve[-1] < far["exact_kl"]
    text = post_text(AVB)
    assert "nothing pushes" not in text
    assert "still rising when training stops" in text


def test_the_iwae_gap_to_the_paper_is_quoted_from_the_smallest_and_largest_rows():
    rows = json.loads((REPO_ROOT / "results" / "iwae" / "table.json").read_text())["rows"]
    gaps = {name: row["test_nll"] - row["paper_test_nll"] for name, row in rows.items()}
    assert min(gaps, key=gaps.get) == "iwae-k50" and max(gaps, key=gaps.get) == "iwae-k1", gaps
    assert all(row["num_epochs"] < 3280 for row in rows.values())  # the budget the post states up front
    text = post_text(IWAE)
    lead = text[: text.index("TEASER_END")]
    assert (
        "between {{% result rows.iwae-k50.test_nll minus=rows.iwae-k50.paper_test_nll format=.1f %}} and "
        "{{% result rows.iwae-k1.test_nll minus=rows.iwae-k1.paper_test_nll format=.1f %}} nats" in lead
    )
    assert "against the 3,280 of their schedule" in lead
    assert "Towards the IWAE table" in text and "Reproducing the IWAE table" not in text


def test_the_iwae_post_claims_only_what_the_paired_differences_and_the_grid_support():
    """More samples lower the test NLL for both objectives; the IWAE's lead at S = 5 and 50 is several times
    the gap between the two S = 1 rows (one function, two runs: the run-to-run noise), which the post calls
    within the noise. The grid: at a fixed number of steps more samples always helped, and a batch of 500
    beat 25 samples at the same product; at a fixed time one sample led five and five led 25 at batch sizes
    100 and 500, and at batch size 20 five samples and one ended within a few nats (within the noise of one
    run per cell on a machine whose speed varies, so the post claims no order)."""
    table = json.loads((REPO_ROOT / "results" / "iwae" / "table.json").read_text())["paired"]
    run_noise = abs(table["iwae-k1_vs_vae-k1"]["difference"])
    for name in ("vae-k5_vs_vae-k1", "vae-k50_vs_vae-k1", "iwae-k5_vs_iwae-k1", "iwae-k50_vs_iwae-k1"):
        assert table[name]["difference"] + 3 * table[name]["stderr"] < 0, name
    for name in ("iwae-k5_vs_vae-k5", "iwae-k50_vs_vae-k50"):
        assert table[name]["difference"] < -3 * run_noise, (name, run_noise)
    text = post_text(IWAE)
    assert "within the noise of a run" in text and "one run per row" in text
    grid = json.loads((REPO_ROOT / "results" / "iwae" / "experiments.json").read_text())["grid"]
    steps, timed = grid["fixed_steps"], grid["fixed_time"]
    for batch in (20, 100, 500):
        nll = [steps[f"b{batch}-s{s}"]["test_negative_elbo"] for s in (1, 5, 25)]
        assert nll[0] > nll[1] > nll[2], batch
    assert steps["b500-s1"]["test_negative_elbo"] < steps["b20-s25"]["test_negative_elbo"]
    for batch in (100, 500):
        nll = [timed[f"b{batch}-s{s}"]["test_negative_elbo"] for s in (1, 5, 25)]
        assert nll[0] < nll[1] < nll[2], batch
    b20 = {s: timed[f"b20-s{s}"]["test_negative_elbo"] for s in (1, 5, 25)}
    assert abs(b20[5] - b20[1]) < 5 and max(b20[1], b20[5]) < b20[25], b20
    assert "ended within a few nats of it" in text and "within the noise of this grid" in text
    assert "pay for themselves" not in text


def test_the_performance_verdicts_say_within_noise_where_the_ranges_overlap():
    """Recomputed here from the timings: a target is met or not met only when the ratio's whole range over
    repeats (every pairing of the two configurations' fastest and slowest runs) is on one side of it."""
    benchmark = json.loads((REPO_ROOT / "results" / "performance" / "benchmark.json").read_text())
    shown = json.loads((REPO_ROOT / "images" / "performance" / "figures.json").read_text())["targets"]

    def span(architecture, config):
        if config == "limit":  # timed in every repeat: its range over them
            limit = benchmark["architectures"][architecture]["machine_limit"]["S1"]
            return np.array([limit["ideal_seconds_per_epoch_min"], limit["ideal_seconds_per_epoch_max"]])
        summary = benchmark["architectures"][architecture]["configs"][config]
        return np.array([summary["seconds_per_epoch_min"], summary["seconds_per_epoch_max"]])

    def ratios(architecture, top, bottom):  # every value top / bottom takes over the two ranges
        return np.outer(span(architecture, top), 1 / span(architecture, bottom)).ravel()

    def pairs(architecture, top, bottom):  # the two runs of each repeat, neighbours in time
        configs = benchmark["architectures"][architecture]["configs"]
        return np.divide(configs[top]["seconds_per_epoch_per_repeat"], configs[bottom]["seconds_per_epoch_per_repeat"])

    def fastest_fraction(architecture):  # the largest of the backends' fractions of the limit, at each end
        ran = [c for c in benchmark["architectures"][architecture]["configs"] if c.startswith("composed-")]
        ran = [c for c in ran if "skipped" not in benchmark["architectures"][architecture]["configs"][c]]
        fractions = np.array([ratios(architecture, "limit", config) for config in ran])
        return np.array([fractions.min(axis=1).max(), fractions.max(axis=1).max()])

    values = {
        "ours_s1_over_classic": ratios("784-256-2", "ours-S1", "classic"),
        "ours_s1_over_torch_784_256_2": ratios("784-256-2", "ours-S1", "torch-S1"),
        "ours_s1_over_torch_784_200_200_50": ratios("784-200-200-50", "ours-S1", "torch-S1"),
        "ours_s25_over_s1_784_256_2": ratios("784-256-2", "ours-S25", "ours-S1"),
        "ours_s25_over_s1_784_200_200_50": ratios("784-200-200-50", "ours-S25", "ours-S1"),
        "binarisation_share_784_256_2": 1 - ratios("784-256-2", "ours-S1-binarised-once", "ours-S1"),
        "binarisation_share_784_200_200_50": 1 - ratios("784-200-200-50", "ours-S1-binarised-once", "ours-S1"),
        "fraction_of_machine_limit_784_200_200_50": ratios("784-200-200-50", "limit", "ours-S1"),
        "ours_s1_over_torch_median_784_200_200_50": ratios("784-200-200-50", "ours-S1", "torch-S1"),
        "ours_s1_over_torch_worst_pair_784_200_200_50": pairs("784-200-200-50", "ours-S1", "torch-S1"),
        "fastest_backend_fraction_of_machine_limit_784_200_200_50": fastest_fraction("784-200-200-50"),
    }
    assert set(values) == set(benchmark["targets"]) == set(shown)
    compare = {"<=": np.less_equal, "<": np.less, ">=": np.greater_equal}
    for name, target in benchmark["targets"].items():
        op, bound = target["target"].split()
        meets = compare[op](values[name], float(bound))
        expected = "met" if meets.all() else "not met" if not meets.any() else "within noise"
        if "_worst_pair_" in name:  # already the end of the range: judged as measured, the largest pair
            expected = target["verdict"]
            assert target["measured"] == pytest.approx(values[name].max())
        assert shown[name]["verdict"] == expected, (name, values[name], shown[name])
        assert shown[name]["low"] == pytest.approx(values[name].min()) and shown[name]["high"] == pytest.approx(
            values[name].max()
        )
    # The case the corrections issue names (ours / PyTorch met on medians, the ranges overlapping) is judged
    # within noise by the figure script: widen our slowest repeat past PyTorch's fastest and judge again.
    overlapping = copy.deepcopy(benchmark)
    configs = overlapping["architectures"]["784-200-200-50"]["configs"]
    configs["ours-S1"]["seconds_per_epoch_max"] = configs["torch-S1"]["seconds_per_epoch_min"] * 1.5
    configs["ours-S1"]["seconds_per_epoch_min"] = configs["torch-S1"]["seconds_per_epoch_min"] * 0.5
    judged = plot_benchmark.range_verdicts(overlapping)["ours_s1_over_torch_784_200_200_50"]
    assert judged["median_verdict"] == benchmark["targets"]["ours_s1_over_torch_784_200_200_50"]["verdict"]
    assert judged["verdict"] == "within noise"
    page = (REPO_ROOT / "pages" / "performance.rst").read_text()
    assert page.count("verdict file=images/performance/figures.json") == len(benchmark["targets"])


def test_the_first_post_promises_only_what_the_series_delivers():
    """The first post's 2-D model is scored with the ELBO only; it no longer promises a tighter estimate of it."""
    text = post_text(MAIN)
    assert "estimates it more tightly" not in text
    assert "* Speed:" not in text  # the performance page is not one of the five promises


CONV = "convolutional-vaes-and-a-second-data-set"


def test_the_collapse_paragraph_names_the_rows_that_hold_its_extremes():
    """The counts' range is quoted from the rows that hold it; the IWAE S = 50 row's weakest active and strongest
    inactive dimensions sit at the threshold after the short run and far apart after the long one."""
    record = json.loads((REPO_ROOT / "results" / "collapse" / "diagnostics.json").read_text())
    models, threshold = record["models"], record["settings"]["threshold"]
    for group, low, high in (("iwae", "vae-k5", "iwae-k50"), ("iwae-long", "iwae-k1", "iwae-k50")):
        counts = {name: model["active_units"] for name, model in models.items() if name.startswith(group + "/")}
        assert counts[f"{group}/{low}"] == min(counts.values()) and counts[f"{group}/{high}"] == max(counts.values())
    short, long = models["iwae/iwae-k50"], models["iwae-long/iwae-k50"]
    assert threshold < short["smallest_active"] < 1.5 * threshold and threshold / 1.5 < short["largest_inactive"]
    assert long["smallest_active"] > 10 * threshold and long["largest_inactive"] < threshold
    assert long["active_units"] > models["iwae-long/vae-k50"]["active_units"]  # Burda et al.'s direction
    text = post_text(CONV)
    assert "both sit at the threshold" in text and "the two sides have drawn apart" in text
    assert "reproduced once, not a measurement of its size" in text


def test_a_kl_weight_above_one_loosens_the_bound_and_below_one_breaks_it():
    """On a model with two latent states, where log p(x) is a finite sum: L_beta = L - (beta - 1) R, so beta > 1
    stays below the ELBO (and log p(x)) for every q, while beta < 1 exceeds log p(x) at the exact posterior."""
    rng = np.random.default_rng(3)
    prior = np.array([0.3, 0.7])
    for _ in range(20):
        likelihood = rng.random(2)  # p(x | z) of one observed x
        log_px = math.log(np.sum(prior * likelihood))
        posterior = prior * likelihood / np.sum(prior * likelihood)
        for q in (posterior, rng.dirichlet([1.0, 1.0])):
            distortion = -np.sum(q * np.log(likelihood))
            rate = np.sum(q * np.log(q / prior))
            elbo = -distortion - rate
            assert elbo <= log_px + 1e-12
            for beta in (2.0, 4.0):
                assert -distortion - beta * rate <= elbo + 1e-12
        rate = np.sum(posterior * np.log(posterior / prior))
        assert rate > 0 and np.sum(posterior * np.log(likelihood)) - 0.5 * rate > log_px
    text = post_text(CONV)
    assert "a looser lower bound on the log-likelihood" in text and "it is no bound at all" in text
    assert "while its weight is below one" in text


def test_the_kl_weight_reading_follows_the_records():
    """Rate falls and distortion rises at every step of beta; a longer warm-up ends at more rate and less
    distortion; the warm-ups' active units do not rise with the length."""
    sweeps = {name: json.loads((REPO_ROOT / "results" / "kl-weight" / f"{name}.json").read_text())["results"]["values"]
              for name in ("beta", "warmup")}  # fmt: skip
    for name, sign in (("beta", 1), ("warmup", -1)):
        values = sorted(sweeps[name].values(), key=lambda row: row["value"])
        rates, distortions = np.array([r["rate"] for r in values]), np.array([r["distortion"] for r in values])
        assert np.all(sign * np.diff(rates) < 0) and np.all(sign * np.diff(distortions) > 0), name
    counts = [row["active_units"] for row in sorted(sweeps["warmup"].values(), key=lambda row: row["value"])]
    assert counts != sorted(counts)
    text = post_text(CONV)
    assert "the rate falls and the distortion rises at every step" in text
    assert "do not follow the length" in text and "not what a weight or a warm-up does to every model" in text


def test_the_bias_reading_follows_the_conv_records():
    """Every M-sample estimate fell below the reference one; under a nat on MNIST, a few nats on Fashion-MNIST;
    the two networks' biases differ by a small fraction of their paired difference."""
    for part, limit in (("mnist", 1.0), ("fashion_mnist", 5.0)):
        results = json.loads((REPO_ROOT / "results" / "conv" / f"{part}.json").read_text())["results"]
        biases = {network: results[network]["bias"]["difference"] for network in ("mlp", "conv")}
        assert all(-limit < bias < 0 for bias in biases.values()), (part, biases)
        gap = abs(biases["conv"] - biases["mlp"])
        assert gap < 0.05 * abs(results["paired_with_mlp"]["conv"]["difference"]), (part, gap)
    text = post_text(CONV)
    assert "the difference is negative in every cell, under a nat per image on MNIST and a few nats on" in text


def test_the_conv_reading_follows_the_seed_records_and_the_architecture():
    """Every seed's paired difference is many times its standard error; most of the convolutional model's
    parameters are the encoder's dense layer over the 7 x 7 x 64 feature maps."""
    for study in ("conv-mnist", "conv-fashion-mnist"):
        comparison = json.loads((REPO_ROOT / "results" / "seeds" / f"{study}.json").read_text())["comparisons"]["conv"]
        assert all(abs(entry["difference"]) > 10 * entry["stderr"] for entry in comparison["per_seed"]), study
    record = json.loads((REPO_ROOT / "results" / "conv" / "mnist.json").read_text())
    hidden = record["settings"]["hidden_units"]
    assert (7 * 7 * 64 + 1) * hidden > record["results"]["conv"]["num_parameters"] / 2
    text = post_text(CONV)
    assert "each seed's difference many times its standard error over the test images" in text
    assert "most of them in the encoder's dense layer that reads the feature maps" in text


def test_the_keras_io_gap_is_quoted_where_it_is_largest_and_last():
    """The twin's training loss lay above keras.io's in every epoch, most in the third; both level off near 150."""
    results = json.loads((REPO_ROOT / "results" / "conv" / "keras_io.json").read_text())["results"]
    gaps = np.subtract(results["ours"]["loss"], results["keras_io"]["loss"])
    assert np.all(gaps > 0) and int(np.argmax(gaps)) == 2, gaps
    assert all(abs(results[name]["loss"][-1] - 150) < 5 for name in ("ours", "keras_io"))
    text = post_text(CONV)
    assert "{{% result results.ours.loss.2 minus=results.keras_io.loss.2" in text
    assert "{{% result results.ours.loss.29 minus=results.keras_io.loss.29" in text
    assert "one run of each cannot say" in text


GRADIENTS = "lower-variance-gradients-with-one-stop-gradient"


def test_the_gradient_readings_follow_the_records():
    """Linear-Gaussian: the IWAE bound's encoder SNR falls with the total derivative and rises with DReG; MNIST:
    both fall, DReG's above at every S by a widening factor; STL above the total derivative at every S with
    the same slope near one half, and under half its variance at S = 1; DReG's model scored higher in every seed
    by many standard errors, STL's difference changed sign."""
    toy, spread = (json.loads((REPO_ROOT / "results" / "gradients" / f"{part}.json").read_text())["results"]
                   for part in ("toy", "spread"))  # fmt: skip
    slopes = toy["iwae"]["snr_log_slope"]
    assert slopes["total"]["encoder"] < -0.3 and slopes["dreg"]["encoder"] > 0.3 and slopes["total"]["decoder"] > 0.3

    def snr(results, objective, estimator):
        by_samples = results[objective]["by_samples"]
        return np.array([by_samples[s][estimator]["encoder"]["mean_snr"] for s in sorted(by_samples, key=int)])

    assert snr(toy, "elbo", "stl")[0] > snr(toy, "elbo", "total")[0]
    slopes = spread["iwae"]["snr_log_slope"]
    assert slopes["total"]["encoder"] < 0 and slopes["dreg"]["encoder"] < 0
    ratio = snr(spread, "iwae", "dreg") / snr(spread, "iwae", "total")
    assert np.all(ratio > 1) and ratio[-1] > ratio[0]
    assert np.all(snr(spread, "elbo", "stl") > snr(spread, "elbo", "total"))
    assert all(abs(spread["elbo"]["snr_log_slope"][e]["encoder"] - 0.5) < 0.05 for e in ("total", "stl"))
    at_one = spread["elbo"]["by_samples"]["1"]
    assert at_one["stl"]["encoder"]["total_variance"] < 0.5 * at_one["total"]["encoder"]["total_variance"]
    comparisons = json.loads((REPO_ROOT / "results" / "seeds" / "gradients.json").read_text())["comparisons"]
    assert all(entry["difference"] > 5 * entry["stderr"] for entry in comparisons["iwae-dreg"]["per_seed"])
    assert len({np.sign(entry["difference"]) for entry in comparisons["elbo-stl"]["per_seed"]}) == 2
    text = post_text(GRADIENTS)
    assert "DReG's lay above the total derivative's at every :math:`S`, and the gap widened with :math:`S`" in text
    assert "STL's line above the other at every :math:`S`" in text
    assert "dropping the score removed most of the variance" in text
    assert "each many standard errors from zero" in text and "changed sign from seed to seed" in text

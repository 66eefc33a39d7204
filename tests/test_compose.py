"""The composed VAE: every valid combination of parts builds, trains a step, takes any S, saves and reloads;
every invalid one is refused at build time with its reason; the bound is the mean or the log-mean-exp of the
per-sample log weights, checked against NumPy."""

import itertools

import keras
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import norm

from compose import DIVERGENCES, OBJECTIVES, POSTERIORS, NegativeObjective, check_parts, compose_vae
from likelihoods import LIKELIHOODS

DATA_DIM, LATENT_DIM, NUM_CLASSES, BATCH = 5, 2, 3, 4


def valid(combination):
    try:
        check_parts(*combination)
    except ValueError:
        return False
    return True


ALL = list(itertools.product(POSTERIORS, DIVERGENCES, LIKELIHOODS, OBJECTIVES))
VALID = [c for c in ALL if valid(c)]
INVALID = [c for c in ALL if not valid(c)]


def all_pairs(combinations):
    """A subset of ``combinations`` in which every pair of choices that occurs at all occurs at least once."""

    def pairs(c):
        return {(i, c[i], j, c[j]) for i, j in itertools.combinations(range(len(c)), 2)}

    needed, chosen = set().union(*map(pairs, combinations)), []
    while needed:
        best = max(combinations, key=lambda c: len(pairs(c) & needed))
        chosen.append(best)
        needed -= pairs(best)
    return chosen


PAIRS = all_pairs(VALID)


def data(likelihood, rng, count=BATCH):
    if likelihood == "categorical":
        return rng.integers(0, NUM_CLASSES, size=(count, 1)).astype("float32")
    if likelihood == "bernoulli":
        return (rng.random((count, DATA_DIM)) < 0.5).astype("float32")
    if likelihood == "continuous_bernoulli":
        return rng.random((count, DATA_DIM)).astype("float32")
    return rng.standard_normal((count, DATA_DIM)).astype("float32")


def model_inputs(vae, x, samples, rng):
    noise = [rng.standard_normal((len(x), samples, LATENT_DIM)).astype("float32") for _ in vae.inputs[1:]]
    return [x, *noise]


def tiny(posterior, divergence, likelihood, objective):
    return compose_vae(
        1 if likelihood == "categorical" else DATA_DIM, LATENT_DIM, posterior, divergence, likelihood, objective,
        hidden_units=4, num_flows=2, flow_hidden_units=4, num_classes=NUM_CLASSES, discriminator_units=4,
        num_examples=BATCH if posterior == "global" else None,
    )  # fmt: skip


def check_combination(combination, tmp_path):
    """Builds, takes one training step on S = 2, runs on S = 3, and reloads (safe mode) to identical outputs."""
    posterior, divergence, likelihood, objective = combination
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    vae = tiny(*combination)
    vae.compile(optimizer="adam", loss=NegativeObjective(objective, likelihood), run_eagerly=True)
    x = data(likelihood, rng)
    before = [w.copy() for w in vae.get_weights()]
    history = vae.fit(model_inputs(vae, x, 2, rng), x, batch_size=BATCH, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, vae.get_weights(), strict=True))
    inputs = model_inputs(vae, x, 3, rng)  # S is data: the model trained on S = 2 takes S = 3
    parameters, log_ratio = (keras.ops.convert_to_numpy(t) for t in vae(inputs))
    assert parameters.shape[:2] == (BATCH, 3) and log_ratio.shape == (BATCH, 3)
    assert np.all(np.isfinite(parameters)) and np.all(np.isfinite(log_ratio))
    path = tmp_path / "vae.keras"
    vae.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    for ours, theirs in zip((parameters, log_ratio), reloaded(inputs), strict=True):
        np.testing.assert_array_equal(ours, keras.ops.convert_to_numpy(theirs))


@pytest.mark.parametrize("combination", PAIRS, ids="-".join)
def test_an_all_pairs_subset_of_the_parts_builds_trains_takes_any_s_and_reloads(combination, tmp_path):
    check_combination(combination, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("combination", [c for c in VALID if c not in PAIRS], ids="-".join)
def test_every_other_valid_combination_builds_trains_takes_any_s_and_reloads(combination, tmp_path):
    check_combination(combination, tmp_path)


@pytest.mark.parametrize("combination", INVALID, ids="-".join)
def test_every_invalid_combination_is_refused_with_its_reason(combination):
    posterior, divergence, likelihood, objective = combination
    with pytest.raises(ValueError) as error:
        tiny(*combination)
    if divergence == "closed_form" and posterior not in ("gaussian", "global"):
        reason = f"the KL of a {posterior} posterior from the prior has no closed form"
    elif posterior == "implicit" and divergence not in ("adversarial", "adaptive_contrast"):
        reason = "posterior='implicit' has no density"
    elif posterior == "global" and divergence == "monte_carlo":
        reason = "posterior='global' shares one z among all the training examples"
    else:
        reason = "objective='iwae' weights every sample by p(x, z) / q(z|x)"
    assert reason in str(error.value)


def test_the_matrix_has_what_the_posts_need():
    assert len(VALID) == 4 * (5 + 4 + 4 + 2 + 4)  # per likelihood: Gaussian 5, each flow 4, implicit 2, global 4
    assert len(PAIRS) < len(VALID) / 2


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_the_bound_is_the_mean_or_the_log_mean_exp_of_the_log_weights(objective, likelihood):
    """Against NumPy and SciPy: log p(x|z) plus the log ratio, reduced over the samples, also at log weights
    near -1e4 where exponentiating them underflows."""
    rng = np.random.default_rng(1)
    log_ratio = (rng.normal(size=(3, 5)) - np.array([[0.0], [10.0], [1e4]])).astype("float32")
    if likelihood == "bernoulli":
        x = (rng.random((3, 4)) < 0.5).astype("float32")
        parameters = rng.normal(scale=3.0, size=(3, 5, 4)).astype("float32")
        log_px = np.sum(x[:, None] * parameters - np.logaddexp(0.0, parameters), axis=-1)
    else:
        x = rng.normal(size=(3, 4)).astype("float32")
        parameters = rng.normal(size=(3, 5, 8)).astype("float32")  # means, then log standard deviations
        mean, log_scale = parameters[..., :4], parameters[..., 4:]
        log_px = np.sum(norm.logpdf(x[:, None], mean, np.exp(log_scale)), axis=-1)
    log_w = log_px + log_ratio.astype("float64")
    expected = logsumexp(log_w, axis=-1) - np.log(5) if objective == "iwae" else log_w.mean(axis=-1)
    bound = NegativeObjective(objective, likelihood, reduction=None)(x, [parameters, log_ratio])
    np.testing.assert_allclose(-keras.ops.convert_to_numpy(bound), expected, rtol=1e-5)


def test_the_first_posts_listing_computes_what_the_composed_vae_computes_with_the_same_weights():
    """The first post's self-contained `build_vae` and `compose_vae` with its parts (Gaussian, closed-form KL,
    Bernoulli, ELBO), given the same weights: the same logits, and the same loss, which is the Bernoulli NLL
    averaged over the samples plus the KL computed here in NumPy."""
    from variational_autoencoder import BernoulliNegativeLogLikelihood, build_vae

    keras.utils.set_random_seed(0)
    first, _, _ = build_vae(DATA_DIM, 6, LATENT_DIM)
    composed = compose_vae(DATA_DIM, LATENT_DIM, hidden_units=6)
    for name in ("encoder", "decoder"):
        composed.get_layer(name).set_weights(first.get_layer(name).get_weights())
    rng = np.random.default_rng(4)
    x = data("bernoulli", rng, count=7)
    eps = rng.standard_normal((7, 3, LATENT_DIM)).astype("float32")
    x_logits = keras.ops.convert_to_numpy(first([x, eps]))
    first_kl = sum(keras.ops.convert_to_numpy(loss) for loss in first.losses)  # its KL layer's add_loss
    parameters, log_ratio = (keras.ops.convert_to_numpy(t) for t in composed([x, eps]))
    np.testing.assert_allclose(parameters, x_logits, rtol=1e-6, atol=1e-6)

    z_mean, z_log_var = (keras.ops.convert_to_numpy(t) for t in first.get_layer("encoder")(x))
    kl = -0.5 * np.sum(1 + z_log_var - z_mean**2 - np.exp(z_log_var), axis=-1)
    np.testing.assert_allclose(log_ratio, np.broadcast_to(-kl[:, None], (7, 3)), rtol=1e-5, atol=1e-6)
    nll = np.sum(np.logaddexp(0.0, x_logits) - x[:, None] * x_logits, axis=-1).mean(axis=-1)
    np.testing.assert_allclose(first_kl, np.mean(kl), rtol=1e-5)
    first_loss = BernoulliNegativeLogLikelihood()(x, x_logits) + first_kl  # what the first post minimises
    composed_loss = NegativeObjective("elbo", "bernoulli")(x, [parameters, log_ratio])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(first_loss), np.mean(nll + kl), rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(composed_loss), np.mean(nll + kl), rtol=1e-5)


# ---------------------------------------------------------------------------
# The KL weight (beta) and its warm-up: training only, counted in steps
# ---------------------------------------------------------------------------


def weighted_and_plain(kl_weight, kl_warmup_steps):
    """A weighted VAE and the same VAE (same weights) without the weight."""
    keras.utils.set_random_seed(0)
    weighted = compose_vae(DATA_DIM, LATENT_DIM, hidden_units=4, kl_weight=kl_weight, kl_warmup_steps=kl_warmup_steps)
    plain = compose_vae(DATA_DIM, LATENT_DIM, hidden_units=4)
    plain.set_weights([w for w, v in zip(weighted.get_weights(), weighted.weights, strict=True) if v.name != "step"])
    return weighted, plain


def test_the_kl_weight_rises_over_the_warm_up_and_acts_in_training_only():
    """Step t of training sees beta * min(1, t / W) times the log ratio; a call outside training sees it
    unweighted and counts no step."""
    rng = np.random.default_rng(0)
    weighted, plain = weighted_and_plain(kl_weight=2.0, kl_warmup_steps=4)
    x = data("bernoulli", rng)
    inputs = model_inputs(weighted, x, 3, rng)
    unweighted = keras.ops.convert_to_numpy(plain(inputs)[1])
    assert np.all(unweighted <= 0) and np.any(unweighted < -1e-2)  # -KL in closed form, nonzero somewhere
    step = weighted.get_layer("kl_weight").step
    for t in range(1, 7):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(weighted(inputs)[1]), unweighted, rtol=1e-6)
        got = keras.ops.convert_to_numpy(weighted(inputs, training=True)[1])
        np.testing.assert_allclose(got, 2.0 * min(1.0, t / 4) * unweighted, rtol=1e-6)
        assert float(keras.ops.convert_to_numpy(step)) == t


def test_training_minimises_the_weighted_objective_and_evaluation_reports_the_true_one():
    """One training step's loss is the beta-weighted negative ELBO of the weights before the step (from the
    plain model's outputs); `evaluate` reports the plain model's negative ELBO; and `fit` counts its steps, on
    every backend (under JAX the count is state the compiled step returns)."""
    rng = np.random.default_rng(1)
    weighted, plain = weighted_and_plain(kl_weight=0.5, kl_warmup_steps=0)
    x = data("bernoulli", rng, count=8)
    inputs = model_inputs(weighted, x, 2, rng)
    loss = NegativeObjective("elbo", "bernoulli")
    for model in (weighted, plain):
        model.compile(optimizer="adam", loss=loss)
    parameters, log_ratio = (keras.ops.convert_to_numpy(t) for t in plain(inputs))
    expected = float(keras.ops.convert_to_numpy(loss(x, [parameters, 0.5 * log_ratio])))
    assert float(keras.ops.convert_to_numpy(loss(x, [parameters, log_ratio]))) > expected + 1e-3  # weight matters
    assert weighted.evaluate(inputs, x, batch_size=8, verbose=0) == pytest.approx(plain.evaluate(inputs, x, verbose=0),
                                                                                  rel=1e-6)  # fmt: skip
    history = weighted.fit(inputs, x, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-5)
    weighted.fit(inputs, x, batch_size=2, epochs=2, verbose=0)
    assert float(keras.ops.convert_to_numpy(weighted.get_layer("kl_weight").step)) == 1 + 2 * 4


def test_fit_vae_counts_every_step_once_and_a_saved_model_keeps_the_count(tmp_path):
    """Through `fit_vae` (ten steps per compiled execution, under XLA where the backend has it) the count is
    the number of optimiser steps, and a model saved and reloaded with ``safe_mode=True`` goes on from it."""
    from training import MonteCarloBatches, fit_vae

    rng = np.random.default_rng(2)
    keras.utils.set_random_seed(0)
    vae = compose_vae(DATA_DIM, LATENT_DIM, hidden_units=4, kl_weight=1.0, kl_warmup_steps=50)
    x = data("bernoulli", rng, count=30)
    fit_vae(vae, x, epochs=2, batch_size=4, verbose=0)
    steps = 2 * len(MonteCarloBatches(x, 4, 1, LATENT_DIM))
    assert float(keras.ops.convert_to_numpy(vae.get_layer("kl_weight").step)) == steps == 16
    path = tmp_path / "weighted.keras"
    vae.save(path)
    again = keras.saving.load_model(path, safe_mode=True)
    assert float(keras.ops.convert_to_numpy(again.get_layer("kl_weight").step)) == steps
    assert again.get_layer("kl_weight").get_config()["warmup_steps"] == 50


def test_fit_vae_refuses_the_iwae_bound_for_a_weighted_model():
    """The builder refuses a weight with objective='iwae'; so does training a weighted ELBO model on that bound."""
    from training import fit_vae

    vae = compose_vae(DATA_DIM, LATENT_DIM, divergence="monte_carlo", hidden_units=4, kl_weight=2.0)
    x = data("bernoulli", np.random.default_rng(3), count=4)
    with pytest.raises(ValueError, match="objective='iwae' is a bound on log p\\(x\\) only with the weights"):
        fit_vae(vae, x, objective="iwae", epochs=1, verbose=0)


def test_a_plain_elbo_has_no_weight_layer():
    assert "kl_weight" not in [layer.name for layer in compose_vae(DATA_DIM, LATENT_DIM, hidden_units=4).layers]


@pytest.mark.parametrize(
    "objective, kl_weight, kl_warmup_steps, message",
    [
        ("iwae", 2.0, 0, "objective='iwae' is a bound on log p\\(x\\) only with the weights"),
        ("iwae", 1.0, 10, "Received: kl_weight=1.0, kl_warmup_steps=10"),
        ("elbo", 0.0, 0, "positive number. Received: kl_weight=0.0"),
        ("elbo", -1.0, 0, "positive number. Received: kl_weight=-1.0"),
        ("elbo", 1.0, -5, "integer >= 0. Received: -5"),
        ("elbo", 1.0, 2.5, "integer >= 0. Received: 2.5"),
        ("elbo", float("inf"), 0, "positive number. Received: kl_weight=inf"),
        ("elbo", True, 0, "positive number. Received: kl_weight=True"),
        ("elbo", 1.0, True, "integer >= 0. Received: True"),
    ],
    ids=["iwae-beta", "iwae-warm-up", "zero-beta", "negative-beta", "negative-warm-up", "fractional-warm-up",
         "infinite-beta", "boolean-beta", "boolean-warm-up"],  # fmt: skip
)
def test_a_weight_the_objective_cannot_take_is_refused(objective, kl_weight, kl_warmup_steps, message):
    divergence = "monte_carlo" if objective == "iwae" else "closed_form"
    with pytest.raises(ValueError, match=message):
        compose_vae(DATA_DIM, LATENT_DIM, divergence=divergence, objective=objective, hidden_units=4,
                    kl_weight=kl_weight, kl_warmup_steps=kl_warmup_steps)  # fmt: skip


def test_numpy_scalars_are_weights_too():
    """A weight read from an array (np.float32, np.int64) is accepted as the number it is."""
    vae = compose_vae(DATA_DIM, LATENT_DIM, hidden_units=4, kl_weight=np.float32(0.5), kl_warmup_steps=np.int64(3))
    config = vae.get_layer("kl_weight").get_config()
    assert (config["beta"], config["warmup_steps"]) == (0.5, 3)

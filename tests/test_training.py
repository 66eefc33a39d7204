"""Training the composed VAE on any backend: the NumPy batches (order, binarisation, eps, prior draws) checked
against their distributions and for determinism, and `fit_vae` trains a model with S = 1 that is then scored
with another S without being rebuilt. Runs under every Keras backend (tests/test_backends.py)."""

import keras
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from compose import NegativeObjective, compose_vae
from training import MonteCarloBatches, fit_vae


def grey_images(count=60, dim=8, seed=0):
    return np.random.default_rng(seed).random((count, dim), dtype="float32")


def test_every_epoch_visits_every_image_once_in_a_fresh_order():
    x = np.arange(23, dtype="float32")[:, None]
    batches = MonteCarloBatches(x, batch_size=5, seed=0)
    orders = []
    for _ in range(3):
        seen = np.concatenate([batches[i][1][:, 0] for i in range(len(batches))])
        assert len(batches) == 5 and len(batches[4][1]) == 3
        assert sorted(seen) == list(range(23))
        orders.append(seen)
        batches.on_epoch_end()
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    in_order = MonteCarloBatches(x, batch_size=5, shuffle=False, seed=0)
    np.testing.assert_array_equal(in_order[1][1][:, 0], np.arange(5, 10))


def test_a_batch_depends_on_its_seed_epoch_and_index_only():
    x = grey_images()
    first, second = (MonteCarloBatches(x, 7, 3, 2, binarize=True, prior_samples=True, seed=4) for _ in range(2))
    late = [second[i] for i in reversed(range(len(second)))][::-1]  # drawn in the other order
    for i in range(len(first)):
        for ours, theirs in zip(first[i][0], late[i][0], strict=True):
            np.testing.assert_array_equal(ours, theirs)
    other_seed = MonteCarloBatches(x, 7, 3, 2, binarize=True, prior_samples=True, seed=5)
    assert not np.array_equal(first[0][0][1], other_seed[0][0][1])
    eps, z_prior = first[0][0][1], first[0][0][2]
    assert eps.shape == z_prior.shape == (7, 3, 2) and not np.allclose(eps, z_prior)
    with pytest.raises(IndexError, match=r"batch index in \[0, 8\]"):
        first[9]


def test_the_draws_have_their_distributions():
    """Binarised pixels are Bernoulli(grey level): their mean over 400 epochs is within 5 standard errors
    of the grey level, for every pixel; eps and the prior draws pass a Kolmogorov-Smirnov test against
    N(0, 1) at the 1e-3 level, and the two streams are uncorrelated (|r| < 5 / sqrt(n))."""
    x = np.linspace(0.0, 1.0, 12, dtype="float32")[None, :]
    batches = MonteCarloBatches(x, batch_size=1, mc_samples=50, latent_dim=4, binarize=True, prior_samples=True,
                                seed=1)  # fmt: skip
    binary, eps, z_prior = [], [], []
    for _ in range(400):
        (x_binary, eps_batch, prior_batch), target = batches[0]
        np.testing.assert_array_equal(x_binary, target)
        binary.append(x_binary[0])
        eps.append(eps_batch.ravel())
        z_prior.append(prior_batch.ravel())
        batches.on_epoch_end()
    binary, eps, z_prior = np.array(binary), np.concatenate(eps), np.concatenate(z_prior)
    assert set(np.unique(binary)) <= {0.0, 1.0}
    standard_error = np.sqrt(x[0] * (1 - x[0]) / len(binary))
    assert np.all(np.abs(binary.mean(axis=0) - x[0]) <= 5 * standard_error + 1e-12)
    for draws in (eps, z_prior):
        assert stats.kstest(draws, "norm").pvalue > 1e-3
    assert abs(np.corrcoef(eps, z_prior)[0, 1]) < 5 / np.sqrt(len(eps))


def test_dequantised_levels_stay_in_their_bins_and_fill_them_uniformly():
    """(k + u) / 256 with u ~ U(0, 1): every value lies in [k / 256, (k + 1) / 256), and u passes a
    Kolmogorov-Smirnov test against U(0, 1) at the 1e-3 level."""
    levels = np.array([[0, 1, 128, 255]], dtype="float32") / 256
    batches = MonteCarloBatches(levels, batch_size=1, dequantize=True, seed=2)
    u = []
    for _ in range(300):
        (x, _), _ = batches[0]
        u.append((x - levels) * 256)
        batches.on_epoch_end()
    u = np.concatenate(u).ravel()
    assert np.all((u >= 0) & (u < 1))
    assert stats.kstest(u, "uniform").pvalue > 1e-3


def test_fit_takes_another_optimiser_and_reports_the_loss_on_held_out_data():
    """The optimiser given is the one that takes the steps, and the held-out loss is the model's loss on those
    images: computed again after training with other draws, it matches the last epoch's within 0.5 nats."""
    x = (grey_images(60) > 0.5).astype("float32")
    held_out = (grey_images(40, seed=1) > 0.5).astype("float32")
    keras.utils.set_random_seed(0)
    vae = compose_vae(8, 2, hidden_units=8)
    optimizer = keras.optimizers.SGD(0.05)
    history = fit_vae(vae, x, epochs=2, batch_size=20, seed=0, verbose=0, optimizer=optimizer, validation_x=held_out)
    assert vae.optimizer is optimizer and int(keras.ops.convert_to_numpy(optimizer.iterations)) == 2 * 3
    assert len(history["val_loss"]) == 2 and np.all(np.isfinite(history["val_loss"]))
    eps = np.random.default_rng(5).standard_normal((40, 200, 2)).astype("float32")
    again = NegativeObjective()(held_out, vae([held_out, eps]))
    again = float(keras.ops.convert_to_numpy(again))
    assert abs(again - history["val_loss"][-1]) < 0.5, (again, history["val_loss"])


def test_bad_data_is_refused_with_the_expected_value():
    with pytest.raises(ValueError, match=r"grey levels in \[0, 1\] to binarize. Received: min=0.0, max=2.0"):
        MonteCarloBatches(np.array([[0.0, 2.0]]), binarize=True)
    with pytest.raises(ValueError, match=r"8-bit levels k / 256 in \[0, 255/256\] to dequantize. Received: min=0.0"):
        MonteCarloBatches(np.array([[0.0, 1.0]]), dequantize=True)
    with pytest.raises(ValueError, match="at most one of `binarize` and `dequantize`"):
        MonteCarloBatches(np.zeros((5, 2)), binarize=True, dequantize=True)
    with pytest.raises(ValueError, match=r"shape \(count, data_dim\)"):
        MonteCarloBatches(np.zeros(5))
    with pytest.raises(ValueError, match="`mc_samples` to be a positive integer"):
        MonteCarloBatches(np.zeros((5, 2)), mc_samples=0)
    vae = compose_vae(8, 2, hidden_units=4)
    with pytest.raises(ValueError, match="`learning_rate` to be a positive number"):
        fit_vae(vae, grey_images(), learning_rate=float("nan"))
    with pytest.raises(ValueError, match="Expected `objective` to be one of"):
        fit_vae(vae, grey_images(), objective="elbow")


@pytest.mark.parametrize(
    "posterior, divergence, objective",
    [("gaussian", "closed_form", "elbo"), ("iaf", "monte_carlo", "iwae"), ("implicit", "adversarial", "elbo")],
)
def test_fit_trains_with_one_sample_and_the_same_model_scores_with_many(posterior, divergence, objective):
    """On this backend: the trained model uses its latent code, and, unchanged, takes S = 64 samples per image.

    Each image is one of two prototypes (pixels at 0.9 or 0.1), binarised. Every pixel's marginal is 1/2, so a
    model that ignores z scores at best 8 log 2 = 5.55 nats per image; one that encodes the prototype in z
    can reach about 8 x 0.33 (the binarisation's entropy) plus the cost of the code. The negative bound of
    the trained model on 200 freshly binarised images, with S = 64, must be 0.3 nats below 8 log 2."""
    rng = np.random.default_rng(0)
    prototypes = np.array([[0.9] * 4 + [0.1] * 4, [0.1] * 4 + [0.9] * 4], dtype="float32")
    x = prototypes[rng.integers(0, 2, size=200)]
    keras.utils.set_random_seed(0)
    vae = compose_vae(8, 2, posterior, divergence, "bernoulli", objective, hidden_units=16, num_flows=1,
                      flow_hidden_units=8, discriminator_units=8)  # fmt: skip
    history = fit_vae(vae, x, "bernoulli", objective, epochs=20, batch_size=20, learning_rate=1e-2, binarize=True,
                      seed=0, verbose=0)  # fmt: skip
    assert np.all(np.isfinite(history["loss"])) and history["loss"][-1] < history["loss"][0], history["loss"]
    x_binary = (rng.random(x.shape) < x).astype("float32")
    eps = rng.standard_normal((len(x), 64, 2)).astype("float32")
    inputs = [x_binary, eps] + ([rng.standard_normal(eps.shape).astype("float32")] if len(vae.inputs) == 3 else [])
    parameters, log_ratio = vae(inputs)
    assert tuple(parameters.shape) == (len(x), 64, 8) and tuple(log_ratio.shape) == (len(x), 64)
    bound = keras.ops.convert_to_numpy(
        NegativeObjective(objective, "bernoulli", reduction=None)(x_binary, [parameters, log_ratio])
    )
    assert bound.shape == (len(x),) and np.all(np.isfinite(bound))
    assert bound.mean() < 8 * np.log(2) - 0.3, bound.mean()


@pytest.mark.parametrize("posterior, divergence", [("gaussian", "closed_form"), ("planar", "monte_carlo")])
def test_the_importance_sampled_log_likelihood_matches_quadrature_over_the_latent_plane(posterior, divergence):
    """For a 2-D latent space, ``log p(x) = log ∫ p(x|z) N(z; 0, I) dz`` by the midpoint rule on a 241 x 241 grid
    over [-6, 6]^2 (NumPy, from the decoder's logits), against the importance-sampled estimate from the model's
    own posterior with 4,000 samples: within 0.05 nats for every image, whatever divergence the model trained
    with (the score evaluates the posterior's density). The model is trained for a few epochs first: the
    posterior of a randomly initialised flow is a proposal with heavy-tailed weights, whose estimates
    wander by tenths of a nat. The ELBO's terms bound log p(x) from below, and an implicit posterior, which
    has no density, is refused."""
    from log_likelihood import log_likelihood
    from training import elbo_terms

    keras.utils.set_random_seed(3)
    vae = compose_vae(8, 2, posterior, divergence, hidden_units=8, num_flows=2, flow_hidden_units=8)
    x = (np.random.default_rng(3).random((4, 8)) < 0.5).astype("float32")
    fit_vae(vae, np.tile(x, (50, 1)), epochs=5, batch_size=20, learning_rate=1e-2, seed=0, verbose=0)
    estimate = log_likelihood(vae, x, "bernoulli", num_samples=4000, batch_size=2, seed=0)

    edges = np.linspace(-6.0, 6.0, 242)
    centres = (edges[:-1] + edges[1:]) / 2
    z = np.stack(np.meshgrid(centres, centres), axis=-1).reshape(1, -1, 2).astype("float32")
    logits = keras.ops.convert_to_numpy(vae.get_layer("decoder")(z))[0].astype("float64")  # (points, 8)
    log_prior = -0.5 * np.sum(z[0].astype("float64") ** 2, axis=-1) - np.log(2 * np.pi)
    log_px_given_z = x @ logits.T - np.sum(np.logaddexp(0.0, logits), axis=-1)  # (images, points)
    quadrature = logsumexp(log_px_given_z + log_prior + 2 * np.log(edges[1] - edges[0]), axis=-1)
    np.testing.assert_allclose(estimate, quadrature, atol=0.05)

    terms = elbo_terms(vae, x, "bernoulli", mc_samples=2000, seed=1)
    assert set(terms) == {"distortion", "rate", "rate_exact"}
    if divergence == "closed_form":
        np.testing.assert_allclose(terms["rate"], terms["rate_exact"], rtol=1e-5)
    negative_elbo = terms["distortion"] + terms["rate_exact"]
    assert np.all(negative_elbo > -quadrature - 0.05), (negative_elbo, -quadrature)

    implicit = compose_vae(8, 2, "implicit", "adversarial", hidden_units=4, discriminator_units=4)
    with pytest.raises(ValueError, match="An implicit posterior has no density"):
        log_likelihood(implicit, x)
    assert set(elbo_terms(implicit, x, mc_samples=3)) == {"distortion", "rate"}

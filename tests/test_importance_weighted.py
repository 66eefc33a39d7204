"""The ELBO and the importance-weighted bound as training objectives, checked independently.

The reference values are computed here with NumPy and SciPy from the model's
raw outputs (logits, z_mean, z_log_var, eps), not with the functions under test.
"""

import math

import keras
import numpy as np
import pytest
from keras import ops
from scipy.special import log_expit, logsumexp
from scipy.stats import norm

from compose import NegativeObjective, compose_vae
from importance_weighted import iwae_vae, paper_schedule, train_iwae
from mnist_data import binarize_once
from objectives import BoundModel, bound_from_log_weights
from training import elbo_terms

SMALL = {"intermediate_dim": 32, "latent_dim": 3, "hidden_layers": 2, "activation": "tanh"}


def numpy_log_weights(x, x_logits, z_mean, z_log_var, eps):
    """log p(x|z) + log N(z; 0, I) - log N(z; z_mean, exp(z_log_var)) from SciPy densities."""
    log_px_given_z = np.sum(x[:, None] * log_expit(x_logits) + (1 - x[:, None]) * log_expit(-x_logits), axis=-1)
    std = np.exp(0.5 * z_log_var)[:, None]
    z = z_mean[:, None] + std * eps
    log_prior = norm.logpdf(z).sum(-1)
    log_posterior = norm.logpdf(z, loc=z_mean[:, None], scale=std).sum(-1)
    return log_px_given_z + log_prior - log_posterior


def reference_log_weights(vae, x, eps):
    """The model's logits, then the log weights from SciPy densities of its encoder's Gaussian."""
    x_logits, _ = vae([x, eps])
    z_mean, z_log_var = (ops.convert_to_numpy(t).astype("float64") for t in vae.get_layer("encoder")(x))
    return numpy_log_weights(x, ops.convert_to_numpy(x_logits).astype("float64"), z_mean, z_log_var, eps)


@pytest.fixture(scope="module")
def batch(mnist_subset):
    (x_train, _), _ = mnist_subset
    return binarize_once(x_train[:16], seed=0)


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_negative_bound_matches_numpy(batch, objective):
    keras.utils.set_random_seed(1)
    vae = iwae_vae(objective=objective, **SMALL)
    eps = np.random.default_rng(2).standard_normal((16, 7, 3)).astype("float32")
    log_w = reference_log_weights(vae, batch, eps.astype("float64"))
    expected = log_w.mean(-1) if objective == "elbo" else logsumexp(log_w, axis=-1) - math.log(7)
    loss = NegativeObjective(objective, "bernoulli", reduction=None)(batch, vae([batch, eps]))
    np.testing.assert_allclose(ops.convert_to_numpy(loss), -expected, rtol=1e-5)


def test_iwae_bound_is_above_the_elbo_on_the_same_samples_and_grows_with_k(batch):
    keras.utils.set_random_seed(4)
    vae = iwae_vae(objective="iwae", **SMALL)
    eps = np.random.default_rng(5).standard_normal((16, 600, 3)).astype("float32")
    log_w = reference_log_weights(vae, batch, eps)
    means = {}
    for k in (1, 5, 50):
        groups = log_w[:, : (600 // k) * k].reshape(16, -1, k)
        iwae = ops.convert_to_numpy(bound_from_log_weights(groups, "iwae"))
        elbo = ops.convert_to_numpy(bound_from_log_weights(groups, "elbo"))
        assert np.all(iwae >= elbo - 1e-4)
        means[k] = iwae.mean()
    assert means[1] < means[5] < means[50], means


def test_monte_carlo_elbo_agrees_with_the_closed_form_kl_model(batch):
    """The log-ratio ELBO and the closed-form-KL ELBO of the same weights have the same expectation."""
    keras.utils.set_random_seed(6)
    vae = iwae_vae(objective="elbo", **SMALL)
    closed = compose_vae(784, 3, "gaussian", "closed_form", "bernoulli", "elbo", 32, 2, "tanh")
    closed.set_weights(vae.get_weights())
    x = batch[:4]
    terms = elbo_terms(closed, x, mc_samples=4000, seed=7)
    closed_form = terms["distortion"] + terms["rate"]  # exact KL
    eps = np.random.default_rng(8).standard_normal((4, 4000, 3)).astype("float32")
    log_w = reference_log_weights(vae, x, eps)
    monte_carlo = ops.convert_to_numpy(NegativeObjective("elbo", reduction=None)(x, vae([x, eps])))
    stderr = log_w.std(-1) / math.sqrt(4000)
    # Both are estimates: allow 4 standard errors of the log-ratio one (the closed form's is smaller).
    np.testing.assert_array_less(np.abs(monte_carlo - closed_form), 4 * stderr * math.sqrt(2))


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_one_model_takes_any_number_of_samples(batch, objective):
    """S is data: one built model, fed 1, 3 and 7 draws of eps per image, without rebuilding."""
    vae = iwae_vae(objective=objective, **SMALL)
    assert isinstance(vae, BoundModel)
    assert [tuple(t.shape) for t in vae.outputs] == [(None, None, 784), (None, None)]
    for samples in (1, 3, 7):
        eps = np.zeros((16, samples, 3), "float32")
        x_logits, log_ratio = vae([batch, eps])
        assert x_logits.shape == (16, samples, 784) and log_ratio.shape == (16, samples)


def test_training_lowers_the_bound_and_the_model_round_trips(mnist_subset, tmp_path):
    (x_train, _), (x_test, _) = mnist_subset
    vae, history = train_iwae(x_train, x_test[:200], verbose=0, objective="iwae", k=5, stages=2, batch_size=100,
                              **SMALL)  # fmt: skip
    assert len(history["loss"]) == 4  # 1 + 3 epochs
    assert history["loss"][-1] < history["loss"][0]
    assert all(np.isfinite(history["val_loss"]))
    path = tmp_path / "iwae.keras"
    vae.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, BoundModel) and loaded.loss.objective == "iwae"
    x = binarize_once(x_test[:50], seed=1)
    eps = np.random.default_rng(9).standard_normal((50, 11, 3)).astype("float32")  # another S than training's
    np.testing.assert_allclose(loaded.evaluate([x, eps], x, verbose=0), vae.evaluate([x, eps], x, verbose=0), rtol=1e-6)


def test_paper_schedule_has_3280_epochs_and_decays_by_ten_every_seven_stages():
    num_epochs, schedule = paper_schedule(8, steps_per_epoch=3000)
    assert num_epochs == 3280
    starts = np.cumsum([0] + [3**i for i in range(8)])[:-1] * 3000
    rates = [float(schedule(int(step))) for step in starts]
    np.testing.assert_allclose(rates, [1e-3 * 10 ** (-i / 7) for i in range(8)], rtol=1e-6)
    assert float(schedule(int(starts[7]) - 1)) == pytest.approx(1e-3 * 10 ** (-6 / 7), rel=1e-6)
    assert paper_schedule(1, steps_per_epoch=10) == (1, 1e-3)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: iwae_vae(objective="vae"), "objective='vae'"),
        (lambda: NegativeObjective("kl"), "objective='kl'"),
        (lambda: paper_schedule(0, 10), "stages=0"),
        (lambda: train_iwae(np.zeros((4, 784), "float32"), k=0), "k=0"),
        (lambda: train_iwae(np.zeros((4, 784), "float32"), mc_samples=3), "Unknown settings"),
        (lambda: iwae_vae(latent_dim=0), "latent_dim=0"),
    ],
    ids=["unknown-objective", "loss-objective", "stages-0", "k-0", "unknown-setting", "latent-0"],
)
def test_bad_settings_get_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()

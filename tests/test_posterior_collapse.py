"""The posterior-collapse diagnostics on a model whose answer is known: an encoder built by hand, two of whose
four dimensions are the prior for every image (zero KL, zero activity) and two of which move with the image;
the KL checked against numerical integration, the activity against NumPy's variance."""

import keras
import numpy as np
import pytest
from scipy import integrate, stats

from conftest import full_mnist, run_python
from posterior_collapse import (
    ACTIVITY_THRESHOLD,
    active_units,
    activity,
    kl_per_dimension,
    posterior_draws,
    posterior_means,
    posterior_statistics,
)


def hand_built_vae(name="vae"):
    """x (batch, 2) to z_mean = (2 x_0, x_1, 0, 0) and z_log_var = (log 0.25, 0.5 x_0, 0, 0), in a model called
    ``name`` with a layer "encoder", as the site's models have."""
    x = keras.Input(shape=(2,), name="x")
    z_mean = keras.layers.Dense(4, name="z_mean")(x)
    z_log_var = keras.layers.Dense(4, name="z_log_var")(x)
    encoder = keras.Model(x, [z_mean, z_log_var], name="encoder")
    encoder.get_layer("z_mean").set_weights([np.array([[2, 0, 0, 0], [0, 1, 0, 0]], "float32"), np.zeros(4, "float32")])
    encoder.get_layer("z_log_var").set_weights(
        [np.array([[0, 0.5, 0, 0], [0, 0, 0, 0]], "float32"), np.array([np.log(0.25), 0, 0, 0], "float32")]
    )
    inputs = keras.Input(shape=(2,), name="x")
    return keras.Model(inputs, encoder(inputs), name=name)


def test_the_dimensions_at_the_prior_have_zero_kl_and_zero_activity():
    x = np.random.default_rng(0).normal(size=(500, 2)).astype("float32")
    z_mean, z_log_var = posterior_statistics(hand_built_vae(), x)
    kl, active = kl_per_dimension(z_mean, z_log_var), activity(z_mean)
    assert kl[2] == kl[3] == 0.0 and active[2] == active[3] == 0.0
    np.testing.assert_allclose(active[:2], [np.var(2 * x[:, 0], ddof=1), np.var(x[:, 1], ddof=1)], rtol=1e-5)
    assert active_units(z_mean) == 2
    # KL of each used dimension against its definition, integrated numerically for a few images.
    for j in (0, 1):
        by_quadrature = []
        for mean, log_var in zip(z_mean[:5, j], z_log_var[:5, j], strict=True):
            q = stats.norm(mean, np.exp(0.5 * log_var))
            integrand = lambda z, q=q: q.pdf(z) * (q.logpdf(z) - stats.norm.logpdf(z))  # noqa: E731
            by_quadrature.append(integrate.quad(integrand, mean - 12, mean + 12)[0])
        assert kl_per_dimension(z_mean[:5, j : j + 1], z_log_var[:5, j : j + 1])[0] == pytest.approx(
            np.mean(by_quadrature), rel=1e-6
        )


def test_a_dimension_is_active_above_burda_et_al_s_threshold():
    rng = np.random.default_rng(1)
    z_mean = rng.normal(size=(20000, 3)) * np.sqrt([0.02, 0.005, 1.0])  # activities about 0.02, 0.005, 1
    assert ACTIVITY_THRESHOLD == 0.01 and active_units(z_mean) == 2
    assert active_units(z_mean, threshold=0.001) == 3


@pytest.mark.parametrize("name", ["vae_iaf_monte_carlo_bernoulli_elbo", "vae_implicit_adversarial_bernoulli_elbo"])
def test_a_posterior_that_is_not_gaussian_is_refused(name):
    with pytest.raises(ValueError, match=f"Expected a VAE with a Gaussian posterior.*Received the model '{name}'"):
        posterior_statistics(hand_built_vae(name), np.zeros((3, 2), "float32"))


def test_an_implicit_posteriors_means_are_estimated_to_within_their_monte_carlo_error():
    """An implicit encoder built by hand, z = (2 x_0 + eps_0, eps_1): the first dimension's posterior mean is
    2 x_0, the second's 0 for every image. With S draws per image the estimated activity of the second is the
    variance of a mean of S standard normals, 1 / S, within its sampling error (a chi-square's: relative sd
    sqrt(2 / (n - 1)), allowed 5 of them)."""
    from avb import build_implicit_encoder

    encoder = build_implicit_encoder(data_dim=2, hidden_units=1, latent_dim=2, hidden_layers=0)
    encoder.get_layer("z").set_weights([np.array([[2, 0], [0, 0], [1, 0], [0, 1]], "float32"), np.zeros(2, "float32")])
    x_in, eps_in = keras.Input(shape=(2,), name="x"), keras.Input(shape=(None, 2), name="eps")
    vae = keras.Model([x_in, eps_in], encoder([x_in, eps_in]), name="vae_implicit_adversarial_bernoulli_elbo")
    x = np.random.default_rng(2).normal(size=(400, 2)).astype("float32")
    num_samples = 200
    means = posterior_means(vae, x, num_samples=num_samples, seed=3, batch_size=64)
    assert means.shape == (400, 2)
    np.testing.assert_allclose(means[:, 0], 2 * x[:, 0], atol=5 / np.sqrt(num_samples))
    active = activity(means)
    assert active[0] == pytest.approx(4 * np.var(x[:, 0], ddof=1), rel=0.05)
    assert abs(active[1] * num_samples - 1) < 5 * np.sqrt(2 / (len(x) - 1))
    assert active_units(means) == 1


def test_a_gaussian_posteriors_means_are_its_z_mean():
    x = np.random.default_rng(4).normal(size=(50, 2)).astype("float32")
    expected = np.stack([2 * x[:, 0], x[:, 1], np.zeros(50), np.zeros(50)], axis=1)
    np.testing.assert_allclose(posterior_means(hand_built_vae(), x), expected, atol=1e-6)


@pytest.mark.parametrize("posterior", ["planar", "iaf", "implicit"])
def test_the_draws_behind_the_means_are_the_models_own(posterior):
    """For the same x and eps, the z that `posterior_draws` rebuilds from the model's encoder (and flow) is the z
    the model decodes: its decoder maps them to the model's own output."""
    from compose import compose_vae

    keras.utils.set_random_seed(0)
    divergence = "adversarial" if posterior == "implicit" else "monte_carlo"
    vae = compose_vae(6, 3, posterior=posterior, divergence=divergence, hidden_units=4)
    rng = np.random.default_rng(5)
    x = (rng.random((5, 6)) < 0.5).astype("float32")
    eps = rng.standard_normal((5, 4, 3)).astype("float32")
    inputs = [x, eps, eps] if divergence == "adversarial" else [x, eps]  # z_prior: any draws, unused here
    expected = keras.ops.convert_to_numpy(vae(inputs)[0])
    got = keras.ops.convert_to_numpy(vae.get_layer("decoder")(posterior_draws(vae, x, eps)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_the_monte_carlo_means_do_not_depend_on_the_batch_size():
    from avb import build_implicit_encoder

    encoder = build_implicit_encoder(data_dim=2, hidden_units=3, latent_dim=2)
    x_in, eps_in = keras.Input(shape=(2,), name="x"), keras.Input(shape=(None, 2), name="eps")
    vae = keras.Model([x_in, eps_in], encoder([x_in, eps_in]), name="vae_implicit_adversarial_bernoulli_elbo")
    x = np.random.default_rng(6).normal(size=(30, 2)).astype("float32")
    np.testing.assert_allclose(posterior_means(vae, x, 16, batch_size=7), posterior_means(vae, x, 16, batch_size=30),
                               rtol=1e-6)  # fmt: skip


@full_mnist
def test_the_collapse_record_matches_the_committed_models():
    """The record is current, and one model's numbers recomputed from its file agree with it."""
    import json

    import collapse_diagnostics

    result = run_python(["scripts/collapse_diagnostics.py", "--check"])
    assert result.returncode == 0, result.stderr.strip()[-500:]
    record = json.loads(collapse_diagnostics.OUTPUT.read_text())
    assert set(record["models"]) == set(collapse_diagnostics.model_paths())
    assert {name.split("/")[0] for name in record["models"]} == set(collapse_diagnostics.GROUPS)
    name = "iwae/iwae-k50"
    again = collapse_diagnostics.diagnose({name: collapse_diagnostics.model_paths()[name]})[name]
    assert again["active_units"] == record["models"][name]["active_units"]
    np.testing.assert_allclose(again["activity"], record["models"][name]["activity"], atol=2e-6)
    np.testing.assert_allclose(again["kl_per_dimension"], record["models"][name]["kl_per_dimension"], atol=2e-6)
    for model in record["models"].values():
        assert len(model["activity"]) == model["latent_dim"] > 2
        threshold = record["settings"]["threshold"]
        assert model["active_units"] == sum(value > threshold for value in model["activity"])
        active = [value for value in model["activity"] if value > threshold]
        inactive = [value for value in model["activity"] if value <= threshold]
        assert model["smallest_active"] == (min(active) if active else None)
        assert model["largest_inactive"] == (max(inactive) if inactive else None)
        if model["posterior_means"] == "closed_form":
            assert model["kl"] == pytest.approx(sum(model["kl_per_dimension"]), abs=1e-3)
        else:  # a flow or an implicit posterior: no KL per dimension
            assert model["kl"] is None and model["kl_per_dimension"] is None

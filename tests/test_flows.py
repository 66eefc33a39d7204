"""Planar and inverse autoregressive flows: log-determinants, invertibility, masks, densities, the flow VAE."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops
from scipy import stats

from compose import compose_vae
from flow_densities import TARGETS, build_density_fit, fit_flow, log_normaliser, potential, reverse_kl
from flows import FlowKL, InverseAutoregressiveFlow, PlanarFlow, build_flow
from likelihoods import negative_log_likelihood
from log_likelihood import exact_log_ratio_model, log_likelihood
from training import fit_vae

SMALL = {"data_dim": 6, "hidden_units": 8, "latent_dim": 2, "hidden_layers": 1, "flow_hidden_units": 8}


def flow_vae(kind, num_flows, **settings):
    """The composed VAE with a ``kind`` flow posterior of ``num_flows`` steps (tanh, like the post's model)."""
    return compose_vae(posterior=kind, divergence="monte_carlo", num_flows=num_flows, activation="tanh",
                       **{**SMALL, **settings})  # fmt: skip


def randomise(layer_or_model, rng, scale=0.7):
    for weight in layer_or_model.weights:
        weight.assign(rng.normal(size=weight.shape) * scale)


def jacobians(layer, z, context=None):
    """``(d z_out / d z_in per (example, sample), log_det)`` by automatic differentiation, float64."""
    z = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(z)
        z_out, log_det = layer(z if context is None else [z, tf.constant(context)])
    full = tape.jacobian(z_out, z).numpy()  # (batch, samples, d, batch, samples, d)
    batch, samples, _ = z.shape
    per_sample = np.array([[full[b, s, :, b, s, :] for s in range(samples)] for b in range(batch)])
    return per_sample, log_det.numpy()


def layers_to_check(rng, latent_dim):
    context = rng.normal(size=(3, 4))
    return [
        ("planar", PlanarFlow(dtype="float64"), None),
        ("iaf", InverseAutoregressiveFlow(16, 2, dtype="float64"), None),
        ("iaf reversed, context", InverseAutoregressiveFlow(16, 1, reverse=True, dtype="float64"), context),
    ]


@pytest.mark.parametrize("latent_dim", [1, 2, 5])
def test_log_det_equals_the_log_determinant_of_the_autodiff_jacobian(latent_dim):
    rng = np.random.default_rng(latent_dim)
    for name, layer, context in layers_to_check(rng, latent_dim):
        z = rng.normal(size=(3, 2, latent_dim)) * 2.0
        layer(z if context is None else [z, context])
        randomise(layer, rng)
        jacobian, log_det = jacobians(layer, z, context)
        sign, expected = np.linalg.slogdet(jacobian)
        assert np.all(sign > 0), name  # orientation preserved: the map is invertible
        np.testing.assert_allclose(log_det, expected, atol=1e-4, err_msg=name)


def test_amortised_planar_flow_log_det_matches_its_jacobian_per_example():
    rng = np.random.default_rng(1)
    latent_dim = 4
    layer = PlanarFlow(amortized=True, dtype="float64")
    z = tf.constant(rng.normal(size=(3, 2, latent_dim)))
    params = tf.constant(rng.normal(size=(3, 2 * latent_dim + 1)) * 2.0)
    with tf.GradientTape() as tape:
        tape.watch(z)
        z_out, log_det = layer([z, params])
    full = tape.jacobian(z_out, z).numpy()
    for b in range(3):
        for s in range(2):
            np.testing.assert_allclose(np.linalg.slogdet(full[b, s, :, b, s, :])[1], log_det.numpy()[b, s], atol=1e-4)
    assert layer.weights == []


def test_planar_flow_is_invertible_for_adversarial_u_and_w():
    """Draws with ``w^T u`` far below -1 (the raw flow would fold space) still give ``w^T u_hat >= -1``."""
    rng = np.random.default_rng(2)
    layer = PlanarFlow(dtype="float64")
    layer(np.zeros((1, 1, 3)))
    for trial in range(200):
        w = rng.normal(size=3) * 10 ** rng.uniform(-2, 2)
        u = -w * 10 ** rng.uniform(-1, 3) + rng.normal(size=3)  # w^T u from about -1e7 to 0
        if trial % 4 == 0:
            u = rng.normal(size=3) * 10 ** rng.uniform(-2, 3)
        b = rng.normal() * 3
        layer.set_weights([u, w, np.array(b)])
        # Along the line z = t w / |w|^2 the map moves a = w^T z by w^T u_hat * tanh(a + b): monotone iff invertible.
        t = np.linspace(-20, 20, 4001)
        z = (t[:, None] * w / np.dot(w, w))[:, None, :]
        z_out, log_det = (ops.convert_to_numpy(v) for v in layer(z))
        a_out = z_out[:, 0] @ w
        assert np.all(np.diff(a_out) > -1e-9 * np.abs(a_out[1:]).max()), trial
        h = np.tanh(t + b)
        pick = np.abs(h) > 0.5
        w_dot_u_hat = ((z_out[:, 0] - z[:, 0]) @ w)[pick] / h[pick]
        assert np.all(w_dot_u_hat >= -1 - 1e-6), trial
        assert np.all(np.isfinite(log_det)), trial


def test_planar_flow_with_zero_w_is_a_translation_with_zero_log_det():
    layer = PlanarFlow()
    layer(np.zeros((1, 1, 3), "float32"))
    layer.set_weights([np.array([1.0, -2.0, 0.5]), np.zeros(3), np.array(0.7)])
    z = np.random.default_rng(12).normal(size=(4, 2, 3)).astype("float32")
    z_out, log_det = (ops.convert_to_numpy(v) for v in layer(z))
    shift = np.tanh(0.7) * np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(z_out - z, np.broadcast_to(shift, z.shape), atol=1e-6)
    np.testing.assert_array_equal(log_det, np.zeros((4, 2)))


@pytest.mark.parametrize("w_norm_sq", [2.5e-13, 1e-15, 1e-20])
def test_planar_log_det_matches_its_jacobian_below_the_floor_on_w(w_norm_sq):
    """Where ``|w|^2`` is below the 1e-12 floor the correction to ``u`` is scaled down, and the map and its
    log-determinant must be scaled down alike: against the autodiff Jacobian in float64."""
    layer = PlanarFlow(dtype="float64")
    layer(np.zeros((1, 1, 2)))
    w = np.array([0.6, -0.8]) * np.sqrt(w_norm_sq)
    layer.set_weights([np.array([1.5, 2.0]), w, np.array(0.3)])
    z = np.random.default_rng(13).normal(size=(3, 2, 2)) * 1e-7 / np.sqrt(w_norm_sq)
    jacobian, log_det = jacobians(layer, z)
    np.testing.assert_allclose(log_det, np.linalg.slogdet(jacobian)[1], atol=1e-9, rtol=1e-6)
    assert np.abs(log_det).min() > 0.01 * w_norm_sq / 1e-12  # the correction is scaled down, not dropped


def test_iaf_network_is_autoregressive():
    """``m_i`` and ``s_i`` ignore inputs ``>= i`` (in the step's order): the Jacobian is triangular."""
    rng = np.random.default_rng(3)
    for reverse in (False, True):
        layer = InverseAutoregressiveFlow(12, 2, reverse=reverse, dtype="float64")
        z = tf.constant(rng.normal(size=(2, 1, 5)))
        context = tf.constant(rng.normal(size=(2, 3)))
        layer([z, context])
        randomise(layer, rng)
        with tf.GradientTape() as tape:
            tape.watch(z)
            h = layer.masked_hidden[0](z) + ops.expand_dims(layer.context_projection(context), -2)
            h = keras.activations.elu(h)
            h = keras.activations.elu(layer.masked_hidden[1](h))
            m_and_s = layer.masked_output(h)
        full = tape.jacobian(m_and_s, z).numpy()[0, 0, :, 0, 0, :]  # (2 d, d)
        order = np.arange(5)[::-1] if reverse else np.arange(5)
        for i, dim in enumerate(order):
            later = order[i:]  # this output's own input and every later one
            for block in (0, 5):  # m, then s
                assert np.all(full[block + dim, later] == 0.0), (reverse, dim)
            assert np.any(full[dim, order[:i]] != 0.0) or i == 0  # and it does see the earlier ones
        jacobian, _ = jacobians(layer, z.numpy(), context.numpy())
        upper = np.triu(jacobian[0, 0], 1) if not reverse else np.tril(jacobian[0, 0], -1)
        assert np.all(upper == 0.0)


def planar_inverse(layer, z_out):
    """Invert one planar flow in NumPy: solve ``a + (w^T u_hat) tanh(a + b) = w^T z_out`` by bisection."""
    u, w, b = (np.asarray(v, "float64") for v in layer.get_weights())
    m = -1.0 + np.log1p(np.exp(w @ u))
    u_hat = u + (m - w @ u) * w / (w @ w)
    target = z_out @ w
    low, high = target - abs(m) - 1.0, target + abs(m) + 1.0
    for _ in range(80):
        middle = 0.5 * (low + high)
        too_big = middle + (w @ u_hat) * np.tanh(middle + b) > target
        high, low = np.where(too_big, middle, high), np.where(too_big, low, middle)
    a = 0.5 * (low + high)
    return z_out - u_hat * np.tanh(a + b)[..., None]


def test_planar_flow_density_integrates_to_one_on_a_grid():
    """``q_K`` at grid points of z_K (by inverting every flow), summed over the grid, is 1 ± 0.01."""
    rng = np.random.default_rng(4)
    flow = build_flow("planar", 4, latent_dim=2)
    flow(np.zeros((1, 1, 2), "float32"))
    for layer in flow.layers:
        if isinstance(layer, PlanarFlow):
            layer.set_weights([rng.normal(size=2) * 1.5, rng.normal(size=2) * 1.5, np.array(rng.normal())])
    grid = np.linspace(-9, 9, 721)
    z_k = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    z = z_k
    planar_layers = [layer for layer in flow.layers if isinstance(layer, PlanarFlow)]
    for layer in reversed(planar_layers):
        z = planar_inverse(layer, z)
    z_0 = z
    # Forward again: the inverse is right, and log_det comes from the layers.
    z_again, log_det = (ops.convert_to_numpy(v) for v in flow(z_0[:, None, :].astype("float32")))
    np.testing.assert_allclose(z_again[:, 0], z_k, atol=1e-3)
    log_q = stats.multivariate_normal(np.zeros(2), np.eye(2)).logpdf(z_0) - log_det[:, 0]
    total = np.exp(log_q).sum() * (grid[1] - grid[0]) ** 2
    assert abs(total - 1.0) < 0.01, total
    assert np.ptp(log_det) > 3.0  # the flows really change volumes


def test_iaf_density_integrates_to_one_over_the_image_of_a_grid():
    """IAF has no cheap inverse: sum ``q_K(f(c)) * area(f(cell))`` over a fine grid of z_0 cells."""
    rng = np.random.default_rng(5)
    flow = build_flow("iaf", 4, latent_dim=2, hidden_units=8)
    flow(np.zeros((1, 1, 2), "float32"))
    randomise(flow, rng, scale=0.8)
    edges = np.linspace(-7, 7, 561)
    corners = np.stack(np.meshgrid(edges, edges, indexing="ij"), -1)
    mapped, _ = flow.predict(corners.reshape(-1, 1, 2).astype("float32"), batch_size=50000, verbose=0)
    mapped = mapped.reshape(corners.shape).astype("float64")
    p00, p10, p11, p01 = mapped[:-1, :-1], mapped[1:, :-1], mapped[1:, 1:], mapped[:-1, 1:]
    quads = [p00, p10, p11, p01]
    edges_of_quads = zip(quads, quads[1:] + quads[:1], strict=True)
    area = 0.5 * np.abs(sum(a[..., 0] * b[..., 1] - b[..., 0] * a[..., 1] for a, b in edges_of_quads))  # shoelace
    centres = 0.5 * (edges[1:] + edges[:-1])
    c = np.stack(np.meshgrid(centres, centres, indexing="ij"), -1)
    _, log_det = flow.predict(c.reshape(-1, 1, 2).astype("float32"), batch_size=50000, verbose=0)
    log_q = stats.multivariate_normal(np.zeros(2), np.eye(2)).logpdf(c.reshape(-1, 2)) - log_det[:, 0]
    total = float(np.sum(np.exp(log_q) * area.reshape(-1)))
    assert abs(total - 1.0) < 0.01, total
    assert area.std() / area.mean() > 0.1  # the flow really changes volumes


def test_stacked_flows_sum_their_log_dets_and_zero_flows_is_the_identity():
    rng = np.random.default_rng(6)
    z = rng.normal(size=(4, 3, 2)).astype("float32")
    for kind in ("planar", "iaf"):
        flow = build_flow(kind, 3, latent_dim=2)
        flow(z)
        randomise(flow, rng, 0.5)
        z_k, log_det = flow(z)
        step_z, total = z, 0.0
        for layer in flow.layers:
            if isinstance(layer, (PlanarFlow, InverseAutoregressiveFlow)):
                step_z, step_log_det = layer(step_z)
                total = total + ops.convert_to_numpy(step_log_det)
        np.testing.assert_allclose(ops.convert_to_numpy(z_k), ops.convert_to_numpy(step_z), rtol=1e-6)
        np.testing.assert_allclose(ops.convert_to_numpy(log_det), total, rtol=1e-5, atol=1e-6)
    identity = build_flow("iaf", 0, latent_dim=2)
    z_k, log_det = identity(z)
    np.testing.assert_array_equal(ops.convert_to_numpy(z_k), z)
    np.testing.assert_array_equal(ops.convert_to_numpy(log_det), np.zeros((4, 3)))
    assert identity.count_params() == 0


@pytest.mark.parametrize("kind", ["planar", "iaf"])
def test_flows_and_flow_vae_save_and_reload_with_safe_mode(tmp_path, kind):
    rng = np.random.default_rng(7)
    keras.utils.set_random_seed(0)
    flow = build_flow(kind, 2, latent_dim=3, context_dim=4, hidden_units=5)
    vae = flow_vae(kind, 2)
    randomise(flow, rng, 0.5)
    inputs = {
        "flow": [rng.normal(size=(2, 3, 3)).astype("float32"), rng.normal(size=(2, 4)).astype("float32")],
        "vae": [(rng.random((2, 6)) < 0.5).astype("float32"), rng.normal(size=(2, 2, 2)).astype("float32")],
    }
    for name, model in (("flow", flow), ("vae", vae)):
        path = tmp_path / f"{name}.keras"
        model.save(path)
        reloaded = keras.saving.load_model(path, safe_mode=True)
        outputs, reloaded_outputs = (keras.tree.flatten(m(inputs[name])) for m in (model, reloaded))
        for a, b in zip(outputs, reloaded_outputs, strict=True):
            np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b), rtol=1e-6)
    config = InverseAutoregressiveFlow(4, activation=keras.activations.relu).get_config()
    assert config["activation"] == "relu"  # a callable is stored by name, so the config is JSON
    model, _ = build_density_fit("U3", kind, 2)
    model.save(tmp_path / "fit.keras")
    assert keras.saving.load_model(tmp_path / "fit.keras", safe_mode=True).get_layer("reverse_kl").target == "U3"


def test_flow_kl_is_log_q0_minus_log_det_minus_log_prior():
    """Against SciPy: ``log N(z_0; mean, var) - log_det - log N(z_K; 0, I)`` per sample."""
    rng = np.random.default_rng(8)
    z_mean, z_log_var = rng.normal(size=(3, 2)), rng.normal(size=(3, 2))
    z_0 = z_mean[:, None] + np.exp(0.5 * z_log_var)[:, None] * rng.normal(size=(3, 4, 2))
    z, log_det = rng.normal(size=(3, 4, 2)), rng.normal(size=(3, 4))
    layer = FlowKL()
    inputs = {"z": z, "z_0": z_0, "z_mean": z_mean, "z_log_var": z_log_var, "log_det": log_det}
    terms = ops.convert_to_numpy(layer.kl_terms({k: ops.convert_to_tensor(v, "float32") for k, v in inputs.items()}))
    expected = np.empty((3, 4))
    for b in range(3):
        q_0 = stats.multivariate_normal(z_mean[b], np.diag(np.exp(z_log_var[b])))
        expected[b] = q_0.logpdf(z_0[b]) - log_det[b] - stats.multivariate_normal(np.zeros(2)).logpdf(z[b])
    np.testing.assert_allclose(terms, expected, rtol=1e-4, atol=1e-4)


def test_zero_flows_give_the_gaussian_posteriors_log_likelihood():
    """A flow of no steps: the same weights give the same importance-sampled ``log p(x)`` as the Gaussian posterior."""
    keras.utils.set_random_seed(1)
    vae = flow_vae("planar", 0)
    randomise(vae, np.random.default_rng(9), 0.5)
    gaussian = compose_vae(divergence="monte_carlo", activation="tanh", **SMALL)
    gaussian.set_weights(vae.get_weights())
    x = (np.random.default_rng(0).random((7, 6)) < 0.5).astype("float32")
    flow_log_px = log_likelihood(vae, x, num_samples=50, batch_size=4)
    np.testing.assert_allclose(flow_log_px, log_likelihood(gaussian, x, num_samples=50, batch_size=4), rtol=1e-5)


@pytest.mark.parametrize("kind", ["planar", "iaf"])
def test_flow_posterior_importance_sampling_agrees_with_the_prior_as_proposal(kind):
    """Two proposals, one ``p(x)``: the flow posterior's estimate from 20,000 draws against 400k draws of the
    prior (2-D latent), within four standard errors of their difference."""
    keras.utils.set_random_seed(2)
    vae = flow_vae(kind, 3)
    encoder, flow, decoder = (vae.get_layer(name) for name in ("encoder", "flow", "decoder"))
    randomise(vae, np.random.default_rng(10), 0.6)
    randomise(flow, np.random.default_rng(11), 0.3)  # curved, not nearly singular
    # A proposal wider than the posterior (each IAF step shrinks z by sigma < 1), so the weights have light tails.
    for name, scale in (("z_mean", 0.2), ("z_log_var", 0.0)):
        encoder.get_layer(name).set_weights([w * scale for w in encoder.get_layer(name).get_weights()])
    kernel, bias = encoder.get_layer("z_log_var").get_weights()
    encoder.get_layer("z_log_var").set_weights([kernel, bias + 2.0])  # wider than the posterior: light-tailed weights
    x = (np.random.default_rng(1).random((5, 6)) < 0.5).astype("float32")

    def estimate(log_w):  # log-mean-exp over the draws, and its standard error by the delta method
        w = np.exp(log_w - log_w.max(axis=1, keepdims=True))
        return np.log(w.mean(axis=1)) + log_w.max(axis=1), w.std(axis=1) / (np.sqrt(w.shape[1]) * w.mean(axis=1))

    eps = np.random.default_rng(4).standard_normal((5, 20000, 2)).astype("float32")
    parameters, log_ratio, _ = exact_log_ratio_model(vae)(x, eps)
    log_w = ops.convert_to_numpy(log_ratio - negative_log_likelihood("bernoulli", x, parameters)).astype("float64")
    flow_log_px, flow_stderr = estimate(log_w)
    z = np.random.default_rng(3).standard_normal((1, 400000, 2)).astype("float32")
    logits = ops.convert_to_numpy(decoder(z))[0].astype("float64")  # (draws, 6)
    prior_log_px, prior_stderr = estimate(x @ logits.T - np.sum(np.logaddexp(0.0, logits), axis=-1))
    tolerance = 4 * np.sqrt(flow_stderr**2 + prior_stderr**2) + 1e-3
    assert np.all(np.abs(flow_log_px - prior_log_px) < tolerance), (flow_log_px, prior_log_px, tolerance)
    # The scoring function, with its own draws, to the same tolerance and the spread of its own draws.
    scored = log_likelihood(vae, x, num_samples=20000, batch_size=5)
    assert np.all(np.abs(scored - prior_log_px) < tolerance + 4 * flow_stderr), (scored, prior_log_px)


def test_flow_vae_trains_on_mnist(mnist_subset):
    (x_train, _), _ = mnist_subset
    for kind, num_flows in (("planar", 2), ("iaf", 1)):
        keras.utils.set_random_seed(0)
        vae = flow_vae(kind, num_flows, data_dim=784, latent_dim=4, hidden_units=32, flow_hidden_units=16)
        history = fit_vae(vae, x_train[:400], epochs=4, batch_size=20, binarize=True, seed=0, verbose=0)
        assert np.all(np.isfinite(history["loss"])) and history["loss"][-1] < history["loss"][0] - 50, history["loss"]
        assert type(vae.get_layer("log_ratio").estimator) is FlowKL


def numpy_potential(target, z):
    """Rezende & Mohamed's Table 1 in NumPy, with the wall, written out separately."""
    z_1, z_2 = z[..., 0], z[..., 1]
    w_1 = np.sin(2 * np.pi * z_1 / 4)
    w_2 = 3 * np.exp(-0.5 * ((z_1 - 1) / 0.6) ** 2)
    w_3 = 3 / (1 + np.exp(-(z_1 - 1) / 0.3))
    if target == "U1":
        u = 0.5 * ((np.linalg.norm(z, axis=-1) - 2) / 0.4) ** 2 - np.log(
            np.exp(-0.5 * ((z_1 - 2) / 0.6) ** 2) + np.exp(-0.5 * ((z_1 + 2) / 0.6) ** 2)
        )
    elif target == "U2":
        u = 0.5 * ((z_2 - w_1) / 0.4) ** 2
    elif target == "U3":
        u = -np.log(np.exp(-0.5 * ((z_2 - w_1) / 0.35) ** 2) + np.exp(-0.5 * ((z_2 - w_1 + w_2) / 0.35) ** 2))
    else:
        u = -np.log(np.exp(-0.5 * ((z_2 - w_1) / 0.4) ** 2) + np.exp(-0.5 * ((z_2 - w_1 + w_3) / 0.35) ** 2))
    return u + 0.5 * np.sum((np.maximum(np.abs(z) - 4, 0) / 0.2) ** 2, axis=-1)


@pytest.mark.parametrize("target", TARGETS)
def test_potentials_match_the_paper_and_stay_finite(target):
    z = np.random.default_rng(11).uniform(-5, 5, size=(1000, 2))
    np.testing.assert_allclose(ops.convert_to_numpy(potential(target, z)), numpy_potential(target, z), rtol=1e-9)
    far = np.array([[40.0, -40.0], [0.0, 30.0]])
    assert np.all(np.isfinite(ops.convert_to_numpy(potential(target, far))))


def test_log_normaliser_against_a_closed_form():
    """U2 is Gaussian in z_2 around sin(pi z_1 / 2), flat in z_1 up to the walls: Z is a formula."""
    closed_form = 0.4 * math.sqrt(2 * math.pi) * (8.0 + 0.2 * math.sqrt(2 * math.pi))
    assert log_normaliser("U2") == pytest.approx(math.log(closed_form), abs=1e-3)


def numpy_log_normaliser(target, half_width=7.0, points=2801):
    """``log Z`` from the NumPy transcription on a wider, finer grid (a Riemann sum, not the listing's rule)."""
    grid = np.linspace(-half_width, half_width, points)
    u = numpy_potential(target, np.stack(np.meshgrid(grid, grid, indexing="ij"), -1))
    return float(np.log(np.sum(np.exp(-(u - u.min())))) - u.min() + 2 * np.log(grid[1] - grid[0]))


@pytest.mark.parametrize("target", TARGETS)
def test_log_normaliser_against_an_independent_grid(target):
    assert log_normaliser(target) == pytest.approx(numpy_log_normaliser(target), abs=2e-3)


def test_reverse_kl_of_the_untrained_identity_against_a_grid():
    """K = 0 leaves N(0, I): its KL from exp(-U1)/Z by Monte Carlo equals the grid integral."""
    flow = fit_flow("U1", "planar", 0)
    kl, stderr = reverse_kl("U1", flow, num_samples=200000)
    grid = np.linspace(-6, 6, 1201)
    z = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1)
    log_q = stats.multivariate_normal(np.zeros(2)).logpdf(z)
    log_p = -numpy_potential("U1", z) - numpy_log_normaliser("U1")
    expected = np.sum(np.exp(log_q) * (log_q - log_p)) * (grid[1] - grid[0]) ** 2
    assert abs(kl - expected) < 4 * stderr + 1e-3


def test_fitting_a_flow_lowers_the_reverse_kl():
    start = reverse_kl("U2", fit_flow("U2", "planar", 0), num_samples=20000)[0]
    fitted = reverse_kl("U2", fit_flow("U2", "planar", 4, steps=600, batch_size=200), num_samples=20000)[0]
    assert fitted < start - 1.0, (start, fitted)


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="non-negative integer. Received: num_flows=-1"):
        build_flow("planar", -1, latent_dim=2)
    with pytest.raises(ValueError, match="Expected a flow in"):
        build_flow("radial", 2, latent_dim=2)
    flow = PlanarFlow()
    flow(np.zeros((1, 1, 2), "float32"))
    with pytest.raises(ValueError, match=r"shape \(batch, mc_samples, 2\). Received: \(1, 1, 3\)"):
        flow(np.zeros((1, 1, 3), "float32"))
    with pytest.raises(ValueError, match="finite"):
        flow(np.array([[[np.nan, 0.0]]], "float32"))
    with pytest.raises(ValueError, match="finite"):
        InverseAutoregressiveFlow(4)(np.array([[[np.inf, 0.0]]], "float32"))
    with pytest.raises(ValueError, match=r"params` of shape \(batch, 5\)"):
        PlanarFlow(amortized=True)([np.zeros((1, 1, 2), "float32"), np.zeros((1, 4), "float32")])
    with pytest.raises(ValueError, match="context` of shape"):
        InverseAutoregressiveFlow(4)([np.zeros((1, 1, 2), "float32"), np.zeros((1, 1, 4), "float32")])
    # A flow built for another latent dimension than the encoder's z.
    wrong = build_flow("planar", 2, latent_dim=3, context_dim=8)
    with pytest.raises(ValueError, match="incompatible|expected shape"):
        wrong([np.zeros((1, 1, 2), "float32"), np.zeros((1, 8), "float32")])
    with pytest.raises(ValueError, match="`z` and `z_0` of the same shape"):
        FlowKL()(
            {"z": np.zeros((1, 2, 3)), "z_0": np.zeros((1, 2, 2)), "z_mean": np.zeros((1, 3)),
             "z_log_var": np.zeros((1, 3)), "log_det": np.zeros((1, 2))}
        )  # fmt: skip
    with pytest.raises(ValueError, match="Expected a target"):
        potential("U5", np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"amortized=True\) expects the list \[z, params\]"):
        PlanarFlow(amortized=True)(np.zeros((1, 1, 2), "float32"))
    with pytest.raises(ValueError, match=r"amortized=False\) expects a single tensor z"):
        PlanarFlow()([np.zeros((1, 1, 2), "float32"), np.zeros((1, 5), "float32")])
    step = InverseAutoregressiveFlow(4)
    step(np.zeros((1, 1, 2), "float32"))
    with pytest.raises(ValueError, match="built for z alone"):
        step([np.zeros((1, 1, 2), "float32"), np.zeros((1, 3), "float32")])
    with pytest.raises(ValueError, match=r"Expected `z` or the list \[z, context\]"):
        InverseAutoregressiveFlow(4)([np.zeros((1, 1, 2), "float32")])

"""The encoder's gradient estimators (gradients.py): STL and DReG change no value and no decoder gradient,
their expected encoder gradient is the total derivative's (Monte Carlo, in standard errors, with a biased
estimator as a control the test must reject), and STL's variance is zero at the true posterior of a
linear-Gaussian model (its log p(x) checked against SciPy)."""

import math

import keras
import numpy as np
import pytest

from compose import compose_vae
from gradient_experiments import linear_gaussian_vae
from gradients import check_gradient, gradient_function, model_gradient
from likelihoods import negative_log_likelihood
from objectives import NegativeObjective

DATA_DIM, LATENT_DIM, SAMPLES = 6, 2, 5
# A draw's t statistic: |mean difference| / its standard error over the draws, per weight. Under the null
# (equal expectations) max |t| over ~60 weights exceeds 5 with probability ~3e-5.
T_LIMIT = 5.0


def tiny_vae(objective, gradient, seed=0, **kwargs):
    keras.utils.set_random_seed(seed)  # the same initial weights for every estimator
    settings = {"divergence": "monte_carlo", "objective": objective, "hidden_units": 4, "gradient": gradient}
    return compose_vae(DATA_DIM, LATENT_DIM, **{**settings, **kwargs})


def paired_draws(vaes, objectives, part, draws, seed=0):
    """Per-draw gradients of the loss for each model, on the same x and the same eps: shape (models, draws, n)."""
    rng = np.random.default_rng(seed)
    x = (rng.random((4, DATA_DIM)) < 0.4).astype("float32")
    functions = [gradient_function(vae, NegativeObjective(objective), vae.get_layer(part).trainable_weights)
                 for vae, objective in zip(vaes, objectives, strict=True)]  # fmt: skip
    out = [[] for _ in vaes]
    for _ in range(draws):
        eps = rng.standard_normal((len(x), SAMPLES, LATENT_DIM)).astype("float32")
        for draws_of, gradient_of in zip(out, functions, strict=True):
            draws_of.append(gradient_of(x, eps))
    return np.array(out)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"gradient": "sgd"}, "one of"),
        ({"gradient": "stl", "objective": "iwae"}, "biases the gradient"),
        ({"gradient": "dreg", "objective": "elbo"}, "same as gradient='stl'"),
        ({"gradient": "stl", "divergence": "closed_form"}, "divergence='monte_carlo'"),
        ({"gradient": "dreg", "objective": "iwae", "posterior": "planar"}, "no inverse in closed form"),
        ({"gradient": "stl", "posterior": "iaf"}, "one pass of its network per latent dimension"),
        ({"gradient": "stl", "posterior": "implicit", "divergence": "adversarial"}, "no density at all"),
        ({"gradient": "dreg", "objective": "iwae", "decoder": "linear"}, "linear decoder"),
    ],
)
def test_a_gradient_that_does_not_fit_the_parts_is_refused_with_the_reason(kwargs, match):
    settings = {"posterior": "gaussian", "divergence": "monte_carlo", "objective": "elbo", **kwargs}
    with pytest.raises(ValueError, match=match):
        check_gradient(settings.pop("gradient"), **settings)


def test_fit_refuses_a_gradient_built_for_the_other_objective():
    from training import fit_vae

    x = np.zeros((10, DATA_DIM), "float32")
    with pytest.raises(ValueError, match="biases the gradient"):
        fit_vae(tiny_vae("elbo", "stl"), x, objective="iwae", epochs=1, verbose=0)
    with pytest.raises(ValueError, match="same as gradient='stl'"):
        fit_vae(tiny_vae("iwae", "dreg"), x, objective="elbo", epochs=1, verbose=0)


@pytest.mark.parametrize("objective, gradient", [("elbo", "stl"), ("iwae", "dreg")])
def test_the_estimators_change_no_value_and_the_model_knows_its_estimator(objective, gradient, tmp_path):
    total, other = tiny_vae(objective, "total"), tiny_vae(objective, gradient)
    assert (model_gradient(total), model_gradient(other)) == ("total", gradient)
    rng = np.random.default_rng(1)
    x = (rng.random((3, DATA_DIM)) < 0.5).astype("float32")
    eps = rng.standard_normal((3, 7, LATENT_DIM)).astype("float32")
    loss = NegativeObjective(objective)
    expected = keras.ops.convert_to_numpy(loss(x, total([x, eps])))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loss(x, other([x, eps]))), expected, rtol=1e-6)
    other.save(tmp_path / "vae.keras")
    reloaded = keras.saving.load_model(tmp_path / "vae.keras", safe_mode=True)
    assert model_gradient(reloaded) == gradient
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loss(x, reloaded([x, eps]))), expected, rtol=1e-6)


@pytest.mark.parametrize("objective, gradient", [("elbo", "stl"), ("iwae", "dreg")])
def test_the_decoder_gradient_is_the_total_derivatives_draw_by_draw(objective, gradient):
    draws = paired_draws([tiny_vae(objective, "total"), tiny_vae(objective, gradient)], [objective] * 2, "decoder", 5)
    np.testing.assert_allclose(draws[1], draws[0], rtol=1e-4, atol=1e-6)


def t_statistics(draws, reference):
    """Per weight: the mean paired difference of two estimators over the draws, in standard errors."""
    difference = draws - reference
    standard_error = difference.std(axis=0, ddof=1) / math.sqrt(len(difference))
    return np.abs(difference.mean(axis=0)) / np.maximum(standard_error, 1e-12)


@pytest.mark.parametrize("objective, gradient", [("elbo", "stl"), ("iwae", "dreg")])
def test_the_expected_encoder_gradient_is_the_total_derivatives(objective, gradient):
    """Unbiased: over 800 paired draws no encoder weight's mean difference reaches T_LIMIT standard errors,
    while sticking the landing on the IWAE bound (biased, Tucker et al. 2019), scored the same way, does."""
    vaes, objectives = [tiny_vae(objective, "total"), tiny_vae(objective, gradient)], [objective] * 2
    if objective == "iwae":  # the control: the same model as ELBO-STL's, scored by the IWAE bound
        vaes, objectives = [*vaes, tiny_vae("elbo", "stl")], [*objectives, "iwae"]
    total, estimator, *control = paired_draws(vaes, objectives, "encoder", 800)
    print(np.max(t_statistics(estimator, total)), [np.max(t_statistics(c, total)) for c in control])
    assert np.max(t_statistics(estimator, total)) < T_LIMIT
    assert np.var(estimator, axis=0).sum() < np.var(total, axis=0).sum()  # and the spread is smaller here
    for iwae_stl in control:  # the test can tell a biased estimator
        assert np.max(t_statistics(iwae_stl, total)) > 2 * T_LIMIT


@pytest.mark.parametrize("objective, gradient", [("elbo", "stl"), ("iwae", "dreg")])
def test_at_the_true_posterior_every_draw_of_the_path_gradient_is_zero(objective, gradient):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 5)).astype("float32")
    for estimator in ("total", gradient):
        vae, log_px = linear_gaussian_vae(objective, estimator, x)
        gradient_of = gradient_function(vae, NegativeObjective(objective, "gaussian"),
                                        vae.get_layer("encoder").trainable_weights)  # fmt: skip
        draws = np.array([gradient_of(x, rng.standard_normal((3, 4, 2)).astype("float32")) for _ in range(20)])
        if estimator == "total":
            assert np.abs(draws).max() > 0.1  # the score term: the total derivative still varies
            assert np.var(draws, axis=0).sum() > 1e-3
        else:
            assert np.abs(draws).max() < 1e-4, np.abs(draws).max()
    # the construction, checked independently: every log weight is SciPy's log p(x)
    parameters, log_ratio = vae([x, rng.standard_normal((3, 4, 2)).astype("float32")])
    log_w = keras.ops.convert_to_numpy(-negative_log_likelihood("gaussian", x, parameters) + log_ratio)
    np.testing.assert_allclose(log_w, np.repeat(log_px[:, None], 4, axis=1), rtol=1e-5, atol=1e-4)

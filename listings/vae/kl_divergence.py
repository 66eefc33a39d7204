"""KL-divergence layers: closed form, Monte Carlo, and adversarial density ratios.

Every estimator is a pass-through Keras layer with the same interface: it
takes a dict of tensors, adds its estimate of ``KL[q(z|x) || p(z)]`` to the
model's losses with `add_loss` (in nats, summed over the latent dimensions,
averaged over the batch and the Monte Carlo samples) and returns its inputs
unchanged. Which tensors it reads:

* `ClosedFormKL`: ``z_mean`` and ``z_log_var`` (a diagonal Gaussian ``q``
  against the standard normal prior);
* `MonteCarloKL`: ``z`` (batch, samples, latent_dim), ``z_mean`` and
  ``z_log_var``; the estimate is the mean of ``log q(z|x) - log p(z)`` at the
  sampled ``z``, so any posterior with a density works;
* `AdversarialKL`: ``x`` and ``z`` (and ``z_prior``, draws from ``p(z)``, to
  train the discriminator in the same step); a discriminator ``T(x, z)``
  trained to tell ``z ~ q(z|x)`` from ``z ~ p(z)`` with the logistic loss is,
  at its optimum, ``log q(z|x) - log p(z)`` (Mescheder, Nowozin & Geiger
  2017), so the mean of ``T`` estimates the KL without any density of ``q``;
* `AdaptiveContrastKL`: the same, with ``T`` comparing ``q`` against a
  Gaussian fitted to its samples rather than against the prior, and that
  Gaussian's part of the KL added by formula (their "adaptive contrast").

`make_kl_layer(estimator)` picks one by name. Run ``python kl_divergence.py`` to
compare the three on a pair of Gaussians whose KL is known.
"""

import argparse
import math
import sys

import keras
import numpy as np
from keras import layers, ops

from discriminator import check_discriminator, discriminator_loss
from variational_autoencoder import PACKAGE, check_positive_int, gaussian_kl_divergence

ESTIMATORS = ("closed_form", "monte_carlo", "adversarial", "adaptive_contrast")
ADVERSARIAL_ESTIMATORS = ("adversarial", "adaptive_contrast")


def gaussian_log_density(z, mean, log_var):
    """``log N(z; mean, diag(exp(log_var)))`` summed over the last axis, in nats."""
    return -0.5 * ops.sum(math.log(2 * math.pi) + log_var + ops.square(z - mean) * ops.exp(-log_var), axis=-1)


# [start kl-interface]
class KLDivergence(layers.Layer):
    """Base class: a pass-through layer that adds ``mean(kl_terms(inputs))`` as a loss.

    Subclasses name the tensors they read in ``required`` and implement
    ``kl_terms(inputs)``, which returns the estimate per example (and per
    sample, if any), in nats summed over the latent dimensions.
    """

    required = ()

    def check_inputs(self, inputs):
        if not isinstance(inputs, dict) or not set(self.required) <= set(inputs):
            received = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
            raise ValueError(
                f"{type(self).__name__} expects a dict with the tensors {list(self.required)}. Received: {received}"
            )

    def build(self, input_shape):
        self.check_inputs(input_shape)

    def call(self, inputs):
        self.check_inputs(inputs)
        self.add_loss(ops.mean(self.kl_terms(inputs)))
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def kl_terms(self, inputs):
        raise NotImplementedError


# [end kl-interface]


# [start kl-estimators]
@keras.saving.register_keras_serializable(package=PACKAGE)
class ClosedFormKL(KLDivergence):
    """``KL[N(z_mean, diag(exp(z_log_var))) || N(0, I)]`` in closed form, per example."""

    required = ("z_mean", "z_log_var")

    def build(self, input_shape):
        super().build(input_shape)
        if tuple(input_shape["z_mean"]) != tuple(input_shape["z_log_var"]):
            raise ValueError(
                "Expected `z_mean` and `z_log_var` of the same shape. "
                f"Received: {input_shape['z_mean']} and {input_shape['z_log_var']}"
            )

    def kl_terms(self, inputs):
        return gaussian_kl_divergence(inputs["z_mean"], inputs["z_log_var"])


@keras.saving.register_keras_serializable(package=PACKAGE)
class MonteCarloKL(KLDivergence):
    """``log q(z|x) - log p(z)`` at each sampled ``z``, for a diagonal Gaussian ``q`` and ``p = N(0, I)``.

    Override `log_posterior` or `log_prior` for other densities (a flow's
    ``q``, a mixture prior): the estimate needs nothing else.

    With ``path_derivative=True`` the gradient is Roeder, Wu & Duvenaud's
    (2017) "sticking the landing" estimator. With ``z = mu + sigma * eps``,
    the gradient of ``log q(z|x)`` with respect to the encoder's weights
    ``phi`` has two parts: through the sample (``d log q / dz * dz / dphi``,
    the path) and through ``q``'s parameters at a fixed ``z`` (the score,
    ``d log q / dphi``, whose expectation under ``q`` is zero). Stopping the
    gradient through ``z_mean`` and ``z_log_var`` inside ``log q`` drops the
    score: the value and the expected gradient are unchanged, and when ``q``
    is the true posterior, ``log p(x, z) - log q(z|x) = log p(x)`` for every
    ``z``, so every draw's gradient is zero.
    """

    required = ("z", "z_mean", "z_log_var")

    def __init__(self, path_derivative=False, **kwargs):
        super().__init__(**kwargs)
        self.path_derivative = bool(path_derivative)

    def build(self, input_shape):
        super().build(input_shape)
        z_shape, mean_shape = tuple(input_shape["z"]), tuple(input_shape["z_mean"])
        if len(z_shape) != 3 or z_shape[-1] != mean_shape[-1] or tuple(input_shape["z_log_var"]) != mean_shape:
            raise ValueError(
                "Expected `z` of shape (batch, samples, latent_dim) and `z_mean`, `z_log_var` of shape "
                f"(batch, latent_dim). Received: z={z_shape}, z_mean={mean_shape}, "
                f"z_log_var={tuple(input_shape['z_log_var'])}"
            )

    # [start path-derivative]
    def log_posterior(self, inputs):
        z_mean, z_log_var = (ops.expand_dims(inputs[name], axis=-2) for name in ("z_mean", "z_log_var"))
        if self.path_derivative:  # q's parameters held fixed: the gradient reaches phi through z only
            z_mean, z_log_var = ops.stop_gradient(z_mean), ops.stop_gradient(z_log_var)
        return gaussian_log_density(inputs["z"], z_mean, z_log_var)

    # [end path-derivative]

    def log_prior(self, inputs):
        return gaussian_log_density(inputs["z"], 0.0, ops.zeros_like(inputs["z"]))

    def kl_terms(self, inputs):
        return self.log_posterior(inputs) - self.log_prior(inputs)

    def get_config(self):
        return {**super().get_config(), "path_derivative": self.path_derivative}


@keras.saving.register_keras_serializable(package=PACKAGE)
class AdversarialKL(KLDivergence):
    """The mean of a discriminator ``T(x, z)`` trained to separate ``z ~ q(z|x)`` from ``z ~ p(z)``.

    With the logistic loss, the optimal ``T`` is ``log q(z|x) - log p(z)``,
    so its mean over ``z ~ q`` estimates the KL. The discriminator is a
    Keras model with inputs ``[x, z]`` (``z`` of shape (batch, samples,
    latent_dim)) and output shape (batch, samples).

    The layer adds the KL estimate ``mean T(x, z)``, whose gradient reaches
    the encoder through ``z`` but not the discriminator's weights: it is
    written ``T(x, z) - T(x, sg(z)) + sg(T(x, sg(z)))`` with ``sg`` =
    `ops.stop_gradient`, whose value is ``T(x, z)`` and whose two gradients
    with respect to the discriminator's weights cancel. Given ``z_prior`` as
    well (draws from ``p(z)`` of the shape of ``z``), it also adds the
    logistic loss of ``T`` on ``(x, z)`` against ``(x, z_prior)``, whose
    gradient reaches the discriminator's weights but not the encoder: the
    discriminator then trains in the same model and optimiser step.
    """

    required = ("x", "z")

    def __init__(self, discriminator, **kwargs):
        super().__init__(**kwargs)
        check_discriminator(discriminator)
        self.discriminator = discriminator

    def build(self, input_shape):
        super().build(input_shape)
        if "z_prior" in input_shape and tuple(input_shape["z_prior"])[1:] != tuple(input_shape["z"])[1:]:
            raise ValueError(
                "Expected `z_prior` of the shape of `z`. "
                f"Received: z_prior={tuple(input_shape['z_prior'])}, z={tuple(input_shape['z'])}"
            )

    def contrast(self, z):
        """What ``T`` sees of ``z`` (here ``z`` itself) and the part of the estimate with a formula (none)."""
        return z, 0.0

    def prior_contrast(self, z_prior):
        """What ``T`` sees of the prior's draws (here the draws themselves)."""
        return z_prior

    def kl_terms(self, inputs):
        z_seen, known = self.contrast(inputs["z"])
        return self.discriminator([inputs["x"], z_seen]) + known

    def call(self, inputs):
        self.check_inputs(inputs)
        kl_for_encoder, other_losses = self.kl_terms_and_losses(inputs)
        for loss in [ops.mean(kl_for_encoder), *other_losses]:
            self.add_loss(loss)
        return inputs

    def kl_terms_and_losses(self, inputs):
        """``T(x, z)`` with its gradient routed to the encoder only, and the discriminator's logistic loss."""
        x = inputs["x"]
        z_seen, known = self.contrast(inputs["z"])
        t_posterior = self.discriminator([x, z_seen])
        t_posterior_fixed = self.discriminator([x, ops.stop_gradient(z_seen)])
        kl_for_encoder = t_posterior - t_posterior_fixed + ops.stop_gradient(t_posterior_fixed) + known
        if "z_prior" not in inputs:
            return kl_for_encoder, []
        t_prior = self.discriminator([x, self.prior_contrast(inputs["z_prior"])])
        return kl_for_encoder, [discriminator_loss(t_posterior_fixed, t_prior)]

    def get_config(self):
        return {**super().get_config(), "discriminator": keras.saving.serialize_keras_object(self.discriminator)}

    @classmethod
    def from_config(cls, config):
        config["discriminator"] = keras.saving.deserialize_keras_object(config["discriminator"])
        return cls(**config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class AdaptiveContrastKL(AdversarialKL):
    """The adversarial estimate against a Gaussian ``r(z|x)`` fitted to ``q``, plus ``r``'s own term.

    ``KL[q || p] = E_q[log q - log r] + E_q[log r - log p]`` for any ``r``.
    With ``r`` the Gaussian with the mean and variance of the samples of
    ``z`` of each example (held constant: no gradient through them), the
    second term has a formula, and the first, which ``T`` must learn, is
    the KL of ``q`` from a Gaussian with its moments: small unless ``q`` is
    far from Gaussian, however far ``q`` is from the prior. ``T`` compares
    the samples of ``z`` standardised by their moments with the samples of
    ``z_prior`` (standard normal) standardised by theirs, so for a Gaussian
    ``q`` the two are indistinguishable for any number of samples.
    Mescheder et al. call this adaptive contrast. It needs at least two
    samples of ``z`` per example; fitting ``r`` to the same few samples it
    scores biases the estimate up by O(latent_dim / samples) nats.
    """

    def build(self, input_shape):
        super().build(input_shape)
        check_contrast_samples(tuple(input_shape["z"])[1])

    def contrast(self, z):
        """``z`` standardised by ``r``, and ``log r(z|x) - log p(z)`` per sample."""
        z_standard, z_mean, z_log_var = standardise(z)
        log_ratio = gaussian_log_density(z, z_mean, z_log_var) - gaussian_log_density(z, 0.0, ops.zeros_like(z))
        return z_standard, log_ratio

    def prior_contrast(self, z_prior):
        return standardise(z_prior)[0]


def standardise(z):
    """``z`` (batch, samples, latent_dim) minus its mean over the samples, over its standard deviation.

    Returns the standardised samples and the (constant: no gradient) mean
    and log variance.
    """
    z_mean = ops.stop_gradient(ops.mean(z, axis=-2, keepdims=True))
    z_log_var = ops.stop_gradient(ops.log(ops.var(z, axis=-2, keepdims=True) + 1e-8))
    return (z - z_mean) * ops.exp(-0.5 * z_log_var), z_mean, z_log_var


def check_contrast_samples(samples):
    """A clear error unless there are at least two samples per example to fit ``r`` to."""
    if samples is not None and samples < 2:
        raise ValueError(
            "Adaptive contrast fits r(z|x) to the samples of z of each example, so it needs "
            f"`mc_samples` >= 2. Received: {samples} sample per example"
        )


# [end kl-estimators]


def make_kl_layer(estimator, discriminator=None, **kwargs):
    """The KL layer for ``estimator`` (one of `ESTIMATORS`); ``kwargs`` go to the layer."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"Expected an estimator in {ESTIMATORS}. Received: {estimator!r}")
    if estimator in ADVERSARIAL_ESTIMATORS:
        if discriminator is None:
            raise ValueError(f"The {estimator} estimator needs a `discriminator` model T(x, z)")
        layer_class = {"adversarial": AdversarialKL, "adaptive_contrast": AdaptiveContrastKL}[estimator]
        return layer_class(discriminator, **kwargs)
    return {"closed_form": ClosedFormKL, "monte_carlo": MonteCarloKL}[estimator](**kwargs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10000, help="Monte Carlo samples (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        check_positive_int("samples", args.samples)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    rng = np.random.default_rng(0)
    z_mean = np.array([[1.0, -0.5]], "float32")
    z_log_var = np.array([[-1.0, 0.5]], "float32")
    z = z_mean[:, None] + np.exp(0.5 * z_log_var)[:, None] * rng.standard_normal((1, args.samples, 2), "float32")
    inputs = {"z": z, "z_mean": z_mean, "z_log_var": z_log_var}
    for layer in (ClosedFormKL(), MonteCarloKL()):
        layer(inputs)
        print(f"{type(layer).__name__}: {float(layer.losses[0]):.4f} nats")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The objectives: the ELBO and the importance-weighted bound, two reductions of the same log weights.

For an image ``x`` and ``S`` draws ``z_s ~ q(z|x)``, every part of the
model contributes to one log weight per sample,

    log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x),

and the objective reduces the ``S`` weights to one number per image: the
ELBO is their mean, the bound of Burda, Grosse & Salakhutdinov (2015)

    L_S = log (1/S) sum_s w_s

their log-mean-exp, computed with ``logsumexp`` so that no weight is
exponentiated on its own. ``L_1`` is the ELBO, ``L_S`` never decreases
with ``S``, and it tends to ``log p(x)`` as ``S`` grows.

Run ``python objectives.py`` to print both bounds of a few log weights.
"""

import argparse
import math
import numbers
import sys

import keras
import numpy as np
from keras import layers, ops

from kl_divergence import AdversarialKL
from likelihoods import LIKELIHOODS, negative_log_likelihood
from variational_autoencoder import PACKAGE

OBJECTIVES = ("elbo", "iwae")


def check_objective(objective):
    if objective not in OBJECTIVES:
        raise ValueError(f"Expected `objective` to be one of {OBJECTIVES}. Received: objective={objective!r}")
    return objective


# [start log-weights]
def log_mean_exp(values, axis=-1):
    """``log(mean(exp(values)))`` along ``axis``, without overflow or underflow.

    >>> float(log_mean_exp(np.array([1e4, 1e4], dtype="float32")))
    10000.0
    """
    count = ops.shape(values)[axis]  # a tensor when the number of samples is left free in a traced graph
    log_count = math.log(count) if isinstance(count, int) else ops.log(ops.cast(count, values.dtype))
    return ops.logsumexp(values, axis=axis) - log_count


def bound_from_log_weights(log_w, objective):
    """The ELBO (mean) or the importance-weighted bound (log-mean-exp) of ``log_w`` over its last axis."""
    if check_objective(objective) == "iwae":
        return log_mean_exp(log_w, axis=-1)
    return ops.mean(log_w, axis=-1)


# [end log-weights]


# [start bound-model]
@keras.saving.register_keras_serializable(package=PACKAGE)
class BoundModel(keras.Model):
    """A functional model whose one loss sees all its outputs at once.

    Keras scores each output of a model with its own loss; a bound couples
    the likelihood's parameters and the log density ratio inside one
    log-mean-exp, so this model hands both outputs to its one loss.
    Everything else (``fit``, ``evaluate``, XLA, saving) is ordinary Keras.
    """

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        losses = [self.loss(y, y_pred, sample_weight)]
        losses += [ops.sum(loss) for loss in self.losses]  # a discriminator's loss, weight regularisers
        return ops.sum(ops.stack(losses)) if len(losses) > 1 else losses[0]


# [end bound-model]


# [start parts]
@keras.saving.register_keras_serializable(package=PACKAGE)
class PerSampleLogRatio(layers.Layer):
    """``log p(z) - log q(z|x)`` at every sample of ``z``, as a KL ``estimator`` layer estimates it.

    The estimator's KL (per example for the closed form, per sample
    otherwise) is negated and broadcast to shape (batch, samples), so every
    divergence hands the objective the same tensor. An adversarial
    estimator's discriminator loss is added with `add_loss`, and its
    estimate reaches the encoder only (see `AdversarialKL`).

    Args:
        estimator: the KL layer.
        scale: multiplies the log ratio; ``1 / N`` for a global posterior,
            whose one KL the ``N`` training examples share.

    Call arguments:
        inputs: the dict of tensors the estimator reads, with ``z``
            (batch, samples, latent_dim).
    """

    def __init__(self, estimator, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.estimator, self.scale = estimator, float(scale)

    def build(self, input_shape):
        self.estimator.build(input_shape)  # the estimator's checks of the shapes
        self.term_names = tuple(input_shape)

    def terms(self):
        """The dict of tensors of the model's graph this layer was called on (``z``, ``z_mean``, ...)."""
        return keras.tree.pack_sequence_as(dict.fromkeys(self.term_names, 0), self.input)

    def call(self, inputs):
        self.estimator.check_inputs(inputs)
        if isinstance(self.estimator, AdversarialKL):
            kl, other_losses = self.estimator.kl_terms_and_losses(inputs)
        else:
            kl, other_losses = self.estimator.kl_terms(inputs), []
        for loss in other_losses:
            self.add_loss(loss)
        samples = ops.zeros_like(inputs["z"][..., 0])  # (batch, samples)
        return -self.scale * (ops.expand_dims(kl, -1) if len(kl.shape) < len(samples.shape) else kl) + samples

    def compute_output_shape(self, input_shape):
        return tuple(input_shape["z"][:-1])

    def get_config(self):
        estimator = keras.saving.serialize_keras_object(self.estimator)
        return {**super().get_config(), "estimator": estimator, "scale": self.scale}

    @classmethod
    def from_config(cls, config):
        config["estimator"] = keras.saving.deserialize_keras_object(config["estimator"])
        return cls(**config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class NegativeObjective(keras.losses.Loss):
    """Minus the ELBO or the IWAE bound per example, in nats, for any likelihood.

    ``y_pred`` is the pair ``[parameters, log_ratio]``: the parameters of
    ``p(x|z)`` for every sample, (batch, samples, width), and
    ``log p(z) - log q(z|x)``, (batch, samples). Their sum, the log weight
    ``log w``, is reduced over the samples by its mean (ELBO) or its
    log-mean-exp (IWAE bound), which never exponentiates ``log w``.
    """

    def __init__(self, objective="elbo", likelihood="bernoulli", name=None, **kwargs):
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"Expected `likelihood` to be one of {LIKELIHOODS}. Received: likelihood={likelihood!r}")
        super().__init__(name=name or f"negative_{objective}", **kwargs)
        self.objective, self.likelihood = check_objective(objective), likelihood

    def call(self, x, y_pred):
        parameters, log_ratio = y_pred
        log_w = -negative_log_likelihood(self.likelihood, x, parameters) + log_ratio
        return -bound_from_log_weights(log_w, self.objective)

    def get_config(self):
        return {**super().get_config(), "objective": self.objective, "likelihood": self.likelihood}


# [end parts]


# [start kl-weight]
def check_kl_weight(objective, kl_weight=1.0, kl_warmup_steps=0):
    """A ValueError unless the weight of the log density ratio is one the objective can take."""
    if isinstance(kl_weight, bool) or not (isinstance(kl_weight, numbers.Real) and 0 < kl_weight < math.inf):
        raise ValueError(f"Expected `kl_weight` (beta) to be a positive number. Received: kl_weight={kl_weight!r}")
    if isinstance(kl_warmup_steps, bool) or not (
        isinstance(kl_warmup_steps, numbers.Integral) and kl_warmup_steps >= 0
    ):
        raise ValueError(f"Expected `kl_warmup_steps` to be an integer >= 0. Received: {kl_warmup_steps!r}")
    if objective == "iwae" and (kl_weight != 1 or kl_warmup_steps):
        raise ValueError(
            "objective='iwae' is a bound on log p(x) only with the weights p(x, z) / q(z|x) as they are: "
            f"kl_weight=1 and kl_warmup_steps=0. Received: kl_weight={kl_weight}, kl_warmup_steps={kl_warmup_steps}"
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class KLWeight(layers.Layer):
    """``log p(z) - log q(z|x)`` times ``beta * min(1, t / warmup_steps)`` in training; unchanged otherwise.

    ``t`` counts the layer's calls in training mode, one per step of
    ``fit`` (a non-trainable float variable, saved with the model; it
    counts exactly to 2**24 steps). A call ``vae(x, training=True)`` of
    your own advances it too. With ``beta = 1`` and no warm-up the ELBO is unchanged;
    ``beta > 1`` trains on a looser lower bound of ``log p(x)``, and ``beta
    < 1`` (or a warm-up weight below 1) on no bound at all. Evaluation and
    prediction see the ratio unweighted, so ``val_loss`` and every test
    score are those of the true ELBO or bound.

    Args:
        beta: the weight once warmed up, > 0.
        warmup_steps: the training steps over which the weight rises
            linearly from ``beta / warmup_steps`` to ``beta``; 0 for none.
    """

    def __init__(self, beta=1.0, warmup_steps=0, **kwargs):
        check_kl_weight("elbo", beta, warmup_steps)
        super().__init__(**kwargs)
        self.beta, self.warmup_steps = float(beta), int(warmup_steps)

    def build(self, input_shape):
        self.step = self.add_weight(shape=(), initializer="zeros", trainable=False, name="step")

    def weight(self):
        """The weight of the current step: ``beta * min(1, t / warmup_steps)``."""
        if not self.warmup_steps:
            return ops.convert_to_tensor(self.beta)
        return self.beta * ops.minimum(1.0, self.step / self.warmup_steps)

    def call(self, log_ratio, training=False):
        if not training:
            return log_ratio
        self.step.assign_add(1.0)
        return ops.cast(self.weight(), log_ratio.dtype) * log_ratio

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "warmup_steps": self.warmup_steps}


# [end kl-weight]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=5, help="S, log weights per image (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the log weights (default: 0)")
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.exit(2, f"{parser.prog}: error: expected --samples to be a positive integer, received {args.samples}\n")
    log_w = np.random.default_rng(args.seed).normal(-100.0, 3.0, size=(3, args.samples)).astype("float32")
    for objective in OBJECTIVES:
        bound = ops.convert_to_numpy(bound_from_log_weights(log_w, objective))
        print(f"{objective}: " + ", ".join(f"{value:.3f}" for value in bound) + " nats")
    return 0


if __name__ == "__main__":
    sys.exit(main())

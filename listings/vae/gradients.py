"""Lower-variance encoder gradients with one stop_gradient: sticking the landing, and doubly reparameterized.

The reparameterised sample ``z = mu + sigma * eps`` depends on the encoder's
weights ``phi``, and so does the density ``q(z|x)`` it is scored by. The
gradient of a log weight ``log w = log p(x, z) - log q(z|x)`` with respect to
``phi`` therefore has two parts: the *path*, through ``z``, and the *score*,
``d log q(z|x) / d phi`` at a fixed ``z``. The score's expectation under
``q`` is zero, so it adds only noise; two estimators drop it:

* ``"stl"``, sticking the landing (Roeder, Wu & Duvenaud 2017), for the
  ELBO: ``log q`` is evaluated with ``z_mean`` and ``z_log_var`` behind a
  ``stop_gradient`` (``MonteCarloKL(path_derivative=True)``), which keeps
  the path and drops the score. When ``q`` is the true posterior, ``log w =
  log p(x)`` for every ``z``: every draw's gradient is exactly zero.
* ``"dreg"``, doubly reparameterized (Tucker, Lawson, Gu & Maddison 2019),
  for the IWAE bound. Its gradient for ``phi`` is ``sum_s w~_s
  d log w_s / d phi`` (``w~_s`` the normalised weights), and dropping the
  score there is biased. Reparameterising the score a second time gives
  an unbiased encoder gradient of the path alone,
  ``sum_s w~_s^2 (d log w_s / d z_s) (d z_s / d phi)``, whose
  signal-to-noise ratio grows with the number of samples where the total
  derivative's falls (Rainforth et al. 2018 showed the fall). The decoder's gradient stays
  ``sum_s w~_s d log w_s / d theta``.

Keras trains every weight with the gradient of one loss, so DReG's extra
``w~_s`` is put on the path only: `DoublyReparameterizedPath` returns ``z``
unchanged in value, with the gradient that reaches the encoder through it
multiplied by ``w~_s`` (a ``stop_gradient`` trick). The IWAE loss on that
``z``, with the score dropped as for STL, then has the gradients above.
The weights need ``log p(x|z)`` before the decoder runs on the scaled
``z``: the model runs the decoder twice, once for the weights only.

The default, ``"total"``, is the total derivative that automatic
differentiation gives. Run ``python gradients.py`` to compare the three on
a small untrained model: the mean gradient agrees, its spread does not.
"""

import argparse
import sys

import keras
from keras import layers, ops

from likelihoods import LIKELIHOODS, negative_log_likelihood
from variational_autoencoder import PACKAGE

GRADIENTS = ("total", "stl", "dreg")
PATH_POSTERIORS = ("gaussian", "global")  # where log q(z|x) with q's parameters held fixed is one stop_gradient


# [start check-gradient]
def check_gradient(gradient, posterior="gaussian", divergence="monte_carlo", objective="elbo", decoder="mlp"):
    """A ValueError naming the reason when the `gradient` estimator does not fit the other parts."""
    if gradient not in GRADIENTS:
        raise ValueError(f"Expected `gradient` to be one of {GRADIENTS}. Received: gradient={gradient!r}")
    if gradient == "total":
        return gradient
    if posterior not in PATH_POSTERIORS:
        why = {
            "implicit": "an implicit posterior has no density at all",
            "planar": "a planar flow has no inverse in closed form, so z_0 cannot be recomputed from z",
            "iaf": "an IAF's inverse takes one pass of its network per latent dimension (not built here)",
        }.get(posterior, f"posterior={posterior!r} has no such density")
        raise ValueError(
            f"gradient={gradient!r} needs log q(z|x) at z with q's parameters held fixed, a diagonal Gaussian's "
            f"density: posterior in {PATH_POSTERIORS}; {why}. Received: posterior={posterior!r}"
        )
    if divergence != "monte_carlo":
        raise ValueError(
            f"gradient={gradient!r} drops the score of log q(z|x) at each sample, so it needs that density at "
            f"each sample: divergence='monte_carlo'. Received: divergence={divergence!r}"
        )
    if gradient == "stl" and objective != "elbo":
        raise ValueError(
            "gradient='stl' is unbiased for the ELBO only: for the IWAE bound, dropping the score of each "
            "weighted sample biases the gradient (Tucker et al. 2019). Use gradient='dreg' with objective='iwae'."
        )
    if gradient == "dreg" and objective != "iwae":
        raise ValueError(
            "gradient='dreg' reweights the IWAE bound's samples; for the ELBO every sample weighs 1/S and it is "
            f"the same as gradient='stl'. Received: objective={objective!r}"
        )
    if gradient == "dreg" and decoder == "linear":
        raise ValueError(
            "gradient='dreg' weighs each sample by p(x|z) inside the model, and a linear decoder's target y "
            "is not an input of the model: decoder in ('mlp', 'conv')."
        )
    return gradient


# [end check-gradient]


# [start dreg-path]
@keras.saving.register_keras_serializable(package=PACKAGE)
class DoublyReparameterizedPath(layers.Layer):
    """``z`` unchanged, with the gradient to the encoder through sample ``s`` scaled by ``w~_s``.

    ``w~_s = w_s / sum_t w_t`` are the normalised importance weights of
    the samples, computed from ``log w_s = log p(x|z_s) + log p(z_s) -
    log q(z_s|x)`` and held fixed (no gradient flows through them). The
    output ``stop(z) + w~ * (z - stop(z))`` equals ``z``, and its gradient
    with respect to ``z`` is ``w~``: the IWAE loss computed on it (which
    already weighs sample ``s`` by ``w~_s``) gives the encoder the
    doubly reparameterized gradient's ``w~_s^2``.

    Args:
        likelihood: the likelihood of ``p(x|z)``, one of `LIKELIHOODS`.

    Call arguments:
        inputs: list ``[z, x, parameters, log_ratio]``: the samples
            (batch, samples, latent_dim), the data (batch, data_dim), the
            likelihood's parameters at ``z`` (batch, samples, width) and
            ``log p(z) - log q(z|x)`` (batch, samples).
    """

    def __init__(self, likelihood="bernoulli", **kwargs):
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"Expected `likelihood` to be one of {LIKELIHOODS}. Received: likelihood={likelihood!r}")
        super().__init__(**kwargs)
        self.likelihood = likelihood

    def call(self, inputs):
        z, x, parameters, log_ratio = inputs
        log_w = -negative_log_likelihood(self.likelihood, x, parameters) + log_ratio
        normalized_weights = ops.softmax(ops.stop_gradient(log_w), axis=-1)  # w~_s, (batch, samples)
        z_fixed = ops.stop_gradient(z)
        return z_fixed + ops.expand_dims(normalized_weights, -1) * (z - z_fixed)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "likelihood": self.likelihood}


# [end dreg-path]


def model_gradient(vae):
    """The gradient estimator a composed model was built with: ``"total"``, ``"stl"`` or ``"dreg"``."""
    names = [layer.name for layer in vae.layers]
    if "dreg_path" in names:
        return "dreg"
    estimator = getattr(vae.get_layer("log_ratio"), "estimator", None) if "log_ratio" in names else None
    return "stl" if getattr(estimator, "path_derivative", False) else "total"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10, help="S, samples of z per image (default: 10)")
    parser.add_argument("--draws", type=int, default=200, help="draws of eps per estimator (default: 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, weights and noise (default: 0)")
    args = parser.parse_args(argv)
    for name in ("samples", "draws"):
        if getattr(args, name) < (2 if name == "draws" else 1):
            parser.exit(2, f"{parser.prog}: error: expected --{name} to be at least "
                        f"{2 if name == 'draws' else 1}, received {getattr(args, name)}\n")  # fmt: skip
    import numpy as np

    from compose import compose_vae
    from objectives import NegativeObjective

    rng = np.random.default_rng(args.seed)
    x = (rng.random((8, 20)) < 0.3).astype("float32")
    print(f"Encoder gradient over {args.draws} draws of eps, S = {args.samples}, 8 random binary images:")
    for objective, gradient in (("elbo", "total"), ("elbo", "stl"), ("iwae", "total"), ("iwae", "dreg")):
        keras.utils.set_random_seed(args.seed)  # the same initial weights for every estimator
        vae = compose_vae(20, 4, divergence="monte_carlo", objective=objective, hidden_units=16, gradient=gradient)
        gradient_of = gradient_function(vae, NegativeObjective(objective), vae.get_layer("encoder").trainable_weights)
        draws = np.stack([gradient_of(x, rng.standard_normal((8, args.samples, 4), dtype="float32"))
                          for _ in range(args.draws)])  # fmt: skip
        mean, std = draws.mean(axis=0), draws.std(axis=0, ddof=1)
        snr = np.mean(np.abs(mean) / np.maximum(std, 1e-12))
        print(f"  {objective} {gradient:>5}: |mean| {np.linalg.norm(mean):.4f}, summed variance "
              f"{np.sum(std**2):.4f}, mean SNR {snr:.3f}")  # fmt: skip
    return 0


def gradient_function(vae, loss, weights):
    """``f(x, eps)``: the gradient of ``mean(loss(x, vae([x, eps])))`` for ``weights``, flattened into one vector.

    One draw of the estimator per call, for measuring its spread; compiled
    with XLA on TensorFlow and JAX, eager on PyTorch (Keras has no
    backend-neutral gradient: ``fit`` hides it).
    """
    import numpy as np

    def flatten(grads):
        return np.concatenate([np.ravel(ops.convert_to_numpy(g)) for g in grads]).astype("float64")

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True, reduce_retracing=True)
        def gradient(x, eps):
            with tf.GradientTape() as tape:
                value = ops.mean(loss(x, vae([x, eps])))
            return tape.gradient(value, weights)

        return lambda x, eps: flatten(gradient(tf.constant(x), tf.constant(eps)))
    if backend == "jax":
        import jax

        positions = [next(i for i, v in enumerate(vae.trainable_variables) if v is w) for w in weights]

        @jax.jit
        def gradient(trainable, non_trainable, x, eps):
            def value(trainable):
                outputs, _ = vae.stateless_call(trainable, non_trainable, [x, eps])
                return ops.mean(loss(x, outputs))

            grads = jax.grad(value)(trainable)
            return [grads[i] for i in positions]

        def call(x, eps):
            trainable, non_trainable = ([v.value for v in variables] for variables in
                                        (vae.trainable_variables, vae.non_trainable_variables))  # fmt: skip
            return flatten(gradient(trainable, non_trainable, x, eps))

        return call
    import torch

    return lambda x, eps: flatten(torch.autograd.grad(ops.mean(loss(x, vae([x, eps]))), [w.value for w in weights]))


if __name__ == "__main__":
    sys.exit(main())

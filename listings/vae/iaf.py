"""The inverse autoregressive flow (IAF): one step as a Keras layer, with its MADE network.

One step maps a sample ``z`` of shape (batch, samples, latent_dim) to
``sigma * z + (1 - sigma) * m``, where ``m`` and ``s`` (``sigma = sigmoid(s)``)
come from a masked autoregressive network of ``z`` and a context vector from
the encoder (Kingma et al. 2016, arXiv:1606.04934; masks as in MADE, Germain
et al. 2015, arXiv:1502.03509). Output ``i`` depends on ``z_1 .. z_{i-1}``
only, so the Jacobian is triangular and its log-determinant is a sum over its
diagonal. `flows.build_flow` stacks steps into a flow posterior.

Run ``python iaf.py`` to check one step's Jacobian by finite differences:
zero above the diagonal, and its log-determinant equal to the layer's.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

from variational_autoencoder import PACKAGE, check_positive_int  # noqa: E402


def check_finite(name, tensor):
    """A clear error for NaN or inf in a concrete tensor; symbolic tensors (inside a compiled step) pass."""
    try:
        finite = bool(ops.all(ops.isfinite(tensor)))
    except TypeError:  # a traced tensor has no value to check
        return
    if not finite:
        raise ValueError(f"Expected finite values in `{name}`. Received a tensor with NaN or inf.")


def check_z_shape(layer, z_shape, latent_dim=None):
    """``z`` must be (batch, mc_samples, latent_dim), with the layer's ``latent_dim`` once built."""
    if len(z_shape) != 3 or (latent_dim is not None and z_shape[-1] != latent_dim):
        expected = "latent_dim" if latent_dim is None else latent_dim
        raise ValueError(
            f"{type(layer).__name__} expects `z` of shape (batch, mc_samples, {expected}). Received: {tuple(z_shape)}"
        )


# [start made]
def made_degrees(latent_dim, hidden_units, hidden_layers, reverse=False):
    """The degrees of MADE's units: inputs ``1..D``, hidden units cycling through ``1..D-1``.

    A hidden unit of degree ``k`` may see inputs of degree ``<= k``, an
    output of degree ``d`` only hidden units of degree ``< d``; so output
    ``d`` depends on inputs ``1..d-1`` alone. ``reverse=True`` numbers the
    inputs ``D..1`` (Kingma et al. reverse the order between IAF steps).
    """
    inputs = np.arange(1, latent_dim + 1)
    if reverse:
        inputs = inputs[::-1]
    hidden = [np.arange(hidden_units) % max(latent_dim - 1, 1) + 1 for _ in range(hidden_layers)]
    return inputs, hidden


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedDense(layers.Layer):
    """A dense layer whose kernel is multiplied by a fixed 0/1 mask from unit degrees.

    ``mask[i, j] = output_degrees[j] >= input_degrees[i]`` (``>`` with
    ``strict=True``), so unit ``j`` ignores inputs of higher degree.
    """

    def __init__(self, input_degrees, output_degrees, strict=False, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.input_degrees = [int(d) for d in input_degrees]
        self.output_degrees = [int(d) for d in output_degrees]
        self.strict = bool(strict)
        self.activation = keras.activations.get(activation)
        inputs, outputs = np.array(self.input_degrees)[:, None], np.array(self.output_degrees)[None, :]
        self.mask = (outputs > inputs if self.strict else outputs >= inputs).astype("float32")

    def build(self, input_shape):
        if input_shape[-1] != len(self.input_degrees):
            raise ValueError(f"Expected inputs with {len(self.input_degrees)} features. Received: {tuple(input_shape)}")
        shape = (len(self.input_degrees), len(self.output_degrees))
        self.kernel = self.add_weight(shape=shape, initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=(shape[1],), initializer="zeros", name="bias")

    def call(self, inputs):
        kernel = self.kernel * ops.cast(self.mask, self.kernel.dtype)
        return self.activation(ops.matmul(inputs, kernel) + self.bias)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], len(self.output_degrees))

    def get_config(self):
        return {
            **super().get_config(),
            "input_degrees": self.input_degrees,
            "output_degrees": self.output_degrees,
            "strict": self.strict,
            "activation": keras.activations.serialize(self.activation),
        }


# [end made]


# [start iaf]
@keras.saving.register_keras_serializable(package=PACKAGE)
class InverseAutoregressiveFlow(layers.Layer):
    """One IAF step: ``z = sigma * z + (1 - sigma) * m``, with ``[m, s] = MADE(z, context)``.

    ``m_i`` and ``s_i`` depend on ``z_1 .. z_{i-1}`` only (and on the
    context), so the Jacobian is triangular with ``sigma_i = sigmoid(s_i)`` on
    its diagonal and

        log |det dz'/dz| = sum_i log sigmoid(s_i) = -sum_i softplus(-s_i).

    This is Kingma et al.'s numerically stable "gated" update: a convex
    combination of ``z`` and ``m`` instead of a division by a scale, with
    ``forget_bias`` added to ``s`` so every step starts close to the identity.
    Every output of a step comes from one pass of the network over the
    sampled ``z``, which is why sampling (and training) is fast; only the
    inverse, which a VAE never needs, is sequential.

    Args:
        hidden_units: width of the masked hidden layers.
        hidden_layers: how many masked hidden layers.
        reverse: number the latent dimensions backwards (alternate it
            between steps so every dimension gets to depend on the others).
        forget_bias: added to ``s`` (1.0 makes ``sigma`` about 0.73 at
            initialisation).
        activation: of the hidden layers.

    Call arguments:
        inputs: ``z`` of shape (batch, mc_samples, latent_dim), or the list
            ``[z, context]`` with ``context`` of shape (batch, context_dim),
            shared by an example's samples.

    Returns:
        ``[z, log_det]``: the transformed ``z`` and ``log |det|`` of shape
        (batch, mc_samples).
    """

    def __init__(self, hidden_units=64, hidden_layers=1, reverse=False, forget_bias=1.0, activation="elu", **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = check_positive_int("hidden_units", hidden_units)
        self.hidden_layers = check_positive_int("hidden_layers", hidden_layers)
        self.reverse = bool(reverse)
        self.forget_bias = float(forget_bias)
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        has_context = isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple))
        if has_context and len(input_shape) != 2:
            raise ValueError(f"Expected `z` or the list [z, context]. Received: {input_shape}")
        z_shape = input_shape[0] if has_context else input_shape
        check_z_shape(self, z_shape)
        self.latent_dim = d = int(z_shape[-1])
        inputs, hidden = made_degrees(d, self.hidden_units, self.hidden_layers, self.reverse)
        self.masked_hidden = []
        degrees_in = inputs
        for i, degrees in enumerate(hidden):
            layer = MaskedDense(degrees_in, degrees, name=f"masked_hidden_{i}", dtype=self.dtype_policy)
            layer.build((None, len(degrees_in)))
            self.masked_hidden.append(layer)
            degrees_in = degrees
        self.masked_output = MaskedDense(
            degrees_in, np.concatenate([inputs, inputs]), strict=True, name="m_and_s", dtype=self.dtype_policy
        )
        self.masked_output.build((None, len(degrees_in)))
        self.context_projection = None
        if has_context:
            if len(input_shape[1]) != 2:
                raise ValueError(f"Expected `context` of shape (batch, context_dim). Received: {tuple(input_shape[1])}")
            self.context_projection = layers.Dense(
                self.hidden_units, use_bias=False, name="context_projection", dtype=self.dtype_policy
            )
            self.context_projection.build(tuple(input_shape[1]))

    def call(self, inputs):
        if isinstance(inputs, (list, tuple)) != (self.context_projection is not None):
            built_for = "[z, context]" if self.context_projection is not None else "z alone"
            raise ValueError(f"This IAF step was built for {built_for}. Received: {type(inputs).__name__}")
        z, context = (inputs[0], inputs[1]) if self.context_projection is not None else (inputs, None)
        check_z_shape(self, z.shape, self.latent_dim)
        check_finite("z", z)
        activation = self.activation
        h = self.masked_hidden[0](z)
        if context is not None:
            h = h + ops.expand_dims(self.context_projection(context), axis=-2)
        h = activation(h)
        for layer in self.masked_hidden[1:]:
            h = activation(layer(h))
        m_and_s = self.masked_output(h)
        m, s = m_and_s[..., : self.latent_dim], m_and_s[..., self.latent_dim :] + self.forget_bias
        sigma = ops.sigmoid(s)
        log_det = -ops.sum(ops.softplus(-s), axis=-1)
        return [sigma * z + (1.0 - sigma) * m, log_det]

    def compute_output_shape(self, input_shape):
        has_context = isinstance(input_shape, (list, tuple)) and isinstance(input_shape[0], (list, tuple))
        z_shape = tuple(input_shape[0] if has_context else input_shape)
        return [z_shape, z_shape[:-1]]

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_units": self.hidden_units,
            "hidden_layers": self.hidden_layers,
            "reverse": self.reverse,
            "forget_bias": self.forget_bias,
            "activation": keras.activations.serialize(self.activation),
        }


# [end iaf]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latent-dim", type=int, default=4, help="dimension of z (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        check_positive_int("latent_dim", args.latent_dim)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    keras.utils.set_random_seed(args.seed)
    step = InverseAutoregressiveFlow(hidden_units=16, reverse=False)
    z = np.random.default_rng(args.seed).standard_normal((1, 1, args.latent_dim))
    step(z.astype("float32"))
    for weight in step.weights:  # random weights, so that the network is not near the identity
        weight.assign(np.random.default_rng(args.seed + 1).normal(size=weight.shape) * 0.5)
    z_out, log_det = (ops.convert_to_numpy(v).astype("float64") for v in step(z.astype("float32")))
    jacobian, h = np.empty((args.latent_dim, args.latent_dim)), 1e-2
    for j in range(args.latent_dim):  # central differences, column by column
        shift = np.zeros_like(z)
        shift[..., j] = h
        up, down = (ops.convert_to_numpy(step((z + s).astype("float32"))[0]) for s in (shift, -shift))
        jacobian[:, j] = (up - down)[0, 0] / (2 * h)
    print(f"largest entry above the diagonal: {np.abs(np.triu(jacobian, 1)).max():.1e}")
    print(f"log |det| by finite differences {np.linalg.slogdet(jacobian)[1]:.4f}, by the layer {log_det[0, 0]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

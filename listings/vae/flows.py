"""Normalizing flows as Keras layers: planar flows and inverse autoregressive flows.

A flow is a chain of invertible maps ``z_K = f_K(... f_1(z_0))`` applied to a
sample ``z_0`` of the encoder's diagonal Gaussian ``q_0(z|x)``. By the change
of variables, the density of the result is

    log q_K(z_K|x) = log q_0(z_0|x) - sum_k log |det df_k/dz_{k-1}|,

so every flow layer here returns the transformed ``z`` *and* the
log-absolute-determinant of its Jacobian, both for tensors of shape
(batch, mc_samples, latent_dim):

* `PlanarFlow`: ``f(z) = z + u_hat * tanh(w^T z + b)`` (Rezende & Mohamed 2015,
  arXiv:1505.05770), with ``u`` reparameterised so that ``f`` is invertible;
  its parameters are its own weights, or come per example from the encoder
  (``amortized=True``);
* `InverseAutoregressiveFlow`: ``z = sigma * z + (1 - sigma) * m`` with ``m``
  and ``sigma`` from a masked autoregressive network of ``z`` and a context
  vector from the encoder (Kingma et al. 2016, arXiv:1606.04934; masks as in
  MADE, Germain et al. 2015, arXiv:1502.03509).

`build_flow(kind, num_flows, latent_dim)` stacks ``num_flows`` of them into one
Keras model that sums the log-determinants; `FlowKL` is the Monte Carlo KL
layer with ``log q`` corrected by that sum; `build_flow_vae` slots the flow
between the reparameterised ``z_0`` and the decoder of the main post's model.

Run ``python flows.py --flow planar --num-flows 10`` to train on MNIST and
print the test log-likelihood.
"""

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

from importance_weighted import IWAE_DEFAULTS, paper_schedule  # noqa: E402
from kl_divergence import MonteCarloKL, gaussian_log_density  # noqa: E402
from log_likelihood import importance_sampled_log_likelihood  # noqa: E402
from mnist_data import MNISTError, flatten_and_scale, load_mnist  # noqa: E402
from train import binarize_once, check_intensities, monte_carlo_batches  # noqa: E402
from variational_autoencoder import (  # noqa: E402
    PACKAGE,
    BernoulliNegativeLogLikelihood,
    build_decoder,
    build_encoder,
    check_positive_int,
    check_positive_ints,
    hidden_name,
    reparameterize,
)

FLOWS = ("planar", "iaf")


def check_num_flows(num_flows):
    """``num_flows`` as an int after checking it is a non-negative integer (0 is the identity)."""
    if isinstance(num_flows, bool) or not isinstance(num_flows, (int, np.integer)) or num_flows < 0:
        raise ValueError(f"Expected `num_flows` to be a non-negative integer. Received: num_flows={num_flows!r}")
    return int(num_flows)


def check_flow_kind(kind):
    if kind not in FLOWS:
        raise ValueError(f"Expected a flow in {FLOWS}. Received: {kind!r}")
    return kind


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


# [start planar]
@keras.saving.register_keras_serializable(package=PACKAGE)
class PlanarFlow(layers.Layer):
    """The planar flow ``f(z) = z + u_hat * tanh(w^T z + b)`` and its log-determinant.

    The Jacobian is ``I + u_hat psi(z)^T`` with ``psi(z) = tanh'(w^T z + b) w``,
    so by the matrix determinant lemma

        log |det df/dz| = log |1 + tanh'(w^T z + b) w^T u_hat|,

    one dot product instead of a determinant. ``f`` is invertible when
    ``w^T u_hat >= -1``; Rezende & Mohamed's appendix A guarantees it for any
    raw ``u`` by moving ``u`` along ``w``:

        u_hat = u + (m(w^T u) - w^T u) w / |w|^2,   m(a) = -1 + softplus(a),

    which makes ``w^T u_hat = m(w^T u) > -1``. With ``tanh' = 1 - tanh^2`` the
    determinant is then ``tanh^2 + tanh' * softplus(w^T u)``, a sum of two
    non-negative terms, computed in that form so it never cancels.

    Args:
        amortized: if True, the layer has no weights and takes ``u, w, b``
            per example from its second input (the encoder's output), as
            in Rezende & Mohamed's VAE; otherwise they are the layer's own
            weights.

    Call arguments:
        inputs: ``z`` of shape (batch, mc_samples, latent_dim), or with
            ``amortized=True`` the list ``[z, params]``, ``params`` of shape
            (batch, 2 * latent_dim + 1) holding ``u``, ``w`` and ``b``.

    Returns:
        ``[z, log_det]``: the transformed ``z``, same shape, and
        ``log |det df/dz|`` of shape (batch, mc_samples).

    Example:

    >>> flow = PlanarFlow()
    >>> z, log_det = flow(np.zeros((4, 3, 2), dtype="float32"))
    >>> tuple(z.shape), tuple(log_det.shape)
    ((4, 3, 2), (4, 3))
    """

    def __init__(self, amortized=False, **kwargs):
        super().__init__(**kwargs)
        self.amortized = bool(amortized)

    def build(self, input_shape):
        is_pair = isinstance(input_shape, (list, tuple)) and len(input_shape) == 2
        is_pair = is_pair and all(isinstance(shape, (list, tuple)) for shape in input_shape)
        if is_pair != self.amortized:
            expected = "the list [z, params]" if self.amortized else "a single tensor z"
            raise ValueError(f"PlanarFlow(amortized={self.amortized}) expects {expected}. Received: {input_shape}")
        z_shape = input_shape[0] if self.amortized else input_shape
        check_z_shape(self, z_shape)
        self.latent_dim = int(z_shape[-1])
        if self.amortized:
            if tuple(input_shape[1])[1:] != (2 * self.latent_dim + 1,):
                raise ValueError(
                    f"Expected `params` of shape (batch, {2 * self.latent_dim + 1}) for latent_dim="
                    f"{self.latent_dim}: u, w and b. Received: {tuple(input_shape[1])}"
                )
            return
        init = keras.initializers.RandomNormal(stddev=0.1)
        self.u = self.add_weight(shape=(self.latent_dim,), initializer=init, name="u")
        self.w = self.add_weight(shape=(self.latent_dim,), initializer=init, name="w")
        self.b = self.add_weight(shape=(), initializer="zeros", name="b")

    def call(self, inputs):
        if self.amortized:
            z, params = inputs
            params = ops.expand_dims(params, axis=-2)  # one set per example, shared by its samples
            d = self.latent_dim
            u, w, b = params[..., :d], params[..., d : 2 * d], params[..., 2 * d :]
        else:
            z, u, w, b = inputs, self.u, self.w, self.b
        check_z_shape(self, z.shape, self.latent_dim)
        check_finite("z", z)
        w_dot_u = ops.sum(w * u, axis=-1, keepdims=True)
        softplus_w_dot_u = ops.softplus(w_dot_u)
        w_norm_sq = ops.sum(ops.square(w), axis=-1, keepdims=True)
        # The share of the correction that survives a floor on |w|^2: 1 unless w is (almost) zero.
        share = w_norm_sq / ops.maximum(w_norm_sq, 1e-12)
        u_hat = u + (softplus_w_dot_u - 1.0 - w_dot_u) * w * share / ops.maximum(w_norm_sq, 1e-12)
        h = ops.tanh(ops.sum(w * z, axis=-1, keepdims=True) + b)
        # 1 + w^T u_hat = share * softplus(w^T u) + (1 - share) * (1 + w^T u), both terms >= 0 in practice.
        one_plus_w_dot_u_hat = share * softplus_w_dot_u + (1.0 - share) * (1.0 + w_dot_u)
        det = ops.square(h) + (1.0 - ops.square(h)) * one_plus_w_dot_u_hat  # 1 + tanh' * w^T u_hat
        log_det = ops.log(ops.maximum(ops.abs(det), 1e-30))[..., 0]
        return [z + u_hat * h, log_det]

    def compute_output_shape(self, input_shape):
        z_shape = tuple(input_shape[0] if self.amortized else input_shape)
        return [z_shape, z_shape[:-1]]

    def get_config(self):
        return {**super().get_config(), "amortized": self.amortized}


# [end planar]


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


# [start build-flow]
@keras.saving.register_keras_serializable(package=PACKAGE)
class SumLogDets(layers.Layer):
    """``sum_k log |det J_k|`` of a stack of flows, shape (batch, mc_samples); zeros for an empty stack.

    Call arguments:
        inputs: the list ``[z, log_det_1, ..., log_det_K]``; ``z`` only sets
            the shape when ``K = 0``.
    """

    def call(self, inputs):
        z, *log_dets = inputs
        total = ops.zeros_like(z[..., 0])
        for log_det in log_dets:
            total = total + log_det
        return total

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1])


def build_flow(kind, num_flows, latent_dim, context_dim=None, hidden_units=64, name="flow"):
    """``num_flows`` flows of one kind as a Keras model ``[z_0, context] -> [z_K, sum of log-dets]``.

    Without ``context_dim`` the model takes ``z_0`` alone and the flows have
    their own weights. With it, a planar flow's ``u, w, b`` come from a
    dense layer of the context (amortised), and each IAF step reads the
    context in its hidden layer. ``num_flows=0`` is the identity with a zero
    log-determinant. IAF steps alternate the order of the latent dimensions.
    """
    check_flow_kind(kind)
    num_flows = check_num_flows(num_flows)
    latent_dim = check_positive_int("latent_dim", latent_dim)
    z_0 = keras.Input(shape=(None, latent_dim), name="z_0")
    inputs = [z_0]
    if context_dim is not None:
        inputs.append(keras.Input(shape=(check_positive_int("context_dim", context_dim),), name="context"))
    z, log_dets = z_0, []
    for k in range(num_flows):
        if kind == "planar" and context_dim is not None:
            params = layers.Dense(2 * latent_dim + 1, name=f"planar_params_{k + 1}")(inputs[1])
            z, log_det = PlanarFlow(amortized=True, name=f"planar_{k + 1}")([z, params])
        elif kind == "planar":
            z, log_det = PlanarFlow(name=f"planar_{k + 1}")(z)
        else:
            step = InverseAutoregressiveFlow(hidden_units, reverse=k % 2 == 1, name=f"iaf_{k + 1}")
            z, log_det = step([z, inputs[1]] if context_dim is not None else z)
        log_dets.append(log_det)
    z_k = layers.Identity(name="z_k")(z)
    log_det = SumLogDets(name="log_det")([z_k, *log_dets])
    return keras.Model(inputs if len(inputs) > 1 else z_0, [z_k, log_det], name=name)


# [end build-flow]


# [start flow-kl]
@keras.saving.register_keras_serializable(package=PACKAGE)
class FlowKL(MonteCarloKL):
    """Monte Carlo KL of a flow posterior: ``log q_K(z_K|x) - log p(z_K)`` at each sample.

    The change of variables gives ``log q_K(z_K|x) = log q_0(z_0|x) - log_det``,
    with ``q_0`` the encoder's diagonal Gaussian; the prior term is
    `MonteCarloKL`'s, at the flow's output ``z``. Summed over the latent
    dimensions, averaged over the batch and the samples.

    Call arguments:
        inputs: dict with ``z`` (the flow's output) and ``z_0`` (its input),
            both (batch, mc_samples, latent_dim), ``z_mean`` and ``z_log_var``
            (batch, latent_dim), and ``log_det`` (batch, mc_samples).
    """

    required = ("z", "z_0", "z_mean", "z_log_var", "log_det")

    def build(self, input_shape):
        super().build(input_shape)
        z_shape, z_0_shape = tuple(input_shape["z"]), tuple(input_shape["z_0"])
        if z_shape[1:] != z_0_shape[1:] or tuple(input_shape["log_det"])[1:] != z_shape[1:-1]:
            raise ValueError(
                "Expected `z` and `z_0` of the same shape (batch, samples, latent_dim) and `log_det` of shape "
                f"(batch, samples). Received: z={z_shape}, z_0={z_0_shape}, log_det={tuple(input_shape['log_det'])}"
            )

    def log_posterior(self, inputs):
        base = super().log_posterior({**inputs, "z": inputs["z_0"]})
        return base - inputs["log_det"]


# [end flow-kl]


# [start settings]
# The IWAE post's model (784-200-200-50, tanh) and schedule (1 + 3 + 9 epochs
# with batches of 20), trained on the ELBO with one sample per example.
FLOW_DEFAULTS = {
    "flow": "planar",
    "num_flows": 10,
    "flow_hidden_units": 200,
    "mc_samples": 1,
    "stages": IWAE_DEFAULTS["stages"],
    "batch_size": IWAE_DEFAULTS["batch_size"],
    "latent_dim": IWAE_DEFAULTS["latent_dim"],
    "intermediate_dim": IWAE_DEFAULTS["intermediate_dim"],
    "hidden_layers": IWAE_DEFAULTS["hidden_layers"],
    "activation": IWAE_DEFAULTS["activation"],
    "learning_rate": IWAE_DEFAULTS["learning_rate"],
    "adam_epsilon": IWAE_DEFAULTS["adam_epsilon"],
    "seed": 0,
}
# [end settings]


# [start build-flow-vae]
def build_flow_vae(
    flow="planar",
    num_flows=10,
    original_dim=784,
    intermediate_dim=200,
    latent_dim=50,
    mc_samples=1,
    hidden_layers=2,
    activation="tanh",
    flow_hidden_units=200,
):
    """The main post's VAE with a flow between ``z_0`` and the decoder: ``(vae, encoder, flow, decoder)``.

    The encoder also hands its last hidden layer to the flow as context (the
    amortised planar parameters, the IAF's context); the KL layer is
    `FlowKL`. Compile it with `BernoulliNegativeLogLikelihood` as usual.
    """
    check_positive_ints(original_dim=original_dim, mc_samples=mc_samples, hidden_layers=hidden_layers)
    base = build_encoder(original_dim, intermediate_dim, latent_dim, hidden_layers, activation)
    context = base.get_layer(hidden_name("encoder_hidden", hidden_layers - 1)).output
    encoder = keras.Model(base.inputs[0], [*base.outputs, context], name="encoder")
    flow_model = build_flow(flow, num_flows, latent_dim, intermediate_dim, flow_hidden_units)
    decoder = build_decoder(original_dim, intermediate_dim, latent_dim, hidden_layers, activation)

    x = keras.Input(shape=(original_dim,), name="x")
    eps = keras.Input(shape=(mc_samples, latent_dim), name="eps")
    z_mean, z_log_var, context = encoder(x)
    z_0 = reparameterize(z_mean, z_log_var, eps)
    z, log_det = flow_model([z_0, context])
    kl_inputs = {"z": z, "z_0": z_0, "z_mean": z_mean, "z_log_var": z_log_var, "log_det": log_det}
    z = FlowKL(name="kl_divergence")(kl_inputs)["z"]
    x_logits = decoder(z)

    vae = keras.Model(inputs=[x, eps], outputs=x_logits, name=f"vae_{flow}_{num_flows}")
    return vae, encoder, flow_model, decoder


# [end build-flow-vae]


def flow_vae_parts(vae):
    """The encoder, flow and decoder of a `build_flow_vae` model; a clear error for any other model."""
    names = {layer.name for layer in vae.layers}
    if not {"encoder", "flow", "decoder"} <= names or not any(isinstance(layer, FlowKL) for layer in vae.layers):
        raise ValueError(
            "Expected a VAE built by `build_flow_vae` (nested models 'encoder', 'flow' and 'decoder' and a FlowKL). "
            f"Received a model with layers {sorted(names)}"
        )
    return vae.get_layer("encoder"), vae.get_layer("flow"), vae.get_layer("decoder")


# [start train-flow-vae]
def train_flow_vae(x_train, x_test=None, verbose=1, callbacks=None, **settings):
    """Fit a `build_flow_vae` model on MNIST intensities; ``(vae, history)``.

    ``settings`` override `FLOW_DEFAULTS`. Training pixels are binarised
    afresh each time they are seen; the test set, if given, once (seed + 1).
    """
    unknown = set(settings) - set(FLOW_DEFAULTS)
    if unknown:
        raise ValueError(f"Unknown settings {sorted(unknown)}; expected some of {sorted(FLOW_DEFAULTS)}")
    s = {**FLOW_DEFAULTS, **settings}
    x_train = check_intensities(x_train)
    keras.utils.set_random_seed(s["seed"])
    vae, _, _, _ = build_flow_vae(
        s["flow"], s["num_flows"], x_train.shape[-1], s["intermediate_dim"], s["latent_dim"], s["mc_samples"],
        s["hidden_layers"], s["activation"], s["flow_hidden_units"],
    )  # fmt: skip
    num_epochs, learning_rate = paper_schedule(s["stages"], -(-len(x_train) // s["batch_size"]), s["learning_rate"])
    vae.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate, epsilon=s["adam_epsilon"]),
        loss=BernoulliNegativeLogLikelihood(),
        jit_compile=True,
        steps_per_execution=50,
    )
    batches = monte_carlo_batches(x_train, s["batch_size"], s["mc_samples"], s["latent_dim"], seed=s["seed"])
    test_batches = None
    if x_test is not None:
        x_test = binarize_once(x_test, s["seed"] + 1)
        test_batches = monte_carlo_batches(
            x_test, 500, s["mc_samples"], s["latent_dim"], binarize=False, shuffle=False, seed=s["seed"] + 2
        )
    history = vae.fit(
        batches, epochs=num_epochs, shuffle=False, validation_data=test_batches, verbose=verbose, callbacks=callbacks
    )
    return vae, history.history


# [end train-flow-vae]


# [start flow-log-likelihood]
def flow_log_likelihood(vae, x, num_samples=5000, batch_size=100, seed=0, verbose=1):
    """``log p(x)`` for each row of binary ``x`` under a flow VAE, by importance sampling: ``(log_px, stderr)``.

    The proposal is the flow posterior itself: draws ``z_0 ~ q_0(z|x)`` pushed
    through the flow. `importance_sampled_log_likelihood` already adds
    ``log p(z_0) - log q_0(z_0|x)`` for the Gaussian draws, so the function it
    calls adds the rest of the log weight,

        log p(x|z_K) + log p(z_K) - log p(z_0) + log_det,

    which together make ``log p(x|z_K) + log p(z_K) - log q_K(z_K|x)``.
    """
    encoder, flow, decoder = flow_vae_parts(vae)
    batch_size = check_positive_int("batch_size", batch_size)
    nll = BernoulliNegativeLogLikelihood(reduction=None)
    widths = sum(layer.units for layer in decoder.layers if hasattr(layer, "units"))
    for layer in flow.layers:  # and what each flow keeps per sample
        if isinstance(layer, InverseAutoregressiveFlow):
            widths += layer.hidden_units * layer.hidden_layers + 2 * layer.latent_dim
        elif isinstance(layer, PlanarFlow):
            widths += 2 * layer.latent_dim
    log_px, stderr = np.empty(len(x)), np.empty(len(x))
    progress = keras.utils.Progbar(len(x), unit_name="image", verbose=verbose)
    for start in range(0, len(x), batch_size):
        x_batch = x[start : start + batch_size]
        z_mean, z_log_var, context = encoder(x_batch, training=False)

        def flow_weight_terms(x_chunk, z_0, context=context):  # one context per example, for all its samples
            z, log_det = flow([z_0, context], training=False)
            log_prior = gaussian_log_density(z, 0.0, ops.zeros_like(z))
            log_base_prior = gaussian_log_density(z_0, 0.0, ops.zeros_like(z_0))
            return -nll(x_chunk, decoder(z, training=False)) + log_prior - log_base_prior + log_det

        rows = slice(start, start + len(x_batch))
        log_px[rows], stderr[rows] = importance_sampled_log_likelihood(
            x_batch, ops.convert_to_numpy(z_mean), ops.convert_to_numpy(z_log_var), flow_weight_terms,
            num_samples=num_samples, seed=seed + start, floats_per_sample=widths,
        )  # fmt: skip
        progress.add(len(x_batch))
    return log_px, stderr


# [end flow-log-likelihood]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flow", choices=FLOWS, default=FLOW_DEFAULTS["flow"], help="(default: %(default)s)")
    parser.add_argument(
        "--num-flows", type=int, default=FLOW_DEFAULTS["num_flows"], help="K, flows in the stack (default: %(default)s)"
    )
    parser.add_argument(
        "--stages", type=int, default=FLOW_DEFAULTS["stages"], help="1 + 3 + ... epochs (default: %(default)s)"
    )
    parser.add_argument("--num-train", type=int, default=None, help="use the first N training images (default: all)")
    parser.add_argument(
        "--num-samples", type=int, default=5000, help="importance samples per test image (default: %(default)s)"
    )
    parser.add_argument("--num-test", type=int, default=1000, help="test images to evaluate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=FLOW_DEFAULTS["seed"], help="(default: %(default)s)")
    parser.add_argument(
        "--mnist-dir", default=None, help="MNIST folder (default: $MNIST_DIR, else ../shared/data/mnist)"
    )
    parser.add_argument("--output-dir", default="flow_output", help="where to write (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        check_num_flows(args.num_flows)
        check_positive_ints(stages=args.stages, num_samples=args.num_samples, num_test=args.num_test)
        if args.num_train is not None:
            check_positive_int("num_train", args.num_train)
        (x_train, _), (x_test, _) = load_mnist(args.mnist_dir)
        x_train = flatten_and_scale(x_train[: args.num_train])
        x_test = binarize_once(flatten_and_scale(x_test[: args.num_test]), args.seed + 1)
        start = time.perf_counter()
        vae, history = train_flow_vae(
            x_train, verbose=0 if args.quiet else 1, flow=args.flow, num_flows=args.num_flows, stages=args.stages,
            seed=args.seed,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        log_px, _ = flow_log_likelihood(vae, x_test, args.num_samples, seed=args.seed, verbose=0 if args.quiet else 1)
    except (MNISTError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    output_dir = pathlib.Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    vae.save(output_dir / "vae.keras")
    history = {key: [float(v) for v in values] for key, values in history.items()}
    (output_dir / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    print(
        f"{args.flow} flow, K = {args.num_flows}: train negative ELBO {history['loss'][-1]:.2f} nats, "
        f"test log-likelihood {log_px.mean():.2f} nats (K = {args.num_samples} importance samples, "
        f"{len(log_px)} images), {seconds / len(history['loss']):.1f} s per epoch; saved to {output_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
layer with ``log q`` corrected by that sum. The composed VAE
(``compose_vae(posterior="planar")`` or ``"iaf"``) slots the flow between the
reparameterised ``z_0`` and the decoder.

Run ``python flows.py --flow planar --num-flows 10`` to train on MNIST and
print the test log-likelihood.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

from checkpoints import Checkpoint  # noqa: E402
from iaf import InverseAutoregressiveFlow, check_finite, check_z_shape  # noqa: E402
from kl_divergence import MonteCarloKL  # noqa: E402
from outputs import add_checkpoint_options  # noqa: E402
from variational_autoencoder import PACKAGE, check_positive_int, check_positive_ints  # noqa: E402

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
        # w^T u_hat = w^T u + share * (m(w^T u) - w^T u): the log-determinant below uses exactly this.
        u_hat = u + (softplus_w_dot_u - 1.0 - w_dot_u) * w / ops.maximum(w_norm_sq, 1e-12)
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

    def __init__(self, path_derivative=False, **kwargs):
        if path_derivative:
            raise ValueError(
                "FlowKL cannot hold the flow's parameters fixed in log q_K(z_K|x): that needs z_0 recomputed from "
                "z_K by the flow's inverse. Received: path_derivative=True"
            )
        super().__init__(**kwargs)

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flow", choices=FLOWS, default="planar", help="(default: %(default)s)")
    parser.add_argument("--num-flows", type=int, default=10, help="flows in the stack (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=13, help="(default: %(default)s)")
    parser.add_argument("--num-train", type=int, default=None, help="use the first N training images (default: all)")
    parser.add_argument(
        "--num-samples", type=int, default=5000, help="importance samples per test image, M (default: %(default)s)"
    )
    parser.add_argument("--num-test", type=int, default=1000, help="test images to score (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument("--output-dir", default="flow_output", help="where to write (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_checkpoint_options(parser)  # --resume, --checkpoint-every
    args = parser.parse_args(argv)

    from compose import compose_vae
    from log_likelihood import log_likelihood
    from mnist_data import MNISTError, flatten_and_scale, load_mnist
    from outputs import Interrupted, check_output_dir, interruptible, save_run, settings_of
    from training import fit_vae

    try:
        check_num_flows(args.num_flows)
        check_positive_ints(epochs=args.epochs, num_samples=args.num_samples, num_test=args.num_test)
        if args.num_train is not None:
            check_positive_int("num_train", args.num_train)
        output_dir = check_output_dir(args.output_dir, ["vae.keras", "history.json", "checkpoint.npz"])
        checkpoint = Checkpoint(output_dir / "checkpoint.npz", settings_of(args), args.checkpoint_every, args.resume)
        (x_train, _), (x_test, _) = load_mnist()
    except (MNISTError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    x_train, x_test = flatten_and_scale(x_train[: args.num_train]), flatten_and_scale(x_test[: args.num_test])
    x_test = (np.random.default_rng(args.seed + 1).random(x_test.shape) < x_test).astype("float32")
    keras.utils.set_random_seed(args.seed)
    vae = compose_vae(784, 50, args.flow, "monte_carlo", hidden_units=200, hidden_layers=2, activation="tanh",
                      num_flows=args.num_flows, flow_hidden_units=200)  # fmt: skip
    start = time.perf_counter()
    try:
        with interruptible():
            history = fit_vae(vae, x_train, epochs=args.epochs, batch_size=20, binarize=True, seed=args.seed,
                              verbose=0 if args.quiet else 1, checkpoint=checkpoint)  # fmt: skip
    except Interrupted as interrupt:  # the latest epoch's checkpoint written; the earlier outputs as they were
        parser.exit(interrupt.exit_code, f"{parser.prog}: {checkpoint.on_interrupt(interrupt)}\n")
    seconds = time.perf_counter() - start
    log_px = log_likelihood(vae, x_test, "bernoulli", args.num_samples, seed=args.seed, verbose=0 if args.quiet else 1)
    history = save_run(output_dir, vae, history)  # both files whole, or the earlier ones untouched
    checkpoint.remove()  # the run is complete
    print(
        f"{args.flow} flow, {args.num_flows} steps: train negative ELBO {history['loss'][-1]:.2f} nats, "
        f"test log-likelihood {log_px.mean():.2f} nats (M = {args.num_samples} importance samples, "
        f"{len(log_px)} images), {seconds / max(1, args.epochs - checkpoint.first_epoch):.1f} s per epoch; "
        f"saved to {output_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fit a normalizing flow to an unnormalised 2-D density by minimising the reverse KL.

The four test densities ``p(z) ∝ exp(-U(z))`` are those of Rezende & Mohamed
(2015, arXiv:1505.05770, Table 1). A flow ``z_K = f(z_0)`` of ``z_0 ~ N(0, I)``
has density ``log q_K(z_K) = log N(z_0; 0, I) - log_det``, so

    KL[q_K || p] = E_{z_0}[log N(z_0; 0, I) - log_det + U(z_K)] + log Z

needs only samples of ``z_0`` and no samples of ``p``: the flow is fitted by
minimising the expectation (the normaliser ``log Z`` is a constant). U2, U3
and U4 do not confine ``z_1``, so every target here adds a wall that is zero
on the square [-4, 4]^2 (where the paper plots them) and grows quadratically
outside it, which makes ``Z`` finite without changing the density inside.

Run ``python flow_densities.py --target U3 --flow planar --num-flows 8`` to
fit one flow and print its KL divergence from the target.
"""

import argparse
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

from flows import FLOWS, build_flow, check_flow_kind, check_num_flows  # noqa: E402
from kl_divergence import gaussian_log_density  # noqa: E402
from variational_autoencoder import PACKAGE, check_positive_int  # noqa: E402

TARGETS = ("U1", "U2", "U3", "U4")
BOX = 4.0  # the square [-BOX, BOX]^2 of the paper's plots
WALL_SCALE = 0.2


# [start targets]
def potential(target, z):
    """``U(z)`` of Rezende & Mohamed's Table 1, plus the confining wall, for ``z`` of shape (..., 2)."""
    z_1, z_2 = z[..., 0], z[..., 1]
    w_1 = ops.sin(2.0 * math.pi * z_1 / 4.0)
    w_2 = 3.0 * ops.exp(-0.5 * ops.square((z_1 - 1.0) / 0.6))
    w_3 = 3.0 * ops.sigmoid((z_1 - 1.0) / 0.3)

    def minus_log_sum_exp(a, b):  # -log(exp(-a) + exp(-b)), without underflow
        return -ops.logaddexp(-a, -b)

    if target == "U1":
        radius = ops.sqrt(ops.square(z_1) + ops.square(z_2))
        u = 0.5 * ops.square((radius - 2.0) / 0.4) + minus_log_sum_exp(
            0.5 * ops.square((z_1 - 2.0) / 0.6), 0.5 * ops.square((z_1 + 2.0) / 0.6)
        )
    elif target == "U2":
        u = 0.5 * ops.square((z_2 - w_1) / 0.4)
    elif target == "U3":
        u = minus_log_sum_exp(0.5 * ops.square((z_2 - w_1) / 0.35), 0.5 * ops.square((z_2 - w_1 + w_2) / 0.35))
    elif target == "U4":
        u = minus_log_sum_exp(0.5 * ops.square((z_2 - w_1) / 0.4), 0.5 * ops.square((z_2 - w_1 + w_3) / 0.35))
    else:
        raise ValueError(f"Expected a target in {TARGETS}. Received: {target!r}")
    outside = ops.maximum(ops.abs(z) - BOX, 0.0)
    return u + 0.5 * ops.sum(ops.square(outside / WALL_SCALE), axis=-1)


# [end targets]


# [start reverse-kl]
@keras.saving.register_keras_serializable(package=PACKAGE)
class ReverseKL(layers.Layer):
    """Adds ``mean[log N(z_0; 0, I) - log_det + beta * U(z_K)]``: ``KL[q_K || p] - log Z`` at ``beta = 1``.

    ``beta``, the inverse temperature, is a non-trainable weight that starts
    at 1; `Anneal` raises it from 0.01 to 1 during training, so the flow first
    spreads over a flattened target (and finds every mode) before it
    sharpens, as Rezende & Mohamed do.

    Call arguments:
        inputs: dict with ``z_0`` and ``z`` (batch, samples, 2) and
            ``log_det`` (batch, samples).

    Returns:
        ``z``, unchanged.
    """

    def __init__(self, target, **kwargs):
        super().__init__(**kwargs)
        if target not in TARGETS:
            raise ValueError(f"Expected a target in {TARGETS}. Received: {target!r}")
        self.target = target

    def build(self, input_shape):
        self.beta = self.add_weight(shape=(), initializer="ones", trainable=False, name="beta")

    def call(self, inputs):
        z_0, z, log_det = inputs["z_0"], inputs["z"], inputs["log_det"]
        log_q = gaussian_log_density(z_0, 0.0, ops.zeros_like(z_0)) - log_det
        self.add_loss(ops.mean(log_q + self.beta * potential(self.target, z)))
        return z

    def compute_output_shape(self, input_shape):
        return input_shape["z"]

    def get_config(self):
        return {**super().get_config(), "target": self.target}


class Anneal(keras.callbacks.Callback):
    """Sets ``beta = min(1, 0.01 + step / anneal_steps)`` before every compiled run of steps."""

    def __init__(self, layer, anneal_steps):
        super().__init__()
        self.layer, self.anneal_steps = layer, anneal_steps

    def on_train_batch_begin(self, batch, logs=None):
        self.layer.beta.assign(min(1.0, 0.01 + batch / self.anneal_steps))

    def on_train_end(self, logs=None):
        self.layer.beta.assign(1.0)


def build_density_fit(target, flow="planar", num_flows=8):
    """The model ``z_0 -> z_K`` whose only loss is `ReverseKL`; ``(model, flow_model)``."""
    flow_model = build_flow(flow, num_flows, latent_dim=2, hidden_units=32)
    z_0 = keras.Input(shape=(1, 2), name="z_0")
    z, log_det = flow_model(z_0)
    z = ReverseKL(target, name="reverse_kl")({"z_0": z_0, "z": z, "log_det": log_det})
    return keras.Model(z_0, z, name=f"fit_{target}"), flow_model


def fit_flow(
    target, flow="planar", num_flows=8, steps=10000, batch_size=500, learning_rate=1e-2, seed=0, verbose=0, anneal=True
):
    """Fit ``num_flows`` flows to ``exp(-U)`` with Adam on fresh ``z_0`` every step; the flow model.

    With ``anneal``, ``beta`` rises from 0.01 to 1 over the first half of the
    steps (otherwise it stays 1); the learning rate is constant for that half,
    then decays along a cosine to zero over the second half.
    """
    check_flow_kind(flow)
    num_flows = check_num_flows(num_flows)
    steps, batch_size = check_positive_int("steps", steps), check_positive_int("batch_size", batch_size)
    keras.utils.set_random_seed(seed)
    model, flow_model = build_density_fit(target, flow, num_flows)
    if num_flows == 0:
        return flow_model  # nothing to fit
    anneal_steps = steps // 2
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate, steps - anneal_steps, warmup_target=learning_rate, warmup_steps=anneal_steps
    )
    model.compile(optimizer=keras.optimizers.Adam(schedule), jit_compile=True, steps_per_execution=100)
    z_0 = np.random.default_rng(seed).standard_normal((steps * batch_size, 1, 2), dtype="float32")
    callbacks = [Anneal(model.get_layer("reverse_kl"), max(anneal_steps, 1))] if anneal else []
    model.fit(z_0, batch_size=batch_size, epochs=1, shuffle=False, verbose=verbose, callbacks=callbacks)
    return flow_model


# [end reverse-kl]


def flow_samples(flow_model, num_samples, seed=0):
    """``(z_0, z_K, log q_K(z_K))`` for ``num_samples`` draws, as float64 arrays."""
    z_0 = np.random.default_rng(seed).standard_normal((num_samples, 1, 2), dtype="float32")
    z, log_det = flow_model.predict(z_0, batch_size=10000, verbose=0)
    log_q = ops.convert_to_numpy(gaussian_log_density(z_0, 0.0, np.zeros_like(z_0))) - log_det
    return z_0[:, 0].astype("float64"), z[:, 0].astype("float64"), log_q[:, 0].astype("float64")


def log_normaliser(target, half_width=BOX + 1.5, points=1201):
    """``log Z = log ∫ exp(-U(z)) dz`` by the trapezoidal rule on a square grid, in float64."""
    grid = np.linspace(-half_width, half_width, points)
    z = np.stack(np.meshgrid(grid, grid, indexing="ij"), axis=-1)
    u = ops.convert_to_numpy(potential(target, ops.convert_to_tensor(z, dtype="float64")))
    weights = np.trapezoid(np.trapezoid(np.exp(-(u - u.min())), grid, axis=1), grid)
    return float(math.log(weights) - u.min())


def reverse_kl(target, flow_model, num_samples=100000, seed=0):
    """``KL[q_K || p]`` in nats by Monte Carlo, with ``log Z`` from the grid: ``(kl, stderr)``."""
    _, z, log_q = flow_samples(flow_model, num_samples, seed)
    terms = log_q + ops.convert_to_numpy(potential(target, ops.convert_to_tensor(z, dtype="float64")))
    return float(terms.mean() + log_normaliser(target)), float(terms.std() / math.sqrt(num_samples))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=TARGETS, default="U1", help="(default: %(default)s)")
    parser.add_argument("--flow", choices=FLOWS, default="planar", help="(default: %(default)s)")
    parser.add_argument("--num-flows", type=int, default=8, help="K, flows in the stack (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=10000, help="gradient steps (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=500, help="draws of z_0 per step (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        flow_model = fit_flow(
            args.target, args.flow, args.num_flows, args.steps, args.batch_size, seed=args.seed,
            verbose=0 if args.quiet else 1,
        )  # fmt: skip
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    kl, stderr = reverse_kl(args.target, flow_model, seed=args.seed)
    print(f"{args.target}, {args.flow} flow with K = {args.num_flows}: KL[q || p] = {kl:.3f} nats (± {stderr:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

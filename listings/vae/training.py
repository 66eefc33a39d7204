"""Training the composed VAE on any Keras backend: batches drawn with NumPy, one fit function.

Every batch of `MonteCarloBatches` is ``([x, eps], x)``, or
``([x, eps, z_prior], x)`` for a model with an adversarial divergence (with
targets ``y`` other than the data, for a model of ``y`` given ``x``, the
batch's ``y`` in place of the second ``x``):

* the images in a fresh order every epoch;
* with ``binarize=True``, each grey level ``x`` in [0, 1] replaced by a
  draw of Bernoulli(``x``), afresh every time the image is seen (dynamic
  binarisation, as in the IWAE paper), so the Bernoulli likelihood is the
  likelihood of the data the model sees;
* with ``dequantize=True``, each 8-bit level ``k / 256`` replaced by
  ``(k + u) / 256``, ``u ~ U(0, 1)`` afresh every time: a density on [0, 1]
  fitted to such data bounds the log-probability of the 8-bit levels from
  below (Theis, van den Oord & Bethge 2016);
* ``eps`` ~ N(0, I) of shape (batch, S, latent_dim): ``S`` is a property of
  the batch, not of the model, which takes any ``S``;
* ``z_prior``, draws from the prior ``p(z) = N(0, I)`` of the same shape,
  which the discriminator of an adversarial divergence contrasts with ``z``.

Every random draw comes from its own generator, made from one
``numpy.random.SeedSequence`` by its spawn key ``(epoch, batch, stream)``:
streams never overlap (unlike generators seeded with ``seed + 1``,
``seed + 2``), and a batch is the same whichever worker draws it, in
whatever order. Nothing here needs TensorFlow: the batches feed the JAX and
PyTorch backends alike.

Run ``python training.py --epochs 2`` to train a small composed VAE on
random binary images and print the loss per epoch.
"""

import argparse
import sys

import keras
import numpy as np

from compose import NegativeObjective, check_parts, compose_vae
from gradients import check_gradient, model_gradient
from likelihoods import check_support, negative_log_likelihood
from log_likelihood import exact_log_ratio_model
from objectives import check_kl_weight
from variational_autoencoder import check_positive_ints, gaussian_kl_divergence

STREAMS = {"order": 0, "binarize": 1, "eps": 2, "z_prior": 3, "dequantize": 4}


# [start batches]
class MonteCarloBatches(keras.utils.PyDataset):
    """``([x, eps(, z_prior)], x)`` batches of ``x`` with ``mc_samples`` draws of ``eps`` per image.

    Args:
        x: the data, (count, data_dim); grey levels in [0, 1] when
            ``binarize``.
        batch_size, mc_samples, latent_dim: the shape of ``eps`` is
            (batch_size, mc_samples, latent_dim); the last batch of an epoch
            may be smaller.
        binarize: draw binary images from the grey levels every epoch.
        dequantize: add uniform noise to 8-bit levels ``k / 256`` every epoch.
        prior_samples: also yield draws from ``p(z)`` (adversarial divergences).
        shuffle: a fresh order every epoch (else the order of ``x``).
        seed: the root of every stream; ``None`` draws fresh entropy.
        y: the targets, one per row of ``x``, when they are not ``x``.
    """

    def __init__(self, x, batch_size=100, mc_samples=1, latent_dim=2, binarize=False, dequantize=False,
                 prior_samples=False, shuffle=True, seed=None, y=None, **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        check_positive_ints(batch_size=batch_size, mc_samples=mc_samples, latent_dim=latent_dim)
        self.x = np.asarray(x, dtype="float32")
        if self.x.ndim != 2 or len(self.x) == 0:
            raise ValueError(f"Expected data of shape (count, data_dim) with count >= 1. Received: {self.x.shape}")
        if binarize and not (self.x.min() >= 0.0 and self.x.max() <= 1.0):
            raise ValueError(
                f"Expected grey levels in [0, 1] to binarize. Received: min={self.x.min()}, max={self.x.max()}"
            )
        if binarize and dequantize:
            raise ValueError("Expected at most one of `binarize` and `dequantize`: each makes its own data.")
        if dequantize and not (self.x.min() >= 0.0 and self.x.max() <= 255 / 256):
            raise ValueError(
                "Expected 8-bit levels k / 256 in [0, 255/256] to dequantize. "
                f"Received: min={self.x.min()}, max={self.x.max()}"
            )
        if y is not None and len(y) != len(self.x):
            raise ValueError(f"Expected one target per example. Received: {len(self.x)} examples, {len(y)} targets")
        self.y = None if y is None else np.asarray(y)
        self.batch_size, self.mc_samples, self.latent_dim = batch_size, mc_samples, latent_dim
        self.binarize, self.dequantize = binarize, dequantize
        self.prior_samples, self.shuffle = prior_samples, shuffle
        self.entropy = np.random.SeedSequence(seed).entropy  # fixed now, so that every epoch shares one root
        self.epoch = 0
        self._order = (None, None)  # (epoch, its permutation)

    def generator(self, *spawn_key):
        """The generator of one stream: ``spawn_key`` is ``(epoch, batch, stream)`` or ``(epoch, stream)``."""
        return np.random.default_rng(np.random.SeedSequence(self.entropy, spawn_key=spawn_key))

    def order(self, epoch):
        """The permutation of the images in ``epoch`` (drawn once per epoch, then reused by its batches)."""
        if self._order[0] != epoch:
            count = len(self.x)
            order = self.generator(epoch, STREAMS["order"]).permutation(count) if self.shuffle else np.arange(count)
            self._order = (epoch, order)
        return self._order[1]

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"Expected a batch index in [0, {len(self) - 1}]. Received: {index}")
        rows = self.order(self.epoch)[index * self.batch_size : (index + 1) * self.batch_size]
        x = self.x[rows]
        if self.binarize:
            uniform = self.generator(self.epoch, index, STREAMS["binarize"]).random(x.shape, dtype="float32")
            x = (uniform < x).astype("float32")
        if self.dequantize:
            x = x + self.generator(self.epoch, index, STREAMS["dequantize"]).random(x.shape, dtype="float32") / 256
        shape = (len(rows), self.mc_samples, self.latent_dim)
        eps = self.generator(self.epoch, index, STREAMS["eps"]).standard_normal(shape, dtype="float32")
        inputs = [x, eps]
        if self.prior_samples:
            inputs.append(self.generator(self.epoch, index, STREAMS["z_prior"]).standard_normal(shape, "float32"))
        return tuple(inputs), x if self.y is None else self.y[rows]

    def on_epoch_end(self):
        self.epoch += 1


# [end batches]


# [start fit]
def fit_vae(vae, x, likelihood="bernoulli", objective="elbo", epochs=10, batch_size=100, mc_samples=1,
            learning_rate=1e-3, binarize=False, dequantize=False, seed=0, verbose=1, callbacks=None,
            optimizer=None, validation_x=None, y=None, checkpoint=None):  # fmt: skip
    """Compile ``vae`` (from `compose_vae`) with minus its objective and train it; return the history dict.

    The loss is ``NegativeObjective(objective, likelihood)``, in nats per
    image. Adam's learning rate decays to zero along a cosine over the run,
    so the weights returned are not one noisy step of a stochastic
    optimiser; pass ``optimizer`` to train with another (a paper's
    schedule). Settings that a backend refuses are chosen for it: PyTorch
    runs one step per execution, without XLA; TensorFlow and JAX run ten
    steps per execution in one XLA-compiled function (where Keras's
    ``"auto"`` would leave XLA off for TensorFlow on a CPU). With
    ``validation_x`` (data as the model sees it: already binary, say) the
    history also holds ``val_loss``, the same loss on it after every epoch.
    ``y``: targets other than ``x`` (a model of ``y`` given ``x``,
    ``decoder="linear"``), checked against the likelihood's support.
    ``checkpoint``: a `checkpoints.Checkpoint` that saves the run at the end
    of its epochs and, when resuming, restores it first (then the history
    returned is the whole run's).
    """
    check_parts("gaussian", "monte_carlo", likelihood, objective)
    if "kl_weight" in [layer.name for layer in vae.layers]:  # a weighted log ratio: the ELBO's terms only
        kl_weight = vae.get_layer("kl_weight")
        check_kl_weight(objective, kl_weight.beta, kl_weight.warmup_steps)
    check_gradient(model_gradient(vae), objective=objective)  # STL for the ELBO, DReG for the IWAE bound
    check_positive_ints(epochs=epochs)
    if not np.isfinite(learning_rate) or learning_rate <= 0:
        raise ValueError(f"Expected `learning_rate` to be a positive number. Received: learning_rate={learning_rate}")
    if np.ndim(x) != 2 or np.shape(x)[-1] != vae.inputs[0].shape[-1]:
        raise ValueError(f"Expected data of shape (count, {vae.inputs[0].shape[-1]}). Received: {np.shape(x)}")
    num_classes = vae.outputs[0].shape[-1] if likelihood == "categorical" else None
    if y is not None:
        y = check_support(likelihood, y, num_classes)
        if validation_x is not None:
            raise ValueError("Expected no `validation_x` with targets `y`: its targets would be missing.")
    elif not (binarize or dequantize):  # the data are the targets: in the likelihood's support
        check_support(likelihood, x, num_classes)
    latent_dim, prior_samples = vae.inputs[1].shape[-1], len(vae.inputs) == 3
    batches = MonteCarloBatches(
        x, batch_size, mc_samples, latent_dim, binarize=binarize, dequantize=dequantize,
        prior_samples=prior_samples, seed=seed, y=y,
    )  # fmt: skip
    validation = None
    if validation_x is not None:
        # A SeedSequence hashes its seed, so seeds seed and seed + 1 make independent streams.
        validation = MonteCarloBatches(validation_x, batch_size, mc_samples, latent_dim, prior_samples=prior_samples,
                                       shuffle=False, seed=None if seed is None else seed + 1)  # fmt: skip
    torch = keras.backend.backend() == "torch"
    steps = epochs * len(batches)
    vae.compile(
        optimizer=optimizer or keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps)),
        loss=NegativeObjective(objective, likelihood),
        jit_compile=not torch,
        steps_per_execution=1 if torch else 10,
    )
    initial_epoch = 0
    if checkpoint is not None:  # go on from its state (restored as fit begins), and save it every epoch
        initial_epoch = checkpoint.attach(vae, {"batches": batches, "validation": validation})
        callbacks = [*(callbacks or []), checkpoint]
    history = vae.fit(batches, epochs=epochs, validation_data=validation, verbose=verbose, callbacks=callbacks,
                      initial_epoch=initial_epoch).history  # fmt: skip
    return history if checkpoint is None else checkpoint.history


# [end fit]


# [start predictive]
def posterior_predictive(vae, x, num_samples=1000, seed=0):
    """The likelihood's parameters at ``num_samples`` draws of ``z ~ q`` per row of ``x``: (count, samples, width).

    For a global posterior, the parameters of ``p(y | x, w)`` at draws of the
    weights ``w = z``: the mean of their densities at ``y`` is the Monte
    Carlo posterior predictive (`skeleton.log_predictive_density`).
    """
    check_positive_ints(num_samples=num_samples)
    x = np.asarray(x, dtype="float32")
    rng = np.random.default_rng(seed)
    shape = (len(x), num_samples, vae.inputs[1].shape[-1])
    parameters, _ = vae([x, *(rng.standard_normal(shape, dtype="float32") for _ in vae.inputs[1:])], training=False)
    return keras.ops.convert_to_numpy(parameters)


def elbo_terms(vae, x, likelihood="bernoulli", mc_samples=1, batch_size=500, seed=0):
    """The negative ELBO's two terms per image, in nats, each averaged over ``mc_samples`` draws.

    ``distortion``: ``-log p(x|z)``; ``rate``: the KL as the model's own
    divergence estimates it (a discriminator's estimate for the adversarial
    ones); ``rate_exact``, for a posterior with a density: the closed-form
    KL of a Gaussian, the Monte Carlo one of a flow.
    """
    check_positive_ints(mc_samples=mc_samples, batch_size=batch_size)
    try:  # a Gaussian or a flow: q's own density gives the exact rate too
        score = exact_log_ratio_model(vae)
    except ValueError:  # an implicit posterior has none
        score = None
    x = np.asarray(x, dtype="float32")
    terms = {"distortion": [], "rate": []}
    for start in range(0, len(x), batch_size):
        x_batch = x[start : start + batch_size]
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(start,)))
        shape = (len(x_batch), mc_samples, vae.inputs[1].shape[-1])
        inputs = [x_batch, *(rng.standard_normal(shape, dtype="float32") for _ in vae.inputs[1:])]
        parameters, log_ratio = vae(inputs, training=False)
        terms["distortion"].append(negative_log_likelihood(likelihood, x_batch, parameters))
        terms["rate"].append(-log_ratio)
        if score is not None:  # the same draws of eps, through the posterior's density
            _, exact, tensors = score(x_batch, inputs[1])
            if "log_det" not in tensors:
                exact = -keras.ops.expand_dims(gaussian_kl_divergence(tensors["z_mean"], tensors["z_log_var"]), -1)
            terms.setdefault("rate_exact", []).append(-exact)
    return {
        name: np.concatenate([keras.ops.convert_to_numpy(keras.ops.mean(v, axis=-1)) for v in values]).astype("float64")
        for name, values in terms.items()
    }


# [end predictive]


def continuous_bernoulli_mean(logits):
    """``E[x]`` under the continuous Bernoulli, in NumPy: ``1 / (1 - e^-l) - 1 / l``, 1/2 + l/12 near 0.

    Not ``lambda = sigmoid(l)``: the mean is closer to 1/2 than ``lambda``
    (0.66 against 0.88 at ``l = 2``), so a decoder's ``lambda`` drawn as an
    image is not what the model expects the image to be. Computed at
    ``a = |l|``, where ``e^-a`` cannot overflow, and reflected:
    ``mean(-l) = 1 - mean(l)``.
    """
    logits = np.asarray(logits, dtype="float64")
    a = np.abs(logits)
    small = a < 1e-3
    safe = np.where(small, 1.0, a)
    upper = np.where(small, 0.5 + a / 12.0, 1.0 / -np.expm1(-safe) - 1.0 / safe)
    return np.where(logits >= 0, upper, 1.0 - upper)


def sample_from(likelihood, parameters, rng):
    """``(mean, draw)`` of the distribution the parameters (NumPy, (..., width)) define, one draw each."""
    parameters = np.asarray(parameters, dtype="float64")
    if likelihood == "gaussian":
        mean, log_scale = np.split(parameters, 2, axis=-1)
        return mean, mean + np.exp(log_scale) * rng.standard_normal(mean.shape)
    if likelihood == "bernoulli":
        mean = 1.0 / (1.0 + np.exp(-parameters))
        return mean, (rng.random(mean.shape) < mean).astype("float64")
    if likelihood == "continuous_bernoulli":
        # Inverse CDF of the density proportional to exp(l x) on [0, 1], written without overflow.
        u = rng.random(parameters.shape)
        small = np.abs(parameters) < 1e-6
        a = np.abs(np.where(small, 1.0, parameters))
        positive = 1.0 + np.log(u + (1.0 - u) * np.exp(-a)) / a
        negative = np.log1p(u * np.expm1(-a)) / -a
        draw = np.where(small, u, np.where(parameters > 0, positive, negative))
        return continuous_bernoulli_mean(parameters), np.clip(draw, 0.0, 1.0)
    raise ValueError(f"Expected a likelihood with a data distribution to sample. Received: {likelihood!r}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2, help="passes over the data (default: 2)")
    parser.add_argument("--mc-samples", type=int, default=1, help="samples of z per image, S (default: 1)")
    parser.add_argument("--objective", default="elbo", help="elbo or iwae (default: elbo)")
    parser.add_argument("--gradient", default="total", help="the encoder's gradient: total, stl (ELBO) or dreg "
                        "(IWAE bound) (default: total)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the weights (default: 0)")
    args = parser.parse_args(argv)
    try:
        check_positive_ints(epochs=args.epochs, mc_samples=args.mc_samples)
        exact = args.objective == "iwae" or args.gradient != "total"  # log q(z|x) at every sample
        divergence = "monte_carlo" if exact else "closed_form"
        check_parts("gaussian", divergence, "bernoulli", args.objective)
        check_gradient(args.gradient, "gaussian", divergence, args.objective)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    grey = np.random.default_rng(args.seed).random((500, 16), dtype="float32")
    keras.utils.set_random_seed(args.seed)
    vae = compose_vae(16, 2, divergence=divergence, objective=args.objective, hidden_units=32, gradient=args.gradient)
    history = fit_vae(vae, grey, "bernoulli", args.objective, epochs=args.epochs, batch_size=50,
                      mc_samples=args.mc_samples, binarize=True, seed=args.seed, verbose=0)  # fmt: skip
    for epoch, loss in enumerate(history["loss"], start=1):
        print(f"epoch {epoch}: negative {args.objective} {loss:.3f} nats per image")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train the VAE on the ELBO or on the importance-weighted bound (IWAE).

Both bounds are computed from the same ``k`` log importance weights per
example, one for each Monte Carlo sample ``z_s = z_mean + exp(z_log_var / 2) * eps_s``:

    log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x).

The ELBO is their mean, the bound of Burda, Grosse & Salakhutdinov (2015)
their log-mean-exp; one argument, ``objective``, picks which one the model
is trained on. The defaults are the IWAE paper's MNIST model (784-200-200-50,
tanh, Bernoulli likelihood) and training settings (Adam with epsilon 1e-4,
batches of 20, the learning rate schedule 0.001 * 10**(-i/7) for 3**i epochs,
i = 0, 1, ...). ``--stages 8`` runs the paper's full 3,280 epochs.

Run ``python importance_weighted.py --objective iwae -k 5 --stages 3`` to
train for 1 + 3 + 9 = 13 epochs and save ``vae.keras`` and ``history.json``.
"""

import argparse
import json
import math
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

from mnist_data import MNISTError, flatten_and_scale, load_mnist  # noqa: E402
from train import binarize_once, monte_carlo_batches  # noqa: E402
from variational_autoencoder import (  # noqa: E402
    PACKAGE,
    BernoulliNegativeLogLikelihood,
    build_decoder,
    build_encoder,
    check_positive_int,
    check_positive_ints,
    reparameterize,
)

OBJECTIVES = ("elbo", "iwae")

# [start settings]
# Burda et al. (2015), section 5: the one-stochastic-layer MNIST model and
# its optimiser.
IWAE_DEFAULTS = {
    "objective": "iwae",
    "k": 5,
    "stages": 3,
    "batch_size": 20,
    "latent_dim": 50,
    "intermediate_dim": 200,
    "hidden_layers": 2,
    "activation": "tanh",
    "learning_rate": 1e-3,
    "adam_epsilon": 1e-4,
    "seed": 0,
}
# [end settings]


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
    count = ops.shape(values)[axis]
    return ops.logsumexp(values, axis=axis) - math.log(count)


def log_density_ratio(z, z_log_var, eps):
    """``log p(z) - log q(z|x)`` for ``z = z_mean + exp(z_log_var / 2) * eps``, in nats.

    With the prior ``p(z) = N(0, I)`` and ``q(z|x) = N(z_mean, diag(exp(z_log_var)))``
    the normalising constants cancel and, because ``(z - z_mean)**2 / exp(z_log_var)``
    is exactly ``eps**2``, the ratio needs no division by the variance:

        log p(z) - log q(z|x) = 1/2 * sum_j (eps_j**2 - z_j**2 + z_log_var_j).

    ``z`` and ``eps`` have shape (batch, samples, latent_dim) and ``z_log_var``
    (batch, latent_dim); returns shape (batch, samples). Its mean over ``q``
    is ``-KL[q(z|x) || p(z)]``.
    """
    z_log_var = ops.expand_dims(z_log_var, axis=-2)
    return 0.5 * ops.sum(ops.square(eps) - ops.square(z) + z_log_var, axis=-1)


def bernoulli_log_weights(x, x_logits, log_ratio):
    """``log w = log p(x|z) + log p(z) - log q(z|x)``, shape (batch, samples).

    ``x`` is (batch, dim) binary, ``x_logits`` the decoder's Bernoulli
    logits (batch, samples, dim), ``log_ratio`` from `log_density_ratio`.
    """
    log_likelihood = -BernoulliNegativeLogLikelihood(reduction=None)(x, x_logits)
    return log_likelihood + log_ratio


def bound_from_log_weights(log_w, objective):
    """The ELBO (mean) or the importance-weighted bound (log-mean-exp) over the samples axis."""
    if check_objective(objective) == "iwae":
        return log_mean_exp(log_w, axis=-1)
    return ops.mean(log_w, axis=-1)


# [end log-weights]


# [start layers]
@keras.saving.register_keras_serializable(package=PACKAGE)
class LogDensityRatio(layers.Layer):
    """``log p(z) - log q(z|x)`` for every Monte Carlo sample: see `log_density_ratio`.

    It takes the place of the `KLDivergenceLayer` when the objective needs the
    prior and posterior terms per sample, inside the weights, rather than as
    a separate loss term.

    Call arguments:
        inputs: list ``[z, z_log_var, eps]`` with shapes (batch, samples,
            latent_dim), (batch, latent_dim) and (batch, samples, latent_dim).

    Returns:
        A tensor of shape (batch, samples).
    """

    def build(self, input_shape):
        z_shape, z_log_var_shape, eps_shape = (tuple(shape) for shape in input_shape)
        if z_shape[-1] != z_log_var_shape[-1] or z_shape[-1] != eps_shape[-1] or len(z_shape) != 3:
            raise ValueError(
                "Expected `z` and `eps` of shape (batch, samples, latent_dim) and `z_log_var` of shape "
                f"(batch, latent_dim). Received: input_shape={input_shape}"
            )

    def call(self, inputs):
        z, z_log_var, eps = inputs
        return log_density_ratio(z, z_log_var, eps)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1])


@keras.saving.register_keras_serializable(package=PACKAGE)
class NegativeBound(keras.losses.Loss):
    """Minus the ELBO or minus the IWAE bound, per example, in nats.

    ``y_pred`` is the pair ``[x_logits, log_ratio]`` of a model built by
    `build_bound_vae`: Bernoulli logits (batch, samples, dim) and
    ``log p(z) - log q(z|x)`` (batch, samples). The default reduction
    averages over the batch.
    """

    def __init__(self, objective="iwae", name=None, **kwargs):
        self.objective = check_objective(objective)
        super().__init__(name=name or f"negative_{objective}", **kwargs)

    def call(self, x, y_pred):
        x_logits, log_ratio = y_pred
        return -bound_from_log_weights(bernoulli_log_weights(x, x_logits, log_ratio), self.objective)

    def get_config(self):
        return {**super().get_config(), "objective": self.objective}


@keras.saving.register_keras_serializable(package=PACKAGE)
class BoundModel(keras.Model):
    """A functional model whose loss sees all its outputs at once.

    Keras scores each output of a model with its own loss; a bound couples
    the reconstruction logits and the log density ratio inside one
    log-mean-exp, so this model hands both outputs to its one loss.
    """

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        losses = [self.loss(y, y_pred, sample_weight)]
        losses += [ops.sum(loss) for loss in self.losses]  # weight regularisers, if any
        return ops.sum(ops.stack(losses)) if len(losses) > 1 else losses[0]


# [end layers]


# [start build-bound-vae]
def build_bound_vae(
    original_dim=784,
    intermediate_dim=IWAE_DEFAULTS["intermediate_dim"],
    latent_dim=IWAE_DEFAULTS["latent_dim"],
    mc_samples=IWAE_DEFAULTS["k"],
    hidden_layers=IWAE_DEFAULTS["hidden_layers"],
    activation=IWAE_DEFAULTS["activation"],
    objective=IWAE_DEFAULTS["objective"],
):
    """The main post's VAE, trained on the ELBO or the IWAE bound; ``(vae, encoder, decoder)``.

    The encoder, the reparameterisation and the decoder are those of the
    main post. The `KLDivergenceLayer` steps aside for a `LogDensityRatio`:
    the model's outputs are ``[x_logits, log_ratio]``, and compiling it with
    ``loss=NegativeBound(objective)`` trains it on that bound.
    """
    check_positive_ints(
        original_dim=original_dim,
        intermediate_dim=intermediate_dim,
        latent_dim=latent_dim,
        mc_samples=mc_samples,
        hidden_layers=hidden_layers,
    )
    check_objective(objective)
    encoder = build_encoder(original_dim, intermediate_dim, latent_dim, hidden_layers, activation)
    decoder = build_decoder(original_dim, intermediate_dim, latent_dim, hidden_layers, activation)

    x = keras.Input(shape=(original_dim,), name="x")
    eps = keras.Input(shape=(mc_samples, latent_dim), name="eps")
    z_mean, z_log_var = encoder(x)
    z = reparameterize(z_mean, z_log_var, eps)
    x_logits = decoder(z)
    log_ratio = LogDensityRatio(name="log_density_ratio")([z, z_log_var, eps])

    vae = BoundModel(inputs=[x, eps], outputs=[x_logits, log_ratio], name=f"vae_{objective}")
    return vae, encoder, decoder


# [end build-bound-vae]


# [start schedule]
def paper_schedule(stages, steps_per_epoch, learning_rate=1e-3):
    """Burda et al.'s schedule: stage ``i`` runs ``3**i`` epochs at ``learning_rate * 10**(-i/7)``.

    Returns ``(num_epochs, schedule)``, the schedule a Keras learning-rate
    schedule over gradient steps. Eight stages (i = 0..7) make 3,280 epochs.
    """
    stages = check_positive_int("stages", stages)
    epochs = [3**i for i in range(stages)]
    # PiecewiseConstantDecay keeps value i up to and including boundary i.
    boundaries = list(np.cumsum(epochs[:-1]) * steps_per_epoch - 1)
    values = [learning_rate * 10 ** (-i / 7) for i in range(stages)]
    if stages == 1:
        return epochs[0], learning_rate
    return sum(epochs), keras.optimizers.schedules.PiecewiseConstantDecay([int(b) for b in boundaries], values)


# [end schedule]


# [start train-bound-vae]
def train_bound_vae(x_train, x_test=None, verbose=1, callbacks=None, **settings):
    """Fit a `build_bound_vae` model on MNIST intensities; ``(vae, encoder, decoder, history)``.

    ``settings`` override `IWAE_DEFAULTS`. Training pixels are binarised
    afresh every time they are seen; the test set, if given, once (seed + 1),
    and its negative bound with the same ``k`` is recorded every epoch.
    """
    unknown = set(settings) - set(IWAE_DEFAULTS)
    if unknown:
        raise ValueError(f"Unknown settings {sorted(unknown)}; expected some of {sorted(IWAE_DEFAULTS)}")
    s = {**IWAE_DEFAULTS, **settings}
    k, batch_size, latent_dim = (check_positive_int(n, s[n]) for n in ("k", "batch_size", "latent_dim"))
    keras.utils.set_random_seed(s["seed"])
    vae, encoder, decoder = build_bound_vae(
        original_dim=x_train.shape[-1],
        intermediate_dim=s["intermediate_dim"],
        latent_dim=latent_dim,
        mc_samples=k,
        hidden_layers=s["hidden_layers"],
        activation=s["activation"],
        objective=s["objective"],
    )
    num_epochs, learning_rate = paper_schedule(s["stages"], -(-len(x_train) // batch_size), s["learning_rate"])
    vae.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate, epsilon=s["adam_epsilon"]),
        loss=NegativeBound(s["objective"]),
        jit_compile=True,
        steps_per_execution=50,
    )
    train_batches = monte_carlo_batches(x_train, batch_size, k, latent_dim, binarize=True, seed=s["seed"])
    test_batches = None
    if x_test is not None:
        x_test = binarize_once(x_test, s["seed"] + 1)
        test_batches = monte_carlo_batches(
            x_test, 500, k, latent_dim, binarize=False, shuffle=False, seed=s["seed"] + 2
        )
    history = vae.fit(
        train_batches,
        epochs=num_epochs,
        shuffle=False,  # the dataset reshuffles itself every epoch
        validation_data=test_batches,
        verbose=verbose,
        callbacks=callbacks,
    )
    return vae, encoder, decoder, history.history


# [end train-bound-vae]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objective", choices=OBJECTIVES, default=IWAE_DEFAULTS["objective"], help="bound to maximise")
    parser.add_argument(
        "-k", type=int, default=IWAE_DEFAULTS["k"], help="samples of z per example (default: %(default)s)"
    )
    parser.add_argument(
        "--stages",
        type=int,
        default=None,
        help=f"stages of the schedule, 1 + 3 + ... + 3**(stages-1) epochs (default: {IWAE_DEFAULTS['stages']})",
    )
    parser.add_argument("--paper-schedule", action="store_true", help="all 8 stages, 3,280 epochs, as in Burda et al.")
    parser.add_argument("--batch-size", type=int, default=IWAE_DEFAULTS["batch_size"], help="(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=IWAE_DEFAULTS["seed"], help="(default: %(default)s)")
    parser.add_argument(
        "--mnist-dir", default=None, help="MNIST folder (default: $MNIST_DIR, else ../shared/data/mnist)"
    )
    parser.add_argument("--output-dir", default="iwae_output", help="where to write (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.paper_schedule and args.stages is not None:
        parser.exit(2, f"{parser.prog}: error: give --stages or --paper-schedule, not both\n")
    settings = {
        "objective": args.objective,
        "k": args.k,
        "stages": 8 if args.paper_schedule else IWAE_DEFAULTS["stages"] if args.stages is None else args.stages,
        "batch_size": args.batch_size,
        "seed": args.seed,
    }
    try:
        check_positive_ints(k=settings["k"], stages=settings["stages"], batch_size=settings["batch_size"])
        (x_train, _), (x_test, _) = load_mnist(args.mnist_dir)
        start = time.perf_counter()
        vae, _, _, history = train_bound_vae(
            flatten_and_scale(x_train), flatten_and_scale(x_test), verbose=0 if args.quiet else 1, **settings
        )
        seconds = time.perf_counter() - start
    except (MNISTError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    output_dir = pathlib.Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    vae.save(output_dir / "vae.keras")
    history = {key: [float(v) for v in values] for key, values in history.items()}
    (output_dir / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    print(
        f"train negative {args.objective} (k = {args.k}) {history['loss'][-1]:.2f} nats, "
        f"test {history['val_loss'][-1]:.2f} nats, {seconds / len(history['loss']):.1f} s per epoch; "
        f"saved to {output_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

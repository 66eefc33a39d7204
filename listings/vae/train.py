"""Train the variational autoencoder on MNIST and save the model and its history.

The defaults are the settings of the post "Implementing Variational
Autoencoders in Keras: Beyond the Quickstart Tutorial". Writes, in
``--output-dir``: ``vae.keras`` (the whole model, reloadable with
``safe_mode=True``) and ``history.json`` (train and test negative ELBO per
epoch, in nats per example); while it trains, ``checkpoint.npz`` (see
``--resume``).
"""

import argparse
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from checkpoints import Checkpoint  # noqa: E402
from mnist_data import MNISTError, binarize_once, check_intensities, flatten_and_scale, load_mnist  # noqa: E402
from outputs import (  # noqa: E402
    Interrupted,
    add_checkpoint_options,
    check_output_dir,
    interruptible,
    save_run,
    settings_of,
)
from variational_autoencoder import (  # noqa: E402
    BernoulliNegativeLogLikelihood,
    build_vae,
    check_positive_int,
    check_positive_ints,
    gaussian_kl_divergence,
)

# [start settings]
DEFAULTS = {
    "num_epochs": 50,
    "batch_size": 100,
    "mc_samples": 1,
    "latent_dim": 2,
    "intermediate_dim": 256,
    "hidden_layers": 1,
    "activation": "relu",
    "learning_rate": 1e-3,
    "seed": 0,
    # The training core: XLA-compiled steps, several per call (Python overhead would dominate a small model).
    "jit_compile": True,
    "steps_per_execution": 50,
}
# [end settings]


# [start streams]
def random_streams(seed):
    """The independent random streams of one training run, all derived from the one integer ``seed``.

    TensorFlow's ``tf.random.Generator.from_seed(seed)`` puts ``seed`` in the
    counter of a Philox generator whose key is 0, so ``from_seed(seed + 1)``
    gives the same numbers as ``from_seed(seed)``, shifted by one block.
    Instead the batches' generators are ``split`` from one generator (each
    gets a key of its own), and NumPy's streams are spawned from one
    ``np.random.SeedSequence``.

    Returns a dict: ``train_batches`` and ``test_batches`` (``tf.random.Generator``
    for `monte_carlo_batches`), ``test_binarization``, ``train_binarization``
    (for `binarize_once`; the second only with static binarisation) and
    ``evaluation`` (the ``eps`` of `negative_elbo_per_example`), the last three
    ``np.random.SeedSequence``.
    """
    import tensorflow as tf

    train_batches, test_batches = tf.random.Generator.from_seed(seed).split(2)
    test_binarization, train_binarization, evaluation = np.random.SeedSequence(seed).spawn(3)
    return {
        "train_batches": train_batches,
        "test_batches": test_batches,
        "test_binarization": test_binarization,
        "train_binarization": train_binarization,
        "evaluation": evaluation,
    }


# [end streams]


# [start monte-carlo-batches]
def monte_carlo_batches(x, batch_size, mc_samples, latent_dim, binarize=True, shuffle=True, seed=None):
    """A ``tf.data.Dataset`` of batches ``((x, eps), x)``, with fresh noise for every batch.

    ``eps`` has shape (batch, mc_samples, latent_dim) and is standard normal.
    With ``binarize=True`` every pixel intensity ``p`` is replaced by a draw
    from Bernoulli(p) each time the example is seen (dynamic binarisation),
    so the Bernoulli likelihood is a likelihood of the data it is given.
    With ``shuffle=True`` the examples come in a new order every epoch. One
    seeded generator draws the order, the pixels and ``eps``, inside
    TensorFlow's graph, so the pipeline keeps up with a compiled step.

    Args:
        x: float array of shape (count, dim) with values in [0, 1].
        batch_size: examples per batch (the last batch may be smaller).
        mc_samples: Monte Carlo samples of ``z`` per example.
        latent_dim: dimension of ``z``.
        binarize: resample binary pixels every time an example is seen.
        shuffle: reshuffle the examples every epoch.
        seed: an integer seed, a ``tf.random.Generator`` to draw from (one of
            `random_streams`), or None (a different stream every run).
    """
    import tensorflow as tf  # only for tf.data, which can feed every Keras backend

    x = check_intensities(x)
    batch_size = check_positive_int("batch_size", batch_size)
    mc_samples = check_positive_int("mc_samples", mc_samples)
    latent_dim = check_positive_int("latent_dim", latent_dim)
    count, steps = len(x), -(-len(x) // batch_size)
    if seed is None:
        generator = tf.random.Generator.from_non_deterministic_state()
    elif isinstance(seed, tf.random.Generator):
        generator = seed
    elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        generator = tf.random.Generator.from_seed(seed)
    else:
        raise ValueError(f"Expected `seed` to be an integer, a tf.random.Generator or None. Received: seed={seed!r}")
    images = tf.constant(x)

    def batch_indices_of_one_epoch(_):
        order = tf.argsort(generator.uniform((count,))) if shuffle else tf.range(count)
        return tf.data.Dataset.range(steps).map(lambda step: order[step * batch_size : (step + 1) * batch_size])

    def draw(indices):
        x_batch = tf.gather(images, indices)
        if binarize:
            x_batch = tf.cast(generator.uniform(tf.shape(x_batch)) < x_batch, "float32")
        eps = generator.normal((tf.shape(indices)[0], mc_samples, latent_dim))
        return (x_batch, eps), x_batch

    # A new iterator (every epoch) draws a new order; each batch new pixels and eps.
    dataset = tf.data.Dataset.range(1).flat_map(batch_indices_of_one_epoch).map(draw)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps))
    return dataset.prefetch(tf.data.AUTOTUNE)


# [end monte-carlo-batches]


# [start fit]
def train_vae(
    x_train,
    x_test,
    num_epochs=DEFAULTS["num_epochs"],
    batch_size=DEFAULTS["batch_size"],
    mc_samples=DEFAULTS["mc_samples"],
    latent_dim=DEFAULTS["latent_dim"],
    intermediate_dim=DEFAULTS["intermediate_dim"],
    hidden_layers=DEFAULTS["hidden_layers"],
    activation=DEFAULTS["activation"],
    learning_rate=DEFAULTS["learning_rate"],
    seed=DEFAULTS["seed"],
    jit_compile=DEFAULTS["jit_compile"],
    steps_per_execution=DEFAULTS["steps_per_execution"],
    dynamic_binarization=True,
    verbose=1,
    callbacks=None,
    checkpoint=None,
):
    """Fit the VAE; return ``(vae, encoder, decoder, history)``.

    ``x_train`` and ``x_test`` are float arrays of shape (count, 784) with
    intensities in [0, 1]; ``x_test`` may be None (no test loss). Training
    pixels are binarised afresh every epoch (once, if ``dynamic_binarization``
    is False); the test set is binarised once. Every batch carries
    ``mc_samples`` draws of ``eps`` per example; the model itself takes any
    number. ``seed`` seeds the weights and, through `random_streams`, the
    batches, the noise and the binarisations, each from a stream of its own.
    ``checkpoint``: a `checkpoints.Checkpoint` (saves every epoch, resumes).
    """
    check_positive_int("num_epochs", num_epochs)
    keras.utils.set_random_seed(seed)
    streams = random_streams(seed)
    vae, encoder, decoder = build_vae(
        original_dim=x_train.shape[-1],
        intermediate_dim=intermediate_dim,
        latent_dim=latent_dim,
        hidden_layers=hidden_layers,
        activation=activation,
    )
    vae.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=BernoulliNegativeLogLikelihood(),
        jit_compile=jit_compile,
        steps_per_execution=check_positive_int("steps_per_execution", steps_per_execution),
    )
    if not dynamic_binarization:
        x_train = binarize_once(x_train, streams["train_binarization"])
    train_batches = monte_carlo_batches(
        x_train,
        batch_size,
        mc_samples,
        latent_dim,
        binarize=dynamic_binarization,
        shuffle=True,
        seed=streams["train_batches"],
    )
    test_batches = None
    if x_test is not None:
        test_batches = monte_carlo_batches(
            binarize_once(x_test, streams["test_binarization"]),
            batch_size,
            mc_samples,
            latent_dim,
            binarize=False,
            shuffle=False,
            seed=streams["test_batches"],
        )
    initial_epoch = 0
    if checkpoint is not None:  # go on from its state (restored as fit begins), and save it every epoch
        initial_epoch = checkpoint.attach(vae, {name: streams[name] for name in ("train_batches", "test_batches")})
        callbacks = [*(callbacks or []), checkpoint]
    history = vae.fit(
        train_batches,
        epochs=num_epochs,
        initial_epoch=initial_epoch,
        shuffle=False,  # the dataset reshuffles itself every epoch
        validation_data=test_batches,
        verbose=verbose,
        callbacks=callbacks,
    )
    return vae, encoder, decoder, history.history if checkpoint is None else checkpoint.history


# [end fit]


# [start evaluate]
def negative_elbo_per_example(vae, encoder, x, mc_samples=1, batch_size=1000, seed=0):
    """Monte Carlo estimate of -ELBO(x) for each row of binary ``x``, in nats.

    The expected negative log-likelihood (distortion) averages the Bernoulli
    NLL over ``mc_samples`` draws of ``eps`` per example, fed to the same
    model whatever number it was trained with; the KL term (rate) is exact.
    ``batch_size`` examples go through the model at a time (their logits
    take ``batch_size * mc_samples * dim`` floats); the draws, and so the
    result, do not depend on it. ``seed`` is anything ``np.random.default_rng``
    takes.
    """
    mc_samples = check_positive_int("mc_samples", mc_samples)
    batch_size = check_positive_int("batch_size", batch_size)
    latent_dim = vae.inputs[1].shape[-1]
    rng = np.random.default_rng(seed)
    nll = BernoulliNegativeLogLikelihood(reduction=None)
    distortion = []
    for start in range(0, len(x), batch_size):
        x_batch = x[start : start + batch_size]
        eps = rng.standard_normal((len(x_batch), mc_samples, latent_dim), dtype="float32")
        x_logits = vae.predict_on_batch([x_batch, eps])
        distortion.append(keras.ops.convert_to_numpy(keras.ops.mean(nll(x_batch, x_logits), axis=-1)))
    z_mean, z_log_var = encoder.predict(x, batch_size=batch_size, verbose=0)
    rate = keras.ops.convert_to_numpy(gaussian_kl_divergence(z_mean, z_log_var))
    return np.concatenate(distortion) + rate


# [end evaluate]


# The options that override `DEFAULTS`: name, type and what it sets.
OPTIONS = (
    ("num_epochs", int, "passes over the training set"),
    ("batch_size", int, "examples per gradient step"),
    ("mc_samples", int, "Monte Carlo samples of z per example in every batch; the model takes any number"),
    ("latent_dim", int, "dimension of z"),
    ("intermediate_dim", int, "hidden units in encoder and decoder"),
    ("learning_rate", float, "Adam step size"),
    ("seed", int, "seed for weights, data order, binarisation and eps"),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, kind, text in OPTIONS:
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=kind, default=DEFAULTS[name], help=f"{text} (default: %(default)s)")
    mnist_help = "folder with the MNIST IDX .gz files (default: $MNIST_DIR, else ../shared/data/mnist)"
    parser.add_argument("--mnist-dir", default=None, help=mnist_help)
    parser.add_argument("--output-dir", default="vae_output",
                        help="where to write vae.keras and history.json (default: %(default)s)")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_checkpoint_options(parser)  # --resume, --checkpoint-every
    return parser, parser.parse_args(argv)


def main(argv=None):
    parser, args = parse_args(argv)
    try:
        check_positive_ints(
            num_epochs=args.num_epochs,
            batch_size=args.batch_size,
            mc_samples=args.mc_samples,
            latent_dim=args.latent_dim,
            intermediate_dim=args.intermediate_dim,
        )
        if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
            raise ValueError(f"Expected `learning_rate` to be a finite number > 0. Received: {args.learning_rate}")
        output_dir = check_output_dir(args.output_dir, ["vae.keras", "history.json", "checkpoint.npz"])
        checkpoint = Checkpoint(output_dir / "checkpoint.npz", settings_of(args), args.checkpoint_every, args.resume)
        (x_train, _), (x_test, _) = load_mnist(args.mnist_dir)
        start = time.perf_counter()
        with interruptible():
            vae, _, _, history = train_vae(
                flatten_and_scale(x_train),
                flatten_and_scale(x_test),
                verbose=0 if args.quiet else 1,
                checkpoint=checkpoint,
                **{name: getattr(args, name) for name, _, _ in OPTIONS},  # the settings the options override
            )
        seconds = time.perf_counter() - start
    except (MNISTError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except Interrupted as interrupt:  # the latest epoch's checkpoint written; the earlier outputs as they were
        parser.exit(interrupt.exit_code, f"{parser.prog}: {checkpoint.on_interrupt(interrupt)}\n")
    history = save_run(output_dir, vae, history)  # both files whole, or the earlier ones untouched
    checkpoint.remove()  # the run is complete
    print(
        f"train negative ELBO {history['loss'][-1]:.2f} nats, "
        f"test negative ELBO {history['val_loss'][-1]:.2f} nats, "
        f"{seconds / max(1, args.num_epochs - checkpoint.first_epoch):.1f} s per epoch; saved to {output_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

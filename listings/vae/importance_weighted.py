"""Train the VAE on the ELBO or on the importance-weighted bound (IWAE).

The model is the composed skeleton (`compose.compose_vae`) with a diagonal
Gaussian posterior, the Monte Carlo divergence (``log p(z) - log q(z|x)``
evaluated at every sample) and a Bernoulli likelihood; one argument,
``objective``, picks the reduction of the per-sample log weights
(`objectives.bound_from_log_weights`): their mean, the ELBO, or their
log-mean-exp, the bound of Burda, Grosse & Salakhutdinov (2015). The number
``k`` of samples per image is a property of the batches, not of the model.

The defaults are the IWAE paper's MNIST model (784-200-200-50, tanh,
Bernoulli likelihood) and training settings (Adam with epsilon 1e-4,
batches of 20, the learning rate schedule 0.001 * 10**(-i/7) for 3**i epochs,
i = 0, 1, ...). ``--stages 8`` runs the paper's full 3,280 epochs.

Run ``python importance_weighted.py --objective iwae -k 5 --stages 3`` to
train for 1 + 3 + 9 = 13 epochs and save ``vae.keras`` and ``history.json``;
with ``KERAS_BACKEND=jax``, ``--data-parallel 2`` splits every batch over two
devices and ``--processes 2`` over two processes (`distributed`).
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import distributed  # noqa: E402
from checkpoints import Checkpoint  # noqa: E402
from compose import compose_vae  # noqa: E402
from mnist_data import MNISTError, flatten_and_scale, load_mnist  # noqa: E402
from objectives import OBJECTIVES, check_objective  # noqa: E402
from outputs import Interrupted, add_checkpoint_options, check_output_dir, interruptible, save_run  # noqa: E402
from training import fit_vae  # noqa: E402
from variational_autoencoder import check_positive_int, check_positive_ints  # noqa: E402

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


# [start iwae-vae]
def iwae_vae(
    data_dim=784,
    objective=IWAE_DEFAULTS["objective"],
    latent_dim=IWAE_DEFAULTS["latent_dim"],
    intermediate_dim=IWAE_DEFAULTS["intermediate_dim"],
    hidden_layers=IWAE_DEFAULTS["hidden_layers"],
    activation=IWAE_DEFAULTS["activation"],
):
    """The IWAE paper's one-stochastic-layer model, trained on the ``objective`` bound.

    Outputs ``[x_logits, log_ratio]``: Bernoulli logits (batch, k, data_dim)
    and ``log p(z) - log q(z|x)`` (batch, k), whose sum is the log weight.
    """
    return compose_vae(
        data_dim,
        latent_dim,
        posterior="gaussian",
        divergence="monte_carlo",
        likelihood="bernoulli",
        objective=check_objective(objective),
        hidden_units=intermediate_dim,
        hidden_layers=hidden_layers,
        activation=activation,
    )


# [end iwae-vae]


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


# [start train-iwae]
def train_iwae(x_train, x_test=None, verbose=1, callbacks=None, checkpoint=None, **settings):
    """Fit an `iwae_vae` on MNIST grey levels with the paper's schedule; ``(vae, history)``.

    ``settings`` override `IWAE_DEFAULTS`. Training pixels are binarised
    afresh every time they are seen (``binarize=True``); the test set, if
    given, once, and its negative bound with the same ``k`` is recorded
    every epoch as ``val_loss``. ``checkpoint``: see `training.fit_vae`.
    """
    unknown = set(settings) - set(IWAE_DEFAULTS)
    if unknown:
        raise ValueError(f"Unknown settings {sorted(unknown)}; expected some of {sorted(IWAE_DEFAULTS)}")
    s = {**IWAE_DEFAULTS, **settings}
    k, batch_size = check_positive_int("k", s["k"]), check_positive_int("batch_size", s["batch_size"])
    keras.utils.set_random_seed(s["seed"])
    vae = iwae_vae(x_train.shape[-1], s["objective"], s["latent_dim"], s["intermediate_dim"], s["hidden_layers"],
                   s["activation"])  # fmt: skip
    num_epochs, learning_rate = paper_schedule(s["stages"], -(-len(x_train) // batch_size), s["learning_rate"])
    if x_test is not None:  # one fixed binarisation, from a stream of its own
        rng = np.random.default_rng(np.random.SeedSequence(s["seed"], spawn_key=(1,)))
        x_test = distributed.process_rows((rng.random(x_test.shape, dtype="float32") < x_test).astype("float32"))
    x_train, batch_size, seed = distributed.shard_of(x_train, batch_size, s["seed"])  # in a group: its part
    history = fit_vae(
        vae, x_train, "bernoulli", s["objective"], epochs=num_epochs, batch_size=batch_size, mc_samples=k,
        binarize=True, seed=seed, verbose=verbose, callbacks=callbacks, validation_x=x_test, checkpoint=checkpoint,
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate, epsilon=s["adam_epsilon"]),
    )  # fmt: skip
    return vae, history


# [end train-iwae]


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
    add_checkpoint_options(parser)  # --resume, --checkpoint-every
    distributed.add_data_parallel_options(parser)  # --data-parallel DEVICES, --processes P
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
    devices, processes = args.data_parallel, args.processes
    # A checkpoint holds one process's data streams: a run resumes with as many processes.
    run_settings = {**settings, "processes": processes} if processes > 1 else settings
    try:
        check_positive_ints(k=settings["k"], stages=settings["stages"], batch_size=settings["batch_size"])
        distributed.check_data_parallel(devices, processes, settings["batch_size"])  # before any data is read
        index = distributed.process_shard()[0]  # 0 alone and in the command that launches a group
        name = "checkpoint.npz" if index == 0 else f"checkpoint.process-{index}.npz"
        output_dir = check_output_dir(args.output_dir, ["vae.keras", "history.json", name])
        checkpoint = Checkpoint(output_dir / name, run_settings, args.checkpoint_every, args.resume)
        (x_train, _), (x_test, _) = load_mnist(args.mnist_dir)
        x_train, x_test = flatten_and_scale(x_train), flatten_and_scale(x_test)
        distributed.check_data_parallel(devices, processes, settings["batch_size"], [len(x_train), len(x_test)])
        if distributed.is_launcher(processes):  # start the group: every process runs this command
            return distributed.launch_script(__file__, argv, processes)
        if devices * processes > 1:
            distributed.start_data_parallel(devices)
        start = time.perf_counter()
        with interruptible():
            vae, history = train_iwae(x_train, x_test, verbose=0 if args.quiet or index > 0 else 1,
                                      checkpoint=checkpoint, **settings)  # fmt: skip
        seconds = time.perf_counter() - start
    except (MNISTError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except Interrupted as interrupt:  # the latest epoch's checkpoint written; the earlier outputs as they were
        parser.exit(interrupt.exit_code, f"{parser.prog}: {checkpoint.on_interrupt(interrupt)}\n")
    with tempfile.TemporaryDirectory() as scratch:  # saving is a step of the group: all save, process 0 keeps
        history = save_run(output_dir if index == 0 else scratch, vae, history)  # both files whole, or neither
    checkpoint.remove()  # the run is complete
    print(
        f"train negative {args.objective} (k = {args.k}) {history['loss'][-1]:.2f} nats, "
        f"test {history['val_loss'][-1]:.2f} nats, "
        f"{seconds / max(1, len(history['loss']) - checkpoint.first_epoch):.1f} s per epoch; "
        + (f"saved to {output_dir}" if index == 0 else "process 0 saves")
        + (f"; weights sha256 {distributed.weights_digest(vae)}" if devices * processes > 1 else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Adversarial Variational Bayes: an implicit posterior, and a discriminator in place of the KL.

Two parts of the composed VAE (`compose.py`) make AVB (Mescheder, Nowozin &
Geiger 2017, arXiv:1701.04722):

* ``divergence="adversarial"``: ``log q(z|x) - log p(z)`` is estimated by a
  discriminator ``T(x, z)`` trained in the same step to tell ``z ~ q(z|x)``
  from ``z ~ p(z)`` (`kl_divergence.AdversarialKL`); the model takes a third
  noise input, ``z_prior``, the draws from ``p(z)`` that ``T`` contrasts
  with. ``"adaptive_contrast"`` contrasts ``q`` with a Gaussian fitted to its
  samples instead (at least two samples of ``z`` per image);
* ``posterior="implicit"``: the encoder takes the noise ``eps`` as an input of
  its network, ``z = f(x, eps)`` (`build_implicit_encoder`), so ``q(z|x)``
  can take any shape but has no density, and only ``T`` can measure its KL.

Run ``python avb.py --divergence adversarial --posterior implicit`` to train
on MNIST, print the test negative ELBO and save the model.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from checkpoints import Checkpoint  # noqa: E402
from discriminator import BroadcastToSamples  # noqa: E402
from outputs import add_checkpoint_options  # noqa: E402
from variational_autoencoder import check_positive_int, check_positive_ints, hidden_name  # noqa: E402


# [start implicit-encoder]
def build_implicit_encoder(data_dim=784, hidden_units=256, latent_dim=2, hidden_layers=1, activation="relu"):
    """Implicit inference network: ``[x, eps]`` to ``z = f(x, eps)``, shape (batch, samples, latent_dim).

    The noise enters the network next to the image, so every sample of
    ``eps`` goes through the nonlinear layers: ``q(z|x)`` can be skewed,
    multimodal or confined to a curve, and has no formula.
    """
    x = keras.Input(shape=(data_dim,), name="x")
    eps = keras.Input(shape=(None, latent_dim), name="eps")
    h = layers.Concatenate(name="x_eps")([BroadcastToSamples(name="x_per_sample")([x, eps]), eps])
    for i in range(hidden_layers):
        h = layers.Dense(hidden_units, activation=activation, name=hidden_name("encoder_hidden", i))(h)
    z = layers.Dense(latent_dim, name="z")(h)
    return keras.Model([x, eps], z, name="encoder")


# [end implicit-encoder]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--divergence", default="adversarial", help="the KL part (default: %(default)s)")
    parser.add_argument("--posterior", default="implicit", help="gaussian or implicit (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=30, help="(default: %(default)s)")
    parser.add_argument("--latent-dim", type=int, default=8, help="(default: %(default)s)")
    parser.add_argument("--mc-samples", type=int, default=1, help="samples of z per image, S (default: 1)")
    parser.add_argument("--num-train", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument("--output-dir", default="avb_output", help="where to write (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_checkpoint_options(parser)  # --resume, --checkpoint-every
    args = parser.parse_args(argv)

    from compose import check_parts, compose_vae
    from mnist_data import MNISTError, flatten_and_scale, load_mnist
    from outputs import Interrupted, check_output_dir, interruptible, save_run, settings_of
    from training import elbo_terms, fit_vae

    try:
        check_parts(args.posterior, args.divergence, "bernoulli", "elbo")
        check_positive_ints(epochs=args.epochs, latent_dim=args.latent_dim, mc_samples=args.mc_samples)
        if args.num_train is not None:
            check_positive_int("num_train", args.num_train)
        if args.divergence == "adaptive_contrast" and args.mc_samples < 2:
            raise ValueError(f"adaptive_contrast needs --mc-samples >= 2. Received: {args.mc_samples}")
        output_dir = check_output_dir(args.output_dir, ["vae.keras", "history.json", "checkpoint.npz"])
        checkpoint = Checkpoint(output_dir / "checkpoint.npz", settings_of(args), args.checkpoint_every, args.resume)
        (x_train, _), (x_test, _) = load_mnist()
    except (ValueError, MNISTError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    x_train, x_test = flatten_and_scale(x_train[: args.num_train]), flatten_and_scale(x_test)
    keras.utils.set_random_seed(args.seed)
    vae = compose_vae(784, args.latent_dim, args.posterior, args.divergence, hidden_units=256, hidden_layers=2,
                      discriminator_units=256)  # fmt: skip
    try:
        with interruptible():
            history = fit_vae(vae, x_train, epochs=args.epochs, mc_samples=args.mc_samples, binarize=True,
                              seed=args.seed, verbose=0 if args.quiet else 1, checkpoint=checkpoint)  # fmt: skip
    except Interrupted as interrupt:  # the latest epoch's checkpoint written; the earlier outputs as they were
        parser.exit(interrupt.exit_code, f"{parser.prog}: {checkpoint.on_interrupt(interrupt)}\n")
    x_binary = (np.random.default_rng(args.seed + 1).random(x_test.shape) < x_test).astype("float32")
    terms = elbo_terms(vae, x_binary, mc_samples=args.mc_samples, seed=args.seed)
    for name, values in terms.items():
        print(f"test {name}: {values.mean():.2f} nats")
    rate = "rate_exact" if "rate_exact" in terms else "rate"
    print(f"test negative ELBO (with {rate}): {(terms['distortion'] + terms[rate]).mean():.2f} nats")
    history = save_run(output_dir, vae, history)  # both files whole, or the earlier ones untouched
    checkpoint.remove()  # the run is complete
    print(f"wrote {output_dir / 'vae.keras'} and {output_dir / 'history.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

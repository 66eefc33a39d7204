"""One VAE builder for every KL estimator, and Adversarial Variational Bayes.

`build_kl_vae(estimator, posterior)` builds the main post's model with the KL
layer of your choice from `kl_divergence.py`; nothing else in the model
changes:

* ``estimator="closed_form"`` or ``"monte_carlo"``: a diagonal Gaussian
  ``q(z|x)``, whose density the KL layer evaluates;
* ``estimator="adversarial"``: the KL is the mean of a discriminator
  ``T(x, z)`` trained in the same step (Mescheder, Nowozin & Geiger 2017,
  arXiv:1701.04722); the model takes a third noise input, ``z_prior``, the
  draws from ``p(z)`` the discriminator compares against;
* ``estimator="adaptive_contrast"``: the same, with ``T`` comparing ``q``
  against a Gaussian fitted to its samples instead of the prior (needs
  ``mc_samples >= 2``);
* ``posterior="implicit"`` (adversarial estimators only): the encoder takes the noise
  ``eps`` as an input of its network, ``z = f(x, eps)``, so ``q(z|x)`` can
  take any shape but has no density, and only ``T`` can measure its KL.

Run ``python avb.py --estimator adversarial --posterior implicit`` to train on
MNIST, print the test negative ELBO and save the model.
"""

import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

from kl_divergence import (  # noqa: E402
    ADVERSARIAL_ESTIMATORS,
    ESTIMATORS,
    AdaptiveContrastKL,
    BroadcastToSamples,
    build_discriminator,
    check_contrast_samples,
    make_kl_layer,
)
from train import binarize_once, check_intensities, monte_carlo_batches  # noqa: E402
from variational_autoencoder import (  # noqa: E402
    BernoulliNegativeLogLikelihood,
    build_decoder,
    build_encoder,
    check_positive_int,
    check_positive_ints,
    gaussian_kl_divergence,
    hidden_name,
    reparameterize,
)

POSTERIORS = ("gaussian", "implicit")

# [start settings]
AVB_DEFAULTS = {
    "estimator": "closed_form",
    "posterior": "gaussian",
    "num_epochs": 30,
    "batch_size": 100,
    "mc_samples": 1,
    "latent_dim": 8,
    "intermediate_dim": 256,
    "hidden_layers": 2,
    "activation": "relu",
    "discriminator_units": 256,
    "discriminator_layers": 2,
    "learning_rate": 1e-3,
    "seed": 0,
}
# [end settings]


def check_estimator(estimator, posterior):
    """A clear error for an unknown estimator or posterior, or an implicit posterior without ``T``."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"Expected an estimator in {ESTIMATORS}. Received: {estimator!r}")
    if posterior not in POSTERIORS:
        raise ValueError(f"Expected a posterior in {POSTERIORS}. Received: {posterior!r}")
    if posterior == "implicit" and estimator not in ADVERSARIAL_ESTIMATORS:
        raise ValueError(
            f"An implicit posterior has no density, so only the adversarial estimators {ADVERSARIAL_ESTIMATORS} "
            f"can measure its KL. Received: estimator={estimator!r}"
        )


# [start implicit-encoder]
def build_implicit_encoder(original_dim=784, intermediate_dim=256, latent_dim=2, hidden_layers=1, activation="relu"):
    """Implicit inference network: ``[x, eps]`` to ``z = f(x, eps)``, shape (batch, samples, latent_dim).

    The noise enters the network next to the image, so every sample of
    ``eps`` goes through the nonlinear layers: ``q(z|x)`` can be skewed,
    multimodal or confined to a curve, and has no formula.
    """
    x = keras.Input(shape=(original_dim,), name="x")
    eps = keras.Input(shape=(None, latent_dim), name="eps")
    h = layers.Concatenate(name="x_eps")([BroadcastToSamples(name="x_per_sample")([x, eps]), eps])
    for i in range(hidden_layers):
        h = layers.Dense(intermediate_dim, activation=activation, name=hidden_name("encoder_hidden", i))(h)
    z = layers.Dense(latent_dim, name="z")(h)
    return keras.Model([x, eps], z, name="encoder")


# [end implicit-encoder]


# [start build-kl-vae]
def build_kl_vae(
    estimator="closed_form",
    posterior="gaussian",
    original_dim=784,
    intermediate_dim=256,
    latent_dim=2,
    mc_samples=1,
    hidden_layers=1,
    activation="relu",
    discriminator_units=256,
    discriminator_layers=2,
):
    """The main post's VAE with the KL layer ``estimator``; returns ``(vae, encoder, decoder)``.

    Inputs ``[x, eps]``, plus ``z_prior`` (standard normal, the shape of
    ``eps``) for the adversarial estimators; output Bernoulli logits of shape
    (batch, mc_samples, original_dim).
    """
    check_estimator(estimator, posterior)
    check_positive_ints(
        original_dim=original_dim,
        intermediate_dim=intermediate_dim,
        latent_dim=latent_dim,
        mc_samples=mc_samples,
        hidden_layers=hidden_layers,
    )
    x = keras.Input(shape=(original_dim,), name="x")
    eps = keras.Input(shape=(mc_samples, latent_dim), name="eps")
    inputs = [x, eps]
    if posterior == "gaussian":
        encoder = build_encoder(original_dim, intermediate_dim, latent_dim, hidden_layers, activation)
        z_mean, z_log_var = encoder(x)
        z = reparameterize(z_mean, z_log_var, eps)
        kl_inputs = {"x": x, "z": z, "z_mean": z_mean, "z_log_var": z_log_var}
    else:
        encoder = build_implicit_encoder(original_dim, intermediate_dim, latent_dim, hidden_layers, activation)
        z = encoder([x, eps])
        kl_inputs = {"x": x, "z": z}

    decoder = build_decoder(original_dim, intermediate_dim, latent_dim, hidden_layers, activation)
    discriminator = None
    if estimator in ADVERSARIAL_ESTIMATORS:
        discriminator = build_discriminator(original_dim, latent_dim, discriminator_units, discriminator_layers)
        kl_inputs["z_prior"] = keras.Input(shape=(mc_samples, latent_dim), name="z_prior")
        inputs.append(kl_inputs["z_prior"])
    z = make_kl_layer(estimator, discriminator, name="kl_divergence")(kl_inputs)["z"]
    x_logits = decoder(z)
    vae = keras.Model(inputs=inputs, outputs=x_logits, name=f"vae_{estimator}_{posterior}")
    return vae, encoder, decoder


# [end build-kl-vae]


# [start batches]
def kl_vae_batches(x, batch_size, mc_samples, latent_dim, adversarial, binarize=True, shuffle=True, seed=None):
    """`monte_carlo_batches`, plus fresh prior draws ``z_prior`` for an adversarial model."""
    import tensorflow as tf  # only for tf.data, which can feed every Keras backend

    batches = monte_carlo_batches(x, batch_size, mc_samples, latent_dim, binarize, shuffle, seed)
    if not adversarial:
        return batches
    if seed is None:
        generator = tf.random.Generator.from_non_deterministic_state()
    else:  # a stream of its own, apart from the one that draws the order, the pixels and eps
        generator = tf.random.Generator.from_seed(seed).split(1)[0]

    def add_prior_draws(inputs, targets):
        x_batch, eps = inputs
        return (x_batch, eps, generator.normal(tf.shape(eps))), targets

    return batches.map(add_prior_draws).prefetch(tf.data.AUTOTUNE)


# [end batches]


# [start train-kl-vae]
def train_kl_vae(x_train, x_test=None, verbose=1, callbacks=None, **settings):
    """Fit `build_kl_vae` with ``settings`` (see `AVB_DEFAULTS`); return ``(vae, encoder, decoder, history)``.

    One optimiser step updates the encoder, the decoder and, for the
    adversarial estimators, the discriminator: the KL layer routes each loss's
    gradient to its own weights. The reported loss is the negative ELBO (for
    the adversarial estimators, with ``T``'s estimate of the KL) plus, for
    them, the discriminator's logistic loss.
    """
    unknown = set(settings) - set(AVB_DEFAULTS)
    if unknown:
        raise ValueError(f"Unknown settings {sorted(unknown)}. Expected some of {sorted(AVB_DEFAULTS)}")
    s = {**AVB_DEFAULTS, **settings}
    check_positive_int("num_epochs", s["num_epochs"])
    keras.utils.set_random_seed(s["seed"])
    vae, encoder, decoder = build_kl_vae(
        s["estimator"],
        s["posterior"],
        original_dim=x_train.shape[-1],
        intermediate_dim=s["intermediate_dim"],
        latent_dim=s["latent_dim"],
        mc_samples=s["mc_samples"],
        hidden_layers=s["hidden_layers"],
        activation=s["activation"],
        discriminator_units=s["discriminator_units"],
        discriminator_layers=s["discriminator_layers"],
    )
    vae.compile(
        optimizer=keras.optimizers.Adam(s["learning_rate"]),
        loss=BernoulliNegativeLogLikelihood(),
        jit_compile=True,
        steps_per_execution=50,
    )
    adversarial = s["estimator"] in ADVERSARIAL_ESTIMATORS
    batches = kl_vae_batches(
        x_train, s["batch_size"], s["mc_samples"], s["latent_dim"], adversarial, binarize=True, seed=s["seed"]
    )
    test_batches = None
    if x_test is not None:
        test_batches = kl_vae_batches(
            binarize_once(x_test, s["seed"] + 1), s["batch_size"], s["mc_samples"], s["latent_dim"], adversarial,
            binarize=False, shuffle=False, seed=s["seed"] + 2,
        )  # fmt: skip
    history = vae.fit(
        batches, epochs=s["num_epochs"], shuffle=False, validation_data=test_batches, verbose=verbose,
        callbacks=callbacks,
    )  # fmt: skip
    return vae, encoder, decoder, history.history


# [end train-kl-vae]


# [start evaluate]
def kl_vae_parts(vae):
    """``(encoder, kl_layer, decoder)`` of a `build_kl_vae` model, with a clear error for any other model."""
    names = {layer.name for layer in vae.layers}
    if not {"encoder", "kl_divergence", "decoder"} <= names:
        raise ValueError(
            "Expected a model built by `build_kl_vae` (layers 'encoder', 'kl_divergence', 'decoder'). "
            f"Received a model with layers {sorted(names)}"
        )
    return vae.get_layer("encoder"), vae.get_layer("kl_divergence"), vae.get_layer("decoder")


def evaluate_kl_vae(vae, x, mc_samples=None, batch_size=500, seed=0):
    """Per-example terms of the negative ELBO on binary ``x``, in nats, as a dict of arrays.

    ``distortion``: the Bernoulli NLL averaged over ``mc_samples`` draws of
    ``z`` (default: as many as the model was built with); ``kl_exact``: the closed-form KL (Gaussian posteriors only);
    ``kl_adversarial``: the discriminator's estimate (adversarial models
    only; with adaptive contrast, ``r``'s moments come from the
    ``mc_samples`` draws).
    """
    encoder, kl_layer, decoder = kl_vae_parts(vae)
    x = check_intensities(x)
    mc_samples = check_positive_int("mc_samples", mc_samples or vae.inputs[1].shape[1])
    if isinstance(kl_layer, AdaptiveContrastKL):
        check_contrast_samples(mc_samples)
    latent_dim = decoder.inputs[0].shape[-1]
    rng = np.random.default_rng(seed)
    nll = BernoulliNegativeLogLikelihood(reduction=None)
    terms = {"distortion": []}
    for start in range(0, len(x), batch_size):
        x_batch = ops.convert_to_tensor(x[start : start + batch_size])
        eps = ops.convert_to_tensor(rng.standard_normal((x_batch.shape[0], mc_samples, latent_dim), dtype="float32"))
        z, gaussian = posterior_sample(encoder, x_batch, eps)
        if gaussian is not None:
            terms.setdefault("kl_exact", []).append(ops.convert_to_numpy(gaussian_kl_divergence(*gaussian)))
        terms["distortion"].append(ops.convert_to_numpy(ops.mean(nll(x_batch, decoder(z, training=False)), -1)))
        if hasattr(kl_layer, "discriminator"):
            t = kl_layer.kl_terms({"x": x_batch, "z": z})
            terms.setdefault("kl_adversarial", []).append(ops.convert_to_numpy(ops.mean(t, -1)))
    return {name: np.concatenate(values).astype("float64") for name, values in terms.items()}


def posterior_sample(encoder, x, eps):
    """``z ~ q(z|x)`` from the noise ``eps`` (batch, samples, latent_dim), for either kind of encoder.

    Returns ``(z, (z_mean, z_log_var))`` for a Gaussian encoder and ``(z, None)``
    for an implicit one, which maps ``(x, eps)`` to ``z`` directly.
    """
    if len(encoder.inputs) == 2:  # implicit: z = f(x, eps)
        return encoder([x, eps], training=False), None
    z_mean, z_log_var = encoder(x, training=False)
    return sample_gaussian(z_mean, z_log_var, eps), (z_mean, z_log_var)


def sample_gaussian(z_mean, z_log_var, eps):
    """``z_mean + exp(z_log_var / 2) * eps`` for tensors, broadcast over the samples axis of ``eps``."""
    return ops.expand_dims(z_mean, -2) + ops.exp(0.5 * ops.expand_dims(z_log_var, -2)) * eps


# [end evaluate]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--estimator", default=AVB_DEFAULTS["estimator"], help=f"the KL layer, one of {ESTIMATORS}")
    parser.add_argument("--posterior", default=AVB_DEFAULTS["posterior"], help=f"the encoder, one of {POSTERIORS}")
    parser.add_argument("--num-epochs", type=int, default=AVB_DEFAULTS["num_epochs"], help="(default: %(default)s)")
    parser.add_argument("--latent-dim", type=int, default=AVB_DEFAULTS["latent_dim"], help="(default: %(default)s)")
    parser.add_argument("--mc-samples", type=int, default=AVB_DEFAULTS["mc_samples"], help="(default: %(default)s)")
    parser.add_argument("--num-train", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--seed", type=int, default=AVB_DEFAULTS["seed"], help="(default: %(default)s)")
    parser.add_argument("--output-dir", default="avb_output", help="where to write (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from mnist_data import MNISTError, flatten_and_scale, load_mnist

    try:
        check_estimator(args.estimator, args.posterior)
        check_positive_ints(num_epochs=args.num_epochs, latent_dim=args.latent_dim, mc_samples=args.mc_samples)
        if args.num_train is not None:
            check_positive_int("num_train", args.num_train)
        if args.estimator == "adaptive_contrast" and args.mc_samples < 2:
            raise ValueError(f"adaptive_contrast needs --mc-samples >= 2. Received: {args.mc_samples}")
        (x_train, _), (x_test, _) = load_mnist()
    except (ValueError, MNISTError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    x_train, x_test = flatten_and_scale(x_train[: args.num_train]), flatten_and_scale(x_test)
    vae, _, _, history = train_kl_vae(
        x_train, verbose=0 if args.quiet else 1, estimator=args.estimator, posterior=args.posterior,
        num_epochs=args.num_epochs, latent_dim=args.latent_dim, mc_samples=args.mc_samples, seed=args.seed,
    )  # fmt: skip
    terms = evaluate_kl_vae(vae, binarize_once(x_test, args.seed + 1), seed=args.seed)
    for name, values in terms.items():
        print(f"test {name}: {values.mean():.2f} nats")
    kl_name = "kl_exact" if "kl_exact" in terms else "kl_adversarial"
    print(f"test negative ELBO (rate: {kl_name}): {(terms['distortion'] + terms[kl_name]).mean():.2f} nats")
    output_dir = pathlib.Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    vae.save(output_dir / "vae.keras")
    history = {key: [float(v) for v in values] for key, values in history.items()}
    (output_dir / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    print(f"wrote {output_dir / 'vae.keras'} and {output_dir / 'history.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

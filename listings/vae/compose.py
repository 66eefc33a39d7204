"""One VAE, composed from parts: swap one part and keep the others.

A model is an encoder and a decoder network and four choices:

* the posterior ``q(z|x)``: ``"gaussian"`` (diagonal, reparameterised as in
  the first post), ``"planar"`` or ``"iaf"`` (that Gaussian followed by a
  flow of ``num_flows`` steps), ``"implicit"`` (the noise goes through the
  encoder network with the image, so ``q`` has no density), or ``"global"``
  (one diagonal Gaussian ``q(z)`` shared by every example: the posterior
  over the weights of a Bayesian model);
* the divergence, ``log p(z) - log q(z|x)`` at every sample of ``z``:
  ``"closed_form"`` (minus the Gaussian KL, the same for every sample),
  ``"monte_carlo"`` (both log-densities evaluated at the sample), or the
  estimate of a discriminator ``T(x, z)`` trained in the same step:
  ``"adversarial"`` or ``"adaptive_contrast"`` (Mescheder, Nowozin & Geiger
  2017);
* the likelihood ``p(x|z)``: ``"bernoulli"``, ``"continuous_bernoulli"``,
  ``"gaussian"`` (one learned scale per dimension, or one per output with
  ``heteroscedastic=True``) or ``"categorical"`` (one label per example),
  read from a decoder network of ``z``; or, with ``decoder="linear"``, the
  likelihood of a target ``y`` given ``x``, of a linear model whose weights
  are ``z`` (Bayesian linear or softmax regression);
* the objective, a reduction over the samples of the per-sample log weight
  ``log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x)``: the ELBO is its
  mean, the IWAE bound (Burda, Grosse & Salakhutdinov 2015) its log-mean-exp;
  and the estimator of its gradient for the encoder (`gradients`):
  ``"total"`` (as automatic differentiation gives it), ``"stl"`` for the
  ELBO or ``"dreg"`` for the IWAE bound, which drop a term whose mean is
  zero.

The networks are dense by default; ``encoder="conv"`` and ``decoder="conv"``
swap in strided convolutions over ``x`` read as an image (`convolutional`).
In training, the ELBO's log density ratio can be weighted by ``kl_weight``
(beta) or warmed up over ``kl_warmup_steps`` (`objectives.KLWeight`).

The number of samples ``S`` is data: the noise ``eps`` is an input of shape
(batch, S, latent_dim) with ``S`` left free, so one model trains with S = 1
and is scored with S = 5000 without being rebuilt. Combinations without a
meaning are refused when the model is built (`check_parts`).

Run ``python compose.py --posterior iaf --likelihood continuous_bernoulli
--objective iwae`` to print the summary of one such model (``--encoder conv
--decoder conv`` for convolutional networks).
"""

import argparse
import sys

import keras
from keras import layers

from avb import build_implicit_encoder
from convolutional import IMAGE_SHAPE, NETWORKS, build_conv_decoder, build_conv_encoder, check_networks
from discriminator import build_discriminator
from flows import FLOWS, FlowKL, build_flow
from gradients import GRADIENTS, DoublyReparameterizedPath, check_gradient
from kl_divergence import (
    ADVERSARIAL_ESTIMATORS,
    ESTIMATORS,
    AdaptiveContrastKL,
    AdversarialKL,
    ClosedFormKL,
    MonteCarloKL,
)
from likelihoods import LIKELIHOODS
from objectives import (
    OBJECTIVES,
    BoundModel,
    KLWeight,
    NegativeObjective,  # noqa: F401  (the loss to compile a composed VAE with)
    PerSampleLogRatio,
    check_kl_weight,
)
from skeleton import GlobalPosterior, build_decoder, build_linear_decoder, check_sizes
from variational_autoencoder import build_encoder, check_positive_ints, reparameterize

POSTERIORS = ("gaussian", *FLOWS, "implicit", "global")
DIVERGENCES = ESTIMATORS


# [start check-parts]
def check_parts(posterior, divergence, likelihood, objective):
    """A ValueError naming the part and the reason for a choice the skeleton cannot build."""
    for part, value, choices in (
        ("posterior", posterior, POSTERIORS),
        ("divergence", divergence, DIVERGENCES),
        ("likelihood", likelihood, LIKELIHOODS),
        ("objective", objective, OBJECTIVES),
    ):
        if value not in choices:
            raise ValueError(f"Expected `{part}` to be one of {choices}. Received: {part}={value!r}")
    if divergence == "closed_form" and posterior not in ("gaussian", "global"):
        raise ValueError(
            f"divergence='closed_form' needs a Gaussian posterior: the KL of a {posterior} posterior from the "
            "prior has no closed form. Use divergence='monte_carlo' or an adversarial one."
        )
    if posterior == "implicit" and divergence not in ADVERSARIAL_ESTIMATORS:
        raise ValueError(
            "posterior='implicit' has no density, so only a discriminator can estimate its log density ratio: "
            f"divergence in {ADVERSARIAL_ESTIMATORS}. Received: divergence={divergence!r}"
        )
    if objective == "iwae" and divergence != "monte_carlo":
        raise ValueError(
            "objective='iwae' weights every sample by p(x, z) / q(z|x), so it needs log p(z) - log q(z|x) "
            "exactly at each sample: divergence='monte_carlo'. The closed form gives only its mean over q, "
            f"and a discriminator only estimates it. Received: divergence={divergence!r}"
        )
    if objective == "iwae" and posterior == "global":
        raise ValueError(
            "posterior='global' shares one z among all the training examples, so the IWAE bound of the data "
            "set does not split into one bound per example as the ELBO does: objective='elbo'."
        )


# [end check-parts]


# [start divergence]
def divergence_estimator(divergence, posterior, data_dim, latent_dim, discriminator_units=64, discriminator_layers=2,
                         path_derivative=False):  # fmt: skip
    """The layer that estimates ``KL[q(z|x) || p(z)]`` at each sample of ``z``, for a `divergence` choice.

    The closed form of a diagonal Gaussian; ``log q(z|x) - log p(z)`` at the
    sample (through the flow's change of variables for a flow posterior),
    with ``q``'s parameters held fixed for a ``path_derivative``; or a
    discriminator ``T(x, z)`` of its own, for the adversarial ones.
    """
    if divergence in ADVERSARIAL_ESTIMATORS:
        discriminator = build_discriminator(data_dim, latent_dim, discriminator_units, discriminator_layers)
        return {"adversarial": AdversarialKL, "adaptive_contrast": AdaptiveContrastKL}[divergence](discriminator)
    if divergence == "closed_form":
        return ClosedFormKL()
    return FlowKL() if posterior in FLOWS else MonteCarloKL(path_derivative=path_derivative)


# [end divergence]


# [start posterior]
def sample_posterior(posterior, x, eps, hidden_units, hidden_layers, activation, num_flows=2, flow_hidden_units=64,
                     network="mlp", image_shape=IMAGE_SHAPE):  # fmt: skip
    """``z ~ q(z|x)`` from the noise ``eps``, with the tensors its density needs, for a `posterior` choice.

    Returns a dict with ``z`` (batch, samples, latent_dim); for a Gaussian
    also ``z_mean`` and ``z_log_var``; for a flow also ``z_0``, the Gaussian
    draw the flow starts from, and ``log_det``, the flow's log-determinant
    per sample. The encoder ``network`` is dense (``"mlp"``) or
    convolutional (``"conv"``, reading ``x`` as an image of
    ``image_shape``); a flow reads its last hidden layer as context.
    """
    data_dim, latent_dim = x.shape[-1], eps.shape[-1]
    if posterior == "global":  # one q(z) for every example: the same z_mean row for each
        z_mean, z_log_var = GlobalPosterior(latent_dim, name="posterior")(x)
        return {"z": reparameterize(z_mean, z_log_var, eps), "z_mean": z_mean, "z_log_var": z_log_var}
    if posterior == "implicit":
        return {"z": build_implicit_encoder(data_dim, hidden_units, latent_dim, hidden_layers, activation)([x, eps])}
    if network == "conv":
        encoder = build_conv_encoder(latent_dim, image_shape, hidden_units=hidden_units)
    else:
        encoder = build_encoder(data_dim, hidden_units, latent_dim, hidden_layers, activation)
    if posterior not in FLOWS:
        z_mean, z_log_var = encoder(x)
        return {"z": reparameterize(z_mean, z_log_var, eps), "z_mean": z_mean, "z_log_var": z_log_var}
    context = [layer for layer in encoder.layers if layer.name.startswith("encoder_hidden")][-1].output
    encoder = keras.Model(encoder.inputs[0], [*encoder.outputs, context], name="encoder")
    z_mean, z_log_var, context = encoder(x)
    z_0 = reparameterize(z_mean, z_log_var, eps)
    z, log_det = build_flow(posterior, num_flows, latent_dim, hidden_units, flow_hidden_units)([z_0, context])
    return {"z": z, "z_0": z_0, "log_det": log_det, "z_mean": z_mean, "z_log_var": z_log_var}


# [end posterior]


# [start compose]
def compose_vae(
    data_dim,
    latent_dim=2,
    posterior="gaussian",
    divergence="closed_form",
    likelihood="bernoulli",
    objective="elbo",
    hidden_units=256,
    hidden_layers=1,
    activation="relu",
    num_flows=2,
    flow_hidden_units=64,
    heteroscedastic=False,
    num_classes=None,
    discriminator_units=64,
    discriminator_layers=2,
    decoder="mlp",
    target_dim=None,
    num_examples=None,
    encoder="mlp",
    image_shape=IMAGE_SHAPE,
    kl_weight=1.0,
    kl_warmup_steps=0,
    gradient="total",
):
    """The VAE with the parts named; compile it with ``loss=NegativeObjective(objective, likelihood)``.

    Inputs ``[x, eps]`` (``x`` (batch, data_dim); ``eps`` standard normal,
    (batch, S, latent_dim), any ``S``), plus ``z_prior`` (draws from
    ``p(z)`` of the shape of ``eps``) for the adversarial divergences.
    Outputs ``[parameters, log_ratio]``: the likelihood's parameters for
    every sample and ``log p(z) - log q(z|x)`` per sample. A categorical
    likelihood models one label per example (``data_dim=1``) among
    ``num_classes``.

    With ``decoder="linear"`` the likelihood is that of a target ``y`` (of
    width ``target_dim``, or one label among ``num_classes``) given ``x``:
    ``z`` holds the weights and biases of a linear model, so ``latent_dim``
    is ``(data_dim + 1) * width``. A global posterior's one KL is shared by
    the ``num_examples`` training examples: each carries ``1 / N`` of it.

    ``encoder="conv"`` and ``decoder="conv"`` swap the dense networks for
    strided convolutions over ``x`` read as an image of ``image_shape``
    (keras.io's layers, ReLU; of the dense settings the conv encoder takes
    only ``hidden_units``, its last dense layer's width).
    ``kl_weight`` (beta) and ``kl_warmup_steps`` weight the log density
    ratio in training only (`KLWeight`), for the ELBO. ``gradient`` picks
    the encoder's gradient estimator (`gradients`); it changes no value.
    """
    check_parts(posterior, divergence, likelihood, objective)
    check_gradient(gradient, posterior, divergence, objective, decoder)
    check_networks(encoder, decoder, posterior, likelihood, data_dim, image_shape)
    check_kl_weight(objective, kl_weight, kl_warmup_steps)
    check_positive_ints(
        data_dim=data_dim, latent_dim=latent_dim, hidden_units=hidden_units, hidden_layers=hidden_layers
    )
    width = check_sizes(data_dim, latent_dim, posterior, likelihood, decoder, num_classes, target_dim, num_examples)

    x = keras.Input(shape=(data_dim,), name="x")
    eps = keras.Input(shape=(None, latent_dim), name="eps")
    inputs = [x, eps]
    terms = {"x": x, **sample_posterior(posterior, x, eps, hidden_units, hidden_layers, activation, num_flows,
                                        flow_hidden_units, encoder, image_shape)}  # fmt: skip
    # [start decoder-choice]
    if decoder == "linear":  # p(y | x, z): z is the linear model's weights
        parameters = build_linear_decoder(likelihood, data_dim, width, heteroscedastic)([x, terms["z"]])
    else:
        if decoder == "conv":
            decoder_network = build_conv_decoder(likelihood, latent_dim, image_shape, heteroscedastic=heteroscedastic)
        else:
            decoder_network = build_decoder(likelihood, width, hidden_units, latent_dim, hidden_layers, activation,
                                            heteroscedastic=heteroscedastic)  # fmt: skip
        if gradient == "dreg":  # a first pass for the importance weights, then z with its path reweighted
            weights_ratio = PerSampleLogRatio(MonteCarloKL(), name="weights_log_ratio")(terms)
            path = DoublyReparameterizedPath(likelihood, name="dreg_path")
            terms["z"] = path([terms["z"], x, decoder_network(terms["z"]), weights_ratio])
        parameters = decoder_network(terms["z"])
    # [end decoder-choice]
    parameters = layers.Identity(name="parameters")(parameters)

    # The divergence last: a discriminator's weights never shift the encoder's or the decoder's initial ones.
    if divergence in ADVERSARIAL_ESTIMATORS:
        terms["z_prior"] = keras.Input(shape=(None, latent_dim), name="z_prior")
        inputs.append(terms["z_prior"])
    estimator = divergence_estimator(divergence, posterior, data_dim, latent_dim, discriminator_units,
                                     discriminator_layers, path_derivative=gradient != "total")  # fmt: skip
    scale = 1.0 / num_examples if posterior == "global" else 1.0
    log_ratio = PerSampleLogRatio(estimator, scale, name="log_ratio")(terms)
    if kl_weight != 1 or kl_warmup_steps:
        log_ratio = KLWeight(kl_weight, kl_warmup_steps, name="kl_weight")(log_ratio)

    name = f"vae_{posterior}_{divergence}_{likelihood}_{objective}" + ("" if gradient == "total" else f"_{gradient}")
    return BoundModel(inputs=inputs, outputs=[parameters, log_ratio], name=name)


# [end compose]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posterior", default="gaussian", help=f"one of {POSTERIORS} (default: gaussian)")
    parser.add_argument("--divergence", default=None, help=f"one of {DIVERGENCES} (default: closed_form, or "
                        "monte_carlo for a flow or the IWAE bound, adversarial for an implicit posterior)")  # fmt: skip
    parser.add_argument("--likelihood", default="bernoulli", help=f"one of {LIKELIHOODS} (default: bernoulli)")
    parser.add_argument("--objective", default="elbo", help=f"one of {OBJECTIVES} (default: elbo)")
    parser.add_argument("--latent-dim", type=int, default=2, help="dimension of z (default: 2)")
    parser.add_argument("--encoder", default="mlp", help=f"the encoder network, one of {NETWORKS} (default: mlp)")
    parser.add_argument("--decoder", default="mlp", help=f"the decoder network, one of {NETWORKS} (default: mlp)")
    parser.add_argument("--kl-weight", type=float, default=1.0, help="beta, the weight of the KL (default: 1)")
    parser.add_argument("--kl-warmup-steps", type=int, default=0, help="steps of KL warm-up (default: 0, none)")
    parser.add_argument("--gradient", default="total", help=f"the encoder's gradient, one of {GRADIENTS} "
                        "(default: total)")  # fmt: skip
    args = parser.parse_args(argv)
    divergence = args.divergence
    if divergence is None:
        divergence = "adversarial" if args.posterior == "implicit" else "closed_form"
        divergence = "monte_carlo" if args.posterior in FLOWS or args.objective == "iwae" else divergence
    categorical = args.likelihood == "categorical"
    try:
        vae = compose_vae(
            1 if categorical else 784, args.latent_dim, args.posterior, divergence, args.likelihood, args.objective,
            num_classes=10 if categorical else None, encoder=args.encoder, decoder=args.decoder,
            kl_weight=args.kl_weight, kl_warmup_steps=args.kl_warmup_steps, gradient=args.gradient,
        )  # fmt: skip
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    vae.summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())

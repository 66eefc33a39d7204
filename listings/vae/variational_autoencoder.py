"""A variational autoencoder built from Keras primitives.

The model is written the way the maths reads:

* the encoder (inference network) maps an image ``x`` to the mean and log
  variance of a diagonal Gaussian ``q(z|x)``;
* a pass-through `KLDivergenceLayer` adds ``KL[q(z|x) || p(z)]`` to the loss;
* ``z = z_mean + exp(z_log_var / 2) * eps`` is built from ``Multiply`` and
  ``Add`` layers, with the noise ``eps`` a model input of shape
  ``(None, latent_dim)``: the number of Monte Carlo samples is the length of
  the ``eps`` fed in, a property of the batch, not of the model, so one model
  trains with one sample per example and is scored with thousands;
* the decoder (generative network) is a ``Sequential`` that maps every sample
  of ``z`` to Bernoulli logits, and the loss is the Bernoulli negative
  log-likelihood computed from those logits.

The sum of the two loss terms is the negative evidence lower bound (ELBO) in
nats, averaged over the batch.

Run ``python variational_autoencoder.py`` to print the model summary.
"""

import argparse
import sys

import keras
import numpy as np
from keras import layers, ops

PACKAGE = "beyond_the_quickstart"


def check_positive_int(name, value):
    """Raise a ValueError unless ``value`` is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"Expected `{name}` to be a positive integer. Received: {name}={value!r}")
    return int(value)


def check_positive_ints(**values):
    """Raise a ValueError naming the first keyword argument that is not a positive integer."""
    for name, value in values.items():
        check_positive_int(name, value)


# [start kl-layer]
def gaussian_kl_divergence(z_mean, z_log_var):
    """KL[N(z_mean, diag(exp(z_log_var))) || N(0, I)] per example, in nats.

    Summed over the last (latent) axis; returns shape ``z_mean.shape[:-1]``.
    """
    return -0.5 * ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class KLDivergenceLayer(layers.Layer):
    """Identity layer that adds the KL divergence of ``q(z|x)`` from the prior.

    For a diagonal Gaussian ``q(z|x) = N(z_mean, diag(exp(z_log_var)))`` and the
    standard normal prior ``p(z) = N(0, I)`` the divergence has the closed form

        KL = -1/2 * sum_k (1 + z_log_var_k - z_mean_k**2 - exp(z_log_var_k)).

    The layer adds this with `add_loss`, summed over latent dimensions and
    averaged over the batch, and returns its inputs unchanged.

    Call arguments:
        inputs: list ``[z_mean, z_log_var]`` of tensors of the same shape
            ``(batch, latent_dim)``.

    Returns:
        The list ``[z_mean, z_log_var]``, unchanged.

    Example:

    >>> z_mean = np.zeros((3, 2), dtype="float32")
    >>> z_log_var = np.zeros((3, 2), dtype="float32")
    >>> kl_layer = KLDivergenceLayer()
    >>> outputs = kl_layer([z_mean, z_log_var])
    >>> float(kl_layer.losses[0])
    0.0
    """

    def build(self, input_shape):
        if len(input_shape) != 2 or tuple(input_shape[0]) != tuple(input_shape[1]):
            raise ValueError(
                f"Expected `z_mean` and `z_log_var` of the same shape. Received: input_shape={input_shape}"
            )

    def call(self, inputs):
        z_mean, z_log_var = inputs
        self.add_loss(ops.mean(gaussian_kl_divergence(z_mean, z_log_var)))
        return [z_mean, z_log_var]

    def compute_output_shape(self, input_shape):
        return [tuple(input_shape[0]), tuple(input_shape[1])]


# [end kl-layer]


# [start nll]
@keras.saving.register_keras_serializable(package=PACKAGE)
class BernoulliNegativeLogLikelihood(keras.losses.Loss):
    """Negative log-likelihood of binary data under Bernoulli(sigmoid(logits)).

    For a pixel ``x`` in {0, 1} and logit ``l`` it is

        -log p(x | l) = log(1 + exp(l)) - x * l = softplus(l) - x * l,

    with gradient ``sigmoid(l) - x`` with respect to ``l``. ``ops.softplus``
    never exponentiates a large positive number, so value and gradient stay
    finite for any logit, and it is smooth at ``l = 0`` (unlike the
    equivalent ``max(l, 0) - x * l + log(1 + exp(-|l|))``, whose kinks give
    autodiff a gradient of ``-x`` instead of ``1/2 - x`` there). Values are
    in nats, summed over the data dimensions (the last axis). When the logits carry a Monte Carlo axis, shape
    ``(batch, mc_samples, dim)``, the targets of shape ``(batch, dim)`` are
    broadcast against every sample, and the default reduction averages over
    the batch and the samples.

    Example:

    >>> nll = BernoulliNegativeLogLikelihood()
    >>> x = np.array([[1.0, 0.0]], dtype="float32")
    >>> x_logits = np.zeros((1, 3, 2), dtype="float32")  # p = 0.5 for every pixel
    >>> round(float(nll(x, x_logits)), 4)  # 2 * log 2
    1.3863
    """

    def __init__(self, name="bernoulli_nll", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, x, x_logits):
        x = ops.convert_to_tensor(x, dtype=x_logits.dtype)
        if x.shape[-1] != x_logits.shape[-1]:
            raise ValueError(
                "Expected targets and logits with the same last dimension. "
                f"Received: x.shape={x.shape}, x_logits.shape={x_logits.shape}"
            )
        # Keras losses refuse targets of another rank, so broadcast explicitly:
        # (batch, dim) -> (batch, 1, dim) against (batch, mc_samples, dim).
        while len(x.shape) < len(x_logits.shape):
            x = ops.expand_dims(x, axis=-2)
        return ops.sum(ops.softplus(x_logits) - x * x_logits, axis=-1)


# [end nll]


def hidden_name(prefix, index):
    """``encoder_hidden``, ``encoder_hidden_2``, ...: stable layer names."""
    return prefix if index == 0 else f"{prefix}_{index + 1}"


# [start encoder]
def build_encoder(original_dim=784, intermediate_dim=256, latent_dim=2, hidden_layers=1, activation="relu"):
    """Inference network: ``x`` of shape (batch, original_dim) to ``[z_mean, z_log_var]``.

    ``hidden_layers`` dense layers of ``intermediate_dim`` units feed the two
    linear heads (the IWAE paper's model is 784-200-200-50 with tanh).
    """
    x = keras.Input(shape=(original_dim,), name="x")
    h = x
    for i in range(hidden_layers):
        h = layers.Dense(intermediate_dim, activation=activation, name=hidden_name("encoder_hidden", i))(h)
    z_mean = layers.Dense(latent_dim, name="z_mean")(h)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(h)
    return keras.Model(x, [z_mean, z_log_var], name="encoder")


# [end encoder]


# [start decoder]
def build_decoder(original_dim=784, intermediate_dim=256, latent_dim=2, hidden_layers=1, activation="relu"):
    """Generative network: ``z`` of shape (batch, samples, latent_dim) to Bernoulli logits.

    The second axis holds any number of samples of ``z`` per example; the
    output has shape (batch, samples, original_dim).
    """
    return keras.Sequential(
        [
            keras.Input(shape=(None, latent_dim), name="z"),
            *(
                layers.Dense(intermediate_dim, activation=activation, name=hidden_name("decoder_hidden", i))
                for i in range(hidden_layers)
            ),
            layers.Dense(original_dim, name="x_logits"),
        ],
        name="decoder",
    )


# [end decoder]


# [start reparameterization]
def reparameterize(z_mean, z_log_var, eps):
    """``z = z_mean + exp(z_log_var / 2) * eps`` from primitive layers.

    ``z_mean`` and ``z_log_var`` have shape (batch, latent_dim) and ``eps``
    has shape (batch, mc_samples, latent_dim); ``Multiply`` and ``Add``
    broadcast the first two over the Monte Carlo axis, so ``z`` has shape
    (batch, mc_samples, latent_dim).
    """
    z_log_scale = layers.Rescaling(0.5, name="z_log_scale")(z_log_var)
    z_scale = layers.Activation("exponential", name="z_scale")(z_log_scale)
    z_eps = layers.Multiply(name="z_eps")([z_scale, eps])
    z = layers.Add(name="z")([z_mean, z_eps])
    return z


# [end reparameterization]


# [start build-vae]
def build_vae(original_dim=784, intermediate_dim=256, latent_dim=2, hidden_layers=1, activation="relu"):
    """The full model: inputs ``[x, eps]``, output Bernoulli logits per sample.

    ``x`` has shape (batch, original_dim) and ``eps`` (batch, mc_samples,
    latent_dim) for any ``mc_samples``: the number of Monte Carlo samples is
    the length of the noise fed in, so the same model (the same weights)
    trains with one sample and is evaluated with many.

    Returns ``(vae, encoder, decoder)``; the encoder and decoder share their
    weights with the VAE.
    """
    check_positive_ints(
        original_dim=original_dim,
        intermediate_dim=intermediate_dim,
        latent_dim=latent_dim,
        hidden_layers=hidden_layers,
    )
    encoder = build_encoder(original_dim, intermediate_dim, latent_dim, hidden_layers, activation)
    decoder = build_decoder(original_dim, intermediate_dim, latent_dim, hidden_layers, activation)

    x = keras.Input(shape=(original_dim,), name="x")
    eps = keras.Input(shape=(None, latent_dim), name="eps")  # any number of samples per example

    z_mean, z_log_var = encoder(x)
    z_mean, z_log_var = KLDivergenceLayer(name="kl_divergence")([z_mean, z_log_var])
    z = reparameterize(z_mean, z_log_var, eps)
    x_logits = decoder(z)

    vae = keras.Model(inputs=[x, eps], outputs=x_logits, name="vae")
    return vae, encoder, decoder


# [end build-vae]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latent-dim", type=int, default=2, help="dimension of z (default: 2)")
    parser.add_argument("--intermediate-dim", type=int, default=256, help="hidden units (default: 256)")
    args = parser.parse_args(argv)
    try:
        vae, _, _ = build_vae(intermediate_dim=args.intermediate_dim, latent_dim=args.latent_dim)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    vae.summary(expand_nested=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Is every latent dimension used? The KL per dimension and the active units of a trained VAE.

A dimension ``j`` of ``z`` that the decoder ignores costs the ELBO only its
KL term, so training pushes its posterior onto the prior: ``q(z_j|x) =
N(0, 1)`` for every ``x``, a KL of zero, and a code that says nothing about
the image (posterior collapse, in that dimension). Two diagnostics, for a
diagonal Gaussian posterior ``N(z_mean, diag(exp(z_log_var)))``:

* `kl_per_dimension`: ``E_x KL[q(z_j|x) || N(0, 1)]`` per dimension, in nats,
  in closed form; the dimensions' values sum to the ELBO's KL term;
* `activity`: Burda, Grosse & Salakhutdinov's (2015, section 5.2)
  ``A_j = Cov_x(E_q[z_j | x])``, the variance over the images of the
  posterior mean; a dimension is active when ``A_j > 0.01``
  (`active_units`).

A flow's or an implicit posterior's mean has no closed form, and a flow
couples the dimensions, so its KL does not split over them: for those,
`posterior_means` estimates ``E_q[z | x]`` by Monte Carlo, and the activity
is all there is.

Run ``python posterior_collapse.py --model vae.keras`` on a saved model
(the first post's, or a composed one) to print both, per dimension, for
the MNIST test images.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ACTIVITY_THRESHOLD = 1e-2  # Burda et al.'s


# [start diagnostics]
def kl_per_dimension(z_mean, z_log_var):
    """``E_x KL[N(z_mean_j, exp(z_log_var_j)) || N(0, 1)]`` per dimension ``j``, in nats: shape (latent_dim,)."""
    z_mean, z_log_var = np.asarray(z_mean, "float64"), np.asarray(z_log_var, "float64")
    return np.mean(0.5 * (np.square(z_mean) + np.exp(z_log_var) - 1.0 - z_log_var), axis=0)


def activity(z_mean):
    """``Cov_x(E_q[z_j | x])`` per dimension: the variance of the posterior means over the images (n - 1)."""
    return np.var(np.asarray(z_mean, "float64"), axis=0, ddof=1)


def active_units(z_mean, threshold=ACTIVITY_THRESHOLD):
    """The number of dimensions whose activity exceeds ``threshold``."""
    return int(np.sum(activity(z_mean) > threshold))


# [end diagnostics]


def has_gaussian_posterior(vae):
    """Whether a saved VAE's posterior is the encoder's diagonal Gaussian: the first post's model, called "vae",
    or a composed one, "vae_<posterior>_<divergence>_...", whose posterior is not a flow or implicit."""
    return vae.name == "vae" or vae.name.startswith(("vae_gaussian_", "vae_global_"))


def posterior_statistics(vae, x, batch_size=1000):
    """``(z_mean, z_log_var)`` of the images ``x`` (count, dim) under a saved VAE's Gaussian encoder."""
    # A flow moves z away from z_mean, and an implicit posterior has none.
    encoder = vae.get_layer("encoder") if "encoder" in [layer.name for layer in vae.layers] else None
    if not has_gaussian_posterior(vae) or encoder is None or len(encoder.outputs) != 2:
        raise ValueError(f"Expected a VAE with a Gaussian posterior, whose layer 'encoder' outputs [z_mean, "
                         f"z_log_var]. Received the model {vae.name!r}")  # fmt: skip
    z_mean, z_log_var = encoder.predict(x, batch_size=batch_size, verbose=0)[:2]
    return z_mean, z_log_var


# [start means]
def posterior_draws(vae, x, eps):
    """``z ~ q(z|x)`` from the noise ``eps`` (batch, samples, latent_dim), through the model's own encoder: the
    implicit one takes the noise; a flow's starts from the Gaussian draw and reads the encoder's context."""
    import keras

    encoder = vae.get_layer("encoder")
    if len(encoder.inputs) == 2:  # an implicit posterior: z = f(x, eps)
        return keras.ops.convert_to_numpy(encoder([x, eps], training=False))
    z_mean, z_log_var, context = (keras.ops.convert_to_numpy(t) for t in encoder(x, training=False))
    z_0 = z_mean[:, None] + np.exp(0.5 * z_log_var)[:, None] * eps
    z, _ = vae.get_layer("flow")([z_0, context], training=False)
    return keras.ops.convert_to_numpy(z)


def posterior_means(vae, x, num_samples=1000, seed=0, batch_size=100):
    """``E_q[z | x]`` of the images ``x`` under a composed VAE's posterior, whatever it is: (count, latent_dim).

    A Gaussian's is ``z_mean``. A flow's or an implicit posterior's has no
    closed form: it is the average of ``num_samples`` draws, whose Monte
    Carlo error adds about ``Var_q[z_j | x] / num_samples`` to the
    activity, 0.001 for a dimension at the prior with the default, a tenth
    of the threshold. Each image's draws come from a stream of its own,
    so the estimate does not depend on ``batch_size``.
    """
    if has_gaussian_posterior(vae):
        return posterior_statistics(vae, x)[0]
    latent_dim = vae.get_layer("encoder").outputs[0].shape[-1]
    means = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        eps = np.stack([np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,))).standard_normal(
            (num_samples, latent_dim), dtype="float32") for index in range(start, start + len(batch))])  # fmt: skip
        means.append(posterior_draws(vae, batch, eps).mean(axis=1))
    return np.concatenate(means)


# [end means]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a saved vae.keras (the first post's, or a composed one)")
    parser.add_argument("--num-examples", type=int, default=10000, help="test images (default: %(default)s)")
    parser.add_argument("--mnist-dir", default=None, help="the MNIST folder (default: the loader's)")
    args = parser.parse_args(argv)
    if args.num_examples < 2:
        parser.exit(2, f"{parser.prog}: error: Expected `num_examples` >= 2 (a variance). Received: "
                       f"num_examples={args.num_examples}\n")  # fmt: skip
    import compose  # noqa: F401  (registers the layers of every model the site trains)
    from mnist_data import MNISTError, flatten_and_scale, load_mnist
    from outputs import ModelFileError, load_saved_model

    try:
        vae = load_saved_model(args.model)
        _, (x_test, _) = load_mnist(args.mnist_dir)
        x = flatten_and_scale(x_test[: args.num_examples])
        gaussian = has_gaussian_posterior(vae)
        z_mean, z_log_var = posterior_statistics(vae, x) if gaussian else (posterior_means(vae, x), None)
    except (MNISTError, ModelFileError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    active = activity(z_mean)
    kl = kl_per_dimension(z_mean, z_log_var) if gaussian else np.full(len(active), np.nan)  # no closed form
    print(f"{'dimension':>9}  {'KL (nats)':>10}  {'activity':>9}")
    for j in np.argsort(-active):
        print(f"{j:>9}  {kl[j]:>10.3f}  {active[j]:>9.4f}")
    print(f"active units: {active_units(z_mean)} of {len(active)}" + (f"; KL {kl.sum():.2f} nats in all" if gaussian
                                                                        else " (posterior means by Monte Carlo)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

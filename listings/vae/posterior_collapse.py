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

Run ``python posterior_collapse.py --model vae.keras`` on a saved model with
a Gaussian posterior (the first post's, or a composed one) to print both,
per dimension, for the MNIST test images.
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


def posterior_statistics(vae, x, batch_size=1000):
    """``(z_mean, z_log_var)`` of the images ``x`` (count, dim) under a saved VAE's Gaussian encoder."""
    # The first post's model is "vae"; a composed one names its parts, "vae_<posterior>_<divergence>_...": a flow
    # moves z away from z_mean, and an implicit posterior has none.
    gaussian = vae.name == "vae" or vae.name.startswith(("vae_gaussian_", "vae_global_"))
    encoder = vae.get_layer("encoder") if "encoder" in [layer.name for layer in vae.layers] else None
    if not gaussian or encoder is None or len(encoder.outputs) != 2:
        raise ValueError(f"Expected a VAE with a Gaussian posterior, whose layer 'encoder' outputs [z_mean, "
                         f"z_log_var]. Received the model {vae.name!r}")  # fmt: skip
    z_mean, z_log_var = encoder.predict(x, batch_size=batch_size, verbose=0)[:2]
    return z_mean, z_log_var


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a vae.keras with a Gaussian posterior")
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
        z_mean, z_log_var = posterior_statistics(vae, flatten_and_scale(x_test[: args.num_examples]))
    except (MNISTError, ModelFileError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    kl, active = kl_per_dimension(z_mean, z_log_var), activity(z_mean)
    print(f"{'dimension':>9}  {'KL (nats)':>10}  {'activity':>9}")
    for j in np.argsort(-active):
        print(f"{j:>9}  {kl[j]:>10.3f}  {active[j]:>9.4f}")
    print(f"active units: {active_units(z_mean)} of {len(active)}; KL {kl.sum():.2f} nats in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())

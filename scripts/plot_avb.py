"""Draw the Adversarial Variational Bayes post's figures and model diagram.

Reads ``results/avb/estimators.json`` and ``results/avb/toy.json`` and the
toy models ``results/avb/toy/*.keras`` (from ``avb_experiments.py``) and
writes, in ``--output-dir`` (default ``images/avb``):

* ``toy_posteriors.svg``: samples of ``q(z|x)`` for the four one-hot points,
  Gaussian posterior next to the implicit one;
* ``estimator_curves.svg``: the discriminator's KL estimate against training
  steps on pairs of Gaussians, with the exact KL and the Monte Carlo spread;
* ``avb_model.svg``: the graph of the composed VAE with an implicit
  posterior and the adversarial divergence, drawn by graphviz from the model;
* ``figures.json``: the record of the inputs they came from.

With ``--if-stale`` it does nothing when the record matches the inputs.
"""

import os
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "listings" / "vae"))
sys.path.insert(0, str(REPO_ROOT / "scripts"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import provenance  # noqa: E402
from plot_iwae import save, setup_matplotlib  # noqa: E402

RESULTS_DIR = REPO_ROOT / "results" / "avb"
OUTPUT_DIR = REPO_ROOT / "images" / "avb"
FIGURES = ("toy_posteriors.svg", "estimator_curves.svg", "avb_model.svg")
RECORD_NAME = "figures.json"
TOY_MODELS = ("gaussian", "implicit")
TOY_TITLES = {"gaussian": "Gaussian q(z|x), closed-form KL", "implicit": "implicit q(z|x), adversarial KL"}
PAIR_TITLES = {"near-2d": "2-D, close to the prior", "far-2d": "2-D, far from the prior", "far-8d": "8-D, far"}
SETTINGS = {"toy_samples": 600, "seed": 0, "diagram": {"data_dim": 784, "latent_dim": 2, "hidden_units": 64}}


def input_paths(results_dir):
    results_dir = pathlib.Path(results_dir)
    return [
        results_dir / "estimators.json",
        results_dir / "toy.json",
        *(results_dir / "toy" / f"{name}.keras" for name in TOY_MODELS),
    ]


def drawn_settings():
    """The settings and the graphviz version (a RuntimeError when graphviz is missing)."""
    from make_diagrams import graphviz_version

    return {**SETTINGS, "graphviz": graphviz_version()}


def posterior_samples(vae, x, num_samples, seed):
    """Draws of ``z ~ q(z|x)``, shape (len(x), num_samples, latent_dim), from any composed model."""
    import keras
    import numpy as np
    from keras import ops

    z = keras.Model(vae.inputs[:2], vae.get_layer("log_ratio").terms()["z"])
    eps = np.random.default_rng(seed).standard_normal((len(x), num_samples, vae.inputs[1].shape[-1]))
    return ops.convert_to_numpy(z([x, eps.astype("float32")], training=False))


def plot_toy(results_dir, toy, path):
    import numpy as np

    import compose  # noqa: F401  (registers the layers the saved models use)
    from outputs import load_saved_model

    plt = setup_matplotlib()
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.1), constrained_layout=True)
    x_points = np.eye(4, dtype="float32")
    angle = np.linspace(0, 2 * np.pi, 200)
    for ax, name in zip(axes, TOY_MODELS, strict=True):
        vae = load_saved_model(pathlib.Path(results_dir) / "toy" / f"{name}.keras", "a toy model of avb_experiments.py")
        z = posterior_samples(vae, x_points, SETTINGS["toy_samples"], SETTINGS["seed"])
        for i in range(4):
            ax.scatter(z[i, :, 0], z[i, :, 1], s=3, alpha=0.6, label=f"x = e{i + 1}", rasterized=False)
        for radius in (1, 2):
            ax.plot(radius * np.cos(angle), radius * np.sin(angle), color="0.6", lw=0.8, ls="--")
        log_px = toy[name]["mean_log_likelihood"]
        ax.set_title(f"{TOY_TITLES[name]}\nmean log p(x) = {log_px:.3f} nats", fontsize=10)
        ax.set_xlim(-3.2, 3.2)
        ax.set_ylim(-3.2, 3.2)
        ax.set_aspect("equal")
        ax.set_xlabel("$z_1$")
    axes[0].set_ylabel("$z_2$")
    axes[1].legend(loc="lower right", markerscale=3, fontsize=8, framealpha=0.9)
    save(fig, path)
    plt.close(fig)


def plot_estimators(estimators, path):
    import numpy as np

    plt = setup_matplotlib()
    results = estimators["results"]
    pairs = {name: results[name] for name in [*PAIR_TITLES, *sorted(results)] if name in results}
    fig, axes = plt.subplots(1, len(pairs), figsize=(3.2 * len(pairs), 3.2), constrained_layout=True)
    for ax, (name, pair) in zip(np.atleast_1d(axes), pairs.items(), strict=True):
        steps = pair["steps_per_epoch"] * np.arange(1, len(pair["adversarial_curve"]) + 1)
        exact, spread = pair["exact_kl"], pair["monte_carlo_sd"]
        ax.axhspan(exact - spread, exact + spread, color="C0", alpha=0.15, label="Monte Carlo, S = 1: ±1 sd")
        ax.axhline(exact, color="k", ls="--", lw=1, label="closed form (exact)")
        ax.plot(steps, pair["adversarial_curve"], color="C3", label="adversarial: mean T")
        ax.set_xscale("log")
        ax.set_title(f"{PAIR_TITLES.get(name, name)}: KL = {exact:.2f}", fontsize=10)
        ax.set_xlabel("discriminator steps")
    np.atleast_1d(axes)[0].set_ylabel("KL estimate (nats)")
    np.atleast_1d(axes)[0].legend(loc="lower right", fontsize=8, framealpha=0.9)
    save(fig, path)
    plt.close(fig)


def draw_model(path):
    from compose import compose_vae
    from make_diagrams import model_to_svg

    vae = compose_vae(posterior="implicit", divergence="adversarial", **SETTINGS["diagram"])
    pathlib.Path(path).write_text(model_to_svg(vae, show_shapes=True))


def draw(results_dir, output_dir):
    toy = provenance.read_json(results_dir / "toy.json", ["results"])
    plot_toy(results_dir, toy["results"], output_dir / FIGURES[0])
    plot_estimators(provenance.read_json(results_dir / "estimators.json", ["results"]), output_dir / FIGURES[1])
    draw_model(output_dir / FIGURES[2])


def main(argv=None):
    return provenance.draw_figures(
        __doc__, OUTPUT_DIR, FIGURES, draw, drawn_settings, results=("--results-dir", RESULTS_DIR),
        input_paths=input_paths, made_by="avb_experiments.py", argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

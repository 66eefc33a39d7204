"""Draw the normalizing-flows post's figures and model diagrams.

Reads ``results/flows/toy.json`` and the fitted flows
``results/flows/toy/*.keras`` (from ``flow_experiments.py``) and writes, in
``--output-dir`` (default ``images/flows``):

* ``densities.svg``: Rezende & Mohamed's four 2-D densities next to the
  densities of the fitted flows (planar, K = 2, 8, 32, and IAF, K = 32), each
  drawn exactly, ``q_K(f(z_0)) = N(z_0; 0, I) / |det|``, on the image of a
  fine grid of ``z_0``;
* ``flow_vae.svg`` and ``flow_stack.svg``: the graphs of the composed VAE
  with a planar-flow posterior and of its flow, drawn by graphviz from the
  models;
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
from plot_iwae import setup_matplotlib  # noqa: E402

RESULTS_DIR = REPO_ROOT / "results" / "flows"
OUTPUT_DIR = REPO_ROOT / "images" / "flows"
FIGURES = ("densities.svg", "flow_vae.svg", "flow_stack.svg")
RECORD_NAME = "figures.json"
SETTINGS = {
    "grid_points": 401,
    "grid_half_width": 5.0,
    "dpi": 110,
    "diagram": {"posterior": "planar", "num_flows": 2, "data_dim": 784, "latent_dim": 2, "hidden_units": 64},
}


def columns(toy):
    """Every planar length fitted, then the longest IAF: ``[(flow, K), ...]``."""
    flows = toy["settings"]["flows"]
    return [("planar", k) for k in flows["planar"]] + [("iaf", max(flows["iaf"]))]


def model_names(toy):
    return [f"{target}-{flow}-{k}" for target in toy["settings"]["targets"] for flow, k in columns(toy)]


def input_paths(results_dir):
    results_dir = pathlib.Path(results_dir)
    paths = [results_dir / "toy.json"]
    if paths[0].is_file():
        toy = provenance.read_json(paths[0], ["settings", "results"])
        paths += [results_dir / "toy" / f"{name}.keras" for name in model_names(toy)]
    return paths


def drawn_settings():
    """The settings and the graphviz version (a RuntimeError when graphviz is missing)."""
    from make_diagrams import graphviz_version

    return {**SETTINGS, "graphviz": graphviz_version()}


def flow_density_mesh(flow_model, half_width, points):
    """The image ``f(z_0)`` of a square grid of ``z_0`` and the exact density ``q_K`` there."""
    import numpy as np

    grid = np.linspace(-half_width, half_width, points)
    z_0 = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).astype("float32")
    z, log_det = flow_model.predict(z_0.reshape(-1, 1, 2), batch_size=50000, verbose=0)
    log_q = -0.5 * np.sum(z_0.reshape(-1, 2).astype("float64") ** 2, -1) - np.log(2 * np.pi) - log_det[:, 0]
    return z.reshape(points, points, 2), np.exp(log_q).reshape(points, points)


def plot_densities(results_dir, toy, path):
    import numpy as np
    from keras import ops

    import flow_densities  # noqa: F401  (registers the layers the saved models use)
    from flow_densities import BOX, potential
    from outputs import load_saved_model

    plt = setup_matplotlib()
    targets, shown = toy["settings"]["targets"], columns(toy)
    fig, axes = plt.subplots(len(targets), 1 + len(shown), figsize=(2.1 * (1 + len(shown)), 2.2 * len(targets)))
    axes = np.atleast_2d(axes)
    grid = np.linspace(-BOX, BOX, 300)
    z = np.stack(np.meshgrid(grid, grid, indexing="xy"), -1)
    for row, target in enumerate(targets):
        density = np.exp(-ops.convert_to_numpy(potential(target, z)) - toy["results"]["log_normaliser"][target])
        axes[row, 0].imshow(density, extent=(-BOX, BOX, -BOX, BOX), origin="lower", cmap="magma")
        axes[row, 0].set_ylabel(target)
        for column, (flow, k) in enumerate(shown, start=1):
            name = f"{target}-{flow}-{k}"
            model_path = pathlib.Path(results_dir) / "toy" / f"{name}.keras"
            flow_model = load_saved_model(model_path, "a flow of flow_experiments.py")
            mesh, q = flow_density_mesh(flow_model, SETTINGS["grid_half_width"], SETTINGS["grid_points"])
            ax = axes[row, column]
            ax.set_facecolor("black")
            ax.pcolormesh(mesh[..., 0], mesh[..., 1], q[:-1, :-1], cmap="magma", vmin=0, vmax=density.max(),
                          shading="flat", rasterized=True)  # fmt: skip
            ax.text(-BOX + 0.2, BOX - 0.3, f"KL {toy['results']['kl'][name]['kl']:.2f}", color="white", fontsize=8,
                    va="top")  # fmt: skip
    axes[0, 0].set_title("target exp(-U)/Z", fontsize=9)
    for column, (flow, k) in enumerate(shown, start=1):
        axes[0, column].set_title(f"{'planar' if flow == 'planar' else 'IAF'}, K = {k}", fontsize=9)
    for ax in axes.flat:
        ax.set_xlim(-BOX, BOX)
        ax.set_ylim(-BOX, BOX)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None}, bbox_inches="tight", dpi=SETTINGS["dpi"])
    plt.close(fig)


def draw_models(vae_path, flow_path):
    from compose import compose_vae
    from make_diagrams import model_to_svg

    vae = compose_vae(divergence="monte_carlo", **SETTINGS["diagram"])
    pathlib.Path(vae_path).write_text(model_to_svg(vae, show_shapes=True))
    pathlib.Path(flow_path).write_text(model_to_svg(vae.get_layer("flow"), show_shapes=True))


def draw(results_dir, output_dir):
    toy = provenance.read_json(results_dir / "toy.json", ["settings", "results"])
    plot_densities(results_dir, toy, output_dir / FIGURES[0])
    draw_models(output_dir / FIGURES[1], output_dir / FIGURES[2])


def main(argv=None):
    return provenance.draw_figures(
        __doc__, OUTPUT_DIR, FIGURES, draw, drawn_settings, results=("--results-dir", RESULTS_DIR),
        input_paths=input_paths, made_by="flow_experiments.py", argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

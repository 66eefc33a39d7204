"""Draw the main post's model diagrams from the real Keras models with graphviz.

Builds the models with the listing's own functions, turns them into graphviz
graphs with ``keras.utils.model_to_dot`` and renders SVG with ``dot``. Keras
names graph nodes by Python object ids, which change on every run; this
script renames them after the layers (``vae/encoder/z_mean``), so the output
is byte-identical for the same code and graphviz version.

Writes ``reparameterization.svg``, ``reparameterization_shapes.svg``,
``encoder.svg``, ``decoder.svg``, ``vae.svg`` and ``diagrams.json`` (the
settings drawn and the fingerprint of the graphs) to ``--output-dir``.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "listings" / "vae"))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import provenance  # noqa: E402

OUTPUT_DIR = REPO_ROOT / "images" / "vae"
RECORD_NAME = "diagrams.json"
DIAGRAMS = ("reparameterization", "reparameterization_shapes", "encoder", "decoder", "vae")
# Drawn with distinct sizes on every axis so the shapes show which axis is which. The VAE takes any number of
# samples (its eps has shape (None, latent_dim)); the reparameterisation alone is drawn for mc_samples of them.
SETTINGS = {"original_dim": 784, "intermediate_dim": 256, "latent_dim": 2, "mc_samples": 5, "dpi": 72}


def drawn_settings():
    """The settings and the graphviz version (a RuntimeError when graphviz is missing)."""
    return {**SETTINGS, "graphviz": graphviz_version()}


def graphviz_version():
    dot = shutil.which("dot")
    if dot is None:
        raise RuntimeError("graphviz `dot` not found; install the Debian package graphviz")
    return subprocess.run([dot, "-V"], capture_output=True, text=True, check=True).stderr.strip()


def stable_node_names(model, prefix=""):
    """Map ``str(id(layer))`` of every layer, nested models included, to a readable path."""
    import keras

    prefix = f"{prefix}{model.name}/"
    names = {}
    for layer in model.layers if isinstance(model, keras.Sequential) else model._operations:
        names[str(id(layer))] = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            names.update(stable_node_names(layer, prefix))
    return names


def model_to_svg(model, show_shapes, expand_nested=False):
    """SVG text of the model's graph, with stable node names."""
    import keras

    dot = keras.utils.model_to_dot(
        model,
        show_shapes=show_shapes,
        show_layer_names=True,
        show_layer_activations=True,
        expand_nested=expand_nested,
        dpi=SETTINGS["dpi"],
    )
    names = stable_node_names(model)
    # Node ids are bare integers in the dot source; quote the readable names.
    source = re.sub(
        r"(?<![\w.])(\d{6,})(?![\w.])",
        lambda match: f'"{names[match.group(1)]}"' if match.group(1) in names else match.group(1),
        dot.to_string(),
    )
    leftover = [i for i in names if i in source]
    if leftover:
        raise RuntimeError(f"unstable node ids left in the graph: {leftover}")
    return render_svg(source)


def render_svg(source):
    """SVG text of a graphviz source, rendered by ``dot``."""
    return subprocess.run(["dot", "-Tsvg"], input=source, capture_output=True, text=True, check=True).stdout


# [start reparameterization-model]
def build_reparameterization_model(latent_dim, mc_samples):
    """The reparameterisation alone, as the VAE builds it, with its three inputs, for ``mc_samples`` samples."""
    import keras

    from variational_autoencoder import reparameterize

    z_mean = keras.Input(shape=(latent_dim,), name="z_mean")
    z_log_var = keras.Input(shape=(latent_dim,), name="z_log_var")
    eps = keras.Input(shape=(mc_samples, latent_dim), name="eps")
    z = reparameterize(z_mean, z_log_var, eps)
    return keras.Model([z_mean, z_log_var, eps], z, name="reparameterization")


# [end reparameterization-model]


def draw(_, output_dir):
    from variational_autoencoder import build_vae

    reparameterization = build_reparameterization_model(SETTINGS["latent_dim"], SETTINGS["mc_samples"])
    vae, encoder, decoder = build_vae(
        original_dim=SETTINGS["original_dim"],
        intermediate_dim=SETTINGS["intermediate_dim"],
        latent_dim=SETTINGS["latent_dim"],
    )
    svgs = {
        "reparameterization": model_to_svg(reparameterization, show_shapes=False),
        "reparameterization_shapes": model_to_svg(reparameterization, show_shapes=True),
        "encoder": model_to_svg(encoder, show_shapes=True),
        "decoder": model_to_svg(decoder, show_shapes=True),
        "vae": model_to_svg(vae, show_shapes=True, expand_nested=True),
    }
    for name, svg in svgs.items():
        (output_dir / f"{name}.svg").write_text(svg)


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return provenance.draw_figures(
        __doc__, OUTPUT_DIR, [f"{name}.svg" for name in DIAGRAMS], draw, drawn_settings, record_name=RECORD_NAME,
        argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    import make_diagrams  # the module itself, not __main__: fingerprint.drawn_numbers watches its render_svg

    sys.exit(make_diagrams.main())

"""Export the main post's trained decoder for the latent explorer in the page.

Reads ``results/vae/vae.keras`` (written by ``train_main_post.py``) and the
MNIST test set, and writes to ``--output-dir`` (default ``files/explorer``,
served as ``/explorer/``), loaded by ``assets/js/latent_explorer.js`` only
when a reader opens the explorer:

* ``decoder.bin``: the decoder's Dense kernels and biases, float32, little-endian,
  one after the other;
* ``codes.bin``: the posterior means of the 10,000 test images, float32 (count, 2);
* ``labels.bin``: their digits, one byte each;
* ``explorer.json``: the record and the manifest: every layer's offsets, shape
  and activation, the plane's extent, the test images the walk starts and ends
  at, the SHA-256 of the model file and of each file written.

A retrained model (a new ``vae.keras``) makes the record stale; ``--if-stale``
exports again, ``--check`` exits 1.
"""

import argparse
import os
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "listings" / "vae"))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import fingerprint  # noqa: E402
import provenance  # noqa: E402
from mnist_data import MNIST_FILES, MNISTError, resolve_mnist_dir  # noqa: E402

RESULTS_DIR = REPO_ROOT / "results" / "vae"
OUTPUT_DIR = REPO_ROOT / "files" / "explorer"
RECORD_NAME = "explorer.json"
FILES = ("decoder.bin", "codes.bin", "labels.bin")
ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid")  # those latent_explorer.js computes
SETTINGS = {"format": 1, "output": "sigmoid", "extent_quantile": 0.999, "extent_step": 0.5}


def input_paths(results_dir, mnist_dir=None):
    """The trained model and the MNIST test files; MNISTError without a local MNIST folder."""
    folder = resolve_mnist_dir(mnist_dir)
    if folder is None:
        raise MNISTError("no local MNIST folder; set MNIST_DIR")
    return [pathlib.Path(results_dir) / "vae.keras", *(folder / name for name in MNIST_FILES["test"])]


def dense_layers(decoder):
    """``[(kernel, bias, activation)]`` of a decoder made of Dense layers only; a ValueError otherwise."""
    import keras

    layers = []
    for layer in decoder.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if not isinstance(layer, keras.layers.Dense):
            raise ValueError(f"The explorer runs Dense layers only. Received the layer {layer.name!r} "
                             f"({type(layer).__name__})")  # fmt: skip
        activation = keras.activations.serialize(layer.activation)
        activation = activation if isinstance(activation, str) else activation.get("config", {}).get("name")
        if activation not in ACTIVATIONS:
            raise ValueError(f"The explorer computes {', '.join(ACTIVATIONS)}. Received activation={activation!r} "
                             f"in the layer {layer.name!r}")  # fmt: skip
        kernel, bias = (weight.numpy() if hasattr(weight, "numpy") else weight for weight in layer.get_weights())
        layers.append((kernel, bias, activation))
    if not layers or layers[-1][2] != "linear":
        raise ValueError("The explorer applies the sigmoid to the decoder's logits. Expected a last Dense layer "
                         f"with activation='linear'. Received: {layers[-1][2] if layers else 'no Dense layer'!r}")  # fmt: skip
    return layers


def export(results_dir, output_dir, record):
    """Write the explorer's files and, with them, the manifest: ``record`` (inputs, commit) and what was written."""
    import numpy as np

    from mnist_data import flatten_and_scale, load_mnist
    from visualize import encode, load_vae

    _, encoder, decoder = load_vae(pathlib.Path(results_dir) / "vae.keras")
    layers, offset, weights = [], 0, []
    for kernel, bias, activation in dense_layers(decoder):
        kernel, bias = kernel.astype("<f4"), bias.astype("<f4")
        layers.append({
            "kernel": {"offset": offset, "shape": list(kernel.shape)},
            "bias": {"offset": offset + kernel.size, "shape": list(bias.shape)},
            "activation": activation,
        })  # fmt: skip
        offset += kernel.size + bias.size
        weights += [kernel.ravel(), bias]
    _, (x_test, y_test) = load_mnist()
    z_mean = encode(encoder, flatten_and_scale(x_test)).astype("<f4")
    quantile = SETTINGS["extent_quantile"]
    bound = float(np.max(np.abs(np.quantile(z_mean, [1 - quantile, quantile], axis=0))))
    step = SETTINGS["extent_step"]
    data = {
        "decoder.bin": np.concatenate(weights).tobytes(),
        "codes.bin": np.ascontiguousarray(z_mean).tobytes(),
        "labels.bin": y_test.astype("u1").tobytes(),
    }
    manifest = {
        "latent_dim": int(z_mean.shape[1]),
        "original_dim": int(layers[-1]["bias"]["shape"][0]),
        "image_shape": [28, 28],
        "output": "Bernoulli means: the sigmoid of the decoder's logits",
        "layers": layers,
        "num_codes": int(z_mean.shape[0]),
        "extent": [-np.ceil(bound / step) * step, np.ceil(bound / step) * step],
        "walk_examples": [{"index": int(np.argmax(y_test == digit)), "digit": digit} for digit in range(10)],
        "files": {name: {"bytes": len(blob), "sha256": sha256(blob)} for name, blob in data.items()},
        "download_bytes": sum(len(blob) for blob in data.values()),
    }
    manifest = {**record, **manifest}
    output_dir = pathlib.Path(output_dir)
    writers = {output_dir / name: (lambda path, blob=blob: path.write_bytes(blob)) for name, blob in data.items()}
    writers[output_dir / RECORD_NAME] = provenance.record_writer(manifest)
    provenance.write_together(writers)  # the files and their record change together
    return manifest


def sha256(blob):
    import hashlib

    return hashlib.sha256(blob).hexdigest()


def stale_files(record, output_dir):
    """Files written that are missing or differ from the record."""
    stale = []
    for name in FILES:
        path = pathlib.Path(output_dir) / name
        if not path.is_file():
            stale.append(f"missing {name}")
        elif provenance.file_sha256(path) != record.get("files", {}).get(name, {}).get("sha256"):
            stale.append(f"{name} differs from the record")
    return stale


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", default=str(RESULTS_DIR), help="where vae.keras is (default: results/vae)")
    parser.add_argument("--output-dir", default=str(OUTPUT_DIR), help="where to write (default: files/explorer)")
    parser.add_argument("--if-stale", action="store_true", help="export only when the record is stale")
    parser.add_argument("--check", action="store_true", help="exit 1 when the record is stale")
    args = parser.parse_args(argv)
    output_dir = pathlib.Path(args.output_dir)
    record_path = output_dir / RECORD_NAME
    try:
        if not args.check:
            provenance.check_output_dir(output_dir, [*FILES, RECORD_NAME])
        paths = input_paths(args.results_dir)
        missing = [str(path) for path in paths if not path.is_file()]
        if missing:
            parser.exit(2, f"{parser.prog}: error: missing input {missing[0]}; run scripts/train_main_post.py\n")
        inputs = provenance.input_hashes(paths, SETTINGS)
        if args.if_stale or args.check:
            record = provenance.read_record(record_path)
            stale = ["no record"] if record is None else provenance.stale_inputs(record, inputs)
            stale = stale or stale_files(record, output_dir)
            if args.check and stale:
                parser.exit(1, f"{parser.prog}: stale: {record_path.name}: {', '.join(stale[:3])}\n")
            if not stale:
                print(f"{record_path} is current" + ("" if args.check else "; nothing to export"))
                return 0
        manifest = export(args.results_dir, output_dir, {"inputs": inputs, "commit": fingerprint.git_commit()})
    except (ValueError, MNISTError, provenance.ModelFileError) as error:  # a RecordError is a ValueError
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    sizes = ", ".join(f"{name} {entry['bytes']:,} B" for name, entry in manifest["files"].items())
    print(f"wrote {output_dir}: {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

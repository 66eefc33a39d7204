"""Load MNIST, or Fashion-MNIST, from the four standard IDX files, checking what is read.

The loader looks for the files in the folder named by the environment
variable ``MNIST_DIR``; when it is unset it uses ``../shared/data/mnist``
beside this repository, and when that folder does not exist either it falls
back to ``keras.datasets.mnist`` (which downloads the data).

Every file is checked: its gzip stream, its IDX magic number, its item count
against the file size and the other file of the pair, and its image shape.
A problem raises `MNISTError` with one line that says what is wrong and what
was expected.

Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017: 28 x 28 grey images of ten kinds
of clothing) comes in MNIST's four files and format; `load_dataset`
(``"fashion_mnist"``) reads them with the same checks from
``FASHION_MNIST_DIR``, else Debian's ``dataset-fashion-mnist`` folder
``/usr/share/datasets/fashion-mnist``, else ``keras.datasets.fashion_mnist``.

`binarize_once` draws the fixed binarisation a test set is scored on: each
pixel ~ Bernoulli(intensity), from its own seed.

Run ``python mnist_data.py`` (``--dataset fashion_mnist``) to print a summary of the data it finds.
"""

import argparse
import gzip
import os
import pathlib
import sys
import zlib

import numpy as np

# [start mnist-files]
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (count, rows, cols)
LABEL_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (count)
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
# [end mnist-files]

DEFAULT_MNIST_DIR = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist"


class MNISTError(ValueError):
    """The MNIST files are missing, truncated or not what they claim to be."""


def _read_gzip(path):
    if not path.is_file():
        raise MNISTError(f"Missing MNIST file: expected {path.name} in {path.parent}")
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as error:
        raise MNISTError(f"Corrupt or truncated MNIST file {path}: expected a complete gzip stream ({error})") from None


def _parse_idx(data, path, magic, num_dims):
    header_size = 4 + 4 * num_dims
    if len(data) < header_size:
        raise MNISTError(f"Truncated MNIST file {path}: expected a header of {header_size} bytes, found {len(data)}")
    found_magic = int.from_bytes(data[:4], "big")
    if found_magic != magic:
        raise MNISTError(f"Wrong magic number in {path}: expected 0x{magic:08x}, found 0x{found_magic:08x}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(num_dims))
    expected_size = header_size + int(np.prod(dims))
    if len(data) != expected_size:
        raise MNISTError(
            f"Truncated or padded MNIST file {path}: header promises {dims[0]} items "
            f"({expected_size} bytes), found {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims)


def read_idx_pair(images_path, labels_path):
    """Read one (images, labels) pair of IDX files and check they agree."""
    images_path, labels_path = pathlib.Path(images_path), pathlib.Path(labels_path)
    images = _parse_idx(_read_gzip(images_path), images_path, IMAGE_MAGIC, 3)
    labels = _parse_idx(_read_gzip(labels_path), labels_path, LABEL_MAGIC, 1)
    if images.shape[1:] != IMAGE_SHAPE:
        raise MNISTError(f"Wrong image shape in {images_path}: expected {IMAGE_SHAPE}, found {images.shape[1:]}")
    if len(images) != len(labels):
        raise MNISTError(
            f"Count mismatch: {images_path.name} has {len(images)} images but "
            f"{labels_path.name} has {len(labels)} labels; expected equal counts"
        )
    if len(labels) and labels.max() >= NUM_CLASSES:
        raise MNISTError(f"Bad label in {labels_path}: expected digits 0-9, found {int(labels.max())}")
    return images, labels


# The data sets in MNIST's four files and format, by the name a command line gives them: the name in messages,
# the environment variable that names a local folder, the folder read when it is unset (MNIST's beside the
# project, Debian's dataset-fashion-mnist), and the keras.datasets module to download from when that is missing.
FASHION_MNIST_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
DATASETS = {
    "mnist": ("MNIST", "MNIST_DIR", DEFAULT_MNIST_DIR, "mnist"),
    "fashion_mnist": ("Fashion-MNIST", "FASHION_MNIST_DIR", FASHION_MNIST_DIR, "fashion_mnist"),
}


def check_dataset(dataset):
    """The data set's ``(title, environment variable, default folder, keras.datasets module)``; MNISTError
    for a name not in `DATASETS`."""
    if dataset not in DATASETS:
        raise MNISTError(f"Expected `dataset` to be one of {tuple(DATASETS)}. Received: dataset={dataset!r}")
    return DATASETS[dataset]


def resolve_folder(dataset="mnist", folder=None):
    """The folder to read: the argument, else the data set's environment variable, else its default folder.

    Returns ``None`` when neither was given and the default folder does not
    exist, meaning: fall back to ``keras.datasets``.
    """
    title, variable, default, _ = check_dataset(dataset)
    if folder is None:
        folder = os.environ.get(variable) or None
        if folder is None:
            return default.resolve() if default.is_dir() else None
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise MNISTError(f"{title} folder not found: {folder} (expected a folder holding the four IDX .gz files)")
    return folder


def resolve_mnist_dir(mnist_dir=None):
    """`resolve_folder` for MNIST: ``mnist_dir``, else ``MNIST_DIR``, else the folder beside the project."""
    return resolve_folder("mnist", mnist_dir)


# [start load-mnist]
def load_dataset(dataset="mnist", folder=None):
    """Load ``"mnist"`` or ``"fashion_mnist"`` as ``(x_train, y_train), (x_test, y_test)`` of uint8 arrays.

    Images have shape ``(count, 28, 28)``, labels ``(count,)`` (digits, or
    ten kinds of clothing), like ``keras.datasets.mnist.load_data()``, which
    (or its Fashion-MNIST twin) is the fallback when no local folder is found.
    """
    title, variable, default, module = check_dataset(dataset)
    folder = resolve_folder(dataset, folder)
    if folder is None:
        import keras

        try:
            return getattr(keras.datasets, module).load_data()
        except Exception as error:  # the download fails offline
            raise MNISTError(
                f"No local {title} folder ({default.resolve()}) and the keras.datasets.{module} download "
                f"failed: {error}; set {variable}"
            ) from None
    return tuple(
        read_idx_pair(folder / images_name, folder / labels_name) for images_name, labels_name in MNIST_FILES.values()
    )


def load_mnist(mnist_dir=None):
    """MNIST's ``(x_train, y_train), (x_test, y_test)``: `load_dataset` ``("mnist", mnist_dir)``."""
    return load_dataset("mnist", mnist_dir)


def load_fashion_mnist(folder=None):
    """Fashion-MNIST's ``(x_train, y_train), (x_test, y_test)``: `load_dataset` ``("fashion_mnist", folder)``."""
    return load_dataset("fashion_mnist", folder)


def flatten_and_scale(images):
    """Turn uint8 images of shape ``(count, 28, 28)`` into float32 ``(count, 784)`` in [0, 1]."""
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE or images.dtype != np.uint8:
        raise ValueError(
            f"Expected uint8 images of shape (count, 28, 28). Received: dtype={images.dtype}, shape={images.shape}"
        )
    return images.reshape(len(images), -1).astype("float32") / 255.0


# [end load-mnist]


def check_intensities(x):
    """``x`` as float32 after checking it is a (count, dim) array of intensities in [0, 1]."""
    x = np.asarray(x)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"Expected `x` to be a float array of shape (count, dim). Received: dtype={x.dtype}, shape={x.shape}"
        )
    if x.size and (x.min() < 0.0 or x.max() > 1.0):
        raise ValueError(f"Expected `x` with values in [0, 1]. Received: min={x.min()}, max={x.max()}")
    return x.astype("float32", copy=False)


def binarize_once(x, seed):
    """A fixed binarisation of ``x`` (the test set), pixel ~ Bernoulli(intensity).

    ``seed`` is anything ``np.random.default_rng`` takes: an int, or a
    ``np.random.SeedSequence`` spawned for this one use.
    """
    rng = np.random.default_rng(seed)
    return (rng.random(x.shape, dtype="float32") < check_intensities(x)).astype("float32")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mnist-dir",
        default=None,
        help="folder with the four IDX .gz files (default: $MNIST_DIR, else ../shared/data/mnist; for "
        "Fashion-MNIST $FASHION_MNIST_DIR, else /usr/share/datasets/fashion-mnist)",
    )
    parser.add_argument("--dataset", default="mnist", help=f"one of {', '.join(DATASETS)} (default: mnist)")
    args = parser.parse_args(argv)
    try:
        (x_train, y_train), (x_test, y_test) = load_dataset(args.dataset, args.mnist_dir)
    except MNISTError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        counts = np.bincount(y, minlength=10).tolist()
        print(f"{name}: images {x.shape} {x.dtype}, labels {y.shape}, per class {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

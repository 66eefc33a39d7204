"""Write the first N training and test images of MNIST (or Fashion-MNIST) as a small IDX set for the tests.

Reads the full set with the listing's loader and writes the four standard
IDX .gz files (gzip header time 0, so the output is byte-identical on every run),
each atomically. The committed subset (the default ``--output``) is only ever
rewritten with the counts it was made with.
"""

import argparse
import gzip
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "listings" / "vae"))

from mnist_data import DATASETS, IMAGE_MAGIC, LABEL_MAGIC, MNIST_FILES, MNISTError, load_dataset  # noqa: E402
from outputs import check_output_dir, write_atomically  # noqa: E402
from variational_autoencoder import check_positive_ints  # noqa: E402

TEST_DATA = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data"
COMMITTED = {"mnist": TEST_DATA / "mnist", "fashion_mnist": TEST_DATA / "fashion-mnist"}
COMMITTED_COUNTS = {"num_train": 1000, "num_test": 200}  # what the tests were written against


def write_idx(path, array, magic):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)

    def write(partial):
        with open(partial, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
            f.write(header + array.astype("uint8").tobytes())

    write_atomically(path, write)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-train", type=int, default=1000, help="training images to keep (default: %(default)s)")
    parser.add_argument("--num-test", type=int, default=200, help="test images to keep (default: %(default)s)")
    parser.add_argument("--dataset", default="mnist", help=f"one of {', '.join(DATASETS)} (default: mnist)")
    parser.add_argument(
        "--mnist-dir", default=None, help="the full set's folder (default: the loader's, as for --dataset)"
    )
    parser.add_argument(
        "--output", default=None, help="folder to write (default: tests/data/mnist, or tests/data/fashion-mnist)"
    )
    args = parser.parse_args(argv)
    counts = {"num_train": args.num_train, "num_test": args.num_test}
    try:  # before the work: the counts, and a folder that can take the four files
        check_positive_ints(**counts)
        if args.dataset not in DATASETS:
            raise ValueError(f"Expected `dataset` to be one of {tuple(DATASETS)}. Received: dataset={args.dataset!r}")
        output = check_output_dir(args.output or COMMITTED[args.dataset],
                                  [name for pair in MNIST_FILES.values() for name in pair])  # fmt: skip
        if output.resolve() in COMMITTED.values() and counts != COMMITTED_COUNTS:
            raise ValueError(f"{output} holds the committed test subset of {COMMITTED_COUNTS}; writing {counts} "
                             "there would change what the tests read. Give another --output")  # fmt: skip
        (x_train, y_train), (x_test, y_test) = load_dataset(args.dataset, args.mnist_dir)
        for name, available in (("num_train", len(x_train)), ("num_test", len(x_test))):
            if counts[name] > available:
                raise ValueError(f"Expected `{name}` at most {available}, the images in {args.mnist_dir or 'the set'}. "
                                 f"Received: {name}={counts[name]}")  # fmt: skip
    except (MNISTError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    output.mkdir(parents=True, exist_ok=True)
    subsets = {
        "train": (x_train[: args.num_train], y_train[: args.num_train]),
        "test": (x_test[: args.num_test], y_test[: args.num_test]),
    }
    for split, (images_name, labels_name) in MNIST_FILES.items():
        images, labels = subsets[split]
        write_idx(output / images_name, images, IMAGE_MAGIC)
        write_idx(output / labels_name, labels, LABEL_MAGIC)
    print(f"wrote {args.num_train} training and {args.num_test} test images to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

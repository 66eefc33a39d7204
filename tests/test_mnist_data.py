"""The MNIST loader: reads the committed IDX subsets (MNIST and Fashion-MNIST) and rejects bad files with one
clear line that names the data set."""

import gzip
import shutil

import numpy as np
import pytest

from conftest import MNIST_SUBSET_DIR, REPO_ROOT, run_python
from mnist_data import MNIST_FILES, MNISTError, flatten_and_scale, load_dataset, load_mnist, read_idx_pair

TRAIN_IMAGES, TRAIN_LABELS = MNIST_FILES["train"]
SUBSETS = {"mnist": MNIST_SUBSET_DIR, "fashion_mnist": REPO_ROOT / "tests" / "data" / "fashion-mnist"}


class Copy:
    """A writable copy of a committed subset: ``folder`` and ``dataset``; both read by the same checks."""

    def __init__(self, folder, dataset):
        self.folder, self.dataset = folder, dataset

    def load(self):
        return load_dataset(self.dataset, self.folder)

    def __truediv__(self, name):
        return self.folder / name


@pytest.fixture(params=list(SUBSETS), ids=list(SUBSETS))
def mnist_copy(request, tmp_path):
    folder = tmp_path / request.param
    shutil.copytree(SUBSETS[request.param], folder)
    return Copy(folder, request.param)


def rewrite(path, transform):
    with gzip.open(path, "rb") as f:
        data = f.read()
    with gzip.open(path, "wb") as f:
        f.write(transform(data))


def test_loads_subset_like_keras_datasets():
    (x_train, y_train), (x_test, y_test) = load_mnist(MNIST_SUBSET_DIR)
    assert x_train.shape == (1000, 28, 28) and x_train.dtype == np.uint8
    assert y_train.shape == (1000,) and x_test.shape == (200, 28, 28) and y_test.shape == (200,)
    assert set(np.unique(y_train)) == set(range(10))
    # Real digits: ink in the middle, none in the corners, full 0-255 range.
    assert x_train[:, 10:18, 10:18].mean() > 50 and x_train[:, :3, :3].max() == 0
    assert x_train.max() == 255


def test_mnist_dir_environment_variable(monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(MNIST_SUBSET_DIR))
    (x_train, _), _ = load_mnist()
    assert len(x_train) == 1000


def test_loads_the_fashion_subset_from_its_own_variable(monkeypatch):
    """Fashion-MNIST: the same format and counts, other images (clothes fill the frame: ink in the corners of
    some, a brighter mean), ten classes, read from FASHION_MNIST_DIR while MNIST_DIR points elsewhere."""
    monkeypatch.setenv("FASHION_MNIST_DIR", str(SUBSETS["fashion_mnist"]))
    monkeypatch.setenv("MNIST_DIR", str(MNIST_SUBSET_DIR))
    (x_train, y_train), (x_test, y_test) = load_dataset("fashion_mnist")
    (mnist_train, _), _ = load_mnist()
    assert x_train.shape == (1000, 28, 28) and x_test.shape == (200, 28, 28) and x_train.dtype == np.uint8
    assert set(np.unique(y_train)) == set(range(10)) and y_test.shape == (200,)
    assert x_train.mean() > 1.5 * mnist_train.mean() and x_train[:, 0, :].max() > 0
    assert not np.array_equal(x_train, mnist_train)


def test_an_unknown_dataset_is_refused():
    with pytest.raises(MNISTError, match=r"one of \('mnist', 'fashion_mnist'\). Received: dataset='kmnist'"):
        load_dataset("kmnist", MNIST_SUBSET_DIR)


def test_flatten_and_scale():
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8).repeat(14, 1).repeat(14, 2)
    x = flatten_and_scale(images)
    assert x.shape == (1, 784) and x.dtype == np.float32
    np.testing.assert_allclose([x.min(), x.max()], [0.0, 1.0])


@pytest.mark.parametrize(
    "images, match",
    [
        (np.zeros((2, 28, 28), dtype=np.float32), "dtype=float32"),
        (np.zeros((2, 784), dtype=np.uint8), r"shape=\(2, 784\)"),
    ],
    ids=["float-images", "flat-images"],
)
def test_flatten_and_scale_rejects_bad_images(images, match):
    with pytest.raises(ValueError, match=match):
        flatten_and_scale(images)


@pytest.mark.parametrize("dataset, variable, name", [("mnist", "MNIST_DIR", "MNIST"),
                                                     ("fashion_mnist", "FASHION_MNIST_DIR", "Fashion-MNIST")])
def test_missing_folder(dataset, variable, name, monkeypatch, tmp_path):
    monkeypatch.setenv(variable, str(tmp_path / "nowhere"))
    with pytest.raises(MNISTError, match=f"^{name} folder not found: .*nowhere"):
        load_dataset(dataset)


def test_missing_file(mnist_copy):
    (mnist_copy / TRAIN_LABELS).unlink()
    with pytest.raises(MNISTError, match=f"^Missing MNIST file: expected {TRAIN_LABELS} in {mnist_copy.folder}"):
        mnist_copy.load()


def test_truncated_gzip(mnist_copy):
    path = mnist_copy / TRAIN_IMAGES
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(MNISTError, match=f"^Corrupt or truncated MNIST file {mnist_copy.folder}.*gzip"):
        mnist_copy.load()


def test_not_gzip(mnist_copy):
    (mnist_copy / TRAIN_IMAGES).write_bytes(b"this is not an IDX file at all")
    with pytest.raises(MNISTError, match="Corrupt or truncated"):
        mnist_copy.load()


def test_truncated_payload(mnist_copy):
    rewrite(mnist_copy / TRAIN_IMAGES, lambda data: data[:-784])
    with pytest.raises(MNISTError, match="^Truncated or padded MNIST file .*header promises 1000 items"):
        mnist_copy.load()


def test_wrong_magic_number(mnist_copy):
    # The labels file's magic where the images' belongs.
    rewrite(mnist_copy / TRAIN_IMAGES, lambda data: (0x801).to_bytes(4, "big") + data[4:])
    with pytest.raises(MNISTError, match="Wrong magic number .*expected 0x00000803, found 0x00000801"):
        mnist_copy.load()


def test_images_and_labels_disagree(mnist_copy):
    test_labels = mnist_copy / MNIST_FILES["test"][1]
    with pytest.raises(MNISTError, match="1000 images but .* 200 labels"):
        read_idx_pair(mnist_copy / TRAIN_IMAGES, test_labels)


def test_bad_label(mnist_copy):
    rewrite(mnist_copy / TRAIN_LABELS, lambda data: data[:-1] + bytes([12]))
    with pytest.raises(MNISTError, match="expected digits 0-9, found 12"):
        mnist_copy.load()


def test_cli_reports_one_line_and_exits_nonzero(mnist_copy):
    (mnist_copy / TRAIN_IMAGES).write_bytes(b"garbage")
    result = run_python(["listings/vae/mnist_data.py", "--mnist-dir", mnist_copy.folder, "--dataset", mnist_copy.dataset])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"Corrupt or truncated MNIST file {mnist_copy.folder}" in lines[0]

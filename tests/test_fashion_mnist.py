"""Tests for the offline Fashion-MNIST loader (keras_metapool.data.fashion_mnist)."""

import gzip
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from keras_metapool.data import (
    FASHION_MNIST_CLASS_NAMES,
    fashion_mnist_search_path,
    load_fashion_mnist,
)
from keras_metapool.data import fashion_mnist as fm

ENV_VAR = "KERAS_METAPOOL_FASHION_MNIST_DIR"
NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_idx(path, array, magic=None, truncate=0):
    """Writes ``array`` as an unsigned-byte IDX file (gzipped if ``path`` ends in .gz)."""
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | array.ndim
    data = struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()
    if truncate:
        data = data[:-truncate]
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)


def synthetic(n, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    return images, labels


def write_split(folder, split="train", n=7, gz=True, seed=0):
    images, labels = synthetic(n, seed)
    ext = ".gz" if gz else ""
    image_name, label_name = NAMES[split]
    write_idx(folder / (image_name + ext), images)
    write_idx(folder / (label_name + ext), labels)
    return images, labels


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    """Each test starts with an empty cache and no env override."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    fm._CACHE.clear()
    yield
    fm._CACHE.clear()


def _load_real(split):
    try:
        return load_fashion_mnist(split)
    except FileNotFoundError as e:
        pytest.skip(f"real Fashion-MNIST not installed: {e}")


# ---------------------------------------------------------------- real data


@pytest.mark.parametrize("split,n", [("train", 60_000), ("test", 10_000)])
def test_real_data_shapes_labels_and_pixels(split, n):
    images, labels = _load_real(split)
    assert images.shape == (n, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64
    # Fashion-MNIST is exactly balanced: 6,000 / 1,000 examples per class.
    classes, counts = np.unique(labels, return_counts=True)
    assert classes.tolist() == list(range(10))
    assert counts.tolist() == [n // 10] * 10
    assert images.min() == 0 and images.max() == 255


def test_real_data_limit_is_a_prefix():
    images, labels = _load_real("test")
    few_images, few_labels = load_fashion_mnist("test", limit=123)
    assert few_images.shape == (123, 28, 28) and few_labels.shape == (123,)
    np.testing.assert_array_equal(few_images, images[:123])
    np.testing.assert_array_equal(few_labels, labels[:123])


def test_class_names_in_label_order():
    assert FASHION_MNIST_CLASS_NAMES == (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )


# ----------------------------------------------------------- synthetic IDX


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_synthetic_round_trip(tmp_path, split, gz):
    images, labels = write_split(tmp_path, split, n=7, gz=gz)
    got_images, got_labels = load_fashion_mnist(split, data_dir=tmp_path)
    assert got_images.dtype == np.uint8 and got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels.astype(np.int64))


def test_limit_larger_than_split_returns_everything(tmp_path):
    images, _ = write_split(tmp_path, n=5)
    got, _ = load_fashion_mnist(data_dir=tmp_path, limit=100)
    np.testing.assert_array_equal(got, images)


def test_results_are_read_only_and_cached(tmp_path, monkeypatch):
    write_split(tmp_path, n=4)
    images, labels = load_fashion_mnist(data_dir=tmp_path)
    with pytest.raises(ValueError):
        images[0, 0, 0] = 1
    with pytest.raises(ValueError):
        labels[0] = 1

    # A second call must be served from the cache, not by re-parsing.
    def no_read(*args):
        raise AssertionError("file re-read despite cache")

    monkeypatch.setattr(fm, "_read_idx", no_read)
    again, _ = load_fashion_mnist(data_dir=tmp_path, limit=2)
    np.testing.assert_array_equal(again, images[:2])
    assert not again.flags.writeable


def test_replaced_file_is_reread(tmp_path):
    write_split(tmp_path, n=4, seed=0)
    first, _ = load_fashion_mnist(data_dir=tmp_path)
    new_images, new_labels = write_split(tmp_path, n=4, seed=1)
    # Make sure the stat-based cache key changes even on coarse-mtime filesystems.
    for name in NAMES["train"]:
        path = tmp_path / (name + ".gz")
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second, second_labels = load_fashion_mnist(data_dir=tmp_path)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(second, new_images)
    np.testing.assert_array_equal(second_labels, new_labels)


# ------------------------------------------------------------ bad files


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_truncated_images_raise_value_error_naming_file(tmp_path, gz):
    images, labels = synthetic(3)
    ext = ".gz" if gz else ""
    write_idx(tmp_path / ("train-images-idx3-ubyte" + ext), images, truncate=10)
    write_idx(tmp_path / ("train-labels-idx1-ubyte" + ext), labels)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte") as info:
        load_fashion_mnist(data_dir=tmp_path)
    assert "expected" in str(info.value)


def test_cut_gzip_stream_raises_value_error_naming_file(tmp_path):
    write_split(tmp_path, n=3)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])  # lose the gzip trailer and some data
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte"):
        load_fashion_mnist(data_dir=tmp_path)


def test_not_gzip_at_all_raises_value_error(tmp_path):
    write_split(tmp_path, n=3)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"this is not gzip data")
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        load_fashion_mnist(data_dir=tmp_path)


def test_wrong_magic_raises_value_error_naming_file_and_expected(tmp_path):
    images, labels = synthetic(3)
    # Labels where images belong: valid IDX, wrong magic (0x801 instead of 0x803).
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", labels)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte") as info:
        load_fashion_mnist("test", data_dir=tmp_path)
    assert "0x00000803" in str(info.value)


def test_wrong_image_size_raises_value_error(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 32, 32)))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(2))
    with pytest.raises(ValueError, match="28x28"):
        load_fashion_mnist(data_dir=tmp_path)


def test_out_of_range_label_raises_value_error(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28)))
    write_idx(tmp_path / "train-labels-idx1-ubyte", [3, 10])
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte"):
        load_fashion_mnist(data_dir=tmp_path)


def test_count_mismatch_raises_value_error(tmp_path):
    images, labels = synthetic(5)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels[:4])
    with pytest.raises(ValueError, match="5 images.*4 labels"):
        load_fashion_mnist(data_dir=tmp_path)


# ------------------------------------------------------- finding the files


def test_empty_data_dir_raises_file_not_found_with_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist(data_dir=tmp_path)
    message = str(info.value)
    assert "dataset-fashion-mnist" in message
    assert str(tmp_path) in message
    assert ENV_VAR in message


def test_only_one_file_of_split_is_not_enough(tmp_path):
    write_split(tmp_path, "train", n=3)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError):
        load_fashion_mnist(data_dir=tmp_path)


def test_search_path_order(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert fashion_mnist_search_path() == [
        fm._SYSTEM_DIR,
        tmp_path / "kh" / "datasets" / "fashion-mnist",
    ]
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert fashion_mnist_search_path()[0] == tmp_path / "env"
    assert len(fashion_mnist_search_path()) == 3
    # An explicit data_dir is the only folder searched.
    assert fashion_mnist_search_path(tmp_path / "x") == [tmp_path / "x"]


def test_keras_home_defaults_to_dot_keras(monkeypatch):
    monkeypatch.delenv("KERAS_HOME", raising=False)
    expected = os.path.expanduser(os.path.join("~", ".keras", "datasets", "fashion-mnist"))
    assert str(fashion_mnist_search_path()[-1]) == expected


def test_env_var_override_is_used(tmp_path, monkeypatch):
    # Tiny synthetic split in the env folder must win over the real installed data.
    images, labels = write_split(tmp_path, "test", n=6)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    got_images, got_labels = load_fashion_mnist("test")
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_missing_everywhere_lists_every_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    monkeypatch.setattr(fm, "_SYSTEM_DIR", tmp_path / "system")
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist("test")
    message = str(info.value)
    for folder in fashion_mnist_search_path():
        assert str(folder) in message


# ------------------------------------------------------------ bad arguments


@pytest.mark.parametrize("split", ["validation", "Train", "", None])
def test_bad_split_raises_value_error_listing_splits(split, tmp_path):
    with pytest.raises(ValueError, match=r"'test', 'train'"):
        load_fashion_mnist(split, data_dir=tmp_path)


@pytest.mark.parametrize("limit", [0, -1])
def test_bad_limit_raises_value_error(limit, tmp_path):
    write_split(tmp_path, n=3)
    with pytest.raises(ValueError, match="limit"):
        load_fashion_mnist(data_dir=tmp_path, limit=limit)


def test_module_does_not_import_tensorflow():
    # Load the module file on its own, so only its own imports are measured
    # (not whatever the package __init__ files may import).
    code = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('fm', {fm.__file__!r}); "
        "spec.loader.exec_module(importlib.util.module_from_spec(spec)); "
        "bad = [m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules]; "
        "sys.exit(len(bad))"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0

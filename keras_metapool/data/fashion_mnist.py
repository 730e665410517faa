"""Offline loader for Fashion-MNIST from local IDX files.

The machines this project runs on have no internet access, so instead of
``keras.datasets.fashion_mnist.load_data()`` (which downloads) we read the four
standard IDX files from disk: Debian's ``dataset-fashion-mnist`` package puts
them in ``/usr/share/datasets/fashion-mnist``, and the Keras cache uses the same
file names under ``$KERAS_HOME/datasets/fashion-mnist``.

Only numpy and the standard library are used, so importing this module is cheap.
"""

from __future__ import annotations

import gzip
import operator
import os
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "FASHION_MNIST_CLASS_NAMES",
    "fashion_mnist_search_path",
    "load_fashion_mnist",
]

#: Class names, indexed by label (0..9).
FASHION_MNIST_CLASS_NAMES = (
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

#: Environment variable naming a folder to search before the default ones.
ENV_VAR = "KERAS_METAPOOL_FASHION_MNIST_DIR"
_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

# split -> (images file, labels file), without the optional ".gz".
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
_IMAGE_SIZE = 28
_NUM_CLASSES = len(FASHION_MNIST_CLASS_NAMES)

# (resolved path, mtime_ns, size) -> read-only array. The stat fields make a
# replaced file be re-read; the size cap keeps memory bounded (the real data
# is four files).
_CACHE: dict[tuple[Path, int, int], np.ndarray] = {}
_CACHE_MAX = 8


def fashion_mnist_search_path(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Returns the folders searched for the Fashion-MNIST IDX files, in order.

    Args:
        data_dir: If given, it is the only folder searched.

    Returns:
        ``[data_dir]`` if ``data_dir`` is given. Otherwise the folder named by
        the ``KERAS_METAPOOL_FASHION_MNIST_DIR`` environment variable (if set
        and non-empty), then ``/usr/share/datasets/fashion-mnist`` (Debian's
        ``dataset-fashion-mnist`` package), then
        ``$KERAS_HOME/datasets/fashion-mnist`` (``KERAS_HOME`` defaults to
        ``~/.keras``).
    """
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    folders = []
    if os.environ.get(ENV_VAR):
        folders.append(Path(os.environ[ENV_VAR]).expanduser())
    folders.append(_SYSTEM_DIR)
    keras_home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    folders.append(Path(keras_home).expanduser() / "datasets" / "fashion-mnist")
    return folders


def load_fashion_mnist(
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Loads one split of Fashion-MNIST from local IDX files.

    The first folder of :func:`fashion_mnist_search_path` that holds both files
    of the split (each either plain or ``.gz``) is used. Parsed arrays are
    cached per file for the life of the process, so the returned arrays are
    **read-only** (``arr.flags.writeable`` is False); call ``.copy()`` before
    modifying them in place.

    Args:
        split: ``"train"`` (60,000 examples) or ``"test"`` (10,000 examples).
        data_dir: Folder holding the IDX files. If given, no other folder is
            searched.
        limit: If given, only the first ``limit`` examples are returned (all of
            them if the split is smaller). Must be positive.

    Returns:
        ``(images, labels)``: images is a ``uint8`` array of shape
        ``(N, 28, 28)`` with values 0..255, labels an ``int64`` array of shape
        ``(N,)`` with values 0..9 (see ``FASHION_MNIST_CLASS_NAMES``).

    Raises:
        ValueError: If ``split`` is unknown, ``limit`` is not positive, or a
            file is truncated, corrupt, has the wrong IDX magic number or
            shape, or the image and label counts disagree. The message names
            the file.
        FileNotFoundError: If no searched folder holds both files of the split.
            The message lists the folders tried and how to install the data.
    """
    if split not in _FILES:
        raise ValueError(f"Unknown split {split!r}; valid splits are {sorted(_FILES)}.")
    if limit is not None:
        limit = operator.index(limit)
        if limit <= 0:
            raise ValueError(f"limit must be a positive integer or None, got {limit}.")

    images_path, labels_path = _find_files(split, fashion_mnist_search_path(data_dir))
    images = _load_cached(images_path, _IMAGES_MAGIC)
    labels = _load_cached(labels_path, _LABELS_MAGIC)

    if images.shape[1:] != (_IMAGE_SIZE, _IMAGE_SIZE):
        raise ValueError(
            f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, "
            f"expected {_IMAGE_SIZE}x{_IMAGE_SIZE}."
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path} has {len(images)} images but {labels_path} has "
            f"{len(labels)} labels; expected the same count."
        )
    if len(labels) and labels.max() >= _NUM_CLASSES:
        raise ValueError(
            f"{labels_path}: label {labels.max()} found, expected labels 0..{_NUM_CLASSES - 1}."
        )
    if limit is not None:
        # Slices of read-only arrays are read-only views: no copy needed.
        images, labels = images[:limit], labels[:limit]
    return images, labels


def _find_files(split: str, folders: list[Path]) -> tuple[Path, Path]:
    """Returns the images and labels files of ``split`` from the first folder with both."""
    names = _FILES[split]
    for folder in folders:
        found = [_existing(folder / name) for name in names]
        if all(found):
            return found[0], found[1]
    tried = "\n".join(f"  {folder}" for folder in folders)
    all_files = ", ".join(f"{name}.gz" for pair in _FILES.values() for name in pair)
    raise FileNotFoundError(
        f"Fashion-MNIST {split!r} split not found: no folder holds both "
        f"{names[0]}[.gz] and {names[1]}[.gz]. Folders tried:\n{tried}\n"
        "To fix: on Debian/Ubuntu run `apt-get install dataset-fashion-mnist`; "
        f"or place the four IDX files ({all_files}) in one of those folders; "
        f"or pass data_dir=...; or set {ENV_VAR}=/path/to/folder."
    )


def _existing(stem: Path) -> Path | None:
    """Returns the plain file if present (no decompression needed), else the .gz, else None."""
    for path in (stem, stem.with_name(stem.name + ".gz")):
        if path.is_file():
            return path
    return None


def _load_cached(path: Path, magic: int) -> np.ndarray:
    """Returns the read-only parsed IDX array of ``path``, reading it at most once."""
    path = path.resolve()
    stat = path.stat()
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _CACHE:
        array = _read_idx(path, magic)
        if magic == _LABELS_MAGIC:
            array = array.astype(np.int64)
        array.setflags(write=False)
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))  # evict the oldest entry
        _CACHE[key] = array
    return _CACHE[key]


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parses an unsigned-byte IDX file (plain or gzip) and checks it against ``magic``."""
    what = "images" if magic == _IMAGES_MAGIC else "labels"
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        # Truncated or damaged gzip stream; plain I/O errors propagate as is.
        raise ValueError(
            f"{path}: corrupt gzip data, expected a gzipped IDX {what} file ({e})."
        ) from e

    if len(raw) < 4:
        raise ValueError(f"{path}: only {len(raw)} bytes, expected an IDX {what} file header.")
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        raise ValueError(
            f"{path}: magic number 0x{found:08X}, expected 0x{magic:08X} (IDX {what} file)."
        )
    ndim = magic & 0xFF  # the last magic byte is the number of dimensions
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(f"{path}: truncated header, expected {header_len} bytes, got {len(raw)}.")
    shape = struct.unpack(f">{ndim}I", raw[4:header_len])
    expected = int(np.prod(shape, dtype=np.int64))
    payload = len(raw) - header_len
    if payload != expected:
        raise ValueError(
            f"{path}: {payload} data bytes, expected {expected} for shape {shape} "
            "(file truncated or corrupt)."
        )
    # frombuffer over bytes already yields a read-only array.
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)

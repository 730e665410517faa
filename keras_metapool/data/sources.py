"""``load_dataset``'s sources: Fashion-MNIST files, the cluttered benchmark, tfds, image folders."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_metapool.data.cluttered import make_cluttered_fashion_mnist, parse_cluttered_name
from keras_metapool.data.fashion_mnist import (
    ENV_VAR as FASHION_MNIST_ENV_VAR,
)
from keras_metapool.data.fashion_mnist import (
    FASHION_MNIST_CLASS_NAMES,
    fashion_mnist_search_path,
    load_fashion_mnist,
)

#: The accepted forms of ``load_dataset``'s ``name``.
DATASET_SOURCES = (
    "fashion_mnist",
    "cluttered_fashion_mnist[:KEY=VALUE,...]",
    "tfds:NAME[/CONFIG][:VERSION]",
    "folder:PATH",
)
#: Image files a ``folder:`` dataset reads (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# Buffer of a training shuffle over decoded examples (tfds sources hold
# encoded images of unknown size); in-memory and folder sources shuffle all.
TFDS_SHUFFLE_BUFFER = 10_000


class DatasetNotFoundError(FileNotFoundError, ValueError):
    """A dataset is not available locally (a ``ValueError`` and a ``FileNotFoundError``)."""


@dataclasses.dataclass
class _Source:
    """An ordered, unbatched dataset of ``(raw, label)`` and what is known about it."""

    examples: tf.data.Dataset
    class_names: tuple
    num_examples: int
    # raw -> uint8 image [H, W, C]; None when raw already is a fixed-size
    # image, which lets the pipeline preprocess whole batches at once.
    decode: object
    shuffle_buffer: int


def _open_source(name, split, data_dir, limit, download):
    if not isinstance(name, str):
        raise ValueError(f"Dataset name must be a string, one of {DATASET_SOURCES}; got {name!r}.")
    if name == "fashion_mnist":
        return _fashion_mnist_source(split, data_dir, limit, download)
    cluttered = parse_cluttered_name(name)
    if cluttered is not None:
        return _cluttered_source(cluttered, split, data_dir, limit)
    if name.startswith("tfds:") and len(name) > len("tfds:"):
        return _tfds_source(name[len("tfds:") :], split, data_dir, download)
    if name.startswith("folder:") and len(name) > len("folder:"):
        return _folder_source(name[len("folder:") :], split)
    raise ValueError(f"Unknown dataset {name!r}: expected one of {DATASET_SOURCES}.")


def default_tfds_data_dir():
    """The tfds data folder: ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
    return Path(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets").expanduser()


def _fashion_mnist_source(split, data_dir, limit, download):
    if split not in ("train", "test"):
        raise ValueError(f"Fashion-MNIST has splits 'train' and 'test', got {split!r}.")
    try:
        images, labels = load_fashion_mnist(split, data_dir=data_dir, limit=limit)
    except FileNotFoundError:
        tfds_dir = Path(data_dir).expanduser() if data_dir is not None else default_tfds_data_dir()
        arrays, tfds_status = _fashion_mnist_from_tfds(split, tfds_dir, download)
        if arrays is None:
            raise DatasetNotFoundError(
                _fashion_mnist_missing_message(split, data_dir, tfds_dir, tfds_status)
            ) from None
        images, labels = arrays
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
    images = np.asarray(images, np.uint8).reshape(-1, 28, 28, 1)
    labels = np.asarray(labels).astype(np.int32)
    return _Source(
        examples=tf.data.Dataset.from_tensor_slices((images, labels)),
        class_names=FASHION_MNIST_CLASS_NAMES,
        num_examples=len(labels),
        decode=None,
        shuffle_buffer=len(labels),
    )


def _cluttered_source(params, split, data_dir, limit):
    if split not in ("train", "test"):
        raise ValueError(f"Cluttered Fashion-MNIST has splits 'train' and 'test', got {split!r}.")
    try:
        images, labels = make_cluttered_fashion_mnist(split, params, limit, data_dir)
    except FileNotFoundError as e:
        raise DatasetNotFoundError(
            f"Cluttered Fashion-MNIST is made from the Fashion-MNIST files, which are missing: {e}"
        ) from None
    return _Source(
        examples=tf.data.Dataset.from_tensor_slices(
            (images[..., np.newaxis], labels.astype(np.int32))
        ),
        class_names=FASHION_MNIST_CLASS_NAMES,
        num_examples=len(labels),
        decode=None,
        shuffle_buffer=len(labels),
    )


def _fashion_mnist_from_tfds(split, tfds_dir, download):
    """Returns ``((images, labels), status)``; ``(None, why not)`` if unavailable."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return None, "tensorflow-datasets is not installed"
    builder = tfds.builder("fashion_mnist", data_dir=os.fspath(tfds_dir))
    if not builder.is_prepared():
        if not download:
            return None, "not prepared there"
        builder.download_and_prepare()
    data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
    return data, "prepared"


def _fashion_mnist_missing_message(split, data_dir, tfds_dir, tfds_status):
    folders = fashion_mnist_search_path(data_dir)
    keras_cache = folders[-1] if data_dir is None else None
    listed = "\n".join(
        f"    {folder}" + ("  (Keras cache)" if folder == keras_cache else "") for folder in folders
    )
    return (
        f"Fashion-MNIST {split!r} split not found. Searched, in order:\n"
        f"  the IDX files (train-images-idx3-ubyte[.gz], ..., t10k-labels-idx1-ubyte[.gz]) in\n"
        f"{listed}\n"
        f"  a tensorflow-datasets 'fashion_mnist' in {tfds_dir} ({tfds_status}).\n"
        "To fix, one of:\n"
        "  - `apt-get install dataset-fashion-mnist` "
        "(Debian/Ubuntu: /usr/share/datasets/fashion-mnist);\n"
        f"  - put the four IDX files in a folder and set {FASHION_MNIST_ENV_VAR}=/that/folder "
        "(or pass data_dir= / --data_dir);\n"
        "  - fill the Keras cache with keras.datasets.fashion_mnist.load_data() on a machine "
        "with internet and copy ~/.keras/datasets/fashion-mnist here;\n"
        "  - `tfds build fashion_mnist --data_dir=DIR` on a machine with internet, then pass "
        "data_dir=DIR."
    )


def _tfds_source(spec, split, data_dir, download):
    tfds_dir = Path(data_dir).expanduser() if data_dir is not None else default_tfds_data_dir()
    how_to = (
        f"Download and prepare it first with `tfds build {spec} --data_dir={tfds_dir}` on a "
        "machine with internet (copy that folder here), or pass the folder that holds it as "
        "data_dir= (--data_dir)."
    )
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DatasetNotFoundError(
            f"tfds:{spec} needs tensorflow-datasets: `pip install tensorflow-datasets`."
        ) from None
    try:
        builder = tfds.builder(spec, data_dir=os.fspath(tfds_dir))
    except Exception as e:  # tfds raises several types for unknown names / configs
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DatasetNotFoundError(
            f"tfds dataset {spec!r} is neither known to tensorflow-datasets {tfds.__version__} "
            f"nor prepared in {tfds_dir} ({reason}). {how_to}"
        ) from None
    if not builder.is_prepared():
        if not download:
            raise DatasetNotFoundError(
                f"tfds dataset {spec!r} is not prepared in {tfds_dir} (nothing is downloaded "
                f"at load time). {how_to}"
            )
        builder.download_and_prepare()

    info = builder.info
    try:
        num_examples = int(info.splits[split].num_examples)
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(
            f"tfds dataset {spec!r} has no split {split!r}; its splits are "
            f"{sorted(info.splits.keys())} (slices like 'train[:10%]' work too). ({e})"
        ) from None
    image_key, label_key = _supervised_keys(info)
    image_feature, label_feature = info.features[image_key], info.features[label_key]
    if not isinstance(image_feature, tfds.features.Image):
        raise ValueError(
            f"tfds dataset {spec!r}: feature {image_key!r} is a "
            f"{type(image_feature).__name__}, expected an Image."
        )
    if not isinstance(label_feature, tfds.features.ClassLabel):
        raise ValueError(
            f"tfds dataset {spec!r}: feature {label_key!r} is a "
            f"{type(label_feature).__name__}, expected a ClassLabel."
        )
    # Encoded images are shuffled (small) and decoded later, in parallel.
    examples = builder.as_dataset(
        split=split,
        shuffle_files=False,
        decoders={image_key: tfds.decode.SkipDecoding()},
    ).map(lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int32)))
    return _Source(
        examples=examples,
        class_names=tuple(label_feature.names),
        num_examples=num_examples,
        decode=image_feature.decode_example,
        shuffle_buffer=TFDS_SHUFFLE_BUFFER,
    )


def _supervised_keys(info):
    """(image key, label key): the dataset's supervised keys, else 'image'/'label'."""
    keys = info.supervised_keys
    if keys and len(keys) >= 2 and all(isinstance(k, str) for k in keys[:2]):
        return keys[0], keys[1]
    features = info.features
    if "image" in features and "label" in features:
        return "image", "label"
    raise ValueError(
        f"tfds dataset {info.name!r} has no (image, label) supervised keys and no 'image' "
        f"and 'label' features (features: {sorted(features.keys())}); expected an "
        "image-classification dataset."
    )


def _folder_source(path, split):
    root = Path(path).expanduser()
    layout = (
        f"expected the layout {root}/<split>/<class name>/<image> with images "
        f"{'/'.join(IMAGE_EXTENSIONS)}, e.g. {root}/{split}/cat/0001.jpg"
    )
    if not root.is_dir():
        raise DatasetNotFoundError(f"Dataset folder {root} does not exist: {layout}.")
    split_dirs = sorted(d for d in root.iterdir() if d.is_dir())
    split_dir = root / split
    if not split_dir.is_dir():
        found = [d.name for d in split_dirs]
        raise DatasetNotFoundError(
            f"Dataset folder {root} has no {split!r} split folder (found {found}): {layout}."
        )
    # Labels from the class folders of all splits: the same index means the
    # same class in train and test even if a split lacks a class.
    class_names = tuple(sorted({c.name for d in split_dirs for c in d.iterdir() if c.is_dir()}))
    if not (split_dir.is_dir() and any(c.is_dir() for c in split_dir.iterdir())):
        raise DatasetNotFoundError(f"Split folder {split_dir} has no class subfolders: {layout}.")
    listed = []  # (index within its class, label, path)
    for label, class_name in enumerate(class_names):
        class_dir = split_dir / class_name
        if not class_dir.is_dir():
            continue
        files = sorted(
            f for f in class_dir.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
        )
        listed += [(index, label, os.fspath(f)) for index, f in enumerate(files)]
    # Round-robin over the classes: class by class, `limit` (and a calibration
    # set's first images) would hold the first classes only.
    listed.sort()
    paths = [path for _, _, path in listed]
    labels = [label for _, label, _ in listed]
    if not paths:
        raise DatasetNotFoundError(
            f"Split folder {split_dir} has class folders {list(class_names)} but no images in "
            f"them: {layout}."
        )

    def decode(path):
        # channels=3: grey and RGB files alike become RGB.
        return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)

    return _Source(
        examples=tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, np.int32))),
        class_names=class_names,
        num_examples=len(paths),
        decode=decode,
        shuffle_buffer=len(paths),
    )

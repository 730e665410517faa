"""``tf.data`` input pipelines for MobileNetV2: one entry point, three sources.

:func:`load_dataset` turns a dataset name into a batched, prefetched
``tf.data.Dataset`` of ``(images, labels)`` ready for ``model.fit``:
images float32 ``[B, S, S, 3]`` in ``[-1, 1]`` (MobileNetV2's
``preprocess_input`` scaling, grey images repeated to RGB), labels int32
``[B]``. Sources:

- ``"fashion_mnist"``: Fashion-MNIST from local files, no download. The IDX
  files are searched in ``KERAS_METAPOOL_FASHION_MNIST_DIR``, then
  ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``),
  then the Keras cache ``~/.keras/datasets/fashion-mnist``; last, a
  ``fashion_mnist`` already prepared by tensorflow-datasets in the tfds data
  folder. 60,000 / 10,000 28x28 grey images, held in memory.
- ``"cluttered_fashion_mnist[:KEY=VALUE,...]"``: the spatial benchmark made
  from those files (``keras_metapool.data.cluttered``): each item scaled and
  placed on a 128x128 canvas among crops of other items; the keys change
  its parameters (``canvas``, ``min_scale``, ``max_scale``, ``clutter``,
  ``clutter_size``, ``seed``). Pass ``image_size`` equal to the canvas to
  train at its own resolution.
- ``"tfds:NAME[/CONFIG][:VERSION]"``: any image-classification dataset of
  tensorflow-datasets that is **already prepared** in ``data_dir`` (or the
  tfds default folder, ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
  Nothing is downloaded unless ``download=True``.
- ``"folder:PATH"``: images laid out as ``PATH/<split>/<class name>/*.jpg``
  (``.jpeg`` and ``.png`` too). Class names are the sorted union of the
  class folders of all splits, so a label means the same class in every split.
  The split's images are listed round-robin over the classes (each class's
  files in name order): the first ``limit`` images then hold every class, as
  the first images of Fashion-MNIST and tfds datasets do.

Everything random (shuffle order, augmentation) derives from ``seed``: the
same seed gives the same batches, epoch after epoch, whatever the number of
parallel map calls. The endless training stream (``training=True,
repeat=True``) depends on ``seed`` alone; otherwise, like every seeded
``tf.data`` op, the order also depends on TensorFlow's global seed when one
is set (``keras.utils.set_random_seed``): set the same one for identical runs.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import os
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_metapool._layer_facts import MIN_INPUT_SIZE
from keras_metapool._ranges import OPEN_UNIT
from keras_metapool.data.cluttered import make_cluttered_fashion_mnist, parse_cluttered_name
from keras_metapool.data.fashion_mnist import (
    ENV_VAR as FASHION_MNIST_ENV_VAR,
)
from keras_metapool.data.fashion_mnist import (
    FASHION_MNIST_CLASS_NAMES,
    fashion_mnist_search_path,
    load_fashion_mnist,
)
from keras_metapool.data.splits import held_out_count, split_for_search

__all__ = [
    "AUGMENTATIONS",
    "DATASET_SOURCES",
    "DatasetInfo",
    "DatasetNotFoundError",
    "IMAGE_EXTENSIONS",
    "MIN_IMAGE_SIZE",
    "SEARCH_PARTS",
    "load_dataset",
]

#: The accepted forms of ``load_dataset``'s ``name``.
DATASET_SOURCES = (
    "fashion_mnist",
    "cluttered_fashion_mnist[:KEY=VALUE,...]",
    "tfds:NAME[/CONFIG][:VERSION]",
    "folder:PATH",
)
#: Training augmentations: see :func:`load_dataset`.
AUGMENTATIONS = ("basic", "randaugment", "none")
#: The two parts of ``keras_metapool.data.split_for_search``.
SEARCH_PARTS = ("weights", "arch")
#: Image files a ``folder:`` dataset reads (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
#: The smallest input MobileNetV2MP takes (it downsamples 32x).
MIN_IMAGE_SIZE = MIN_INPUT_SIZE

# Random resized crop ("basic" augmentation): share of the image area kept and
# aspect-ratio range of the crop. The lower area bound is 0.25 rather than
# Inception's 0.08: the sources here include 28x28 images, where an 8% crop
# keeps a handful of pixels.
CROP_AREA_RANGE = (0.25, 1.0)
CROP_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)
# RandAugment-style ops: this many ops per image, each drawn uniformly from
# _RANDAUGMENT_OPS, with these strengths.
RANDAUGMENT_LAYERS = 2
RANDAUGMENT_COLOR = 0.4  # brightness / contrast / saturation factor in 1 +- this
RANDAUGMENT_TRANSLATE = 0.15  # shift up to this share of the width / height
RANDAUGMENT_ROTATE_DEGREES = 20.0
RANDAUGMENT_CUTOUT = 0.3  # side of the cut-out square, share of the shorter side
_CUTOUT_FILL = 127.5  # mid grey: 0 after scaling to [-1, 1]
# Buffer of a training shuffle over decoded examples (tfds sources hold
# encoded images of unknown size); in-memory and folder sources shuffle all.
TFDS_SHUFFLE_BUFFER = 10_000


class DatasetNotFoundError(FileNotFoundError, ValueError):
    """A dataset is not available locally (a ``ValueError`` and a ``FileNotFoundError``)."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What :func:`load_dataset` loaded.

    Attributes:
        source: The ``name`` given to ``load_dataset``, e.g. ``"fashion_mnist"``.
        num_classes: Number of classes (labels are ``0 .. num_classes - 1``).
        class_names: Class name of each label index.
        num_examples: Examples in the dataset, after ``limit`` and
            ``search_part`` (one epoch, before batching).
        image_size: Height and width of the images yielded.
    """

    source: str
    num_classes: int
    class_names: tuple
    num_examples: int
    image_size: int


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


def load_dataset(
    name,
    split="train",
    image_size=224,
    batch_size=64,
    training=False,
    augment="basic",
    seed=0,
    data_dir=None,
    limit=None,
    search_part=None,
    search_fraction=0.5,
    drop_remainder=False,
    repeat=False,
    *,
    start_batch=0,
    download=False,
):
    """Loads an image-classification dataset as batches of MobileNetV2 inputs.

    The pipeline: the split's examples in a fixed order -> the first
    ``limit`` -> the ``search_part`` (``split_for_search``, before any
    shuffling, so the two parts are disjoint and together cover the split) ->
    if ``training``: a seeded shuffle, redone every epoch -> ``repeat`` ->
    decode, resize (bilinear) and augment in parallel, in order -> batch ->
    prefetch.

    **Global batch.** ``batch_size`` is the global batch: under a
    ``tf.distribute`` strategy with N replicas (see
    ``keras_metapool.distribute.make_strategy``) ``model.fit`` splits each
    batch into N per-replica batches of ``batch_size / N``. Pass the same
    ``batch_size`` on every worker of a multi-worker run: the dataset's
    auto-shard policy is ``DATA``, so each worker keeps its own part of every
    global batch (correct for in-memory data, folders and tfds alike, and
    independent of the number of files). For TPUs use ``drop_remainder=True``
    (static shapes).

    **Augmentation** (only when ``training=True``; evaluation images are only
    resized):

    - ``"basic"``: random resized crop (area 25-100% of the image, aspect
      ratio 3/4-4/3, resized to ``image_size``) and a random horizontal flip.
    - ``"randaugment"``: first two ops per image drawn from identity,
      brightness, contrast, saturation (no effect on grey images), translate,
      rotate and cutout, with fixed strengths (the ``RANDAUGMENT_*``
      constants), then the ``"basic"`` crop and flip.
    - ``"none"``: plain resize, as for evaluation (only the shuffle remains).

    Args:
        name: ``"fashion_mnist"``, ``"cluttered_fashion_mnist"`` (optionally
            with ``:KEY=VALUE,...``), ``"tfds:NAME[/CONFIG][:VERSION]"`` (e.g.
            ``"tfds:imagenette/320px"``) or ``"folder:PATH"``; see the module
            docstring.
        split: ``"train"`` or ``"test"`` for (cluttered) Fashion-MNIST; any split string
            of the tfds dataset (``"validation"``, ``"train[:10%]"``); the
            split subfolder for ``folder:``.
        image_size: Height and width of the images yielded (>= 32).
        batch_size: Global batch size (>= 1).
        training: If True, shuffle (reshuffled every epoch) and augment.
        augment: ``"basic"``, ``"randaugment"`` or ``"none"``; ignored unless
            ``training``.
        seed: Integer from which the shuffle order and all augmentation
            randomness derive.
        data_dir: For ``fashion_mnist``, the one folder searched for the IDX
            files (and the tfds data folder tried after it); for ``tfds:``, the
            tfds data folder. Ignored by ``folder:``.
        limit: If given, only the first ``limit`` examples of the split are
            used (the same ones every time; for ``folder:``, round-robin over
            the classes).
        search_part: ``None`` (the whole split), ``"weights"`` or ``"arch"``:
            that part of ``keras_metapool.data.split_for_search(split,
            search_fraction)``.
        search_fraction: Share of the examples in the ``"arch"`` part, in
            (0, 1).
        drop_remainder: Drop the last batch if it is smaller than
            ``batch_size``.
        repeat: If True, the dataset is endless (use with
            ``steps_per_epoch``). With ``training`` it is a sequence of
            passes over the examples, pass ``p`` shuffled and augmented by
            seeds derived from ``(seed, p)`` and batched on its own
            (``ceil(N / batch_size)`` batches, the last one smaller unless
            ``drop_remainder``): the same batches in any process.
        start_batch: With ``training`` and ``repeat``: start the stream at
            its batch ``start_batch`` (pass ``start_batch // batches per
            pass``, the batches before it in that pass skipped unprocessed).
            A run resumed after ``k`` steps passes ``start_batch=k`` and sees
            exactly the batches the uninterrupted run saw from there.
        download: tfds only: download and prepare a tfds dataset that is not
            prepared in ``data_dir``. Off by default: loading never touches
            the network (and never hangs on a machine without it).

    Returns:
        ``(dataset, info)``: the ``tf.data.Dataset`` of ``(images, labels)``
        (images float32 ``[B, image_size, image_size, 3]`` in ``[-1, 1]``,
        labels int32 ``[B]``) and a :class:`DatasetInfo`.

    Raises:
        DatasetNotFoundError: (a ``ValueError``) if the data is not available
            locally: Fashion-MNIST in none of the searched places, a tfds
            dataset unknown or not prepared in ``data_dir``, a ``folder:``
            path, split folder, class folder or images missing. The message
            says what was searched and how to get the data.
        ValueError: for an unknown source prefix, split or argument value, or
            data with fewer than 2 classes.
    """
    image_size = _positive_int("image_size", image_size, minimum=MIN_IMAGE_SIZE)
    start_batch = _positive_int("start_batch", start_batch, minimum=0)
    if start_batch and not (training and repeat):
        raise ValueError(
            f"`start_batch` ({start_batch}) needs training=True and repeat=True: only the "
            "training stream has batches to resume from."
        )
    batch_size = _positive_int("batch_size", batch_size)
    seed = _positive_int("seed", seed, minimum=0)
    if limit is not None:
        limit = _positive_int("limit", limit)
    if augment not in AUGMENTATIONS:
        raise ValueError(f"`augment` must be one of {AUGMENTATIONS}, got {augment!r}.")
    if search_part not in (None, *SEARCH_PARTS):
        raise ValueError(f"`search_part` must be None, 'weights' or 'arch', got {search_part!r}.")
    OPEN_UNIT.check("search_fraction", search_fraction)

    source = _open_source(name, split, data_dir, limit, download)
    if len(source.class_names) < 2:
        found = ", ".join(repr(c) for c in source.class_names) or "none"
        raise ValueError(
            f"{name!r} has {len(source.class_names)} class ({found}): classification needs at "
            "least 2 (a model with one class is always right and learns nothing). For a "
            "folder: dataset, put each class's images in its own folder, PATH/<split>/<class>/."
        )
    examples, num_examples = source.examples, source.num_examples
    if limit is not None and limit < num_examples:
        examples, num_examples = examples.take(limit), limit
    if search_part is not None:
        num_arch = held_out_count(num_examples, search_fraction)
        num_examples = num_arch if search_part == "arch" else num_examples - num_arch
    if num_examples == 0:
        raise ValueError(
            f"{name!r} split {split!r} has no examples left (limit={limit}, "
            f"search_part={search_part!r}, search_fraction={search_fraction}); "
            "expected at least one."
        )
    if search_part is not None:
        weights_part, arch_part = split_for_search(examples, search_fraction)
        examples = weights_part if search_part == "weights" else arch_part
    examples = examples.apply(tf.data.experimental.assert_cardinality(num_examples))

    augment = augment if training else "none"
    parallel = {"num_parallel_calls": tf.data.AUTOTUNE, "deterministic": True}

    def preprocess(images, random_seed):
        return _preprocess(images, image_size, augment, random_seed)

    if training and repeat:
        dataset = _pass_stream(
            examples, source, num_examples, batch_size, drop_remainder, seed, start_batch,
            preprocess, augment != "none",
        )  # fmt: skip
        return _finish(dataset, name, source, num_examples, image_size)
    if training:
        examples = examples.shuffle(
            min(num_examples, source.shuffle_buffer),
            seed=_derived_seed(seed, "shuffle"),
            reshuffle_each_iteration=True,
        )
    if repeat:
        examples = examples.repeat()

    # One stateless seed pair per element (or batch), new every epoch:
    # Dataset.random is re-randomized on each iteration, yet reproducible.
    random_seeds = tf.data.Dataset.random(
        seed=_derived_seed(seed, "augment"), rerandomize_each_iteration=True
    ).batch(2)
    if source.decode is None:
        # Fixed-size images: preprocess whole batches (far fewer map calls).
        dataset = examples.batch(batch_size, drop_remainder=drop_remainder)
        if augment == "none":
            dataset = dataset.map(lambda x, y: (preprocess(x, None), y), **parallel)
        else:
            dataset = tf.data.Dataset.zip((dataset, random_seeds)).map(
                lambda xy, s: (preprocess(xy[0], s), xy[1]), **parallel
            )
    else:
        decode = source.decode

        def one(raw, label, random_seed=None):
            return preprocess(decode(raw)[tf.newaxis], random_seed)[0], label

        if augment == "none":
            dataset = examples.map(one, **parallel)
        else:
            dataset = tf.data.Dataset.zip((examples, random_seeds)).map(
                lambda xy, s: one(xy[0], xy[1], s), **parallel
            )
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return _finish(dataset, name, source, num_examples, image_size)


def _pass_stream(
    examples, source, num_examples, batch_size, drop_remainder, seed, start_batch, preprocess,
    augmenting,
):  # fmt: skip
    """The endless training stream: pass after pass, each a function of ``(seed, pass)``."""
    per_pass = (
        num_examples // batch_size if drop_remainder else math.ceil(num_examples / batch_size)
    )
    if per_pass == 0:
        raise ValueError(
            f"{num_examples} examples make no batch of {batch_size} with drop_remainder=True; "
            "expected at least one: lower batch_size."
        )
    first_pass, skipped = divmod(start_batch, per_pass)
    buffer = min(num_examples, source.shuffle_buffer)
    shuffle_seed, augment_seed = _derived_seed(seed, "shuffle"), _derived_seed(seed, "augment")
    parallel = {"num_parallel_calls": tf.data.AUTOTUNE, "deterministic": True}

    def one_pass(index):
        # NOTE: a tensor seed per pass: pass p's order does not depend on how
        # many passes this process made before it (a resumed run makes fewer).
        # The global seed is set aside while tracing: TensorFlow combines it with
        # an op seed by comparing them, which a tensor seed cannot take part in
        # (it fails when the global seed is 0); the pass seed decides alone.
        tf.compat.v1.get_default_graph().seed = None
        ordered = examples.shuffle(
            buffer, seed=shuffle_seed * 1_000_003 + index, reshuffle_each_iteration=False
        )
        skip = tf.where(index == first_pass, tf.constant(skipped, tf.int64), 0)

        def seed_of(position):  # a stateless seed pair per (pass, batch or element)
            return tf.stack([tf.constant(augment_seed, tf.int64) + index, position])

        if source.decode is None:
            batches = ordered.batch(batch_size, drop_remainder=drop_remainder).enumerate()
            return batches.skip(skip).map(
                lambda i, xy: (preprocess(xy[0], seed_of(i) if augmenting else None), xy[1]),
                **parallel,
            )
        decode = source.decode

        def one(i, raw, label):
            images = decode(raw)[tf.newaxis]
            return preprocess(images, seed_of(i) if augmenting else None)[0], label

        elements = ordered.enumerate().skip(skip * batch_size)
        return elements.map(lambda i, xy: one(i, *xy), **parallel).batch(
            batch_size, drop_remainder=drop_remainder
        )

    return tf.data.Dataset.range(first_pass, np.iinfo(np.int64).max).flat_map(one_pass)


def _finish(dataset, name, source, num_examples, image_size):
    """Prefetching, the options every pipeline shares, and the ``DatasetInfo``."""
    dataset = dataset.prefetch(tf.data.AUTOTUNE)

    options = tf.data.Options()
    options.deterministic = True
    # DATA: every worker runs the whole pipeline and keeps its share of each
    # batch. FILE sharding would fail on in-memory data and on tfds datasets
    # with fewer files than workers, and would make `limit` per worker.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.with_options(options)

    info = DatasetInfo(
        source=name,
        num_classes=len(source.class_names),
        class_names=tuple(source.class_names),
        num_examples=num_examples,
        image_size=image_size,
    )
    return dataset, info


# ------------------------------------------------------------------ sources


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


# ------------------------------------------------------------ preprocessing


def _preprocess(images, image_size, augment, seed):
    """uint8 ``[B, H, W, C]`` (C = 1 or 3) -> float32 ``[B, S, S, 3]`` in ``[-1, 1]``.

    With ``augment="none"`` this is exactly ``to_model_input``: bilinear
    resize, grey repeated to RGB, ``x / 127.5 - 1``.
    """
    images = tf.cast(images, tf.float32)
    size = (image_size, image_size)
    if augment == "none":
        images = tf.image.resize(images, size, method="bilinear")
    else:
        crop_seed, rand_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        if augment == "randaugment":
            # At source resolution: cheaper than at image_size, same effect.
            images = _rand_augment(images, rand_seed)
        images = _random_resized_crop_and_flip(images, size, crop_seed)
    # Scale before repeating grey to RGB: a third of the arithmetic.
    images = _to_rgb(images / 127.5 - 1.0)
    images.set_shape([None, image_size, image_size, 3])
    return images


def _to_rgb(images):
    channels = images.shape[-1]
    if channels == 1:
        return tf.repeat(images, 3, axis=-1)
    if channels == 3:
        return images
    if channels is not None:
        if channels == 4:  # RGBA: drop alpha
            return images[..., :3]
        raise ValueError(f"Images must have 1, 3 or 4 channels, got {channels}.")
    return tf.cond(
        tf.shape(images)[-1] == 1,
        lambda: tf.repeat(images, 3, axis=-1),
        lambda: images[..., :3],
    )


def _uniform(seed, batch, low, high):
    return tf.random.stateless_uniform([batch], seed, minval=low, maxval=high)


def _random_resized_crop_and_flip(images, size, seed):
    """Per-image random crop (area and aspect ratio as CROP_*) resized to ``size``, half flipped."""
    batch = tf.shape(images)[0]
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 5))
    area = _uniform(seeds[0], batch, *CROP_AREA_RANGE)
    log_aspect = _uniform(seeds[1], batch, *(math.log(r) for r in CROP_ASPECT_RANGE))
    aspect = tf.exp(log_aspect)
    # Box sides as fractions of the image's height and width.
    height = tf.minimum(tf.sqrt(area / aspect), 1.0)
    width = tf.minimum(tf.sqrt(area * aspect), 1.0)
    top = _uniform(seeds[2], batch, 0.0, 1.0) * (1.0 - height)
    left = _uniform(seeds[3], batch, 0.0, 1.0) * (1.0 - width)
    right = left + width
    # crop_and_resize mirrors a box whose left edge is right of its right
    # edge: the horizontal flip comes free with the crop.
    flip = _uniform(seeds[4], batch, 0.0, 1.0) < 0.5
    left, right = tf.where(flip, right, left), tf.where(flip, left, right)
    boxes = tf.stack([top, left, top + height, right], axis=1)
    return tf.image.crop_and_resize(images, boxes, tf.range(batch), size, method="bilinear")


def _rand_augment(images, seed):
    """RANDAUGMENT_LAYERS ops per image, each one of _RANDAUGMENT_OPS at random."""
    batch = tf.shape(images)[0]
    for layer_seed in tf.unstack(tf.random.experimental.stateless_split(seed, RANDAUGMENT_LAYERS)):
        choice_seed, *op_seeds = tf.unstack(
            tf.random.experimental.stateless_split(layer_seed, 1 + len(_RANDAUGMENT_OPS))
        )
        choice = tf.random.stateless_uniform(
            [batch], choice_seed, minval=0, maxval=len(_RANDAUGMENT_OPS), dtype=tf.int32
        )
        # Every op on the whole batch, then each image keeps its chosen one:
        # vectorized, and cheap at source resolution.
        candidates = tf.stack(
            [op(images, s) for op, s in zip(_RANDAUGMENT_OPS, op_seeds)], axis=1
        )  # [B, num_ops, H, W, C]
        images = tf.gather(candidates, choice, axis=1, batch_dims=1)
    return images


def _factor(seed, batch, strength):
    """Per-image factor in 1 +- strength, shaped to broadcast over [B, H, W, C]."""
    return tf.reshape(_uniform(seed, batch, 1.0 - strength, 1.0 + strength), [-1, 1, 1, 1])


def _identity(images, seed):
    del seed
    return images


def _brightness(images, seed):
    return tf.clip_by_value(images * _factor(seed, tf.shape(images)[0], RANDAUGMENT_COLOR), 0, 255)


def _contrast(images, seed):
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    factor = _factor(seed, tf.shape(images)[0], RANDAUGMENT_COLOR)
    return tf.clip_by_value(mean + factor * (images - mean), 0, 255)


def _saturation(images, seed):
    # Blend with the grey version; grey images are unchanged.
    grey = tf.reduce_mean(images, axis=-1, keepdims=True)
    factor = _factor(seed, tf.shape(images)[0], RANDAUGMENT_COLOR)
    return tf.clip_by_value(grey + factor * (images - grey), 0, 255)


def _transform(images, transforms, fill_value=0.0):
    """Applies per-image projective transforms (output -> input point maps), zero fill."""
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=fill_value,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


def _translate(images, seed):
    shape = tf.shape(images)
    batch = shape[0]
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    dx_seed, dy_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    dx = _uniform(dx_seed, batch, -RANDAUGMENT_TRANSLATE, RANDAUGMENT_TRANSLATE) * width
    dy = _uniform(dy_seed, batch, -RANDAUGMENT_TRANSLATE, RANDAUGMENT_TRANSLATE) * height
    ones, zeros = tf.ones_like(dx), tf.zeros_like(dx)
    transforms = tf.stack([ones, zeros, -dx, zeros, ones, -dy, zeros, zeros], axis=1)
    return _transform(images, transforms)


def _rotate(images, seed):
    shape = tf.shape(images)
    batch = shape[0]
    center_y = (tf.cast(shape[1], tf.float32) - 1.0) / 2.0
    center_x = (tf.cast(shape[2], tf.float32) - 1.0) / 2.0
    limit = math.radians(RANDAUGMENT_ROTATE_DEGREES)
    angle = _uniform(seed, batch, -limit, limit)
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Output point (x, y) samples the input at the point rotated back by angle.
    offset_x = center_x - cos * center_x - sin * center_y
    offset_y = center_y + sin * center_x - cos * center_y
    zeros = tf.zeros_like(angle)
    transforms = tf.stack([cos, sin, offset_x, -sin, cos, offset_y, zeros, zeros], axis=1)
    return _transform(images, transforms)


def _cutout(images, seed):
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    side = tf.cast(tf.minimum(height, width), tf.float32) * RANDAUGMENT_CUTOUT
    y_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    center_y = _uniform(y_seed, batch, 0.0, 1.0) * tf.cast(height, tf.float32)
    center_x = _uniform(x_seed, batch, 0.0, 1.0) * tf.cast(width, tf.float32)
    rows = tf.cast(tf.range(height), tf.float32)[tf.newaxis, :, tf.newaxis]
    cols = tf.cast(tf.range(width), tf.float32)[tf.newaxis, tf.newaxis, :]
    inside = (tf.abs(rows - center_y[:, None, None]) < side / 2) & (
        tf.abs(cols - center_x[:, None, None]) < side / 2
    )
    return tf.where(inside[..., tf.newaxis], _CUTOUT_FILL, images)


_RANDAUGMENT_OPS = (_identity, _brightness, _contrast, _saturation, _translate, _rotate, _cutout)


# ------------------------------------------------------------------ helpers


def _positive_int(what, value, minimum=1):
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"`{what}` must be an integer >= {minimum}, got {value!r}.") from None
    if number < minimum:
        raise ValueError(f"`{what}` must be an integer >= {minimum}, got {value!r}.")
    return number


def _derived_seed(seed, purpose):
    """A distinct, reproducible op seed per purpose (so shuffle and augmentation differ)."""
    return zlib.crc32(f"{seed}:{purpose}".encode()) & 0x7FFFFFFF

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
import zlib

import numpy as np
import tensorflow as tf

from keras_metapool._layer_facts import MIN_INPUT_SIZE
from keras_metapool._ranges import OPEN_UNIT
from keras_metapool.data.augment import _preprocess
from keras_metapool.data.sources import (
    DATASET_SOURCES,
    IMAGE_EXTENSIONS,
    DatasetNotFoundError,
    _open_source,
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

#: Training augmentations: see :func:`load_dataset`.
AUGMENTATIONS = ("basic", "randaugment", "none")
#: The two parts of ``keras_metapool.data.split_for_search``.
SEARCH_PARTS = ("weights", "arch")
#: The smallest input MobileNetV2MP takes (it downsamples 32x).
MIN_IMAGE_SIZE = MIN_INPUT_SIZE


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
    image_size, batch_size, seed, limit, start_batch = _checked_arguments(
        image_size, batch_size, seed, limit, start_batch, training, repeat, augment,
        search_part, search_fraction,
    )  # fmt: skip
    source = _open_source(name, split, data_dir, limit, download)
    examples, num_examples = _selected_examples(
        name, split, source, limit, search_part, search_fraction
    )

    augment = augment if training else "none"

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

    dataset = _preprocessed_batches(
        examples, source, batch_size, drop_remainder, seed, augment, preprocess
    )
    return _finish(dataset, name, source, num_examples, image_size)


def _selected_examples(name, split, source, limit, search_part, search_fraction):
    """``(examples, count)``: the source's first ``limit`` examples, or their search part.

    Raises:
        ValueError: for data with fewer than 2 classes, or no example left.
    """
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
    return examples.apply(tf.data.experimental.assert_cardinality(num_examples)), num_examples


def _preprocessed_batches(examples, source, batch_size, drop_remainder, seed, augment, preprocess):
    """``examples`` (shuffled or repeated as asked) decoded, preprocessed and batched."""
    parallel = {"num_parallel_calls": tf.data.AUTOTUNE, "deterministic": True}
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
    return dataset


def _checked_arguments(
    image_size, batch_size, seed, limit, start_batch, training, repeat, augment, search_part,
    search_fraction,
):  # fmt: skip
    """``load_dataset``'s arguments checked: ``(image_size, batch_size, seed, limit,
    start_batch)`` as ints; one ValueError naming the first that is wrong."""
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
    return image_size, batch_size, seed, limit, start_batch


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

"""The training subcommands' data: splits, the training stream, where a rerun resumes."""

from __future__ import annotations

import math
import os

import numpy as np
import tensorflow as tf

from keras_metapool.data import load_dataset


def load_split(options, split, *, training, limit=None, repeat=False, **kwargs):
    """``keras_metapool.data.load_dataset`` with the options' data settings."""
    return load_dataset(
        options.dataset,
        split=split,
        image_size=options.image_size,
        batch_size=options.batch_size,
        training=training,
        augment=options.augment,
        seed=options.seed,
        data_dir=options.data_dir,
        limit=limit,
        drop_remainder=training and options.strategy == "tpu",  # TPUs want static shapes
        repeat=repeat,
        **kwargs,
    )


def load_training_stream(options, **kwargs):
    """The training split as ``load_dataset``'s endless stream of passes, started at the
    batch a resumed run continues from, so that it sees the uninterrupted run's batches."""
    data, info = load_split(options, "train", training=True, repeat=True, **kwargs)
    start = resumed_epoch(options.output_path("backup")) * steps_per_epoch(
        options, info.num_examples
    )
    if start:
        data, info = load_split(
            options, "train", training=True, repeat=True, start_batch=start, **kwargs
        )
    return data, info


def one_hot_labels(dataset, num_classes):
    """Maps integer labels to one-hot (the label-smoothing loss takes one-hot)."""
    return dataset.map(
        lambda images, labels: (images, tf.one_hot(labels, num_classes)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def take_images(dataset, count):
    """The first ``count`` images of a batched dataset, as a float32 array."""
    batches, total = [], 0
    for images, _ in dataset:
        batches.append(np.asarray(images))
        total += len(batches[-1])
        if total >= count:
            break
    return np.concatenate(batches)[:count]


def calibration_images(options):
    """The first ``--calibration_samples`` training images, preprocessed, unaugmented."""
    calibration, _ = load_split(options, "train", training=False, limit=options.calibration_samples)
    return take_images(calibration, options.calibration_samples)


def steps_per_epoch(options, num_examples):
    """Training steps per epoch: ``--steps_per_epoch`` or one pass over the data."""
    if options.steps_per_epoch:
        return options.steps_per_epoch
    return max(1, math.ceil(num_examples / options.batch_size))


def backup_epoch(backup_dir):
    """The last epoch (0-based) ``BackupAndRestore`` saved in ``backup_dir``, or None."""
    checkpoint = tf.train.latest_checkpoint(os.path.join(backup_dir, "chief"))
    if checkpoint is None:
        return None
    try:
        reader = tf.train.load_checkpoint(checkpoint)
        epoch = int(reader.get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    except (tf.errors.OpError, ValueError, KeyError):
        return None
    return epoch if epoch >= 0 else None


def resumed_epoch(backup_dir):
    """The epoch (0-based) a rerun continues at: one after the backup's last, or 0."""
    saved = backup_epoch(backup_dir)
    return 0 if saved is None else saved + 1


__all__ = [
    "backup_epoch",
    "resumed_epoch",
    "calibration_images",
    "load_split",
    "load_training_stream",
    "one_hot_labels",
    "steps_per_epoch",
    "take_images",
]

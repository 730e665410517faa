"""What the training subcommands share: data, models, optimizers, callbacks, ``fit``."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import time

import numpy as np
import tensorflow as tf

import keras_metapool.layers  # noqa: F401  (registers the custom layers for load_model)
from keras_metapool._keras import keras
from keras_metapool.cli.console import keras_verbosity, say
from keras_metapool.cli.files import atomic_output, is_chief, keep_csv_epochs_before
from keras_metapool.cli.options import UsageError
from keras_metapool.data import load_dataset
from keras_metapool.models import MobileNetV2MP
from keras_metapool.quantization import quantize_scope

#: Loss and metric names of the compiled models.
ACCURACY = "accuracy"


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


def resumed_epoch(backup_dir):
    """The epoch (0-based) a rerun continues at: one after the backup's last, or 0."""
    saved = backup_epoch(backup_dir)
    return 0 if saved is None else saved + 1


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


def build_model(options, meta_pooling, num_classes, **kwargs):
    """A fresh ``MobileNetV2MP`` (call inside ``strategy.scope()``)."""
    return MobileNetV2MP(
        weights=None,
        input_shape=(options.image_size, options.image_size, 3),
        alpha=options.alpha,
        classes=num_classes,
        meta_pooling=meta_pooling,
        head=options.head,
        batch_norm_momentum=options.batch_norm_momentum,
        **kwargs,
    )


def learning_rate_schedule(peak, total_steps, warmup_steps=0):
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then cosine decay to 0.

    Keras' own ``CosineDecay`` (its ``warmup_target``/``warmup_steps``), so
    that saved models reload without custom objects.
    """
    total_steps = max(1, int(total_steps))
    warmup_steps = min(max(0, int(warmup_steps)), total_steps - 1)
    decay_steps = max(1, total_steps - warmup_steps)
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(peak, decay_steps)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps, warmup_target=peak, warmup_steps=warmup_steps
    )


def make_optimizer(options, learning_rate, total_steps, warmup_steps=0):
    """The weight optimizer (``--optimizer``) on the warm-up + cosine schedule."""
    schedule = learning_rate_schedule(learning_rate, total_steps, warmup_steps)
    weight_decay = options.weight_decay or None
    if options.optimizer == "sgd":
        return keras.optimizers.SGD(
            schedule, momentum=options.momentum, nesterov=True, weight_decay=weight_decay
        )
    return keras.optimizers.Adam(schedule, weight_decay=weight_decay)


def compile_model(model, options, optimizer):
    """Compiles for one-hot labels: smoothed cross-entropy and accuracy."""
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=options.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name=ACCURACY)],
        run_eagerly=options.run_eagerly,
    )


def build_for_training(options, strategy, meta_pooling, num_classes, steps, **kwargs):
    """A compiled ``MobileNetV2MP`` for ``search``/``train``, built under ``strategy``.

    Seeds Keras with ``options.seed`` first; the optimizer warms up over
    ``warmup_epochs`` and decays (cosine) over ``epochs`` of ``steps`` steps.
    ``kwargs`` go to ``MobileNetV2MP`` (``placement``, ``search_candidates``).
    """
    keras.utils.set_random_seed(options.seed)
    with strategy.scope():
        model = build_model(options, meta_pooling, num_classes, **kwargs)
        optimizer = make_optimizer(
            options,
            options.peak_learning_rate,
            options.epochs * steps,
            round(options.warmup_epochs * steps),
        )
        compile_model(model, options, optimizer)
    return model


def load_model(path):
    """A Keras model from ``.keras``, ``.h5`` or a SavedModel folder (QAT ones too).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it is a ``.tflite`` file or not a Keras model.
    """
    if not path:
        raise UsageError("--model is required: the path of a .keras/.h5/SavedModel model.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"--model: {path} does not exist.")
    if path.endswith(".tflite"):
        raise ValueError(f"--model: {path} is a .tflite file; this subcommand needs a Keras model.")
    try:
        if path.endswith(".keras"):
            return keras.models.load_model(path, compile=False)
        # .h5 and SavedModel: QAT models need TF-MOT's scope, float ones do not mind it.
        with quantize_scope():
            return keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for an unreadable file
        raise ValueError(
            f"--model: {path} could not be read as a Keras model (.keras, .h5 or SavedModel "
            f"folder): {type(error).__name__}: {error}. Is the file complete and from "
            "keras_metapool (tf_keras)?"
        ) from error


def evaluate_accuracy(model, dataset, num_classes):
    """Top-1 accuracy of a compiled model on a dataset of (images, integer labels).

    Uses ``model.evaluate``, so that every worker of a multi-worker run takes
    part (reading batch-norm statistics there is a collective operation).
    """
    results = model.evaluate(one_hot_labels(dataset, num_classes), verbose=0, return_dict=True)
    return float(results[ACCURACY])


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` whose files appear whole (temporary file, then rename)."""

    def _save_handler(self, filepath):
        with atomic_output(filepath) as tmp:
            super()._save_handler(tmp)


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


def interruption_advice(backup_dir):
    """What to tell the user of an interrupted ``search``, ``train`` or ``qat``.

    A rerun resumes only from a backup: there is none before the first epoch
    ends, nor once training finished (``fit_timed`` removes it), e.g. when the
    interruption came during the final evaluation or save.
    """
    epoch = backup_epoch(backup_dir)
    if epoch is None:
        return (
            f"No backup to resume from in {backup_dir} (the first epoch had not ended, or "
            "training had already finished): rerunning the same command starts over."
        )
    return f"Rerun the same command to resume from the backup, after epoch {epoch + 1}."


def training_callbacks(options, folder, csv_name, backup_dir, epochs, extra=()):
    """CSV log, TensorBoard (when installed) and BackupAndRestore, plus a line when resuming.

    Returns ``(callbacks, resumed_epoch)``; ``resumed_epoch`` is the epoch
    (0-based) training continues at, or 0. ``extra`` callbacks come first, so
    that what they add to ``logs`` reaches the CSV and TensorBoard. TensorBoard
    writes to ``folder/logs`` (its ``train``/``validation`` runs beneath: every
    subcommand has its own ``folder``, so no further level is needed).
    """
    csv_path = os.path.join(folder, csv_name)
    resumed = resumed_epoch(backup_dir)
    if resumed:
        keep_csv_epochs_before(csv_path, resumed)
        say(
            f"Resuming from the backup in {backup_dir}: epochs 1-{resumed} of {epochs} "
            f"are done, continuing at epoch {resumed + 1}."
        )
    callbacks = [*extra, NaturalOrderCSVLogger(csv_path, append=bool(resumed))]
    if tensorboard_available():
        callbacks.append(
            keras.callbacks.TensorBoard(
                os.path.join(folder, "logs"), update_freq="epoch", profile_batch=0
            )
        )
    else:
        say("TensorBoard is not installed: no TensorBoard logs (pip install tensorboard).")
    # Last: it backs up once the epoch's logs are written, so a run killed in
    # between repeats (and re-logs) that epoch instead of losing it.
    callbacks.append(keras.callbacks.BackupAndRestore(backup_dir))
    return callbacks, resumed


def natural_key(text):
    """Sort key that orders numbers by value: ``block_2`` before ``block_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


class NaturalOrderCSVLogger(keras.callbacks.CSVLogger):
    """CSVLogger whose columns are in natural order (``block_2`` before ``block_10``).

    Keras sorts the columns as strings, which puts ``block_10`` .. ``block_16``
    between ``block_1`` and ``block_2``.
    """

    def on_epoch_end(self, epoch, logs=None):
        if self.keys is None and logs:
            self.keys = sorted(logs, key=natural_key)
        super().on_epoch_end(epoch, logs)


def remove_empty_backup(backup_dir, strategy):
    """Removes ``backup_dir`` once training finished (BackupAndRestore leaves it empty).

    Only the chief does: in a multi-worker run another worker can finish
    ``fit`` while the chief's last backup is being written, and removing the
    then empty ``chief`` folder under it made that save fail.
    """
    if not is_chief(strategy):
        return
    for folder in (os.path.join(backup_dir, "chief"), backup_dir):
        try:
            os.rmdir(folder)
        except OSError:  # missing, or not empty (another run's backup): leave it
            pass


def fit_timed(
    model,
    train_data,
    *,
    num_classes,
    epochs,
    steps,
    callbacks,
    backup_dir,
    strategy,
    validation_data=None,
):
    """The one ``model.fit`` of ``search``, ``train`` and ``qat``, timed.

    Labels are one-hot encoded, an epoch is ``steps`` steps of the endless
    ``train_data`` (``load_training_stream``), and once ``fit`` returns the emptied
    BackupAndRestore folder ``backup_dir`` is removed (``remove_empty_backup``).
    Returns ``(history, seconds)``: ``seconds`` is the wall time of ``fit`` alone.
    """
    start = time.perf_counter()
    history = model.fit(
        one_hot_labels(train_data, num_classes),
        validation_data=(
            None if validation_data is None else one_hot_labels(validation_data, num_classes)
        ),
        epochs=epochs,
        steps_per_epoch=steps,
        callbacks=callbacks,
        verbose=keras_verbosity(),
    )
    seconds = time.perf_counter() - start
    remove_empty_backup(backup_dir, strategy)
    return history, seconds


def tensorboard_available():
    """Whether the ``tensorboard`` package is installed (``tf.summary`` needs it)."""
    return importlib.util.find_spec("tensorboard") is not None

"""What the subcommands share: atomic files, data, models, optimizers, callbacks.

Files: every artifact is written under a temporary name in its own folder and
renamed into place (``os.replace``), so a reader (or an interrupted run) never
sees a half-written file. Temporary names start with ``.`` and hold
``TEMP_MARK``; a run removes those an earlier, killed run left behind
(``remove_stale_temporaries``).
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import math
import os
import re
import shutil
import sys
import time
import warnings

import numpy as np
import tensorflow as tf

from keras_metapool._keras import keras
from keras_metapool.cli.options import UsageError

#: Marks temporary files and folders (``.NAME.tmp-PID.EXT``).
TEMP_MARK = ".tmp-"
#: Loss and metric names of the compiled models.
ACCURACY = "accuracy"


# -- files ------------------------------------------------------------------------------


def temporary_path(path):
    """A temporary sibling of ``path`` that keeps its extension.

    The extension stays last because savers pick the format from it
    (``.keras``, ``.h5``, ``.png``).
    """
    folder, name = os.path.split(os.path.abspath(path))
    stem, extension = os.path.splitext(name)
    return os.path.join(folder, f".{stem}{TEMP_MARK}{os.getpid()}{extension}")


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def replace(source, destination):
    """Moves ``source`` (file or folder) to ``destination``, replacing it.

    A file replaces a file atomically. A folder (SavedModel) cannot replace a
    non-empty folder in one rename, so the old one is renamed aside first and
    deleted after: ``destination`` is either the old or the new complete
    folder, or briefly absent, never a mix.
    """
    if os.path.isdir(destination) and not os.path.islink(destination):
        aside = temporary_path(destination) + ".old"
        _remove(aside)
        os.replace(destination, aside)
        os.replace(source, destination)
        _remove(aside)
    else:
        if os.path.isdir(source) and os.path.lexists(destination):
            os.remove(destination)
        os.replace(source, destination)


@contextlib.contextmanager
def atomic_output(path):
    """Yields a temporary path to write; renames it to ``path`` on success.

    On an exception the temporary file is deleted and ``path`` is untouched.

    Example:
        >>> with atomic_output("out/model.keras") as tmp:
        ...     model.save(tmp)
    """
    path = os.fspath(path)
    tmp = temporary_path(path)
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    replace(tmp, path)


def write_text(path, text):
    """Writes ``text`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return path


def write_json(path, data):
    """Writes ``data`` as indented JSON to ``path`` atomically."""
    return write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"Not JSON serializable: {type(value).__name__}")


def save_keras_model(model, path, **kwargs):
    """``model.save(path)`` through a temporary file (format from the extension)."""
    with atomic_output(path) as tmp, warnings.catch_warnings():
        # HDF5 is chosen on purpose for QAT models (.keras does not reload them).
        warnings.filterwarnings("ignore", message="You are saving your model as an HDF5 file")
        if path.endswith((".keras", ".h5")):
            model.save(tmp, **kwargs)
        else:  # a SavedModel folder
            model.save(tmp, save_format="tf", **kwargs)
    return path


def remove_stale_temporaries(folder):
    """Deletes the temporary files an interrupted run left under ``folder``."""
    if not os.path.isdir(folder):
        return []
    removed = []
    for root, dirs, files in os.walk(folder):
        for name in list(dirs) + files:
            if name.startswith(".") and TEMP_MARK in name:
                path = os.path.join(root, name)
                _remove(path)
                removed.append(path)
                if name in dirs:
                    dirs.remove(name)
    return removed


def read_csv_columns(path):
    """A CSVLogger file as ``{column: [values]}`` (integers as int, numbers as float)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns = {}
    for row in rows:
        for key, value in row.items():
            for parse in (int, float):
                try:
                    value = parse(value)
                    break
                except (TypeError, ValueError):
                    pass
            columns.setdefault(key, []).append(value)
    return columns


def keep_csv_epochs_before(path, epoch):
    """Drops the rows of epochs >= ``epoch`` from a CSVLogger file.

    A run killed after logging an epoch but before backing it up repeats that
    epoch when resumed; without this the CSV would list it twice.
    """
    if not os.path.exists(path):
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    kept = [row for row in body if row and int(float(row[0])) < epoch]
    if len(kept) == len(body):
        return
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(kept)


# -- console ----------------------------------------------------------------------------


def keras_verbosity():
    """Keras ``verbose``: progress bars on a terminal, one line per epoch otherwise."""
    return 1 if sys.stdout.isatty() else 2


def say(text=""):
    """Prints a line now (progress lines must not wait for a buffer)."""
    print(text, flush=True)


def size_text(num_bytes):
    """``1.23 MiB`` / ``456.7 KiB``."""
    if num_bytes >= 1 << 20:
        return f"{num_bytes / (1 << 20):.2f} MiB"
    return f"{num_bytes / 1024:.1f} KiB"


def markdown_table(header, rows):
    """A Markdown table (list of lines) from a header and rows of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


# -- distribution -----------------------------------------------------------------------


def is_chief(strategy):
    """Whether this process writes the artifacts (always, except non-chief workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if task_type in (None, "chief"):
        return True
    if task_type == "worker":
        cluster = resolver.cluster_spec().as_dict()
        return "chief" not in cluster and resolver.task_id == 0
    return False


@contextlib.contextmanager
def artifact_folder(options, strategy):
    """The folder this process writes its own files to.

    The chief writes to ``options.output_dir``. Other workers of a
    multi-worker run must still save (saving reads variables with collective
    ops that every worker joins), so they write to a private folder under it,
    deleted at the end, as Keras' own callbacks do.
    """
    os.makedirs(options.output_dir, exist_ok=True)
    if is_chief(strategy):
        remove_stale_temporaries(options.output_dir)
        yield options.output_dir
        return
    resolver = strategy.cluster_resolver
    # Not named with TEMP_MARK: the chief removes stale temporaries when it
    # starts, which may be after this worker created its folder.
    private = os.path.join(
        options.output_dir, f".worker-{resolver.task_type}-{resolver.task_id}-scratch"
    )
    os.makedirs(private, exist_ok=True)
    try:
        yield private
    finally:
        shutil.rmtree(private, ignore_errors=True)


# -- data -------------------------------------------------------------------------------


def load_split(options, split, *, training, limit=None, repeat=False, **kwargs):
    """``keras_metapool.data.load_dataset`` with the options' data settings."""
    from keras_metapool.data import load_dataset

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


def steps_per_epoch(options, num_examples):
    """Training steps per epoch: ``--steps_per_epoch`` or one pass over the data."""
    if options.steps_per_epoch:
        return options.steps_per_epoch
    return max(1, math.ceil(num_examples / options.batch_size))


# -- models -----------------------------------------------------------------------------


def build_model(options, meta_pooling, num_classes, **kwargs):
    """A fresh ``MobileNetV2MP`` (call inside ``strategy.scope()``)."""
    from keras_metapool import MobileNetV2MP

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
    import keras_metapool  # noqa: F401  (registers the custom layers)

    try:
        if path.endswith(".keras"):
            return keras.models.load_model(path, compile=False)
        # .h5 and SavedModel: QAT models need TF-MOT's scope, float ones do not mind it.
        from keras_metapool.quantization import quantize_scope

        with quantize_scope():
            return keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many types for an unreadable file
        raise ValueError(
            f"--model: {path} could not be read as a Keras model (.keras, .h5 or SavedModel "
            f"folder): {type(error).__name__}: {error}. Is the file complete and from "
            "keras_metapool (tf_keras)?"
        ) from error


def is_quantization_aware(model):
    """Whether ``model`` came from ``quantize_model`` (holds TF-MOT wrappers)."""
    return any(type(layer).__name__.startswith("Quantize") for layer in model.layers)


def evaluate_accuracy(model, dataset, num_classes):
    """Top-1 accuracy of a compiled model on a dataset of (images, integer labels).

    Uses ``model.evaluate``, so that every worker of a multi-worker run takes
    part (reading batch-norm statistics there is a collective operation).
    """
    results = model.evaluate(one_hot_labels(dataset, num_classes), verbose=0, return_dict=True)
    return float(results[ACCURACY])


# -- callbacks --------------------------------------------------------------------------


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


def training_callbacks(options, folder, csv_name, backup_dir, epochs, extra=()):
    """CSV log, TensorBoard (when installed) and BackupAndRestore, plus a line when resuming.

    Returns ``(callbacks, resumed_epoch)``; ``resumed_epoch`` is the epoch
    (0-based) training continues at, or 0. ``extra`` callbacks come first, so
    that what they add to ``logs`` reaches the CSV and TensorBoard. TensorBoard
    writes to ``folder/logs`` (its ``train``/``validation`` runs beneath: every
    subcommand has its own ``folder``, so no further level is needed).
    """
    csv_path = os.path.join(folder, csv_name)
    saved = backup_epoch(backup_dir)
    resumed_epoch = 0 if saved is None else saved + 1
    if resumed_epoch:
        keep_csv_epochs_before(csv_path, resumed_epoch)
        say(
            f"Resuming from the backup in {backup_dir}: epochs 1-{resumed_epoch} of {epochs} "
            f"are done, continuing at epoch {resumed_epoch + 1}."
        )
    callbacks = [*extra, NaturalOrderCSVLogger(csv_path, append=bool(resumed_epoch))]
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
    return callbacks, resumed_epoch


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
    repeat,
    callbacks,
    backup_dir,
    strategy,
    validation_data=None,
):
    """The one ``model.fit`` of ``search``, ``train`` and ``qat``, timed.

    Labels are one-hot encoded, an epoch is ``steps`` steps when the data
    repeats (else one pass), and once ``fit`` returns the emptied
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
        steps_per_epoch=steps if repeat else None,
        callbacks=callbacks,
        verbose=keras_verbosity(),
    )
    seconds = time.perf_counter() - start
    remove_empty_backup(backup_dir, strategy)
    return history, seconds


def tensorboard_available():
    """Whether the ``tensorboard`` package is installed (``tf.summary`` needs it)."""
    return importlib.util.find_spec("tensorboard") is not None

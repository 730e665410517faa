"""The training subcommands' loop: callbacks, backups and resume, ``fit`` timed."""

from __future__ import annotations

import importlib.util
import os
import re
import time

from keras_metapool._keras import keras
from keras_metapool.cli.console import keras_verbosity, say
from keras_metapool.cli.files import atomic_output, is_chief, keep_csv_epochs_before
from keras_metapool.cli.training_data import backup_epoch, one_hot_labels, resumed_epoch


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` whose files appear whole (temporary file, then rename)."""

    def _save_handler(self, filepath):
        with atomic_output(filepath) as tmp:
            super()._save_handler(tmp)


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


__all__ = [
    "AtomicModelCheckpoint",
    "NaturalOrderCSVLogger",
    "fit_timed",
    "interruption_advice",
    "natural_key",
    "remove_empty_backup",
    "tensorboard_available",
    "training_callbacks",
]

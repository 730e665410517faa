"""``keras-metapool train``: a fixed architecture, trained and saved whole."""

from __future__ import annotations

import dataclasses
import os

from keras_metapool.cli import console, files, training
from keras_metapool.models.architecture import NAMED_ARCHITECTURES, ArchitectureSpec


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What ``train`` wrote and measured.

    Attributes:
        model_path: The final model (``model.keras``, last epoch).
        checkpoint_path: ``checkpoints/best.keras`` (best validation
            accuracy; the last epoch without validation).
        history_path: ``history.csv`` (every epoch, across resumes).
        metrics_path: ``train_metrics.json``.
        architecture: The ``ArchitectureSpec`` trained (or a preset name).
        test_accuracy: Accuracy of the final model on the test split.
        resumed_at_epoch: The epoch (0-based) this run resumed at; 0 if it
            started fresh.
        seconds: Wall time of ``fit``.
    """

    model_path: str
    checkpoint_path: str
    history_path: str
    metrics_path: str
    architecture: object
    test_accuracy: float
    resumed_at_epoch: int
    seconds: float


def resolve_architecture(value):
    """``--architecture``: a name of ``NAMED_ARCHITECTURES`` or an ``architecture.json``.

    Returns:
        The name (``MobileNetV2MP`` takes it as ``meta_pooling``) or the loaded
        ``ArchitectureSpec``.

    Raises:
        FileNotFoundError: if ``value`` is neither a name nor an existing file.
        ValueError: if the file is not a valid spec, or still has searching points.
    """
    if value in NAMED_ARCHITECTURES:
        return value
    if not value or not os.path.isfile(value):
        raise FileNotFoundError(
            f"--architecture: {value!r} is not a file (expected an architecture.json written by "
            f"`keras-metapool search`, or one of {', '.join(NAMED_ARCHITECTURES)})."
        )
    try:
        spec = ArchitectureSpec.load(value)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"--architecture: {value} is not a valid architecture spec: {error}")
    if spec.is_searchable:
        raise ValueError(
            f"--architecture: {value} still has searching points; train takes a fixed "
            "architecture (the architecture.json that `search` writes is fixed)."
        )
    return spec


def _best_so_far(history_path, monitor):
    """The best ``monitor`` value logged before a resume (ModelCheckpoint starts from it)."""
    if not os.path.exists(history_path):
        return None
    values = files.read_csv_columns(history_path).get(monitor, [])
    values = [v for v in values if isinstance(v, (int, float))]
    return max(values) if values else None


def train(options, strategy):
    """Trains ``MobileNetV2MP(meta_pooling=--architecture)`` from scratch.

    A share (``validation_fraction``) of the training images is held out,
    deterministically, to choose the best checkpoint; the test split is only
    evaluated at the end. Weights: ``--optimizer`` with linear warm-up and
    cosine decay (Keras' ``CosineDecay``), label smoothing. Per epoch:
    ``history.csv``, TensorBoard logs, ``checkpoints/best.keras`` and the
    ``backup`` that lets the same command resume after an interruption. The
    final model (last epoch) is ``model.keras``. Every file is written under a
    temporary name and renamed.

    Args:
        options: ``keras_metapool.cli.Options``.
        strategy: The ``tf.distribute.Strategy`` to build the model under.

    Returns:
        A ``TrainResult``.
    """
    architecture = resolve_architecture(options.architecture)
    with files.artifact_folder(options, strategy) as folder:
        validate = options.validation_fraction > 0
        train_data, validation_data, info = _training_data(options)
        test_data, test_info = training.load_split(
            options, "test", training=False, limit=options.test_limit
        )
        steps = training.steps_per_epoch(options, info.num_examples)
        name = architecture if isinstance(architecture, str) else options.architecture
        console.say(
            f"train: MobileNetV2MP ({name}, {options.head} head) alpha {options.alpha}, "
            f"{options.image_size}x{options.image_size}, {info.num_classes} classes; "
            f"{info.num_examples} training images, {options.epochs} epochs of {steps} steps, "
            f"{options.optimizer} lr {options.peak_learning_rate} (warm-up "
            f"{options.warmup_epochs} epochs, cosine), batch {options.batch_size} over "
            f"{strategy.num_replicas_in_sync} replica(s)."
        )
        model = training.build_for_training(
            options, strategy, architecture, info.num_classes, steps
        )

        checkpoint_path = options.output_path("checkpoints", "best.keras")
        callbacks, resumed_at = _callbacks(options, folder, checkpoint_path, validate)
        _, seconds = training.fit_timed(
            model, train_data, num_classes=info.num_classes, epochs=options.epochs,
            steps=steps, callbacks=callbacks,
            backup_dir=options.output_path("backup"), strategy=strategy,
            validation_data=validation_data if validate else None,
        )  # fmt: skip
        test_accuracy = training.evaluate_accuracy(model, test_data, info.num_classes)
        files.save_keras_model(model, os.path.join(folder, "model.keras"))
        metrics = {
            "dataset": options.dataset,
            "architecture": architecture if isinstance(architecture, str)
            else architecture.to_dict(),
            "alpha": options.alpha,
            "image_size": options.image_size,
            "head": options.head,
            "epochs": options.epochs,
            "resumed_at_epoch": resumed_at,
            "train_images": info.num_examples,
            "test_images": test_info.num_examples,
            "test_accuracy": test_accuracy,
            "fit_seconds": seconds,
        }  # fmt: skip
        files.write_json(os.path.join(folder, "train_metrics.json"), metrics)
        console.say(
            f"train: test accuracy {test_accuracy:.4f} on {test_info.num_examples} images "
            f"({seconds:.0f} s of training).\n"
            f"  model         {options.output_path('model.keras')}\n"
            f"  checkpoint    {checkpoint_path}\n"
            f"  history       {options.output_path('history.csv')}\n"
            f"  metrics       {options.output_path('train_metrics.json')}\n"
            f"  TensorBoard   {options.output_path('logs')}"
        )
    return TrainResult(
        model_path=options.output_path("model.keras"),
        checkpoint_path=checkpoint_path,
        history_path=options.output_path("history.csv"),
        metrics_path=options.output_path("train_metrics.json"),
        architecture=architecture,
        test_accuracy=test_accuracy,
        resumed_at_epoch=resumed_at,
        seconds=seconds,
    )


def _training_data(options):
    """``(train stream, validation data or None, info)``: a held-out share if asked."""
    if options.validation_fraction <= 0:
        train_data, info = training.load_training_stream(options, limit=options.train_limit)
        return train_data, None, info
    parts = dict(limit=options.train_limit, search_fraction=options.validation_fraction)
    train_data, info = training.load_training_stream(options, search_part="weights", **parts)
    validation_data, _ = training.load_split(
        options, "train", training=False, search_part="arch", **parts
    )
    return train_data, validation_data, info


def _callbacks(options, folder, checkpoint_path, validate):
    """``(callbacks, resumed_at)``: the logs, the best checkpoint and the backup."""
    monitor = "val_accuracy" if validate else training.ACCURACY
    callbacks, resumed_at = training.training_callbacks(
        options, folder, "history.csv", options.output_path("backup"), options.epochs
    )
    history_path = os.path.join(folder, "history.csv")
    checkpoint = training.AtomicModelCheckpoint(
        checkpoint_path,
        monitor=monitor,
        mode="max",
        save_best_only=validate,
        initial_value_threshold=_best_so_far(history_path, monitor) if resumed_at else None,
    )
    # Before BackupAndRestore (last): an epoch is backed up once its
    # checkpoint and logs are written.
    callbacks.insert(len(callbacks) - 1, checkpoint)
    return callbacks, resumed_at

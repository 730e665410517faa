"""``keras-metapool qat``: quantization-aware fine-tuning of a trained model."""

from __future__ import annotations

import dataclasses
import os

from keras_metapool._keras import keras
from keras_metapool.cli import console, files, training
from keras_metapool.export.exportable import is_quantization_aware
from keras_metapool.quantization import quantize_model


@dataclasses.dataclass(frozen=True)
class QATResult:
    """What ``qat`` wrote and measured.

    Attributes:
        model_path: The QAT model (the ``qat_model/`` SavedModel, or
            ``qat_model.h5``); load it inside ``keras_metapool.quantize_scope()``.
        metrics_path: ``qat_metrics.json``.
        float_accuracy: Test accuracy of the float model it started from.
        qat_accuracy: Test accuracy of the fine-tuned QAT model (which
            predicts what its int8 TFLite model will).
        seconds: Wall time of the fine-tuning (``fit``).
    """

    model_path: str
    metrics_path: str
    float_accuracy: float
    qat_accuracy: float
    seconds: float


def options_for_model(options, model):
    """``options`` with ``image_size`` set to the model's input size.

    A saved model fixes its input size: data for it (calibration, fine-tuning,
    evaluation) is resized to that, whatever ``--image_size`` says.
    """
    size = model.input_shape[1]
    if size is None or size != model.input_shape[2]:
        raise ValueError(
            f"--model: expected a square input of static size, got {model.input_shape}."
        )
    return dataclasses.replace(options, image_size=int(size))


def qat(options, strategy):
    """Fine-tunes ``quantize_model(--model)`` for ``qat_epochs`` at a low learning rate.

    The activation ranges are calibrated on ``calibration_samples`` training
    images first (``quantize_model(representative_data=...)``); the
    fine-tuning uses ``--optimizer`` at ``qat_learning_rate`` with cosine
    decay, label smoothing and the training augmentation, and the same
    ``backup`` resume as ``train``. The result is the SavedModel folder
    ``qat_model/`` (TF-MOT models do not reload from ``.keras``, and
    tf_keras calls ``.h5`` legacy; ``--qat_format=h5`` still writes one).

    Args:
        options: ``keras_metapool.cli.Options`` (``model``: the float model).
        strategy: The ``tf.distribute.Strategy`` to build the QAT model under.

    Returns:
        A ``QATResult``.
    """
    with strategy.scope():  # its variables distributed like the QAT model's
        float_model = training.load_model(options.model)
    if is_quantization_aware(float_model):
        raise ValueError(
            f"--model: {options.model} is already quantization-aware; qat takes the float "
            "model that `train` wrote (model.keras)."
        )
    options = options_for_model(options, float_model)
    with files.artifact_folder(options, strategy) as folder:
        train_data, info = training.load_training_stream(options, limit=options.train_limit)
        representative = training.calibration_images(options)
        test_data, test_info = training.load_split(
            options, "test", training=False, limit=options.test_limit
        )
        steps = training.steps_per_epoch(options, info.num_examples)
        console.say(
            f"qat: {options.model} ({float_model.name}), {options.image_size}x"
            f"{options.image_size}; ranges calibrated on {len(representative)} images, then "
            f"{options.qat_epochs} epoch(s) of {steps} steps at {options.optimizer} lr "
            f"{options.qat_learning_rate}."
        )
        keras.utils.set_random_seed(options.seed)
        with strategy.scope():
            training.compile_model(float_model, options, "adam")  # to evaluate it
            qat_model = quantize_model(
                float_model,
                representative_data=representative,
                num_calibration_samples=options.calibration_samples,
            )
            optimizer = training.make_optimizer(
                options, options.qat_learning_rate, options.qat_epochs * steps
            )
            training.compile_model(qat_model, options, optimizer)
        float_accuracy = training.evaluate_accuracy(float_model, test_data, info.num_classes)
        callbacks, resumed_at = training.training_callbacks(
            options, folder, "qat_history.csv", options.output_path("backup"),
            options.qat_epochs,
        )  # fmt: skip
        _, seconds = training.fit_timed(
            qat_model, train_data, num_classes=info.num_classes, epochs=options.qat_epochs,
            steps=steps, callbacks=callbacks,
            backup_dir=options.output_path("backup"), strategy=strategy,
        )  # fmt: skip
        qat_accuracy = training.evaluate_accuracy(qat_model, test_data, info.num_classes)
        name = "qat_model.h5" if options.qat_format == "h5" else "qat_model"
        files.save_keras_model(qat_model, os.path.join(folder, name))
        metrics = {
            "float_model": options.model,
            "dataset": options.dataset,
            "image_size": options.image_size,
            "qat_epochs": options.qat_epochs,
            "resumed_at_epoch": resumed_at,
            "calibration_images": len(representative),
            "test_images": test_info.num_examples,
            "float_accuracy": float_accuracy,
            "qat_accuracy": qat_accuracy,
            "fit_seconds": seconds,
        }
        files.write_json(os.path.join(folder, "qat_metrics.json"), metrics)
        console.say(
            f"qat: test accuracy float {float_accuracy:.4f} -> QAT {qat_accuracy:.4f} on "
            f"{test_info.num_examples} images ({seconds:.0f} s of fine-tuning).\n"
            f"  QAT model     {options.output_path(name)}  (load inside "
            "keras_metapool.quantize_scope())\n"
            f"  metrics       {options.output_path('qat_metrics.json')}\n"
            f"  history       {options.output_path('qat_history.csv')}"
        )
    return QATResult(
        model_path=options.output_path(name),
        metrics_path=options.output_path("qat_metrics.json"),
        float_accuracy=float_accuracy,
        qat_accuracy=qat_accuracy,
        seconds=seconds,
    )

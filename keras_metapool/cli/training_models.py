"""The training subcommands' models: building, optimizers and schedules, compiling, loading."""

from __future__ import annotations

import os

import keras_metapool.layers  # noqa: F401  (registers the custom layers for load_model)
from keras_metapool._keras import keras
from keras_metapool.cli.options import UsageError
from keras_metapool.cli.training_data import one_hot_labels
from keras_metapool.models import MobileNetV2MP
from keras_metapool.quantization import quantize_scope

#: Loss and metric names of the compiled models.
ACCURACY = "accuracy"


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


__all__ = [
    "ACCURACY",
    "build_for_training",
    "build_model",
    "compile_model",
    "evaluate_accuracy",
    "learning_rate_schedule",
    "load_model",
    "make_optimizer",
]

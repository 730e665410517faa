"""SavedModel export with a named ``serving_default`` signature."""

from __future__ import annotations

import os

import tensorflow as tf

from keras_metapool._keras import keras
from keras_metapool.export import exportable

__all__ = ["SERVING_SIGNATURE", "export_saved_model"]

SERVING_SIGNATURE = "serving_default"
_PREPROCESSING_DTYPES = ("uint8", "float32")


def _outputs_available(model):
    """(native output name, names derivable from it) of ``model``."""
    native = exportable.classifier_output(model)
    last = model.layers[-1]
    if native == exportable.PROBABILITIES and isinstance(last, keras.layers.Dense):
        # The logits are the Dense layer's linear part: recomputable exactly.
        return native, (exportable.PROBABILITIES, exportable.LOGITS)
    if native == exportable.LOGITS:
        return native, (exportable.PROBABILITIES, exportable.LOGITS)
    return native, (native,)


def _resolve_outputs(model, outputs):
    native, available = _outputs_available(model)
    if outputs is None:
        return native, available
    requested = (outputs,) if isinstance(outputs, str) else tuple(outputs)
    unknown = [name for name in requested if name not in available]
    if not requested or unknown:
        raise ValueError(
            f"`outputs` {outputs!r}: this model can export {list(available)} (its last layer "
            f"gives {native!r}; logits need a plain Dense classifier with softmax or no "
            "activation)."
        )
    return native, tuple(dict.fromkeys(requested))


def export_saved_model(
    model,
    path,
    include_preprocessing=False,
    batch_size=None,
    outputs=None,
    image_dtype="uint8",
):
    """Writes a SavedModel whose ``serving_default`` signature takes ``images``.

    The signature maps ``images`` to a dict of named outputs:

    - a classifier with softmax (``classifier_activation="softmax"``, the
      default): ``probabilities`` and ``logits`` (the last Dense layer's
      linear part, recomputed exactly);
    - a classifier without activation (``classifier_activation=None``):
      ``logits`` and ``probabilities`` (their softmax);
    - a QAT classifier: ``probabilities`` (or ``logits``) only, as the model
      gives them;
    - any other model (``include_top=False``): ``features``.

    A search model whose points are all fixed is exported as its lean fixed
    model; one with unfixed points raises.

    Reload with ``tf.saved_model.load(path)``: call
    ``loaded.signatures["serving_default"](images=x)`` (or ``loaded.serve(x)``).
    ``tf.lite.TFLiteConverter.from_saved_model(path)`` converts it.

    Args:
        model: A single-input, single-output tf_keras model (MobileNetV2MP).
        path: Folder to write. Its parent folder must exist; an existing
            SavedModel there is overwritten.
        include_preprocessing: If False (default), ``images`` is the model's
            own input: float32 ``(batch, H, W, C)`` preprocessed to [-1, 1].
            If True, ``images`` are raw pixels in [0, 255] of any height and
            width, ``(batch, None, None, C)`` of ``image_dtype``; the graph
            resizes them (bilinear) to the model's size and scales them to
            [-1, 1] as ``keras_metapool.preprocess_input`` does.
        batch_size: None (dynamic batch, default) or a fixed batch size.
        outputs: None (all of the above that apply), or a name or list of
            names among ``"probabilities"``, ``"logits"`` (``"features"``
            for a non-classifier).
        image_dtype: ``"uint8"`` (default) or ``"float32"``: the type of
            raw ``images`` when ``include_preprocessing`` is True.

    Returns:
        ``path``, as a string.

    Raises:
        ValueError: for an output the model cannot give, a bad
            ``batch_size`` or ``image_dtype``, a model that is not a
            single-input tf_keras model, or a search model with unfixed
            points.
        FileNotFoundError: if the parent folder of ``path`` does not exist.
    """
    path = exportable.check_output_path(path, what="SavedModel folder")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"`batch_size` must be None or a positive int, got {batch_size!r}.")
    if image_dtype not in _PREPROCESSING_DTYPES:
        raise ValueError(
            f"`image_dtype` must be one of {_PREPROCESSING_DTYPES}, got {image_dtype!r}."
        )
    model = exportable.exportable_model(model)
    native, names = _resolve_outputs(model, outputs)
    height, width, channels = model.inputs[0].shape[1:]

    if include_preprocessing:
        input_spec = tf.TensorSpec(
            (batch_size, None, None, channels), image_dtype, name=exportable.INPUT_NAME
        )
    else:
        input_spec = tf.TensorSpec(
            (batch_size, height, width, channels), model.inputs[0].dtype, name=exportable.INPUT_NAME
        )

    last = model.layers[-1]
    derive_logits = native == exportable.PROBABILITIES and exportable.LOGITS in names
    if derive_logits:
        # One pass up to the classifier's input; both outputs from there.
        features_model = keras.Model(model.inputs, last.input, name=f"{model.name}_features")

    def preprocess(images):
        x = tf.cast(images, tf.float32)
        if height is not None and width is not None:
            x = tf.image.resize(x, (height, width), method="bilinear")
        # keras.applications.mobilenet_v2.preprocess_input: [0, 255] -> [-1, 1].
        return tf.cast(x / 127.5 - 1.0, model.inputs[0].dtype)

    def serve(images):
        x = preprocess(images) if include_preprocessing else images
        if derive_logits:
            features = features_model(x, training=False)
            kernel = tf.cast(last.kernel, features.dtype)  # mixed precision: compute dtype
            logits = tf.matmul(features, kernel)
            if last.use_bias:
                logits = logits + tf.cast(last.bias, features.dtype)
            result = {exportable.LOGITS: logits, exportable.PROBABILITIES: tf.nn.softmax(logits)}
        else:
            y = model(x, training=False)
            result = {native: y}
            if native == exportable.LOGITS:
                result[exportable.PROBABILITIES] = tf.nn.softmax(y)
        return {name: tf.cast(result[name], tf.float32) for name in names}

    # Only the variables are saved with the function: saving the Keras model
    # object itself would serialize every layer's call (slow, and not needed
    # to serve).
    module = tf.Module()
    module.model_variables = list(model.variables)
    module.serve = tf.function(serve, input_signature=[input_spec])
    tf.saved_model.save(
        module, path, signatures={SERVING_SIGNATURE: module.serve.get_concrete_function()}
    )
    return os.fspath(path)

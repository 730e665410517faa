"""Keras 3 flavour of keras_metapool: Meta-Pooling models, QAT and int8 export in Keras 3.

The search runs in tf_keras (``keras_metapool.PMPLCallback``); fixed models,
fine-tuning, quantization-aware training and the int8 / Edge TPU export run in
Keras 3 too. This package holds what a Keras 3 user needs:

- ``SpatialEnhancer`` and ``HardSwish`` (``keras.ops``, any backend,
  registered for ``.keras`` files);
- ``quantize_model(model, representative_data)``: the QAT model of a fixed
  Keras 3 model (TensorFlow backend), trained with ``fit`` and converted by
  ``keras_metapool.export.to_tflite`` to ``int8``, ``uint8`` or ``edgetpu``
  files, with no tf_keras and no TF-MOT (``keras_metapool.keras3.qat``);
- ``to_keras3(model)``: a fixed float tf_keras MobileNetV2MP -> a Keras 3 model
  with the same predictions;
- ``MobileNetV2MP(...)``: the keras.applications-style builder for fixed
  architectures (``"paper"``, ``"none"``, any ``ArchitectureSpec``), returning
  a Keras 3 model (built by the one tf_keras builder, then converted).

``fit`` on the models these return traces its train step once, not twice
(``keras_metapool.keras3.tracing``).

Importing this package imports Keras 3 and its layers (the float ones and the
QAT ones of ``keras_metapool.keras3.qat_layers``), not tf_keras: a ``.keras``
file of a converted or a QAT model loads with ``import keras_metapool.keras3``
and ``keras.saving.load_model``. ``to_keras3`` and ``MobileNetV2MP`` import
tf_keras when called (they build with the tf_keras builder); ``quantize_model``
and the export do not.
"""

from keras_metapool.keras3.layers import HardSwish, SpatialEnhancer, hard_swish
from keras_metapool.keras3.qat_layers import QAT_LAYERS


def quantize_model(model, representative_data=None, **kwargs):
    """Keras 3 quantization-aware training model.

    See ``keras_metapool.keras3.qat.quantize_model`` (imported on first call: it
    needs TensorFlow, the backend the TFLite converter reads).
    """
    from keras_metapool.keras3.qat import quantize_model as quantize

    return quantize(model, representative_data=representative_data, **kwargs)


def calibrate_activation_ranges(qat_model, representative_data, **kwargs):
    """Activation ranges of a Keras 3 QAT model from data.

    See ``keras_metapool.keras3.qat.calibrate_activation_ranges``.
    """
    from keras_metapool.keras3.qat import calibrate_activation_ranges as calibrate

    return calibrate(qat_model, representative_data, **kwargs)


def to_keras3(model, name=None):
    """A fixed float tf_keras MobileNetV2MP as a Keras 3 model (same predictions).

    See ``keras_metapool.keras3.convert.to_keras3``.
    """
    from keras_metapool.keras3.convert import to_keras3 as convert

    return convert(model, name=name)


def MobileNetV2MP(*args, meta_pooling="paper", **kwargs):  # noqa: N802 (keras.applications style)
    """``keras_metapool.MobileNetV2MP`` for fixed architectures, as a Keras 3 model.

    Takes the arguments of ``keras_metapool.MobileNetV2MP`` (the
    keras.applications signature plus the Meta-Pooling ones); ``meta_pooling``
    defaults to ``"paper"`` and must name a fixed architecture (``"paper"``,
    ``"none"`` or an ``ArchitectureSpec`` without search points): the search
    runs in tf_keras (``keras_metapool.MobileNetV2MP`` with ``PMPLCallback``).

    Returns:
        A Keras 3 ``keras.Model`` with the layer names of the tf_keras model.
    """
    from keras_metapool.models.architecture import SEARCH, resolve_spec

    spec = resolve_spec(meta_pooling, kwargs.get("placement"), kwargs.get("search_candidates"))
    if any(entry == SEARCH for entry in spec.ops):
        raise ValueError(
            "keras_metapool.keras3.MobileNetV2MP builds fixed architectures; "
            f"meta_pooling={meta_pooling!r} has search points. Search in tf_keras "
            "(keras_metapool.MobileNetV2MP + PMPLCallback), then "
            "keras_metapool.keras3.to_keras3(keras_metapool.to_fixed_model(model))."
        )
    import keras_metapool

    model = keras_metapool.MobileNetV2MP(*args, meta_pooling=meta_pooling, **kwargs)
    return to_keras3(model)


__all__ = [
    "QAT_LAYERS",
    "HardSwish",
    "MobileNetV2MP",
    "SpatialEnhancer",
    "calibrate_activation_ranges",
    "hard_swish",
    "quantize_model",
    "to_keras3",
]

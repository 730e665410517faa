"""Quantization-aware training (TF-MOT) for MobileNetV2MP.

- ``quantize_model(model)``: the QAT model of any fixed MobileNetV2MP (or of a
  search model whose points are all fixed);
- ``calibrate_activation_ranges(qat_model, images)``: activation ranges from
  data (``quantize_model(..., representative_data=...)`` calls it);
- ``quantize_scope()``: the context to load a saved QAT model in (``.h5`` or
  SavedModel; ``.keras`` does not reload TF-MOT models and is refused);
- ``QuantizedSpatialEnhancer``, ``QuantizedHardSwish``,
  ``QuantizedBatchNormalization``: the quantized twins ``quantize_model``
  swaps in.

TF-MOT itself is imported only when ``quantize_model`` or ``quantize_scope``
is called, without the ``TF_USE_LEGACY_KERAS`` it would set: what ``tf.keras``
means for the program does not change.
"""

from keras_metapool._calibration import CollapsedRangeWarning
from keras_metapool.quantization.layers import (
    QuantizedBatchNormalization,
    QuantizedHardSwish,
    QuantizedSpatialEnhancer,
)
from keras_metapool.quantization.qat import (
    MOBILENET_INPUT_RANGE,
    calibrate_activation_ranges,
    quantize_model,
    quantize_scope,
)

__all__ = [
    "MOBILENET_INPUT_RANGE",
    "CollapsedRangeWarning",
    "QuantizedBatchNormalization",
    "QuantizedHardSwish",
    "QuantizedSpatialEnhancer",
    "calibrate_activation_ranges",
    "quantize_model",
    "quantize_scope",
]

"""The QuantizeConfig of keras_metapool's quantized layers.

Importing this module imports TF-MOT (through ``_internals``, without TF-MOT's
side effect on ``TF_USE_LEGACY_KERAS``); only ``quantize_model`` and
``quantize_scope`` import it, so that ``import keras_metapool`` stays light.
"""

import tensorflow as tf

from keras_metapool import _internals
from keras_metapool._int8_facts import SOFTMAX_OUTPUT_RANGE
from keras_metapool._internals import import_tfmot
from keras_metapool._keras import keras

tfmot = import_tfmot()

__all__ = [
    "AveragePoolingQuantizeConfig",
    "InputGridQuantizer",
    "FixedRangeQuantizer",
    "NoOpQuantizeConfig",
    "SoftmaxClassifierQuantizeConfig",
    "SoftmaxOutputQuantizer",
]


@keras.utils.register_keras_serializable(package="keras_metapool")
class NoOpQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """Adds no fake quantization around a layer.

    For the quantized twins (``QuantizedSpatialEnhancer``, ...), which
    fake-quantize their tensors themselves, and for ``keras.layers.Identity``,
    which computes nothing (TFLite drops it).
    """

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


@keras.utils.register_keras_serializable(package="keras_metapool")
class FixedRangeQuantizer(tfmot.quantization.keras.quantizers.Quantizer):
    """Fake-quantizes to a fixed ``[input_min, input_max]``, never updated.

    For the model input: TF-MOT's default input quantizer widens its range to
    every value seen while training. A fixed range can be chosen so that the
    input's typical values sit on the int8 grid (see ``quantize_model``). The
    range lives in two variables ``<name>_min`` / ``<name>_max``, as with
    TF-MOT's own quantizers, so a model keeps its weight list when this
    quantizer replaces TF-MOT's.

    Args:
        input_min: Lower end of the range (<= 0).
        input_max: Upper end of the range (>= 0).
    """

    def __init__(self, input_min, input_max):
        if not float(input_min) <= 0.0 <= float(input_max) or input_min == input_max:
            raise ValueError(
                f"The input range must contain 0 and be non-empty, got [{input_min}, {input_max}]."
            )
        self.input_min = float(input_min)
        self.input_max = float(input_max)

    def build(self, tensor_shape, name, layer):
        return {
            "min_var": layer.add_weight(
                name + "_min",
                initializer=keras.initializers.Constant(self.input_min),
                trainable=False,
            ),
            "max_var": layer.add_weight(
                name + "_max",
                initializer=keras.initializers.Constant(self.input_max),
                trainable=False,
            ),
        }

    def __call__(self, inputs, training, weights, **kwargs):
        return tf.quantization.fake_quant_with_min_max_vars(
            inputs, weights["min_var"], weights["max_var"], num_bits=8
        )

    def get_config(self):
        return {"input_min": self.input_min, "input_max": self.input_max}

    def __eq__(self, other):
        return isinstance(other, FixedRangeQuantizer) and self.get_config() == other.get_config()

    def __ne__(self, other):
        return not self.__eq__(other)


@keras.utils.register_keras_serializable(package="keras_metapool")
class SoftmaxOutputQuantizer(tfmot.quantization.keras.quantizers.Quantizer):
    """Puts softmax probabilities on the int8 SOFTMAX output grid, outside training.

    The int8 SOFTMAX op outputs multiples of 1/256; TF-MOT leaves the QAT
    model's probabilities in float. Two classes within 1/256 of each other
    then tie in the int8 model (its argmax takes the first) but not in the QAT
    model, which is most of their top-1 disagreements on a small model. In
    inference this quantizer applies that grid (so QAT predictions are the
    int8 model's); in training it passes the probabilities through, so the
    loss keeps its gradient for confidently wrong examples.
    """

    def build(self, tensor_shape, name, layer):
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        if training:
            return inputs
        low, high = SOFTMAX_OUTPUT_RANGE
        return tf.quantization.fake_quant_with_min_max_args(inputs, min=low, max=high, num_bits=8)

    def get_config(self):
        return {}

    def __eq__(self, other):
        return isinstance(other, SoftmaxOutputQuantizer)

    def __ne__(self, other):
        return not self.__eq__(other)


@keras.utils.register_keras_serializable(package="keras_metapool")
class SoftmaxClassifierQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """TF-MOT's 8-bit Dense config plus the int8 grid on the softmax output.

    As TF-MOT's default for ``Dense``: the kernel per tensor (symmetric,
    narrow range), the logits before the softmax with a moving-average range;
    and the output through ``SoftmaxOutputQuantizer``.
    """

    def get_weights_and_quantizers(self, layer):
        quantizer = tfmot.quantization.keras.quantizers.LastValueQuantizer(
            num_bits=8, per_axis=False, symmetric=True, narrow_range=True
        )
        return [(layer.kernel, quantizer)]

    def get_activations_and_quantizers(self, layer):
        quantizer = tfmot.quantization.keras.quantizers.MovingAverageQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False
        )
        return [(layer.activation, quantizer)]

    def set_quantize_weights(self, layer, quantize_weights):
        (layer.kernel,) = quantize_weights

    def set_quantize_activations(self, layer, quantize_activations):
        (layer.activation,) = quantize_activations

    def get_output_quantizers(self, layer):
        return [SoftmaxOutputQuantizer()]

    def get_config(self):
        return {}


@keras.utils.register_keras_serializable(package="keras_metapool")
class InputGridQuantizer(tfmot.quantization.keras.quantizers.Quantizer):
    """Fake-quantizes a layer's output on the grid its input was quantized to.

    For ``AveragePooling2D``: the int8 AVERAGE_POOL_2D keeps its input's scale
    and zero point, rounding each average to the input's grid. TF-MOT gives
    the pool an output range of its own, which the converter honours with a
    QUANTIZE op after the pool (a second rounding, and one more op); without
    any output quantization the QAT model would miss the rounding. This
    quantizer uses the range variables of the quantizer that produced the
    layer's input: the output quantizer of the preceding ``QuantizeWrapper``
    (or of a quantized twin), found through the wrapper's place in the model.
    It has no variables of its own; where no such input quantizer exists (or
    before the wrapper is part of a model) it passes its input through.
    """

    def build(self, tensor_shape, name, layer):
        self._wrapper = layer
        return {}

    def _input_range_variables(self):
        wrapper = getattr(self, "_wrapper", None)
        for call in _internals.inbound_layers(wrapper):
            if len(call) != 1:
                continue
            upstream = call[0]
            variables = _internals.output_range_variables(upstream)
            if variables:
                return variables
            point = getattr(getattr(upstream, "layer", upstream), "output_quant", None)
            if point is not None and point.variables:
                return point.variables
        return None

    def __call__(self, inputs, training, weights, **kwargs):
        variables = self._input_range_variables()
        if variables is None:
            return inputs
        return tf.quantization.fake_quant_with_min_max_vars(
            inputs, variables["min_var"], variables["max_var"], num_bits=8
        )

    def get_config(self):
        return {}

    def __eq__(self, other):
        return isinstance(other, InputGridQuantizer)

    def __ne__(self, other):
        return not self.__eq__(other)


@keras.utils.register_keras_serializable(package="keras_metapool")
class AveragePoolingQuantizeConfig(NoOpQuantizeConfig):
    """``AveragePooling2D``: output on its input's grid (``InputGridQuantizer``)."""

    def get_output_quantizers(self, layer):
        return [InputGridQuantizer()]

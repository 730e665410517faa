"""Keras 3 layers of quantization-aware training: fake quantization as int8 TFLite computes.

The Keras 3 counterparts of TF-MOT's wrappers and of the tf_keras twins in
``keras_metapool.quantization.layers``, with the same int8 semantics:

- weights of a convolution: per output channel (the kernel's last axis),
  symmetric, narrow range, over the weights' own range; a BatchNormalization
  after the convolution is folded by the converter, which a per-channel grid
  does not notice (a per-channel scale of the weights scales the grid).
  ``DepthwiseConv2D`` kernels ``(h, w, channels, 1)`` have one output channel
  on that axis, as in TF-MOT: one range;
- ``Dense`` weights: per tensor (the Edge TPU's fully connected layers);
- activations: per tensor, asymmetric, with a range tracked by a moving
  average while training (decay 0.999, TF-MOT's), or fixed where the op
  fixes it (LOGISTIC, the ReLU6 inside hard swish, SOFTMAX's output);
- constant operands of elementwise ops: per tensor, from their own min/max.

Every fake quantization is ``keras.quantizers.fake_quant_with_min_max_vars``,
which on the TensorFlow backend writes TensorFlow's FakeQuant ops: the TFLite
converter reads them as the int8 model's quantization parameters.
``keras_metapool.keras3.quantize_model`` builds models of these layers;
nothing else should need to. Each twin has the float layer's config and
weights plus its range variables (``<tensor>_min``/``<tensor>_max``,
non-trainable), so a saved model reloads with its ranges.

This module imports Keras 3 and NumPy only (no tf_keras, no TF-MOT).
"""

import keras
import numpy as np
from keras import ops
from keras.quantizers import fake_quant_with_min_max_vars

from keras_metapool._int8_facts import (
    DEFAULT_ACTIVATION_RANGE,
    LOGISTIC_OUTPUT_RANGE,
    MOVING_AVERAGE_DECAY,
    RELU6_OUTPUT_RANGE,
    SOFTMAX_OUTPUT_RANGE,
)
from keras_metapool._layer_facts import HARD_SWISH_SCALE
from keras_metapool.keras3.layers import PACKAGE, HardSwish, SpatialEnhancer

#: The weights' grid never collapses: the smallest range a kernel gets.
_MIN_WEIGHT_BOUND = 1e-8


def fake_quant_weights(kernel, per_channel=True):
    """Fake-quantizes a kernel as the converter quantizes it (symmetric, narrow range).

    Per channel of the last axis (convolutions) or per tensor (``Dense``),
    from the kernel's own max(|w|), so that the simulation is right before
    the first training step and after the last. The gradient passes straight
    through inside the range.
    """
    if per_channel:
        axes = tuple(range(len(kernel.shape) - 1))
        bound = ops.stop_gradient(
            ops.maximum(ops.max(ops.abs(kernel), axis=axes), _MIN_WEIGHT_BOUND)
        )
        return fake_quant_with_min_max_vars(kernel, -bound, bound, narrow_range=True, axis=-1)
    bound = ops.stop_gradient(ops.maximum(ops.max(ops.abs(kernel)), _MIN_WEIGHT_BOUND))
    return fake_quant_with_min_max_vars(kernel, -bound, bound, narrow_range=True)


def fake_quant_constant(tensor):
    """Fake-quantizes a constant operand per tensor, over its own range (0 included)."""
    low = ops.stop_gradient(ops.minimum(ops.min(tensor), 0.0))
    high = ops.stop_gradient(ops.maximum(ops.max(tensor), low + 1e-8))
    return fake_quant_with_min_max_vars(tensor, low, high)


class RangeTracking:
    """Activation ranges of a layer: two variables each, updated while training.

    ``add_range`` creates ``<name>_min``/``<name>_max``; ``fake_quant`` fake-
    quantizes a tensor on one of them. A range not fixed follows the batches'
    min/max (0 included) by a moving average while training; inside
    ``keras_metapool.keras3.calibrate_activation_ranges`` it records them
    instead (``_calibration``, set and cleared there).
    """

    _calibration = None

    def add_range(self, name, fixed_range=None):
        low, high = fixed_range or DEFAULT_ACTIVATION_RANGE
        variables = tuple(
            self.add_weight(
                name=f"{name}_{end}",
                shape=(),
                initializer=keras.initializers.Constant(value),
                trainable=False,
                autocast=False,
            )
            for end, value in (("min", low), ("max", high))
        )
        if "_ranges" not in vars(self):
            # NOTE: outside Keras' attribute tracking: the variables are tracked by add_weight.
            object.__setattr__(self, "_ranges", {})
        self._ranges[name] = (*variables, fixed_range is not None)

    def fake_quant(self, name, tensor, training=False, update=True):
        """``tensor`` fake-quantized on range ``name`` (updated first, while training)."""
        low, high, fixed = self._ranges[name]
        if not fixed and update:
            if self._calibration is not None:
                key = f"{self.name}/{name}"
                new_low, new_high = self._calibration.record(
                    key, key, ops.min(tensor), ops.max(tensor)
                )
                low.assign(new_low)
                high.assign(new_high)
            elif training:
                decay = MOVING_AVERAGE_DECAY
                batch_low = ops.minimum(ops.min(tensor), 0.0)
                batch_high = ops.maximum(ops.max(tensor), 0.0)
                low.assign(low * decay + batch_low * (1.0 - decay))
                high.assign(high * decay + batch_high * (1.0 - decay))
        return fake_quant_with_min_max_vars(tensor, low, high)

    @property
    def range_names(self):
        return tuple(vars(self).get("_ranges", {}))


@keras.saving.register_keras_serializable(package=PACKAGE)
class ActivationQuantizer(RangeTracking, keras.layers.Layer):
    """Fake-quantizes a tensor per tensor, as int8 TFLite stores an activation.

    Args:
        fixed_range: None (a range tracked by a moving average while
            training, calibrated by ``calibrate_activation_ranges``) or a
            ``(min, max)`` known in advance (the model input's).
        **kwargs: Standard layer arguments.

    Call arguments:
        inputs: The tensor.
        training: Whether the range follows the batch.
        update: False to quantize on the range without updating it (the
            output of AVERAGE_POOL_2D, which int8 keeps on its input's grid,
            calls its input's quantizer so).
    """

    def __init__(self, fixed_range=None, **kwargs):
        super().__init__(**kwargs)
        self.fixed_range = tuple(float(v) for v in fixed_range) if fixed_range else None
        self.add_range("output", self.fixed_range)

    def call(self, inputs, training=None, update=True):
        return self.fake_quant("output", inputs, bool(training), update=update)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "fixed_range": self.fixed_range}


@keras.saving.register_keras_serializable(package=PACKAGE)
class QuantizedConv2D(keras.layers.Conv2D):
    """``Conv2D`` with its kernel fake-quantized per output channel (``fake_quant_weights``)."""

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, fake_quant_weights(kernel))


@keras.saving.register_keras_serializable(package=PACKAGE)
class QuantizedDepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """``DepthwiseConv2D`` with its kernel fake-quantized (one range, as TF-MOT's)."""

    def call(self, inputs):
        outputs = ops.depthwise_conv(
            inputs,
            fake_quant_weights(self.kernel),
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        if self.use_bias:
            outputs = ops.add(outputs, self.bias)  # channels_last (checked by quantize_model)
        if self.activation is not None:
            return self.activation(outputs)
        return outputs


@keras.saving.register_keras_serializable(package=PACKAGE)
class QuantizedDense(RangeTracking, keras.layers.Dense):
    """``Dense`` with per-tensor weights; with a softmax, the int8 classifier's grids.

    A softmax classifier quantizes its logits (a moving-average range, as
    TF-MOT quantizes a softmax's input) and, outside training, puts the
    probabilities on the SOFTMAX output grid (multiples of 1/256), so that
    the model's top-1, ties included, is the int8 model's; while training the
    probabilities pass through, and the loss keeps its gradient. Any other
    activation must be linear (the output is quantized after the layer).
    """

    def build(self, input_shape):
        super().build(input_shape)
        if self._is_softmax:
            self.add_range("logits")

    # NOTE: Dense's own save/load write the kernel and bias only; the range must travel too.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    @property
    def _is_softmax(self):
        return keras.activations.serialize(self.activation) == "softmax"

    def call(self, inputs, training=None):
        x = ops.matmul(inputs, fake_quant_weights(self.kernel, per_channel=False))
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if not self._is_softmax:
            return x
        x = ops.softmax(self.fake_quant("logits", x, bool(training)), axis=-1)
        if training:
            return x
        low, high = SOFTMAX_OUTPUT_RANGE
        return fake_quant_with_min_max_vars(x, low, high)


@keras.saving.register_keras_serializable(package=PACKAGE)
class QuantizedSpatialEnhancer(RangeTracking, SpatialEnhancer):
    """SSP (``keras_metapool.keras3.SpatialEnhancer``) with the fake quantization of its int8 form.

    NOTE: the tensors and grids of ``keras_metapool.quantization.QuantizedSpatialEnhancer``
    (the tf_keras twin, whose docstring draws the int8 graph), in the float
    operations of ``SpatialEnhancer._gate``; tests/test_keras3_qat.py holds the
    two twins to the same outputs.
    """

    def build(self, input_shape):
        super().build(input_shape)
        for path in ("h", "w"):
            for name in ("pooled", "bottleneck", "product", "gate_logits"):
                self.add_range(f"{name}_{path}")
            self.add_range(f"shifted_relu6_{path}", RELU6_OUTPUT_RANGE)
            self.add_range(f"gate_{path}", LOGISTIC_OUTPUT_RANGE)
        self.add_range("gated_h")
        self.add_range("output")

    def _quantized_gate(self, pooled, path, gate_conv, training):
        z = self.fake_quant(f"pooled_{path}", pooled, training)
        y = ops.add(self.reduce.convolution_op(z, fake_quant_weights(self.reduce.kernel)),
                    self.reduce.bias)  # fmt: skip
        y = self.fake_quant(f"bottleneck_{path}", self.reduce_bn(y, training=training), training)
        shifted = self.fake_quant(f"shifted_relu6_{path}", ops.relu6(y + 3.0), training)
        product = self.fake_quant(f"product_{path}", y * shifted, training)
        # Scale, then quantize: the converter quantizes the scaled constant.
        gate_kernel = fake_quant_weights(gate_conv.kernel * HARD_SWISH_SCALE)
        logits = ops.add(gate_conv.convolution_op(product, gate_kernel), gate_conv.bias)
        logits = self.fake_quant(f"gate_logits_{path}", logits, training)
        return self.fake_quant(f"gate_{path}", ops.sigmoid(logits), training)

    def call(self, inputs, training=None):
        training = bool(training)
        gate_h = self._quantized_gate(
            ops.mean(inputs, axis=2, keepdims=True), "h", self.gate_h, training
        )
        gate_w = self._quantized_gate(
            ops.mean(inputs, axis=1, keepdims=True), "w", self.gate_w, training
        )
        gated_h = self.fake_quant("gated_h", inputs * gate_h, training)
        return self.fake_quant("output", gated_h * gate_w, training)


def per_channel_one_sixth(x):
    """A constant vector of 1/6 per channel of ``x``: the converter then keeps hard swish
    as ADD + MUL + MUL instead of fusing HARD_SWISH, which the Edge TPU lacks."""
    return ops.convert_to_tensor(np.full((x.shape[-1],), HARD_SWISH_SCALE, np.float32))


@keras.saving.register_keras_serializable(package=PACKAGE)
class QuantizedHardSwish(RangeTracking, HardSwish):
    """Hard swish as the Edge TPU maps it (ADD with ReLU6, MUL, MUL), each output fake-quantized.

    The tf_keras twin's tensors (``keras_metapool.quantization.QuantizedHardSwish``):
    the ReLU6 output on its fixed [0, 6], the product and the result with
    moving-average ranges.
    """

    def build(self, input_shape):
        self.add_range("shifted_relu6", RELU6_OUTPUT_RANGE)
        self.add_range("product")
        self.add_range("output")
        super().build(input_shape)

    def call(self, inputs, training=None):
        training = bool(training)
        shifted = self.fake_quant("shifted_relu6", ops.relu6(inputs + 3.0), training)
        product = self.fake_quant("product", inputs * shifted, training)
        return self.fake_quant("output", product * per_channel_one_sixth(inputs), training)


@keras.saving.register_keras_serializable(package=PACKAGE)
class QuantizedBatchNormalization(RangeTracking, keras.layers.BatchNormalization):
    """A BatchNormalization no convolution folds, as int8 runs it: ``x * scale + offset``.

    The tf_keras twin's form (``keras_metapool.quantization.QuantizedBatchNormalization``):
    per-channel constants quantized per tensor, both op outputs fake-quantized;
    batch statistics while training (the moving ones updated as usual), moving
    statistics otherwise. Last-axis normalisation only.
    """

    def build(self, input_shape):
        super().build(input_shape)
        self.add_range("scaled")
        self.add_range("output")

    def call(self, inputs, training=None, mask=None):
        axes = tuple(range(len(inputs.shape) - 1))
        if training:
            super().call(inputs, training=True)  # updates the moving statistics
            mean, variance = ops.moments(inputs, axes=axes)
        else:
            mean, variance = self.moving_mean, self.moving_variance
        scale = ops.rsqrt(variance + self.epsilon)
        if self.scale:
            scale = scale * self.gamma
        offset = -mean * scale
        if self.center:
            offset = offset + self.beta
        training = bool(training)
        scaled = self.fake_quant("scaled", inputs * fake_quant_constant(scale), training)
        return self.fake_quant("output", scaled + fake_quant_constant(offset), training)


#: The layers of a Keras 3 QAT model, by class name (for ``custom_objects``).
QAT_LAYERS = {
    cls.__name__: cls
    for cls in (
        ActivationQuantizer,
        QuantizedBatchNormalization,
        QuantizedConv2D,
        QuantizedDense,
        QuantizedDepthwiseConv2D,
        QuantizedHardSwish,
        QuantizedSpatialEnhancer,
    )
}

"""Quantized twins of keras_metapool's layers, for TF-MOT quantization-aware training.

TF-MOT fake-quantizes a Keras layer's weights, activation and output, but it
cannot reach inside a composite layer: SSP computes a dozen int8 tensors in
one Keras layer. As TF Model Garden does for its composite blocks, each of
our layers gets a *quantized twin*: a subclass with the same config and the
same float weights that fake-quantizes, in its own ``call``, every tensor the
int8 TFLite kernel quantizes, in the same place and in the same way:

- weights of a convolution: per output channel, symmetric, narrow range, over
  the weights' own range (what the converter does, also after folding a
  BatchNormalization into the convolution: a per-channel scale does not change
  a per-channel grid);
- activations: per tensor, asymmetric, the range tracked by a moving average
  (TF-MOT's default), except where it is known in advance: the output of
  LOGISTIC, which the int8 kernel fixes (scale 1/256, zero point -128), and
  the ``relu6(x + 3)`` inside hard swish ([0, 6]);
- constant operands of elementwise ops: per tensor, from their own min/max.

``keras_metapool.quantization.quantize_model`` swaps the twins in; nothing
else should need to build them. Their ``get_config`` is the float layer's, so
``QuantizedX.from_config(x.get_config())`` is the twin of ``x``.

Importing this module does not import TF-MOT (which switches ``tf.keras`` to
Keras 2 at import time): the quantizers are created when a twin is built.
"""

import collections.abc

import tensorflow as tf

from keras_metapool._int8_facts import LOGISTIC_OUTPUT_RANGE, RELU6_OUTPUT_RANGE
from keras_metapool._internals import import_tfmot
from keras_metapool._keras import keras
from keras_metapool.layers.activations import (
    HARD_SWISH_SCALE,
    HardSwish,
    per_channel_one_sixth,
)
from keras_metapool.layers.building import (
    build_in_own_scope,
    resolve_training,
    traced_as_written,
)
from keras_metapool.layers.spatial_enhancer import SpatialEnhancer


def _quantizers():
    """TF-MOT's quantizers module, imported on first use (see module docstring)."""
    return import_tfmot().quantization.keras.quantizers


def fake_quant_weight_per_channel(kernel):
    """Fake-quantizes a convolution kernel as the converter quantizes it.

    Per output channel (last axis), symmetric, narrow range ([-127, 127]),
    the range being the channel's own max(|w|). Taking the range from the
    weights themselves (instead of a variable updated while training, as
    TF-MOT does) keeps the fake quantization right before the first training
    step and after the last one. The gradient passes straight through.
    """
    axes = list(range(len(kernel.shape) - 1))
    bound = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(kernel), axis=axes), 1e-8))
    return tf.quantization.fake_quant_with_min_max_vars_per_channel(
        kernel, -bound, bound, num_bits=8, narrow_range=True
    )


def fake_quant_constant(tensor):
    """Fake-quantizes a constant operand per tensor, from its own min and max.

    The converter quantizes a constant input of an elementwise op (MUL, ADD)
    over its range, which always includes 0.
    """
    low = tf.stop_gradient(tf.minimum(tf.reduce_min(tensor), 0.0))
    high = tf.stop_gradient(tf.maximum(tf.reduce_max(tensor), low + 1e-8))
    return tf.quantization.fake_quant_with_min_max_vars(tensor, low, high, num_bits=8)


class FakeQuantPoint:
    """One fake-quantized activation of a twin layer: a TF-MOT quantizer and its variables.

    Args:
        layer: The twin layer; it owns the range variables.
        name: Name of the tensor (the variables are ``<name>_min``/``_max``).
        fixed_range: None for a range tracked by a moving average of the
            batches' min/max (TF-MOT's ``MovingAverageQuantizer``, per tensor,
            asymmetric), or ``(min, max)`` for a range known in advance.
    """

    def __init__(self, layer, name, fixed_range=None):
        quantizers = _quantizers()
        if fixed_range is None:
            self.quantizer = quantizers.MovingAverageQuantizer(
                num_bits=8, per_axis=False, symmetric=False, narrow_range=False
            )
        else:
            low, high = fixed_range
            self.quantizer = quantizers.FixedQuantizer(
                num_bits=8, init_min=low, init_max=high, narrow_range=False
            )
        self.name = name
        self.fixed_range = fixed_range
        self.variables = self.quantizer.build(tf.TensorShape(None), name, layer)

    def __call__(self, tensor, training):
        training = resolve_training(training)
        if isinstance(training, bool):
            return self.quantizer(tensor, training, weights=self.variables)
        return tf.cond(
            training,
            lambda: self.quantizer(tensor, True, weights=self.variables),
            lambda: self.quantizer(tensor, False, weights=self.variables),
        )


def fake_quant_points(layer):
    """Every ``FakeQuantPoint`` ``layer`` holds, in attributes or dicts of them, once each."""
    found = {}  # by id: Keras keeps a tracked dict under two attributes

    def visit(value):
        if isinstance(value, FakeQuantPoint):
            found.setdefault(id(value), value)
        elif isinstance(value, collections.abc.Mapping):
            for item in value.values():
                visit(item)

    for value in vars(layer).values():
        visit(value)
    return list(found.values())


@keras.utils.register_keras_serializable(package="keras_metapool")
class QuantizedSpatialEnhancer(SpatialEnhancer):
    """``SpatialEnhancer`` (SSP) with the fake quantization of its int8 TFLite form.

    NOTE: the float operations are ``SpatialEnhancer._call_with_convolutions``'s
    (keras_metapool/layers/spatial_enhancer.py), with a fake quantization after
    each; a change to SSP's function changes both (tests/test_quantization.py
    holds this layer to the float one and to its int8 file).

    The int8 graph of SSP, per path (``h``: row means, ``w``: column means),
    and where this layer fake-quantizes (``q``):

    ```
    z   = q(MEAN(x))                                   pooled_{h,w}
    y   = q(CONV_2D(z, q(reduce kernel)) + BN)          bottleneck_{h,w} (BN folded)
    r   = q(ADD(y, 3) + RELU6)                          fixed [0, 6]
    p   = q(MUL(y, r))                                  product_{h,w}
    g   = q(CONV_2D(p, q(gate kernel) / 6))             gate_logits_{h,w}
    s   = q(LOGISTIC(g))                                fixed [0, 255/256]
    out = q(MUL(q(MUL(x, s_h)), s_w))                   gated_h, output
    ```

    The reduction's BatchNormalization behaves as in ``SpatialEnhancer``
    (batch statistics while training); its kernel is quantized per output
    channel before the fold, which gives the same grid as quantizing the
    folded kernel. The input is not quantized here: it is the output of a
    quantized layer in every MobileNetV2MP.

    Same arguments, config and float weights as ``SpatialEnhancer``.
    """

    @build_in_own_scope
    def build(self, input_shape):
        super().build(input_shape)
        self.path_quants = {}
        for path in ("h", "w"):
            self.path_quants[path] = {
                name: FakeQuantPoint(self, f"{name}_{path}")
                for name in ("pooled", "bottleneck", "product", "gate_logits")
            }
            self.path_quants[path]["shifted_relu6"] = FakeQuantPoint(
                self, f"shifted_relu6_{path}", RELU6_OUTPUT_RANGE
            )
            self.path_quants[path]["gate"] = FakeQuantPoint(
                self, f"gate_{path}", LOGISTIC_OUTPUT_RANGE
            )
        self.gated_h_quant = FakeQuantPoint(self, "gated_h")
        self.output_quant = FakeQuantPoint(self, "output")

    def _quantized_gate(self, pooled, path, gate_conv, training):
        quant = self.path_quants[path]
        z = quant["pooled"](pooled, training)
        kernel = fake_quant_weight_per_channel(self.reduce.kernel)
        y = tf.nn.bias_add(self.reduce.convolution_op(z, kernel), self.reduce.bias)
        y = quant["bottleneck"](self.reduce_bn(y, training=training), training)
        shifted = quant["shifted_relu6"](tf.nn.relu6(y + 3.0), training)
        product = quant["product"](y * shifted, training)
        # Scale, then quantize: the converter quantizes the scaled constant,
        # and would apply the fake quant's range to whatever follows it.
        gate_kernel = fake_quant_weight_per_channel(gate_conv.kernel * HARD_SWISH_SCALE)
        logits = tf.nn.bias_add(gate_conv.convolution_op(product, gate_kernel), gate_conv.bias)
        logits = quant["gate_logits"](logits, training)
        return quant["gate"](tf.sigmoid(logits), training)

    @traced_as_written
    def call(self, inputs, training=None):
        pooled_h = tf.reduce_mean(inputs, axis=2, keepdims=True)
        pooled_w = tf.reduce_mean(inputs, axis=1, keepdims=True)
        gate_h = self._quantized_gate(pooled_h, "h", self.gate_h, training)
        gate_w = self._quantized_gate(pooled_w, "w", self.gate_w, training)
        gated_h = self.gated_h_quant(inputs * gate_h, training)
        return self.output_quant(gated_h * gate_w, training)


@keras.utils.register_keras_serializable(package="keras_metapool")
class QuantizedHardSwish(HardSwish):
    """``HardSwish`` with the fake quantization of its int8 TFLite form.

    ``x * relu6(x + 3) * (1/6 per channel)`` converts to ADD (ReLU6 fused),
    MUL and MUL; this layer fake-quantizes each of their outputs: the ReLU6
    output in its fixed range [0, 6], the product and the result with
    moving-average ranges. The input is the output of a quantized layer.
    """

    @build_in_own_scope
    def build(self, input_shape):
        self.shifted_relu6_quant = FakeQuantPoint(self, "shifted_relu6", RELU6_OUTPUT_RANGE)
        self.product_quant = FakeQuantPoint(self, "product")
        self.output_quant = FakeQuantPoint(self, "output")
        super().build(input_shape)

    @traced_as_written
    def call(self, inputs, training=None):
        shifted = self.shifted_relu6_quant(tf.nn.relu6(inputs + 3.0), training)
        product = self.product_quant(inputs * shifted, training)
        return self.output_quant(product * per_channel_one_sixth(inputs), training)


@keras.utils.register_keras_serializable(package="keras_metapool")
class QuantizedBatchNormalization(keras.layers.BatchNormalization):
    """A BatchNormalization that follows no convolution, fake-quantized as int8 TFLite runs it.

    After a convolution the converter folds BatchNormalization into it (TF-MOT
    handles that pair). After a pooling op, SSP or a sum (the enhancers'
    post-norm) it becomes ``ADD(MUL(x, scale), offset)`` with per-channel
    constant vectors, which int8 quantizes per tensor. This layer computes the
    normalisation in that form, with ``scale = gamma / sqrt(var + epsilon)`` and
    ``offset = beta - mean * scale`` from the batch statistics while training
    (the moving statistics are updated as usual) and from the moving statistics
    otherwise, and fake-quantizes both constants and both op outputs.

    Same arguments, config and float weights as
    ``keras.layers.BatchNormalization`` (last-axis normalisation only).
    """

    @build_in_own_scope
    def build(self, input_shape):
        super().build(input_shape)
        axis = self.axis if isinstance(self.axis, (list, tuple)) else [self.axis]
        if list(axis) != [len(input_shape) - 1]:
            raise ValueError(
                f"QuantizedBatchNormalization '{self.name}' supports normalising the last "
                f"axis only, got axis={self.axis} for input shape {tuple(input_shape)}."
            )
        self.scaled_quant = FakeQuantPoint(self, "scaled")
        self.output_quant = FakeQuantPoint(self, "output")

    def _scale_and_offset(self, mean, variance):
        scale = tf.math.rsqrt(variance + self.epsilon)
        if self.scale:
            scale = scale * self.gamma
        offset = -mean * scale
        if self.center:
            offset = offset + self.beta
        return scale, offset

    @traced_as_written
    def call(self, inputs, training=None):
        training = resolve_training(training)
        axes = list(range(len(inputs.shape) - 1))

        def batch_statistics():
            # The float layer updates the moving statistics; its output is
            # replaced by the quantized form below.
            super(QuantizedBatchNormalization, self).call(inputs, training=True)
            return tf.nn.moments(inputs, axes)

        def moving_statistics():
            return tf.identity(self.moving_mean), tf.identity(self.moving_variance)

        if isinstance(training, bool):
            mean, variance = batch_statistics() if training else moving_statistics()
        else:
            mean, variance = tf.cond(training, batch_statistics, moving_statistics)
        scale, offset = self._scale_and_offset(mean, variance)
        scaled = self.scaled_quant(inputs * fake_quant_constant(scale), training)
        return self.output_quant(scaled + fake_quant_constant(offset), training)

"""Keras 3 versions of the layers a fixed MobileNetV2MP uses: SSP and hard swish.

Written with ``keras.ops`` only, so they run on every Keras 3 backend
(TensorFlow and JAX are tested), and registered for ``.keras`` files
(``keras.saving.load_model`` in safe mode finds them once this module is
imported; no lambdas, no pickles). They compute what the tf_keras layers of
``keras_metapool.layers`` compute, in float; the tf_keras layers add only what
int8 conversion for the Edge TPU needs (the 1/6 of hard swish folded into a
kernel), which a float model does not.

This module imports neither tf_keras nor TensorFlow (beyond what the Keras 3
backend imports).
"""

import keras
from keras import ops

from keras_metapool._layer_facts import HARD_SWISH_SCALE, SSPArguments, ssp_reduced_channels

#: Package name under which the Keras 3 layers are registered.
PACKAGE = "keras_metapool"


def hard_swish(x):
    """``x * relu6(x + 3) / 6`` (docs/method.md §1), as the tf_keras layer rounds it.

    Multiplied by 1/6 rather than divided by 6: the float operations of
    ``keras_metapool.layers.hard_swish``, so both flavours round alike.
    """
    return x * ops.relu6(x + 3.0) * HARD_SWISH_SCALE


@keras.saving.register_keras_serializable(package=PACKAGE)
class HardSwish(keras.layers.Layer):
    """Hard swish as a layer, ``x * relu6(x + 3) / 6`` (Keras 3)."""

    def call(self, inputs):
        return hard_swish(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package=PACKAGE)
class SpatialEnhancer(SSPArguments, keras.layers.Layer):
    """Spatial separable pooling (SSP) of Meta-Pooling, in Keras 3.

    The same function, arguments and sublayers (``reduce``, ``reduce_bn``,
    ``gate_h``, ``gate_w``) as ``keras_metapool.layers.SpatialEnhancer``; see
    its docstring for the method. For an input ``(batch, H, W, C)``::

        zh = mean of x over W;  zw = mean of x over H
        f  = hswish(BN(Conv1x1_{C->m}(.)))          shared by zh and zw
        out = x * sigmoid(gate_h(f(zh))) * sigmoid(gate_w(f(zw)))

    with ``m = max(min_channels, C // reduction)``.

    Args:
        reduction: Channel reduction of the bottleneck (default 32).
        min_channels: Lower bound of the bottleneck width (default 8).
        batch_norm_momentum: Momentum of the bottleneck's BatchNormalization.
        batch_norm_epsilon: Epsilon of that BatchNormalization.
        gate_bias: Initial bias of both gate convolutions.
        zero_gate_kernels: Initialise the gate kernels to zero.
        **kwargs: Standard layer arguments (``name``, ``dtype``, ...).
    """

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                f"SpatialEnhancer '{self.name}' expects a 4D input (batch, height, width, "
                f"channels) with a known channel count; got shape {tuple(input_shape)}."
            )
        channels = int(input_shape[-1])
        reduced = ssp_reduced_channels(channels, self.reduction, self.min_channels)
        gate = dict(
            kernel_size=1,
            kernel_initializer="zeros" if self.zero_gate_kernels else "glorot_uniform",
            bias_initializer=keras.initializers.Constant(self.gate_bias),
            dtype=self.dtype_policy,
        )
        self.reduce = keras.layers.Conv2D(reduced, 1, name="reduce", dtype=self.dtype_policy)
        self.reduce_bn = keras.layers.BatchNormalization(
            momentum=self.batch_norm_momentum,
            epsilon=self.batch_norm_epsilon,
            name="reduce_bn",
            dtype=self.dtype_policy,
        )
        self.gate_h = keras.layers.Conv2D(channels, name="gate_h", **gate)
        self.gate_w = keras.layers.Conv2D(channels, name="gate_w", **gate)
        self.reduce.build((None, None, 1, channels))
        for sublayer in (self.reduce_bn, self.gate_h, self.gate_w):
            sublayer.build((None, None, 1, reduced))

    def _gate(self, gate_conv, pooled, training):
        # NOTE: the tf_keras layer's float operations, _call_with_convolutions in
        # keras_metapool/layers/spatial_enhancer.py (hard swish's 1/6 folded into the
        # gate kernel, as there): both flavours round alike (tests/test_keras3_out.py).
        y = self.reduce_bn(self.reduce(pooled), training=training)
        kernel = ops.cast(gate_conv.kernel, y.dtype) * HARD_SWISH_SCALE
        logits = gate_conv.convolution_op(y * ops.relu6(y + 3.0), kernel)
        return ops.sigmoid(logits + ops.cast(gate_conv.bias, y.dtype))

    def call(self, inputs, training=None):
        gate_h = self._gate(self.gate_h, ops.mean(inputs, axis=2, keepdims=True), training)
        gate_w = self._gate(self.gate_w, ops.mean(inputs, axis=1, keepdims=True), training)
        return inputs * gate_h * gate_w

    def compute_output_shape(self, input_shape):
        return input_shape


#: The package's Keras 3 layers by class name (the tf_keras class names).
LAYERS = {cls.__name__: cls for cls in (HardSwish, SpatialEnhancer)}

__all__ = ["LAYERS", "HardSwish", "SpatialEnhancer", "hard_swish"]

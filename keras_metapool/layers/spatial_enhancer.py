"""Spatial separable pooling (SSP), the learnable-receptive-field op."""

import numpy as np
import tensorflow as tf

from keras_metapool._keras import keras
from keras_metapool._layer_facts import SSPArguments, ssp_reduced_channels
from keras_metapool.layers.activations import HARD_SWISH_SCALE, hard_swish_times_six
from keras_metapool.layers.building import (
    build_in_own_scope,
    build_sublayer,
    feature_map_shape,
    resolve_training,
    traced_as_written,
)


@keras.utils.register_keras_serializable(package="keras_metapool")
class SpatialEnhancer(SSPArguments, keras.layers.Layer):
    """Spatial separable pooling (SSP) of Meta-Pooling (docs/method.md §1).

    For an input ``x`` of shape ``(batch, H, W, C)`` (channels last):

    ```
    zh = mean of x over W                       -> (batch, H, 1, C)
    zw = mean of x over H                       -> (batch, 1, W, C)
    f  = hswish(BN(Conv1x1_{C->m}(.)))          shared by zh and zw
    ah = sigmoid(Conv1x1_{m->C}(f(zh)))         "gate_h"
    aw = sigmoid(Conv1x1_{m->C}(f(zw)))         "gate_w"
    out = x * ah * aw
    ```

    with ``m = max(min_channels, C // reduction)``. Each output pixel thus sees
    its whole row and column: a receptive field spanning the feature map at
    the cost of two 1x1 convolutions on ``H + W`` positions.

    The shared reduction is applied to ``zh`` and ``zw`` separately rather than
    to their concatenation (as the reference does): the function is the same
    at inference, and the graph needs no TRANSPOSE or CONCATENATION, which
    keeps it convertible for the Edge TPU. ``gate_h`` and ``gate_w`` are two
    separate convolutions, as in coordinate attention, which SSP derives from.

    The 1/6 of the bottleneck's hard swish is folded into the gate kernels at
    call time (``gate(x * relu6(x + 3))`` with the kernel scaled by 1/6; the
    stored weights are the plain ones): the TFLite converter would otherwise
    fuse the hard swish into a HARD_SWISH op, which the Edge TPU does not run.
    This way the int8 model of SSP is MEAN, CONV_2D, ADD (ReLU6 fused), MUL,
    CONV_2D, LOGISTIC and MUL, all Edge TPU ops.

    SSP's function has one definition, ``_call_with_convolutions`` below;
    three other forms must equal it, and a test holds each to it:

    - a training step's matrix-product form (``_call_as_matrix_products``,
      next paragraph; tests/test_spatial_enhancer.py, formulations agree);
    - the QAT twin, ``keras_metapool.quantization.layers.QuantizedSpatialEnhancer``
      (the same operations with a fake quantization after each;
      tests/test_quantization.py: close to this layer, equal to its int8 file);
    - the Keras 3 layer, ``keras_metapool.keras3.layers.SpatialEnhancer`` (the
      same operations in ``keras.ops``; tests/test_keras3_out.py).

    A training step computes the same function in another formulation: the
    1x1 convolutions as matrix products on the ``(batch * H, C)`` and
    ``(batch * W, C)`` descriptors, and the BatchNormalization's batch
    statistics and moving-average updates written out (the fused kernel's
    semantics: normalized with the biased batch variance, the moving variance
    fed the unbiased one). The descriptors are tiny, and TensorFlow's CPU
    kernels for convolutions and fused batch norm cost far more on them than
    their arithmetic (docs/benchmarks.md, "What SSP costs beyond its MACs").

    Inference, export and conversion keep the convolutions (the graph the
    Edge TPU maps), and so does training under a ``tf.distribute`` strategy
    (whose partial batches Keras' BatchNormalization handles) or with a
    symbolic ``training`` flag; a frozen layer (``trainable=False``)
    normalizes with its moving statistics, as Keras' does. Both formulations
    agree to float rounding, gradients and moving statistics included
    (tested).

    The layer works for any spatial size >= 1, static or dynamic, and under
    mixed precision (``mixed_float16`` / ``mixed_bfloat16``).

    Args:
        reduction: Channel reduction of the bottleneck (default 32).
        min_channels: Lower bound of the bottleneck width (default 8).
        batch_norm_momentum: Momentum of the bottleneck's BatchNormalization
            (Keras convention; default 0.9, MobileNetV2MP's).
        batch_norm_epsilon: Epsilon of that BatchNormalization.
        gate_bias: Initial bias of both gate convolutions. ``0.0`` (default)
            follows the paper. A large value (with ``zero_gate_kernels``) opens
            the gates so that the layer starts close to the identity, which
            keeps a trained network's function when SSP is inserted into it.
        zero_gate_kernels: Initialise the gate kernels to zero, so that the
            initial gates are the constant ``sigmoid(gate_bias)``.
        **kwargs: Standard layer arguments (``name``, ``dtype``, ...).

    Input shape:
        4D tensor ``(batch, H, W, C)``.

    Output shape:
        Same as the input.
    """

    @build_in_own_scope
    def build(self, input_shape):
        input_shape = feature_map_shape(self, input_shape)
        channels = int(input_shape[-1])
        reduced = ssp_reduced_channels(channels, self.reduction, self.min_channels)
        # Sublayers follow this layer's dtype policy (mixed precision).
        common = dict(kernel_size=1, use_bias=True, dtype=self.dtype_policy)
        gate_kernel = "zeros" if self.zero_gate_kernels else "glorot_uniform"
        gate_bias = keras.initializers.Constant(self.gate_bias)
        self.reduce = keras.layers.Conv2D(reduced, name="reduce", **common)
        self.reduce_bn = keras.layers.BatchNormalization(
            momentum=self.batch_norm_momentum,
            epsilon=self.batch_norm_epsilon,
            name="reduce_bn",
            dtype=self.dtype_policy,
        )
        self.gate_h = keras.layers.Conv2D(
            channels,
            kernel_initializer=gate_kernel,
            bias_initializer=gate_bias,
            name="gate_h",
            **common,
        )
        self.gate_w = keras.layers.Conv2D(
            channels,
            kernel_initializer=gate_kernel,
            bias_initializer=gate_bias,
            name="gate_w",
            **common,
        )
        build_sublayer(self.reduce, [None, None, 1, channels])
        for sublayer in (self.reduce_bn, self.gate_h, self.gate_w):
            build_sublayer(sublayer, [None, None, 1, reduced])
        super().build(input_shape)

    def _bottleneck(self, z, training):
        """Six times the bottleneck, ``6 * hswish(BN(reduce(z)))``; see ``_gate``."""
        return hard_swish_times_six(self.reduce_bn(self.reduce(z), training=training))

    def _gate(self, gate_conv, features):
        """``sigmoid(gate_conv(features / 6))``, the 1/6 folded into the kernel."""
        logits = gate_conv.convolution_op(features, _folded_gate_kernel(gate_conv, features.dtype))
        logits = tf.nn.bias_add(logits, tf.cast(gate_conv.bias, features.dtype))
        return tf.sigmoid(logits)

    @traced_as_written
    def call(self, inputs, training=None):
        if self._trains_as_matrix_products(training):
            return self._call_as_matrix_products(inputs)
        return self._call_with_convolutions(inputs, training)

    def _gated(self, inputs, gate):
        """``inputs * gate(gate_h, row means) * gate(gate_w, column means)``."""
        pooled_h = tf.reduce_mean(inputs, axis=2, keepdims=True)  # (B, H, 1, C)
        pooled_w = tf.reduce_mean(inputs, axis=1, keepdims=True)  # (B, 1, W, C)
        return inputs * gate(self.gate_h, pooled_h) * gate(self.gate_w, pooled_w)

    def _call_with_convolutions(self, inputs, training):
        """The formulation that inference, export and conversion see."""

        def gate(gate_conv, pooled):
            return self._gate(gate_conv, self._bottleneck(pooled, training))

        return self._gated(inputs, gate)

    def _call_as_matrix_products(self, inputs):
        """A training step: the same function as matrix products (class docstring)."""
        return self._gated(inputs, self._gate_as_matrix_products)

    def _trains_as_matrix_products(self, training):
        """Whether this call is a training step that may take the fast formulation.

        Only for a flag known in Python (Keras' ``fit`` passes a bool; a
        tensor is left to Keras' BN), a trainable BatchNormalization (a frozen
        one normalizes with its moving statistics, as in Keras) and no
        distribution strategy.
        """
        if tf.is_tensor(training):
            return False  # Keras' BN decides in the graph
        return (
            resolve_training(training) is True
            and self.reduce_bn.trainable
            and not tf.distribute.has_strategy()
        )

    def _gate_as_matrix_products(self, gate_conv, pooled):
        """``_gate(gate_conv, _bottleneck(pooled, True))``, on rows of descriptors."""
        descriptors = tf.reshape(pooled, (-1, pooled.shape[-1]))
        reduced = _matrix_product(descriptors, self.reduce.kernel, self.reduce.bias)
        features = hard_swish_times_six(self._batch_norm_training(reduced))
        kernel = _folded_gate_kernel(gate_conv, features.dtype)
        logits = _matrix_product(features, kernel, gate_conv.bias)
        return tf.reshape(tf.sigmoid(logits), tf.shape(pooled))

    def _batch_norm_training(self, rows):
        """``reduce_bn(rows, training=True)`` for a 2D batch, moving statistics included.

        As Keras' fused batch norm: computed in float32, normalized with the
        biased batch variance, the moving variance updated with the unbiased
        one, ``moving = momentum * moving + (1 - momentum) * batch``.
        """
        norm = self.reduce_bn
        values = tf.cast(rows, tf.float32)
        normalized, mean, variance = _normalize_by_batch(
            values, norm.gamma, norm.beta, norm.epsilon
        )
        count = tf.cast(tf.shape(values)[0], tf.float32)
        unbiased = variance * (count / tf.maximum(count - 1.0, 1.0))
        decay = 1.0 - norm.momentum
        norm.moving_mean.assign_sub((norm.moving_mean - mean) * decay)
        norm.moving_variance.assign_sub((norm.moving_variance - unbiased) * decay)
        return tf.cast(normalized, rows.dtype)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)


def _folded_gate_kernel(gate_conv, dtype):
    """``gate_conv``'s kernel times hard swish's 1/6, in ``dtype``.

    Scaling the (constant) kernel rather than the features is what keeps the
    converter from fusing a HARD_SWISH op; for the float function it is the
    same product up to rounding.
    """
    return tf.cast(gate_conv.kernel, dtype) * HARD_SWISH_SCALE


def _matrix_product(rows, kernel, bias):
    """A 1x1 convolution's kernel ``(1, 1, C, D)`` and bias applied to ``(N, C)`` rows."""
    kernel = tf.reshape(tf.cast(kernel, rows.dtype), kernel.shape[2:])
    return tf.nn.bias_add(tf.matmul(rows, kernel), tf.cast(bias, rows.dtype))


def _normalize_by_batch(values, gamma, beta, epsilon):
    """Batch norm of ``(N, D)`` float32 rows by their own statistics.

    Returns ``(gamma * normalized + beta, batch mean, biased batch variance)``;
    the statistics carry no gradient. The gradient is written out (the
    standard batch-norm backward pass): an SSP's backward graph is then 100
    nodes instead of the 220 that autodiff builds through ``tf.nn.moments``,
    so a training step is traced and optimized sooner (in a scratch
    measurement the paper model's first step took 0.45 s longer than with
    convolutions, against 0.6-1.0 s longer with autodiff's gradient).
    """

    @tf.custom_gradient
    def normalize(values, gamma, beta):
        mean = tf.reduce_mean(values, axis=0)
        centered = values - mean
        variance = tf.reduce_mean(tf.square(centered), axis=0)
        inverse_std = tf.math.rsqrt(variance + epsilon)
        normalized = centered * inverse_std

        def gradient(d_output, d_mean, d_variance):
            del d_mean, d_variance  # the statistics feed only the moving averages
            d_normalized = d_output * gamma
            d_values = inverse_std * (
                d_normalized
                - tf.reduce_mean(d_normalized, axis=0)
                - normalized * tf.reduce_mean(d_normalized * normalized, axis=0)
            )
            return (
                d_values,
                tf.reduce_sum(d_output * normalized, axis=0),
                tf.reduce_sum(d_output, axis=0),
            )

        return (normalized * gamma + beta, mean, variance), gradient

    return normalize(values, gamma, beta)


def open_gate_bias(scale):
    """Gate bias with which SSP (zero gate kernels) scales its input by ``scale``.

    With zero gate kernels each gate is the constant ``sigmoid(b)``, and SSP
    multiplies by two of them: ``sigmoid(b) ** 2 == scale``.

    Args:
        scale: The constant scale, in (0, 1).
    """
    if not 0.0 < scale < 1.0:
        raise ValueError(f"`scale` must be in (0, 1), got {scale!r}.")
    gate = np.sqrt(scale)
    return float(np.log(gate / (1.0 - gate)))

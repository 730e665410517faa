"""Hard swish, written so that int8 TFLite models of it map to the Edge TPU.

``hard_swish(x) = x * relu6(x + 3) / 6`` (docs/method.md §1). The TFLite converter
fuses that expression, however it is spelled with a scalar ``1/6`` (tf ops or
Keras layers, ``/ 6`` or ``* (1/6)``, before or after the product), into one
HARD_SWISH op, which the Edge TPU does not support: the compiler then runs it
and everything after it on the CPU. Two exact reformulations convert to Edge
TPU ops instead (measured with TF 2.21, int8 full-integer conversion):

- ``hard_swish_times_six(x) = x * relu6(x + 3)``: ADD (ReLU6 fused) + MUL. The
  1/6 is folded into the kernel of the 1x1 convolution that follows, as
  ``SpatialEnhancer`` does with its gate convolutions: two ops, no extra
  rounding step.
- ``hard_swish(x)`` multiplies ``x * relu6(x + 3)`` by a per-channel vector of
  1/6 rather than by the scalar: ADD (ReLU6 fused) + MUL + MUL. It computes the
  very same float operations as the scalar form (bit for bit), and is used
  where no convolution follows directly (after the post-norm BatchNormalization
  of an enhancer, in the paper's head). Of the non-fused spellings measured it
  had the smallest int8 error, on par with the fused HARD_SWISH kernel.
"""

import numpy as np
import tensorflow as tf

from keras_metapool._keras import keras
from keras_metapool._layer_facts import HARD_SWISH_SCALE
from keras_metapool.layers.building import traced_as_written


def hard_swish_times_six(x):
    """Six times hard swish: ``x * relu6(x + 3)``.

    Converts to ADD (ReLU6 fused) + MUL, both on the Edge TPU. Fold the missing
    1/6 into what follows (e.g. a convolution kernel) to get hard swish exactly.

    Args:
        x: A float tensor of any shape.

    Returns:
        A tensor of the same shape and dtype as ``x``.
    """
    return x * tf.nn.relu6(x + 3.0)


def per_channel_one_sixth(x):
    """A vector of 1/6, one entry per channel (last axis) of ``x``, in its dtype.

    Multiplying by it instead of by the scalar 1/6 keeps the TFLite converter
    from fusing hard swish into HARD_SWISH (see the module docstring).
    """
    channels = x.shape[-1]
    if channels is None:
        return tf.fill(tf.shape(x)[-1:], tf.constant(HARD_SWISH_SCALE, x.dtype))
    return tf.constant(np.full((channels,), HARD_SWISH_SCALE), dtype=x.dtype)


def hard_swish(x):
    """Hard swish, ``x * relu6(x + 3) / 6`` (docs/method.md §1), Edge TPU-clean.

    The same float result as the textbook formula, bit for bit; its int8 TFLite
    form is ADD (ReLU6 fused) + MUL + MUL instead of HARD_SWISH, which the Edge
    TPU does not support (see the module docstring).

    Args:
        x: A float tensor of any shape; the last axis is the channel axis.

    Returns:
        A tensor of the same shape and dtype as ``x``.
    """
    return hard_swish_times_six(x) * per_channel_one_sixth(x)


@keras.utils.register_keras_serializable(package="keras_metapool")
class HardSwish(keras.layers.Layer):
    """Layer form of ``hard_swish``, for the enhancers' post-norm and the head.

    Computes ``x * relu6(x + 3) / 6`` in a form whose int8 TFLite conversion
    contains only Edge TPU ops (ADD with fused ReLU6, MUL, MUL), not
    HARD_SWISH. ``keras_metapool.quantize_model`` replaces it with
    ``keras_metapool.quantization.QuantizedHardSwish``, which fake-quantizes
    each of those three op outputs.

    Input shape:
        Any; the last axis is the channel axis.

    Output shape:
        Same as the input.
    """

    @traced_as_written
    def call(self, inputs):
        return hard_swish(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

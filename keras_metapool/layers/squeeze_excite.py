"""Squeeze-and-excitation: channel gating from the whole map, the anchor SSP is compared with.

SSP gates each row and each column from their means (spatial context along
one axis at a time); squeeze-and-excitation (Hu et al., arXiv 1709.01507, in
MobileNetV3's form, arXiv 1905.02244) gates each channel from the mean of the
whole map. Placed where SSP goes, it tells whether SSP's row and column
structure matters or only gating does.
"""

import tensorflow as tf

from keras_metapool._keras import keras
from keras_metapool.layers.activations import HARD_SWISH_SCALE
from keras_metapool.layers.building import traced_as_written

#: MobileNetV3's squeeze ratio: the bottleneck has 1/4 of the channels.
SQUEEZE_RATIO = 4


def squeeze_channels(channels, ratio=SQUEEZE_RATIO):
    """The bottleneck width: ``channels / ratio`` rounded to a multiple of 8 (MobileNetV3's)."""
    value = channels / ratio
    rounded = max(8, int(value + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * value else rounded


@keras.utils.register_keras_serializable(package="keras_metapool")
class SqueezeExcite(keras.layers.Layer):
    """``x * hard_sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2)``: MobileNetV3's squeeze-and-excitation.

    The mean over the map (one value per channel), a 1x1 convolution to
    ``squeeze_channels(C)`` channels with ReLU, a 1x1 convolution back to C
    channels, hard sigmoid (``relu6(x + 3) / 6``), and the product with the
    input. Shape-preserving; its int8 TFLite form is MEAN, CONV_2D, CONV_2D,
    ADD with a fused ReLU6, MUL and MUL: Edge TPU ops.

    Args:
        ratio: Squeeze ratio (default 4).
        **kwargs: Standard layer arguments (``name``, ``dtype``, ...).

    Raises:
        ValueError: if ``ratio`` is not a positive integer, or the input is
            not a 4-D channels-last tensor with a known channel count.

    Example:
        >>> layer = SqueezeExcite(name="se")
        >>> layer(tf.ones((2, 8, 8, 32))).shape
        TensorShape([2, 8, 8, 32])
    """

    def __init__(self, ratio=SQUEEZE_RATIO, **kwargs):
        super().__init__(**kwargs)
        if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
            raise ValueError(f"SqueezeExcite: `ratio` must be a positive integer, got {ratio!r}.")
        self.ratio = ratio

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                f"SqueezeExcite expects a 4-D channels-last input with known channels, got "
                f"shape {tuple(input_shape)}."
            )
        channels = int(input_shape[-1])
        common = dict(kernel_size=1, dtype=self.dtype_policy)
        self.squeeze = keras.layers.Conv2D(
            squeeze_channels(channels, self.ratio), activation="relu", name="squeeze", **common
        )
        self.excite = keras.layers.Conv2D(channels, name="excite", **common)
        self.squeeze.build((None, 1, 1, channels))
        self.excite.build((None, 1, 1, self.squeeze.filters))
        super().build(input_shape)

    @traced_as_written
    def call(self, inputs):
        context = tf.reduce_mean(inputs, axis=(1, 2), keepdims=True)
        gate = self.excite(self.squeeze(context))
        # Hard sigmoid, relu6(x + 3) / 6: hard swish's gate.
        return inputs * (tf.nn.relu6(gate + 3.0) * HARD_SWISH_SCALE)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "ratio": self.ratio}

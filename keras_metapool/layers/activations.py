"""Activations used by Meta-Pooling layers."""

import tensorflow as tf

from keras_metapool._keras import keras


def hard_swish(x):
    """Hard swish, ``x * relu6(x + 3) / 6`` (METHOD.md §1).

    Args:
        x: A float tensor of any shape.

    Returns:
        A tensor of the same shape and dtype as ``x``.
    """
    return x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0)


@keras.utils.register_keras_serializable(package="keras_metapool")
class HardSwish(keras.layers.Layer):
    """Layer form of ``hard_swish``, for the enhancers' post-norm and the head."""

    def call(self, inputs):
        return hard_swish(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

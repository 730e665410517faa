"""How the Meta-Pooling layers build: input-shape checks and variable name scopes."""

import contextlib
import functools

import tensorflow as tf


def feature_map_shape(layer, input_shape):
    """``input_shape`` as a TensorShape, if it is a 4D NHWC map with known C.

    Raises:
        ValueError: naming ``layer`` and the shape it got.
    """
    input_shape = tf.TensorShape(input_shape)
    if input_shape.rank != 4 or input_shape[-1] is None:
        raise ValueError(
            f"{type(layer).__name__} '{layer.name}' expects a 4D input (batch, height, "
            f"width, channels) with a known channel count; got shape {input_shape}."
        )
    return input_shape


def build_in_own_scope(build):
    """Decorates a layer's ``build`` to run under the layer's name scope.

    Keras enters that scope when it builds a layer on first call, but not when
    it rebuilds one loaded from a .keras file; without it, variable names
    (``block_6_mp/alpha:0``) would come back unscoped (``alpha:0``).
    """

    @functools.wraps(build)
    def wrapper(layer, input_shape):
        with contextlib.ExitStack() as scope:
            if tf.get_current_name_scope().split("/")[-1] != layer.name:
                scope.enter_context(tf.name_scope(layer.name))
            return build(layer, input_shape)

    return wrapper


def build_sublayer(layer, input_shape):
    """Builds ``layer`` now, under its own name scope.

    Keras names a sublayer's variables after the sublayer only when it builds
    them on first call; an explicit ``build`` needs the scope, or the weights
    of two sublayers share names and collide in .h5 files.
    """
    with tf.name_scope(layer.name):
        layer.build(tf.TensorShape(input_shape))

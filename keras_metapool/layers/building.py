"""How the Meta-Pooling layers build and run: input-shape checks, variable name scopes,
weight paths, the ``training`` flag."""

import contextlib
import functools

import numpy as np
import tensorflow as tf

from keras_metapool import _internals
from keras_metapool._keras import keras


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


def traced_as_written(call):
    """Decorates a layer's ``call`` to be traced as written, without AutoGraph.

    tf_keras converts a subclassed layer's ``call`` with AutoGraph whenever it
    traces it (a functional model's construction, a train, test or predict
    function). keras_metapool's calls branch on Python values only: the
    ``training`` flag is resolved to a bool by ``resolve_training`` or
    branched on with ``tf.cond``. The conversion changes nothing in their
    graphs and adds its cost to every trace (docs/benchmarks.md#tracing-time).
    """
    return _internals.with_argument_list_of(call, tf.autograph.experimental.do_not_convert(call))


def build_sublayer(layer, input_shape):
    """Builds ``layer`` now, under its own name scope.

    Keras names a sublayer's variables after the sublayer only when it builds
    them on first call; an explicit ``build`` needs the scope, or the weights
    of two sublayers share names and collide in .h5 files.
    """
    with tf.name_scope(layer.name):
        layer.build(tf.TensorShape(input_shape))


def weight_path(layer, variable):
    """``variable``'s name below ``layer`` ("reduce/kernel" for an SSP's).

    The name as is when it does not hold the layer's name (a Keras 3
    variable, a layer built outside its scope).
    """
    name = variable.name.split(":")[0]
    marker = layer.name + "/"
    start = name.find(marker)
    return name[start + len(marker) :] if start >= 0 else name


def weight_values_in_order_of(source, target):
    """``source``'s weight values, in the order of ``target.weights``.

    Keras lists a layer's trainable weights first, so a frozen
    (``trainable=False``) SSP lists its ten weights in another order than a
    trainable one: copied by position, they would land in the wrong
    variables. Matched by path below the layer, the order does not matter.
    Where the paths do not correspond one to one, the values keep their
    order (the caller's shape check then speaks).
    """
    values = source.get_weights()
    source_paths = [weight_path(source, variable) for variable in source.weights]
    target_paths = [weight_path(target, variable) for variable in target.weights]
    if len(set(target_paths)) != len(target_paths) or sorted(source_paths) != sorted(target_paths):
        return values
    by_path = dict(zip(source_paths, values))
    return [by_path[path] for path in target_paths]


def resolve_training(training):
    """A layer's ``training`` argument as a Python bool where it is known.

    ``None`` means Keras' learning phase; Python and NumPy booleans and
    integers, and tensors with a static value, become a bool; any other
    tensor is returned as is, for the layer to branch on in the graph.
    """
    if training is None:
        training = keras.backend.learning_phase()
    if isinstance(training, (bool, int, np.bool_, np.integer)):
        return bool(training)
    static = tf.get_static_value(training)
    return bool(static) if static is not None else training

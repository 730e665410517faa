"""fit on the Keras 3 models keras_metapool returns traces its train step once.

Keras 3 (TensorFlow backend, no ``tf.distribute`` strategy) creates the
optimizer's slots and the metrics' totals inside the first trace of its train
step, and ``tf.function`` traces a function twice when a trace creates
variables. The models ``to_keras3``, ``MobileNetV2MP`` and ``quantize_model``
return build them first, from the data's spec, as fit does under a strategy.
The tf_keras counterpart is ``keras_metapool._internals.build_training_variables``.
"""

import keras

from keras_metapool import _internals


def build_from_spec(model, element_spec):
    """Builds ``model``'s training state (optimizer, loss, metrics) from a batch's spec.

    Private: ``Trainer._symbolic_build`` (Keras 3.15), which reads only the
    shapes and dtypes of a batch; done only where fit itself leaves it to the
    trace (no strategy) and the spec is plain tensors.
    """
    import tensorflow as tf

    specs = tf.nest.flatten(element_spec)
    if tf.distribute.has_strategy() or not specs:
        return
    if all(isinstance(spec, tf.TensorSpec) for spec in specs):
        model._symbolic_build(data_batch=element_spec)


def trace_train_step_once(model):
    """Makes ``model.fit`` trace its train step once (``make_train_function``
    overridden on this instance); other backends are left as they are."""
    if keras.backend.backend() != "tensorflow":
        return model
    return _internals.trace_train_step_once(model, build_from_spec)

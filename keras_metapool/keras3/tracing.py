"""fit on the Keras 3 models keras_metapool returns traces its train step once.

Keras 3 (TensorFlow backend, no ``tf.distribute`` strategy) creates the
optimizer's slots and the metrics' totals inside the first trace of its train
step, and ``tf.function`` traces a function twice when a trace creates
variables. The models ``to_keras3``, ``MobileNetV2MP`` and ``quantize_model``
return build them first, from the data's spec, as fit does under a strategy.
The tf_keras counterpart is ``keras_metapool._internals.build_training_variables``.
"""

import keras


class _TrainFunctionBuildingFirst:
    """fit's train function, which builds the model's training state before the first trace.

    Private: ``Trainer._symbolic_build`` (Keras 3.15), given the iterator's
    ``element_spec`` (it reads only the shapes and dtypes of a batch); done
    only where fit itself would leave it to the trace (no strategy).
    """

    def __init__(self, model, function):
        self._model = model
        self._function = function
        self._built = False

    def __call__(self, iterator):
        if not self._built:
            self._built = True
            import tensorflow as tf

            spec = getattr(iterator, "element_spec", None)
            specs = tf.nest.flatten(spec)
            if (
                not tf.distribute.has_strategy()
                and specs
                and all(isinstance(s, tf.TensorSpec) for s in specs)
            ):
                self._model._symbolic_build(data_batch=spec)
        return self._function(iterator)

    def __getattr__(self, name):
        return getattr(self._function, name)


def trace_train_step_once(model):
    """Makes ``model.fit`` trace its train step once (``make_train_function``
    overridden on this instance); other backends are left as they are."""
    if keras.backend.backend() != "tensorflow":
        return model
    plain = model.make_train_function

    def make_train_function(force=False):
        plain(force=force)  # sets model.train_function
        if not isinstance(model.train_function, _TrainFunctionBuildingFirst):
            model.train_function = _TrainFunctionBuildingFirst(model, model.train_function)
        return model.train_function

    model.make_train_function = make_train_function
    return model

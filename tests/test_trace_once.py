"""fit traces its train step once on the models keras_metapool makes, and trains the same.

tf.function traces twice when its first trace creates variables, which fit's
first step does (optimizer slots, metric totals); the builder's models and
quantize_model's models create them first (_internals.build_training_variables).
A plain tf_keras model of the same layers and weights, traced twice, is the
reference. Small models: the mechanism does not depend on the size. Our
layers' calls are traced as written, without AutoGraph's conversion.
"""

import inspect

import numpy as np
import tensorflow as tf
from tensorflow.python.autograph.impl.api import is_autograph_artifact

import keras_metapool as km
from keras_metapool import _internals
from keras_metapool._keras import Functional, functional_model, keras
from keras_metapool.quantization import layers as quantized_layers

SHAPE = (12, 12, 3)


def _data():
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, (64, *SHAPE)).astype("float32"), np.arange(64) % 10


def _layers(inputs):
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.layers.Dense(10, activation="softmax", name="predictions")(x)


def _fit(model, x, y, epochs=2):
    if model.optimizer is None:
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", ["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0).history
    return history, model.train_function.experimental_get_tracing_count()


def test_the_builder_returns_the_model_class_that_traces_once():
    model = km.MobileNetV2MP(weights=None, alpha=0.35, input_shape=(32, 32, 3), classes=10)
    assert type(model) is Functional


def test_a_model_of_ours_traces_once_and_trains_as_a_plain_keras_model_does():
    x, y = _data()
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    ours = functional_model(inputs, _layers(inputs), name="ours")
    plain = keras.Model.from_config(ours.get_config())  # tf_keras' own Functional
    plain.set_weights(ours.get_weights())
    assert type(plain) is not Functional
    history, traces = _fit(ours, x, y)
    plain_history, plain_traces = _fit(plain, x, y)
    assert (traces, plain_traces) == (1, 2)
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(history[key], plain_history[key], rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(ours.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)
    assert history["loss"][-1] < history["loss"][0]  # it trained
    # A second fit keeps the train function it made: no third trace.
    assert _fit(ours, x, y, epochs=1)[1] == 1


def test_a_qat_model_traces_once():
    x, y = _data()
    inputs = keras.Input(SHAPE)
    qat = km.quantize_model(keras.Model(inputs, _layers(inputs)), representative_data=x[:16])
    history, traces = _fit(qat, x, y)
    assert traces == 1
    assert np.all(np.isfinite(history["loss"]))


def test_what_fit_would_build_is_left_to_fit_where_it_cannot_be_told():
    inputs = keras.Input(SHAPE)
    model = functional_model(inputs, _layers(inputs), name="ours")
    model.compile("adam", "sparse_categorical_crossentropy")
    images = tf.TensorSpec([None, *SHAPE], tf.float32)
    labels = tf.TensorSpec([None], tf.int64)
    assert not _internals.build_training_variables(model, images)  # no targets
    assert not _internals.build_training_variables(model, (images, None))
    assert not model.compiled_metrics.built
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():  # variables per replica
        assert not _internals.build_training_variables(model, (images, labels))
    assert _internals.build_training_variables(model, (images, labels))
    assert model.compiled_metrics.built


# -- Keras 3 (TensorFlow backend) ----------------------------------------------------------
def _keras3_trace_counter(model):
    """Counts the traces of ``model``'s train step (Python runs it only while tracing)."""
    calls = []
    step = model.train_step

    def train_step(data):
        calls.append(1)
        return step(data)

    model.train_step = train_step
    return calls


def _keras3_fit(model, x, y):
    import keras as keras3

    traces = _keras3_trace_counter(model)
    optimizer = keras3.optimizers.Adam(1e-2)
    model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    return history, len(traces)


def test_a_keras3_model_of_ours_traces_once_and_trains_as_a_plain_keras3_model_does():
    import keras as keras3

    from keras_metapool import keras3 as kmp3

    x, y = _data()
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    ours = kmp3.to_keras3(functional_model(inputs, _layers(inputs), name="ours"))
    plain = keras3.Model.from_config(ours.get_config())
    plain.set_weights(ours.get_weights())
    history, traces = _keras3_fit(ours, x, y)
    plain_history, plain_traces = _keras3_fit(plain, x, y)
    assert (traces, plain_traces) == (1, 2)
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(history[key], plain_history[key], rtol=1e-5, atol=1e-6)
    assert history["loss"][-1] < history["loss"][0]


def test_a_keras3_qat_model_traces_once():
    import keras as keras3

    from keras_metapool import keras3 as kmp3

    x, y = _data()
    inputs = keras3.Input(SHAPE)
    h = keras3.layers.Conv2D(8, 3, name="conv")(inputs)
    h = keras3.layers.BatchNormalization(name="bn")(h)
    h = keras3.layers.ReLU(name="relu")(h)
    h = keras3.layers.GlobalAveragePooling2D(name="pool")(h)
    outputs = keras3.layers.Dense(10, activation="softmax", name="predictions")(h)
    qat = kmp3.quantize_model(keras3.Model(inputs, outputs), representative_data=x[:16])
    history, traces = _keras3_fit(qat, x, y)
    assert traces == 1
    assert np.all(np.isfinite(history["loss"]))


def _our_layer_classes(base=keras.layers.Layer):
    for cls in base.__subclasses__():
        if cls.__module__.startswith("keras_metapool.") and "call" in vars(cls):
            yield cls
        yield from _our_layer_classes(cls)


def test_our_layers_are_traced_without_autograph_and_keep_their_arguments():
    classes = set(_our_layer_classes())
    names = {cls.__name__ for cls in classes}
    assert {"SpatialEnhancer", "MetaPoolingBlock", "QuantizedSpatialEnhancer"} <= names
    assert quantized_layers.QuantizedHardSwish in classes
    for cls in classes:
        assert is_autograph_artifact(cls.call), cls  # decorated with traced_as_written
        # Keras reads the argument list through the decorator: it passes
        # ``training`` to the calls that take it, and only to those.
        expects = "training" in inspect.signature(cls.call).parameters
        layer = cls.__new__(cls)
        keras.layers.Layer.__init__(layer)
        assert layer._expects_training_arg == expects, cls

"""fit traces its train step once on the models keras_metapool makes, and trains the same.

tf.function traces twice when its first trace creates variables, which fit's
first step does (optimizer slots, metric totals); the builder's models and
quantize_model's models create them first (_internals.build_training_variables).
A plain tf_keras clone of the same model, traced twice, is the reference.
"""

import numpy as np
import pytest

import keras_metapool as km
from keras_metapool._keras import keras

SHAPE = (32, 32, 3)


def _data():
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, (64, *SHAPE)).astype("float32"), np.arange(64) % 10


def _fit(model, x, y):
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    return history, model.train_function.experimental_get_tracing_count()


@pytest.mark.slow
def test_a_builder_model_traces_once_and_trains_as_a_plain_keras_model_does():
    x, y = _data()
    model = km.MobileNetV2MP(
        weights=None, meta_pooling="paper", alpha=0.35, input_shape=SHAPE, classes=10
    )
    plain = keras.Model.from_config(model.get_config())  # tf_keras' own Functional
    plain.set_weights(model.get_weights())
    assert type(plain) is not type(model)
    history, traces = _fit(model, x, y)
    plain_history, plain_traces = _fit(plain, x, y)
    assert (traces, plain_traces) == (1, 2)
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(history[key], plain_history[key], rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(model.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    # A second fit keeps the train function it made (no third trace).
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert model.train_function.experimental_get_tracing_count() == 1


@pytest.mark.slow
def test_a_qat_model_traces_once():
    x, y = _data()
    model = km.MobileNetV2MP(weights=None, meta_pooling="none", alpha=0.35, input_shape=SHAPE,
                             classes=10)  # fmt: skip
    qat = km.quantize_model(model, representative_data=x[:16])
    history, traces = _fit(qat, x, y)
    assert traces == 1
    assert np.all(np.isfinite(history["loss"]))


def test_data_without_targets_is_left_to_fit():
    from keras_metapool import _internals

    model = km.MobileNetV2MP(weights=None, meta_pooling="none", alpha=0.35, input_shape=SHAPE,
                             classes=10)  # fmt: skip
    model.compile("adam", "sparse_categorical_crossentropy")
    import tensorflow as tf

    images_only = tf.TensorSpec([None, *SHAPE], tf.float32)
    assert not _internals.build_training_variables(model, images_only)
    assert not _internals.build_training_variables(model, (images_only, None))
    assert not model.optimizer.variables()[1:]  # nothing but the iteration counter

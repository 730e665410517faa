"""Keras 3 users: a Keras 3 MobileNetV2 comes in; Keras 3 models elsewhere get one way forward.

Keras 3 is what ``import keras`` gives with TensorFlow 2.21 (keras_metapool itself is
built on tf_keras: TF-MOT's QAT rejects Keras 3 models).
"""

import keras as keras3
import numpy as np
import pytest
import tf_keras

import keras_metapool as km
from keras_metapool.export import to_tflite

#: What every Keras 3 refusal names: the way in.
WAY_IN = "keras_metapool.from_mobilenet_v2(model)"


def _keras3_mobilenet_v2(alpha, size, classes=10, seed=0, **kwargs):
    """A Keras 3 keras.applications MobileNetV2 with random weights and BN statistics.

    Without non-default BN statistics a random MobileNetV2 saturates and
    predicts alike for every input; comparisons would mean little.
    """
    keras3.utils.set_random_seed(seed)
    model = keras3.applications.MobileNetV2(
        weights=None, alpha=alpha, input_shape=(size, size, 3), classes=classes, **kwargs
    )
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras3.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.8, 1.2, gamma.shape).astype(np.float32),
                    rng.normal(0.0, 0.1, beta.shape).astype(np.float32),
                    rng.normal(0.0, 0.2, mean.shape).astype(np.float32),
                    rng.uniform(0.5, 2.0, variance.shape).astype(np.float32),
                ]
            )
    return model


@pytest.mark.parametrize(
    "alpha,size,kwargs",
    [(0.35, 64, {}), (0.5, 96, {}), (0.35, 64, {"include_top": False, "pooling": "avg"})],
    ids=["0.35_64", "0.5_96", "features"],
)
def test_a_keras3_mobilenet_v2_comes_in_with_the_same_predictions(alpha, size, kwargs):
    base = _keras3_mobilenet_v2(alpha, size, **kwargs)
    images = np.random.default_rng(1).uniform(-1, 1, (4, size, size, 3)).astype(np.float32)
    expected = np.asarray(base.predict(images, verbose=0))
    model = km.from_mobilenet_v2(base)  # the paper's SSP at blocks 6-16, identity-initialised
    assert isinstance(model, tf_keras.Model)  # tf_keras: QAT and export work on it
    assert model.count_params() > base.count_params()
    got = model.predict(images, verbose=0)
    assert expected.std() > 1e-3  # the outputs differ per image: a real comparison
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_keras3_models_get_one_message_with_the_way_in(tmp_path):
    base = _keras3_mobilenet_v2(0.35, 32)
    images = np.zeros((2, 32, 32, 3), np.float32)
    calls = {
        "quantize_model": lambda: km.quantize_model(base),
        "Export": lambda: to_tflite(base, str(tmp_path / "m.tflite"), mode="float"),
        "to_fixed_model": lambda: km.to_fixed_model(base),
        "PMPLCallback": lambda: _fit_keras3_with_pmpl(base, images),
    }
    for what, call in calls.items():
        with pytest.raises(ValueError) as raised:
            call()
        message = str(raised.value)
        assert message.startswith(f"{what} needs a tf_keras model; got the Keras 3 model")
        assert WAY_IN in message and "TF-MOT" in message


def _fit_keras3_with_pmpl(model, images):
    model.compile("adam", "sparse_categorical_crossentropy")
    labels = np.zeros(len(images), np.int64)
    model.fit(images, labels, epochs=1, callbacks=[km.PMPLCallback()], verbose=0)

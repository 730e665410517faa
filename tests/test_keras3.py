"""Keras 3 users: a Keras 3 MobileNetV2 comes in; Keras 3 models elsewhere get one way forward.

Keras 3 is what ``import keras`` gives with TensorFlow 2.21 (keras_metapool itself is
built on tf_keras: TF-MOT's QAT rejects Keras 3 models).
"""

import keras as keras3
import numpy as np
import pytest
import tf_keras

import keras_metapool as km

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


@pytest.mark.slow
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


def test_keras3_models_get_one_message_with_the_way_in():
    base = _keras3_mobilenet_v2(0.35, 32)
    images = np.zeros((2, 32, 32, 3), np.float32)
    calls = {
        "quantize_model": lambda: km.quantize_model(base),
        "to_fixed_model": lambda: km.to_fixed_model(base),
        "PMPLCallback": lambda: _fit_keras3_with_pmpl(base, images),
    }
    for what, call in calls.items():
        with pytest.raises(ValueError) as raised:
            call()
        message = str(raised.value)
        assert message.startswith(f"{what} needs a tf_keras model; got the Keras 3 model")
        assert WAY_IN in message and "TF-MOT" in message
        assert "keras_metapool.keras3.quantize_model" in message  # QAT in Keras 3


def _fit_keras3_with_pmpl(model, images):
    model.compile("adam", "sparse_categorical_crossentropy")
    labels = np.zeros(len(images), np.int64)
    model.fit(images, labels, epochs=1, callbacks=[km.PMPLCallback()], verbose=0)


@pytest.mark.slow
@pytest.mark.parametrize("file_name", ["mobilenet_v2.weights.h5", "mobilenet_v2.keras"])
def test_keras3_weight_files_load_into_mobilenet_v2mp(file_name, tmp_path):
    base = _keras3_mobilenet_v2(0.35, 32)
    path = str(tmp_path / file_name)
    base.save_weights(path) if file_name.endswith(".weights.h5") else base.save(path)
    images = np.random.default_rng(1).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    expected = np.asarray(base.predict(images, verbose=0))
    model = km.MobileNetV2MP(
        weights=path, alpha=0.35, input_shape=(32, 32, 3), classes=10, meta_pooling="none"
    )
    assert expected.std() > 1e-3
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-5)
    # Another width: the first layer that differs is named, with both shapes.
    with pytest.raises(ValueError) as raised:
        km.MobileNetV2MP(
            weights=path, alpha=0.5, input_shape=(32, 32, 3), classes=10, meta_pooling="none"
        )
    message = str(raised.value)
    assert "layer 'block_1_project' does not match" in message
    assert "(1, 1, 48, 16)" in message and "(1, 1, 48, 8)" in message


@pytest.mark.slow
def test_a_keras3_meta_pooling_model_comes_back_through_its_keras_file(tmp_path):
    from keras_metapool.keras3 import to_keras3

    model = km.MobileNetV2MP(
        weights=None, alpha=0.35, input_shape=(32, 32, 3), classes=10, meta_pooling="paper"
    )
    rng = np.random.default_rng(0)
    for layer in model.submodules:
        if isinstance(layer, tf_keras.layers.Conv2D) and layer.name == "gate_h":
            layer.bias.assign(rng.normal(0.0, 1.0, layer.bias.shape).astype(np.float32))
    path = str(tmp_path / "paper.keras")
    to_keras3(model).save(path)
    again = km.MobileNetV2MP(
        weights=path, alpha=0.35, input_shape=(32, 32, 3), classes=10, meta_pooling="paper"
    )
    for mine, theirs in zip(model.weights, again.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.name)

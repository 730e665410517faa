"""evaluate_tflite / tflite_predict on a small CNN trained on real Fashion-MNIST.

A trained network is what makes "the quantized model predicts like the Keras
model" a meaningful claim (an untrained one amplifies any rounding), and a
small one keeps training and five conversions within seconds.
"""

import warnings

import numpy as np
import pytest
import tensorflow as tf

from keras_metapool._keras import keras
from keras_metapool.data.fashion_mnist import load_fashion_mnist
from keras_metapool.export import (
    TFLITE_MODES,
    TFLiteRunner,
    evaluate_tflite,
    measure_latency,
    tflite_predict,
    to_tflite,
)

NUM_TEST = 500


def _scale(pixels):
    return (pixels[..., None].astype(np.float32) / 127.5 - 1.0).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    train_x, train_y = load_fashion_mnist("train", limit=4000)
    test_x, test_y = load_fashion_mnist("test", limit=NUM_TEST)
    return _scale(train_x), train_y, _scale(test_x), test_y


@pytest.fixture(scope="module")
def trained(data):
    train_x, train_y, _, _ = data
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train_x, train_y, batch_size=64, epochs=3, verbose=0)
    return model


@pytest.fixture(scope="module")
def exports(trained, data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate")
    train_x = data[0]
    return {
        mode: to_tflite(trained, folder / f"{mode}.tflite", mode, representative_data=train_x)
        for mode in TFLITE_MODES
    }


@pytest.fixture(scope="module")
def keras_predictions(trained, data):
    return trained.predict(data[2], verbose=0)


def test_the_network_learned(keras_predictions, data):
    accuracy = np.mean(keras_predictions.argmax(-1) == data[3])
    assert accuracy > 0.7  # chance is 0.1: the comparisons below are meaningful


@pytest.mark.parametrize("mode", TFLITE_MODES)
def test_tflite_predicts_like_keras(mode, exports, keras_predictions, data):
    outputs = tflite_predict(exports[mode].path, data[2])
    assert outputs.shape == keras_predictions.shape and outputs.dtype == np.float32
    agreement = np.mean(outputs.argmax(-1) == keras_predictions.argmax(-1))
    if mode == "float":
        np.testing.assert_allclose(outputs, keras_predictions, atol=1e-5)
    else:
        assert agreement >= 0.97, agreement
        # Dequantized probabilities, not raw int8/uint8 codes.
        np.testing.assert_allclose(outputs.sum(-1), 1.0, atol=0.05)


@pytest.mark.parametrize("mode", TFLITE_MODES)
def test_evaluate_tflite_accuracy_and_latency(mode, exports, keras_predictions, data):
    test_x, test_y = data[2], data[3]
    result = evaluate_tflite(exports[mode].path, (test_x, test_y))
    keras_accuracy = np.mean(keras_predictions.argmax(-1) == test_y)
    expected = np.mean(tflite_predict(exports[mode].path, test_x).argmax(-1) == test_y)
    assert result.accuracy == pytest.approx(expected)
    # In images, with half an image of slack: k/N - (k-1)/N is not exactly 1/N in floats.
    images_apart = abs(result.accuracy - keras_accuracy) * NUM_TEST
    assert images_apart <= (1 if mode == "float" else 10) + 0.5
    assert result.num_examples == NUM_TEST
    assert result.latency.batch_size == 1 and result.latency.runs == NUM_TEST
    assert 0 < result.latency.median_ms <= result.latency.p90_ms


def test_evaluate_tflite_takes_datasets_and_one_hot_labels(exports, data):
    test_x, test_y = data[2], data[3]
    path = exports["int8"].path
    reference = evaluate_tflite(path, (test_x, test_y))
    one_hot = tf.one_hot(test_y, 10)
    batched = tf.data.Dataset.from_tensor_slices((test_x, one_hot)).batch(64)
    from_dataset = evaluate_tflite(path, batched, batch_size=16)
    assert from_dataset.accuracy == pytest.approx(reference.accuracy)
    assert from_dataset.latency.batch_size == 16
    # Class indices in a column, as CIFAR's (N, 1): not one-hot over one class.
    column = evaluate_tflite(path, (test_x, test_y[:, None]))
    assert column.accuracy == pytest.approx(reference.accuracy)
    with pytest.raises(ValueError, match=r"Labels of shape \(500, 3\) for a model with 10 outputs"):
        evaluate_tflite(path, (test_x, np.zeros((len(test_x), 3))))
    unbatched = tf.data.Dataset.from_tensor_slices((test_x, test_y))
    first = evaluate_tflite(path, unbatched, max_examples=50)
    assert first.num_examples == 50
    assert first.accuracy == pytest.approx(
        evaluate_tflite(path, (test_x[:50], test_y[:50])).accuracy
    )


def test_static_batch_model_pads_the_last_batch(exports, data):
    # The edgetpu model has batch 1; a dynamic model evaluated at batch 7
    # leaves a remainder of 500 % 7 = 3 images.
    test_x = data[2][:20]
    expected = tflite_predict(exports["uint8"].path, test_x)
    np.testing.assert_array_equal(
        tflite_predict(exports["uint8"].path, test_x, batch_size=7), expected
    )
    # The edgetpu file quantizes its dense kernel per tensor (the uint8 one per
    # class), so it is compared with itself, one image per call.
    one_by_one = np.concatenate(
        [tflite_predict(exports["edgetpu"].path, test_x[i : i + 1]) for i in range(len(test_x))]
    )
    np.testing.assert_array_equal(tflite_predict(exports["edgetpu"].path, test_x), one_by_one)


def test_predict_timed_times_every_invoke_and_predicts_like_predict(exports, data):
    test_x = data[2][:20]
    dynamic = TFLiteRunner(exports["uint8"].path)
    outputs, seconds = dynamic.predict_timed(test_x, batch_size=7)
    np.testing.assert_array_equal(outputs, dynamic.predict(test_x, batch_size=7))
    assert len(seconds) == 3 and all(s > 0 for s in seconds)  # 7 + 7 + 6 images
    static = TFLiteRunner(exports["edgetpu"].path)  # batch 1: one invoke per image
    outputs, seconds = static.predict_timed(test_x, batch_size=7)
    assert outputs.shape[0] == 20 and len(seconds) == 20


def test_measure_latency(exports):
    stats = measure_latency(exports["float"].path, runs=12, warmup=2)
    assert stats.runs == 12 and stats.batch_size == 1
    assert 0 < stats.median_ms <= stats.p90_ms


def test_bad_input(exports, data, tmp_path):
    path = exports["float"].path
    with pytest.raises(ValueError, match="no output named 'logits'.*probabilities"):
        tflite_predict(path, data[2][:2], output="logits")
    with pytest.raises(ValueError, match=r"dataset of \(images, labels\)"):
        evaluate_tflite(path, tf.data.Dataset.from_tensor_slices(data[2][:4]))
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        evaluate_tflite(path, (data[2][:4], data[3][:3]))
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"nonsense")
    with pytest.raises(ValueError, match="bad.tflite.*not a TFLite model"):
        evaluate_tflite(bad, (data[2][:4], data[3][:4]))


def test_images_that_are_not_preprocessed_warn(exports, data):
    from keras_metapool.data.preprocessing import InputRangeWarning

    path, (test_x, test_y) = exports["uint8"].path, (data[2][:8], data[3][:8])
    with pytest.warns(InputRangeWarning, match="evaluate_tflite's images spans .* raw pixels"):
        evaluate_tflite(path, ((test_x + 1.0) * 127.5, test_y))
    with pytest.warns(InputRangeWarning, match="tflite_predict's images spans .* scaled to"):
        tflite_predict(path, (test_x + 1.0) / 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputRangeWarning)
        evaluate_tflite(path, (test_x, test_y))


def test_a_model_of_dynamic_image_size_runs_at_the_size_of_its_images(trained, data, tmp_path):
    # The same network, without its Dense head, takes any image size.
    inputs = keras.Input((None, None, 1))
    x = inputs
    for layer in trained.layers[:2]:
        x = layer(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    path = tmp_path / "any_size.tflite"
    to_tflite(model, path, "int8", representative_data=data[0][:32])
    runner = TFLiteRunner(path)
    assert runner.input_shape == (None, None, 1)
    for size in (28, 40):
        images = tf.image.resize(data[2][:4], (size, size)).numpy()
        expected = model.predict(images, verbose=0)
        np.testing.assert_allclose(tflite_predict(path, images), expected, atol=0.05)
    with pytest.raises(ValueError, match="dynamic image size"):
        measure_latency(path, runs=2)


def test_an_image_without_its_batch_axis_gets_the_expected_shape(exports, data):
    with pytest.raises(ValueError, match=r"expects images of shape \(N, 28, 28, 1\); got "
                       r"\(28, 28, 1\) \(one image without its batch axis"):  # fmt: skip
        tflite_predict(exports["int8"].path, data[2][0])


def test_an_int8_file_with_a_constant_output_warns_and_a_useful_one_does_not(
    trained, data, tmp_path
):
    from keras_metapool.export import ConstantOutputWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConstantOutputWarning)
        to_tflite(trained, tmp_path / "ok.tflite", "int8", representative_data=data[0][:64])
    constant = keras.models.clone_model(trained)
    constant.set_weights([np.zeros_like(w) for w in trained.get_weights()])
    with pytest.warns(ConstantOutputWarning, match="same output for all 32 representative"):
        to_tflite(constant, tmp_path / "constant.tflite", "int8", representative_data=data[0][:64])

"""export_saved_model: round trip, signature names, preprocessing, TFLite from it."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import calibrate_batch_norms

import keras_metapool as km
from keras_metapool._keras import keras
from keras_metapool.data.fashion_mnist import load_fashion_mnist
from keras_metapool.data.preprocessing import to_model_input
from keras_metapool.export import export_saved_model, read_tflite_graph, tflite_predict

SIZE = 32


def _model(**kwargs):
    arguments = dict(
        weights=None,
        meta_pooling="paper",
        alpha=0.35,
        input_shape=(SIZE, SIZE, 3),
        classes=10,
        batch_norm_momentum=0.9,
    )
    arguments.update(kwargs)
    # Seeded here: a module fixture is built before the per-test seed is set,
    # so its weights would depend on the tests the worker ran before.
    keras.utils.set_random_seed(3)
    model = km.MobileNetV2MP(**arguments)
    calibrate_batch_norms(model, 3)
    return model


@pytest.fixture(scope="module")
def raw_images():
    """Fashion-MNIST test images as RGB uint8 at their own 28x28 size."""
    pixels, _ = load_fashion_mnist("test", limit=12)
    return np.repeat(pixels[..., None], 3, axis=-1)


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    path = export_saved_model(model, tmp_path_factory.mktemp("sm") / "plain")
    return path, tf.saved_model.load(path)


@pytest.mark.slow
def test_signature_names_and_round_trip(model, exported, raw_images):
    _, loaded = exported
    signature = loaded.signatures["serving_default"]
    _, inputs = signature.structured_input_signature
    assert list(inputs) == ["images"]
    assert inputs["images"].shape.as_list() == [None, SIZE, SIZE, 3]
    assert inputs["images"].dtype == tf.float32
    assert set(signature.structured_outputs) == {"probabilities", "logits"}

    images = to_model_input(raw_images, SIZE)
    result = signature(images=tf.constant(images))
    expected = model.predict(images, verbose=0)
    np.testing.assert_allclose(result["probabilities"].numpy(), expected, atol=1e-6)
    # The logits are the classifier's pre-softmax values.
    np.testing.assert_allclose(tf.nn.softmax(result["logits"]).numpy(), expected, atol=1e-6)
    assert np.ptp(result["logits"].numpy()) > 1.0  # not a constant
    # The same function is reachable as a method.
    np.testing.assert_allclose(loaded.serve(images)["probabilities"].numpy(), expected, atol=1e-6)


@pytest.mark.slow
def test_preprocessing_in_the_graph(model, raw_images, tmp_path):
    path = export_saved_model(model, tmp_path / "raw", include_preprocessing=True, batch_size=4)
    signature = tf.saved_model.load(path).signatures["serving_default"]
    _, inputs = signature.structured_input_signature
    assert inputs["images"].shape.as_list() == [4, None, None, 3]
    assert inputs["images"].dtype == tf.uint8
    # 28x28 uint8 in, resized and scaled in the graph as to_model_input does.
    result = signature(images=tf.constant(raw_images[:4]))
    expected = model.predict(to_model_input(raw_images[:4], SIZE), verbose=0)
    # Graph vs eager float rounding, amplified by an untrained network.
    np.testing.assert_allclose(result["probabilities"].numpy(), expected, atol=2e-4)


@pytest.mark.slow
def test_logits_model_exports_both_outputs(tmp_path, raw_images):
    model = _model(meta_pooling="none", classifier_activation=None)
    path = export_saved_model(model, tmp_path / "logits", outputs=("logits",))
    signature = tf.saved_model.load(path).signatures["serving_default"]
    assert set(signature.structured_outputs) == {"logits"}
    images = to_model_input(raw_images, SIZE)
    logits = signature(images=tf.constant(images))["logits"].numpy()
    np.testing.assert_allclose(logits, model.predict(images, verbose=0), atol=1e-5)


@pytest.mark.slow
def test_tflite_converter_reads_the_saved_model(model, exported, raw_images, tmp_path):
    path, _ = exported
    converter = tf.lite.TFLiteConverter.from_saved_model(path)
    tflite_path = tmp_path / "from_saved_model.tflite"
    tflite_path.write_bytes(converter.convert())
    graph = read_tflite_graph(tflite_path)
    assert list(graph.signature_inputs) == ["images"]
    assert set(graph.signature_outputs) == {"probabilities", "logits"}
    images = to_model_input(raw_images, SIZE)
    np.testing.assert_allclose(
        tflite_predict(tflite_path, images), model.predict(images, verbose=0), atol=1e-3
    )


def test_bad_input(model, tmp_path):
    features = km.MobileNetV2MP(
        weights=None, meta_pooling="none", alpha=0.35, input_shape=(SIZE, SIZE, 3),
        include_top=False, pooling="avg",
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"can export \['features'\]"):
        export_saved_model(features, tmp_path / "f", outputs="logits")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_saved_model(model, tmp_path / "missing" / "sm")
    with pytest.raises(ValueError, match="image_dtype"):
        export_saved_model(model, tmp_path / "x", include_preprocessing=True, image_dtype="int8")
    with pytest.raises(ValueError, match="batch_size"):
        export_saved_model(model, tmp_path / "x", batch_size=0)
    supernet = km.MobileNetV2MP(
        weights=None, meta_pooling="search", search_candidates=("identity", "avg3"),
        alpha=0.35, input_shape=(SIZE, SIZE, 3), classes=10,
    )  # fmt: skip
    with pytest.raises(ValueError, match="unfixed search point"):
        export_saved_model(supernet, tmp_path / "search")
    assert not (tmp_path / "x").exists() and not (tmp_path / "search").exists()

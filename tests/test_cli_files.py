"""keras_metapool.cli.files.save_keras_model: SavedModel folders Keras reloads and TF serves."""

import numpy as np
import tensorflow as tf

from keras_metapool._keras import keras
from keras_metapool.cli import files

SHAPE = (6, 6, 3)


def _images():
    return np.random.default_rng(0).uniform(-1, 1, (4, *SHAPE)).astype("float32")


def test_a_one_output_model_folder_reloads_and_serves_what_the_model_computes(tmp_path):
    inputs = keras.Input(SHAPE, name="images")
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="probabilities")(
        keras.layers.GlobalAveragePooling2D(name="pool")(x)
    )
    model = keras.Model(inputs, outputs)
    path = files.save_keras_model(model, str(tmp_path / "model"))
    expected = model(_images(), training=False).numpy()
    np.testing.assert_allclose(keras.models.load_model(path)(_images()).numpy(), expected,
                               atol=1e-6)  # fmt: skip
    serve = tf.saved_model.load(path).signatures["serving_default"]
    served = serve(images=tf.constant(_images()))
    assert list(served) == ["probabilities"]
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-6)


def test_a_two_output_model_folder_reloads_with_both_outputs(tmp_path):
    inputs = keras.Input(SHAPE, name="images")
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(inputs)
    outputs = [keras.layers.Dense(2, name="a")(pooled), keras.layers.Dense(3, name="b")(pooled)]
    model = keras.Model(inputs, outputs)
    path = files.save_keras_model(model, str(tmp_path / "model"))
    for got, want in zip(keras.models.load_model(path)(_images()), model(_images())):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6)

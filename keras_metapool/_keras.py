"""The one place keras_metapool imports Keras.

We build on ``tf_keras`` (the Keras 2 API) because TensorFlow Model
Optimization (QAT) rejects Keras 3 models. Importing it explicitly, instead of
relying on ``TF_USE_LEGACY_KERAS``, keeps ``tf.keras`` untouched for the user.
Every other module does ``from keras_metapool._keras import keras``.
"""

import tf_keras as keras

layers = keras.layers
backend = keras.backend

__all__ = ["keras", "layers", "backend"]

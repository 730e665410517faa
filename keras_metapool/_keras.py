"""The one place keras_metapool imports Keras.

We build on ``tf_keras`` (the Keras 2 API) because TensorFlow Model
Optimization (QAT) rejects Keras 3 models. Importing it explicitly, instead of
relying on ``TF_USE_LEGACY_KERAS``, keeps ``tf.keras`` untouched for the user.
Every other module does ``from keras_metapool._keras import keras``.
"""

import tf_keras as keras

layers = keras.layers
backend = keras.backend


def is_keras3(obj):
    """Whether ``obj`` comes from Keras 3 (``import keras``; ``tf.keras`` in TF >= 2.16)."""
    module = type(obj).__module__
    return module == "keras" or module.startswith("keras.")


def require_tf_keras_model(model, what):
    """Raises one ValueError, naming the way forward, unless ``model`` is a tf_keras Model.

    Args:
        model: What the user passed.
        what: The function or argument that needs it, for the message.
    """
    if isinstance(model, keras.Model):
        return
    if is_keras3(model):
        raise ValueError(
            f"{what} needs a tf_keras model; got the Keras 3 model "
            f"'{getattr(model, 'name', '?')}' ({type(model).__name__}). keras_metapool builds "
            "on tf_keras because TF-MOT, its QAT route to int8 and the Edge TPU, rejects "
            "Keras 3 models. A Keras 3 keras.applications.MobileNetV2 comes in with "
            "keras_metapool.from_mobilenet_v2(model) (a tf_keras MobileNetV2MP with the same "
            "predictions); or build with keras_metapool.MobileNetV2MP(...). A fixed float "
            "MobileNetV2MP goes back out to Keras 3 with keras_metapool.keras3.to_keras3(model)."
        )
    raise ValueError(
        f"{what} needs a tf_keras model: a tf_keras Model such as "
        f"keras_metapool.MobileNetV2MP(...); got {type(model).__module__}.{type(model).__name__}."
    )


__all__ = ["backend", "is_keras3", "keras", "layers", "require_tf_keras_model"]

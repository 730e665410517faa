"""Checks on models that serve both Keras flavours, with no Keras import.

``keras_metapool._keras`` (tf_keras) re-exports them; the export and the
Keras 3 route read them here, so that they load without tf_keras.
"""


def is_keras3(obj):
    """Whether ``obj`` comes from Keras 3 (``import keras``; ``tf.keras`` in TF >= 2.16).

    A subclass counts: any class in its MRO defined in the ``keras`` package.
    """
    return any(
        cls.__module__ == "keras" or cls.__module__.startswith("keras.")
        for cls in type(obj).__mro__
    )


def require_float32_model(model, what, why):
    """Raises one ValueError, naming the way forward, if a layer of ``model`` computes
    in another dtype than float32 (mixed precision).

    Args:
        model: A tf_keras or Keras 3 model.
        what: The function that needs float32, for the message.
        why: Why it does, for the message.
    """
    mixed = [layer.name for layer in model.layers if layer.dtype_policy.compute_dtype != "float32"]
    if mixed:
        raise ValueError(
            f"{what} needs a float32 model ({why}); layers {mixed[:3]} compute in "
            f"{model.get_layer(mixed[0]).dtype_policy.compute_dtype} (mixed precision). Rebuild "
            "the model under the 'float32' policy and copy the weights (set_weights) first."
        )


def require_tensorflow_backend(what):
    """Raises one ValueError unless Keras 3 runs on TensorFlow (the TFLite converter's)."""
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ValueError(
            f"{what} needs the TensorFlow backend of Keras 3; this process runs {backend!r}. "
            "The TFLite converter reads TensorFlow graphs, so quantization-aware training "
            "for an int8 or Edge TPU file and its export run there: set "
            "KERAS_BACKEND=tensorflow before importing keras (the model's .keras file loads "
            "on either backend)."
        )

"""The one place keras_metapool imports Keras.

We build on ``tf_keras`` (the Keras 2 API) because TensorFlow Model
Optimization (QAT) rejects Keras 3 models. Importing it explicitly, instead of
relying on ``TF_USE_LEGACY_KERAS``, keeps ``tf.keras`` untouched for the user.
Every other module does ``from keras_metapool._keras import keras``; users
get the same module as ``from keras_metapool import keras``.
"""

import sys

import tensorflow as tf
import tf_keras as keras
from tf_keras.src.engine import functional as _functional

from keras_metapool import _internals
from keras_metapool._model_checks import is_keras3, require_float32_model  # noqa: F401

layers = keras.layers
backend = keras.backend


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
            "MobileNetV2MP goes back out to Keras 3 with keras_metapool.keras3.to_keras3(model); "
            "QAT in Keras 3 is keras_metapool.keras3.quantize_model(model), and "
            "keras_metapool.export.to_tflite takes Keras 3 models."
        )
    raise ValueError(
        f"{what} needs a tf_keras model: a tf_keras Model such as "
        f"keras_metapool.MobileNetV2MP(...); got {type(model).__module__}.{type(model).__name__}."
    )


def _keras3_nesting_message(model, how):
    return (
        f"'{model.name}' is a tf_keras model (keras_metapool builds on tf_keras for QAT); "
        f"it cannot be {how} a Keras 3 model. Turn it into a Keras 3 model first: "
        "keras_metapool.keras3.to_keras3(model) for a fixed float model (train and search "
        "stay in tf_keras), or build it in Keras 3 with keras_metapool.keras3.MobileNetV2MP(...)."
    )


_TENSOR_CLASSES = {}


def _tensor_class_naming_to_keras3(base):
    """``base`` (a tf_keras KerasTensor class) whose ``str`` names ``to_keras3``."""
    if base in _TENSOR_CLASSES.values():
        return base
    if base not in _TENSOR_CLASSES:

        def __str__(self):
            return (
                f"{base.__str__(self)} [a tf_keras tensor of a keras_metapool model: for a Keras "
                "3 model, convert the model first with keras_metapool.keras3.to_keras3(model)]"
            )

        def shape(self):
            # NOTE: a Keras 3 layer reads its input's shape before any op: answering
            # there keeps tf_keras from wrapping the layer's ops in Lambda layers
            # (and warning about them) before Keras 3's own error.
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller == "keras" or caller.startswith("keras."):
                raise TypeError(
                    "A Keras 3 layer or model was given a tf_keras tensor of a keras_metapool "
                    "model; convert the model first with keras_metapool.keras3.to_keras3(model) "
                    "(a fixed float model; train and search stay in tf_keras), or build it in "
                    "Keras 3 with keras_metapool.keras3.MobileNetV2MP(...)."
                )
            return base.shape.fget(self)

        attributes = {"__str__": __str__, "shape": property(shape)}
        _TENSOR_CLASSES[base] = type(base.__name__, (base,), attributes)
    return _TENSOR_CLASSES[base]


class Functional(_functional.Functional):
    """The tf_keras functional model keras_metapool's builder returns.

    It is tf_keras' ``Functional`` (same name, so saved files record and reload
    a plain ``Functional``) plus two things. Used inside a Keras 3 model, it
    raises one TypeError naming ``keras_metapool.keras3.to_keras3``, instead of
    Keras 3's "Only instances of `keras.Layer` can be added" or a failure deep
    inside the first layer; and its input and output tensors print that way
    forward, which Keras 3's own error shows when they reach ``keras.Model``.
    And ``fit`` traces its train step once, not twice (the optimizer's and the
    metrics' variables are made before the first trace).
    """

    # Saved files name tf_keras' Functional, so they load without keras_metapool.
    __module__ = _functional.Functional.__module__

    def __call__(self, *args, **kwargs):
        if any(is_keras3(x) for x in tf.nest.flatten((args, kwargs))):
            raise TypeError(_keras3_nesting_message(self, "called on a Keras 3 tensor in"))
        return super().__call__(*args, **kwargs)

    def make_train_function(self, force=False):
        made = super().make_train_function(force=force)
        return _internals.train_function_building_first(self, made)

    @property
    def _keras_history(self):
        # keras.Sequential.add (Keras 3) asks hasattr(layer, "_keras_history")
        # before its isinstance check; tf_keras asks the same and must keep
        # getting False (AttributeError), so only a Keras 3 caller is answered.
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller == "keras" or caller.startswith("keras."):
            raise TypeError(_keras3_nesting_message(self, "added as a layer to"))
        raise AttributeError("_keras_history")


def functional_model(inputs, outputs, name):
    """The builder's model: a ``Functional`` whose input and output tensors name the way out.

    Keras 3's "All `inputs` values must be KerasTensors" prints the tensor it
    got (``mp_model.input``): its ``str`` then ends with ``to_keras3``. (Done
    here, not in ``Functional.__init__``: overriding ``__init__`` would switch
    tf_keras to a subclassed model's config.)
    """
    model = Functional(inputs, outputs, name=name)
    for tensor in model.inputs + model.outputs:
        tensor.__class__ = _tensor_class_naming_to_keras3(type(tensor))
    return model


__all__ = [
    "Functional",
    "functional_model",
    "backend",
    "is_keras3",
    "keras",
    "layers",
    "require_tf_keras_model",
]

"""What every exporter needs: the model to export, its output's name, the path.

Imports no Keras: tf_keras models and Keras 3 models (``keras_metapool.keras3``)
export through the same checks; tf_keras is imported for a tf_keras model only.
"""

import os

from keras_metapool._model_checks import is_keras3, require_tensorflow_backend

# The exported input (images preprocessed as the model expects, or raw images
# when the SavedModel includes preprocessing) is named as representative data's key.
from keras_metapool.data.samples import INPUT_NAME  # noqa: F401  (exporters read it here)

PROBABILITIES = "probabilities"
LOGITS = "logits"
#: Output name of a model that is not a classifier (``include_top=False``).
FEATURES = "features"


def check_output_path(path, what="output file"):
    """Returns ``path`` as a string; raises if it cannot be written.

    The folder must exist: exporters do not create folders, so that a typo
    in a path fails loudly instead of scattering files.

    Raises:
        FileNotFoundError: if the folder of ``path`` does not exist.
        IsADirectoryError: if ``path`` is an existing folder (for files).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"Cannot write the {what} {path!r}: folder {folder!r} does not exist. "
            "Create it first (exporters do not create folders)."
        )
    if what == "output file" and os.path.isdir(path):
        raise IsADirectoryError(f"Cannot write the {what} {path!r}: it is a folder.")
    return path


def exportable_model(model):
    """The model to export: the lean fixed model of a fixed search model.

    A search model (with ``MetaPoolingBlock`` layers) whose points are all
    fixed is rebuilt as its lean model with its weights
    (``keras_metapool.search.to_fixed_model``), so that no unused candidate
    op reaches the exported graph. Any other model (a Keras 3 model on the
    TensorFlow backend included) is returned as is.

    Raises:
        ValueError: if ``model`` is not a single-input, single-output Keras
            model, is a Keras 3 model on another backend than TensorFlow, or
            is a search model with unfixed points (the message says to finish
            the search or derive the architecture).
    """
    if is_keras3(model):
        require_tensorflow_backend("Export of a Keras 3 model")
        _require_one_input_and_output(model)
        return model
    from keras_metapool._keras import require_tf_keras_model
    from keras_metapool.models.derive import to_fixed_model

    require_tf_keras_model(model, "Export")
    _require_one_input_and_output(model)
    check_not_revived(model)
    return to_fixed_model(model)


def _require_one_input_and_output(model):
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"Expected a model with one image input and one output, got "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs."
        )


def is_quantization_aware(model):
    """Whether ``model`` came from ``quantize_model`` (TF-MOT wrappers, or Keras 3 twins)."""
    return any(type(layer).__name__.startswith("Quantize") for layer in model.layers)


def check_not_revived(model):
    """Refuses a QAT model loaded without ``quantize_scope()``.

    Loaded from a SavedModel without the scope, Keras does not fail: it
    revives TF-MOT's layers as generic stand-ins (classes of
    ``tf_keras...saved_model.load``) that keep the traced graph but not the
    quantization behaviour the converter needs.

    Raises:
        ValueError: naming the layer and ``keras_metapool.quantize_scope``.
    """
    for layer in model.layers:
        kind = type(layer)
        if kind.__name__.startswith("Quantize") and "saved_model.load" in kind.__module__:
            raise ValueError(
                f"Model '{model.name}' is a quantization-aware model loaded without "
                f"keras_metapool.quantize_scope() (layer '{layer.name}' came back as a generic "
                f"'{kind.__name__}' stand-in). Load it inside the scope: `with "
                "keras_metapool.quantize_scope(): model = keras.models.load_model(path)`."
            )


def _activation_name(layer):
    """Name of a Dense layer's activation, seeing through TF-MOT's wrappers."""
    layer = getattr(layer, "layer", layer)  # QuantizeWrapper(Dense) -> Dense
    activation = getattr(layer, "activation", None)
    activation = getattr(activation, "activation", activation)  # QuantizeAwareActivation
    return getattr(activation, "__name__", None)


def classifier_output(model):
    """What the model outputs: ``"probabilities"``, ``"logits"`` or ``"features"``.

    A model whose last layer is a Dense with softmax outputs probabilities,
    one whose last Dense is linear (``classifier_activation=None``) logits;
    anything else (``include_top=False``, another activation) features.
    """
    last = model.layers[-1]
    inner = getattr(last, "layer", last)
    # NOTE: by class name, for both Keras flavours (and QuantizedDense, a Dense).
    if not any(cls.__name__ == "Dense" for cls in type(inner).__mro__):
        return FEATURES
    name = _activation_name(last)
    if name == "softmax":
        return PROBABILITIES
    if name == "linear":
        return LOGITS
    return FEATURES

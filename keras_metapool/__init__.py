"""keras_metapool: Meta-Pooling (arXiv 2301.10038) for Keras MobileNetV2.

    >>> import keras_metapool
    >>> model = keras_metapool.MobileNetV2MP(weights=None)   # a searchable supernet

Built on ``tf_keras`` (Keras 2), which TF Model Optimization requires:
``from keras_metapool import keras`` is that Keras. The tf_keras API loads on
first use. ``keras_metapool.keras3`` holds the Keras 3
flavour of fixed float models (see docs/api.md, "Keras 3").
"""

from keras_metapool import _quiet

if _quiet.running_the_quiet_cli():  # only the keras-metapool command, never a program
    _quiet.load_tensorflow_quietly()

import importlib

# The tf_keras API loads on first use (PEP 562), not on ``import keras_metapool``:
# ``keras_metapool.keras3`` (Keras 3 layers) then loads without tf_keras.
_TF_KERAS_API = {
    # The Keras the package is built on (tf_keras): build, train and load our models with it.
    "keras": "keras_metapool._keras",
    "CANDIDATE_OPS": "keras_metapool.layers",
    "DEFAULT_CANDIDATES": "keras_metapool.layers",
    "HardSwish": "keras_metapool.layers",
    "MetaPoolingBlock": "keras_metapool.layers",
    "SpatialEnhancer": "keras_metapool.layers",
    "SqueezeExcite": "keras_metapool.layers",
    "ArchitectureSpec": "keras_metapool.models",
    "MobileNetV2MP": "keras_metapool.models",
    "from_mobilenet_v2": "keras_metapool.models",
    "quantize_model": "keras_metapool.quantization",
    "quantize_scope": "keras_metapool.quantization",
    "PMPLCallback": "keras_metapool.search",
    "derive_architecture": "keras_metapool.models",
    "plot_search": "keras_metapool.search",
    "split_for_search": "keras_metapool.data",
    "to_fixed_model": "keras_metapool.models",
    "transfer_weights": "keras_metapool.models",
}
_SUBPACKAGES = ("cli", "data", "export", "keras3", "layers", "models", "quantization", "search")


def _load_tf_keras_api():
    """Imports the tf_keras API at once (registering every serializable layer)."""
    for module in dict.fromkeys(_TF_KERAS_API.values()):
        importlib.import_module(module)
    importlib.import_module("keras_metapool.export")
    for name, module in _TF_KERAS_API.items():
        globals()[name] = getattr(importlib.import_module(module), name)
    mobilenet_v2 = importlib.import_module("keras_metapool._keras").keras.applications.mobilenet_v2
    globals()["preprocess_input"] = mobilenet_v2.preprocess_input
    globals()["decode_predictions"] = mobilenet_v2.decode_predictions


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"keras_metapool.{name}")
    if name in _TF_KERAS_API or name in ("preprocess_input", "decode_predictions"):
        _load_tf_keras_api()
        return globals()[name]
    raise AttributeError(f"module 'keras_metapool' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"

# preprocess_input scales images to [-1, 1] and decode_predictions decodes
# ImageNet predictions, as keras.applications.mobilenet_v2's (tf_keras).

__all__ = [
    "CANDIDATE_OPS",
    "DEFAULT_CANDIDATES",
    "ArchitectureSpec",
    "HardSwish",
    "MetaPoolingBlock",
    "MobileNetV2MP",
    "PMPLCallback",
    "SpatialEnhancer",
    "SqueezeExcite",
    "decode_predictions",
    "derive_architecture",
    "export",
    "from_mobilenet_v2",
    "keras",
    "plot_search",
    "preprocess_input",
    "quantization",
    "quantize_model",
    "quantize_scope",
    "split_for_search",
    "to_fixed_model",
    "transfer_weights",
]

"""keras_metapool: Meta-Pooling (arXiv 2301.10038) for Keras MobileNetV2.

    >>> import keras_metapool
    >>> model = keras_metapool.MobileNetV2MP(weights=None)   # a searchable supernet

Built on ``tf_keras`` (Keras 2), which TF Model Optimization requires.
"""

from keras_metapool import _quiet

if _quiet.running_the_quiet_cli():  # only the keras-metapool command, never a program
    _quiet.load_tensorflow_quietly()

from keras_metapool import export, quantization  # noqa: E402
from keras_metapool._keras import keras as _keras
from keras_metapool.layers import (
    CANDIDATE_OPS,
    DEFAULT_CANDIDATES,
    HardSwish,
    MetaPoolingBlock,
    SpatialEnhancer,
)
from keras_metapool.models import (
    ArchitectureSpec,
    MobileNetV2MP,
    from_mobilenet_v2,
)
from keras_metapool.quantization import quantize_model, quantize_scope
from keras_metapool.search import (
    PMPLCallback,
    derive_architecture,
    plot_search,
    split_for_search,
    to_fixed_model,
    transfer_weights,
)

__version__ = "0.1.0"

#: Scales images to [-1, 1], as keras.applications.mobilenet_v2.
preprocess_input = _keras.applications.mobilenet_v2.preprocess_input
#: Decodes ImageNet predictions, as keras.applications.mobilenet_v2.
decode_predictions = _keras.applications.mobilenet_v2.decode_predictions

__all__ = [
    "CANDIDATE_OPS",
    "DEFAULT_CANDIDATES",
    "ArchitectureSpec",
    "HardSwish",
    "MetaPoolingBlock",
    "MobileNetV2MP",
    "PMPLCallback",
    "SpatialEnhancer",
    "decode_predictions",
    "derive_architecture",
    "export",
    "from_mobilenet_v2",
    "plot_search",
    "preprocess_input",
    "quantization",
    "quantize_model",
    "quantize_scope",
    "split_for_search",
    "to_fixed_model",
    "transfer_weights",
]

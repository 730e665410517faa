"""The QAT scheme: what each layer of a float model becomes, declared as a table.

``quantize_model`` reads ``TRANSFORMS`` top to bottom; the first row whose
``matches`` accepts a layer decides it. A row either swaps in a quantized twin
(built from the layer's config, carrying its weights) or keeps the layer with
another ``QuantizeConfig``. A layer no row matches gets TF-MOT's default 8-bit
registry (convolutions, Dense, ReLU6, Add, ...), or is refused when that
registry does not support it either. (The same shape as TF Model Garden's QAT
``schemes.py``/``layer_transforms.py``.)
"""

import dataclasses
from typing import Callable

from keras_metapool import _internals
from keras_metapool._keras import keras
from keras_metapool.layers.activations import HardSwish
from keras_metapool.layers.spatial_enhancer import SpatialEnhancer
from keras_metapool.quantization.configs import (
    AveragePoolingQuantizeConfig,
    NoOpQuantizeConfig,
    SoftmaxClassifierQuantizeConfig,
)
from keras_metapool.quantization.layers import (
    QuantizedBatchNormalization,
    QuantizedHardSwish,
    QuantizedSpatialEnhancer,
)

#: Layers after which TF-MOT's layout transforms fold a BatchNormalization.
FOLDING_LAYERS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def is_standalone_batch_norm(layer):
    """A BatchNormalization that TF-MOT cannot fold into a preceding layer."""
    if type(layer) is not keras.layers.BatchNormalization:
        return False
    calls = _internals.inbound_layers(layer)
    sources = [source for call in calls for source in call]
    return not (len(calls) == 1 and len(sources) == 1 and isinstance(sources[0], FOLDING_LAYERS))


def is_softmax_classifier(layer):
    """A Dense layer with a softmax activation (the classifier of MobileNetV2MP)."""
    return type(layer) is keras.layers.Dense and (
        keras.activations.serialize(layer.activation) == "softmax"
    )


def _of_type(layer_class):
    return lambda layer: type(layer) is layer_class


@dataclasses.dataclass(frozen=True)
class Transform:
    """One row of the scheme.

    Attributes:
        name: What the row matches, for messages and docs.
        matches: ``layer -> bool``.
        config: The ``QuantizeConfig`` class the (twin or kept) layer is annotated with.
        twin: The quantized twin class that replaces the layer, or None to keep it.
        why: One line on the int8 semantics the row gives.
    """

    name: str
    matches: Callable
    config: type
    twin: type = None
    why: str = ""


TRANSFORMS = (
    Transform(
        "SpatialEnhancer (SSP)", _of_type(SpatialEnhancer), NoOpQuantizeConfig,
        QuantizedSpatialEnhancer,
        "the int8 kernels' sequence: pooled means, 1x1 convolutions, hard sigmoid, two "
        "multiplies, each on its own grid",
    ),
    Transform(
        "HardSwish", _of_type(HardSwish), NoOpQuantizeConfig, QuantizedHardSwish,
        "the decomposed form the Edge TPU maps (no HARD_SWISH op)",
    ),
    Transform(
        "BatchNormalization nothing folds", is_standalone_batch_norm, NoOpQuantizeConfig,
        QuantizedBatchNormalization,
        "a multiply and an add on int8 grids (post-norm BN after a pooling enhancer)",
    ),
    Transform(
        "AveragePooling2D", _of_type(keras.layers.AveragePooling2D),
        AveragePoolingQuantizeConfig,
        why="output on its input's grid, as the int8 kernel requires",
    ),
    Transform(
        "Identity", lambda layer: isinstance(layer, keras.layers.Identity), NoOpQuantizeConfig,
        why="no op in the converted graph: nothing to quantize",
    ),
    Transform(
        "Dense with softmax (the classifier)", is_softmax_classifier,
        SoftmaxClassifierQuantizeConfig,
        why="per-tensor weights (the Edge TPU's fully connected) and the softmax's 1/256 grid",
    ),
)  # fmt: skip


def transform_for(layer):
    """The first row of ``TRANSFORMS`` that matches ``layer``, or None (TF-MOT's registry)."""
    return next((row for row in TRANSFORMS if row.matches(layer)), None)


__all__ = [
    "FOLDING_LAYERS",
    "TRANSFORMS",
    "Transform",
    "is_softmax_classifier",
    "is_standalone_batch_norm",
    "transform_for",
]

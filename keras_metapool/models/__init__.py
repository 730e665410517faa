"""MobileNetV2MP builder, architecture specs and weight transfer."""

from keras_metapool.models.architecture import (
    ABLATIONS,
    NUM_BLOCKS,
    ArchitectureSpec,
)
from keras_metapool.models.complexity import count_macs, count_params
from keras_metapool.models.derive import derive_architecture, to_fixed_model, transfer_weights
from keras_metapool.models.mobilenet_v2_mp import MobileNetV2MP
from keras_metapool.models.transfer import from_mobilenet_v2, infer_alpha

__all__ = [
    "ABLATIONS",
    "NUM_BLOCKS",
    "ArchitectureSpec",
    "MobileNetV2MP",
    "count_macs",
    "count_params",
    "derive_architecture",
    "from_mobilenet_v2",
    "infer_alpha",
    "to_fixed_model",
    "transfer_weights",
]

"""Meta-Pooling layers: SSP, the candidate ops and the searchable mixture."""

from keras_metapool.layers.activations import HardSwish, hard_swish
from keras_metapool.layers.candidate_ops import (
    CANDIDATE_OPS,
    DEFAULT_CANDIDATES,
    build_candidate_op,
    validate_op_name,
)
from keras_metapool.layers.meta_pooling import MetaPoolingBlock
from keras_metapool.layers.spatial_enhancer import (
    SpatialEnhancer,
    open_gate_bias,
    ssp_reduced_channels,
)
from keras_metapool.layers.squeeze_excite import SqueezeExcite

__all__ = [
    "CANDIDATE_OPS",
    "HardSwish",
    "DEFAULT_CANDIDATES",
    "MetaPoolingBlock",
    "SpatialEnhancer",
    "SqueezeExcite",
    "build_candidate_op",
    "hard_swish",
    "open_gate_bias",
    "ssp_reduced_channels",
    "validate_op_name",
]

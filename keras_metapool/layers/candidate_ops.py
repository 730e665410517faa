"""The candidate operations of a Meta-Pooling insertion point (docs/method.md §1).

Every candidate is stride 1, 'same' padded and shape-preserving, so any subset
can be mixed or summed. ``identity`` means "no enhancer".
"""

import collections

from keras_metapool._keras import keras
from keras_metapool._layer_facts import BATCH_NORM_MOMENTUM
from keras_metapool.layers.spatial_enhancer import SpatialEnhancer
from keras_metapool.layers.squeeze_excite import SqueezeExcite

OpInfo = collections.namedtuple("OpInfo", ["description", "receptive_field"])

#: Candidate name -> what it does and the receptive field it adds.
CANDIDATE_OPS = collections.OrderedDict(
    [
        ("identity", OpInfo("no enhancer", "none (1x1)")),
        ("ssp", OpInfo("spatial separable pooling", "whole row + column")),
        ("max3", OpInfo("3x3 max pooling", "3x3")),
        ("max5", OpInfo("5x5 max pooling", "5x5")),
        ("max7", OpInfo("7x7 max pooling", "7x7")),
        ("avg3", OpInfo("3x3 average pooling", "3x3")),
        ("avg5", OpInfo("5x5 average pooling", "5x5")),
        ("avg7", OpInfo("7x7 average pooling", "7x7")),
        # Not Meta-Pooling's: the channel-attention anchor SSP is compared with.
        ("se", OpInfo("squeeze-and-excitation (channel gating)", "whole map, per channel")),
    ]
)

#: The default search space: the paper's eight candidates, in docs/method.md's order
#: (``se`` is an op for fixed architectures and comparisons, searchable on request).
DEFAULT_CANDIDATES = tuple(op for op in CANDIDATE_OPS if op != "se")

IDENTITY = "identity"


def pooling_window(name):
    """The window size of a pooling candidate (``"avg5"`` -> 5), None for the others."""
    validate_op_name(name)
    if name.startswith(("max", "avg")):
        return int(name[3:])
    return None


def prune_candidates(candidates, map_size):
    """The candidates that are distinct functions on a ``map_size`` feature map.

    A pooling window larger than the map (for example 5x5 or 7x7 on a 4x4 map,
    any window on a 2x2 map) covers most or all of it from every position:
    those candidates become (near-)global poolings, duplicates of one another
    and of SSP's whole-row/column context. They are dropped, so the search's
    probability mass is not spread over copies of one function. Other ops are
    kept in their order.

    Args:
        candidates: Op names.
        map_size: ``(height, width)`` of the point's feature map; None (or a
            None entry: a dynamic size) keeps every candidate.

    Returns:
        A tuple of op names, a subset of ``candidates``.
    """
    candidates = tuple(candidates)
    if map_size is None or any(size is None for size in map_size):
        return candidates
    smallest = min(int(size) for size in map_size)
    return tuple(
        op for op in candidates if pooling_window(op) is None or pooling_window(op) <= smallest
    )


def validate_op_name(name, argument="op"):
    """Returns ``name`` if it names a candidate op, else raises ValueError.

    Args:
        name: The op name to check.
        argument: The argument name to quote in the error message.
    """
    if not isinstance(name, str) or name not in CANDIDATE_OPS:
        raise ValueError(
            f"Unknown candidate op {name!r} in `{argument}`. Valid names: "
            f"{', '.join(CANDIDATE_OPS)}."
        )
    return name


def build_candidate_op(
    name, layer_name=None, batch_norm_momentum=BATCH_NORM_MOMENTUM, ssp_kwargs=None, dtype=None
):
    """Creates the Keras layer computing candidate ``name``.

    Args:
        name: One of ``CANDIDATE_OPS``.
        layer_name: Name of the returned layer.
        batch_norm_momentum: Momentum of the BatchNormalization inside SSP.
        ssp_kwargs: Extra keyword arguments for ``SpatialEnhancer``.
        dtype: Dtype policy of the layer (None: the global policy).

    Returns:
        A shape-preserving ``keras.layers.Layer``.

    Raises:
        ValueError: if ``name`` is not a candidate.
    """
    validate_op_name(name)
    common = dict(name=layer_name, dtype=dtype)
    if name == IDENTITY:
        return keras.layers.Identity(**common)
    if name == "ssp":
        return SpatialEnhancer(
            batch_norm_momentum=batch_norm_momentum, **(ssp_kwargs or {}), **common
        )
    if name == "se":
        return SqueezeExcite(**common)
    size = pooling_window(name)
    pool = keras.layers.MaxPooling2D if name.startswith("max") else keras.layers.AveragePooling2D
    return pool(pool_size=size, strides=1, padding="same", **common)

"""Layer names of a MobileNetV2MP, and their inverse: the one home of the naming scheme.

Blocks keep keras.applications' names (``expanded_conv_*`` for block 0,
``block_<i>_*`` after), so ImageNet weights load by name. An enhancer is named
after its block and placement; its parts after the enhancer::

    block_6_mp               the enhancer (or MetaPoolingBlock) after block 6's projection
    block_6_hidden_mp        the same at the hidden placement (after the depthwise ReLU6)
    block_6_mp_ssp           a fixed op of it (one layer per op, named by the op)
    block_6_mp_sum           the Add of a fixed pair of ops
    block_6_mp_BN            the post-norm's BatchNormalization ...
    block_6_mp_hswish        ... and its hard swish

The builder names layers with these functions; derive, plot, the transfer code
and the tests read names back with ``point_of``, ``point_of_enhancer_layer``
and ``block_of``.
"""

import re

from keras_metapool.models.architecture import NUM_BLOCKS

#: keras.applications' name of the backbone's last layer (the ReLU6 after
#: Conv_1), in front of the head or pooling.
BACKBONE_OUTPUT = "out_relu"
#: Suffix of the enhancer name at each placement.
_ENHANCER_SUFFIX = {"output": "mp", "hidden": "hidden_mp"}
_ENHANCER_NAME = re.compile(r"^(?:expanded_conv|block_(\d+))_(mp|hidden_mp)$")
_BLOCK_NAME = re.compile(r"^(?:(expanded_conv)|block_(\d+))_")


def block_prefix(block_id):
    """The keras.applications layer-name prefix of block ``block_id``."""
    return f"block_{block_id}_" if block_id else "expanded_conv_"


def enhancer_layer_name(block_id, placement):
    """Name of the enhancer (or MetaPoolingBlock) at ``block_id``, the prefix of its parts."""
    return block_prefix(block_id) + _ENHANCER_SUFFIX[placement]


def op_layer_name(block_id, placement, op):
    """Name of the fixed op ``op`` of the enhancer at ``block_id``."""
    return f"{enhancer_layer_name(block_id, placement)}_{op}"


def enhancer_part_name(block_id, placement, part):
    """Name of a part of the enhancer: "sum", "BN" or "hswish"."""
    return f"{enhancer_layer_name(block_id, placement)}_{part}"


def point_of(name):
    """The point an enhancer name stands for, ``(block id, placement)``, or None.

    A point is where an enhancer can go, one per block and placement:
    ``block_6_hidden_mp`` -> ``(6, "hidden")``.
    """
    match = _ENHANCER_NAME.match(name)
    if not match:
        return None
    block_id = int(match.group(1)) if match.group(1) else 0
    if block_id >= NUM_BLOCKS:
        return None
    placement = next(p for p, suffix in _ENHANCER_SUFFIX.items() if suffix == match.group(2))
    # Only names the builder writes: not "block_0_mp" (block 0 is "expanded_conv")
    # nor "block_06_mp".
    if enhancer_layer_name(block_id, placement) != name:
        return None
    return block_id, placement


def point_of_enhancer_layer(name):
    """The point of an enhancer or of one of its layers (``block_6_mp_ssp``,
    ``block_6_mp_BN``: ``(6, "output")``), or None for any other layer."""
    return point_of(name) or point_of(name.rsplit("_", 1)[0])


def block_of(name):
    """The block index a layer name belongs to (``block_10_mp`` -> 10), or None."""
    match = _BLOCK_NAME.match(name)
    if not match:
        return None
    return 0 if match.group(1) else int(match.group(2))


__all__ = [
    "block_of",
    "block_prefix",
    "enhancer_layer_name",
    "enhancer_part_name",
    "point_of",
    "op_layer_name",
]

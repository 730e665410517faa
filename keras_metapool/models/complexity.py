"""Parameter and multiply-accumulate (MAC) counts of Keras models.

MACs are counted analytically from each layer's static shapes, per image:
convolutions and dense layers (multiply-accumulates), plus the elementwise
gating products of SSP (``x * ah * aw``: 2 per element) and the weighted sum of
a search mixture (1 per element and candidate). Pooling, BatchNormalization
(folded at inference), activations and residual adds count zero, as in the
MobileNetV2 paper's "multiply-adds".
"""

import numpy as np

from keras_metapool._keras import keras
from keras_metapool.layers.meta_pooling import MetaPoolingBlock
from keras_metapool.layers.spatial_enhancer import SpatialEnhancer, ssp_reduced_channels


def _static(shape, layer):
    dims = list(shape[1:])
    if any(d is None for d in dims):
        raise ValueError(
            f"count_macs needs static shapes; layer '{layer.name}' has shape {shape}. "
            "Build the model with a fixed input_shape."
        )
    return dims


def _ssp_macs(layer, height, width, channels):
    reduced = ssp_reduced_channels(channels, layer.reduction, layer.min_channels)
    positions = height + width
    # reduce: C->m on H+W positions; gates: m->C on H and on W positions.
    return (
        positions * channels * reduced
        + positions * reduced * channels
        + 2 * height * width * channels
    )


def layer_macs(layer):
    """MACs of one layer of a functional model, per image (see module doc)."""
    if isinstance(layer, (keras.layers.DepthwiseConv2D,)):
        out_h, out_w, out_c = _static(layer.output_shape, layer)
        kh, kw = layer.kernel_size
        return out_h * out_w * kh * kw * out_c
    if isinstance(layer, keras.layers.Conv2D):
        out_h, out_w, out_c = _static(layer.output_shape, layer)
        in_c = _static(layer.input_shape, layer)[-1]
        kh, kw = layer.kernel_size
        return out_h * out_w * kh * kw * (in_c // layer.groups) * out_c
    if isinstance(layer, keras.layers.Dense):
        return int(np.prod(_static(layer.input_shape, layer))) * layer.units
    if isinstance(layer, SpatialEnhancer):
        return _ssp_macs(layer, *_static(layer.input_shape, layer))
    if isinstance(layer, MetaPoolingBlock):
        height, width, channels = _static(layer.input_shape, layer)
        total = len(layer.candidates) * height * width * channels
        for op in layer.ops:
            if isinstance(op, SpatialEnhancer):
                total += _ssp_macs(op, height, width, channels)
        return total
    return 0


def count_macs(model):
    """Total MACs of ``model`` for one image (see the module docstring)."""
    return int(sum(layer_macs(layer) for layer in model.layers))


def count_params(model):
    """All parameters, trainable and not (as ``model.count_params()``)."""
    return int(model.count_params())

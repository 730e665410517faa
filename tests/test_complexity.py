"""Parameter and MAC counting."""

import pytest

from keras_metapool._keras import keras
from keras_metapool.layers import MetaPoolingBlock, SpatialEnhancer
from keras_metapool.models import MobileNetV2MP, count_macs, count_params

# Multiply-adds of MobileNetV2 at 224x224 as published (Sandler et al. 2018,
# and the keras.applications table), in millions.
PUBLISHED_MACS = {0.35: 59, 0.5: 97, 0.75: 209, 1.0: 300, 1.4: 582}


@pytest.mark.slow
@pytest.mark.parametrize("alpha", sorted(PUBLISHED_MACS))
def test_mobilenet_v2_macs_match_the_published_numbers(alpha):
    model = keras.applications.MobileNetV2(weights=None, alpha=alpha)
    assert count_macs(model) / 1e6 == pytest.approx(PUBLISHED_MACS[alpha], rel=0.01)


def _single_layer_macs(layer, shape):
    inputs = keras.Input(shape)
    return count_macs(keras.Model(inputs, layer(inputs)))


def test_ssp_macs_by_hand():
    height, width, channels = 6, 10, 64  # bottleneck m = max(8, 64 // 32) = 8
    reduce = (height + width) * channels * 8
    gates = height * 8 * channels + width * 8 * channels
    gating = 2 * height * width * channels
    assert _single_layer_macs(SpatialEnhancer(), (height, width, channels)) == (
        reduce + gates + gating
    )


def test_meta_pooling_block_macs_are_ssp_plus_the_weighted_sum():
    shape = (6, 10, 64)
    ssp = _single_layer_macs(SpatialEnhancer(), shape)
    block = MetaPoolingBlock(candidates=("identity", "ssp", "avg3"))
    assert _single_layer_macs(block, shape) == ssp + 3 * 6 * 10 * 64
    pools = MetaPoolingBlock(candidates=("max3", "avg5"))
    assert _single_layer_macs(pools, shape) == 2 * 6 * 10 * 64


def test_paper_head_adds_one_1x1_convolution():
    classic = MobileNetV2MP(weights=None, meta_pooling="paper", head="classic")
    paper = MobileNetV2MP(weights=None, meta_pooling="paper", head="paper")
    assert count_macs(paper) - count_macs(classic) == 1280 * 1280
    assert count_params(paper) - count_params(classic) == 1280 * 1280 + 1280


@pytest.mark.slow
def test_dynamic_shapes_are_refused():
    model = MobileNetV2MP(weights=None, alpha=0.35, input_shape=(None, None, 3), include_top=False)
    with pytest.raises(ValueError, match="static"):
        count_macs(model)

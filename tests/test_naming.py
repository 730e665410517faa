"""The naming scheme: the builder's layer names and their inverse agree."""

import pytest

import keras_metapool as km
from keras_metapool.models.architecture import NUM_BLOCKS, PLACEMENTS
from keras_metapool.models.naming import (
    block_of,
    enhancer_layer_name,
    enhancer_part_name,
    op_layer_name,
    point_of,
    point_of_enhancer_layer,
)


def test_enhancer_names_invert_for_every_block_and_placement():
    names = set()
    for placement in PLACEMENTS:
        for block_id in range(NUM_BLOCKS):
            name = enhancer_layer_name(block_id, placement)
            assert point_of(name) == (block_id, placement)
            assert block_of(op_layer_name(block_id, placement, "avg3")) == block_id
            names.add(name)
    assert len(names) == 2 * NUM_BLOCKS  # no two sites share a name
    for not_an_enhancer in ("block_6_mp_ssp", "block_17_mp", "block_6_expand", "Conv1", "mp",
                            "block_0_mp", "block_06_mp"):  # fmt: skip
        assert point_of(not_an_enhancer) is None, not_an_enhancer
    assert block_of("Conv1") is None and block_of("expanded_conv_project") == 0
    # An enhancer's own layers lead back to its point; a block's other layers do not.
    for part in (op_layer_name(6, "hidden", "ssp"), enhancer_part_name(6, "hidden", "BN"),
                 enhancer_layer_name(6, "hidden")):  # fmt: skip
        assert point_of_enhancer_layer(part) == (6, "hidden"), part
    for other in ("block_6_expand", "block_6_project_BN", "Conv_1", "block_17_mp_ssp"):
        assert point_of_enhancer_layer(other) is None, other


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_the_builder_names_every_enhancer_part_by_the_scheme(placement):
    # Fixed entries and one search point (derive needs a MetaPoolingBlock to start from).
    ops = ["identity", ("max3", "avg3"), "ssp", "search"] + ["identity"] * (NUM_BLOCKS - 4)
    spec = km.ArchitectureSpec(ops, placement=placement, post_norm=True)
    model = km.MobileNetV2MP(weights=None, alpha=0.35, input_shape=(32, 32, 3), meta_pooling=spec)
    built = {layer.name for layer in model.layers}
    expected = {
        op_layer_name(1, placement, "max3"),
        op_layer_name(1, placement, "avg3"),
        enhancer_part_name(1, placement, "sum"),
        op_layer_name(2, placement, "ssp"),
    } | {enhancer_part_name(b, placement, part) for b in (1, 2) for part in ("BN", "hswish")}
    assert {name for name in built if "_mp_" in name} == expected
    assert enhancer_layer_name(3, placement) in built  # the MetaPoolingBlock
    # derive reads the fixed entries back from the names (the undecided point -> identity).
    derived = km.derive_architecture(model, undecided="identity")
    assert derived.ops[:4] == ("identity", ("max3", "avg3"), "ssp", "identity")
    assert derived.placement == placement and derived.post_norm

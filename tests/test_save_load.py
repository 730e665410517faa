"""Save/load round trips of MobileNetV2MP models (.keras, .h5, SavedModel)."""

import numpy as np
import pytest
from helpers import calibrate_batch_norms

from keras_metapool import ArchitectureSpec, MetaPoolingBlock, MobileNetV2MP, SpatialEnhancer
from keras_metapool._keras import keras

SHAPE = (32, 32, 3)
FORMATS = [("model.keras", {}), ("model.h5", {}), ("saved_model", {"save_format": "tf"})]
#: SavedModel (about 20 s a round trip, mostly tracing) for two variants: the
#: custom spec holds every layer kind of the paper model (SSP, the paper head)
#: and pairs besides; the search model holds the mixtures and their fixed state.
SAVED_MODEL_VARIANTS = ("search", "custom")
#: At 32x32 the hidden points of blocks 1-2 see 8x8 maps (every candidate), block 3
#: 4x4 (max5 pruned), block 10 1x1 (identity and ssp left).
FIXED = {
    "block_1_hidden_mp": ("max5",),
    "block_3_hidden_mp": ("ssp", "avg3"),
    "block_10_hidden_mp": ("ssp",),
}
#: A smaller search space than the default 8 ops keeps the SavedModel export
#: (which traces every op of every block) fast; it still holds identity, SSP
#: and both pooling kinds.
SEARCH_CANDIDATES = ("identity", "ssp", "max5", "avg3")


def random_pair_spec():
    ops = list(ArchitectureSpec.ablation("random").ops)
    ops[4] = ("ssp", "avg5")
    ops[11] = ("avg3", "max3")
    return ArchitectureSpec(ops, name="random_with_pairs")


def build(variant):
    if variant == "paper":
        return MobileNetV2MP(input_shape=SHAPE, alpha=0.35, weights=None, meta_pooling="paper")
    if variant == "search":
        model = MobileNetV2MP(
            input_shape=SHAPE, alpha=0.35, weights=None, meta_pooling="search", classes=10,
            search_candidates=SEARCH_CANDIDATES,
        )  # fmt: skip
        for name, ops in FIXED.items():
            model.get_layer(name).fix(ops if len(ops) > 1 else ops[0])
        return model
    return MobileNetV2MP(
        input_shape=SHAPE, alpha=0.35, weights=None, meta_pooling=random_pair_spec(),
        head="paper", classes=10,
    )  # fmt: skip


def enhancer_types(model):
    return {
        layer.name: type(layer).__name__
        for layer in model.layers
        if isinstance(layer, (MetaPoolingBlock, SpatialEnhancer)) or "_mp" in layer.name
    }


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["paper", "search", "custom"])
def test_save_load_round_trip(variant, tmp_path):
    model = build(variant)
    calibrate_batch_norms(model, 0, randomize_alpha=True)
    x = np.random.default_rng(1).uniform(-1, 1, (2,) + SHAPE).astype("float32")
    expected = model(x, training=False).numpy()
    assert not np.allclose(expected[0], expected[1])  # the output depends on the input
    expected_types = enhancer_types(model)
    assert expected_types  # every variant has enhancers
    names = [layer.name for layer in model.layers]

    loaded = None
    for filename, kwargs in FORMATS:
        if kwargs and variant not in SAVED_MODEL_VARIANTS:
            continue
        path = tmp_path / filename
        model.save(str(path), **kwargs)
        keras.backend.clear_session()
        loaded = keras.models.load_model(str(path))
        assert [layer.name for layer in loaded.layers] == names, filename
        assert enhancer_types(loaded) == expected_types, filename
        np.testing.assert_allclose(
            loaded(x, training=False).numpy(), expected, rtol=0, atol=1e-6, err_msg=filename
        )
        assert len(loaded.variables) == len(model.variables)
        for original, restored in zip(model.variables, loaded.variables):
            assert restored.name == original.name, filename
            np.testing.assert_array_equal(restored.numpy(), original.numpy(), err_msg=filename)
        if variant == "search":
            for layer in loaded.layers:
                if isinstance(layer, MetaPoolingBlock):
                    assert layer.fixed_ops == FIXED.get(layer.name), (filename, layer.name)

    if variant == "search":
        # The fixed state is state, not structure: unfixing after a reload
        # restores the mixture, exactly as on the original model.
        for block in (model.get_layer("block_3_hidden_mp"), loaded.get_layer("block_3_hidden_mp")):
            block.unfix()
        unfixed = model(x, training=False).numpy()
        assert not np.allclose(unfixed, expected)
        np.testing.assert_allclose(loaded(x, training=False).numpy(), unfixed, rtol=0, atol=1e-6)
    if variant == "custom":
        assert isinstance(loaded.get_layer("block_4_mp_ssp"), SpatialEnhancer)
        assert isinstance(loaded.get_layer("block_4_mp_avg5"), keras.layers.AveragePooling2D)
        assert isinstance(loaded.get_layer("block_4_mp_sum"), keras.layers.Add)
        assert isinstance(loaded.get_layer("block_11_mp_max3"), keras.layers.MaxPooling2D)
        assert loaded.get_layer("head_conv").kernel.shape == (1, 1, 1280, 1280)

"""Tests of the candidate ops (docs/method.md §1): pooling numerics, shapes, names."""

import numpy as np
import pytest
import tensorflow as tf

from keras_metapool.layers import (
    CANDIDATE_OPS,
    DEFAULT_CANDIDATES,
    MetaPoolingBlock,
    SpatialEnhancer,
    build_candidate_op,
    validate_op_name,
)


def np_pool_same(x, size, reduce):
    """Stride-1 'same' pooling that ignores the padding (window clipped to the map)."""
    _, height, width, _ = x.shape
    half = size // 2
    out = np.empty(x.shape, np.float64)
    for i in range(height):
        for j in range(width):
            window = x[:, max(0, i - half) : i + half + 1, max(0, j - half) : j + half + 1, :]
            out[:, i, j, :] = reduce(window, axis=(1, 2))
    return out


@pytest.mark.parametrize("size", [3, 5, 7])
@pytest.mark.parametrize("kind,reduce", [("avg", np.mean), ("max", np.max)])
@pytest.mark.parametrize("spatial", [(4, 6), (1, 5), (2, 2), (8, 3)])
def test_pooling_matches_numpy(rng, size, kind, reduce, spatial):
    x = rng.normal(0.0, 1.0, (2, *spatial, 3)).astype(np.float32)
    # Negative values everywhere would make zero padding win a max: check it does not.
    if kind == "max":
        x = x - 10.0
    op = build_candidate_op(f"{kind}{size}")
    out = op(x).numpy()
    np.testing.assert_allclose(
        out, np_pool_same(x.astype(np.float64), size, reduce), rtol=1e-6, atol=1e-6
    )


def test_avg_same_excludes_padding_at_corner():
    x = np.ones((1, 3, 3, 1), np.float32)
    x[0, 0, 0, 0] = 4.0
    out = build_candidate_op("avg3")(x).numpy()[0, :, :, 0]
    # Corner window holds 4 valid pixels: (4 + 1 + 1 + 1) / 4, not / 9.
    assert out[0, 0] == pytest.approx(7.0 / 4.0)
    assert out[1, 1] == pytest.approx(12.0 / 9.0)
    assert out[2, 2] == pytest.approx(1.0)


@pytest.mark.parametrize("name", list(CANDIDATE_OPS))
@pytest.mark.parametrize("spatial", [(1, 1), (2, 3), (5, 5)])
def test_every_candidate_preserves_shape(rng, name, spatial):
    x = rng.normal(0.0, 1.0, (2, *spatial, 16)).astype(np.float32)
    op = build_candidate_op(name)
    out = op(x, training=False)
    assert out.shape == x.shape
    assert op.compute_output_shape(tf.TensorShape(x.shape)) == tf.TensorShape(x.shape)


@pytest.mark.parametrize("spatial", [(1, 1), (2, 3), (5, 5)])
def test_block_preserves_shape(rng, spatial):
    x = rng.normal(0.0, 1.0, (2, *spatial, 16)).astype(np.float32)
    block = MetaPoolingBlock()
    for training in (False, True):
        assert block(x, training=training).shape == x.shape
    assert block.compute_output_shape((2, *spatial, 16)) == tf.TensorShape(x.shape)


def test_identity_candidate_is_identity(rng):
    x = rng.normal(0.0, 1.0, (2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(build_candidate_op("identity")(x).numpy(), x)


def test_build_candidate_op_types_and_options():
    ssp = build_candidate_op(
        "ssp", layer_name="s", batch_norm_momentum=0.9, ssp_kwargs=dict(reduction=4)
    )
    assert isinstance(ssp, SpatialEnhancer)
    assert ssp.name == "s" and ssp.reduction == 4 and ssp.batch_norm_momentum == 0.9
    pool = build_candidate_op("avg5")
    assert tuple(pool.pool_size) == (5, 5) and tuple(pool.strides) == (1, 1)
    assert pool.padding == "same"


def test_default_candidates_are_the_spec_order():
    assert DEFAULT_CANDIDATES == ("identity", "ssp", "max3", "max5", "max7", "avg3", "avg5", "avg7")


@pytest.mark.parametrize("bad", ["max9", "avg", "SSP", "", None, 3])
def test_unknown_op_name_lists_valid_names(bad):
    for call in (lambda: build_candidate_op(bad), lambda: validate_op_name(bad)):
        with pytest.raises(ValueError) as info:
            call()
        assert all(name in str(info.value) for name in CANDIDATE_OPS)


def test_validate_op_name_returns_name():
    for name in CANDIDATE_OPS:
        assert validate_op_name(name) == name

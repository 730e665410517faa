"""SqueezeExcite (the ``se`` op): MobileNetV3's channel gating, the anchor SSP is compared with."""

import numpy as np
import pytest
import tensorflow as tf

import keras_metapool as km
from keras_metapool._keras import keras
from keras_metapool.layers import SqueezeExcite, build_candidate_op
from keras_metapool.layers.squeeze_excite import squeeze_channels


def _reference(x, w1, b1, w2, b2):
    """MobileNetV3's SE in NumPy: mean -> 1x1 conv + ReLU -> 1x1 conv -> hard sigmoid -> product."""
    context = x.mean(axis=(1, 2))  # (B, C)
    hidden = np.maximum(context @ w1 + b1, 0.0)
    gate = np.clip(hidden @ w2 + b2 + 3.0, 0.0, 6.0) / 6.0
    return x * gate[:, None, None, :]


def test_squeeze_excite_computes_mobilenet_v3s_channel_gate(rng):
    x = rng.normal(size=(3, 5, 7, 32)).astype(np.float32)
    layer = SqueezeExcite()
    y = layer(x).numpy()
    assert y.shape == x.shape and layer.squeeze.filters == 8
    w1, b1 = (w.numpy() for w in layer.squeeze.weights)
    w2, b2 = (w.numpy() for w in layer.excite.weights)
    # Random biases too: the gates then cover the clipped and the linear ranges.
    b2 = rng.normal(scale=3.0, size=b2.shape).astype(np.float32)
    layer.excite.bias.assign(b2)
    expected = _reference(x, w1[0, 0], b1, w2[0, 0], b2)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    gate = layer(np.ones_like(x)).numpy()
    assert gate.min() >= 0.0 and gate.max() <= 1.0


def test_squeeze_channels_round_as_mobilenet_v3():
    # channels / 4 to a multiple of 8, at least 8, never below 90% of channels / 4.
    assert [squeeze_channels(c) for c in (16, 32, 40, 96, 240, 576)] == [8, 8, 16, 24, 64, 144]


def test_the_se_op_is_a_candidate_for_fixed_architectures_not_in_the_default_search():
    assert "se" in km.CANDIDATE_OPS and "se" not in km.DEFAULT_CANDIDATES
    layer = build_candidate_op("se", layer_name="block_6_se")
    assert isinstance(layer, SqueezeExcite) and layer.name == "block_6_se"
    config = layer.get_config()
    assert SqueezeExcite.from_config(config).ratio == 4
    with pytest.raises(ValueError, match="`ratio` must be a positive integer, got 0"):
        SqueezeExcite(ratio=0)
    with pytest.raises(ValueError, match="4-D channels-last input"):
        SqueezeExcite()(tf.ones((2, 8)))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*gives the same output for all")  # untrained: expected
def test_a_model_with_se_converts_to_edge_tpu_ops_and_says_what_it_cannot_do(tmp_path, rng):
    ops = ["identity"] * 6 + ["se"] * 11  # the paper's points
    spec = km.ArchitectureSpec(ops, post_norm=False, name="se_paper")
    model = km.MobileNetV2MP(
        weights=None, alpha=0.35, input_shape=(32, 32, 3), classes=10, meta_pooling=spec
    )
    images = rng.uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32)
    exported = km.export.to_tflite(model, str(tmp_path / "se.tflite"), "int8", images)
    assert not exported.problems  # every tensor 8-bit, every op an Edge TPU op
    # A saved model reloads with the layer registered.
    model.save(tmp_path / "se.keras")
    reloaded = keras.models.load_model(tmp_path / "se.keras")
    np.testing.assert_allclose(reloaded(images).numpy(), model(images).numpy(), atol=1e-6)
    # QAT has no twin for it: one error naming the layer.
    with pytest.raises(ValueError, match="cannot quantize these layers .*block_6"):
        km.quantize_model(model, representative_data=images)

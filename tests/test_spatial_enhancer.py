"""Numerical tests of SpatialEnhancer (SSP, docs/method.md §1).

Every numeric check compares against a NumPy reference written from the spec,
with random non-trivial values in all weights, batch-norm moving stats included.
"""

import numpy as np
import pytest
import tensorflow as tf
from helpers import np_bn, np_conv1x1, np_hswish, np_sigmoid, randomize_weights

from keras_metapool._keras import keras
from keras_metapool.layers import (
    SpatialEnhancer,
    hard_swish,
    open_gate_bias,
    ssp_reduced_channels,
)


# -- NumPy reference ---------------------------------------------------------
def ssp_params(layer):
    """The layer's weights as float64 NumPy arrays, by role."""
    get = lambda v: v.numpy().astype(np.float64)  # noqa: E731
    return dict(
        reduce_kernel=get(layer.reduce.kernel),
        reduce_bias=get(layer.reduce.bias),
        gamma=get(layer.reduce_bn.gamma),
        beta=get(layer.reduce_bn.beta),
        moving_mean=get(layer.reduce_bn.moving_mean),
        moving_variance=get(layer.reduce_bn.moving_variance),
        eps=layer.reduce_bn.epsilon,
        gate_h_kernel=get(layer.gate_h.kernel),
        gate_h_bias=get(layer.gate_h.bias),
        gate_w_kernel=get(layer.gate_w.kernel),
        gate_w_bias=get(layer.gate_w.bias),
    )


def np_ssp(x, p, bn_stats=None):
    """docs/method.md §1 in float64.

    ``bn_stats``: None for inference (moving stats); "batch" to normalise each
    of zh and zw by its own batch statistics (training mode, as the layer
    applies the shared bottleneck to zh and zw separately).
    """
    x = x.astype(np.float64)
    zh = x.mean(axis=2, keepdims=True)  # (B, H, 1, C)
    zw = x.mean(axis=1, keepdims=True)  # (B, 1, W, C)

    def bottleneck(z):
        y = np_conv1x1(z, p["reduce_kernel"], p["reduce_bias"])
        if bn_stats == "batch":
            mean = y.mean(axis=(0, 1, 2))
            var = y.var(axis=(0, 1, 2))
        else:
            mean, var = p["moving_mean"], p["moving_variance"]
        return np_hswish(np_bn(y, p["gamma"], p["beta"], mean, var, p["eps"]))

    ah = np_sigmoid(np_conv1x1(bottleneck(zh), p["gate_h_kernel"], p["gate_h_bias"]))
    aw = np_sigmoid(np_conv1x1(bottleneck(zw), p["gate_w_kernel"], p["gate_w_bias"]))
    return x * ah * aw


def make_ssp(channels, rng, **kwargs):
    layer = SpatialEnhancer(**kwargs)
    layer.build((None, None, None, channels))
    randomize_weights(layer, rng)
    return layer


SHAPES = [
    (2, 4, 4),  # square
    (3, 5, 7),  # non-square
    (2, 1, 6),  # H = 1
    (2, 6, 1),  # W = 1
    (3, 1, 1),  # 1x1
]


# -- 1. inference numerics ---------------------------------------------------
@pytest.mark.parametrize("channels", [16, 40, 320])
@pytest.mark.parametrize("batch,height,width", SHAPES)
def test_ssp_inference_matches_numpy_reference(rng, batch, height, width, channels):
    layer = make_ssp(channels, rng)
    x = rng.normal(0.0, 1.0, (batch, height, width, channels)).astype(np.float32)
    expected = np_ssp(x, ssp_params(layer))
    out = layer(x, training=False)
    assert out.dtype == tf.float32
    assert out.shape == x.shape
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    # The gates must not be saturated, or the check above would be vacuous.
    gates = expected / np.where(x == 0, 1.0, x)
    assert 0.02 < np.median(gates) < 0.98


@pytest.mark.parametrize("batch,height,width", [(2, 3, 5), (1, 1, 1)])
def test_ssp_custom_reduction_matches_numpy_reference(rng, batch, height, width):
    layer = make_ssp(24, rng, reduction=4, min_channels=2, batch_norm_epsilon=0.1)
    assert layer.reduce.kernel.shape == (1, 1, 24, 6)
    x = rng.normal(0.0, 1.0, (batch, height, width, 24)).astype(np.float32)
    np.testing.assert_allclose(
        layer(x, training=False).numpy(), np_ssp(x, ssp_params(layer)), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    "channels,reduced",
    [(16, 8), (64, 8), (256, 8), (288, 9), (320, 10), (1280, 40)],
)
def test_ssp_reduced_width(channels, reduced):
    assert ssp_reduced_channels(channels) == reduced
    layer = SpatialEnhancer()
    layer.build((None, 3, 3, channels))
    assert tuple(layer.reduce.kernel.shape) == (1, 1, channels, reduced)
    assert tuple(layer.reduce.bias.shape) == (reduced,)
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        assert tuple(getattr(layer.reduce_bn, name).shape) == (reduced,)
    for gate in (layer.gate_h, layer.gate_w):
        assert tuple(gate.kernel.shape) == (1, 1, reduced, channels)
        assert tuple(gate.bias.shape) == (channels,)
    # Two separate gates, one shared bottleneck: 10 weights in all.
    assert layer.gate_h.kernel is not layer.gate_w.kernel
    assert len(layer.weights) == 10
    assert len(layer.trainable_weights) == 8


def test_ssp_gates_are_separate(rng):
    """gate_h acts on the row profile only, gate_w on the column profile only."""
    layer = make_ssp(16, rng)
    x = rng.normal(0.0, 1.0, (1, 3, 4, 16)).astype(np.float32)
    base = layer(x, training=False).numpy()
    layer.gate_w.bias.assign(layer.gate_w.bias + 1.0)
    changed = layer(x, training=False).numpy()
    p = ssp_params(layer)
    np.testing.assert_allclose(changed, np_ssp(x, p), rtol=1e-5, atol=1e-5)
    assert not np.allclose(changed, base)


# -- 2. training mode ---------------------------------------------------------
def test_ssp_training_uses_batch_stats_and_updates_moving_stats(rng):
    layer = make_ssp(32, rng, batch_norm_momentum=0.5)
    bn = layer.reduce_bn
    # Moving stats far from any batch statistics of this input.
    bn.moving_mean.assign(np.full(bn.moving_mean.shape, 5.0, np.float32))
    bn.moving_variance.assign(np.full(bn.moving_variance.shape, 30.0, np.float32))
    old_mean = bn.moving_mean.numpy().copy()
    old_var = bn.moving_variance.numpy().copy()
    x = rng.normal(0.0, 1.0, (4, 5, 6, 32)).astype(np.float32)

    inference = layer(x, training=False).numpy()
    np.testing.assert_array_equal(bn.moving_mean.numpy(), old_mean)  # untouched
    training = layer(x, training=True).numpy()
    p = ssp_params(layer)
    p["moving_mean"], p["moving_variance"] = old_mean, old_var
    np.testing.assert_allclose(inference, np_ssp(x, p), rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(training - inference)) > 1e-2
    # Training mode normalises zh and zw by their own batch statistics.
    np.testing.assert_allclose(training, np_ssp(x, p, bn_stats="batch"), rtol=1e-4, atol=1e-4)

    # The moving stats moved from their old values towards the batch stats.
    zh = x.mean(axis=2, keepdims=True).astype(np.float64)
    zw = x.mean(axis=1, keepdims=True).astype(np.float64)
    batch_means = np.stack(
        [np_conv1x1(z, p["reduce_kernel"], p["reduce_bias"]).mean(axis=(0, 1, 2)) for z in (zh, zw)]
    )
    new_mean = bn.moving_mean.numpy()
    new_var = bn.moving_variance.numpy()
    assert np.all(np.abs(new_mean - old_mean) > 1e-3)
    assert np.all(new_var < old_var)
    lo = np.minimum(old_mean, batch_means.min(axis=0)) - 1e-5
    hi = np.maximum(old_mean, batch_means.max(axis=0)) + 1e-5
    assert np.all((lo <= new_mean) & (new_mean <= hi))
    # Closer to the batch means than before.
    assert np.all(
        np.abs(new_mean - batch_means.mean(axis=0)) < np.abs(old_mean - batch_means.mean(axis=0))
    )


def _training_step_of(layer, formulation, x):
    """Output, gradients (input, then trainable weights) and moving stats after one step."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = formulation(layer, x)
        loss = tf.reduce_sum(out * tf.cos(out))  # a loss that weighs pixels unequally
    grads = tape.gradient(loss, [x, *layer.trainable_weights])
    stats = [layer.reduce_bn.moving_mean, layer.reduce_bn.moving_variance]
    return [np.asarray(v, np.float64) for v in (out, *grads, *stats)]


@pytest.mark.parametrize("channels", [16, 320])
@pytest.mark.parametrize("batch,height,width", [*SHAPES, (1, 1, 1)])
def test_ssp_training_formulations_agree(rng, batch, height, width, channels):
    """A training step as matrix products == with the convolutions Keras' BN sees.

    Output, every gradient and both moving statistics (the fused kernel feeds
    the moving variance the unbiased batch variance); a batch of one row
    included, where that correction would divide by zero.
    """
    with_convolutions = make_ssp(channels, rng, batch_norm_momentum=0.5)
    as_products = make_ssp(channels, rng, batch_norm_momentum=0.5)
    as_products.set_weights(with_convolutions.get_weights())
    mean_before = as_products.reduce_bn.moving_mean.numpy().copy()
    x = tf.constant(rng.normal(0.0, 1.0, (batch, height, width, channels)).astype(np.float32))
    expected = _training_step_of(
        with_convolutions, lambda layer, x: layer._call_with_convolutions(x, True), x
    )
    got = _training_step_of(as_products, lambda layer, x: layer._call_as_matrix_products(x), x)
    names = ["output", "d input", *(w.name for w in as_products.trainable_weights)]
    for name, value, reference in zip([*names, "moving mean", "moving variance"], got, expected):
        scale = max(1.0, float(np.max(np.abs(reference))))
        np.testing.assert_allclose(value, reference, rtol=1e-5, atol=1e-5 * scale, err_msg=name)
    # The step moved the moving mean (momentum 0.5), or its check would be vacuous.
    assert np.max(np.abs(got[-2] - mean_before)) > 1e-2


def _ssp_op_types(model_call, channels):
    """The op types a traced call of ``model_call`` runs inside the SSP named "ssp"."""
    graph = (
        tf.function(model_call)
        .get_concrete_function(tf.TensorSpec((None, 4, 5, channels), tf.float32))
        .graph
    )
    return {op.type for op in graph.get_operations() if "/ssp/" in f"/{op.name}"}


def test_ssp_training_step_runs_matrix_products_and_inference_convolutions():
    """What ``fit`` traces (``model(x, training=True)``) has no convolution in SSP.

    The convolutions stay in inference, which export and conversion trace.
    """
    inputs = keras.Input((4, 5, 16))
    model = keras.Model(inputs, SpatialEnhancer(name="ssp")(inputs))
    training = _ssp_op_types(lambda x: model(x, training=True), 16)
    assert "MatMul" in training
    assert not training & {"Conv2D", "FusedBatchNormV3"}
    inference = _ssp_op_types(lambda x: model(x, training=False), 16)
    assert {"Conv2D", "FusedBatchNormV3"} <= inference and "MatMul" not in inference


def test_ssp_frozen_normalizes_with_moving_stats_in_training(rng):
    """A frozen SSP keeps Keras' rule: its BN uses (and keeps) the moving statistics."""
    layer = make_ssp(16, rng)
    layer.trainable = False
    stats = [w.numpy().copy() for w in layer.reduce_bn.non_trainable_weights]
    x = rng.normal(0.0, 1.0, (2, 3, 4, 16)).astype(np.float32)
    np.testing.assert_allclose(
        layer(x, training=True).numpy(), np_ssp(x, ssp_params(layer)), rtol=1e-5, atol=1e-5
    )
    for before, after in zip(stats, layer.reduce_bn.non_trainable_weights):
        np.testing.assert_array_equal(after.numpy(), before)


def test_ssp_keeps_keras_batch_norm_under_a_strategy_or_symbolic_flag(rng):
    """Keras' BN handles partial batches of a strategy and a tensor flag; SSP leaves them to it."""
    layer = make_ssp(16, rng)
    assert layer._trains_as_matrix_products(True)
    assert not layer._trains_as_matrix_products(False)
    assert not layer._trains_as_matrix_products(tf.constant(True))
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        assert not layer._trains_as_matrix_products(True)


# -- 3. dynamic spatial dims ---------------------------------------------------
def test_ssp_dynamic_spatial_dims_in_model(rng):
    channels = 24
    inputs = keras.Input(shape=(None, None, channels))
    layer = SpatialEnhancer(name="ssp")
    model = keras.Model(inputs, layer(inputs))
    randomize_weights(layer, rng)
    p = ssp_params(layer)
    for height, width in [(3, 5), (7, 2), (1, 1)]:
        x = rng.normal(0.0, 1.0, (2, height, width, channels)).astype(np.float32)
        out = model.predict(x, verbose=0)
        assert out.shape == x.shape
        np.testing.assert_allclose(out, layer(x, training=False).numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(out, np_ssp(x, p), rtol=1e-5, atol=1e-5)


def test_ssp_dynamic_dims_in_tf_function(rng):
    layer = make_ssp(16, rng)
    fn = tf.function(
        lambda x: layer(x, training=False),
        input_signature=[tf.TensorSpec((None, None, None, 16), tf.float32)],
    )
    for shape in [(1, 4, 6, 16), (3, 2, 1, 16)]:
        x = rng.normal(0.0, 1.0, shape).astype(np.float32)
        np.testing.assert_allclose(
            fn(x).numpy(), layer(x, training=False).numpy(), rtol=1e-6, atol=1e-6
        )


# -- 4. mixed precision ---------------------------------------------------------
@pytest.mark.parametrize(
    "policy,compute_dtype,tol",
    [("mixed_float16", tf.float16, 1e-2), ("mixed_bfloat16", tf.bfloat16, 6e-2)],
)
def test_ssp_mixed_precision(rng, policy, compute_dtype, tol):
    channels = 32
    reference = make_ssp(channels, rng)
    x = rng.normal(0.0, 1.0, (2, 5, 4, channels)).astype(np.float32)
    expected = reference(x, training=False).numpy()

    keras.mixed_precision.set_global_policy(policy)
    layer = SpatialEnhancer()
    layer.build((None, None, None, channels))
    assert all(v.dtype == tf.float32 for v in layer.weights)
    layer.set_weights(reference.get_weights())
    out = layer(x, training=False)
    assert out.dtype == compute_dtype
    out = tf.cast(out, tf.float32).numpy()
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)
    # Training mode also runs in the compute dtype, stays finite, and agrees
    # with the convolutions that Keras' BN would see.
    with_convolutions = SpatialEnhancer()
    with_convolutions.build((None, None, None, channels))
    with_convolutions.set_weights(reference.get_weights())
    out_train = layer(x, training=True)
    assert out_train.dtype == compute_dtype
    out_train = tf.cast(out_train, tf.float32).numpy()
    assert np.all(np.isfinite(out_train))
    expected_train = with_convolutions._call_with_convolutions(tf.cast(x, compute_dtype), True)
    np.testing.assert_allclose(
        out_train, tf.cast(expected_train, tf.float32).numpy(), rtol=tol, atol=tol
    )
    for got, want in zip(layer.non_trainable_weights, with_convolutions.non_trainable_weights):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=tol, atol=tol)


# -- 8. errors -------------------------------------------------------------------
@pytest.mark.parametrize("reduction", [0, -1])
def test_ssp_rejects_reduction_below_one(reduction):
    with pytest.raises(ValueError, match="reduction"):
        SpatialEnhancer(reduction=reduction)


def test_ssp_rejects_min_channels_below_one():
    with pytest.raises(ValueError, match="min_channels"):
        SpatialEnhancer(min_channels=0)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"reduction": 2.9}, "reduction"),  # would have become 2
        ({"reduction": "8"}, "reduction"),
        ({"reduction": None}, "reduction"),
        ({"reduction": True}, "reduction"),
        ({"min_channels": 4.5}, "min_channels"),
        ({"batch_norm_momentum": 5}, "batch_norm_momentum"),
        ({"batch_norm_momentum": 1.0}, "batch_norm_momentum"),
        ({"batch_norm_epsilon": -1}, "batch_norm_epsilon"),
        ({"batch_norm_epsilon": 0}, "batch_norm_epsilon"),
        ({"gate_bias": float("nan")}, "gate_bias"),
        ({"gate_bias": "2"}, "gate_bias"),
        ({"zero_gate_kernels": "false"}, "zero_gate_kernels"),  # bool("false") is True
        ({"zero_gate_kernels": 0}, "zero_gate_kernels"),
    ],
)
def test_ssp_refuses_arguments_it_would_have_to_change(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}` must be"):
        SpatialEnhancer(**kwargs)


def test_ssp_takes_whole_numbers_written_as_floats_and_numpy_scalars():
    layer = SpatialEnhancer(
        reduction=8.0, min_channels=np.int64(4), zero_gate_kernels=np.bool_(True), gate_bias=2
    )
    assert (layer.reduction, layer.min_channels) == (8, 4)
    assert type(layer.reduction) is int and layer.zero_gate_kernels is True
    assert layer.gate_bias == 2.0


@pytest.mark.parametrize("shape", [(2, 4, 8), (2, 3, 4, 5, 8), (8,)])
def test_ssp_rejects_non_4d_input(shape):
    with pytest.raises(ValueError, match="4D"):
        SpatialEnhancer()(tf.zeros(shape))


def test_ssp_rejects_unknown_channels():
    with pytest.raises(ValueError, match="4D"):
        SpatialEnhancer().build((None, 4, 4, None))


# -- 10. open-gate initialisation --------------------------------------------------
@pytest.mark.parametrize("scale", [0.99, 0.81, 0.5])
@pytest.mark.parametrize("training", [False, True])
def test_open_gate_bias_scales_the_input(rng, scale, training):
    bias = open_gate_bias(scale)
    layer = SpatialEnhancer(gate_bias=bias, zero_gate_kernels=True)
    x = rng.normal(0.0, 2.0, (2, 3, 5, 24)).astype(np.float32)
    out = layer(x, training=training).numpy()
    np.testing.assert_allclose(out, scale * x, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(layer.gate_h.kernel.numpy(), 0.0)
    np.testing.assert_array_equal(layer.gate_w.bias.numpy(), np.float32(bias))


@pytest.mark.parametrize("scale", [0.0, 1.0, -0.1, 1.5])
def test_open_gate_bias_rejects_out_of_range(scale):
    with pytest.raises(ValueError, match="scale"):
        open_gate_bias(scale)


def test_ssp_config_round_trip(rng):
    layer = SpatialEnhancer(
        reduction=8,
        min_channels=4,
        batch_norm_momentum=0.9,
        batch_norm_epsilon=1e-2,
        gate_bias=1.5,
        zero_gate_kernels=True,
        name="ssp_x",
    )
    clone = SpatialEnhancer.from_config(layer.get_config())
    for attr in (
        "reduction",
        "min_channels",
        "batch_norm_momentum",
        "batch_norm_epsilon",
        "gate_bias",
        "zero_gate_kernels",
        "name",
    ):
        assert getattr(clone, attr) == getattr(layer, attr)
    layer = make_ssp(16, rng, reduction=8, min_channels=4)
    clone = SpatialEnhancer.from_config(layer.get_config())
    clone.build((None, None, None, 16))
    clone.set_weights(layer.get_weights())
    x = rng.normal(0.0, 1.0, (1, 3, 3, 16)).astype(np.float32)
    np.testing.assert_array_equal(
        clone(x, training=False).numpy(), layer(x, training=False).numpy()
    )


def test_hard_swish_matches_numpy():
    z = np.linspace(-5.0, 5.0, 101).astype(np.float32)
    np.testing.assert_allclose(
        hard_swish(tf.constant(z)).numpy(), np_hswish(z), rtol=1e-6, atol=1e-7
    )

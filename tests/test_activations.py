"""Hard swish: exact numerics, and int8 TFLite forms with Edge TPU ops only.

The TFLite converter fuses ``x * relu6(x + 3) / 6`` into HARD_SWISH, which the
Edge TPU does not support. keras_metapool writes hard swish so that it converts
to ADD (ReLU6 fused) and MUL instead; these tests pin both halves: the
function is unchanged, and no HARD_SWISH reaches an int8 model.
"""

import collections

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from helpers import np_hswish, randomize_layers

from keras_metapool._keras import keras
from keras_metapool.layers import HardSwish, SpatialEnhancer, hard_swish
from keras_metapool.layers.activations import hard_swish_times_six, per_channel_one_sixth

#: Ops of the Edge TPU's documented table that these small graphs may use.
EDGE_TPU_OPS = {"ADD", "MUL", "CONV_2D", "MEAN", "LOGISTIC", "AVERAGE_POOL_2D", "RESHAPE"}
EDGE_TPU_OPS |= {"FULLY_CONNECTED", "MAX_POOL_2D"}


def textbook_hard_swish(x):
    """The formula as usually written (and as keras_metapool wrote it before)."""
    return x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0)


# -- numerics ------------------------------------------------------------------
def test_hard_swish_matches_numpy_and_the_textbook_formula_bit_for_bit(rng):
    # Breakpoints -3 and 3, both sides, and random values.
    z = np.concatenate([np.linspace(-6.0, 6.0, 241), rng.normal(0.0, 3.0, 500)]).astype(np.float32)
    x = tf.constant(z.reshape(1, -1, 1, 1) * np.ones((1, 1, 1, 7), np.float32))
    out = hard_swish(x).numpy()
    np.testing.assert_allclose(out, np_hswish(x.numpy()), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(out, textbook_hard_swish(x).numpy())
    assert np.all(out[:, :121] <= 0.0) and out.max() > 5.0  # the range was covered


def test_hard_swish_times_six_is_six_times_hard_swish(rng):
    x = tf.constant(rng.normal(0.0, 3.0, (3, 4, 5)).astype(np.float32))
    np.testing.assert_allclose(
        hard_swish_times_six(x).numpy(), 6.0 * np_hswish(x.numpy()), rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float32])
def test_hard_swish_keeps_the_dtype(rng, dtype):
    x = tf.constant(rng.normal(0.0, 3.0, (2, 8)).astype(np.float32))
    out = hard_swish(tf.cast(x, dtype))
    assert out.dtype == dtype
    np.testing.assert_allclose(
        tf.cast(out, tf.float32).numpy(), np_hswish(x.numpy()), rtol=2e-2, atol=2e-2
    )


def test_hard_swish_with_unknown_channel_count(rng):
    fn = tf.function(hard_swish, input_signature=[tf.TensorSpec((None, None), tf.float32)])
    for channels in (1, 5):
        x = rng.normal(0.0, 3.0, (4, channels)).astype(np.float32)
        # Graph rewrites may reorder the product: equal up to float rounding.
        np.testing.assert_allclose(fn(x).numpy(), np_hswish(x), rtol=1e-6, atol=1e-7)
    # The constant it multiplies by: one 1/6 per channel.
    np.testing.assert_allclose(per_channel_one_sixth(tf.zeros((2, 3))).numpy(), [1 / 6] * 3)


def test_hard_swish_layer_matches_the_function(rng):
    x = rng.normal(0.0, 3.0, (2, 3, 3, 4)).astype(np.float32)
    layer = HardSwish(name="hswish")
    np.testing.assert_array_equal(layer(x).numpy(), hard_swish(tf.constant(x)).numpy())
    assert HardSwish.from_config(layer.get_config()).name == "hswish"


# -- int8 TFLite forms -----------------------------------------------------------
def int8_ops(model, rng, samples=16):
    """(op name, input dtypes, output dtypes) of the model's full-integer TFLite form."""
    shape = tuple(model.input_shape[1:])

    def representative():
        for _ in range(samples):
            yield [rng.uniform(-1.0, 1.0, (1,) + shape).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    interpreter = Interpreter(
        model_content=converter.convert(),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    return [
        (
            op["op_name"],
            tuple(dtypes[i] for i in op["inputs"] if i >= 0),
            tuple(dtypes[i] for i in op["outputs"]),
        )
        for op in interpreter._get_ops_details()
    ]


def assert_edge_tpu_clean(ops):
    names = [name for name, _, _ in ops]
    assert "HARD_SWISH" not in names
    assert set(names) <= EDGE_TPU_OPS, set(names) - EDGE_TPU_OPS
    for name, inputs, outputs in ops:
        # int8 activations and weights; int32 only for biases and MEAN's axes.
        assert set(outputs) == {"int8"}, (name, outputs)
        assert set(inputs) <= {"int8", "int32"}, (name, inputs)


def conv_model(middle, shape=(6, 6, 8), seed=0):
    """Conv -> BN -> ``middle`` -> Conv, with non-trivial BN statistics."""
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(16, 1, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    for layer in middle:
        x = layer(x)
    outputs = keras.layers.Conv2D(8, 1)(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    randomize_layers(model.layers[1:], rng)
    return model


def test_textbook_hard_swish_converts_to_hard_swish(rng):
    """Why the reformulation exists: the plain formula becomes HARD_SWISH."""
    model = conv_model([keras.layers.Lambda(textbook_hard_swish)])
    assert "HARD_SWISH" in [name for name, _, _ in int8_ops(model, rng)]


def test_post_norm_hard_swish_converts_to_add_and_mul(rng):
    """An enhancer's post-norm: pooling -> BN -> HardSwish (-> the next conv)."""
    pool = keras.layers.AveragePooling2D(3, strides=1, padding="same")
    model = conv_model([pool, keras.layers.BatchNormalization(), HardSwish()])
    ops = int8_ops(model, rng)
    assert_edge_tpu_clean(ops)
    counts = collections.Counter(name for name, _, _ in ops)
    # BN after a pooling op: MUL + ADD; hard swish: ADD (ReLU6) + MUL + MUL.
    assert counts == {"CONV_2D": 2, "AVERAGE_POOL_2D": 1, "MUL": 3, "ADD": 2}


def test_paper_head_converts_without_hard_swish(rng):
    """The paper head: global pool -> 1x1 conv with bias -> hard swish -> Dense."""
    inputs = keras.Input((4, 4, 16))
    x = keras.layers.GlobalAveragePooling2D(keepdims=True)(inputs)
    x = keras.layers.Conv2D(32, 1, use_bias=True)(x)
    x = HardSwish(name="head_hswish")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10)(x)
    ops = int8_ops(keras.Model(inputs, outputs), rng)
    assert_edge_tpu_clean(ops)
    assert [name for name, _, _ in ops].count("MUL") == 2


def test_spatial_enhancer_converts_to_edge_tpu_ops_only(rng):
    """SSP's bottleneck hard swish has its 1/6 folded into the gate kernels."""
    model = conv_model([SpatialEnhancer(min_channels=4)], shape=(6, 5, 8))
    ops = int8_ops(model, rng)
    assert_edge_tpu_clean(ops)
    counts = collections.Counter(name for name, _, _ in ops)
    # Per path (rows, columns): MEAN, reduce CONV_2D, ADD (ReLU6), MUL, gate
    # CONV_2D, LOGISTIC; then two MULs apply the gates. No extra MUL by 1/6.
    assert counts == {"CONV_2D": 2 + 4, "MEAN": 2, "ADD": 2, "MUL": 2 + 2, "LOGISTIC": 2}

"""Keras 3 quantization-aware training (keras_metapool.keras3.qat): the scheme, its errors.

The route on real data (a trained model, QAT in a process without tf_keras, its
Edge TPU file, a reload) is in tests/test_quantization.py: one trained model for
both routes.
"""

import textwrap

import keras as keras3
import numpy as np
import pytest
from helpers import run_python

import keras_metapool as km
from keras_metapool import keras3 as kmp3
from keras_metapool._int8_facts import MOBILENET_INPUT_RANGE

SIZE = 32


@pytest.mark.slow
def test_another_backend_gets_one_error_naming_tensorflow():
    script = textwrap.dedent(
        """
        import keras
        import keras_metapool.keras3 as kmp3
        model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)])
        try:
            kmp3.quantize_model(model)
        except ValueError as error:
            print(keras.backend.backend(), "|", error)
        """
    )
    out = run_python(script, env={"KERAS_BACKEND": "jax"}).strip().splitlines()[-1]
    assert out.startswith("jax | ")
    assert "TensorFlow backend" in out and "KERAS_BACKEND=tensorflow" in out


def test_a_layer_the_route_does_not_support_is_named():
    inputs = keras3.Input((SIZE, SIZE, 3))
    x = keras3.layers.Conv2D(8, 3, name="stem")(inputs)
    x = keras3.layers.LayerNormalization(name="odd_norm")(x)
    x = keras3.layers.GlobalAveragePooling2D()(x)
    model = keras3.Model(inputs, keras3.layers.Dense(10, activation="softmax")(x))
    with pytest.raises(ValueError, match=r"'odd_norm' \(LayerNormalization\)") as raised:
        kmp3.quantize_model(model)
    assert "stem" not in str(raised.value).split("Supported")[0]


def test_tf_keras_sequential_and_quantized_models_are_refused_with_the_way_forward():
    tf_model = km.MobileNetV2MP(weights=None, alpha=0.35, input_shape=(SIZE, SIZE, 3),
                                meta_pooling="none", classes=10)  # fmt: skip
    with pytest.raises(ValueError, match=r"tf_keras model.*keras_metapool.quantize_model"):
        kmp3.quantize_model(tf_model)
    sequential = keras3.Sequential([keras3.Input((8, 8, 3)), keras3.layers.Conv2D(2, 3)])
    with pytest.raises(ValueError, match=r"Sequential model.*keras.Model\(inputs, x\)"):
        kmp3.quantize_model(sequential)
    qat = kmp3.quantize_model(kmp3.to_keras3(tf_model))
    with pytest.raises(ValueError, match=r"already quantization-aware"):
        kmp3.quantize_model(qat)


def test_every_layer_follows_its_row_of_the_scheme():
    model = kmp3.to_keras3(
        km.MobileNetV2MP(weights=None, alpha=0.35, input_shape=(SIZE, SIZE, 3), classes=10,
                         meta_pooling=km.ArchitectureSpec.ablation("random"), head="paper")
    )  # fmt: skip
    qat = kmp3.quantize_model(model)
    float_names = {layer.name for layer in model.layers}
    kinds = {layer.name: type(layer).__name__ for layer in qat.layers}
    quantizers = {name[: -len("_quant")] for name, kind in kinds.items()
                  if kind == "ActivationQuantizer"}  # fmt: skip
    # Every float layer is there, under its name; twins where the table says.
    assert float_names <= set(kinds)
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("SpatialEnhancer", "HardSwish", "Conv2D", "DepthwiseConv2D", "Dense"):
            assert kinds[layer.name] == "Quantized" + kind, layer.name
    # Folded pairs carry no range between them; a ReLU after them carries one.
    assert "Conv1" not in quantizers and "bn_Conv1" not in quantizers
    assert "Conv1_relu" in quantizers
    # The input is quantized on the fixed MobileNetV2 grid.
    (input_quantizer,) = [layer for layer in qat.layers[:2] if kinds[layer.name] != "InputLayer"]
    assert input_quantizer.fixed_range == MOBILENET_INPUT_RANGE
    # AVERAGE_POOL_2D stays on its input's grid: its output reuses the input's quantizer.
    pools = [layer for layer in qat.layers if type(layer).__name__ == "AveragePooling2D"]
    assert pools and not any(pool.name in quantizers for pool in pools)


@pytest.mark.slow
def test_the_ssp_twins_of_both_routes_compute_the_same_int8_simulation(rng):
    """The Keras 3 QuantizedSpatialEnhancer against the tf_keras one, same weights and ranges."""
    from keras_metapool.quantization.layers import QuantizedSpatialEnhancer as TFKerasTwin

    shape = (4, 6, 5, 24)
    tf_twin = TFKerasTwin(gate_bias=0.5)
    tf_twin.build(shape)
    k3_twin = kmp3.QAT_LAYERS["QuantizedSpatialEnhancer"](gate_bias=0.5)
    k3_twin.build(shape)
    for part in ("reduce", "reduce_bn", "gate_h", "gate_w"):
        values = [
            rng.normal(0, 0.5, w.shape).astype("float32") for w in getattr(tf_twin, part).weights
        ]
        if part == "reduce_bn":
            values[3] = np.abs(values[3]) + 0.5  # a variance
        getattr(tf_twin, part).set_weights(values)
        getattr(k3_twin, part).set_weights(values)
    # The same ranges in both: wide enough for every tensor of this input.
    tf_ranges = {v.name.split("/")[-1].split(":")[0]: v for v in tf_twin.non_trainable_weights}
    for variable in k3_twin.non_trainable_weights:
        name = variable.path.split("/")[-1]
        if name.endswith(("_min", "_max")) and not name.startswith(("shifted", "gate_h", "gate_w")):
            value = -8.0 if name.endswith("_min") else 8.0
            variable.assign(value)
            tf_ranges[name].assign(value)
    x = rng.normal(0, 1, shape).astype("float32")
    expected = tf_twin(x, training=False).numpy()
    actual = k3_twin(x, training=False).numpy()
    step = 16.0 / 255.0  # one step of the output's grid
    assert np.max(np.abs(actual - expected)) <= step + 1e-6
    assert np.mean(np.abs(actual - expected) > 1e-5) < 0.01  # a rounding tie now and then
    assert np.std(expected) > step  # a real output, not a constant

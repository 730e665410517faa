"""Keras 3 quantization-aware training to an Edge TPU file (keras_metapool.keras3.qat).

The route runs in fresh processes that import Keras 3 and keras_metapool.keras3
only, as a Keras 3 user's program would; the accuracy of the route against its
int8 file, on the model the tf_keras route also quantizes, is in
tests/test_quantization.py (one trained model for both routes).
"""

import json
import os
import subprocess
import sys
import textwrap

import keras as keras3
import numpy as np
import pytest

import keras_metapool as km
from keras_metapool import keras3 as kmp3
from keras_metapool._int8_facts import MOBILENET_INPUT_RANGE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32

#: A Keras 3 user's route: the paper's MobileNetV2MP from a .keras file, trained a
#: little on Fashion-MNIST, QAT, a .keras file, an Edge TPU file and its LiteRT accuracy.
_ROUTE = textwrap.dedent(
    """
    import json, sys
    import keras
    import numpy as np
    import keras_metapool.keras3 as kmp3  # registers the layers of the .keras files
    from keras_metapool.data import load_fashion_mnist
    from keras_metapool.data.preprocessing import to_model_input
    from keras_metapool.export import evaluate_tflite, to_tflite

    folder = sys.argv[1]
    keras.utils.set_random_seed(0)
    pixels, labels = load_fashion_mnist("train", limit=512)
    images = to_model_input(pixels, 32)
    model = keras.saving.load_model(folder + "/float.keras", safe_mode=True)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images, labels, epochs=1, batch_size=64, verbose=0)
    qat = kmp3.quantize_model(model, representative_data=images[:128])
    qat.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    qat.fit(images, labels, epochs=1, batch_size=64, verbose=0)
    qat.save(folder + "/qat.keras")
    np.save(folder + "/images.npy", images[:64])
    np.save(folder + "/labels.npy", labels[:64])
    np.savez(folder + "/weights.npz", *qat.get_weights())
    ranges = {v.path: float(v.numpy()) for v in qat.non_trainable_weights
              if v.path.endswith(("_min", "_max"))}
    result = to_tflite(qat, folder + "/model_edgetpu.tflite", mode="edgetpu",
                       representative_data=images[:64])
    accuracy = evaluate_tflite(folder + "/model_edgetpu.tflite", (images[:64], labels[:64]),
                               verbose=0).accuracy
    report = result.edgetpu_report
    print(json.dumps(dict(
        loaded=sorted(m for m in ("tf_keras", "tensorflow_model_optimization") if m in sys.modules),
        all_mapped=report.all_mapped, cpu_ops=report.num_cpu_ops, ranges=ranges,
        input=[result.input.dtype, list(result.input.shape)], accuracy=accuracy,
        ops=sorted({op.name for op in report.ops}), input_quantizer=qat.layers[1].name,
    )))
    """
)

_RELOAD = textwrap.dedent(
    """
    import json, sys
    import keras
    import numpy as np
    import keras_metapool.keras3  # registers the layers

    folder = sys.argv[1]
    qat = keras.saving.load_model(folder + "/qat.keras", safe_mode=True)
    images, labels = np.load(folder + "/images.npy"), np.load(folder + "/labels.npy")
    saved = np.load(folder + "/weights.npz")
    weights = qat.get_weights()
    same = len(weights) == len(saved.files) and all(
        np.array_equal(w, saved[f"arr_{i}"]) for i, w in enumerate(weights))
    ranges = {v.path: float(v.numpy()) for v in qat.non_trainable_weights
              if v.path.endswith(("_min", "_max"))}
    qat.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    loss = float(qat.train_on_batch(images[:32], labels[:32]))
    moved = {v.path: float(v.numpy()) for v in qat.non_trainable_weights
             if v.path.endswith(("_min", "_max"))}
    print(json.dumps(dict(same=same, ranges=ranges, moved=moved, loss=loss,
                          tf_keras="tf_keras" in sys.modules)))
    """
)


def _run(script, *args, env=None):
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {})),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def route(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keras3_qat")
    # Built here (the builder is tf_keras'); the route's process only loads it.
    kmp3.MobileNetV2MP(
        weights=None, alpha=0.35, input_shape=(SIZE, SIZE, 3), classes=10, meta_pooling="paper"
    ).save(folder / "float.keras")
    return folder, json.loads(_run(_ROUTE, folder).splitlines()[-1])


@pytest.mark.slow
def test_the_keras3_route_makes_an_edge_tpu_file_without_tf_keras_or_tfmot(route):
    _, result = route
    assert result["loaded"] == []
    assert result["all_mapped"] and result["cpu_ops"] == 0
    assert "HARD_SWISH" not in result["ops"] and "DEQUANTIZE" not in result["ops"]
    assert {"LOGISTIC", "MUL", "MEAN"} <= set(result["ops"])  # SSP, quantized
    assert result["input"] == ["uint8", [1, SIZE, SIZE, 3]]
    # Scored through LiteRT (one epoch on 512 images is too little to learn reliably:
    # what QAT learns is tested on a trained model in tests/test_quantization.py).
    assert 0.0 <= result["accuracy"] <= 1.0


@pytest.mark.slow
def test_a_saved_qat_model_reloads_in_safe_mode_and_trains_on_from_its_ranges(route):
    folder, saved = route
    reloaded = json.loads(_run(_RELOAD, folder).splitlines()[-1])
    assert not reloaded["tf_keras"]
    assert reloaded["same"]  # the same weights, ranges included
    assert reloaded["ranges"] == saved["ranges"] and len(saved["ranges"]) > 20
    assert np.isfinite(reloaded["loss"])
    # Training moved the tracked ranges (a moving average), not the fixed input range.
    moved = [path for path, value in reloaded["moved"].items() if value != saved["ranges"][path]]
    assert moved and not [path for path in moved if path.startswith(saved["input_quantizer"])]


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
    out = _run(script, env={"KERAS_BACKEND": "jax"}).strip().splitlines()[-1]
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

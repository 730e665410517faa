"""to_tflite: every mode on "paper", "none" and a derived architecture; bad input.

Converted models are shared across tests (module-scoped): a conversion costs
several seconds even for alpha 0.35 at 32x32.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from helpers import calibrate_batch_norms

import keras_metapool as km
from keras_metapool.data.fashion_mnist import load_fashion_mnist
from keras_metapool.data.preprocessing import to_model_input
from keras_metapool.export import (
    TFLITE_MODES,
    ExportValidationError,
    edgetpu_report,
    read_tflite_graph,
    tflite_predict,
    to_tflite,
)
from keras_metapool.export.edgetpu import EDGETPU_OPS
from keras_metapool.export.tflite_graph import with_signature

SIZE = 32
#: A PMPL-like result: single ops, pairs (also with identity), post-norm.
DERIVED = km.ArchitectureSpec(
    ["identity", "avg3", ("avg3", "max3"), "identity", "max5", "ssp", ("identity", "ssp")]
    + ["avg5", "identity", "ssp", "max3", ("ssp", "avg7"), "identity", "ssp", "avg3"]
    + ["max7", "ssp"],
    post_norm=True,
    name="derived",
)
ARCHITECTURES = {"paper": "paper", "none": "none", "derived": DERIVED}
IO_TYPES = {"int8": "int8", "uint8": "uint8", "edgetpu": "uint8"}
# Ops whose int32 operand at this position is a bias.
BIAS_INPUT = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2}


def _build(architecture, seed=0):
    model = km.MobileNetV2MP(
        weights=None,
        meta_pooling=architecture,
        alpha=0.35,
        input_shape=(SIZE, SIZE, 3),
        classes=10,
        batch_norm_momentum=0.9,
    )
    calibrate_batch_norms(model, seed)  # random BN stats: outputs that differ per image
    return model


@pytest.fixture(scope="module")
def images():
    """Real images (Fashion-MNIST test split), preprocessed to [-1, 1]."""
    pixels, _ = load_fashion_mnist("test", limit=160)
    return to_model_input(pixels, SIZE)


@pytest.fixture(scope="module")
def models():
    return {name: _build(arch, seed) for seed, (name, arch) in enumerate(ARCHITECTURES.items())}


@pytest.fixture(scope="module")
def exports(models, images, tmp_path_factory):
    """{(architecture, mode): TFLiteExport, or the ExportValidationError it raised}."""
    folder = tmp_path_factory.mktemp("tflite")
    results = {}
    for name, model in models.items():
        for mode in TFLITE_MODES:
            path = folder / f"{name}_{mode}.tflite"
            try:
                results[name, mode] = to_tflite(model, path, mode, representative_data=images[:100])
            except ExportValidationError as error:
                results[name, mode] = error
    return results


def _path(result):
    return result.path  # TFLiteExport and ExportValidationError both carry it


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_float_mode_predicts_like_keras(name, models, exports, images):
    result = exports[name, "float"]
    assert (result.input.dtype, result.output.dtype) == ("float32", "float32")
    assert (result.input.name, result.output.name) == ("images", "probabilities")
    assert result.input.shape == (-1, SIZE, SIZE, 3)
    expected = models[name].predict(images[100:], verbose=0)
    # Float kernels differ in summation order (XNNPACK); an untrained deep
    # network amplifies that to ~1e-4, while a wrong weight or op is far off.
    np.testing.assert_allclose(tflite_predict(result.path, images[100:]), expected, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_dynamic_mode_quantizes_weights_only(name, exports):
    result = exports[name, "dynamic"]
    assert (result.input.dtype, result.output.dtype) == ("float32", "float32")
    assert result.size_bytes < 0.5 * exports[name, "float"].size_bytes
    graph = read_tflite_graph(result.path)
    convs = [op for op in graph.ops if op.name == "CONV_2D"]
    assert any(graph.tensor(op.inputs[1]).dtype == "int8" for op in convs)
    # How close a lossy mode stays to float is only meaningful for a trained
    # network (a random one amplifies any rounding): see test_export_evaluate.


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["int8", "uint8", "edgetpu"])
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_full_integer_modes_hold_only_8_bit_activations(name, mode, exports):
    path = _path(exports[name, mode])
    graph = read_tflite_graph(path)
    assert [t.dtype for t in graph.input_tensors + graph.output_tensors] == [IO_TYPES[mode]] * 2
    for op in graph.ops:
        for position, index in enumerate(op.inputs):
            tensor = graph.tensor(index)
            if tensor is None or tensor.dtype in ("int8", "uint8"):
                continue
            assert tensor.dtype == "int32" and tensor.is_constant, (op.name, tensor)
            if op.name in BIAS_INPUT:
                assert position == BIAS_INPUT[op.name], (op.name, tensor)
            else:
                assert position > 0, (op.name, tensor)  # a parameter, never the data
        assert all(graph.tensor(i).dtype in ("int8", "uint8") for i in op.outputs), op.name


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_full_integer_modes_compute_the_same_function(name, exports, images):
    # int8 and uint8 I/O differ by a zero-point shift of 128 only: their
    # dequantized outputs match to one output step. The edgetpu model is the
    # uint8 one at batch 1 with one scale for the whole dense kernel instead
    # of one per class: the same ops, outputs mostly equal and a few steps of
    # 1/256 apart where the coarser kernel rounds differently. The worst single
    # output depends on the CPU's float rounding (6 to 13 steps seen), so the
    # check is on the average and the decisions, not on the worst one. (How
    # close int8 is to float is a matter of training: see the QAT tests.)
    outputs = {mode: tflite_predict(_path(exports[name, mode]), images[100:]) for mode in IO_TYPES}
    step = exports[name, "int8"].output.scale
    np.testing.assert_allclose(outputs["uint8"], outputs["int8"], atol=step * 1.01)
    ops = {
        mode: [op.name for op in read_tflite_graph(_path(exports[name, mode])).ops]
        for mode in IO_TYPES
    }
    assert ops["edgetpu"] == ops["uint8"]
    steps_apart = np.abs(outputs["edgetpu"] - outputs["uint8"]) / step
    assert steps_apart.mean() < 1, steps_apart.mean()  # measured 0.02-0.12
    assert steps_apart.max() < 64, steps_apart.max()  # a quarter of the range: another function
    agree = np.mean(outputs["edgetpu"].argmax(-1) == outputs["uint8"].argmax(-1))
    assert agree >= 0.9, agree
    assert np.ptp(outputs["int8"].argmax(-1)) > 0  # not one class for every image


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["int8", "uint8", "edgetpu"])
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_full_integer_modes_use_only_edgetpu_ops(name, mode, exports):
    graph = read_tflite_graph(_path(exports[name, mode]))
    assert {op.name for op in graph.ops} <= set(EDGETPU_OPS)


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_edgetpu_mode_is_static_uint8_and_maps_completely(name, exports):
    result = exports[name, "edgetpu"]
    assert not isinstance(result, ExportValidationError), str(result)
    assert result.input.shape == (1, SIZE, SIZE, 3)
    assert (result.input.dtype, result.output.dtype) == ("uint8", "uint8")
    assert result.output.shape == (1, 10)
    assert not any(t.is_dynamic for t in read_tflite_graph(result.path).tensors)
    report = result.edgetpu_report
    assert report.all_mapped and report.tpu_subgraphs == 1
    assert report == edgetpu_report(result.path)


@pytest.mark.slow
def test_int8_and_uint8_share_the_dynamic_batch(exports, images):
    for mode in ("int8", "uint8"):
        result = exports["none", mode]
        assert result.input.shape == (-1, SIZE, SIZE, 3)
        # Any batch runs: 7 images in one invoke.
        assert tflite_predict(result.path, images[:7], batch_size=7).shape == (7, 10)


@pytest.mark.slow
@pytest.mark.parametrize("mode", TFLITE_MODES)
def test_every_file_has_the_serving_signature_and_a_named_output(mode, exports):
    # to_tflite converts a frozen graph (no signature of its own) and adds one.
    path = _path(exports["paper", mode])
    interpreter = Interpreter(model_path=path)
    assert interpreter.get_signature_list() == {
        "serving_default": {"inputs": ["images"], "outputs": ["probabilities"]}
    }
    graph = read_tflite_graph(path)
    assert graph.tensor(graph.outputs[0]).name == "probabilities"


def test_with_signature_refuses_a_model_with_two_outputs():
    function = tf.function(
        lambda x: (x + 1.0, x * 2.0), input_signature=[tf.TensorSpec([1, 4], tf.float32)]
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], tf.Module()
    )
    with pytest.raises(ValueError, match="one input and one output; the model has 1 inputs and 2"):
        with_signature(converter.convert(), "x", "y")


# -- a fully fixed search model exports as its lean model ----------------------


@pytest.mark.slow
def test_fixed_search_model_exports_its_lean_model(tmp_path, images):
    candidates = ("identity", "ssp", "max3", "avg3")
    # The paper's mixture at the output placement, every candidate at every point
    # (listed explicitly: kept on the small maps of a 32x32 input).
    space = km.ArchitectureSpec(
        ["search"] * 17, post_norm=True, candidates=candidates, point_candidates=[candidates] * 17
    )
    supernet = km.MobileNetV2MP(
        weights=None,
        meta_pooling=space,
        alpha=0.35,
        input_shape=(SIZE, SIZE, 3),
        classes=10,
        batch_norm_momentum=0.9,
    )
    blocks = [layer for layer in supernet.layers if isinstance(layer, km.MetaPoolingBlock)]
    assert len(blocks) == 17
    choices = ["avg3", "identity", ("identity", "avg3")]
    for index, block in enumerate(blocks):
        block.fix(choices[index % 3])
    calibrate_batch_norms(supernet, 7)
    result = to_tflite(supernet, tmp_path / "lean.tflite", "float")
    names = [op.name for op in read_tflite_graph(result.path).ops]
    # No unused candidate reaches the file: no max pooling, no SSP (its
    # sigmoid gates, its row/column means); the only MEAN is the global pool.
    assert "MAX_POOL_2D" not in names and "LOGISTIC" not in names
    assert names.count("MEAN") == 1
    assert names.count("AVERAGE_POOL_2D") == 11  # 6 "avg3" + 5 pairs ("identity", "avg3")
    expected = supernet.predict(images[:32], verbose=0)
    np.testing.assert_allclose(tflite_predict(result.path, images[:32]), expected, atol=1e-4)


# -- bad input -------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_model():
    return km.MobileNetV2MP(
        weights=None, meta_pooling="none", alpha=0.35, input_shape=(SIZE, SIZE, 3), classes=10
    )


@pytest.mark.parametrize("mode", ["int8", "uint8", "edgetpu"])
def test_missing_representative_data(mode, plain_model, tmp_path):
    path = tmp_path / "model.tflite"
    with pytest.raises(ValueError, match=f"mode='{mode}'.*needs representative_data"):
        to_tflite(plain_model, path, mode)
    assert not path.exists()


def test_path_in_missing_directory(plain_model, tmp_path):
    path = tmp_path / "no_such_folder" / "model.tflite"
    with pytest.raises(FileNotFoundError, match="no_such_folder.*does not exist"):
        to_tflite(plain_model, path, "float")


def test_unfixed_search_model(tmp_path, images):
    supernet = km.MobileNetV2MP(
        weights=None,
        meta_pooling="search",
        search_candidates=("identity", "avg3"),
        alpha=0.35,
        input_shape=(SIZE, SIZE, 3),
        classes=10,
    )
    with pytest.raises(ValueError, match="unfixed search point.*Finish the search"):
        to_tflite(supernet, tmp_path / "m.tflite", "int8", representative_data=images)
    assert not os.path.exists(tmp_path / "m.tflite")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mode="int4"), "Unknown mode 'int4'"),
        (dict(mode="edgetpu", batch_size=4), "batch 1"),
        (dict(mode="float", batch_size=0), "positive int"),
        (dict(mode="int8", representative_data=np.zeros((4, 64, 64, 3))), r"shape \(32, 32, 3\)"),
        (dict(mode="int8", representative_data=np.zeros((0, 32, 32, 3))), "empty"),
        (dict(mode="int8", representative_data="images/"), "must be a tf.data.Dataset"),
        (dict(mode="int8", representative_data=np.zeros((4, 32, 32, 3)),
              num_calibration_samples=0), "positive int"),
    ],
)  # fmt: skip
def test_bad_arguments(kwargs, message, plain_model, tmp_path):
    with pytest.raises(ValueError, match=message):
        to_tflite(plain_model, tmp_path / "m.tflite", **kwargs)
    assert not os.path.exists(tmp_path / "m.tflite")


def test_a_mixed_precision_model_is_refused_before_conversion(tmp_path, images):
    # The converter fails on float16 compute ops with "'tf.Conv2D' op is
    # neither a custom op nor a flex op", after calibration.
    km.keras.mixed_precision.set_global_policy("mixed_float16")
    model = km.MobileNetV2MP(weights=None, meta_pooling="paper", alpha=0.35,
                             input_shape=(SIZE, SIZE, 3), classes=10)  # fmt: skip
    with pytest.raises(ValueError, match=r"to_tflite needs a float32 model .*'float32' policy"):
        to_tflite(model, tmp_path / "m.tflite", "int8", representative_data=images)
    assert not os.path.exists(tmp_path / "m.tflite")

"""Edge TPU report: rules on real conversions, synthetic graphs, compiler logs, CLI."""

import dataclasses
import os
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from keras_metapool._keras import keras
from keras_metapool.cli import edgetpu_report as edgetpu_program
from keras_metapool.export import to_tflite
from keras_metapool.export.edgetpu import (
    AFTER_PARTITION,
    COMPILER_MAX_OP_VERSIONS,
    DYNAMIC_SHAPE,
    LIMITATION,
    MAPPED,
    NOT_SUPPORTED,
    UNSUPPORTED_RANK,
    UNSUPPORTED_TYPE,
    VERSION_NOT_SUPPORTED,
    edgetpu_report,
    report_for_graph,
)
from keras_metapool.export.edgetpu_compiler import (
    parse_edgetpu_compiler_log,
    run_edgetpu_compiler,
)
from keras_metapool.export.tflite import ExportValidationError
from keras_metapool.export.tflite_graph import (
    TFLiteGraph,
    TFLiteOp,
    TFLiteTensor,
    read_tflite_graph,
)

SIZE = 8


def _small_model(middle=None):
    """Conv -> [middle] -> Conv -> global pool -> Dense softmax, on 8x8x3."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    if middle is not None:
        x = middle(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def _calibration(count=16):
    return np.random.default_rng(0).uniform(-1, 1, (count, SIZE, SIZE, 3)).astype(np.float32)


def _convert_float_fallback(model, path):
    """Full integer where the kernels exist, float ops elsewhere (DEQUANTIZE ... QUANTIZE)."""
    function = tf.function(
        lambda images: model(images), input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3])]
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], model
    )
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in _calibration())
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
        tf.lite.OpsSet.TFLITE_BUILTINS,
    ]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    with open(path, "wb") as f:
        f.write(converter.convert())
    return path


@pytest.fixture(scope="module")
def rule_breakers(tmp_path_factory):
    """.tflite files that break one Edge TPU rule each, plus a clean one."""
    folder = tmp_path_factory.mktemp("edgetpu")
    keras.utils.set_random_seed(0)
    clean = _small_model()
    transposed = _small_model(keras.layers.Permute((2, 1, 3)))  # TRANSPOSE in the middle
    sine = _small_model(keras.layers.Lambda(tf.math.sin))  # no int8 kernel: a float op
    data = _calibration()
    files = {
        "clean": to_tflite(clean, folder / "clean.tflite", "edgetpu", data).path,
        "transpose": to_tflite(
            transposed, folder / "transpose.tflite", "edgetpu", data, strict=False
        ).path,
        "dynamic_batch": to_tflite(clean, folder / "dynamic.tflite", "uint8", data).path,
        "batch_4": to_tflite(clean, folder / "batch4.tflite", "uint8", data, batch_size=4).path,
        "float": to_tflite(clean, folder / "float.tflite", "float", batch_size=1).path,
        "float_op": _convert_float_fallback(sine, str(folder / "float_op.tflite")),
    }
    return files


def _with_op_version(source, target, op_name, version):
    """Copies a .tflite file with ``op_name``'s recorded version set to ``version``."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(open(source, "rb").read()), 0)
    code = getattr(schema.BuiltinOperator, op_name)
    (entry,) = [
        c for c in model.operatorCodes if max(c.builtinCode, c.deprecatedBuiltinCode) == code
    ]
    entry.version = version
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with open(target, "wb") as f:
        f.write(builder.Output())
    return str(target)


def _global_mean_model(size):
    """Conv -> global average pool over size x size -> Dense (a MEAN of size**2 values)."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 1)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


@pytest.fixture(scope="module")
def compiler_rule_breakers(tmp_path_factory, rule_breakers):
    """Files that break one of the rules the real compiler enforces beyond the op table."""
    folder = tmp_path_factory.mktemp("compiler_rules")
    keras.utils.set_random_seed(0)
    clean = _small_model()
    data = _calibration()
    rng = np.random.default_rng(0)
    big = rng.uniform(-1, 1, (8, 96, 96, 3)).astype(np.float32)
    small = rng.uniform(-1, 1, (8, 88, 88, 3)).astype(np.float32)
    return {
        # uint8 mode keeps TensorFlow's per-channel dense weights; batch 1 as edgetpu.
        "per_channel_fc": to_tflite(
            clean, folder / "per_channel.tflite", "uint8", data, batch_size=1
        ).path,
        "new_conv_version": _with_op_version(
            rule_breakers["clean"], folder / "conv_v6.tflite", "CONV_2D", 6
        ),
        "mean_96": to_tflite(
            _global_mean_model(96), folder / "mean96.tflite", "edgetpu", big, strict=False
        ).path,
        "mean_88": to_tflite(
            _global_mean_model(88), folder / "mean88.tflite", "edgetpu", small
        ).path,
    }


def _fc_weight_scales(path):
    graph = read_tflite_graph(path)
    return [
        len(graph.tensor(op.inputs[1]).scale) for op in graph.ops if op.name == "FULLY_CONNECTED"
    ]


@pytest.mark.slow
def test_edgetpu_mode_writes_per_tensor_dense_weights(rule_breakers, compiler_rule_breakers):
    assert _fc_weight_scales(rule_breakers["clean"]) == [1]
    # The other full-integer modes keep TensorFlow's per-channel weights (3 classes).
    assert _fc_weight_scales(compiler_rule_breakers["per_channel_fc"]) == [3]


def test_report_flags_per_channel_dense_weights(compiler_rule_breakers):
    report = edgetpu_report(compiler_rule_breakers["per_channel_fc"])
    first = report.first_cpu_op
    assert first.name == "FULLY_CONNECTED" and first.status == LIMITATION
    assert "per channel (3 scales)" in first.reason
    assert not report.all_mapped


def test_every_op_version_of_an_edgetpu_export_is_within_the_compiler_table(rule_breakers):
    report = edgetpu_report(rule_breakers["clean"])
    assert report.unverified_versions == {}
    assert all(op.version <= COMPILER_MAX_OP_VERSIONS[op.name] for op in report.ops)
    assert "Op versions: all within what edgetpu_compiler 16 is known to parse" in str(report)


def test_report_flags_an_op_version_newer_than_the_compiler_knows(compiler_rule_breakers):
    report = edgetpu_report(compiler_rule_breakers["new_conv_version"])
    first = report.first_cpu_op
    assert (first.name, first.version, first.status) == ("CONV_2D", 6, VERSION_NOT_SUPPORTED)
    assert "version 6 is newer than version 5" in first.reason
    assert first.index == _index_of(report, "CONV_2D")


def test_ops_without_a_known_compiler_version_are_unverified():
    graph = _graph("RELU", (1, 4, 4, 8))
    graph = dataclasses.replace(graph, ops=(dataclasses.replace(graph.ops[0], name="CUSTOM_X"),))
    report = report_for_graph(graph)
    assert report.unverified_versions == {"CUSTOM_X": 1}
    assert "Op versions unverified (no known compiler limit): CUSTOM_X v1" in str(report)


def test_report_flags_a_mean_over_a_large_window(compiler_rule_breakers):
    too_large = edgetpu_report(compiler_rule_breakers["mean_96"])
    assert too_large.first_cpu_op.name == "MEAN"
    assert "averages 9216 values per output" in too_large.first_cpu_op.reason
    assert edgetpu_report(compiler_rule_breakers["mean_88"]).all_mapped  # 7744 values


def _index_of(report, name):
    return next(op.index for op in report.ops if op.name == name)


def test_clean_model_maps_completely(rule_breakers):
    report = edgetpu_report(rule_breakers["clean"])
    assert report.all_mapped
    assert report.first_cpu_op is None
    assert report.num_tpu_ops == report.num_ops > 0
    assert report.tpu_subgraphs == 1
    assert all(set(op.input_types) <= {"int8", "uint8", "int32"} for op in report.ops)


def test_a_lenient_export_returns_the_problems_a_strict_one_raises(tmp_path):
    # strict=False writes and returns the file; what its checks found comes
    # with it, so a caller (the study's latency run) need not check again.
    model, data = _small_model(keras.layers.Permute((2, 1, 3))), _calibration()
    with pytest.raises(ExportValidationError) as raised:
        to_tflite(model, tmp_path / "strict.tflite", "edgetpu", data)
    lenient = to_tflite(model, tmp_path / "lenient.tflite", "edgetpu", data, strict=False)
    assert lenient.problems == raised.value.problems
    assert any("would run on the CPU" in problem for problem in lenient.problems)
    assert to_tflite(_small_model(), tmp_path / "clean.tflite", "edgetpu", data).problems == ()


def test_transpose_in_the_middle_sends_the_rest_to_cpu(rule_breakers):
    report = edgetpu_report(rule_breakers["transpose"])
    position = _index_of(report, "TRANSPOSE")
    assert 0 < position < report.num_ops - 1  # really in the middle
    assert report.first_cpu_op.index == position
    assert report.first_cpu_op.status == NOT_SUPPORTED
    assert "not in the Edge TPU op table" in report.first_cpu_op.reason
    # Before it: on the Edge TPU; after it: on the CPU although supported.
    assert all(op.mapped for op in report.ops[:position])
    assert {op.status for op in report.ops[position + 1 :]} == {AFTER_PARTITION}
    assert (report.num_tpu_ops, report.num_cpu_ops) == (position, report.num_ops - position)
    assert not report.all_mapped
    text = str(report)
    assert f"ops predicted on Edge TPU: {position} / CPU: {report.num_ops - position}" in text
    assert "Predicted on CPU: Operation not supported" in text
    assert f"edgetpu_compiler --show_operations {report.path}" in text
    assert f"CPU fallback starts at op #{position} (TRANSPOSE)" in text


def test_float_op_in_the_middle_is_where_the_fallback_starts(rule_breakers):
    report = edgetpu_report(rule_breakers["float_op"])
    names = [op.name for op in report.ops]
    assert "SIN" in names and "DEQUANTIZE" in names
    first = report.first_cpu_op
    # The float island starts with the DEQUANTIZE feeding the float SIN.
    assert first.index == names.index("DEQUANTIZE") > 0
    assert first.output_types == ("float32",)
    assert all(op.mapped for op in report.ops[: first.index])
    # Ops that cannot map on their own keep their reason after the partition.
    sine = report.ops[names.index("SIN")]
    assert sine.status == NOT_SUPPORTED and sine.input_types == ("float32",)
    assert report.ops[-2].status == AFTER_PARTITION  # e.g. the SOFTMAX
    assert report.unsupported_ops[0].name == "DEQUANTIZE"
    assert {op.name for op in report.unsupported_ops} >= {"DEQUANTIZE", "SIN"}


def test_float_model_runs_on_cpu_from_the_first_op(rule_breakers):
    report = edgetpu_report(rule_breakers["float"])
    assert report.first_cpu_op.index == 0
    assert report.first_cpu_op.status == UNSUPPORTED_TYPE
    assert "float32" in report.first_cpu_op.reason
    assert report.num_tpu_ops == 0 and report.tpu_subgraphs == 0


def test_dynamic_batch_is_flagged(rule_breakers):
    report = edgetpu_report(rule_breakers["dynamic_batch"])
    assert report.first_cpu_op.index == 0
    assert report.first_cpu_op.status == DYNAMIC_SHAPE
    assert "-1" in report.first_cpu_op.reason
    assert report.num_tpu_ops == 0


def test_batch_above_one_breaks_the_innermost_dims_rule(rule_breakers):
    report = edgetpu_report(rule_breakers["batch_4"])
    assert report.first_cpu_op.index == 0
    assert report.first_cpu_op.status == UNSUPPORTED_RANK
    assert "[4, 8, 8, 3]" in report.first_cpu_op.reason


# -- per-op limits on synthetic graphs (no conversion needed) ---------------------


class _Options:
    def __init__(self, **fields):
        self.__dict__.update(fields)


def _graph(op_name, input_shape, params=None, options=None, output_shape=None):
    """A one-op int8 graph: input tensor 0, optional int32 constant 1, output 2."""
    tensors = [
        TFLiteTensor(0, "x", "int8", input_shape, input_shape, False),
        TFLiteTensor(1, "params", "int32", np.shape(params), np.shape(params), True),
        TFLiteTensor(
            2, "y", "int8", output_shape or input_shape, output_shape or input_shape, False
        ),
    ]
    inputs = (0, 1) if params is not None else (0,)
    op = TFLiteOp(0, op_name, inputs, (2,), options)
    constants = {1: np.asarray(params, np.int32)} if params is not None else {}
    return TFLiteGraph("synthetic", tuple(tensors), (op,), (0,), (2,), 1, constants)


@pytest.mark.parametrize(
    "graph, fragment",
    [
        (_graph("MEAN", (1, 4, 4, 8), params=[0]), "batch dimension"),
        (_graph("MEAN", (1, 4, 4, 6), params=[3]), "multiple of 4"),
        (_graph("PAD", (1, 4, 4, 8), params=[[1, 1], [0, 0], [1, 1], [0, 0]]), "batch"),
        (_graph("SOFTMAX", (1, 20000)), "more than 16000"),
        (_graph("SOFTMAX", (1, 4, 10)), "not one-dimensional"),
        (
            _graph("MAX_POOL_2D", (1, 4, 4, 8), options=_Options(fusedActivationFunction=3)),
            "fused RELU6",
        ),
        (
            _graph("CONV_2D", (1, 4, 4, 8), options=_Options(dilationHFactor=2, dilationWFactor=1)),
            "dilation",
        ),
    ],
)
def test_per_op_limits(graph, fragment):
    report = report_for_graph(graph)
    (op,) = report.ops
    assert op.status == LIMITATION
    assert fragment in op.reason


@pytest.mark.parametrize(
    "graph",
    [
        _graph("MEAN", (1, 4, 4, 8), params=[1, 2]),
        _graph("PAD", (1, 4, 4, 8), params=[[0, 0], [1, 1], [1, 1], [0, 0]]),
        _graph("SOFTMAX", (1, 10)),
        _graph("MAX_POOL_2D", (1, 4, 4, 8), options=_Options(fusedActivationFunction=0)),
    ],
)
def test_ops_within_their_limits_map(graph):
    assert report_for_graph(graph).ops[0].status == MAPPED


def test_ops_missing_from_the_table_do_not_map():
    for name in ("HARD_SWISH", "TRANSPOSE", "DEQUANTIZE"):
        assert report_for_graph(_graph(name, (1, 4, 4, 8))).ops[0].status == NOT_SUPPORTED


# -- bad files ------------------------------------------------------------------


def test_corrupt_files_get_a_clear_error(tmp_path, rule_breakers):
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"this is not a flatbuffer at all")
    with pytest.raises(ValueError, match=r"garbage\.tflite.*not a TFLite model.*TFL3"):
        edgetpu_report(garbage)
    with open(rule_breakers["clean"], "rb") as f:
        content = f.read()
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(content[: len(content) // 3])
    with pytest.raises(ValueError, match=r"truncated\.tflite.*corrupt or truncated"):
        edgetpu_report(truncated)
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        edgetpu_report(tmp_path / "missing.tflite")


# -- the compiler's log -----------------------------------------------------------

# Written after the format Coral documents for `edgetpu_compiler -s`.
COMPILER_LOG = textwrap.dedent(
    """\
    Edge TPU Compiler version 16.0.384591198
    Started a compilation timeout timer of 180 seconds.

    Model compiled successfully in 352 ms.

    Input model: model.tflite
    Input size: 676.34KiB
    Output model: model_edgetpu.tflite
    Output size: 812.70KiB
    On-chip memory used for caching model parameters: 612.25KiB
    On-chip memory remaining for caching model parameters: 7.13MiB
    Off-chip memory used for streaming uncached model parameters: 0.00B
    Number of Edge TPU subgraphs: 1
    Total number of operations: 46
    Operation log: model_edgetpu.log

    Model successfully compiled but not all operations are supported by the Edge TPU.
    Number of operations that will run on Edge TPU: 27
    Number of operations that will run on CPU: 19

    Operator                       Count      Status

    QUANTIZE                       1          Mapped to Edge TPU
    CONV_2D                        15         Mapped to Edge TPU
    DEPTHWISE_CONV_2D              7          Mapped to Edge TPU
    ADD                            3          Mapped to Edge TPU
    MEAN                           1          Mapped to Edge TPU
    HARD_SWISH                     2          Operation not supported
    CONV_2D                        16         More than one subgraph is not supported
    QUANTIZE                       1          More than one subgraph is not supported
    """
)


def test_compiler_log_parses_into_the_report_type():
    report = parse_edgetpu_compiler_log(COMPILER_LOG, "model.tflite")
    assert report.source == "edgetpu_compiler"
    assert (report.num_tpu_ops, report.num_cpu_ops) == (27, 19)
    assert report.tpu_subgraphs == 1
    assert [op.name for op in report.unsupported_ops] == ["HARD_SWISH", "HARD_SWISH"]
    assert report.rows()[5] == ("HARD_SWISH", 2, NOT_SUPPORTED)
    assert "ops on Edge TPU: 27 / CPU: 19" in report.format()
    with pytest.raises(ValueError, match="Operator Count Status"):
        parse_edgetpu_compiler_log("Edge TPU Compiler version 16\nInvalid model.", "m.tflite")


def test_run_edgetpu_compiler_uses_the_compiler_on_path(tmp_path, monkeypatch, rule_breakers):
    # A stand-in with the real compiler's command line and output format.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "log.txt").write_text(COMPILER_LOG)
    script = bin_dir / "edgetpu_compiler"
    script.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            # usage: edgetpu_compiler --show_operations --out_dir DIR MODEL
            out_dir="$3"; model="$4"; stem=$(basename "$model" .tflite)
            cp "$model" "$out_dir/${{stem}}_edgetpu.tflite"
            cat {tmp_path / "log.txt"}
            """
        )
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir), prepend=os.pathsep)
    out_dir = tmp_path / "compiled"
    out_dir.mkdir()
    report = run_edgetpu_compiler(rule_breakers["clean"], out_dir)
    assert report.source == "edgetpu_compiler"
    assert report.num_tpu_ops == 27
    assert report.compiled_path == str(out_dir / "clean_edgetpu.tflite")
    assert os.path.isfile(report.compiled_path)


def test_run_edgetpu_compiler_without_compiler(tmp_path, monkeypatch, rule_breakers):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not on PATH.*edgetpu_report"):
        run_edgetpu_compiler(rule_breakers["clean"])


# -- command line -----------------------------------------------------------------


def test_cli_prints_the_table_and_exits_1_when_ops_fall_back(rule_breakers):
    done = subprocess.run(
        [sys.executable, "-m", "keras_metapool.export", rule_breakers["transpose"]],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    assert "RuntimeWarning" not in done.stderr  # the package does not import the module twice
    report = edgetpu_report(rule_breakers["transpose"])
    assert "Operator                       Count      Status" in done.stdout
    assert f"TRANSPOSE                      1          Predicted on CPU: {NOT_SUPPORTED}" in (
        done.stdout
    )
    assert (
        f"ops predicted on Edge TPU: {report.num_tpu_ops} / CPU: {report.num_cpu_ops}"
        in done.stdout
    )


def test_cli_main_exit_status(rule_breakers, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler
    assert edgetpu_program.main(["prog", rule_breakers["clean"]]) == 0
    assert "All ops are predicted on the Edge TPU by the documented op rules" in (
        capsys.readouterr().out
    )
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\0" * 64)
    assert edgetpu_program.main(["prog", str(bad)]) == 2
    assert "bad.tflite" in capsys.readouterr().err
    assert edgetpu_program.main(["prog", rule_breakers["clean"]], compile_model=True) == 2
    assert "not on PATH" in capsys.readouterr().err

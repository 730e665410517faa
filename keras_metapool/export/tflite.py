"""TFLite export: float, dynamic-range, full-integer and Edge TPU-ready models."""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np
import tensorflow as tf
from absl import logging

from keras_metapool import _internals, _quiet
from keras_metapool._layer_facts import UNSETTLED_BATCH_NORM
from keras_metapool._model_checks import require_float32_model
from keras_metapool.data.samples import DEFAULT_CALIBRATION_SAMPLES, calibration_samples
from keras_metapool.export import exportable
from keras_metapool.export.edgetpu import edgetpu_report
from keras_metapool.export.evaluate import TFLiteRunner
from keras_metapool.export.tflite_graph import read_tflite_graph, with_signature

__all__ = [
    "DEFAULT_CALIBRATION_SAMPLES",
    "TFLITE_MODES",
    "ExportValidationError",
    "TFLiteExport",
    "TensorDetails",
    "calibration_samples",
    "FLOAT_KERNEL_MODES",
    "full_integer_problems",
    "to_tflite",
]

#: Export modes of ``to_tflite``.
TFLITE_MODES = ("float", "dynamic", "int8", "uint8", "edgetpu")
#: Modes that quantize every tensor to 8 bits and need representative data.
FULL_INTEGER_MODES = ("int8", "uint8", "edgetpu")
#: Modes whose activations stay float: not what a quantization-aware model gives.
FLOAT_KERNEL_MODES = tuple(mode for mode in TFLITE_MODES if mode not in FULL_INTEGER_MODES)
#: Calibration images the exported file is run on to catch a constant output.
CONSTANT_CHECK_SAMPLES = 32
# The Edge TPU compiler needs static sizes, so the edgetpu mode fixes batch 1.
_EDGETPU_BATCH = 1
_IO_TYPES = {"int8": tf.int8, "uint8": tf.uint8, "edgetpu": tf.uint8}
_EIGHT_BIT = ("int8", "uint8")


class ExportValidationError(ValueError):
    """A converted model failed the checks of its export mode.

    Attributes:
        path: Where the (invalid) model was written, for inspection.
        problems: One line per problem found.
    """

    def __init__(self, message, path, problems):
        super().__init__(message)
        self.path = path
        self.problems = tuple(problems)


@dataclasses.dataclass(frozen=True)
class TensorDetails:
    """An input or output of a .tflite model.

    Attributes:
        name: Its signature name (``"images"``, ``"probabilities"``, ...).
        shape: Shape with -1 for a dynamic size (the shape signature).
        dtype: ``"float32"``, ``"int8"`` or ``"uint8"``.
        scale: Quantization scale (0.0 for a float tensor).
        zero_point: Quantization zero point (0 for a float tensor).
    """

    name: str
    shape: tuple
    dtype: str
    scale: float = 0.0
    zero_point: int = 0


@dataclasses.dataclass(frozen=True)
class TFLiteExport:
    """What ``to_tflite`` wrote.

    Attributes:
        path: The .tflite file.
        mode: The export mode.
        size_bytes: File size.
        input: ``TensorDetails`` of the image input.
        output: ``TensorDetails`` of the output.
        num_ops: Number of ops in the graph.
        edgetpu_report: The Edge TPU report (``EdgeTPUReport``) for the
            full-integer modes, else None.
        problems: What the mode's checks found, one line each: empty for a
            file that passed them (with ``strict=True`` a problem raises
            ``ExportValidationError`` instead).
    """

    path: str
    mode: str
    size_bytes: int
    input: TensorDetails
    output: TensorDetails
    num_ops: int
    edgetpu_report: object = None
    problems: tuple = ()

    def __fspath__(self):
        return self.path


def to_tflite(
    model,
    path,
    mode="int8",
    representative_data=None,
    num_calibration_samples=DEFAULT_CALIBRATION_SAMPLES,
    batch_size=None,
    strict=True,
):
    """Converts a Keras model to a .tflite file and checks the result.

    The modes:

    | mode | weights | activations | input / output | batch |
    |---|---|---|---|---|
    | ``"float"`` | float32 | float32 | float32 | dynamic |
    | ``"dynamic"`` | int8 | float32 (int8 kernels at run time) | float32 | dynamic |
    | ``"int8"`` | int8 | int8 | int8 | dynamic |
    | ``"uint8"`` | int8 | int8 | uint8 | dynamic |
    | ``"edgetpu"`` | int8 | int8 | uint8 | 1 (static) |

    ``batch_size`` fixes the batch of any mode. A QAT model (from
    ``keras_metapool.quantization.quantize_model``) converts with the ranges it
    learned; it still needs representative data for the full-integer modes
    (otherwise ops of custom layers stay float).

    A search model (``meta_pooling="search"``) whose points are all fixed is
    exported as its lean fixed model (``keras_metapool.search.to_fixed_model``):
    no unused candidate op reaches the file.

    After conversion the file is checked: in the full-integer modes every
    activation tensor is int8/uint8 (constants int8, or int32 for biases and
    shape parameters) and the input/output have the requested type; in the
    ``"edgetpu"`` mode the input is ``[1, H, W, C]`` uint8, no size is
    dynamic, FULLY_CONNECTED weights have one scale per tensor (the other
    full-integer modes keep TensorFlow's per-channel weights), and every op is
    predicted to map to the Edge TPU by the documented rules, op versions
    included (``edgetpu_report``). ``edgetpu_compiler``, where installed, compiles the
    result (``run_edgetpu_compiler``).

    Args:
        model: A single-input, single-output model: tf_keras (e.g. a
            MobileNetV2MP, or its QAT model from
            ``keras_metapool.quantize_model``) or Keras 3 on the TensorFlow
            backend (e.g. from ``keras_metapool.keras3.quantize_model``).
        path: The .tflite file to write. Its folder must exist.
        mode: One of ``TFLITE_MODES``.
        representative_data: Calibration images for the full-integer modes,
            preprocessed exactly as the model's input (MobileNetV2MP:
            float32 in [-1, 1], see ``keras_metapool.preprocess_input``):
            a ``tf.data.Dataset`` of images or of ``(images, labels)``
            (batched or not), a NumPy array ``(N, H, W, C)``, or an iterable
            / generator / zero-argument callable yielding such batches,
            single images or ``(images, labels)`` tuples. Ignored by the
            ``"float"`` and ``"dynamic"`` modes.
        num_calibration_samples: At most this many images are taken from
            ``representative_data`` (default 128).
        batch_size: None (dynamic batch; ``"edgetpu"``: 1) or a fixed
            batch size.
        strict: If True (default), a model that fails the checks raises
            ``ExportValidationError``; if False, the problems are logged as a
            warning. Either way the file is written.

    Returns:
        A ``TFLiteExport`` (path, mode, size, input/output details, the Edge
        TPU report); ``os.fspath()`` of it is the path.

    Raises:
        ValueError: for an unknown mode, missing or unusable representative
            data, a bad ``batch_size``, a model that is not a single-input
            float32 model (mixed precision is refused; a Keras 3 model must
            run on the TensorFlow backend), a model with NaN or infinite
            weights (diverged training), a search model with unfixed points,
            or a quantization-aware model in ``"float"``/``"dynamic"`` mode
            (its file would be int8 inside).
        FileNotFoundError: if the folder of ``path`` does not exist.
        ExportValidationError: (a ValueError) if ``strict`` and the converted
            model fails the checks of its mode; the file is kept for
            inspection.
    """
    if mode not in TFLITE_MODES:
        raise ValueError(f"Unknown mode {mode!r}. Valid modes: {', '.join(TFLITE_MODES)}.")
    path = exportable.check_output_path(path)
    batch_size = _resolve_batch_size(mode, batch_size)
    if mode in FULL_INTEGER_MODES and representative_data is None:
        raise _missing_data_error(mode)  # before the lean-model rebuild
    model = exportable.exportable_model(model)
    require_float32_model(model, "to_tflite", "TFLite has no float16 compute kernels")
    _require_finite_variables(model)
    if mode in FLOAT_KERNEL_MODES and exportable.is_quantization_aware(model):
        raise ValueError(
            f"mode={mode!r} on the quantization-aware model '{model.name}': the converter "
            "reads its fake-quant ops as quantization, so every mode gives int8 kernels and "
            f"the file would not be what {mode!r} says. Export it as 'int8', 'uint8' or "
            "'edgetpu'; for a float file, export the float model quantize_model started from."
        )
    input_shape = tuple(model.inputs[0].shape[1:])
    if mode == "edgetpu" and any(size is None for size in input_shape):
        raise ValueError(
            f"mode='edgetpu' needs a static input size, but the model's input is "
            f"{(None,) + input_shape}; build it with input_shape=(height, width, 3)."
        )
    samples = None
    if mode in FULL_INTEGER_MODES:
        samples = calibration_samples(representative_data, input_shape, num_calibration_samples)
    elif representative_data is not None:
        logging.info("to_tflite: mode=%r ignores representative_data.", mode)

    converter = _converter(model, batch_size)
    if mode != "float":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if samples is not None:
        converter.representative_dataset = lambda: ([sample] for sample in samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = _IO_TYPES[mode]
        converter.inference_output_type = _IO_TYPES[mode]
    if mode == "edgetpu":
        # TF >= 2.16 quantizes FULLY_CONNECTED weights per channel, a format
        # edgetpu_compiler 16 (2021) predates; this restores one scale per tensor.
        _internals.quantize_dense_weights_per_tensor(converter)
    with _quiet.native_stderr_held(_quiet.QUIET):  # the converter's C++ chatter
        with _internals.frozen_conversion_warning_silenced():
            flatbuffer = converter.convert()
    # The frozen conversion names no signature; the file's users read its names from one.
    flatbuffer = with_signature(
        flatbuffer, exportable.INPUT_NAME, exportable.classifier_output(model)
    )
    with open(path, "wb") as f:
        f.write(flatbuffer)
    result = _check_export(path, mode, batch_size, strict)
    if samples is not None:
        _warn_if_constant_outputs(path, samples)
    return result


class ConstantOutputWarning(UserWarning):
    """An exported model gives the same output for every representative image."""


def _warn_if_constant_outputs(path, samples, count=CONSTANT_CHECK_SAMPLES):
    """One ``ConstantOutputWarning`` when the file answers every calibration image alike."""
    images = np.concatenate([np.asarray(sample, np.float32) for sample in samples[:count]])
    if len(images) < 2:
        return
    outputs = TFLiteRunner(path).predict(images)  # the samples' range is checked already
    if np.all(outputs == outputs[:1]):
        warnings.warn(
            f"{os.path.basename(path)} gives the same output for all {len(images)} "
            "representative images: as a classifier it is useless. Likely causes: the Keras "
            f"model already predicts a constant (untrained; {UNSETTLED_BATCH_NORM}), or "
            "collapsed quantization ranges (a QAT model built without representative_data). "
            "Check the Keras model's predictions on the same images first.",
            ConstantOutputWarning,
            stacklevel=3,
        )


def _resolve_batch_size(mode, batch_size):
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise ValueError(f"`batch_size` must be None or a positive int, got {batch_size!r}.")
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be None or a positive int, got {batch_size!r}.")
        batch_size = int(batch_size)
    if mode == "edgetpu":
        if batch_size not in (None, _EDGETPU_BATCH):
            raise ValueError(
                f"mode='edgetpu' exports batch 1 (the Edge TPU needs static sizes and "
                f"runs one image at a time); got batch_size={batch_size}."
            )
        return _EDGETPU_BATCH
    return batch_size


def _converter(model, batch_size):
    """A converter for ``model`` with the given batch (names: ``with_signature``)."""
    input_spec = tf.TensorSpec(
        (batch_size, *model.inputs[0].shape[1:]), model.inputs[0].dtype, name=exportable.INPUT_NAME
    )

    @tf.function(input_signature=[input_spec])
    def serve(images):
        return model(images, training=False)

    # from_concrete_functions warns without a "trackable object" holding the
    # variables; the frozen route reads them from the function, so these suffice.
    variables = tf.Module()
    variables.model_variables = list(model.variables)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], variables
    )
    # Frozen, not saved and reloaded as a SavedModel: same ops and outputs, faster (_internals).
    _internals.convert_from_frozen_graph(converter)
    return converter


def _require_finite_variables(model):
    """Refuses NaN or infinite weights (or QAT ranges): the converter crashes on them."""
    broken = [v for v in model.variables if not np.all(np.isfinite(np.asarray(v)))]
    if broken:
        name = getattr(broken[0], "path", None) or broken[0].name
        raise ValueError(
            f"Model '{model.name}' holds NaN or infinite values in {len(broken)} of its "
            f"{len(model.variables)} variables (first: '{name}'): its training diverged (a "
            "loss of nan). TFLite cannot convert it. Train again from the last good weights, "
            "e.g. with a lower learning rate, or from a float model that learned (a model at "
            "chance, e.g. with unsettled BatchNormalization statistics, can blow up in QAT)."
        )


def _missing_data_error(mode):
    return ValueError(
        f"mode={mode!r} quantizes activations to 8 bits and needs "
        "representative_data to calibrate their ranges: about 100-200 training "
        "images preprocessed as the model's input (a tf.data.Dataset, a NumPy "
        "array (N, H, W, C) or a generator of batches). A QAT model needs it too."
    )


# -- checks after conversion ---------------------------------------------------


def _details(graph, names, index):
    tensor = graph.tensor(index)
    name = next((n for n, i in names.items() if i == index), tensor.name)
    return TensorDetails(
        name=name,
        shape=tensor.shape_signature,
        dtype=tensor.dtype,
        scale=tensor.scale[0] if tensor.scale else 0.0,
        zero_point=tensor.zero_point[0] if tensor.zero_point else 0,
    )


def full_integer_problems(graph, io_type):
    """Why ``graph`` is not a full-integer model with ``io_type`` input/output.

    Returns:
        A list of problem descriptions (empty when the model is full integer:
        every activation tensor int8/uint8, every constant int8/uint8 or
        int32, input and output of ``io_type``).
    """
    problems = []
    for tensor in graph.input_tensors + graph.output_tensors:
        if tensor.dtype != io_type:
            problems.append(
                f"model input/output '{tensor.name}' is {tensor.dtype}, expected {io_type}"
            )
    for op in graph.ops:
        for tensor in graph.op_tensors(op):
            allowed = _EIGHT_BIT + (("int32",) if tensor.is_constant else ())
            if tensor.dtype not in allowed:
                kind = "constant" if tensor.is_constant else "activation"
                problems.append(
                    f"op #{op.index} {op.name}: {kind} '{tensor.name}' is {tensor.dtype}"
                )
    return list(dict.fromkeys(problems))  # unique, in order


def _check_export(path, mode, batch_size, strict):
    graph = read_tflite_graph(path)
    problems = []
    report = None
    if mode in FULL_INTEGER_MODES:
        problems += full_integer_problems(graph, "int8" if mode == "int8" else "uint8")
        report = edgetpu_report(path)
    if batch_size is not None:
        for tensor in graph.input_tensors:
            if tensor.shape_signature[:1] != (batch_size,):
                problems.append(
                    f"input '{tensor.name}' has shape {list(tensor.shape_signature)}, "
                    f"expected batch {batch_size}"
                )
    if mode == "edgetpu":
        dynamic = [t for t in graph.tensors if t.is_dynamic]
        if dynamic:
            problems.append(
                f"{len(dynamic)} tensors have a dynamic size, e.g. '{dynamic[0].name}' "
                f"{list(dynamic[0].shape_signature)}"
            )
        if not report.all_mapped:
            first = report.first_cpu_op
            names = sorted({op.name for op in report.unsupported_ops})
            problems.append(
                f"{report.num_cpu_ops} of {report.num_ops} ops would run on the CPU: the "
                f"fallback starts at op #{first.index} {first.name} "
                f"({first.reason or first.status}); ops that cannot map: {', '.join(names)}"
            )
    if problems:
        shown = "\n  ".join(problems[:8])
        more = f"\n  ... and {len(problems) - 8} more" if len(problems) > 8 else ""
        message = (
            f"The mode={mode!r} export {path!r} fails its checks (the file is kept for "
            f"inspection; edgetpu_report() details the ops):\n  {shown}{more}"
        )
        if strict:
            raise ExportValidationError(message, path, problems)
        logging.warning("%s", message)
    return TFLiteExport(
        path=path,
        mode=mode,
        size_bytes=os.path.getsize(path),
        input=_details(graph, graph.signature_inputs, graph.inputs[0]),
        output=_details(graph, graph.signature_outputs, graph.outputs[0]),
        num_ops=len(graph.ops),
        edgetpu_report=report,
        problems=tuple(problems),
    )

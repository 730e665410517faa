"""Edge TPU compatibility report of a .tflite file, offline or from the compiler.

``edgetpu_report(path)`` predicts what Coral's ``edgetpu_compiler`` would map
to the Edge TPU, from the documented requirements (coral.ai "TensorFlow models
on the Edge TPU", recorded in the project's docs/platform.md), without the compiler,
which installs only from Coral's apt repository:

- every op must be in the Edge TPU op table and meet its per-op limits (no
  fused activation on pooling and concatenation, equal x/y dilation, no
  reduction or padding on the batch dimension, 1-D softmax of at most 16,000
  elements, stride-1 strided slices, ...); ops missing from the table, such as
  ``HARD_SWISH``, ``TRANSPOSE`` and ``DEQUANTIZE``, are not mappable;
- tensors are 8-bit (int8/uint8); constants may also be int32 (biases, axes,
  paddings);
- sizes are static (no ``-1`` in a shape signature: batch 1);
- a tensor of rank > 3 may have at most its 3 innermost dimensions > 1;
- the compiler partitions once: the first op that cannot be mapped, and every
  op after it (in execution order), run on the CPU;
- the compiler (version 16, 2021) parses only the operator versions that the
  TFLite of its day knew (``COMPILER_MAX_OP_VERSIONS``); a newer version makes
  it reject the model (google-coral/edgetpu #631, #845);
- FULLY_CONNECTED weights must be quantized per tensor (one scale): the
  compiler predates the per-channel format TensorFlow 2.21 writes by default;
- a MEAN over a large window may not map (google-coral/edgetpu #461).

Everything here is a prediction from those rules: the report says so, and
prints the ``edgetpu_compiler`` command that confirms it.

The result, an ``EdgeTPUReport``, prints as the compiler's familiar
"Operator / Count / Status" table. Where ``edgetpu_compiler`` is on PATH,
``run_edgetpu_compiler`` (``export/edgetpu_compiler.py``) runs it and parses
its log into the same type.

Command line::

    python -m keras_metapool.export model.tflite [--verbose] [--compile]

exits with status 0 when every op maps to the Edge TPU, 1 when some would run
on the CPU, and 2 when the file cannot be read.
"""

from __future__ import annotations

import collections
import dataclasses

from keras_metapool.export.tflite_graph import read_tflite_graph

__all__ = [
    "COMPILER_MAX_OP_VERSIONS",
    "EDGETPU_OPS",
    "EdgeTPUReport",
    "OpReport",
    "edgetpu_report",
    "report_for_graph",
]

# Status texts, worded as edgetpu_compiler words them in its operation log.
MAPPED = "Mapped to Edge TPU"
NOT_SUPPORTED = "Operation not supported"
UNSUPPORTED_TYPE = "Operation is working on an unsupported data type"
DYNAMIC_SHAPE = "Operation is working on a dynamic-sized tensor"
UNSUPPORTED_RANK = "Tensor has unsupported rank (up to 3 innermost dimensions mapped)"
LIMITATION = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
AFTER_PARTITION = "More than one subgraph is not supported"
# google-coral/edgetpu #396 shows the compiler's row for an op version it lacks.
VERSION_NOT_SUPPORTED = "Operation version not supported"

#: Tensor types the Edge TPU computes with.
EIGHT_BIT_TYPES = ("int8", "uint8")
#: Extra types a *constant* operand may have (biases, axes, paddings, shapes).
CONSTANT_PARAMETER_TYPES = ("int32",)
#: Largest softmax the Edge TPU maps.
MAX_SOFTMAX_ELEMENTS = 16000
#: The custom op a compiled model (``*_edgetpu.tflite``) runs on the Edge TPU.
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
#: Largest MEAN window (elements averaged per output value) predicted to map.
#: Not documented by Coral: in google-coral/edgetpu #461 (compiler 16) a MEAN
#: over 256x128 positions did not map and the same MEAN split into 64x128
#: windows did, so anything above 64 * 128 is predicted not to map.
MAX_MEAN_WINDOW = 64 * 128

#: Newest version of each Edge TPU op that Edge TPU compiler 16.0 (build
#: 384591198, 2021) is known to parse. Coral publishes no such list; these are
#: the maximum versions registered by TFLite's builtin op resolver of that time
#: (``tensorflow/lite/kernels/register.cc``, TensorFlow 2.5 era), the parser a
#: compiler of 2021 embeds. The table agrees with every version rejection on
#: record for compiler 16: CONV_2D v6 (google-coral/edgetpu #631; max here 5),
#: TRANSPOSE_CONV v4 (#845; not an Edge TPU op, max 3) and EXP v2
#: (google-coral/libedgetpu #71; max 1). An op version above its entry is
#: predicted to be rejected; an op without an entry is "unverified".
COMPILER_MAX_OP_VERSIONS = {
    "ADD": 3,
    "SUB": 5,
    "MUL": 4,
    "MAXIMUM": 4,
    "MINIMUM": 4,
    "LOGISTIC": 3,
    "TANH": 3,
    "RELU": 3,
    "RELU6": 3,
    "RELU_N1_TO_1": 1,
    "QUANTIZE": 2,
    "L2_NORMALIZATION": 2,
    "EXPAND_DIMS": 1,
    "AVERAGE_POOL_2D": 3,
    "MAX_POOL_2D": 3,
    "CONCATENATION": 3,
    "CONV_2D": 5,
    "DEPTHWISE_CONV_2D": 6,
    "FULLY_CONNECTED": 9,
    "MEAN": 3,
    "REDUCE_MAX": 3,
    "REDUCE_MIN": 3,
    "PAD": 3,
    "PACK": 3,
    "RESHAPE": 1,
    "RESIZE_BILINEAR": 4,
    "RESIZE_NEAREST_NEIGHBOR": 4,
    "SLICE": 5,
    "SOFTMAX": 3,
    "SPACE_TO_DEPTH": 2,
    "SPLIT": 4,
    "SQUEEZE": 2,
    "STRIDED_SLICE": 5,
    "PRELU": 1,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": 3,
    "LSTM": 4,
}


# -- per-op limits -------------------------------------------------------------
# Each returns the reason the op cannot map, or None.


def _no_fused_activation(op, graph):
    if op.fused_activation not in (None, "NONE"):
        return f"{op.name} has a fused {op.fused_activation} activation; the Edge TPU needs none"
    return None


def _concatenation(op, graph):
    reason = _no_fused_activation(op, graph)
    if reason:
        return reason
    constants = [graph.tensor(i) for i in op.inputs if i >= 0 and graph.tensor(i).is_constant]
    if constants and len(op.inputs) != 2:
        return "CONCATENATION with a constant input must have exactly 2 inputs"
    return None


def _equal_dilation(op, graph):
    options = op.options
    h = getattr(options, "dilationHFactor", 1) or 1
    w = getattr(options, "dilationWFactor", 1) or 1
    if h != w:
        return f"{op.name} dilation differs in x and y ({w} vs {h})"
    return None


def _fully_connected(op, graph):
    options = op.options
    if getattr(options, "weightsFormat", 0) not in (0, None):
        return "FULLY_CONNECTED weights are not in the default format"
    weights = graph.tensor(op.inputs[1]) if len(op.inputs) > 1 else None
    if weights is not None and len(weights.scale) > 1:
        # TF >= 2.16 quantizes dense weights per channel; compiler 16 predates it.
        return (
            f"FULLY_CONNECTED weights are quantized per channel ({len(weights.scale)} scales); "
            "the Edge TPU compiler needs one scale per tensor (to_tflite(mode='edgetpu') "
            "writes that)"
        )
    output = graph.tensor(op.outputs[0])
    if sum(size > 1 for size in output.shape) > 1:
        return f"FULLY_CONNECTED output {list(output.shape)} is not one-dimensional"
    return None


def _axes(op, graph, operand):
    """The normalised constant axes of ``op``'s operand, or a reason string."""
    axes = graph.constant(op.inputs[operand]) if len(op.inputs) > operand else None
    if axes is None:
        return f"{op.name} axes are not a compile-time constant"
    rank = len(graph.tensor(op.inputs[0]).shape)
    return sorted({int(a) % rank for a in axes.ravel()}) if rank else []


def _reduction(op, graph):
    axes = _axes(op, graph, 1)
    if isinstance(axes, str):
        return axes
    if 0 in axes:
        return f"{op.name} reduces the batch dimension"
    if op.name == "MEAN":
        shape = graph.tensor(op.inputs[0]).shape
        channel_axis = len(shape) - 1
        if channel_axis in axes and shape[channel_axis] % 4:
            return f"MEAN over the channels needs a multiple of 4 channels, got {shape[-1]}"
        window = 1
        for axis in axes:
            window *= shape[axis]
        if window > MAX_MEAN_WINDOW:
            return (
                f"MEAN averages {window} values per output (input {list(shape)}), more than "
                f"{MAX_MEAN_WINDOW}, the largest seen to map (google-coral/edgetpu #461)"
            )
    return None


def _pad(op, graph):
    paddings = graph.constant(op.inputs[1]) if len(op.inputs) > 1 else None
    if paddings is None:
        return "PAD paddings are not a compile-time constant"
    if paddings.size and paddings.reshape(-1, 2)[0].any():
        return "PAD pads the batch dimension"
    return None


def _pack(op, graph):
    axis = getattr(op.options, "axis", 0) or 0
    rank = len(graph.tensor(op.outputs[0]).shape)
    if rank and axis % rank == 0:
        return "PACK packs along the batch dimension"
    return None


def _softmax(op, graph):
    shape = graph.tensor(op.inputs[0]).shape
    elements = 1
    for size in shape:
        elements *= size
    if sum(size > 1 for size in shape) > 1:
        return f"SOFTMAX input {list(shape)} is not one-dimensional"
    if elements > MAX_SOFTMAX_ELEMENTS:
        return f"SOFTMAX has {elements} elements, more than {MAX_SOFTMAX_ELEMENTS}"
    return None


def _strided_slice(op, graph):
    strides = graph.constant(op.inputs[3]) if len(op.inputs) > 3 else None
    if strides is None or (strides != 1).any():
        return "STRIDED_SLICE strides are not all 1"
    options = op.options
    if getattr(options, "ellipsisMask", 0) or getattr(options, "newAxisMask", 0):
        return "STRIDED_SLICE has a non-zero ellipsis or new-axis mask"
    return None


def _squeeze(op, graph):
    shape = graph.tensor(op.inputs[0]).shape
    leading = 0
    while leading < len(shape) and shape[leading] == 1:
        leading += 1
    dims = list(getattr(op.options, "squeezeDims", None) or [])
    if dims:
        squeezed = [d % len(shape) for d in dims]
    else:  # no squeeze_dims: every size-1 dimension goes
        squeezed = [i for i, size in enumerate(shape) if size == 1]
    if any(d >= leading for d in squeezed):
        return "SQUEEZE removes a dimension that is not a leading 1"
    return None


def _prelu(op, graph):
    alpha = graph.tensor(op.inputs[1])
    if sum(size > 1 for size in alpha.shape[:-1]):
        return f"PRELU alpha {list(alpha.shape)} is not one-dimensional"
    return None


def _always(op, graph):
    return None


#: Builtin ops in the Edge TPU op table, each with its limit check.
EDGETPU_OPS = {
    "ADD": _always,
    "SUB": _always,
    "MUL": _always,
    "MAXIMUM": _always,
    "MINIMUM": _always,
    "LOGISTIC": _always,
    "TANH": _always,
    "RELU": _always,
    "RELU6": _always,
    "RELU_N1_TO_1": _always,
    "QUANTIZE": _always,
    "L2_NORMALIZATION": _always,
    "EXPAND_DIMS": _always,
    "AVERAGE_POOL_2D": _no_fused_activation,
    "MAX_POOL_2D": _no_fused_activation,
    "CONCATENATION": _concatenation,
    "CONV_2D": _equal_dilation,
    "DEPTHWISE_CONV_2D": _equal_dilation,
    "FULLY_CONNECTED": _fully_connected,
    "MEAN": _reduction,
    "REDUCE_MAX": _reduction,
    "REDUCE_MIN": _reduction,
    "PAD": _pad,
    "PACK": _pack,
    # Large reshapes and resizes may still not map; the compiler decides.
    "RESHAPE": _always,
    "RESIZE_BILINEAR": _always,
    "RESIZE_NEAREST_NEIGHBOR": _always,
    "SLICE": _always,
    "SOFTMAX": _softmax,
    "SPACE_TO_DEPTH": _always,
    "SPLIT": _always,
    "SQUEEZE": _squeeze,
    "STRIDED_SLICE": _strided_slice,
    "PRELU": _prelu,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": _always,
    "LSTM": _always,
}


# -- result types ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OpReport:
    """Where one op would run.

    Attributes:
        index: Position in execution order, or None when parsed from a
            compiler log (which gives counts, not positions).
        name: Op name (``"CONV_2D"``, ...).
        status: The compiler-style status (``"Mapped to Edge TPU"``,
            ``"Operation not supported"``, ...).
        reason: Why the op is not mapped ("" when it is).
        input_types: Types of the input tensors (omitted inputs skipped).
        output_types: Types of the output tensors.
        version: The op's version in the file (None from a compiler log).
        version_known: Whether ``COMPILER_MAX_OP_VERSIONS`` has the op, so
            that its version could be checked (False: "unverified").
    """

    index: int | None
    name: str
    status: str
    reason: str = ""
    input_types: tuple = ()
    output_types: tuple = ()
    version: int | None = None
    version_known: bool = True

    @property
    def mapped(self):
        """Whether the op runs on the Edge TPU."""
        return self.status == MAPPED


@dataclasses.dataclass(frozen=True)
class EdgeTPUReport:
    """Edge TPU mapping of a model, per op.

    Attributes:
        path: The .tflite file reported on.
        ops: One ``OpReport`` per op (in execution order for a rules report).
        source: ``"rules"`` (predicted offline from the documented
            requirements) or ``"edgetpu_compiler"`` (parsed from its log).
        tpu_subgraphs: Number of Edge TPU subgraphs (0 or 1: the compiler
            partitions once).
        log: The compiler's log text, for a compiler report.
        compiled_path: The ``*_edgetpu.tflite`` the compiler wrote, if any.
    """

    path: str
    ops: tuple
    source: str = "rules"
    tpu_subgraphs: int = 0
    log: str | None = None
    compiled_path: str | None = None

    @property
    def num_ops(self):
        """Number of ops in the model."""
        return len(self.ops)

    @property
    def num_tpu_ops(self):
        """Number of ops that run on the Edge TPU."""
        return sum(op.mapped for op in self.ops)

    @property
    def num_cpu_ops(self):
        """Number of ops that run on the CPU."""
        return self.num_ops - self.num_tpu_ops

    @property
    def all_mapped(self):
        """Whether the whole model runs on the Edge TPU, as one subgraph."""
        return self.num_ops > 0 and self.num_cpu_ops == 0 and self.tpu_subgraphs == 1

    @property
    def mapped_fraction(self):
        """Fraction of the ops that run on the Edge TPU (0.0 for no ops)."""
        return self.num_tpu_ops / self.num_ops if self.num_ops else 0.0

    @property
    def first_cpu_op(self):
        """The op where the CPU fallback starts (the first unmapped op), or None."""
        return next((op for op in self.ops if not op.mapped), None)

    @property
    def unverified_versions(self):
        """``{op name: version}`` of ops whose version could not be checked."""
        return {op.name: op.version for op in self.ops if not op.version_known}

    @property
    def unsupported_ops(self):
        """The ops that cannot map on their own (not merely after the partition)."""
        return tuple(op for op in self.ops if op.status not in (MAPPED, AFTER_PARTITION))

    def rows(self):
        """``[(operator, count, status)]`` as in the compiler's operation log.

        One row per (op name, status), in order of first appearance.
        """
        counts = collections.Counter((op.name, op.status) for op in self.ops)
        return [(name, count, status) for (name, status), count in counts.items()]

    def format(self, verbose=False):
        """The report as text: the Operator/Count/Status table and the totals.

        Args:
            verbose: Also list every op that cannot map on its own, with its
                reason and tensor types.
        """
        predicted = self.source != "edgetpu_compiler"
        how = (
            "edgetpu_compiler log"
            if not predicted
            else "predicted from the documented Edge TPU requirements, without the compiler"
        )
        lines = [f"Edge TPU report for {self.path} ({how})", ""]
        lines.append(f"{'Operator':<30} {'Count':<10} Status")
        lines.append("")
        for name, count, status in self.rows():
            if predicted:
                status = (
                    "Predicted on the Edge TPU"
                    if status == MAPPED
                    else f"Predicted on CPU: {status}"
                )
            lines.append(f"{name:<30} {count:<10} {status}")
        lines.append("")
        where = "predicted on" if predicted else "on"
        lines.append(f"ops {where} Edge TPU: {self.num_tpu_ops} / CPU: {self.num_cpu_ops}")
        lines.append(f"Edge TPU subgraphs: {self.tpu_subgraphs}")
        first = self.first_cpu_op
        if first is not None and first.index is not None:
            detail = f": {first.reason}" if first.reason else ""
            lines.append(
                f"CPU fallback starts at op #{first.index} ({first.name}), {first.status}{detail}"
            )
        elif self.all_mapped and not predicted:
            lines.append("The compiler mapped every op to the Edge TPU.")
        elif self.all_mapped:
            lines.append(
                "All ops are predicted on the Edge TPU by the documented op rules "
                "(edgetpu_compiler has the last word)."
            )
        if predicted:
            unverified = self.unverified_versions
            if unverified:
                listed = ", ".join(f"{name} v{version}" for name, version in unverified.items())
                lines.append(f"Op versions unverified (no known compiler limit): {listed}")
            elif self.ops:
                lines.append("Op versions: all within what edgetpu_compiler 16 is known to parse.")
            lines.append(
                f"Confirm with Coral's compiler: edgetpu_compiler --show_operations {self.path}"
                f"  (or: python -m keras_metapool.export --compile {self.path})"
            )
        if verbose and self.unsupported_ops:
            lines.append("")
            lines.append("Ops that cannot map (the others on the CPU only follow them):")
            for op in self.unsupported_ops:
                where = "" if op.index is None else f"#{op.index} "
                types = f" in {list(op.input_types)} out {list(op.output_types)}"
                lines.append(f"  {where}{op.name}: {op.reason or op.status}{types}")
        return "\n".join(lines)

    def __str__(self):
        return self.format()


# -- the offline report ----------------------------------------------------------


def _tensor_problem(op, graph):
    """(status, reason) for the first tensor rule ``op`` breaks, or None."""
    tensors = graph.op_tensors(op)
    for tensor in tensors:
        allowed = EIGHT_BIT_TYPES + (CONSTANT_PARAMETER_TYPES if tensor.is_constant else ())
        if tensor.dtype not in allowed:
            kind = "constant" if tensor.is_constant else "tensor"
            return UNSUPPORTED_TYPE, (
                f"{kind} '{tensor.name}' is {tensor.dtype}; the Edge TPU needs int8/uint8"
                + (" (int32 for constant biases and parameters)" if tensor.is_constant else "")
            )
    for tensor in tensors:
        if tensor.is_dynamic:
            return DYNAMIC_SHAPE, (
                f"tensor '{tensor.name}' has dynamic shape {list(tensor.shape_signature)}; "
                "the Edge TPU needs static sizes (batch 1)"
            )
    for tensor in tensors:
        if not tensor.is_constant and any(size > 1 for size in tensor.shape[:-3]):
            return UNSUPPORTED_RANK, (
                f"tensor '{tensor.name}' has shape {list(tensor.shape)}: only the 3 innermost "
                "dimensions may be larger than 1"
            )
    return None


def _check_op(op, graph):
    """(status, reason) of ``op`` judged on its own."""
    if op.is_custom and op.name == EDGETPU_CUSTOM_OP:
        return MAPPED, ""  # already compiled for the Edge TPU
    check = EDGETPU_OPS.get(op.name)
    if check is None:
        return NOT_SUPPORTED, f"{op.name} is not in the Edge TPU op table"
    newest = COMPILER_MAX_OP_VERSIONS.get(op.name)
    if newest is not None and op.version > newest:
        return VERSION_NOT_SUPPORTED, (
            f"{op.name} version {op.version} is newer than version {newest}, the newest "
            "edgetpu_compiler 16 is known to parse; the compiler may reject the whole model "
            "(google-coral/edgetpu #631, #845)"
        )
    problem = _tensor_problem(op, graph)
    if problem:
        return problem
    reason = check(op, graph)
    if reason:
        return LIMITATION, reason
    return MAPPED, ""


def edgetpu_report(tflite_path):
    """Predicts which ops of a .tflite model the Edge TPU compiler would map.

    Reads the flatbuffer (no interpreter, no compiler) and applies the
    documented Edge TPU requirements listed in the module docstring. The
    prediction is conservative where the documentation says an op "may not
    map" (large reshapes and resizes count as mapped; the compiler has the
    last word).

    Args:
        tflite_path: Path of a ``.tflite`` file.

    Returns:
        An ``EdgeTPUReport`` (``source="rules"``): per op in execution order,
        its status and reason; ``print(report)`` shows the Operator / Count /
        Status table and ``ops predicted on Edge TPU: N / CPU: M``.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if it is not a readable TFLite model (the message names
            the file).

    Example:
        >>> report = edgetpu_report("model_edgetpu_ready.tflite")  # doctest: +SKIP
        >>> report.all_mapped, report.first_cpu_op
        (True, None)
    """
    return report_for_graph(read_tflite_graph(tflite_path))


def report_for_graph(graph):
    """``edgetpu_report`` of an already parsed ``TFLiteGraph``."""
    # Only the main subgraph is listed: control-flow bodies live in further
    # subgraphs, and the ops calling them (WHILE, IF) are not in the table.
    ops, partition_ended = [], False
    for op in graph.ops:
        status, reason = _check_op(op, graph)
        if status == MAPPED and partition_ended:
            status, reason = AFTER_PARTITION, "runs on the CPU after the first unmapped op"
        partition_ended = partition_ended or status != MAPPED
        ops.append(
            OpReport(
                index=op.index,
                name=op.name,
                status=status,
                reason=reason,
                input_types=tuple(graph.tensor(i).dtype for i in op.inputs if i >= 0),
                output_types=tuple(graph.tensor(i).dtype for i in op.outputs if i >= 0),
                version=op.version,
                version_known=op.name in COMPILER_MAX_OP_VERSIONS
                or (op.is_custom and op.name == EDGETPU_CUSTOM_OP),
            )
        )
    tpu_subgraphs = 1 if any(op.status == MAPPED for op in ops) else 0
    return EdgeTPUReport(path=graph.path, ops=tuple(ops), tpu_subgraphs=tpu_subgraphs)

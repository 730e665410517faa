"""``keras-metapool export``: TFLite files, a SavedModel and the Edge TPU report."""

from __future__ import annotations

import dataclasses
import os

from keras_metapool.cli import console, files, training
from keras_metapool.cli.options import UsageError
from keras_metapool.cli.qat_cmd import options_for_model
from keras_metapool.export.edgetpu import edgetpu_report
from keras_metapool.export.exportable import is_quantization_aware
from keras_metapool.export.saved_model import export_saved_model
from keras_metapool.export.tflite import (
    FLOAT_KERNEL_MODES,
    FULL_INTEGER_MODES,
    ExportValidationError,
    to_tflite,
)


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What ``export`` wrote.

    Attributes:
        paths: ``{format: path}`` of every output written.
        exports: ``{mode: TFLiteExport}`` of the .tflite files (paths final).
        edgetpu_reports: ``{mode: EdgeTPUReport}`` of the full-integer files.
        report_path: ``edgetpu_report.txt`` (None without full-integer files).
        summary_path: ``export.json``: files, sizes, inputs/outputs, Edge
            TPU mapping.
    """

    paths: dict
    exports: dict
    edgetpu_reports: dict
    report_path: str | None
    summary_path: str


def _tensor(details):
    return dataclasses.asdict(details) if details is not None else None


def export_tflite(model, path, mode, representative_data):
    """``to_tflite`` through a temporary file; returns its ``TFLiteExport`` at ``path``.

    A file that fails the checks of its mode is still moved to ``path`` for
    inspection, and the error names it.
    """
    tmp = files.temporary_path(path)
    try:
        result = to_tflite(model, tmp, mode=mode, representative_data=representative_data)
    except ExportValidationError as error:
        files.replace(tmp, path)
        problems = "; ".join(error.problems[:3]) + ("; ..." if len(error.problems) > 3 else "")
        raise ValueError(
            f"the {mode} export failed its checks ({problems}); the file is kept at {path}"
        ) from error
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    files.replace(tmp, path)
    report = edgetpu_report(path) if result.edgetpu_report is not None else None
    return dataclasses.replace(result, path=path, edgetpu_report=report)


def export(options, strategy=None):
    """Writes ``--formats`` of ``--model`` to ``output_dir``, with the Edge TPU report.

    ``float``, ``dynamic``, ``int8``, ``uint8`` and ``edgetpu`` become
    ``model_MODE.tflite`` (``keras_metapool.export.to_tflite``; the
    full-integer modes are calibrated on ``calibration_samples`` training
    images, at most 128), ``saved_model`` the folder ``saved_model/``
    (``export_saved_model``, signature ``serving_default``: images ->
    probabilities, logits). For every full-integer file the offline Edge TPU
    report (``edgetpu_report``) is printed and saved to
    ``edgetpu_report.txt``. A QAT model (from ``qat``) converts with the
    ranges it learned, in the full-integer modes only: ``float`` and
    ``dynamic`` are skipped with a note (its fake-quant ops make every file
    int8 inside), and asking for nothing else is a ``UsageError``.

    Args:
        options: ``keras_metapool.cli.Options`` (``model``, ``formats``).
        strategy: Unused (conversion runs on one device); for a uniform
            signature.

    Returns:
        An ``ExportResult``.
    """
    del strategy
    model = training.load_model(options.model)
    options = options_for_model(options, model)
    quantization_aware = is_quantization_aware(model)
    formats = _formats_for(options.formats, quantization_aware)
    folder = options.output_dir
    os.makedirs(folder, exist_ok=True)
    files.remove_stale_temporaries(folder)
    representative = None
    if any(mode in FULL_INTEGER_MODES for mode in formats):
        representative = training.calibration_images(options)
    console.say(
        f"export: {options.model} ({model.name}, "
        f"{'quantization-aware' if quantization_aware else 'float'}) -> "
        f"{', '.join(formats)}"
    )
    paths, exports, reports = {}, {}, {}
    for mode in formats:
        if mode == "saved_model":
            path = os.path.join(folder, "saved_model")
            with files.atomic_output(path) as tmp:
                export_saved_model(model, tmp, include_preprocessing=options.include_preprocessing)
            paths[mode] = path
            console.say(f"  saved_model   {path}")
            continue
        path = os.path.join(folder, f"model_{mode}.tflite")
        result = export_tflite(model, path, mode, representative)
        paths[mode], exports[mode] = path, result
        console.say(
            f"  {mode:<13} {path}  ({console.size_text(result.size_bytes)}, input "
            f"{result.input.dtype}{list(result.input.shape)}, {result.num_ops} ops)"
        )
        if result.edgetpu_report is not None:
            reports[mode] = result.edgetpu_report

    report_path = None
    if reports:
        text = "\n\n".join(report.format(verbose=True) for report in reports.values())
        report_path = files.write_text(os.path.join(folder, "edgetpu_report.txt"), text + "\n")
        console.say("\n" + text + "\n")
        console.say(f"  Edge TPU report  {report_path}")
    summary = {
        "model": options.model,
        "image_size": options.image_size,
        "outputs": {mode: _summary_entry(path, exports.get(mode), reports.get(mode))
                    for mode, path in paths.items()},
    }  # fmt: skip
    summary_path = files.write_json(os.path.join(folder, "export.json"), summary)
    console.say(f"  summary       {summary_path}")
    return ExportResult(
        paths=paths,
        exports=exports,
        edgetpu_reports=reports,
        report_path=report_path,
        summary_path=summary_path,
    )


def _formats_for(requested, quantization_aware):
    """The formats to write, in order, once each; a QAT model's float ones skipped, said."""
    formats = list(dict.fromkeys(requested))
    if not quantization_aware:
        return formats
    # Its fake-quant ops make every TFLite mode int8 inside (to_tflite refuses those).
    skipped = [mode for mode in formats if mode in FLOAT_KERNEL_MODES]
    formats = [mode for mode in formats if mode not in FLOAT_KERNEL_MODES]
    if not formats:
        raise UsageError(
            f"--formats={','.join(skipped)}: a quantization-aware model has no float "
            "TFLite file (its fake-quant ops make every mode int8 inside). Ask for "
            "saved_model, int8, uint8 or edgetpu, or export the float model qat started "
            "from (train's model.keras) for float/dynamic."
        )
    if skipped:
        console.say(
            f"export: skipping {', '.join(skipped)}: a quantization-aware model has no float "
            "TFLite file; export the float model qat started from for those."
        )
    return formats


def _summary_entry(path, result, report):
    """export.json's entry of one output: its path, a file's tensors, its Edge TPU mapping."""
    entry = {"path": path}
    if result is not None:
        entry.update(
            size_bytes=result.size_bytes,
            input=_tensor(result.input),
            output=_tensor(result.output),
            num_ops=result.num_ops,
        )
    if report is not None:
        entry["edgetpu"] = {
            "ops": report.num_ops,
            "tpu_ops": report.num_tpu_ops,
            "subgraphs": report.tpu_subgraphs,
            "all_mapped": report.all_mapped,
        }
    return entry

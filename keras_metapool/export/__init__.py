"""Deployment: TFLite (float to Edge TPU), Edge TPU report, SavedModel, runtime check.

    >>> from keras_metapool import export
    >>> export.to_tflite(model, "model.tflite", mode="edgetpu",
    ...                  representative_data=calibration_images)   # doctest: +SKIP
    >>> print(export.edgetpu_report("model.tflite"))                # doctest: +SKIP
    >>> export.evaluate_tflite("model.tflite", (test_images, test_labels))  # doctest: +SKIP
    >>> export.export_saved_model(model, "saved_model/")            # doctest: +SKIP

Command line: ``python -m keras_metapool.export.edgetpu model.tflite``.

The names below are imported on first use, so that running the command line
module does not import it twice (and ``import keras_metapool.export`` stays
cheap).
"""

import importlib

_EXPORTS = {
    "edgetpu": (
        "EdgeTPUReport",
        "OpReport",
        "edgetpu_report",
        "parse_edgetpu_compiler_log",
        "run_edgetpu_compiler",
    ),
    "evaluate": (
        "LatencyStats",
        "TFLiteEvaluation",
        "TFLiteRunner",
        "evaluate_tflite",
        "measure_latency",
        "tflite_predict",
    ),
    "saved_model": ("SERVING_SIGNATURE", "export_saved_model"),
    "tflite": (
        "TFLITE_MODES",
        "ConstantOutputWarning",
        "ExportValidationError",
        "TFLiteExport",
        "TensorDetails",
        "to_tflite",
    ),
    "tflite_graph": ("read_tflite_graph",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))

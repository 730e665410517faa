"""Deployment: TFLite (float to Edge TPU), Edge TPU report, SavedModel, runtime check.

    >>> from keras_metapool import export
    >>> export.to_tflite(model, "model.tflite", mode="edgetpu",
    ...                  representative_data=calibration_images)   # doctest: +SKIP
    >>> print(export.edgetpu_report("model.tflite"))                # doctest: +SKIP
    >>> export.evaluate_tflite("model.tflite", (test_images, test_labels))  # doctest: +SKIP
    >>> export.export_saved_model(model, "saved_model/")            # doctest: +SKIP

Command line of the Edge TPU report: ``python -m keras_metapool.export model.tflite``.

The names load on first use (PEP 562): ``to_tflite``, the report and the
runtime check import no Keras, so a Keras 3 model exports without tf_keras;
``export_saved_model`` (tf_keras) loads tf_keras when first used.
"""

import importlib

_NAMES = {
    "EdgeTPUReport": "edgetpu",
    "OpReport": "edgetpu",
    "edgetpu_report": "edgetpu",
    "parse_edgetpu_compiler_log": "edgetpu_compiler",
    "run_edgetpu_compiler": "edgetpu_compiler",
    "LatencyStats": "evaluate",
    "TFLiteEvaluation": "evaluate",
    "TFLiteRunner": "evaluate",
    "evaluate_tflite": "evaluate",
    "measure_latency": "evaluate",
    "tflite_predict": "evaluate",
    "SERVING_SIGNATURE": "saved_model",
    "export_saved_model": "saved_model",
    "TFLITE_MODES": "tflite",
    "ConstantOutputWarning": "tflite",
    "ExportValidationError": "tflite",
    "TensorDetails": "tflite",
    "TFLiteExport": "tflite",
    "to_tflite": "tflite",
    "read_tflite_graph": "tflite_graph",
}


def __getattr__(name):
    if name in _NAMES:
        value = getattr(importlib.import_module(f"keras_metapool.export.{_NAMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keras_metapool.export' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_NAMES))


__all__ = sorted(_NAMES)

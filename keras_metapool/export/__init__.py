"""Deployment: TFLite (float to Edge TPU), Edge TPU report, SavedModel, runtime check.

    >>> from keras_metapool import export
    >>> export.to_tflite(model, "model.tflite", mode="edgetpu",
    ...                  representative_data=calibration_images)   # doctest: +SKIP
    >>> print(export.edgetpu_report("model.tflite"))                # doctest: +SKIP
    >>> export.evaluate_tflite("model.tflite", (test_images, test_labels))  # doctest: +SKIP
    >>> export.export_saved_model(model, "saved_model/")            # doctest: +SKIP

Command line of the Edge TPU report: ``python -m keras_metapool.export model.tflite``.
"""

from keras_metapool.export.edgetpu import EdgeTPUReport, OpReport, edgetpu_report
from keras_metapool.export.edgetpu_compiler import (
    parse_edgetpu_compiler_log,
    run_edgetpu_compiler,
)
from keras_metapool.export.evaluate import (
    LatencyStats,
    TFLiteEvaluation,
    TFLiteRunner,
    evaluate_tflite,
    measure_latency,
    tflite_predict,
)
from keras_metapool.export.saved_model import SERVING_SIGNATURE, export_saved_model
from keras_metapool.export.tflite import (
    TFLITE_MODES,
    ConstantOutputWarning,
    ExportValidationError,
    TensorDetails,
    TFLiteExport,
    to_tflite,
)
from keras_metapool.export.tflite_graph import read_tflite_graph

__all__ = [
    "SERVING_SIGNATURE",
    "TFLITE_MODES",
    "ConstantOutputWarning",
    "EdgeTPUReport",
    "ExportValidationError",
    "LatencyStats",
    "OpReport",
    "TFLiteEvaluation",
    "TFLiteExport",
    "TFLiteRunner",
    "TensorDetails",
    "edgetpu_report",
    "evaluate_tflite",
    "export_saved_model",
    "measure_latency",
    "parse_edgetpu_compiler_log",
    "read_tflite_graph",
    "run_edgetpu_compiler",
    "tflite_predict",
    "to_tflite",
]

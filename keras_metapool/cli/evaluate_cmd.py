"""``keras-metapool evaluate``: accuracy and confusion matrix of a model or a .tflite."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from keras_metapool.cli import console, files, training
from keras_metapool.cli.options import UsageError
from keras_metapool.cli.qat_cmd import options_for_model
from keras_metapool.export.evaluate import LatencyStats, TFLiteRunner
from keras_metapool.export.exportable import is_quantization_aware


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """What ``evaluate`` measured and wrote.

    Attributes:
        accuracy: Top-1 accuracy.
        num_examples: Images evaluated.
        confusion_matrix: ``[true label][predicted label]`` counts (ints).
        class_names: Name of each label.
        latency_ms: Median invoke latency of a .tflite model (batch of its
            input; None for a Keras model).
        metrics_path: ``<model name>_metrics.json``.
        plot_path: ``<model name>_confusion_matrix.png``.
    """

    accuracy: float
    num_examples: int
    confusion_matrix: list
    class_names: tuple
    latency_ms: float | None
    metrics_path: str
    plot_path: str


def plot_confusion_matrix(matrix, class_names, path, title):
    """Draws a confusion matrix (rows: true class, columns: predicted) as a PNG.

    Cells show counts; colours are the share of each true class (row), so
    that classes of different sizes compare.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "the confusion matrix plot needs matplotlib: pip install 'keras_metapool[plot]'."
        ) from error
    matrix = np.asarray(matrix)
    count = len(class_names)
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    side = max(4.0, 0.6 * count + 2.0)
    figure, axis = plt.subplots(figsize=(side + 1.0, side))
    image = axis.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="share of the true class")
    axis.set_xticks(range(count), labels=class_names, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(range(count), labels=class_names, fontsize=8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if count <= 30:  # readable cell labels
        for i in range(count):
            for j in range(count):
                axis.text(
                    j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if shares[i, j] > 0.5 else "black",
                )  # fmt: skip
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110, format="png")
    plt.close(figure)
    return path


def _model_name(path):
    return os.path.basename(os.path.normpath(path)).rsplit(".", 1)[0] or "model"


def _say_what_is_replaced(metrics_path, metrics):
    """Notes when ``metrics_path`` holds the results of another model or split.

    Output files are named after the model file, and every ``train`` run
    writes a ``model.keras``: the results of ``runs/a/model.keras`` and
    ``runs/b/model.keras`` share one name in one ``--output_dir``.
    """
    try:
        with open(metrics_path, encoding="utf-8") as f:
            previous = json.load(f)
    except (OSError, ValueError):
        return
    then = (os.path.abspath(previous.get("model", "")), previous.get("split"))
    now = (os.path.abspath(metrics["model"]), metrics["split"])
    if then != now:
        console.say(
            f"evaluate: replacing {metrics_path}, the results of {previous.get('model')} on "
            f"{previous.get('split')!r}; pass another --output_dir to keep both."
        )


def evaluate(options, strategy=None):
    """Evaluates ``--model`` (Keras or .tflite) on ``--split`` of ``--dataset``.

    A Keras model (``.keras``, ``.h5``, SavedModel; QAT models too) predicts
    batch by batch; a ``.tflite`` model runs in LiteRT
    (``TFLiteRunner``, as ``evaluate_tflite`` runs it: float inputs are quantized as
    the file says; the latency is the median invoke). Images are resized to
    the model's own input size. Writes ``<model name>_metrics.json`` (accuracy,
    per-class accuracy, confusion matrix, class names, latency) and
    ``<model name>_confusion_matrix.png`` to ``output_dir``.

    Args:
        options: ``keras_metapool.cli.Options`` (``model``, ``split``,
            ``test_limit``, ``num_threads``).
        strategy: Unused (evaluation runs on one device).

    Returns:
        An ``EvaluationResult``.
    """
    del strategy
    path = options.model
    if not path:
        raise UsageError("--model is required: a .keras/.h5/SavedModel model or a .tflite file.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"--model: {path} does not exist.")
    is_tflite = path.endswith(".tflite")
    predict, options, kind, model_classes, latency_of_run = _predictor(path, options)
    data, info = training.load_split(
        options, options.split, training=False, limit=options.test_limit
    )
    if model_classes != info.num_classes:
        # Fewer outputs gave an accuracy over the first classes only; more, an IndexError.
        raise ValueError(
            f"--model predicts {model_classes} classes, --dataset={options.dataset} has "
            f"{info.num_classes}: evaluate a model on the dataset it was trained for."
        )
    console.say(
        f"evaluate: {path} ({kind}) on {options.dataset} {options.split!r}, "
        f"{info.num_examples} images at {options.image_size}x{options.image_size}"
    )
    matrix = np.zeros((info.num_classes, info.num_classes), np.int64)
    for images, labels in data:
        predicted = np.argmax(predict(np.asarray(images)), axis=-1)
        np.add.at(matrix, (np.asarray(labels), predicted), 1)
    total = int(matrix.sum())
    accuracy = float(np.trace(matrix)) / total
    latency = latency_of_run()
    rows = matrix.sum(axis=1)
    per_class = {
        name: (float(matrix[i, i] / rows[i]) if rows[i] else None)
        for i, name in enumerate(info.class_names)
    }
    folder = options.output_dir
    os.makedirs(folder, exist_ok=True)
    files.remove_stale_temporaries(folder)
    name = _model_name(path)
    metrics = {
        "model": path,
        "format": "tflite" if is_tflite else "keras",
        "dataset": options.dataset,
        "split": options.split,
        "image_size": options.image_size,
        "num_examples": total,
        "accuracy": accuracy,
        "per_class_accuracy": per_class,
        "class_names": list(info.class_names),
        "confusion_matrix": matrix.tolist(),
        "latency": dataclasses.asdict(latency) if latency is not None else None,
    }
    metrics_path = os.path.join(folder, f"{name}_metrics.json")
    _say_what_is_replaced(metrics_path, metrics)
    metrics_path = files.write_json(metrics_path, metrics)
    plot_path = os.path.join(folder, f"{name}_confusion_matrix.png")
    title = f"{name} on {options.dataset} {options.split}: accuracy {accuracy:.4f} ({total} images)"
    with files.atomic_output(plot_path) as tmp:
        plot_confusion_matrix(matrix, info.class_names, tmp, title)
    latency_text = (
        f", median latency {latency.median_ms:.3f} ms per invoke (batch {latency.batch_size}, "
        f"{options.num_threads} thread(s))"
        if latency is not None
        else ""
    )
    console.say(
        f"evaluate: accuracy {accuracy:.4f} on {total} images{latency_text}.\n"
        f"  metrics           {metrics_path}\n"
        f"  confusion matrix  {plot_path}"
    )
    return EvaluationResult(
        accuracy=accuracy,
        num_examples=total,
        confusion_matrix=matrix.tolist(),
        class_names=tuple(info.class_names),
        latency_ms=latency.median_ms if latency is not None else None,
        metrics_path=metrics_path,
        plot_path=plot_path,
    )


def _predictor(path, options):
    """``(predict, options, kind, classes, latency)`` of a Keras model or a .tflite file.

    ``predict`` maps a batch of images to outputs; ``options`` take the model's
    own input size; ``latency()`` gives a .tflite file's ``LatencyStats`` over
    the invokes so far (None for a Keras model).
    """
    if not path.endswith(".tflite"):
        model = training.load_model(path)
        kind = "quantization-aware Keras" if is_quantization_aware(model) else "Keras"

        def predict(images):
            return np.asarray(model(images, training=False))

        return predict, options_for_model(options, model), kind, model.output_shape[-1], _no_latency
    runner = TFLiteRunner(path, num_threads=options.num_threads)
    height, width, _ = runner.input_shape
    if height != width:
        raise ValueError(f"--model: expected a square input, got {runner.input_shape}.")
    if height is not None:  # a dynamic size takes --image_size
        options = dataclasses.replace(options, image_size=int(height))
    invoke_seconds = []

    def predict(images):
        # One image per invoke (the deployment latency, as evaluate_tflite
        # times it): a single pass gives predictions and latency.
        outputs, seconds = runner.predict_timed(images, batch_size=1)
        invoke_seconds.extend(seconds)
        return outputs

    def latency():
        return LatencyStats.from_seconds(invoke_seconds, runner.static_batch or 1)

    classes = int(runner.output["shape_signature"][-1])
    return predict, options, "TFLite", classes, latency


def _no_latency():
    return None

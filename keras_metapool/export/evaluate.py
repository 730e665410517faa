"""Running a .tflite model: predictions, accuracy and latency with LiteRT.

Uses ``ai_edge_litert.interpreter.Interpreter`` (``tf.lite.Interpreter`` is
deprecated in TF 2.21). Inputs are given as the Keras model takes them
(float32, preprocessed); for an int8/uint8 model they are quantized with the
input tensor's scale and zero point, and outputs are dequantized, so results
compare directly with the Keras model's.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np

from keras_metapool import _quiet
from keras_metapool.data.preprocessing import warn_if_not_model_input
from keras_metapool.export import exportable
from keras_metapool.export.tflite_graph import read_tflite_graph

__all__ = [
    "LatencyStats",
    "TFLiteEvaluation",
    "TFLiteRunner",
    "evaluate_tflite",
    "measure_latency",
    "tflite_predict",
]

# Batch used by tflite_predict for a dynamic-batch model.
_DEFAULT_PREDICT_BATCH = 32


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Wall-clock time of ``Interpreter.invoke`` calls.

    Attributes:
        median_ms: Median time per invoke, in milliseconds.
        mean_ms: Mean time per invoke.
        p90_ms: 90th percentile.
        runs: Number of invokes timed.
        batch_size: Images per invoke.
    """

    median_ms: float
    mean_ms: float
    p90_ms: float
    runs: int
    batch_size: int

    @classmethod
    def from_seconds(cls, seconds, batch_size):
        ms = np.asarray(seconds, np.float64) * 1000.0
        return cls(
            median_ms=float(np.median(ms)),
            mean_ms=float(np.mean(ms)),
            p90_ms=float(np.percentile(ms, 90)),
            runs=len(ms),
            batch_size=int(batch_size),
        )

    @property
    def median_ms_per_image(self):
        """Median invoke time divided by the batch size."""
        return self.median_ms / self.batch_size


@dataclasses.dataclass(frozen=True)
class TFLiteEvaluation:
    """Result of ``evaluate_tflite``.

    Attributes:
        path: The model evaluated.
        accuracy: Top-1 accuracy over ``num_examples``.
        num_examples: Number of examples evaluated.
        latency: ``LatencyStats`` of the invokes (inference only: input
            quantization and output dequantization are not timed).
    """

    path: str
    accuracy: float
    num_examples: int
    latency: LatencyStats

    def __str__(self):
        return (
            f"{os.path.basename(self.path)}: accuracy {self.accuracy:.4f} on "
            f"{self.num_examples} examples; latency median {self.latency.median_ms:.3f} ms "
            f"(mean {self.latency.mean_ms:.3f} ms) per invoke of batch {self.latency.batch_size}"
        )


class TFLiteRunner:
    """A LiteRT interpreter that takes and returns float arrays.

    Args:
        path: The .tflite file.
        num_threads: CPU threads of the interpreter (None: its default).
        output: Name of the signature output to return (``"probabilities"``,
            ``"logits"``, ...). None: ``probabilities`` if the model has it,
            else ``logits``, else its first output.

    Raises:
        FileNotFoundError / ValueError: for a missing or unreadable file, or
            an unknown ``output`` name.
    """

    def __init__(self, path, num_threads=None, output=None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = os.fspath(path)
        graph = read_tflite_graph(self.path)  # clear errors for bad files
        # NOTE: the runtime announces its XNNPACK delegate on stderr ("INFO: Created ...").
        with _quiet.native_stderr_held(_quiet.QUIET):
            self.interpreter = Interpreter(model_path=self.path, num_threads=num_threads)
            self.interpreter.allocate_tensors()
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise ValueError(f"{self.path!r} has {len(inputs)} inputs; expected one image input.")
        self.input = inputs[0]
        self.output = self._pick_output(graph, output)
        batch = int(self.input["shape_signature"][0])
        #: The model's static batch size, or None if the batch is dynamic.
        self.static_batch = batch if batch > 0 else None
        self._allocated = tuple(int(d) for d in self.input["shape"])

    def _pick_output(self, graph, name):
        details = {d["index"]: d for d in self.interpreter.get_output_details()}
        by_name = {n: details[i] for n, i in graph.signature_outputs.items() if i in details}
        if name is not None:
            if name not in by_name:
                raise ValueError(
                    f"{self.path!r} has no output named {name!r}; outputs: {sorted(by_name)}."
                )
            return by_name[name]
        for preferred in (exportable.PROBABILITIES, exportable.LOGITS):
            if preferred in by_name:
                return by_name[preferred]
        return details[graph.outputs[0]]

    @property
    def input_shape(self):
        """The input's shape without the batch: ``(H, W, C)``, None where dynamic."""
        return tuple(None if int(d) < 0 else int(d) for d in self.input["shape_signature"][1:])

    def _quantize(self, images):
        dtype = self.input["dtype"]
        if np.issubdtype(dtype, np.floating):
            return images.astype(dtype)
        scale, zero_point = self.input["quantization"]
        if not scale:
            return images.astype(dtype)  # raw integer input (no quantization)
        info = np.iinfo(dtype)
        # As TFLite's QUANTIZE: round, then shift. Adding the zero point first
        # would round near-ties differently for int8 and uint8.
        quantized = np.round(images / np.float32(scale)) + zero_point
        return np.clip(quantized, info.min, info.max).astype(dtype)

    def _dequantize(self, values):
        scale, zero_point = self.output["quantization"]
        if np.issubdtype(values.dtype, np.floating) or not scale:
            return values.astype(np.float32)
        return ((values.astype(np.float32) - zero_point) * scale).astype(np.float32)

    def run(self, images):
        """Runs one invoke on ``images``; returns (float outputs, seconds).

        ``images`` must hold the model's batch (any size for a dynamic batch).
        """
        images = np.asarray(images, np.float32)
        if images.shape != self._allocated:  # a dynamic batch or image size
            self.interpreter.resize_tensor_input(self.input["index"], images.shape)
            self.interpreter.allocate_tensors()
            self._allocated = images.shape
        self.interpreter.set_tensor(self.input["index"], self._quantize(images))
        start = time.perf_counter()
        self.interpreter.invoke()
        seconds = time.perf_counter() - start
        return self._dequantize(self.interpreter.get_tensor(self.output["index"])), seconds

    def predict(self, images, batch_size=None):
        """Outputs for all ``images`` (N, H, W, C), as a float32 array (N, ...)."""
        outputs, _ = self.predict_timed(images, batch_size)
        return outputs

    def predict_timed(self, images, batch_size=None):
        """``predict`` that also returns the seconds of every invoke.

        Args:
            images: Float array ``(N, H, W, C)``.
            batch_size: Images per invoke for a dynamic-batch model (default
                32); a static-batch model uses its own batch, the last one
                padded with copies of its last image.

        Returns:
            ``(outputs, seconds)``: the float32 outputs ``(N, ...)`` and a
            list of invoke times (``LatencyStats.from_seconds`` takes it, with
            ``static_batch or batch_size``).
        """
        images = np.asarray(images, np.float32)
        expected = self.input_shape
        if images.ndim != len(expected) + 1 or not all(
            want is None or want == got for want, got in zip(expected, images.shape[1:])
        ):
            hint = (
                " (one image without its batch axis: pass images[None])"
                if images.ndim == len(expected)
                else ""
            )
            sizes = ", ".join("any" if d is None else str(d) for d in expected)
            raise ValueError(
                f"The model '{os.path.basename(self.path)}' expects images of shape (N, "
                f"{sizes}); got {images.shape}{hint}."
            )
        batch = self.static_batch or batch_size or _DEFAULT_PREDICT_BATCH
        outputs, seconds = [], []
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            count = len(chunk)
            if self.static_batch and count < batch:  # pad the last static batch
                pad = np.repeat(chunk[-1:], batch - count, axis=0)
                chunk = np.concatenate([chunk, pad])
            out, elapsed = self.run(chunk)
            outputs.append(out[:count])
            seconds.append(elapsed)
        if not outputs:
            return np.zeros((0,), np.float32), seconds
        return np.concatenate(outputs), seconds


def tflite_predict(path, images, batch_size=None, num_threads=None, output=None):
    """The outputs of a .tflite model for ``images``, dequantized to float32.

    Args:
        path: The .tflite file.
        images: Float array ``(N, H, W, C)``, preprocessed as for the Keras
            model (quantized here for an int8/uint8 model).
        batch_size: Images per invoke for a dynamic-batch model (default
            32); a static-batch model uses its own batch.
        num_threads: Interpreter threads (None: its default).
        output: Signature output to return (see ``TFLiteRunner``).

    Returns:
        A float32 array ``(N, ...)``: for a classifier, its probabilities
        (or logits).
    """
    warn_if_not_model_input(images, "tflite_predict's images")
    return TFLiteRunner(path, num_threads=num_threads, output=output).predict(images, batch_size)


def _class_indices(labels, classes):
    """Class indices from labels (N,) or (N, 1) (as CIFAR's), or one-hot (N, classes)."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1 and classes != 1:
        return labels[:, 0].astype(np.int64)
    if labels.ndim == 2 and labels.shape[1] == classes:
        return labels.argmax(axis=-1)
    if labels.ndim == 1:
        return labels.astype(np.int64)
    raise ValueError(
        f"Labels of shape {labels.shape} for a model with {classes} outputs: expected class "
        f"indices (N,) or (N, 1), or one-hot labels (N, {classes})."
    )


def _examples(dataset):
    """Yields (images batch, labels batch) from a dataset or an (x, y) pair."""
    import tensorflow as tf

    if isinstance(dataset, tf.data.Dataset):
        for element in dataset.as_numpy_iterator():
            if not isinstance(element, tuple) or len(element) < 2:
                raise ValueError(
                    "evaluate_tflite needs a dataset of (images, labels); got elements of "
                    f"type {type(element).__name__}."
                )
            images, labels = np.asarray(element[0]), np.asarray(element[1])
            if images.ndim == 3:  # unbatched
                images, labels = images[None], labels[None]
            yield images, labels
    elif isinstance(dataset, (tuple, list)) and len(dataset) == 2:
        yield np.asarray(dataset[0]), np.asarray(dataset[1])
    else:
        raise ValueError(
            "`dataset` must be a tf.data.Dataset of (images, labels) or a pair of arrays "
            f"(images, labels); got {type(dataset).__name__}."
        )


def _progress_bar(target):
    """Keras' progress bar: tf_keras' where it is loaded already, else Keras 3's (same API)."""
    if "tf_keras" in sys.modules:
        from keras_metapool._keras import keras
    else:
        import keras
    return keras.utils.Progbar(target, unit_name="image")


def evaluate_tflite(
    path, dataset, batch_size=1, num_threads=None, max_examples=None, output=None, verbose=0
):
    """Top-1 accuracy and invoke latency of a .tflite classifier.

    Args:
        path: The .tflite file (any ``to_tflite`` mode).
        dataset: ``(images, labels)``: a ``tf.data.Dataset`` (batched or
            not) or a pair of arrays. Images preprocessed as for the Keras
            model (float, [-1, 1] for MobileNetV2MP); labels as class indices
            or one-hot.
        batch_size: Images per invoke for a dynamic-batch model (default 1,
            the deployment latency); a static-batch model uses its own.
        num_threads: Interpreter threads (None: its default).
        max_examples: Stop after this many examples (None: all).
        output: Signature output to score (default probabilities/logits).
        verbose: 1 shows a progress bar.

    Returns:
        A ``TFLiteEvaluation`` (accuracy, number of examples, latency).

    Raises:
        ValueError: for a dataset without labels, labels whose count does
            not match the images, or no examples at all.
    """
    runner = TFLiteRunner(path, num_threads=num_threads, output=output)
    target = None
    if isinstance(dataset, (tuple, list)) and len(dataset) == 2:
        target = len(dataset[0]) if max_examples is None else min(len(dataset[0]), max_examples)
    progress = _progress_bar(target) if verbose else None
    correct, count, seconds = 0, 0, []
    for images, labels in _examples(dataset):
        if count == 0:
            warn_if_not_model_input(images, "evaluate_tflite's images")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels in a batch.")
        if max_examples is not None:
            images, labels = images[: max_examples - count], labels[: max_examples - count]
        outputs, elapsed = runner.predict_timed(images, batch_size)
        labels = _class_indices(labels, outputs.shape[-1])
        correct += int(np.sum(outputs.argmax(axis=-1) == labels))
        count += len(images)
        seconds += elapsed
        if progress is not None:
            progress.add(len(images))
        if max_examples is not None and count >= max_examples:
            break
    if count == 0:
        raise ValueError("evaluate_tflite got no examples from `dataset`.")
    batch = runner.static_batch or batch_size
    return TFLiteEvaluation(
        path=runner.path,
        accuracy=correct / count,
        num_examples=count,
        latency=LatencyStats.from_seconds(seconds, batch),
    )


def measure_latency(path, runs=100, warmup=10, num_threads=1, batch_size=1, seed=0):
    """Invoke latency of a .tflite model on random input.

    Args:
        path: The .tflite file.
        runs: Number of timed invokes (the median is robust from ~100).
        warmup: Untimed invokes first (allocation, caches, delegate setup).
        num_threads: Interpreter threads (default 1, the usual benchmark).
        batch_size: Batch of a dynamic-batch model (static: its own).
        seed: Seed of the random input in [-1, 1].

    Returns:
        ``LatencyStats``.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"`runs` must be >= 1 and `warmup` >= 0, got {runs}, {warmup}.")
    runner = TFLiteRunner(path, num_threads=num_threads)
    if None in runner.input_shape:
        raise ValueError(
            f"measure_latency: '{os.path.basename(runner.path)}' has a dynamic image size "
            f"{runner.input_shape}, and latency depends on it. Export a model built with a "
            "fixed input_shape, or time your own images with TFLiteRunner(path).predict_timed."
        )
    batch = runner.static_batch or batch_size
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1.0, 1.0, (batch, *runner.input_shape)).astype(np.float32)
    for _ in range(warmup):
        runner.run(images)
    seconds = [runner.run(images)[1] for _ in range(runs)]
    return LatencyStats.from_seconds(seconds, batch)

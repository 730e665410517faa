"""The machine a study runs on, and what it measures there.

Latency of TFLite files (interleaved invokes), the CPU model and load
average a report records, and batch-norm statistics settled before a
latency or export run. ``benchmarks/`` scripts use them too.
"""

import os
import platform
import statistics

import numpy as np

from keras_metapool import keras


def settle_batch_norms(model, images, momentum=0.9):
    """Sets every BatchNormalization's moving statistics to those of ``images``.

    A randomly initialised MobileNetV2 keeps its initial statistics (mean 0,
    variance 1), which saturate the network: every input then takes the same
    path and converters/calibration see degenerate ranges. One training-mode
    pass with momentum 0 copies the batch statistics in; ``momentum`` is
    restored afterwards.

    Args:
        model: A Keras model.
        images: A batch of real model inputs (e.g. 32 images).
        momentum: The BN momentum to leave in place.
    """
    norms = [m for m in model.submodules if isinstance(m, keras.layers.BatchNormalization)]
    for bn in norms:
        bn.momentum = 0.0
    model(images, training=True)
    for bn in norms:
        bn.momentum = momentum


def interleaved_latency(paths, runs, threads, warmup=10, seed=0):
    """Median invoke time (ms) of each ``.tflite`` model, invokes interleaved.

    Each round invokes every model once, in order, so that load changes on a
    shared machine hit all models alike; ratios between the returned medians
    are far steadier than the absolute times.

    Args:
        paths: ``.tflite`` files (the same file may appear twice: two
            interpreters, a measure of the noise of a ratio).
        runs: Timed rounds.
        threads: Interpreter threads.
        warmup: Untimed invokes per model first (allocation, XNNPACK packing).
        seed: Seed of the random inputs (one fixed input per model).

    Returns:
        A list of medians in milliseconds, in the order of ``paths``.
    """
    from keras_metapool.export import TFLiteRunner

    runners = [TFLiteRunner(path, num_threads=threads) for path in paths]
    rng = np.random.default_rng(seed)
    inputs = [rng.uniform(-1, 1, (1, *r.input_shape)).astype(np.float32) for r in runners]
    for runner, x in zip(runners, inputs):
        for _ in range(warmup):
            runner.run(x)
    times = [[] for _ in runners]
    for _ in range(runs):
        for runner, x, bucket in zip(runners, inputs, times):
            bucket.append(runner.run(x)[1] * 1000.0)
    return [statistics.median(bucket) for bucket in times]


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_average():
    """The 1, 5 and 15-minute load averages, or None where the OS has none."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_description():
    """What a benchmark ran on: cores, CPU model, load, software versions."""
    import tensorflow as tf

    try:
        from importlib.metadata import version

        litert = version("ai-edge-litert")
    except Exception:  # not installed, or no metadata: the report just says so
        litert = "unknown"
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "load_average": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "tf_keras": keras.__version__,
        "ai_edge_litert": litert,
    }

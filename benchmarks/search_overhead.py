"""What a PMPL search costs: step time against plain MobileNetV2, and end to end.

In one run, on the same Fashion-MNIST batches:

1. plain MobileNetV2 (``meta_pooling="none"``), a normal ``fit``;
2. the search supernet with ``PMPLCallback(arch_data=...)`` (bi-level: an
   alpha step on a held-out batch per weight step);
3. the same with ``PMPLCallback()`` (one-level, alpha on the training batch);

each timed per step after a warm-up epoch (the first steps include tracing),
median over the measured steps. Then an end-to-end search on Fashion-MNIST
(50/50 split with ``split_for_search``) reports its wall time and the
architecture found.

    python benchmarks/search_overhead.py                  # the README numbers
    python benchmarks/search_overhead.py --images 2048 --search_epochs 3   # quicker

Goal (README): a search step costs at most 3x a plain step.
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_metapool as km  # noqa: E402
from keras_metapool._keras import keras  # noqa: E402
from keras_metapool.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from keras_metapool.data.preprocessing import to_model_input  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_float("alpha", 0.35, "Width multiplier.")
flags.DEFINE_integer("input_size", 64, "Input height and width (Fashion-MNIST is resized).")
flags.DEFINE_integer("batch_size", 64, "Batch size of weight and alpha steps.")
flags.DEFINE_integer("images", 4096, "Training images for the step-time comparison.")
flags.DEFINE_integer("search_images", 20000, "Training images of the end-to-end search.")
flags.DEFINE_integer("search_epochs", 6, "Epochs of the end-to-end search.")
flags.DEFINE_float("arch_learning_rate", 3e-3, "Alpha learning rate of the end-to-end search.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")


class StepTimer(keras.callbacks.Callback):
    """Wall time of every training step."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def build(meta_pooling):
    return km.MobileNetV2MP(
        weights=None,
        input_shape=(FLAGS.input_size, FLAGS.input_size, 3),
        alpha=FLAGS.alpha,
        classes=10,
        meta_pooling=meta_pooling,
        batch_norm_momentum=0.9,
    )


def step_time(meta_pooling, train, callbacks_factory):
    """Median step time of the second epoch (the first one traces)."""
    keras.utils.set_random_seed(FLAGS.seed)
    model = build(meta_pooling)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    timer = StepTimer()
    start = time.perf_counter()
    model.fit(train, epochs=1, callbacks=[*callbacks_factory(), timer], verbose=0)
    first_epoch = time.perf_counter() - start
    timer.times = []
    model.fit(train, epochs=1, callbacks=[*callbacks_factory(), timer], verbose=0)
    return float(np.median(timer.times)), first_epoch


def dataset(images, labels):
    x = np.asarray(to_model_input(images, FLAGS.input_size))
    return tf.data.Dataset.from_tensor_slices((x, labels))


def main(argv):
    del argv
    images, labels = load_fashion_mnist("train", limit=2 * FLAGS.images)
    train = dataset(images[: FLAGS.images], labels[: FLAGS.images]).batch(FLAGS.batch_size)
    arch = dataset(images[FLAGS.images :], labels[FLAGS.images :]).batch(FLAGS.batch_size)
    quiet = dict(verbose=0)
    results = {}
    print(
        f"Step times: MobileNetV2 alpha {FLAGS.alpha}, {FLAGS.input_size}x{FLAGS.input_size}, "
        f"batch {FLAGS.batch_size}, {FLAGS.images} Fashion-MNIST images, "
        f"{os.cpu_count()} CPU cores"
    )
    runs = [
        ("plain MobileNetV2", "none", lambda: []),
        ("search, bi-level (arch_data)", "search",
         lambda: [km.PMPLCallback(arch_data=arch, late_stage=1.0, **quiet)]),
        ("search, one-level", "search", lambda: [km.PMPLCallback(late_stage=1.0, **quiet)]),
        ("supernet without alpha steps", "search", lambda: []),
    ]  # fmt: skip
    for label, meta_pooling, factory in runs:
        median, first_epoch = step_time(meta_pooling, train, factory)
        results[label] = {"step_ms": 1000 * median, "first_epoch_s": first_epoch}
    plain = results["plain MobileNetV2"]["step_ms"]
    print("\n| run | step (ms, median) | ratio to plain | first epoch incl. tracing (s) |")
    print("|---|---|---|---|")
    for label, values in results.items():
        values["ratio"] = values["step_ms"] / plain
        print(
            f"| {label} | {values['step_ms']:.0f} | {values['ratio']:.2f}x | "
            f"{values['first_epoch_s']:.0f} |"
        )

    # End to end: a bi-level search on Fashion-MNIST, 50/50 weights/alpha.
    images, labels = load_fashion_mnist("train", limit=FLAGS.search_images)
    weights_part, arch_part = km.split_for_search(dataset(images, labels), 0.5)
    weights_part = weights_part.batch(FLAGS.batch_size).prefetch(2)
    arch_part = arch_part.batch(FLAGS.batch_size).prefetch(2)
    keras.utils.set_random_seed(FLAGS.seed)
    model = build("search")
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
    pmpl = km.PMPLCallback(arch_data=arch_part, learning_rate=FLAGS.arch_learning_rate)
    start = time.perf_counter()
    history = model.fit(weights_part, epochs=FLAGS.search_epochs, callbacks=[pmpl], verbose=0)
    search_seconds = time.perf_counter() - start
    print(
        f"\nEnd-to-end search: {FLAGS.search_images} Fashion-MNIST images (half for alpha), "
        f"{FLAGS.search_epochs} epochs, alpha lr {FLAGS.arch_learning_rate}: "
        f"{search_seconds / 60:.1f} min, final training accuracy "
        f"{history.history['accuracy'][-1]:.3f}"
    )
    pmpl.summary()
    print("Architecture:", pmpl.architecture)
    results["end_to_end"] = {
        "seconds": search_seconds,
        "images": FLAGS.search_images,
        "epochs": FLAGS.search_epochs,
        "architecture": pmpl.architecture.to_dict(),
        "accuracy": history.history["accuracy"][-1],
    }
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    app.run(main)

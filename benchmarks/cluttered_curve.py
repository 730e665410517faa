"""How hard is cluttered Fashion-MNIST? Learning curves of MobileNetV2 per setting.

Trains plain MobileNetV2 (the study's recipe: Adam, cosine decay to 0, batch
64, no augmentation, BN momentum 0.9) on cluttered Fashion-MNIST at the
canvas's own resolution, one run per dataset setting, and records the test
accuracy after every epoch: where the curve flattens says how many epochs the
study needs, and its level says whether the task is far from chance (10%)
and from saturation. Also times making the canvases.

    python benchmarks/cluttered_curve.py                              # 3 settings
    python benchmarks/cluttered_curve.py --examples=docs/cluttered_examples.png
    python benchmarks/cluttered_curve.py --datasets=cluttered_fashion_mnist \\
        --epochs=12 --json=results/spatial/curve.json --plot=docs/cluttered_curve.png
"""

import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# This checkout's package, not an installed copy: the benchmarks measure this tree.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import keras_metapool as km  # noqa: E402
from keras_metapool import keras  # noqa: E402
from keras_metapool.data import load_dataset, make_cluttered_fashion_mnist  # noqa: E402
from keras_metapool.data.cluttered import parse_cluttered_name  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "datasets",
    [
        "cluttered_fashion_mnist:clutter=8",
        "cluttered_fashion_mnist",
        "cluttered_fashion_mnist:clutter=32",
    ],
    "Dataset names (cluttered_fashion_mnist[:KEY=VALUE,...]).",
)
flags.DEFINE_float("alpha", 0.35, "Width multiplier.")
flags.DEFINE_integer("train_images", 8000, "First N training canvases.")
flags.DEFINE_integer("test_images", 2000, "First N test canvases (evaluated every epoch).")
flags.DEFINE_integer("epochs", 10, "Epochs.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_float("learning_rate", 2e-3, "Adam learning rate, cosine-decayed to 0.")
flags.DEFINE_list("seeds", ["0"], "Seeds.")
flags.DEFINE_string("json", None, "Write the curves to this JSON file.")
flags.DEFINE_string("plot", None, "Write a PNG of the curves here.")
flags.DEFINE_string(
    "examples", None, "Only write a PNG grid of the first test canvases of each dataset here."
)


class _TestEveryEpoch(keras.callbacks.Callback):
    def __init__(self, test):
        super().__init__()
        self.test, self.accuracy = test, []

    def on_epoch_end(self, epoch, logs=None):
        self.accuracy.append(float(self.model.evaluate(self.test, verbose=0)[1]))
        print(f"    epoch {epoch + 1}: train {logs['accuracy']:.4f} test {self.accuracy[-1]:.4f}")


def main(argv):
    del argv
    if FLAGS.examples:
        _examples(FLAGS.examples)
        return
    rows = []
    for name in FLAGS.datasets:
        params = parse_cluttered_name(name)
        start = time.perf_counter()
        make_cluttered_fashion_mnist("train", params, FLAGS.train_images)
        make_cluttered_fashion_mnist("test", params, FLAGS.test_images)
        made = time.perf_counter() - start
        for seed in map(int, FLAGS.seeds):
            print(f"{name}, seed {seed} (canvases made in {made:.1f} s)")
            size = params.canvas
            train, info = load_dataset(
                name, "train", size, FLAGS.batch_size, training=True, augment="none",
                seed=seed, limit=FLAGS.train_images,
            )  # fmt: skip
            test, _ = load_dataset(name, "test", size, 256, limit=FLAGS.test_images)
            keras.backend.clear_session()
            keras.utils.set_random_seed(seed)
            model = km.MobileNetV2MP(
                weights=None, alpha=FLAGS.alpha, input_shape=(size, size, 3),
                classes=info.num_classes, meta_pooling="none", batch_norm_momentum=0.9,
            )  # fmt: skip
            steps = math.ceil(info.num_examples / FLAGS.batch_size) * FLAGS.epochs
            model.compile(
                keras.optimizers.Adam(
                    keras.optimizers.schedules.CosineDecay(FLAGS.learning_rate, steps)
                ),
                "sparse_categorical_crossentropy",
                ["accuracy"],
            )
            probe = _TestEveryEpoch(test)
            start = time.perf_counter()
            history = model.fit(train, epochs=FLAGS.epochs, callbacks=[probe], verbose=0)
            rows.append(
                {
                    "dataset": name,
                    "seed": seed,
                    "canvas_seconds": made,
                    "train_seconds_with_evaluation": time.perf_counter() - start,
                    "train_accuracy": [float(a) for a in history.history["accuracy"]],
                    "test_accuracy": probe.accuracy,
                }
            )
            if FLAGS.json:
                _write(rows)
    if FLAGS.plot:
        _plot(rows, FLAGS.plot)


def _write(rows):
    names = ("alpha", "train_images", "test_images", "epochs", "batch_size", "learning_rate")
    settings = {name: FLAGS[name].value for name in names}
    os.makedirs(os.path.dirname(FLAGS.json) or ".", exist_ok=True)
    with open(FLAGS.json, "w") as f:
        json.dump({"settings": settings, "runs": rows}, f, indent=1)


def _examples(path, columns=6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_metapool.data import FASHION_MNIST_CLASS_NAMES

    fig, axes = plt.subplots(
        len(FLAGS.datasets), columns, figsize=(2 * columns, 2.25 * len(FLAGS.datasets)),
        squeeze=False,
    )  # fmt: skip
    for row, name in zip(axes, FLAGS.datasets):
        images, labels = make_cluttered_fashion_mnist("test", parse_cluttered_name(name), columns)
        for ax, image, label in zip(row, images, labels):
            ax.imshow(image, cmap="gray", vmin=0, vmax=255)
            ax.set_title(FASHION_MNIST_CLASS_NAMES[label], fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(name.replace("cluttered_fashion_mnist", "cluttered"), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for row in rows:
        epochs = range(1, len(row["test_accuracy"]) + 1)
        label = f"{row['dataset'].replace('cluttered_fashion_mnist', 'cluttered')} s{row['seed']}"
        (line,) = ax.plot(epochs, [100 * a for a in row["test_accuracy"]], "o-", label=label)
        ax.plot(epochs, [100 * a for a in row["train_accuracy"]], "--", color=line.get_color())
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy % (solid: test, dashed: train)")
    ax.set_title(f"MobileNetV2 alpha {FLAGS.alpha:g}, {FLAGS.train_images} canvases")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    app.run(main)

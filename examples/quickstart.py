"""Quick start: MobileNetV2 vs MobileNetV2MP ("paper") on Fashion-MNIST, offline.

    python examples/quickstart.py                      # ~3 minutes on 2 CPU cores
    python examples/quickstart.py --epochs=5 --train_size=60000

Reads Fashion-MNIST from local files (Debian's dataset-fashion-mnist, or the
Keras cache), trains both models with the same data, seed and schedule, and
prints parameters, MACs and test accuracy side by side. The trained models are
saved as .keras files, with the Meta-Pooling architecture as JSON.

One short run on one seed is a smoke test of the pipeline, not evidence that
Meta-Pooling helps; benchmarks/ holds the measurements.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

import keras_metapool as km  # noqa: E402
from keras_metapool import keras  # noqa: E402
from keras_metapool.data import load_fashion_mnist, to_model_input  # noqa: E402
from keras_metapool.models import count_macs, count_params  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("image_size", 64, "Input size (Fashion-MNIST is upsampled).", lower_bound=32)
flags.DEFINE_float("alpha", 0.35, "Width multiplier.", lower_bound=0.01)
flags.DEFINE_integer("epochs", 2, "Training epochs per model.", lower_bound=1)
flags.DEFINE_integer("train_size", 10000, "Training images used (of 60,000).", lower_bound=1)
flags.DEFINE_integer("test_size", 2000, "Test images used (of 10,000).", lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "Batch size.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Random seed (weights and shuffling).")
flags.DEFINE_string("output_dir", "runs/quickstart", "Where models and the spec are written.")


def train_and_evaluate(meta_pooling, data):
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(FLAGS.seed)
    model = km.MobileNetV2MP(
        weights=None,
        input_shape=(FLAGS.image_size, FLAGS.image_size, 3),
        alpha=FLAGS.alpha,
        classes=10,
        meta_pooling=meta_pooling,
        batch_norm_momentum=0.9,  # short run: see MobileNetV2MP's docstring
    )
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    print(f"\n== {model.name} (meta_pooling={meta_pooling!r})", flush=True)
    start = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        batch_size=FLAGS.batch_size,
        epochs=FLAGS.epochs,
        verbose=1 if sys.stdout.isatty() else 2,
    )
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    return model, accuracy, seconds


def main(argv):
    del argv
    print("Loading Fashion-MNIST from local files ...", flush=True)
    x_train, y_train = load_fashion_mnist("train", limit=FLAGS.train_size)
    x_test, y_test = load_fashion_mnist("test", limit=FLAGS.test_size)
    data = (
        (to_model_input(x_train, FLAGS.image_size), y_train),
        (to_model_input(x_test, FLAGS.image_size), y_test),
    )
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    rows = []
    for meta_pooling in ("none", "paper"):
        model, accuracy, seconds = train_and_evaluate(meta_pooling, data)
        path = os.path.join(FLAGS.output_dir, f"{model.name}.keras")
        model.save(path)
        rows.append((model.name, count_params(model), count_macs(model), accuracy, seconds, path))
    km.ArchitectureSpec.paper().save(os.path.join(FLAGS.output_dir, "paper_architecture.json"))

    print(
        f"\nFashion-MNIST, {FLAGS.image_size}x{FLAGS.image_size}, alpha {FLAGS.alpha}, "
        f"{FLAGS.epochs} epochs on {len(y_train)} images, tested on {len(y_test)}:"
    )
    print(f"{'model':<26}{'params':>10}{'MACs':>10}{'test acc':>10}{'train s':>9}  saved to")
    for name, params, macs, accuracy, seconds, path in rows:
        print(
            f"{name:<26}{params / 1e6:>9.3f}M{macs / 1e6:>9.1f}M{accuracy:>10.4f}"
            f"{seconds:>9.0f}  {path}"
        )
    print("\nOne short run on one seed: a check of the pipeline, not evidence either way.")


if __name__ == "__main__":
    app.run(main)

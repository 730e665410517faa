"""Deployment benchmark: MobileNetV2 vs MobileNetV2MP ("paper", classic head) as TFLite.

    python benchmarks/deploy.py --quick          # alpha 0.35 at 96x96 only
    python benchmarks/deploy.py                  # alpha 0.35 and 1.0 at 96x96 and 224x224
    python benchmarks/deploy.py --noqat --runs=300 --output=deploy.md

For each (alpha, input size), both models (random weights, BN statistics of a
few real images, 10 classes):

- ``.tflite`` size in the float and int8 modes (``keras_metapool.export.to_tflite``);
- the number of ops of the int8 file (SSP's cost on small maps is per op,
  not per MAC);
- float and int8 latency at batch 1 on one thread: the median of ``--runs``
  invokes (LiteRT, XNNPACK), the two models' invokes interleaved in one run so
  that machine load hits both alike, and the ratio MP / MobileNetV2;
- the Edge TPU report of the ``edgetpu`` export: ops mapped / all, subgraphs;

and, with ``--qat`` (default on), at the smallest input size only, the QAT
accuracy retention on Fashion-MNIST: each model is trained briefly in float
(``--float_epochs``), then both the float model and its QAT model
(``keras_metapool.quantization.quantize_model``) train ``--qat_epochs`` more
at the same learning rate; the QAT model is converted to int8. The table
compares the float Keras accuracy with the int8 TFLite accuracy
(``evaluate_tflite``) on the test images, and the int8 TFLite model with the
QAT Keras model it came from.

MobileNetV2 is ``MobileNetV2MP(meta_pooling="none")``: the keras.applications
network, layer for layer, so that both models go through the same QAT path.
Latencies are of this machine's CPU (see docs/platform.md: int8 may be slower than
float under XNNPACK here); compare models within a format, not formats.
"""

import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# This checkout's package, not an installed copy: the benchmarks measure this tree.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402
from _common import interleaved_latency, settle_batch_norms  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import keras_metapool as km  # noqa: E402
from keras_metapool import keras  # noqa: E402
from keras_metapool.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from keras_metapool.data.preprocessing import to_model_input  # noqa: E402
from keras_metapool.export import evaluate_tflite, to_tflite  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("alphas", ["0.35", "1.0"], "Width multipliers.")
flags.DEFINE_list("sizes", ["96", "224"], "Square input sizes.")
flags.DEFINE_bool("quick", False, "Only alpha 0.35 at 96x96, and a shorter QAT run.")
flags.DEFINE_integer("runs", 100, "Timed invokes per model and format (median).", lower_bound=1)
flags.DEFINE_integer("threads", 1, "Interpreter threads.", lower_bound=1)
flags.DEFINE_bool("qat", True, "Also measure QAT accuracy retention (smallest input size).")
flags.DEFINE_integer("train_images", 10000, "Fashion-MNIST training images for QAT runs.")
flags.DEFINE_integer("test_images", 2000, "Fashion-MNIST test images for accuracies.")
flags.DEFINE_integer("float_epochs", 3, "Float training epochs before QAT.")
flags.DEFINE_integer("qat_epochs", 1, "QAT fine-tuning epochs.")
flags.DEFINE_integer("seed", 0, "Seed of weights and data order.")
flags.DEFINE_string("output", None, "Also write the tables to this markdown file.")

MODELS = (
    ("MobileNetV2", dict(meta_pooling="none")),
    ("MobileNetV2MP paper", dict(meta_pooling="paper", head="classic")),
)
CALIBRATION_IMAGES = 128


def build(alpha, size, options):
    return km.MobileNetV2MP(
        weights=None,
        alpha=alpha,
        input_shape=(size, size, 3),
        classes=10,
        batch_norm_momentum=0.9,
        **options,
    )


def deploy_rows(alpha, size, calibration, folder):
    """Size, latency and Edge TPU rows for both models at (alpha, size)."""
    exports = {}
    for label, options in MODELS:
        keras.utils.set_random_seed(FLAGS.seed)
        model = build(alpha, size, options)
        settle_batch_norms(model, calibration[:32])
        stem = os.path.join(folder, f"{label.replace(' ', '_')}_{alpha}_{size}")
        exports[label] = {
            mode: to_tflite(model, f"{stem}_{mode}.tflite", mode, calibration, strict=False)
            for mode in ("float", "int8", "edgetpu")
        }
        keras.backend.clear_session()
    latency = {}
    for mode in ("float", "int8"):
        paths = [exports[label][mode].path for label, _ in MODELS]
        latency[mode] = interleaved_latency(paths, FLAGS.runs, FLAGS.threads)
    rows = []
    for index, (label, _) in enumerate(MODELS):
        report = exports[label]["edgetpu"].edgetpu_report
        ratios = [latency[mode][index] / latency[mode][0] for mode in ("float", "int8")]
        rows.append(
            f"| {alpha} | {size} | {label} "
            f"| {exports[label]['float'].size_bytes / 2**20:.2f} MiB "
            f"| {exports[label]['int8'].size_bytes / 2**20:.2f} MiB "
            f"| {latency['float'][index]:.2f} ms | {ratios[0]:.2f} "
            f"| {latency['int8'][index]:.2f} ms | {ratios[1]:.2f} "
            f"| {exports[label]['int8'].num_ops} "
            f"| {report.num_tpu_ops}/{report.num_ops} ({100 * report.mapped_fraction:.0f}%), "
            f"{report.tpu_subgraphs} subgraph{'s' if report.tpu_subgraphs != 1 else ''} |"
        )
    return rows


def image_dataset(images, labels, size, batch_size, shuffle=False):
    """Fashion-MNIST uint8 -> resized [-1, 1] RGB batches, made on the fly."""
    data = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        data = data.shuffle(len(images), seed=FLAGS.seed)

    def prepare(image, label):
        x = tf.image.resize(tf.cast(image[..., None], tf.float32), (size, size))
        return tf.repeat(x, 3, axis=-1) / 127.5 - 1.0, label

    return data.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)


def qat_rows(alpha, size, folder):
    """Float Keras vs int8 TFLite (after QAT) accuracy of both models."""
    from keras_metapool.quantization import quantize_model

    train_x, train_y = load_fashion_mnist("train", limit=FLAGS.train_images)
    test_x, test_y = load_fashion_mnist("test", limit=FLAGS.test_images)
    train = image_dataset(train_x, train_y, size, 64, shuffle=True)
    test = image_dataset(test_x, test_y, size, 256)
    calibration = to_model_input(train_x[:CALIBRATION_IMAGES], size)
    rows = []
    for label, options in MODELS:
        keras.utils.set_random_seed(FLAGS.seed)
        model = build(alpha, size, options)
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
        start = time.time()
        model.fit(train, epochs=FLAGS.float_epochs, verbose=0)
        qat = quantize_model(model)  # a new model: the float one trains on below
        # Same budget for both: the float model also gets the QAT epochs, at
        # the QAT learning rate, so that "int8 - float" is quantization's cost
        # and not the effect of more training.
        for trained in (model, qat):
            trained.compile(
                keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy", ["accuracy"]
            )
            trained.fit(train, epochs=FLAGS.qat_epochs, verbose=0)
        float_accuracy = model.evaluate(test, verbose=0)[1]
        qat_accuracy = qat.evaluate(test, verbose=0)[1]
        path = os.path.join(folder, f"qat_{label.replace(' ', '_')}.tflite")
        to_tflite(qat, path, "int8", calibration)
        int8 = evaluate_tflite(path, test, batch_size=64, num_threads=FLAGS.threads)
        rows.append(
            f"| {alpha} | {size} | {label} | {float_accuracy:.4f} | {qat_accuracy:.4f} "
            f"| {int8.accuracy:.4f} | {100 * (int8.accuracy - float_accuracy):+.1f} "
            f"| {100 * (int8.accuracy - qat_accuracy):+.1f} | {time.time() - start:.0f} s |"
        )
        keras.backend.clear_session()
    return rows


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # app.run's INFO floods the tables
    alphas = [0.35] if FLAGS.quick else [float(a) for a in FLAGS.alphas]
    sizes = [96] if FLAGS.quick else [int(s) for s in FLAGS.sizes]
    if FLAGS.quick:  # shorter QAT run, unless set on the command line
        for name, value in (("train_images", 5000), ("test_images", 1000), ("float_epochs", 2)):
            if not FLAGS[name].present:
                FLAGS[name].value = value
    lines = [
        "| alpha | input | model | float .tflite | int8 .tflite | float latency | "
        "ratio | int8 latency | ratio | int8 ops | Edge TPU ops (edgetpu mode) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            pixels, _ = load_fashion_mnist("train", limit=CALIBRATION_IMAGES)
            calibration = to_model_input(pixels, size)
            for alpha in alphas:
                lines += deploy_rows(alpha, size, calibration, folder)
                print(lines[-2], lines[-1], sep="\n", flush=True)
        if FLAGS.qat:
            lines += [
                "",
                "| alpha | input | model | float Keras acc | QAT Keras acc | int8 TFLite acc "
                "| int8 - float (points) | int8 - QAT Keras (points) | time |",
                "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
            ]
            for alpha in alphas:
                lines += qat_rows(alpha, min(sizes), folder)
                print(lines[-2], lines[-1], sep="\n", flush=True)
    table = "\n".join(lines)
    print()
    print(f"Command: python {' '.join(sys.argv)}")
    print(table)
    if FLAGS.output:
        with open(FLAGS.output, "w", encoding="utf-8") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    app.run(main)

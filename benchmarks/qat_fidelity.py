"""How faithfully the QAT model predicts its int8 TFLite model, and what int8 costs.

    python benchmarks/qat_fidelity.py                 # the numbers in the report
    python benchmarks/qat_fidelity.py --input_size 32 --train_images 4000   # quicker

For each architecture (MobileNetV2 = ``meta_pooling="none"``, the paper's
MobileNetV2MP, and the "global" ablation: SSP after every block, each followed
by BN + hard swish), with the same seed and budget:

1. train the float model (``--float_epochs`` on ``--train_images``
   Fashion-MNIST images);
2. for each QAT recipe, build the QAT model from that float model, train it
   ``--qat_epochs`` more, convert it to int8 (``to_tflite(mode="int8")``);
3. report float, QAT (Keras) and int8 (TFLite) test accuracy, and the top-1
   agreement of the int8 model with the QAT model it came from.

QAT recipes:

- ``tfmot``: ``tfmot.quantization.keras.quantize_model`` as shipped (only
  for MobileNetV2: it rejects our layers);
- ``ours, no calibration``: ``keras_metapool.quantization.quantize_model``;
- ``ours``: the same with ``representative_data`` (activation ranges
  calibrated from 256 training images before QAT);
- ``Keras 3``: the float model converted (``keras_metapool.keras3.to_keras3``),
  then ``keras_metapool.keras3.quantize_model`` with the same calibration,
  trained by Keras 3's ``fit`` (same optimizer, batch and epochs).

The float model does not train during QAT, so "int8 - float" includes what
the QAT epoch itself learns; the QAT/int8 agreement is the fidelity measure.
"""

import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# This checkout's package, not an installed copy: the benchmarks measure this tree.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras as keras_3  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_metapool as km  # noqa: E402
from keras_metapool import keras, keras3  # noqa: E402
from keras_metapool._model_checks import is_keras3  # noqa: E402
from keras_metapool.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from keras_metapool.data.preprocessing import to_model_input  # noqa: E402
from keras_metapool.export import tflite_predict, to_tflite  # noqa: E402
from keras_metapool.quantization import quantize_model  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_float("alpha", 0.35, "Width multiplier.")
flags.DEFINE_integer("input_size", 48, "Input height and width (Fashion-MNIST is resized).")
flags.DEFINE_integer("train_images", 6000, "Fashion-MNIST training images.")
flags.DEFINE_integer("test_images", 2000, "Fashion-MNIST test images.")
flags.DEFINE_integer("float_epochs", 3, "Float training epochs (batch 128, Adam 5e-3).")
flags.DEFINE_integer("qat_epochs", 1, "QAT epochs (batch 64, Adam 1e-4).")
flags.DEFINE_integer("seed", 0, "Seed of weights and data order.")
flags.DEFINE_list("architectures", ["none", "paper", "global"], "Architectures to run.")

ARCHITECTURES = {
    "none": ("MobileNetV2", dict(meta_pooling="none")),
    "paper": ("MobileNetV2MP paper", dict(meta_pooling="paper")),
    "global": ("MobileNetV2MP global (post-norm)", dict(meta_pooling=None)),
}


def build(options):
    options = dict(options)
    if options["meta_pooling"] is None:
        options["meta_pooling"] = km.ArchitectureSpec.ablation("global")
    return km.MobileNetV2MP(
        weights=None, alpha=FLAGS.alpha, input_shape=(FLAGS.input_size,) * 2 + (3,),
        classes=10, batch_norm_momentum=0.9, **options,
    )  # fmt: skip


def tfmot_quantize(model, images):
    import tensorflow_model_optimization as tfmot

    return tfmot.quantization.keras.quantize_model(model)


def ours_without_calibration(model, images):
    return quantize_model(model)


def ours(model, images):
    return quantize_model(model, representative_data=images[:256])


def keras3_route(model, images):
    keras_3.utils.set_random_seed(FLAGS.seed)
    return keras3.quantize_model(keras3.to_keras3(model), representative_data=images[:256])


def train_qat(qat, x_train, y_train):
    """Compiles and trains a QAT model of either flavour (Adam 1e-4, batch 64)."""
    flavour = keras_3 if is_keras3(qat) else keras
    qat.compile(flavour.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
    qat.fit(x_train, y_train, batch_size=64, epochs=FLAGS.qat_epochs, verbose=0)


def main(argv):
    del argv
    x_train, y_train = load_fashion_mnist("train", limit=FLAGS.train_images)
    x_test, y_test = load_fashion_mnist("test", limit=FLAGS.test_images)
    x_train = to_model_input(x_train, FLAGS.input_size)
    x_test = to_model_input(x_test, FLAGS.input_size)
    folder = tempfile.mkdtemp(prefix="qat_fidelity_")
    rows = []
    for key in FLAGS.architectures:
        label, options = ARCHITECTURES[key]
        keras.utils.set_random_seed(FLAGS.seed)
        model = build(options)
        model.compile(keras.optimizers.Adam(5e-3), "sparse_categorical_crossentropy")
        model.fit(x_train, y_train, batch_size=128, epochs=FLAGS.float_epochs, verbose=0)
        float_accuracy = np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test)
        recipes = [
            ("ours, no calibration", ours_without_calibration),
            ("ours", ours),
            ("Keras 3", keras3_route),
        ]
        if key == "none":
            recipes.insert(0, ("tfmot", tfmot_quantize))
        for recipe, quantize in recipes:
            start = time.time()
            keras.utils.set_random_seed(FLAGS.seed)
            qat = quantize(model, x_train)
            train_qat(qat, x_train, y_train)
            qat_top1 = qat.predict(x_test, verbose=0).argmax(1)
            path = os.path.join(folder, f"{key}_{len(rows)}.tflite")
            to_tflite(qat, path, mode="int8", representative_data=x_train[:128])
            int8_top1 = tflite_predict(path, x_test).argmax(1)
            rows.append(
                f"| {label} | {recipe} | {100 * float_accuracy:.2f} "
                f"| {100 * np.mean(qat_top1 == y_test):.2f} "
                f"| {100 * np.mean(int8_top1 == y_test):.2f} "
                f"| {100 * np.mean(int8_top1 == qat_top1):.2f} | {time.time() - start:.0f} s |"
            )
            print(rows[-1], flush=True)
            keras.backend.clear_session()
    print(
        f"\nalpha {FLAGS.alpha}, {FLAGS.input_size}x{FLAGS.input_size}, "
        f"{FLAGS.train_images} training / {FLAGS.test_images} test images, "
        f"float {FLAGS.float_epochs} epochs, QAT {FLAGS.qat_epochs} epoch(s), seed {FLAGS.seed}\n"
    )
    print("| model | QAT recipe | float % | QAT % | int8 % | int8 = QAT top-1 % | QAT time |")
    print("|---|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    app.run(main)

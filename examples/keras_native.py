"""The Keras-native flow: search, fit, quantize, export for the Edge TPU.

    python examples/keras_native.py                    # ~10 minutes on 2 CPU cores
    python examples/keras_native.py --image_size=32 --train_size=4096 \
        --candidates=identity,ssp,avg3                 # ~1 minute, a flow check

What it shows, on Fashion-MNIST read from local files (nothing downloads):

1. ``MobileNetV2MP(weights=None, ...)`` is a searchable supernet by default
   (a ``MetaPoolingBlock`` at each of the 16 points inside blocks 1-16, with
   the candidate ops that fit the point's feature map; ``--candidates``
   narrows them, and fewer candidates trace and step faster);
2. ``compile`` and ``fit`` as for any Keras model; the search (PMPL) is one
   callback, ``PMPLCallback``, whose architecture steps use a held-out part
   of the training split (``load_dataset(..., search_part="arch")``);
3. after ``fit`` every point is fixed: a point is decided once the evidence
   says its best op beats no enhancer (``identity``) or the reverse, and at
   the late stage (2/3 of the epochs) the points still undecided become
   ``identity``; the last third of ``fit`` trains that architecture. Few
   points are decided in a short run, and ``fit`` warns when fewer than half
   were;
4. ``quantize_model`` makes the quantization-aware (QAT) twin of the fixed
   model (the unused candidate ops are dropped), trained briefly;
5. ``keras_metapool.export.to_tflite(mode="edgetpu")`` writes a uint8,
   batch-1 .tflite and checks it against the Edge TPU rules; the report is
   printed, and the int8 model's accuracy is measured with LiteRT on the CPU.

The core is the five statements under "The flow" in ``main``; the rest is
data and printing. This trains the searched supernet's weights on (a
fine-tune, short and convenient); the paper instead trains the derived
architecture from scratch (``MobileNetV2MP(meta_pooling=pmpl.architecture)``,
see examples/imagenet_recipe.py).

The architecture learning rate defaults to PMPLCallback's ``"auto"``: sized to
the architecture steps the run takes (the paper's 3e-4 needs far more steps
than a CPU run affords). Artifacts in --output_dir:
the searched architecture (JSON) and the Edge TPU-ready model
(``<name>_edgetpu.tflite``; compile it with examples/coral_export.py's
instructions).
"""

import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

import keras_metapool as km  # noqa: E402
from keras_metapool import keras  # noqa: E402
from keras_metapool.data import load_dataset  # noqa: E402
from keras_metapool.export import evaluate_tflite, to_tflite  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("image_size", 64, "Input size (Fashion-MNIST is upsampled).", lower_bound=32)
flags.DEFINE_float("alpha", 0.35, "Width multiplier.", lower_bound=0.01)
flags.DEFINE_integer(
    "train_size", 10000, "Training images (half held out for the architecture steps)."
)
flags.DEFINE_integer("test_size", 2000, "Test images.", lower_bound=1)
flags.DEFINE_integer("epochs", 3, "Search epochs.", lower_bound=1)
flags.DEFINE_integer("qat_epochs", 1, "Quantization-aware training epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "Batch size.", lower_bound=1)
flags.DEFINE_string(
    "arch_learning_rate",
    "auto",
    "Adam learning rate of the search logits: 'auto' (sized to the run) or a number "
    "(the paper: 3e-4).",
)
flags.DEFINE_list(
    "candidates",
    None,
    "Candidate ops of every point, e.g. identity,ssp,avg3 (default: the package's).",
)
flags.DEFINE_integer("seed", 0, "Random seed (weights, shuffling, augmentation).")
flags.DEFINE_string("output_dir", "runs/keras_native", "Where the spec and .tflite are written.")

CALIBRATION_IMAGES = 256  # quantize_model's recommended amount


def fashion_mnist(split, limit, **kwargs):
    """Batched ``(images in [-1, 1], labels)`` of Fashion-MNIST at FLAGS.image_size."""
    dataset, _ = load_dataset(
        "fashion_mnist",
        split=split,
        image_size=FLAGS.image_size,
        batch_size=FLAGS.batch_size,
        seed=FLAGS.seed,
        limit=limit,
        **kwargs,
    )
    return dataset


class FailOnNaN(keras.callbacks.Callback):
    """Stops a diverged run at once, with a clear error (not later, in the converter)."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise RuntimeError(
                f"The loss became {loss} at step {batch + 1}: training diverged. Train "
                "longer (more images or epochs) before QAT, or lower the learning rate."
            )


def arch_learning_rate():
    """--arch_learning_rate as PMPLCallback takes it: "auto" or a number."""
    if FLAGS.arch_learning_rate == "auto":
        return "auto"
    try:
        return float(FLAGS.arch_learning_rate)
    except ValueError:
        raise app.UsageError(
            f"--arch_learning_rate must be 'auto' or a number, got {FLAGS.arch_learning_rate!r}."
        ) from None


def main(argv):
    del argv
    keras.utils.set_random_seed(FLAGS.seed)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    verbose = 1 if sys.stdout.isatty() else 2
    # The architecture steps need data the weights never train on: split_for_search's
    # two disjoint halves of the training split.
    train = fashion_mnist("train", FLAGS.train_size, training=True, search_part="weights")
    held_out = fashion_mnist("train", FLAGS.train_size, search_part="arch")
    calibration = fashion_mnist("train", CALIBRATION_IMAGES)
    test = fashion_mnist("test", FLAGS.test_size)
    stop_on_nan = FailOnNaN()

    # -- The flow -------------------------------------------------------------
    model = km.MobileNetV2MP(
        weights=None,  # meta_pooling="search": the supernet
        input_shape=(FLAGS.image_size, FLAGS.image_size, 3),
        alpha=FLAGS.alpha,
        classes=10,
        batch_norm_momentum=0.9,  # short run: see MobileNetV2MP's docstring
        search_candidates=FLAGS.candidates,  # None: the default candidates
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    pmpl = km.PMPLCallback(arch_data=held_out, learning_rate=arch_learning_rate())
    model.fit(train, epochs=FLAGS.epochs, callbacks=[pmpl, stop_on_nan], verbose=verbose)
    qat = km.quantize_model(model, representative_data=calibration)  # every point is fixed
    qat.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy", ["accuracy"])
    qat.fit(train, epochs=FLAGS.qat_epochs, callbacks=[stop_on_nan], verbose=verbose)
    path = os.path.join(FLAGS.output_dir, f"{model.name}_edgetpu.tflite")
    exported = to_tflite(qat, path, mode="edgetpu", representative_data=calibration)
    # ---------------------------------------------------------------------------
    model_path = os.path.join(FLAGS.output_dir, f"{model.name}.keras")
    model.save(model_path)  # the searched model, every point fixed: coral_export.py --model

    print("\nSearched architecture (PMPLCallback.summary()):")
    pmpl.summary()
    spec_path = os.path.join(FLAGS.output_dir, "architecture.json")
    pmpl.architecture.save(spec_path)
    print(f"Architecture: {pmpl.architecture}\nsaved to {spec_path}; model: {model_path}")

    print(f"\nEdge TPU report of {exported.path}:")
    print(exported.edgetpu_report)
    details = exported.input
    print(
        f"input {details.dtype} {list(details.shape)} (scale {details.scale:.6f}, zero point "
        f"{details.zero_point}), {exported.size_bytes / 1024:.0f} KiB"
    )

    _, float_accuracy = model.evaluate(test, verbose=0)
    _, qat_accuracy = qat.evaluate(test, verbose=0)
    int8 = evaluate_tflite(exported.path, test)
    print(f"\nTest accuracy on {int8.num_examples} Fashion-MNIST images:")
    print(f"  supernet after search (float)  {float_accuracy:.4f}")
    print(f"  QAT model (Keras)              {qat_accuracy:.4f}")
    print(f"  Edge TPU .tflite (LiteRT, CPU) {int8.accuracy:.4f}")


if __name__ == "__main__":
    app.run(main)

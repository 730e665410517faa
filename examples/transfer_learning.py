"""Transfer learning: add Meta-Pooling to a trained MobileNetV2, then fine-tune it.

    python examples/transfer_learning.py                # several minutes on 2 CPU cores
    python examples/transfer_learning.py --image_size=32 --train_size=256 --epochs=1  # <1 min
    python examples/transfer_learning.py --base=applications   # a tf_keras.applications base
    python examples/transfer_learning.py --weights=imagenet --image_size=96   # see below

What it shows, on Fashion-MNIST read from local files (nothing downloads):

1. a plain MobileNetV2 is trained (briefly): by default
   ``MobileNetV2MP(meta_pooling="none")``, which is ``keras.applications.
   MobileNetV2`` layer for layer (same names, same weights) with the batch-norm
   momentum exposed; ``--base=applications`` uses
   ``tf_keras.applications.MobileNetV2(weights=None, ...)`` itself, whose
   momentum 0.999 leaves a short run's BN statistics unsettled (its test
   accuracy after one epoch is then near chance: that is the base, not the
   conversion);
2. ``keras_metapool.from_mobilenet_v2(base, meta_pooling="paper")`` copies it
   into a MobileNetV2MP with an SSP (spatial separable pooling) after blocks
   6-16. Each new SSP starts as a constant scale whose inverse is folded into
   the block's ``project_BN``, so the new model predicts like the base before
   any fine-tuning: the script prints the top-1 agreement of the two (1.0) and
   the largest difference of a class probability (float rounding: ~1e-8 here);
3. the Meta-Pooling model is fine-tuned briefly at a lower learning rate, and
   the test accuracy of the base and of the MP model are printed. As a control
   the base is then trained for as many epochs with the same optimizer
   (``--nocontrol`` skips it), so that "MP after fine-tuning" is compared with
   a base that trained as long, not with one that trained less.

``--weights=imagenet`` starts the base from keras.applications' ImageNet
MobileNetV2 (the feature layers; the 10-class classifier is new). The file,
e.g. ``mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5`` for
``--alpha=0.35 --image_size=96``, is read from ``~/.keras/models/`` (or
``$KERAS_HOME/models/``); keras would download it on a machine with internet.
Not the default: this machine is offline, and 28x28 grey images are far from
ImageNet anyway. Files exist for alpha 0.35, 0.5, 0.75, 1.0, 1.3, 1.4 and sizes
96, 128, 160, 192, 224 (other sizes load the 224 file, with a warning).

One short run on one seed checks the mechanics; it is not evidence that
Meta-Pooling helps (see benchmarks/).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_metapool as km  # noqa: E402
from keras_metapool import keras  # noqa: E402
from keras_metapool.data import load_dataset  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum(
    "base",
    "mobilenetv2mp",
    ["mobilenetv2mp", "applications"],
    "The plain MobileNetV2: 'mobilenetv2mp' (MobileNetV2MP(meta_pooling='none'), BN momentum "
    "0.9) or 'applications' (tf_keras.applications.MobileNetV2, BN momentum 0.999).",
)
flags.DEFINE_enum(
    "weights",
    None,
    ["imagenet"],
    "Start the base from keras.applications' ImageNet weights (file in ~/.keras/models/).",
)
flags.DEFINE_integer("image_size", 64, "Input size (Fashion-MNIST is upsampled).", lower_bound=32)
flags.DEFINE_float("alpha", 0.35, "Width multiplier.", lower_bound=0.01)
flags.DEFINE_integer("train_size", 10000, "Training images (of 60,000).", lower_bound=1)
flags.DEFINE_integer("test_size", 2000, "Test images (of 10,000).", lower_bound=1)
flags.DEFINE_integer("epochs", 2, "Training epochs of the base.", lower_bound=1)
flags.DEFINE_integer("fine_tune_epochs", 1, "Fine-tuning epochs of the MP model.", lower_bound=1)
flags.DEFINE_float("learning_rate", 2e-3, "Adam learning rate of the base.")
flags.DEFINE_float("fine_tune_learning_rate", 5e-4, "Adam learning rate of the fine-tuning.")
flags.DEFINE_integer("batch_size", 64, "Batch size.", lower_bound=1)
flags.DEFINE_bool("control", True, "Also train the base for --fine_tune_epochs more epochs.")
flags.DEFINE_integer("seed", 0, "Random seed (weights, shuffling, augmentation).")


def fashion_mnist(split, limit, training=False):
    """Batched ``(images in [-1, 1], labels)`` of Fashion-MNIST at FLAGS.image_size."""
    dataset, _ = load_dataset(
        "fashion_mnist",
        split=split,
        image_size=FLAGS.image_size,
        batch_size=FLAGS.batch_size,
        training=training,
        seed=FLAGS.seed,
        limit=limit,
    )
    return dataset


def build_base():
    """The plain MobileNetV2 with a 10-class classifier (see --base and --weights)."""
    shape = (FLAGS.image_size, FLAGS.image_size, 3)
    if FLAGS.base == "applications":
        base = keras.applications.MobileNetV2(
            weights=None, input_shape=shape, alpha=FLAGS.alpha, classes=10
        )
    else:
        base = km.MobileNetV2MP(
            weights=None,
            meta_pooling="none",  # plain MobileNetV2, keras.applications' layers
            input_shape=shape,
            alpha=FLAGS.alpha,
            classes=10,
            batch_norm_momentum=0.9,  # short run: see MobileNetV2MP's docstring
        )
    if FLAGS.weights == "imagenet":
        # ImageNet has 1000 classes: take the feature layers of the no-top model.
        # keras_metapool's builder reads keras.applications' file, and says where
        # to put it when it is not cached and cannot be downloaded.
        try:
            features = km.MobileNetV2MP(
                weights="imagenet",
                meta_pooling="none",
                include_top=False,
                input_shape=shape,
                alpha=FLAGS.alpha,
            )
        except ValueError as error:
            sys.exit(f"error: --weights=imagenet: {error}")
        for layer in features.layers:
            if layer.weights:
                base.get_layer(layer.name).set_weights(layer.get_weights())
    return base


def compile_for_training(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def main(argv):
    del argv
    keras.utils.set_random_seed(FLAGS.seed)
    verbose = 1 if sys.stdout.isatty() else 2
    train = fashion_mnist("train", FLAGS.train_size, training=True)
    test = fashion_mnist("test", FLAGS.test_size)
    labels = np.concatenate([y.numpy() for _, y in test])

    def accuracy(probabilities):
        return float(np.mean(probabilities.argmax(axis=1) == labels))

    # 1. A plain MobileNetV2, trained.
    base = build_base()
    compile_for_training(base, FLAGS.learning_rate)
    print(f"\n== 1. Training the base, {base.name} ({base.count_params():,} parameters)")
    base.fit(train, epochs=FLAGS.epochs, verbose=verbose)
    base_probabilities = base.predict(test, verbose=0)

    # 2. The same network with Meta-Pooling: it predicts like the base.
    model = km.from_mobilenet_v2(base, meta_pooling="paper")
    probabilities = model.predict(test, verbose=0)
    agreement = np.mean(probabilities.argmax(axis=1) == base_probabilities.argmax(axis=1))
    max_difference = np.abs(probabilities - base_probabilities).max()
    print(f"\n== 2. from_mobilenet_v2(base, meta_pooling='paper') -> {model.name}")
    extra = model.count_params() - base.count_params()
    print(f"  {model.count_params():,} parameters (+{extra:,} in the SSPs)")
    print(f"  before fine-tuning, on {len(labels)} test images:")
    print(f"    top-1 agreement with the base  {agreement:.4f}")
    print(f"    max |delta probability|        {max_difference:.2e}")

    # 3. Fine-tune the Meta-Pooling model.
    print(f"\n== 3. Fine-tuning {model.name} for {FLAGS.fine_tune_epochs} epoch(s)")
    compile_for_training(model, FLAGS.fine_tune_learning_rate)
    model.fit(train, epochs=FLAGS.fine_tune_epochs, verbose=verbose)
    tuned_probabilities = model.predict(test, verbose=0)

    rows = [
        (f"base, {FLAGS.epochs} epoch(s)", accuracy(base_probabilities)),
        ("MP, converted (no fine-tuning)", accuracy(probabilities)),
        (f"MP, +{FLAGS.fine_tune_epochs} fine-tuning epoch(s)", accuracy(tuned_probabilities)),
    ]
    if FLAGS.control:
        print(f"\n== Control: the base, {FLAGS.fine_tune_epochs} more epoch(s), same optimizer")
        compile_for_training(base, FLAGS.fine_tune_learning_rate)
        base.fit(train, epochs=FLAGS.fine_tune_epochs, verbose=verbose)
        rows.append(
            (
                f"base, +{FLAGS.fine_tune_epochs} epoch(s) (control)",
                accuracy(base.predict(test, verbose=0)),
            )
        )

    print(
        f"\nTest accuracy on {len(labels)} Fashion-MNIST images "
        f"({FLAGS.image_size}x{FLAGS.image_size}, alpha {FLAGS.alpha}, "
        f"{FLAGS.train_size} training images):"
    )
    for name, value in rows:
        print(f"  {name:<40} {value:.4f}")
    print("\nOne short run on one seed: a check of the mechanics, not evidence either way.")


if __name__ == "__main__":
    app.run(main)

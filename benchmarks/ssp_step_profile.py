"""Where SSP's share of a training step goes: TensorFlow profiler op statistics.

    python benchmarks/ssp_step_profile.py                  # paper model, alpha 0.35, 64 px
    python benchmarks/ssp_step_profile.py --formulation=convolutions

Profiles ``--steps`` ``train_on_batch`` steps of the paper model (SSP after
blocks 6-16) and prints, for the ops inside its SSP layers, the self time per
step of each op type and the mean time of one op, from the profiler's
"framework op stats". ``--formulation=convolutions`` profiles SSP as it
trained before 2026-12-05 (1x1 convolutions and Keras' fused batch norm in
training too); the default profiles the layer as shipped (matrix products,
the batch norm written out).

The profiler adds its own overhead to every op it records, so compare op
types within a profile; ``benchmarks/ssp_cost.py`` measures the step itself.
The profiler records the ops that run on TensorFlow's thread pool, not every
small op run inline, so the per-step op count is a lower bound.
"""

import collections
import glob
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# This checkout's package, not an installed copy: the benchmarks measure this tree.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from tensorflow.python.profiler.internal import _pywrap_profiler_plugin  # noqa: E402

import keras_metapool as km  # noqa: E402
from keras_metapool import keras  # noqa: E402
from keras_metapool.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from keras_metapool.data.preprocessing import to_model_input  # noqa: E402
from keras_metapool.layers.spatial_enhancer import SpatialEnhancer  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_float("alpha", 0.35, "Width multiplier.")
flags.DEFINE_integer("size", 64, "Square input size.", lower_bound=32)
flags.DEFINE_integer("batch", 64, "Training batch size.", lower_bound=1)
flags.DEFINE_integer("steps", 10, "Profiled training steps.", lower_bound=1)
flags.DEFINE_enum(
    "formulation",
    "shipped",
    ["shipped", "convolutions"],
    "SSP's training formulation: as shipped, or with its convolutions (before 2026-12-05).",
)


def op_statistics(folder):
    """The profiler's framework op stats in ``folder``, one dict per op name."""
    paths = glob.glob(os.path.join(folder, "**", "*.xplane.pb"), recursive=True)
    data, ok = _pywrap_profiler_plugin.xspace_to_tools_data(paths, "framework_op_stats", {})
    if not ok:
        raise RuntimeError(f"the profiler wrote no op statistics under {folder}")
    table = json.loads(data)[0]
    columns = [column["id"] for column in table["cols"]]
    return [
        dict(zip(columns, [cell.get("v") if cell else None for cell in row["c"]]))
        for row in table["rows"]
    ]


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    pixels, labels = load_fashion_mnist("train", limit=max(128, FLAGS.batch))
    images = to_model_input(pixels, FLAGS.size)[: FLAGS.batch]
    labels = labels[: FLAGS.batch]
    if FLAGS.formulation == "convolutions":
        SpatialEnhancer.call = lambda self, inputs, training=None: self._call_with_convolutions(
            inputs, training
        )
    keras.utils.set_random_seed(0)
    model = km.MobileNetV2MP(
        weights=None,
        alpha=FLAGS.alpha,
        input_shape=(FLAGS.size, FLAGS.size, 3),
        classes=10,
        meta_pooling="paper",
    )
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    for _ in range(5):  # tracing and warm-up, outside the profile
        model.train_on_batch(images, labels)
    with tempfile.TemporaryDirectory() as folder:
        tf.profiler.experimental.start(folder)
        for _ in range(FLAGS.steps):
            model.train_on_batch(images, labels)
        tf.profiler.experimental.stop()
        rows = op_statistics(folder)
    in_ssp = [row for row in rows if "_ssp/" in row["operation"]]
    milliseconds, count = collections.Counter(), collections.Counter()
    for row in in_ssp:
        milliseconds[row["type"]] += row["total_self_time"] / 1000 / FLAGS.steps
        count[row["type"]] += row["occurrences"] / FLAGS.steps
    print(
        f"\nCommand: python {' '.join(sys.argv)}\n\nSSP ops of the paper model, alpha "
        f"{FLAGS.alpha}, {FLAGS.size} px, batch {FLAGS.batch}, SSP {FLAGS.formulation}: "
        f"{sum(milliseconds.values()):.1f} ms per step in {sum(count.values()):.0f} "
        "recorded ops\n"
    )
    print("| op type | ms per step | ops per step | ms per op |")
    print("|---|---:|---:|---:|")
    for kind, spent in milliseconds.most_common():
        print(f"| {kind} | {spent:.2f} | {count[kind]:.0f} | {spent / count[kind]:.3f} |")


if __name__ == "__main__":
    app.run(main)

"""What SSP costs beyond its MACs: op count, int8 latency and training step.

    python benchmarks/ssp_cost.py                         # alpha 0.35 at 64 and 96 px
    python benchmarks/ssp_cost.py --sizes=64 --runs=500 --json=results/ssp_cost.json
    python benchmarks/ssp_cost.py --formulations=depthwise,op_floor,op_floor_depthwise

All 10 models at once (the default then; 11 today) raised every SSP ratio by 0.2-0.3
in one run on 2 cores (each interleaved model evicts the others from the caches):
compare ratios within one run, and pick a few formulations for numbers to quote.

SSP adds +0.2-0.4% MACs to MobileNetV2, but each SSP is 14 small graph ops, and
on small maps a small op costs its fixed overhead, not its arithmetic. This
script measures, for MobileNetV2 and the paper model (SSP after blocks 6-16)
built with different *formulations* of the same SSP function:

- ``separate`` (the layer as shipped): the shared bottleneck applied to the
  row and the column descriptors (row and column means, MEAN) one after the
  other; a training step runs it as matrix products with the batch norm
  written out (``SpatialEnhancer``'s docstring says why);
- ``convolutions``: ``separate`` with its convolutions and Keras' fused batch
  norm in training too (the shipped layer before 2026-12-05);
- ``depthwise``: ``separate`` with the means as depthwise convolutions with
  constant ``1/W`` (``1 x W``) and ``1/H`` (``H x 1``) kernels;
- ``stacked``: the descriptors reshaped and concatenated (``H + W``
  positions), one bottleneck pass, split back (the reference's layout; in
  training its BN sees both descriptors at once);
- ``fused_gates``: ``x * (gate_h * gate_w)`` instead of ``x * gate_h * gate_w``;
- ``pooled``: the descriptors by AVERAGE_POOL_2D (a ``1 x W`` and an
  ``H x 1`` window);
- ``stacked_gates``: ``stacked``, and the two gate convolutions as one
  (their kernels side by side, ``2C`` outputs on all ``H + W`` positions,
  each half read where it belongs): one CONV_2D and one LOGISTIC fewer;

(all but ``separate`` train with convolutions and Keras' batch norm), and
two *floors* that are not SSP: only the ops that every formulation of
SSP's function needs, the two means and the two gating products
(``x * mean_W(x) * mean_H(x)``), with the means by MEAN (``op_floor``) or
by depthwise convolution (``op_floor_depthwise``). No formulation with those
means can cost less than its floor;

the op count of the int8 ``.tflite``, its latency (batch 1, one thread, the
models' invokes interleaved), the training step (batch ``--batch``,
``--optimizer``, ``train_on_batch`` interleaved, CPU time of the process: the
work of a step, steadier than wall time on a shared machine) and the first
step (CPU time of the first ``train_on_batch``: tracing the step,
TensorFlow's graph optimizations and one step; once per model, not
interleaved), each as a ratio to MobileNetV2. MobileNetV2 is measured twice:
the ratio of the second copy is the noise floor of every ratio in the same
table.

All formulations compute the same function at inference (checked: the float
outputs of each model agree with the shipped layer's to 1e-5 before timing;
the floors are exempt).
"""

import contextlib
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# This checkout's package, not an installed copy: the benchmarks measure this tree.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import interleaved_latency, settle_batch_norms, write_results  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import keras_metapool as km  # noqa: E402
from keras_metapool import keras  # noqa: E402
from keras_metapool.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from keras_metapool.data.preprocessing import to_model_input  # noqa: E402
from keras_metapool.export import to_tflite  # noqa: E402
from keras_metapool.export.tflite_graph import read_tflite_graph  # noqa: E402
from keras_metapool.layers.activations import HARD_SWISH_SCALE  # noqa: E402
from keras_metapool.layers.spatial_enhancer import SpatialEnhancer  # noqa: E402

FLAGS = flags.FLAGS
FLOOR, FLOOR_DEPTHWISE = "op_floor", "op_floor_depthwise"
flags.DEFINE_float("alpha", 0.35, "Width multiplier.")
flags.DEFINE_list("sizes", ["64", "96"], "Square input sizes.")
flags.DEFINE_integer("runs", 300, "Interleaved int8 invokes per model (median).", lower_bound=1)
flags.DEFINE_integer("train_rounds", 40, "Interleaved training steps per model.", lower_bound=1)
flags.DEFINE_integer("batch", 64, "Training batch size.", lower_bound=1)
flags.DEFINE_enum(
    "optimizer", "sgd", ["sgd", "adam"], "Training step's optimizer (SGD 0.01 or Adam 2e-3)."
)
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
flags.DEFINE_list(
    "formulations",
    None,
    "Measure only these formulations (and floors) beside MobileNetV2; default all. Fewer "
    "models interleaved also thrash the caches less (ratios change with their number).",
)


def _rows_and_columns(inputs, means="mean"):
    """The row and column descriptors, (B, H, 1, C) and (B, 1, W, C).

    ``means``: "mean" (the layer's), "depthwise" or "pooled".
    """
    height, width, channels = inputs.shape[1], inputs.shape[2], inputs.shape[3]
    if means == "pooled":
        return (
            tf.nn.avg_pool2d(inputs, (1, width), (1, width), "VALID"),
            tf.nn.avg_pool2d(inputs, (height, 1), (height, 1), "VALID"),
        )
    if means == "depthwise":
        return tuple(
            tf.nn.depthwise_conv2d(
                inputs,
                tf.constant(
                    np.full((*window, channels, 1), 1.0 / (window[0] * window[1])), tf.float32
                ),
                (1, 1, 1, 1),
                "VALID",
            )
            for window in ((1, width), (height, 1))
        )
    return (
        tf.reduce_mean(inputs, axis=2, keepdims=True),
        tf.reduce_mean(inputs, axis=1, keepdims=True),
    )


def _separate(means="mean", fused=False):
    def call(self, inputs, training=None):
        rows, columns = _rows_and_columns(inputs, means)
        gate_h = self._gate(self.gate_h, self._bottleneck(rows, training))
        gate_w = self._gate(self.gate_w, self._bottleneck(columns, training))
        return inputs * (gate_h * gate_w) if fused else inputs * gate_h * gate_w

    return call


def _stacked(self, inputs, training=None):
    height, width, channels = inputs.shape[1], inputs.shape[2], inputs.shape[3]
    rows, columns = _rows_and_columns(inputs)
    columns = tf.reshape(columns, (-1, width, 1, channels))  # a reshape, not a transpose
    features = self._bottleneck(tf.concat([rows, columns], axis=1), training)
    rows_features, columns_features = tf.split(features, [height, width], axis=1)
    gate_h = self._gate(self.gate_h, rows_features)
    gate_w = tf.reshape(self._gate(self.gate_w, columns_features), (-1, 1, width, channels))
    return inputs * gate_h * gate_w


def _stacked_gates(self, inputs, training=None):
    height, width, channels = inputs.shape[1], inputs.shape[2], inputs.shape[3]
    rows, columns = _rows_and_columns(inputs)
    columns = tf.reshape(columns, (-1, width, 1, channels))
    features = self._bottleneck(tf.concat([rows, columns], axis=1), training)
    kernel = tf.concat([self.gate_h.kernel, self.gate_w.kernel], axis=-1) * HARD_SWISH_SCALE
    bias = tf.concat([self.gate_h.bias, self.gate_w.bias], axis=-1)
    gates = tf.sigmoid(tf.nn.bias_add(tf.nn.conv2d(features, kernel, 1, "VALID"), bias))
    gate_h = gates[:, :height, :, :channels]
    gate_w = tf.reshape(gates[:, height:, :, channels:], (-1, 1, width, channels))
    return inputs * gate_h * gate_w


def _floor(means):
    def call(self, inputs, training=None):
        """Not SSP: the means and gating products that every formulation needs."""
        rows, columns = _rows_and_columns(inputs, means)
        return inputs * rows * columns

    return call


def _with_convolutions(self, inputs, training=None):
    return self._call_with_convolutions(inputs, training)


FORMULATIONS = {
    "separate": None,  # the shipped layer
    "convolutions": _with_convolutions,
    "depthwise": _separate(means="depthwise"),
    "stacked": _stacked,
    "fused_gates": _separate(fused=True),
    "pooled": _separate(means="pooled"),
    "stacked_gates": _stacked_gates,
    FLOOR: _floor("mean"),
    FLOOR_DEPTHWISE: _floor("depthwise"),
}


@contextlib.contextmanager
def ssp_formulation(name):
    """Builds and traces SpatialEnhancer with formulation ``name`` inside the block."""
    shipped = SpatialEnhancer.call
    if FORMULATIONS[name] is not None:
        SpatialEnhancer.call = FORMULATIONS[name]
    try:
        yield
    finally:
        SpatialEnhancer.call = shipped


def build(meta_pooling, size):
    keras.utils.set_random_seed(0)
    extra = {"head": "classic"} if meta_pooling == "paper" else {}
    return km.MobileNetV2MP(
        weights=None,
        alpha=FLAGS.alpha,
        input_shape=(size, size, 3),
        classes=10,
        meta_pooling=meta_pooling,
        **extra,
    )


def make_optimizer():
    """A fresh optimizer of the kind ``--optimizer`` names."""
    if FLAGS.optimizer == "sgd":
        return keras.optimizers.SGD(0.01)
    return keras.optimizers.Adam(2e-3)


def measure(size, folder):
    pixels, labels = load_fashion_mnist("train", limit=max(128, FLAGS.batch))
    images = to_model_input(pixels, size)
    entries = [("MobileNetV2", "none", "separate")]
    floors = {FLOOR: "MEAN", FLOOR_DEPTHWISE: "depthwise means"}
    # The shipped layer always: the others are checked against it and compared with it.
    chosen = ["separate", *(n for n in FLAGS.formulations or FORMULATIONS if n != "separate")]
    unknown = sorted(set(chosen) - set(FORMULATIONS))
    if unknown:
        raise app.UsageError(f"--formulations: unknown {unknown}; known: {list(FORMULATIONS)}")
    entries += [(f"paper, SSP {name}", "paper", name) for name in chosen if name not in floors]
    entries += [
        (f"op floor: {means} and gating products only (not SSP)", "paper", name)
        for name, means in floors.items()
        if name in chosen
    ]
    entries += [("MobileNetV2 (noise floor)", "none", "separate")]
    # One throwaway step per model kind first: the timed first steps then exclude what
    # a process pays once (AutoGraph converting the layers' code), whichever runs first.
    for meta_pooling, formulation in dict.fromkeys((m, f) for _, m, f in entries):
        with ssp_formulation(formulation):
            model = build(meta_pooling, size)
            model.compile(make_optimizer(), "sparse_categorical_crossentropy")
            model.train_on_batch(images[:8], labels[:8])
    models, paths, ops, first_step, reference = {}, {}, {}, {}, None
    for label, meta_pooling, formulation in entries:
        with ssp_formulation(formulation):
            model = build(meta_pooling, size)
            settle_batch_norms(model, images[:32])
            if meta_pooling == "paper" and formulation not in floors:
                if reference is None:
                    reference = model.get_weights()
                model.set_weights(reference)  # the same weights and statistics for all
                outputs = model(images[:16], training=False).numpy()
                if formulation == "separate":
                    expected = outputs
                gap = float(np.max(np.abs(outputs - expected)))
                if gap > 1e-5:
                    raise AssertionError(f"{formulation} computes another function ({gap:.2e})")
            path = os.path.join(folder, f"{len(paths)}.tflite")
            to_tflite(model, path, "int8", images, strict=False)
            model.compile(make_optimizer(), "sparse_categorical_crossentropy")
            batch = (images[: FLAGS.batch], labels[: FLAGS.batch])
            start = time.process_time()
            model.train_on_batch(*batch)  # traces the step; TF optimizes the graph
            first_step[label] = time.process_time() - start
            for _ in range(2):
                model.train_on_batch(*batch)
        models[label], paths[label] = (model, formulation), path
        ops[label] = len(read_tflite_graph(path).ops)
        print(f"  built {label}: {ops[label]} int8 ops", flush=True)
    latency = dict(zip(paths, interleaved_latency(list(paths.values()), FLAGS.runs, 1)))
    steps = {label: [] for label in models}
    x, y = images[: FLAGS.batch], labels[: FLAGS.batch]
    for _ in range(FLAGS.train_rounds):
        for label, (model, formulation) in models.items():
            with ssp_formulation(formulation):
                start = time.process_time()
                model.train_on_batch(x, y)
                steps[label].append(time.process_time() - start)
    base = "MobileNetV2"
    rows = []
    for label in models:
        step = 1000 * statistics.median(steps[label])
        rows.append(
            dict(
                model=label,
                size=size,
                int8_ops=ops[label],
                int8_ms=latency[label],
                int8_ratio=latency[label] / latency[base],
                train_step_ms=step,
                train_ratio=step / (1000 * statistics.median(steps[base])),
                first_step_s=first_step[label],
                first_step_ratio=first_step[label] / first_step[base],
            )
        )
    keras.backend.clear_session()
    return rows


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in (int(s) for s in FLAGS.sizes):
            print(f"alpha {FLAGS.alpha}, {size}x{size}:", flush=True)
            rows += measure(size, folder)
    print(f"\nCommand: python {' '.join(sys.argv)}")
    print(
        "\n| input | model | int8 ops | int8 latency | ratio | training step "
        f"(batch {FLAGS.batch}, {FLAGS.optimizer}, CPU time) | ratio | first step | ratio |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['size']} | {row['model']} | {row['int8_ops']} | {row['int8_ms']:.3f} ms "
            f"| {row['int8_ratio']:.2f} | {row['train_step_ms']:.0f} ms "
            f"| {row['train_ratio']:.2f} | {row['first_step_s']:.1f} s "
            f"| {row['first_step_ratio']:.2f} |"
        )
    if FLAGS.json:
        write_results(FLAGS.json, dict(alpha=FLAGS.alpha, optimizer=FLAGS.optimizer), rows)


if __name__ == "__main__":
    app.run(main)

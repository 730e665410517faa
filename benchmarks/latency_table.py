"""A latency table for ``PMPLCallback(latency_weight=..., latency_table=...)``.

What each candidate op costs at a search point, measured for int8 TFLite on this
CPU and predicted for the Edge TPU:

1. For every candidate op, a fixed MobileNetV2MP with that op at every point
   of the search supernet whose (pruned) candidates hold it, nothing
   elsewhere; and plain MobileNetV2.
2. Each is converted to Edge TPU-ready int8 TFLite (static batch 1, the
   search's input size and width) and timed with the others, interleaved
   (``_common.interleaved_latency``, 1 thread); a second interpreter of the
   plain model is the noise control.
3. Per op: ``(latency(op model) - latency(plain)) / points`` in
   milliseconds, the CPU table; and, from ``keras_metapool.export.edgetpu_report``,
   the graph ops it adds per point, with whether all of them are predicted to
   map to the Edge TPU: the Edge TPU table (in added ops per point, the unit
   that matters there: each op is a scheduled step; a model with an unmapped op
   falls back to the CPU from it on).

    python benchmarks/latency_table.py                       # alpha 0.35, 64x64
    python benchmarks/latency_table.py --json=latency_table.json

Use it as ``PMPLCallback(latency_weight=w, latency_table=table["cpu_ms"])``.
"""

import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# This checkout's package, not an installed copy: the benchmarks measure this tree.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from _common import interleaved_latency, settle_batch_norms  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_metapool as km  # noqa: E402
from keras_metapool.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from keras_metapool.data.preprocessing import to_model_input  # noqa: E402
from keras_metapool.models.mobilenet_v2_mp import block_map_sizes  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_float("alpha", 0.35, "Width multiplier.")
flags.DEFINE_integer("input_size", 64, "Input height and width.")
flags.DEFINE_integer("runs", 100, "Interleaved timed invokes per model.")
flags.DEFINE_integer("threads", 1, "Interpreter threads.")
flags.DEFINE_string("json", None, "Also write the table to this JSON file.")


def build(spec):
    return km.MobileNetV2MP(
        weights=None, alpha=FLAGS.alpha, input_shape=(FLAGS.input_size,) * 2 + (3,),
        classes=10, meta_pooling=spec, batch_norm_momentum=0.9,
    )  # fmt: skip


def op_models():
    """``{op: (spec, points)}``: the op at every supernet point that offers it."""
    size = FLAGS.input_size
    space = km.ArchitectureSpec.search().pruned_for_input(block_map_sizes(size, size))
    models = {}
    for op in km.DEFAULT_CANDIDATES:
        if op == "identity":
            continue
        ops = [
            op if entry == "search" and op in space.candidates_at(i) else "identity"
            for i, entry in enumerate(space.ops)
        ]
        points = sum(entry != "identity" for entry in ops)
        if points:
            spec = km.ArchitectureSpec(ops, placement=space.placement, post_norm=space.post_norm)
            models[op] = (spec, points)
    return models


def main(argv):
    del argv
    images, _ = load_fashion_mnist("train", limit=128)
    calibration = np.asarray(to_model_input(images, FLAGS.input_size))
    models = op_models()
    paths, reports = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for key, spec in [("plain", "none")] + [(op, s) for op, (s, _) in models.items()]:
            model = build(spec)
            settle_batch_norms(model, calibration[:32])
            path = os.path.join(folder, f"{key}.tflite")
            km.export.to_tflite(model, path, "edgetpu", calibration, strict=False)
            paths[key] = path
            reports[key] = km.export.edgetpu_report(path)
        order = ["plain", "plain", *models]  # the second plain: the noise control
        medians = interleaved_latency([paths[k] for k in order], FLAGS.runs, FLAGS.threads)
    plain, control = medians[0], medians[1]
    table = {"cpu_ms": {}, "edgetpu_ops": {}, "edgetpu_all_mapped": {}, "points": {}}
    for op, median in zip(models, medians[2:]):
        points = models[op][1]
        table["cpu_ms"][op] = (median - plain) / points
        table["edgetpu_ops"][op] = (reports[op].num_ops - reports["plain"].num_ops) / points
        table["edgetpu_all_mapped"][op] = reports[op].all_mapped
        table["points"][op] = points
    table["plain_ms"] = plain
    table["control_ratio"] = control / plain
    print(
        f"int8 TFLite, alpha {FLAGS.alpha}, {FLAGS.input_size}x{FLAGS.input_size}, "
        f"{FLAGS.threads} thread(s), {FLAGS.runs} interleaved invokes; plain MobileNetV2 "
        f"{plain:.3f} ms (noise control {table['control_ratio']:.3f}x)\n"
    )
    print("| op | points | CPU ms per point | Edge TPU ops per point | all predicted mapped |")
    print("|---|---:|---:|---:|---|")
    for op in models:
        print(
            f"| {op} | {table['points'][op]} | {table['cpu_ms'][op]:+.4f} | "
            f"{table['edgetpu_ops'][op]:.1f} | {table['edgetpu_all_mapped'][op]} |"
        )
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(table, f, indent=2)


if __name__ == "__main__":
    app.run(main)

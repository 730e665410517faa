"""How long ``to_tflite`` takes: frozen-graph conversion against the SavedModel detour.

    python benchmarks/export_time.py
    python benchmarks/export_time.py --size=64 --rounds=3 --json=results/export_time.json

``tf.lite.TFLiteConverter.from_concrete_functions`` by default writes the
function and its variables as a SavedModel to a temporary folder and reads it
back before converting; ``to_tflite`` converts the frozen graph instead
(``keras_metapool._internals.convert_from_frozen_graph``) and writes the
serving signature itself. This script times both routes, interleaved, for the
paper model and its QAT model in every mode, and checks on the way that both
files hold the same ops and give the same outputs.
"""

import collections
import os
import statistics
import sys
import tempfile
import time
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# This checkout's package, not an installed copy: the benchmarks measure this tree.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from _common import settle_batch_norms, write_results  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import keras_metapool as km  # noqa: E402
from keras_metapool import _internals  # noqa: E402
from keras_metapool.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from keras_metapool.data.preprocessing import to_model_input  # noqa: E402
from keras_metapool.export import TFLITE_MODES, read_tflite_graph, tflite_predict  # noqa: E402
from keras_metapool.export.tflite import FULL_INTEGER_MODES  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_float("alpha", 0.35, "Width multiplier.")
flags.DEFINE_integer("size", 64, "Square input size.", lower_bound=32)
flags.DEFINE_integer("rounds", 3, "Conversions per model, mode and route (median).", lower_bound=1)
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")

ROUTES = ("SavedModel detour (TF's default)", "frozen graph (to_tflite)")


def export(model, path, mode, images, route):
    """Seconds of one ``to_tflite`` call by ``route``."""
    detour = mock.patch.object(_internals, "convert_from_frozen_graph", lambda converter: None)
    start = time.perf_counter()
    if route == ROUTES[0]:
        with detour:
            km.export.to_tflite(model, path, mode, images, strict=False)
    else:
        km.export.to_tflite(model, path, mode, images, strict=False)
    return time.perf_counter() - start


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    pixels, _ = load_fashion_mnist("train", limit=256)
    images = to_model_input(pixels, FLAGS.size)
    model = km.MobileNetV2MP(
        weights=None, meta_pooling="paper", alpha=FLAGS.alpha,
        input_shape=(FLAGS.size, FLAGS.size, 3), classes=10, batch_norm_momentum=0.9,
    )  # fmt: skip
    settle_batch_norms(model, images[:32])
    models = {"paper": model, "paper, QAT": km.quantize_model(model, images[:128])}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, each in models.items():
            # A QAT model exports in the full-integer modes only (to_tflite refuses the rest).
            modes = FULL_INTEGER_MODES if "QAT" in label else TFLITE_MODES
            for mode in modes:
                seconds = collections.defaultdict(list)
                paths = {r: os.path.join(folder, f"{i}.tflite") for i, r in enumerate(ROUTES)}
                for _ in range(FLAGS.rounds):
                    for route in ROUTES:
                        seconds[route].append(export(each, paths[route], mode, images, route))
                ops = [[op.name for op in read_tflite_graph(p).ops] for p in paths.values()]
                outputs = [tflite_predict(p, images[:32]) for p in paths.values()]
                if ops[0] != ops[1] or not np.array_equal(outputs[0], outputs[1]):
                    raise AssertionError(f"{label} {mode}: the two routes give different files")
                detour, frozen = (statistics.median(seconds[route]) for route in ROUTES)
                rows.append(
                    dict(model=label, mode=mode, detour_s=detour, frozen_s=frozen,
                         speedup=detour / frozen)
                )  # fmt: skip
                print(f"  {label:10} {mode:8} {detour:5.2f} s -> {frozen:5.2f} s", flush=True)
    print(f"\nCommand: python {' '.join(sys.argv)}")
    print("\n| model | mode | SavedModel detour | frozen graph | speed-up |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['model']} | `{row['mode']}` | {row['detour_s']:.1f} s | "
            f"{row['frozen_s']:.1f} s | {row['speedup']:.1f}x |"
        )
    print("\nBoth routes gave the same ops and identical outputs on 32 images in every row.")
    if FLAGS.json:
        write_results(FLAGS.json, dict(alpha=FLAGS.alpha, size=FLAGS.size), rows)


if __name__ == "__main__":
    app.run(main)

"""How often TF's TFLite converter crashes in a process that holds a Keras 3 model.

    python benchmarks/keras3_converter_crash.py                  # 10 runs per arm
    python benchmarks/keras3_converter_crash.py --runs=20 --json=results/keras3_converter_crash.json

docs/api.md ("Keras 3") reports whether a Keras 3 model in the same process makes
TensorFlow's TFLite converter crash; this script is that measurement.
Each run is a fresh Python process that builds a MobileNetV2MP (the paper
model, alpha 0.35, 32 px), quantizes it (QAT, one short calibration) and
exports it with ``to_tflite(mode="edgetpu")``. The arms:

- ``no_keras3``: only that;
- ``keras3``: the process first builds a Keras 3 ``keras.applications.MobileNetV2``
  and converts the model back with ``to_keras3``, as README's Keras 3
  example does;
- ``keras3_litert``: as ``keras3``, and the Keras 3 model is also exported
  with ``model.export(path, format="litert")`` before the tf_keras export.

The arms alternate run by run, so machine load hits all alike. A run
"crashed" when its process died by a signal (SIGSEGV inside a TFLite
conversion is what we have seen).
"""

import json
import os
import signal
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("runs", 10, "Runs per arm (fresh processes).", lower_bound=1)
flags.DEFINE_string("json", None, "Also write the counts to this JSON file.")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One run: the export flow, with or without a Keras 3 model in the process.
RUN = """
import os, sys, tempfile
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
sys.path.insert(0, {root!r})
import numpy as np
import keras_metapool as km
from keras_metapool.export import to_tflite
model = km.MobileNetV2MP(weights=None, alpha=0.35, input_shape=(32, 32, 3), classes=10,
                         meta_pooling="paper")
if {arm!r} != "no_keras3":
    import keras
    from keras_metapool.keras3 import to_keras3
    keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(32, 32, 3), classes=10)
    back = to_keras3(model)
    if {arm!r} == "keras3_litert":
        back.export(os.path.join(tempfile.mkdtemp(), "k3.tflite"), format="litert", verbose=False)
images = np.random.default_rng(0).uniform(-1, 1, (32, 32, 32, 3)).astype(np.float32)
qat = km.quantize_model(model, representative_data=images)
to_tflite(qat, os.path.join(tempfile.mkdtemp(), "m.tflite"), mode="edgetpu",
          representative_data=images)
"""


def _one_run(arm):
    """(outcome, seconds): outcome is "ok", "crashed (SIGNAME)" or "failed (rc N)"."""
    start = time.perf_counter()
    code = RUN.format(root=ROOT, arm=arm)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode == 0:
        return "ok", seconds
    if result.returncode < 0:
        return f"crashed ({signal.Signals(-result.returncode).name})", seconds
    sys.stderr.write(result.stderr[-2000:])
    return f"failed (rc {result.returncode})", seconds


def main(argv):
    del argv
    outcomes = {"no_keras3": [], "keras3": [], "keras3_litert": []}
    for run in range(FLAGS.runs):
        for arm in outcomes:
            outcome, seconds = _one_run(arm)
            outcomes[arm].append(outcome)
            print(f"run {run + 1}/{FLAGS.runs} {arm:>13}: {outcome} ({seconds:.0f} s)", flush=True)
    summary = {
        arm: {
            "runs": len(results),
            "crashed": sum(r.startswith("crashed") for r in results),
            "failed": sum(r.startswith("failed") for r in results),
            "outcomes": results,
        }
        for arm, results in outcomes.items()
    }
    for arm, counts in summary.items():
        print(f"{arm}: crashed in {counts['crashed']} of {counts['runs']} runs")
    if FLAGS.json:
        import tensorflow as tf

        summary["versions"] = {"tensorflow": tf.__version__, "python": sys.version.split()[0]}
        summary["date"] = time.strftime("%Y-%m-%d")
        with open(FLAGS.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    app.run(main)

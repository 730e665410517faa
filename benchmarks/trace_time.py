"""What AutoGraph's conversion of keras_metapool's layer calls costs in tracing.

tf_keras converts a subclassed layer's ``call`` with AutoGraph whenever it
traces it; keras_metapool's layers are marked ``traced_as_written``
(``keras_metapool.layers.building``), so their calls are traced as Python
wrote them. This script times, each in a fresh process (AutoGraph converts a
function once per process, as a user's program pays it), with the layers as
shipped and with the conversion put back (their undecorated calls):

1. building the paper model (``meta_pooling="paper"``): a functional
   model's construction traces every layer once;
2. building the search supernet;
3. the supernet's first ``fit`` epoch with ``PMPLCallback()`` on 256 images
   (tracing its train step, then 4 steps);
4. ``quantize_model`` of the paper model (four clones, each traced).

The two arms alternate round by round, so a change in the machine's load
hits them alike; the table gives each phase's median (fastest-slowest
process) and the ratio as written / AutoGraph of the medians (below 1:
faster without the conversion). Each round
also checks that both arms' first-epoch loss is the same number.

    python benchmarks/trace_time.py --json=results/trace_time.json

On a busy machine the seconds are noisy; ``--count_calls`` counts instead the
Python function calls of each phase under cProfile (one process per arm: the
count does not depend on the load), a measure of the tracing work itself:

    python benchmarks/trace_time.py --count_calls --json=results/trace_calls.json
"""

import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# This checkout's package, not an installed copy: the benchmarks measure this tree.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from _common import write_results  # noqa: E402
from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("rounds", 3, "Processes per arm (median), alternating.", lower_bound=1)
flags.DEFINE_integer("size", 32, "Square input size.", lower_bound=32)
flags.DEFINE_float("alpha", 0.35, "Width multiplier.")
flags.DEFINE_bool("count_calls", False, "Count Python calls per phase instead of seconds.")
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
flags.DEFINE_enum("arm", None, ["as_written", "autograph"], "Internal: run one arm, print JSON.")

ARMS = ("autograph", "as_written")
PHASES = ("build paper model", "build supernet", "first search epoch", "quantize_model")


def _put_autograph_back():
    """Undoes ``traced_as_written`` on every keras_metapool layer class (this process)."""
    from keras_metapool._keras import keras

    def classes(base):
        for cls in base.__subclasses__():
            if cls.__module__.startswith("keras_metapool.") and "call" in vars(cls):
                yield cls
            yield from classes(cls)

    for cls in set(classes(keras.layers.Layer)):
        cls.call = cls.call.__wrapped__


def _one_arm(arm):
    """Times the phases in this process: ``{phase: seconds or calls, "loss": float}``."""
    import warnings

    import numpy as np

    import keras_metapool as km
    import keras_metapool.quantization.layers  # noqa: F401  (the twins, as quantize_model's)
    from keras_metapool._keras import keras

    if arm == "autograph":
        _put_autograph_back()
    warnings.simplefilter("ignore")
    shape = (FLAGS.size, FLAGS.size, 3)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (256, *shape)).astype("float32")
    labels = rng.integers(0, 10, 256)
    times = {}

    def timed(phase, build):
        if FLAGS.count_calls:
            profile = cProfile.Profile()
            result = profile.runcall(build)
            times[phase] = pstats.Stats(profile).total_calls
            return result
        start = time.perf_counter()
        result = build()
        times[phase] = time.perf_counter() - start
        return result

    keras.utils.set_random_seed(0)
    common = dict(weights=None, input_shape=shape, alpha=FLAGS.alpha, classes=10)
    paper = timed(PHASES[0], lambda: km.MobileNetV2MP(meta_pooling="paper", **common))
    supernet = timed(PHASES[1], lambda: km.MobileNetV2MP(**common))
    supernet.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    history = timed(
        PHASES[2],
        lambda: supernet.fit(
            images, labels, batch_size=64, epochs=1, verbose=0,
            callbacks=[km.PMPLCallback(verbose=0)],
        ),
    )  # fmt: skip
    timed(PHASES[3], lambda: km.quantize_model(paper, representative_data=images))
    times["loss"] = float(history.history["loss"][0])
    return times


def main(argv):
    del argv
    if FLAGS.arm:
        print(json.dumps(_one_arm(FLAGS.arm)))
        return
    flags_ = [
        f"--size={FLAGS.size}",
        f"--alpha={FLAGS.alpha}",
        f"--count_calls={FLAGS.count_calls}",
    ]
    unit, rounds = ("million calls", 1) if FLAGS.count_calls else ("s", FLAGS.rounds)
    scale = 1e-6 if FLAGS.count_calls else 1.0
    samples = {arm: [] for arm in ARMS}
    for round_ in range(rounds):
        for arm in ARMS:
            done = subprocess.run(
                [sys.executable, os.path.abspath(__file__), f"--arm={arm}", *flags_],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            samples[arm].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {round_ + 1}/{rounds}, {arm}: {samples[arm][-1]}", flush=True)
        losses = {arm: samples[arm][-1]["loss"] for arm in ARMS}
        if len(set(losses.values())) != 1:
            raise SystemExit(f"The arms trained differently: first-epoch losses {losses}.")
    rows = []
    # The ranges show the noise: each arm's fastest and slowest process.
    print(f"\n| phase | AutoGraph ({unit}) | as written ({unit}) | ratio |\n|---|---:|---:|---:|")
    for phase in PHASES:
        values = {arm: [s[phase] * scale for s in samples[arm]] for arm in ARMS}
        medians = {arm: statistics.median(v) for arm, v in values.items()}
        ratio = medians["as_written"] / medians["autograph"]
        rows.append(dict(phase=phase, unit=unit, values=values, ratio=ratio))
        cells = [
            f"{medians[arm]:.1f} ({min(values[arm]):.1f}-{max(values[arm]):.1f})" for arm in ARMS
        ]
        print(f"| {phase} | {cells[0]} | {cells[1]} | {ratio:.2f} |")
    if FLAGS.json:
        settings = dict(size=FLAGS.size, alpha=FLAGS.alpha, rounds=rounds)
        write_results(FLAGS.json, settings, rows)


if __name__ == "__main__":
    app.run(main)

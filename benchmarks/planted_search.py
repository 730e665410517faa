"""Does the search find a planted answer? Each candidate alone, then the search.

The planted tasks (``tests/helpers.py``: ``PLANTED_TASKS``) are small image
problems on a one-point model (Conv1x1 -> one Meta-Pooling point -> global max
pool -> Dense) where the right receptive field is known by construction. The
right answer is defined by measurement, not intuition:

1. **Each candidate alone.** The model with its point fixed to one op is
   trained on the task (same data, budget and seeds) and its test accuracy
   measured. The *right set* is every op whose mean accuracy is within seed
   noise of the best op's (``RIGHT_SET_MARGIN`` standard errors of the
   difference); ``identity`` alone when no op beats it beyond noise.
2. **The search.** The supernet with the default candidates is searched with
   ``PMPLCallback``'s defaults (one-level, and bi-level on a held-out set),
   and with the paper's settings (``PMPLCallback.paper()``: margin rule,
   top-2 late stage), and the decision is checked against the right set.
3. **Noise.** The same searches on labels drawn at random (no op can help):
   how many points a rule decides when there is nothing to find.

    python benchmarks/planted_search.py                # every part, 3 seeds
    python benchmarks/planted_search.py --seeds=0,1,2,3,4 --json=planted.json

The tests (tests/test_search_planted.py) assert the right sets measured here.
"""

import json
import os
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# This checkout's package, not an installed copy: the benchmarks measure this tree.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from helpers import PLANTED_TASKS, tiny_search_model  # noqa: E402

from keras_metapool import (
    PMPLCallback,  # noqa: E402
    keras,  # noqa: E402
)
from keras_metapool.layers.candidate_ops import DEFAULT_CANDIDATES  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("tasks", list(PLANTED_TASKS), "Planted tasks to run.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds (weights, data order, search).")
flags.DEFINE_integer("images", 1024, "Training images per task.")
flags.DEFINE_integer("test_images", 1024, "Test images per task.")
flags.DEFINE_integer("epochs", 6, "Epochs of every run (search included).")
flags.DEFINE_list("modes", ["one-level", "bi-level"], "Search modes to run.")
flags.DEFINE_list("rules", ["defaults", "paper"], "PMPLCallback() defaults, PMPLCallback.paper().")
flags.DEFINE_bool("noise", True, "Run part 3 (random labels, two points).")
flags.DEFINE_bool("alone", True, "Run part 1 (each candidate alone).")
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")

#: An op is in the right set when the best op's mean accuracy leads it by
#: less than this many standard errors of the difference (or 0.01).
RIGHT_SET_MARGIN = 2.0
BATCH_SIZE = 32
LEARNING_RATE = 1e-2


def task_data(task, seed_offset=0):
    make = PLANTED_TASKS[task]
    train = make(FLAGS.images, seed=0 + seed_offset)
    held_out = make(FLAGS.images, seed=100 + seed_offset)
    test = make(FLAGS.test_images, seed=200 + seed_offset)
    return train, held_out, test


def compiled(model):
    model.compile(
        keras.optimizers.Adam(LEARNING_RATE), "sparse_categorical_crossentropy", ["accuracy"]
    )
    return model


def train_alone(task, op, seed):
    (x, y), _, (xt, yt) = task_data(task)
    keras.utils.set_random_seed(seed)
    candidates = DEFAULT_CANDIDATES if op in DEFAULT_CANDIDATES else (op, "identity")
    model = compiled(
        tiny_search_model(candidates, x.shape[1:], points=(1,), post_norm=False, fixed=op)
    )
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=FLAGS.epochs, verbose=0)
    return float(model.evaluate(xt, yt, verbose=0)[1])


def right_set(accuracies):
    """Ops within seed noise of the best; ``("identity",)`` if nothing beats it."""
    means = {op: float(np.mean(a)) for op, a in accuracies.items()}
    best = max(means, key=means.get)

    def within_noise(op):
        a, b = np.asarray(accuracies[best]), np.asarray(accuracies[op])
        error = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) if len(a) > 1 else 0
        return means[best] - means[op] <= max(RIGHT_SET_MARGIN * error, 0.01)

    chosen = tuple(op for op in accuracies if within_noise(op))
    return ("identity",) if "identity" in chosen else chosen


def search(task, mode, seed, rule="defaults", random_labels=False):
    (x, y), (xa, ya), _ = task_data(task)
    points = (1,)
    if random_labels:  # a generator of its own: not the task's labels
        rng = np.random.default_rng(12345 + seed)
        y, ya = rng.integers(0, 2, len(y)), rng.integers(0, 2, len(ya))
        points = (1, 2)
    keras.utils.set_random_seed(seed)
    model = compiled(
        tiny_search_model(DEFAULT_CANDIDATES, x.shape[1:], points=points, post_norm=False)
    )
    arch = tf.data.Dataset.from_tensor_slices((xa, ya)).batch(BATCH_SIZE)
    arch = arch if mode == "bi-level" else None
    pmpl = PMPLCallback(arch_data=arch, verbose=0)
    if rule == "paper":
        pmpl = PMPLCallback.paper(arch_data=arch, verbose=0)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=BATCH_SIZE, epochs=FLAGS.epochs, callbacks=[pmpl], verbose=0)
    rows = pmpl.summary_rows()
    return dict(
        ops=list(rows[0]["ops"]),
        state=rows[0]["state"],
        evidence=rows[0]["evidence"],
        step=rows[0]["fixed_at_step"],
        decided=pmpl.decided_points,
        points=len(rows),
        seconds=time.perf_counter() - start,
    )


def main(argv):
    del argv
    seeds = [int(s) for s in FLAGS.seeds]
    results = {}
    for task in FLAGS.tasks:
        entry = results.setdefault(task, {})
        if FLAGS.alone:
            accuracies = {
                op: [train_alone(task, op, s) for s in seeds] for op in DEFAULT_CANDIDATES
            }
            entry["alone"] = accuracies
            entry["right_set"] = list(right_set(accuracies))
            print(f"\n{task}: each candidate alone, test accuracy over seeds {seeds}")
            for op, values in accuracies.items():
                print(f"  {op:<9} {np.mean(values):.3f} +- {np.std(values, ddof=1):.3f}  {values}")
            print(f"  right set: {entry['right_set']}")
        for rule in FLAGS.rules:
            for mode in FLAGS.modes:
                runs = [search(task, mode, s, rule) for s in seeds]
                entry[f"{rule}, {mode}"] = runs
                right = entry.get("right_set")
                print(f"{task}, {rule}, {mode} search:")
                for seed, run in zip(seeds, runs):
                    verdict = ""
                    if right is not None:
                        verdict = "right" if set(run["ops"]) <= set(right) else "WRONG"
                    print(
                        f"  seed {seed}: {'+'.join(run['ops'])} ({run['state']}, evidence "
                        f"{run['evidence']:.2f}, step {run['step']}, {run['seconds']:.1f} s) "
                        f"{verdict}"
                    )
    if FLAGS.noise:
        print("\nRandom labels (2 points per run: nothing to find):")
        for rule in FLAGS.rules:
            for mode in FLAGS.modes:
                runs = [search("block_or_scatter", mode, s, rule, True) for s in seeds]
                results.setdefault("random_labels", {})[f"{rule}, {mode}"] = runs
                decided = sum(run["decided"] for run in runs)
                total = sum(run["points"] for run in runs)
                print(f"  {rule}, {mode}: {decided}/{total} points decided")
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    app.run(main)

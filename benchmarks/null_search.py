"""How often does a search with nothing to find decide something? And how soon a real effect?

The evidence rule promises that a search with no signal decides any of its
points with chance at most ``error_rate`` (5%), however often it looks. This
benchmark measures it on real searches (real slopes, whose successive values
are correlated), not on paper:

- ``random_labels``: the planted tasks' images (``tests/helpers.py``) with labels
  drawn at random, two points, every default candidate: no op can help on
  held-out data. One-level searches learn the logits on the training batches,
  where extra capacity can help memorise; bi-level searches on held-out batches.
- ``same_function``: four candidates that compute one function (pooling windows
  on a 1x1 map equal the pixel): no comparison has anything to see.
- ``aligned_glyphs`` (power): the planted task only SSP solves; how often, and
  at which architecture step, the rule decides ``ssp``.
- ``supernet_random_labels``: the full search supernet
  (``MobileNetV2MP(meta_pooling="search")``, 16 points) at the demo's search
  budget (``keras-metapool demo``: alpha 0.35, 64x64 Fashion-MNIST, 4,000
  training images of which half are held out for the architecture steps, 3
  epochs, batch 64, Adam 2e-3 cosine-decayed), every label drawn at random.
  Bi-level, as the demo searches (``--modes=bi-level``).
- ``supernet_random_labels_study_steps``: the same supernet and data, searched
  for as many architecture steps as the spatial study's searches take (236:
  8,000 images, half held out, 8 epochs), at the demo's 64 px rather than the
  study's 128 px, where a search takes 10-20 minutes on 2 cores. The rule's
  error bound is about the number of looks at correlated evidence.

Each search is also watched by a probe that applies the rule the callback used
before (a fixed bar of z >= 4 on the plain paired z, checked at every step) to
the same evidence: both rules are measured on the same slope streams.

    python benchmarks/null_search.py                       # 40 searches per row
    python benchmarks/null_search.py --searches=10 --tasks=random_labels
    python benchmarks/null_search.py --tasks=supernet_random_labels --modes=bi-level
    python benchmarks/null_search.py --tasks=supernet_random_labels_study_steps --modes=bi-level

Writes ``results/null_search.json`` after every search; docs/search.md reports
it. An interrupted run resumes where it stopped: the supernet row needs that,
since the process grew by about 0.7 GB per supernet search (12.5 GB after 17)
(memory TensorFlow keeps after ``clear_session``: the models and callbacks
themselves are freed), so 40 searches outgrow a 24 GB machine.
"""

import functools
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
from _common import plain_paired_z  # noqa: E402
from absl import app, flags  # noqa: E402
from helpers import PLANTED_TASKS, tiny_search_model  # noqa: E402
from scipy import stats  # noqa: E402

from keras_metapool import MobileNetV2MP, PMPLCallback, keras  # noqa: E402
from keras_metapool.cli.demo_cmd import DEMO_DEFAULTS, STAGE_SETTINGS  # noqa: E402
from keras_metapool.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from keras_metapool.data.preprocessing import to_model_input  # noqa: E402
from keras_metapool.layers.candidate_ops import DEFAULT_CANDIDATES  # noqa: E402
from keras_metapool.search.decision import evidence_verdict  # noqa: E402

FLAGS = flags.FLAGS
#: The supernet rows: what each changes in the demo's search stage. The study's
#: budget (8,000 images, half held out: 63 batches of 64; 8 epochs, the late stage
#: after 5, a quarter of those 315 steps warm-up) gives 236 architecture steps.
SUPERNET_BUDGETS = {
    "supernet_random_labels": {},
    "supernet_random_labels_study_steps": {"train_limit": 8000, "epochs": 8},
}
TASKS = ("random_labels", "same_function", "aligned_glyphs", *SUPERNET_BUDGETS)
#: The tasks run by default: the one-point model's (the supernet's take hours).
DEFAULT_TASKS = TASKS[:3]
flags.DEFINE_list("tasks", list(DEFAULT_TASKS), f"Rows to run: {', '.join(TASKS)}.")
flags.DEFINE_list("modes", ["one-level", "bi-level"], "Search modes.")
flags.DEFINE_integer("searches", 40, "Searches per (task, mode), seeds 0..searches-1.")
flags.DEFINE_integer("images", 1024, "Training images per search.")
flags.DEFINE_integer("epochs", 6, "Epochs per search (the late stage at 2/3).")
flags.DEFINE_float("error_rate", 0.05, "PMPLCallback(error_rate=...).")
flags.DEFINE_string("json", "results/null_search.json", "Where the results go.")

BATCH_SIZE = 32
SAME_FUNCTION = ("identity", "max3", "avg3", "max5")
OLD_BAR = 4.0


class _OldRuleProbe(keras.callbacks.Callback):
    """The step at which z >= 4 (plain paired z, every step) would have decided each point."""

    def __init__(self, pmpl, min_steps):
        super().__init__()
        self.pmpl, self.min_steps = pmpl, min_steps
        self.decided_at = None

    def on_train_batch_end(self, batch, logs=None):
        state = self.pmpl._state
        blocks = list(self.pmpl.points.values())
        if self.decided_at is None:
            self.decided_at = [None] * len(blocks)
        for index, block in enumerate(blocks):
            count = float(state.evidence_count[index].numpy())
            if self.decided_at[index] is not None or count < self.min_steps:
                continue
            if block.is_fixed:  # fixed by the new rule: its evidence stopped
                continue
            best, z = plain_paired_z(
                count, state.evidence_sum[index].numpy(), state.evidence_squares[index].numpy()
            )
            decided, _ = evidence_verdict(best, z, block.candidates, OLD_BAR)
            if bool(decided):
                self.decided_at[index] = int(count)


def _data(task, seed):
    if task == "same_function":
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(FLAGS.images, 1, 1, 3)).astype("float32")
        return x, (x[:, 0, 0, 0] > 0).astype("int32"), SAME_FUNCTION
    source = "aligned_glyphs" if task == "aligned_glyphs" else "block_or_scatter"
    x, y = PLANTED_TASKS[source](FLAGS.images, seed=0)
    if task == "random_labels":
        y = np.random.default_rng(1000 + seed).integers(0, 2, len(x))
    return x, y, DEFAULT_CANDIDATES


def _demo_search_settings(overrides):
    """The demo's search stage (its flag defaults with the search's own share),
    with ``overrides``."""
    settings = dict(DEMO_DEFAULTS, **STAGE_SETTINGS[False]["search"])
    names = ("image_size", "alpha", "batch_size", "train_limit", "epochs", "learning_rate")
    return dict({name: settings[name] for name in names}, **overrides)


@functools.cache
def _model_inputs(limit, size):
    """The first ``limit`` Fashion-MNIST training images as model inputs (made once)."""
    images, _ = load_fashion_mnist("train", limit=limit)
    return np.asarray(to_model_input(images, size))


def _supernet_search(task, mode, seed):
    """A search of the full supernet on images whose labels are random: its record."""
    settings = _demo_search_settings(SUPERNET_BUDGETS[task])
    batch_size = settings["batch_size"]
    x = _model_inputs(settings["train_limit"], settings["image_size"])
    y = np.random.default_rng(1000 + seed).integers(0, 10, len(x))
    half = len(x) // 2
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = MobileNetV2MP(
        weights=None, input_shape=x.shape[1:], alpha=settings["alpha"], classes=10,
        meta_pooling="search", batch_norm_momentum=0.9,
    )  # fmt: skip
    steps = -(-half // batch_size) * settings["epochs"]
    schedule = keras.optimizers.schedules.CosineDecay(settings["learning_rate"], steps)
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy", ["accuracy"])
    held_out = (x[half:], y[half:]) if mode == "bi-level" else None
    return _searched(model, (x[:half], y[:half]), held_out, batch_size, settings["epochs"], seed)


def _one_search(task, mode, seed):
    if task in SUPERNET_BUDGETS:
        return _supernet_search(task, mode, seed)
    x, y, candidates = _data(task, seed)
    keras.utils.set_random_seed(seed)
    points = (1,) if task == "aligned_glyphs" else (1, 2)
    model = tiny_search_model(candidates, x.shape[1:], points=points)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", ["accuracy"])
    held_out = _data(task, seed + 10_000)[:2] if mode == "bi-level" else None
    return _searched(model, (x, y), held_out, BATCH_SIZE, FLAGS.epochs, seed)


def _searched(model, train, held_out, batch_size, epochs, seed):
    """Fits ``model`` with PMPLCallback (bi-level on ``held_out`` if given): its record.

    The record is what the search decided, per point, for the JSON, and when
    the old fixed z >= 4 rule would have decided each point on the same evidence.
    """
    if held_out is not None:
        held_out = tf.data.Dataset.from_tensor_slices(held_out).batch(batch_size)
    pmpl = PMPLCallback(arch_data=held_out, error_rate=FLAGS.error_rate, verbose=0)
    probe = _OldRuleProbe(pmpl, pmpl.min_evidence_steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undecided searches warn, as they should
        model.fit(*train, batch_size=batch_size, epochs=epochs, callbacks=[pmpl, probe],
                  verbose=0)  # fmt: skip
    rows = pmpl.summary_rows()
    return {
        "seed": seed,
        "arch_steps": pmpl.budget["arch_steps"],
        "decided": [row["state"] == "decided" for row in rows],
        "ops": ["+".join(row["ops"]) for row in rows],
        "evidence": [row["evidence"] for row in rows],
        "bar": [row["bar"] for row in rows],
        "decided_at_step": [row["fixed_at_step"] for row in rows],
        "old_rule_decided_at_count": probe.decided_at,
    }


def _rate(hits, total):
    """Fraction with its two-sided 95% Clopper-Pearson interval."""
    low = stats.beta.ppf(0.025, hits, total - hits + 1) if hits else 0.0
    high = stats.beta.ppf(0.975, hits + 1, total - hits) if hits < total else 1.0
    return {"hits": hits, "total": total, "rate": hits / total, "ci95": [low, high]}


def _summarise(row):
    """The row's rates over the searches it holds so far."""
    searches = row["searches"]
    row["any_point"] = _rate(sum(any(s["decided"]) for s in searches), len(searches))
    old_rule_hits = sum(
        any(count is not None for count in s["old_rule_decided_at_count"]) for s in searches
    )
    row["old_rule_any_point"] = _rate(old_rule_hits, len(searches))
    if row["task"] == "aligned_glyphs":
        found = [s for s in searches if s["decided"][0] and s["ops"][0] == "ssp"]
        row["found_ssp"] = _rate(len(found), len(searches))
        row["found_at_step"] = [s["decided_at_step"][0] for s in found]


def _print_row(row):
    any_point, total = row["any_point"], len(row["searches"])
    found = f"; ssp found {row['found_ssp']['hits']}/{total}" if "found_ssp" in row else ""
    print(
        f"{row['task']} {row['mode']}: {any_point['hits']}/{total} searches decided a "
        f"point ({any_point['rate']:.1%}, 95% CI {any_point['ci95'][0]:.1%}-"
        f"{any_point['ci95'][1]:.1%}); the old z >= 4 rule on the same evidence: "
        f"{row['old_rule_any_point']['hits']}/{total}{found}"
    )


def main(argv):
    del argv
    # A row is written after every search, so an interrupted run resumes where it was.
    results = {"rows": []}
    if os.path.exists(FLAGS.json):
        with open(FLAGS.json, encoding="utf-8") as f:
            results = json.load(f)
    rows = {(row["task"], row["mode"]): row for row in results["rows"]}
    for task in FLAGS.tasks:
        for mode in FLAGS.modes:
            row = rows.get((task, mode))
            if row is None:
                row = rows[task, mode] = {"task": task, "mode": mode, "searches": []}
                results["rows"].append(row)
            if len(row["searches"]) >= FLAGS.searches:
                print(f"{task} {mode}: in {FLAGS.json} already (skipped)")
                continue
            row.update(command=" ".join(sys.argv), date=time.strftime("%Y-%m-%d"))
            progress = keras.utils.Progbar(FLAGS.searches, unit_name="search")
            progress.update(len(row["searches"]))
            for seed in range(len(row["searches"]), FLAGS.searches):
                row["searches"].append(_one_search(task, mode, seed))
                _summarise(row)
                os.makedirs(os.path.dirname(FLAGS.json) or ".", exist_ok=True)
                with open(FLAGS.json, "w", encoding="utf-8") as f:
                    json.dump(results, f, indent=1)
                progress.add(1)
            _print_row(row)


if __name__ == "__main__":
    app.run(main)

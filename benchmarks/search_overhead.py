"""What a PMPL search costs: step time against plain MobileNetV2, and end to end.

In one run, on the same Fashion-MNIST batches, interleaved (each model's
epochs alternate with the others', so a change in the machine's load hits
them alike):

1. plain MobileNetV2 (``meta_pooling="none"``), a normal ``fit``;
2. the search supernet (``meta_pooling="search"``: hidden placement, pooling
   windows larger than a point's map pruned) with ``PMPLCallback()``:
   one-level, the search logits' gradient from the weight step's own backward pass;
3. the same with ``PMPLCallback(arch_data=...)``: bi-level, an architecture step on
   a held-out batch per weight step (a second forward and backward pass);
4. the supernet trained by a plain ``fit`` (what the mixture itself costs);
5. the supernet after the late stage: every point fixed (to ``identity``),
   ``PMPLCallback()`` in ``fit``, which then traces each point as its op alone
   (the last third of a default search);
6. plain MobileNetV2 again: how far a ratio of 1 is off by noise alone.

Each is timed per step after a first epoch (its steps include tracing),
median over the measured steps, with the architecture steps on (``warmup=0``).
Then an end-to-end search on Fashion-MNIST (50/50 split with
``split_for_search``) reports its wall time and what it decided.

    python benchmarks/search_overhead.py                  # the numbers in docs/search.md
    python benchmarks/search_overhead.py --images 2048 --search_epochs 3   # quicker

Goal: a one-level search step costs at most 1.2x a plain step.

``--floor`` asks instead what any single-path scheme (GDAS, SPOS,
ProxylessNAS: one op per point per step) could cost at best, with plain
``fit`` on every model (no architecture steps): the supernet with every point
fixed to one op and computing it alone (``ssp`` everywhere; ``max3``/``avg3``
where a point has it, else ``identity``), and a sampled path: every point
draws one of its non-identity candidates per step (``tf.switch_case``) and
outputs ``(x + op(x)) / 2`` (a prototype of the route, patched in for that
row only; it is not part of the package):

    python benchmarks/search_overhead.py --floor --end_to_end=false

``--partial_channels`` times a one-level search whose every point mixes its
candidates on 1/K of its channels and passes the others through (PC-DARTS,
arXiv 1907.05737), for each K, against the default search and plain
MobileNetV2 (a prototype patched in for those rows only, not part of the
package: its SSP is built for C/K channels):

    python benchmarks/search_overhead.py --end_to_end=false --partial_channels=2,4,8

``--xla`` times plain MobileNetV2 and the one-level search each without and
with XLA (``compile(jit_compile=True)``), interleaved:

    python benchmarks/search_overhead.py --end_to_end=false --xla

``--candidate_sets`` times a one-level search (``PMPLCallback()``) per set of
candidates (and placement: ``@hidden`` or ``@output`` after a set), against
plain MobileNetV2 in the same interleaved rounds: what each candidate adds to a
step.

    python benchmarks/search_overhead.py --end_to_end=false --images=2048 \
        --candidate_sets=identity+ssp,identity+ssp+avg3+max3,default,default@output
"""

import contextlib
import functools
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# This checkout's package, not an installed copy: the benchmarks measure this tree.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_metapool as km  # noqa: E402
from keras_metapool import keras  # noqa: E402
from keras_metapool.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from keras_metapool.data.preprocessing import to_model_input  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_float("alpha", 0.35, "Width multiplier.")
flags.DEFINE_integer("input_size", 64, "Input height and width (Fashion-MNIST is resized).")
flags.DEFINE_integer("batch_size", 64, "Batch size of weight and architecture steps.")
flags.DEFINE_integer("images", 4096, "Training images for the step-time comparison.")
flags.DEFINE_integer("search_images", 20000, "Training images of the end-to-end search.")
flags.DEFINE_integer("search_epochs", 6, "Epochs of the end-to-end search.")
flags.DEFINE_string(
    "arch_learning_rate", "auto", "Architecture learning rate of the end-to-end search ('auto')."
)
flags.DEFINE_integer("rounds", 3, "Interleaved timing rounds (one epoch per model each).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_bool("end_to_end", True, "Also run the end-to-end search after the step times.")
flags.DEFINE_bool(
    "xla",
    False,
    "Instead of the default rows: plain and one-level search steps, each "
    "without and with XLA (compile(jit_compile=True)).",
)
flags.DEFINE_bool("floor", False, "Measure single-path floors instead of the search rows.")
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
flags.DEFINE_enum(
    "placement", "hidden", ["hidden", "output"], "Where the supernet's points are (search rows)."
)
flags.DEFINE_list(
    "candidate_sets",
    [],
    "Instead of the default rows: a one-level search step per candidate set, each set ops "
    "joined by '+' (e.g. identity+ssp,identity+ssp+avg3+max3,default), optionally with "
    "@hidden or @output for its placement (else --placement).",
)
flags.DEFINE_list(
    "partial_channels",
    [],
    "Instead of the default rows: a one-level search step per K, every point mixing its "
    "candidates on 1/K of its channels (e.g. 2,4,8).",
)


class StepTimer(keras.callbacks.Callback):
    """Wall time of every training step."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)


#: The supernet with every point fixed (as after the late stage).
FIXED_SUPERNET = "search, all fixed"
#: ``--floor``: the supernet with every point fixed to this op where it is a
#: candidate (else identity), computing it alone; or drawing a path per step.
FIXED_TO = "search, fixed to "
SAMPLED_PATH = "search, sampled path"


def sampled_path_call(block, inputs, training=None):
    """A single-path ``MetaPoolingBlock.call``: one drawn non-identity op per step.

    Only the drawn branch of ``tf.switch_case`` runs, forward and backward.
    The output is the midpoint between no enhancer and the op, whose slope
    along ``op(x) - x`` would be the op's evidence against identity.
    """
    drawn = [op for name, op in zip(block.candidates, block.ops) if name != "identity"]
    index = tf.random.uniform([], 0, len(drawn), dtype=tf.int32)
    branches = [functools.partial(op, inputs, training=training) for op in drawn]
    return 0.5 * (inputs + tf.switch_case(index, branches))


#: ``--partial_channels``: the supernet mixing on 1/K of each point's channels.
PARTIAL = "search, partial channels 1/"


def partial_channel_methods(k):
    """``build`` and ``call`` of a ``MetaPoolingBlock`` mixing on 1/k of its channels.

    The candidates are built for the first ``C // k`` channels; the others
    pass through unchanged and are concatenated back (PC-DARTS' partial
    channel connection, without its channel shuffle: the next block's 1x1
    convolution mixes channels anyway).
    """
    block_class = km.layers.MetaPoolingBlock
    original_build, original_call = block_class.build, block_class.call

    def build(block, input_shape):
        input_shape = tf.TensorShape(input_shape)
        block.mixed_channels = max(1, input_shape[-1] // k)
        original_build(block, input_shape[:-1].concatenate([block.mixed_channels]))

    @tf.autograph.experimental.do_not_convert  # a closure AutoGraph cannot read; no control flow
    def call(block, inputs, training=None):
        part = block.mixed_channels
        mixed = original_call(block, inputs[..., :part], training=training)
        return tf.concat([mixed, inputs[..., part:]], axis=-1)

    return build, call


#: ``--candidate_sets``: the search supernet over these candidates.
SEARCH_OVER = "search over "


def build(meta_pooling, candidates=None, placement=None):
    return km.MobileNetV2MP(
        weights=None,
        input_shape=(FLAGS.input_size, FLAGS.input_size, 3),
        alpha=FLAGS.alpha,
        classes=10,
        meta_pooling=meta_pooling,
        batch_norm_momentum=0.9,
        search_candidates=candidates,
        placement=placement or FLAGS.placement,
    )


#: ``--xla``: a row's model compiled with ``jit_compile=True``.
WITH_XLA = " with XLA"


def compiled(model, jit_compile=False):
    model.compile(
        keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", jit_compile=jit_compile
    )
    return model


def timed_model(meta_pooling):
    keras.utils.set_random_seed(FLAGS.seed)
    if meta_pooling.endswith(WITH_XLA):
        return compiled(build(meta_pooling[: -len(WITH_XLA)]), jit_compile=True)
    if meta_pooling.startswith(PARTIAL):
        with traced_as(meta_pooling):  # the blocks are built for their part
            model = build("search")
        return compiled(model)
    if meta_pooling.startswith(SEARCH_OVER):
        candidates, _, placement = meta_pooling[len(SEARCH_OVER) :].partition("@")
        candidates = None if candidates == "default" else candidates.split("+")
        model = build("search", candidates, placement or None)
        return compiled(model)
    supernet = meta_pooling in (FIXED_SUPERNET, SAMPLED_PATH) or meta_pooling.startswith(FIXED_TO)
    model = build("search" if supernet else meta_pooling)
    if meta_pooling == FIXED_SUPERNET:
        for block in km.search.search_blocks(model).values():
            block.fix("identity")
    if meta_pooling.startswith(FIXED_TO):
        op = meta_pooling[len(FIXED_TO) :]
        for block in km.search.search_blocks(model).values():
            block.fix(op if op in block.candidates else "identity")
            block.compute_only_fixed(True)
    return compiled(model)


@contextlib.contextmanager
def traced_as(meta_pooling):
    """Patches a prototype's methods in while its model builds and traces."""
    block = km.layers.MetaPoolingBlock
    original = block.build, block.call
    if meta_pooling == SAMPLED_PATH:
        block.call = sampled_path_call
    if meta_pooling.startswith(PARTIAL):
        block.build, block.call = partial_channel_methods(int(meta_pooling[len(PARTIAL) :]))
    try:
        yield
    finally:
        block.build, block.call = original


def epoch_step_times(model, train, callbacks_factory):
    """Step times of one epoch of ``fit`` (a fresh callback set, as a new fit)."""
    timer = StepTimer()
    model.fit(train, epochs=1, callbacks=[*callbacks_factory(), timer], verbose=0)
    return timer.times


def dataset(images, labels):
    x = np.asarray(to_model_input(images, FLAGS.input_size))
    return tf.data.Dataset.from_tensor_slices((x, labels))


def main(argv):
    del argv
    images, labels = load_fashion_mnist("train", limit=2 * FLAGS.images)
    train = dataset(images[: FLAGS.images], labels[: FLAGS.images]).batch(FLAGS.batch_size)
    arch = dataset(images[FLAGS.images :], labels[FLAGS.images :]).batch(FLAGS.batch_size)
    quiet = dict(verbose=0)
    results = {}
    print(
        f"Step times: MobileNetV2 alpha {FLAGS.alpha}, {FLAGS.input_size}x{FLAGS.input_size}, "
        f"batch {FLAGS.batch_size}, {FLAGS.images} Fashion-MNIST images, "
        f"{os.cpu_count()} CPU cores"
    )
    # A search longer than the timing: no point is fixed at a fit's end.
    search = dict(warmup=0.0, search_epochs=10**6, **quiet)

    def one_level():  # a fresh callback per fit, as a new search
        return [km.PMPLCallback(**search)]

    runs = [
        ("plain MobileNetV2", "none", lambda: []),
        ("search, one-level", "search", one_level),
        ("search, bi-level (arch_data)", "search",
         lambda: [km.PMPLCallback(arch_data=arch, **search)]),
        ("supernet without architecture steps", "search", lambda: []),
        ("supernet after the late stage (all fixed)", FIXED_SUPERNET,
         one_level),
        ("plain MobileNetV2 (control)", "none", lambda: []),
    ]  # fmt: skip
    if FLAGS.floor:
        runs = [
            ("plain MobileNetV2", "none", list),
            ("supernet (every candidate, plain fit)", "search", list),
            ("sampled path (one op per point per step)", SAMPLED_PATH, list),
            *[(f"every point fixed to {op}, computed alone", FIXED_TO + op, list)
              for op in ("ssp", "max3", "avg3")],
            ("plain MobileNetV2 (control)", "none", list),
        ]  # fmt: skip
    if FLAGS.candidate_sets:
        runs = [
            ("plain MobileNetV2", "none", list),
            *[(f"search over {ops}, one-level", SEARCH_OVER + ops,
               one_level) for ops in FLAGS.candidate_sets],
            ("plain MobileNetV2 (control)", "none", list),
        ]  # fmt: skip
    if FLAGS.xla:
        runs = [
            ("plain MobileNetV2", "none", list),
            ("plain MobileNetV2, XLA", "none" + WITH_XLA, list),
            ("search, one-level", "search", one_level),
            ("search, one-level, XLA", "search" + WITH_XLA, one_level),
            ("plain MobileNetV2 (control)", "none", list),
        ]  # fmt: skip
    if FLAGS.partial_channels:
        runs = [
            ("plain MobileNetV2", "none", list),
            ("search, one-level", "search", one_level),
            *[(f"search on 1/{k} of the channels, one-level", PARTIAL + k,
               one_level) for k in FLAGS.partial_channels],
            ("plain MobileNetV2 (control)", "none", list),
        ]  # fmt: skip
    models = {}
    for label, meta_pooling, factory in runs:  # first epochs: tracing, not timed
        start = time.perf_counter()
        models[label] = timed_model(meta_pooling)
        with traced_as(meta_pooling):
            epoch_step_times(models[label], train, factory)
        results[label] = {"first_epoch_s": time.perf_counter() - start, "times": []}
    for _ in range(FLAGS.rounds):  # interleaved: every model once per round
        for label, meta_pooling, factory in runs:
            with traced_as(meta_pooling):  # a search's fit may trace again
                results[label]["times"] += epoch_step_times(models[label], train, factory)
    plain = float(np.median(results["plain MobileNetV2"]["times"]))
    print("\n| run | step (ms, median) | ratio to plain | first epoch incl. tracing (s) |")
    print("|---|---|---|---|")
    for label, values in results.items():
        values["step_ms"] = 1000 * float(np.median(values.pop("times")))
        values["ratio"] = values["step_ms"] / (1000 * plain)
        print(
            f"| {label} | {values['step_ms']:.0f} | {values['ratio']:.2f}x | "
            f"{values['first_epoch_s']:.0f} |"
        )

    if not FLAGS.end_to_end:
        if FLAGS.json:
            with open(FLAGS.json, "w") as f:
                json.dump(results, f, indent=2)
        return
    # End to end: a bi-level search on Fashion-MNIST, 50/50 weights/architecture steps.
    images, labels = load_fashion_mnist("train", limit=FLAGS.search_images)
    weights_part, arch_part = km.split_for_search(dataset(images, labels), 0.5)
    weights_part = weights_part.batch(FLAGS.batch_size).prefetch(2)
    arch_part = arch_part.batch(FLAGS.batch_size).prefetch(2)
    keras.utils.set_random_seed(FLAGS.seed)
    model = build("search")
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
    rate = FLAGS.arch_learning_rate
    pmpl = km.PMPLCallback(
        arch_data=arch_part, learning_rate=rate if rate == "auto" else float(rate)
    )
    start = time.perf_counter()
    history = model.fit(weights_part, epochs=FLAGS.search_epochs, callbacks=[pmpl], verbose=0)
    search_seconds = time.perf_counter() - start
    print(
        f"\nEnd-to-end search: {FLAGS.search_images} Fashion-MNIST images (half for the "
        f"architecture steps), {FLAGS.search_epochs} epochs, architecture lr "
        f"{pmpl.budget['learning_rate']:.3g}: "
        f"{search_seconds / 60:.1f} min, final training accuracy "
        f"{history.history['accuracy'][-1]:.3f}"
    )
    pmpl.summary()
    print("Architecture:", pmpl.architecture)
    results["end_to_end"] = {
        "seconds": search_seconds,
        "images": FLAGS.search_images,
        "epochs": FLAGS.search_epochs,
        "architecture": pmpl.architecture.to_dict(),
        "decided_by_evidence": pmpl.decided_points,
        "accuracy": history.history["accuracy"][-1],
    }
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    app.run(main)

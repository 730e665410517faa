"""Does Meta-Pooling help? MobileNetV2 vs MobileNetV2MP, its ablations and PMPL, on real data.

Every variant is trained on the same images, with the same schedule, seeds
and budget, then evaluated on the same test images:

- ``mobilenet_v2``: ``MobileNetV2MP(meta_pooling="none")``, keras.applications'
  MobileNetV2 with its classic head;
- ``mp_paper``: ``meta_pooling="paper"``, SSP after blocks 6-16 (the paper's
  final model), classic head;
- ``mp_paper_head``: the same with ``head="paper"`` (1x1 conv 1280->1280 +
  hard swish + dropout before the classifier);
- ``global``, ``local``, ``random``, ``exclude_local``: docs/method.md §3's
  ablations, ``ArchitectureSpec.ablation(name)``;
- ``searched``: the architecture a PMPL search finds (``PMPLCallback``'s
  defaults; supernet weights on one part of the training images, alpha on
  the held-out rest: ``load_dataset(search_part=...)``), then trained from
  scratch like the others; its training time includes the search;
- ``searched_inherited``: the same architecture, starting from the
  supernet's weights (``to_fixed_model``) and trained like the others; its
  time includes the search too;
- ``random_arch``: an architecture drawn uniformly from the same search space
  (each point: one of its pruned candidates, seeded per run), trained from
  scratch: the baseline a search must beat (Li & Talwalkar, arXiv 1902.07638);
- ``param_matched``: ``meta_pooling="none"`` at a larger alpha, found by
  bisection, whose parameter count matches ``mp_paper``'s within
  ``--match_tolerance`` (so a gain is not just more parameters).

Reported per variant and (alpha, input size): test accuracy mean ± std over
seeds, with the difference to MobileNetV2 and Welch's t-test; parameters and
MACs (``keras_metapool.models.count_params`` / ``count_macs``); float and
int8 TFLite latency as a ratio to MobileNetV2 (batch 1, one thread, the
models' invokes interleaved in one run, as ``benchmarks/deploy.py`` does:
``_common.interleaved_latency``; latency does not depend on the weights, so
these models are freshly built, not the trained ones); training time.

Commands:

    python benchmarks/study.py --estimate   # time a few steps of every model: the plan's ETA
    python benchmarks/study.py              # the default study: 1h26m on 2 idle CPU cores
    python benchmarks/study.py --extra_configs=0.35@96   # + a 96x96 run at alpha 0.35
    python benchmarks/study.py --quick      # minutes: the pipeline end to end (tests use it)

The default: Fashion-MNIST upsampled to 64x64 (at 32x32, blocks 6-16 see 4x4
to 1x1 maps, where SSP degenerates into channel gating), alpha 0.35 and 1.0,
seeds 0, 1, 2, every variant; the training subset and epochs are sized to fit
the whole study in 2 hours on 2 CPU cores (measured: 1h26m wall clock, 106
CPU-minutes, on an otherwise idle 2-core AMD EPYC; ``--estimate`` predicted
1h11m). The 96x96 run is not in the default: it does not fit the 2 hours.

Resumable: each run writes ``<output_dir>/<run-id>.json`` atomically
(``<variant>_a<alpha>_px<size>_seed<seed>.json``, ``search_...``,
``latency_a<alpha>_px<size>.json``, ``param_match_a<alpha>_c<classes>.json``);
a run whose file exists is skipped, so an interrupted study continues where
it stopped. Every file records the settings it was made with; an existing file
made with other settings stops the study with an error (use another
``--output_dir``). At the end (and on every rerun) the study writes
``<output_dir>/study.md`` (the tables, the exact command, the machine, and
"What this shows / does not show", generated from the numbers) and the plots
``study_accuracy.png`` (accuracy mean ± std per variant) and ``study_cost.png``
(accuracy against MACs and latency).

``--estimate`` builds every model of the plan, times its first step
(tracing), a few training steps (wall and CPU time), evaluation and TFLite
conversion, writes ``timing.json`` and prints the predicted duration of
every run and of the whole study; a later study in the same ``--output_dir``
uses it for its ETA. On a machine shared with other jobs, the wall-time
prediction carries their load; the CPU-time one is what 2 idle cores would
take if TensorFlow kept both busy (a lower bound).

Any dataset ``keras_metapool.data.load_dataset`` reads works:
``--dataset=tfds:NAME`` (prepared in ``--data_dir``), or ``folder:PATH``.
Imagenette on a GPU machine (``tfds build imagenette/320px
--data_dir=/data/tfds`` first, on a machine with internet)::

    python benchmarks/study.py --dataset=tfds:imagenette/320px --data_dir=/data/tfds \\
        --test_split=validation --sizes=224 --alphas=0.35,1.0 --seeds=0,1,2 \\
        --train_images=0 --test_images=0 --epochs=30 --search_epochs=30 \\
        --batch_size=64 --augment=basic --output_dir=results/imagenette

(``--train_images=0`` / ``--test_images=0``: the whole split.) Nothing in the
study is specific to Fashion-MNIST or to CPUs; ``model.fit`` uses the GPU
when TensorFlow sees one.
"""

import dataclasses
import json
import math
import os
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# This checkout's package, not an installed copy: the benchmarks measure this tree.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from _common import (  # noqa: E402
    interleaved_latency,
    load_average,
    machine_description,
    settle_batch_norms,
)
from absl import app, flags, logging  # noqa: E402

import keras_metapool as km  # noqa: E402
from keras_metapool import keras  # noqa: E402
from keras_metapool.data import load_dataset  # noqa: E402
from keras_metapool.models import count_macs, count_params  # noqa: E402
from keras_metapool.models.architecture import ABLATIONS  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "dataset", "fashion_mnist", "`load_dataset` name: fashion_mnist, tfds:NAME, folder:PATH."
)
flags.DEFINE_string("data_dir", None, "tfds data folder / Fashion-MNIST folder override.")
flags.DEFINE_string("train_split", "train", "Split the models (and the search) train on.")
flags.DEFINE_string("test_split", "test", "Split the accuracy is measured on (never searched on).")
flags.DEFINE_list("alphas", ["0.35", "1.0"], "Width multipliers.")
flags.DEFINE_list("sizes", ["64"], "Square input sizes; every alpha runs at every size.")
flags.DEFINE_list(
    "extra_configs", [], "More ALPHA@SIZE pairs, e.g. 0.35@96 (the issue's 96x96 run)."
)
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds: weight init, data order, search.")
flags.DEFINE_list("variants", None, "Variants to run (default: all); see the module docstring.")
flags.DEFINE_integer("train_images", 6000, "First N training images (0: all).", lower_bound=0)
flags.DEFINE_integer("test_images", 5000, "First N test images (0: all).", lower_bound=0)
flags.DEFINE_integer("epochs", 3, "Training epochs of every variant.", lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "Batch size (training and search).", lower_bound=1)
flags.DEFINE_float("learning_rate", 2e-3, "Adam learning rate, cosine-decayed to 0.", lower_bound=0)
flags.DEFINE_enum("augment", "none", ["none", "basic", "randaugment"], "Training augmentation.")
flags.DEFINE_integer(
    "search_epochs", None, "Epochs of the PMPL search over its half (default: --epochs).",
    lower_bound=1,
)  # fmt: skip
flags.DEFINE_string(
    "arch_learning_rate", "auto",
    "Alpha learning rate of the search: 'auto' (PMPLCallback's default, sized to the "
    "search's steps) or a number.",
)  # fmt: skip
flags.DEFINE_float("search_fraction", 0.5, "Share of the training images held out for alpha.")
flags.DEFINE_list(
    "search_candidates", None, "Candidate ops of the search (default: all 8 of docs/method.md §1)."
)
flags.DEFINE_bool(
    "search_once", False,
    "One search per (alpha, size), with the first seed, reused by every seed (cheaper; "
    "the seed spread then excludes the search's own variance). Default: one per seed.",
)  # fmt: skip
flags.DEFINE_float("match_tolerance", 0.01, "Parameter match of param_matched (relative).")
flags.DEFINE_integer("latency_runs", 100, "Interleaved timed invokes per model.", lower_bound=1)
flags.DEFINE_integer("threads", 1, "Interpreter threads for latency.", lower_bound=1)
flags.DEFINE_string("output_dir", "results", "Where run JSONs, study.md and plots go.")
flags.DEFINE_bool(
    "quick", False,
    "Minutes: alpha 0.35 at 32x32, seed 0, 512 training / 256 test images, 1 epoch, "
    "variants mobilenet_v2, mp_paper, param_matched, searched (over 3 candidates), "
    "searched_inherited, random_arch, "
    "20 latency runs (flags given explicitly win).",
)  # fmt: skip
flags.DEFINE_bool("estimate", False, "Only time every model of the plan and print the ETA.")
flags.DEFINE_integer("timing_steps", 6, "Timed steps per model with --estimate.", lower_bound=2)

#: The flags of this script (for the exact command line in the report).
STUDY_FLAGS = tuple(
    """dataset data_dir train_split test_split alphas sizes extra_configs seeds variants
    train_images test_images epochs batch_size learning_rate augment search_epochs
    arch_learning_rate search_fraction search_once search_candidates match_tolerance
    latency_runs threads output_dir quick estimate timing_steps""".split()
)
QUICK_DEFAULTS = {
    "alphas": ["0.35"],
    "sizes": ["32"],
    "extra_configs": [],
    "seeds": ["0"],
    "variants": [
        "mobilenet_v2",
        "mp_paper",
        "param_matched",
        "searched",
        "searched_inherited",
        "random_arch",
    ],
    "train_images": 512,
    "test_images": 256,
    "epochs": 1,
    "latency_runs": 20,
    # Three candidates instead of eight: the supernet traces in half the time.
    "search_candidates": ["identity", "ssp", "avg3"],
}
EVAL_BATCH_SIZE = 256
CALIBRATION_IMAGES = 128  # int8 conversion's representative data
BN_MOMENTUM = 0.9  # short runs: see MobileNetV2MP's docstring
BASELINE = "mobilenet_v2"


@dataclasses.dataclass(frozen=True)
class Variant:
    key: str
    label: str


VARIANTS = (
    Variant("mobilenet_v2", "MobileNetV2"),
    Variant("mp_paper", "MobileNetV2MP paper"),
    Variant("mp_paper_head", "MobileNetV2MP paper, paper head"),
    Variant("global", "ablation: global (SSP everywhere)"),
    Variant("local", "ablation: local (avg3 everywhere)"),
    Variant("random", "ablation: random"),
    Variant("exclude_local", "ablation: exclude-local"),
    Variant("searched", "PMPL searched"),
    Variant("searched_inherited", "PMPL searched, supernet weights inherited"),
    Variant("random_arch", "random architecture from the search space"),
    Variant("param_matched", "MobileNetV2, params matched to MP paper"),
)
VARIANT_BY_KEY = {v.key: v for v in VARIANTS}
assert set(ABLATIONS) <= set(VARIANT_BY_KEY)


@dataclasses.dataclass(frozen=True, order=True)
class Config:
    """One (input size, alpha) group: its variants share a table and a latency run."""

    size: int
    alpha: float

    @property
    def key(self):
        return f"a{self.alpha:g}_px{self.size}"

    @property
    def title(self):
        return f"alpha {self.alpha:g}, {self.size}x{self.size}"


@dataclasses.dataclass(frozen=True)
class Task:
    """One resumable unit of work, written to ``<output_dir>/<run_id>.json``."""

    kind: str  # "search" | "train" | "latency"
    config: Config
    variant: str = None
    seed: int = None

    @property
    def run_id(self):
        if self.kind == "latency":
            return f"latency_{self.config.key}"
        name = "search" if self.kind == "search" else self.variant
        return f"{name}_{self.config.key}_seed{self.seed}"

    @property
    def label(self):
        if self.kind == "latency":
            return f"latency, {self.config.title}"
        what = "PMPL search" if self.kind == "search" else VARIANT_BY_KEY[self.variant].label
        return f"{what}, {self.config.title}, seed {self.seed}"


# ------------------------------------------------------------------ settings


def apply_quick_defaults():
    """``--quick``: the small settings, except for flags given explicitly."""
    if FLAGS.quick:
        for name, value in QUICK_DEFAULTS.items():
            if not FLAGS[name].present:
                FLAGS[name].value = value


def parse_plan_flags():
    """(configs, seeds, variants) from the flags, with clear errors."""
    try:
        alphas = [float(a) for a in FLAGS.alphas]
        sizes = [int(s) for s in FLAGS.sizes]
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError as error:
        raise app.UsageError(f"--alphas, --sizes and --seeds take numbers: {error}") from None
    configs = {Config(size, alpha) for size in sizes for alpha in alphas}
    for item in FLAGS.extra_configs:
        try:
            alpha, size = item.split("@")
            configs.add(Config(int(size), float(alpha)))
        except ValueError:
            raise app.UsageError(
                f"--extra_configs entries are ALPHA@SIZE (e.g. 0.35@96), got {item!r}."
            ) from None
    variants = FLAGS.variants or [v.key for v in VARIANTS]
    unknown = [v for v in variants if v not in VARIANT_BY_KEY]
    if unknown:
        raise app.UsageError(f"Unknown variants {unknown}; valid: {', '.join(VARIANT_BY_KEY)}.")
    if any(c.alpha <= 0 for c in configs) or any(c.size < 32 for c in configs):
        raise app.UsageError("Alphas must be > 0 and sizes >= 32.")
    if not seeds or len(set(seeds)) != len(seeds):
        raise app.UsageError(f"--seeds must be distinct integers, got {FLAGS.seeds}.")
    ordered = [v.key for v in VARIANTS if v.key in variants]  # canonical order
    return sorted(configs), seeds, ordered


def search_epochs():
    return FLAGS.search_epochs or FLAGS.epochs


def settings():
    """Everything a result depends on; stored in every JSON and compared on resume."""
    return {
        "dataset": FLAGS.dataset,
        "train_split": FLAGS.train_split,
        "test_split": FLAGS.test_split,
        "train_images": FLAGS.train_images or None,
        "test_images": FLAGS.test_images or None,
        "epochs": FLAGS.epochs,
        "batch_size": FLAGS.batch_size,
        "learning_rate": FLAGS.learning_rate,
        "schedule": "Adam, cosine decay to 0 over all steps",
        "augment": FLAGS.augment,
        "batch_norm_momentum": BN_MOMENTUM,
        "search_epochs": search_epochs(),
        "search_rule": "PMPLCallback defaults (evidence, undecided -> identity, warm-up 0.25)",
        "arch_learning_rate": FLAGS.arch_learning_rate,
        "search_fraction": FLAGS.search_fraction,
        "search_once": FLAGS.search_once,
        "search_candidates": FLAGS.search_candidates or list(km.DEFAULT_CANDIDATES),
        "match_tolerance": FLAGS.match_tolerance,
        "latency_runs": FLAGS.latency_runs,
        "threads": FLAGS.threads,
    }


def command_line():
    """The command that reproduces this study: the flags set explicitly."""
    parts = ["python benchmarks/study.py"]
    for name in STUDY_FLAGS:
        flag = FLAGS[name]
        if flag.present and name != "estimate":
            parts.append(flag.serialize())
    return " ".join(parts)


# ---------------------------------------------------------------- results I/O


def result_path(run_id):
    return os.path.join(FLAGS.output_dir, f"{run_id}.json")


def write_json(path, data):
    """Writes ``data`` as JSON atomically: a reader never sees half a file."""
    folder = os.path.dirname(path) or "."
    with tempfile.NamedTemporaryFile(
        "w", dir=folder, prefix=".tmp-", suffix=".json", delete=False, encoding="utf-8"
    ) as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(f.name, path)


def read_result(run_id):
    """The stored result of ``run_id``, or None; raises if it has other settings."""
    path = result_path(run_id)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if data.get("settings") != json.loads(json.dumps(settings())):
        differing = sorted(
            k
            for k in set(settings()) | set(data.get("settings", {}))
            if data.get("settings", {}).get(k) != settings().get(k)
        )
        raise SystemExit(
            f"{path} was made with other settings (differing: {', '.join(differing)}). "
            "A study's runs must share their settings: use another --output_dir, or delete "
            "that folder's JSON files to start over."
        )
    return data


# ---------------------------------------------------------------------- data

_CACHE = {}


def dataset_info():
    """``DatasetInfo`` of the training split (classes, examples)."""
    if "info" not in _CACHE:
        _, _CACHE["info"] = load_dataset(
            FLAGS.dataset, FLAGS.train_split, image_size=32, batch_size=1,
            data_dir=FLAGS.data_dir, limit=FLAGS.train_images or None,
        )  # fmt: skip
    return _CACHE["info"]


def training_data(config, seed, search_part=None, repeat=False, limit=None):
    return load_dataset(
        FLAGS.dataset,
        FLAGS.train_split,
        image_size=config.size,
        batch_size=FLAGS.batch_size,
        training=True,
        augment=FLAGS.augment,
        seed=seed,
        data_dir=FLAGS.data_dir,
        limit=limit or FLAGS.train_images or None,
        search_part=search_part,
        search_fraction=FLAGS.search_fraction,
        repeat=repeat,
    )


def test_data(config, limit=None):
    return load_dataset(
        FLAGS.dataset,
        FLAGS.test_split,
        image_size=config.size,
        batch_size=EVAL_BATCH_SIZE,
        data_dir=FLAGS.data_dir,
        limit=limit or FLAGS.test_images or None,
    )


def calibration_images(size):
    """The first training images as a float array (int8 calibration, BN settling)."""
    key = ("calibration", size)
    if key not in _CACHE:
        data, _ = load_dataset(
            FLAGS.dataset, FLAGS.train_split, image_size=size, batch_size=CALIBRATION_IMAGES,
            data_dir=FLAGS.data_dir, limit=CALIBRATION_IMAGES,
        )  # fmt: skip
        _CACHE[key] = next(iter(data))[0].numpy()
    return _CACHE[key]


# -------------------------------------------------------------------- models


def build_model(config, classes, meta_pooling, alpha=None, head="classic"):
    extra = {}
    if meta_pooling == "search" and FLAGS.search_candidates:
        extra["search_candidates"] = FLAGS.search_candidates
    return km.MobileNetV2MP(
        **extra,
        weights=None,
        alpha=config.alpha if alpha is None else alpha,
        input_shape=(config.size, config.size, 3),
        classes=classes,
        meta_pooling=meta_pooling,
        head=head,
        batch_norm_momentum=BN_MOMENTUM,
    )


#: Variants whose architecture differs per seed (a search's, or a random draw).
PER_SEED_VARIANTS = ("searched", "searched_inherited", "random_arch")


def random_architecture(config, seed):
    """An architecture drawn from the search space: per point, one of its candidates.

    The space is the supernet's (``build_model(..., "search")``): the same
    placement and candidates, pooling windows larger than a point's map
    pruned; every candidate of a point equally likely.
    """
    from keras_metapool.models.mobilenet_v2_mp import block_map_sizes

    candidates = FLAGS.search_candidates or km.DEFAULT_CANDIDATES
    space = km.ArchitectureSpec.search(candidates=tuple(candidates))
    space = space.pruned_for_input(block_map_sizes(config.size, config.size))
    rng = np.random.default_rng(10_000 + seed)
    ops = [
        space.candidates_at(i)[rng.integers(len(space.candidates_at(i)))]
        if entry == "search"
        else entry
        for i, entry in enumerate(space.ops)
    ]
    return km.ArchitectureSpec(
        ops, placement=space.placement, post_norm=space.post_norm, name=f"random{seed}"
    ).to_dict()


def variant_architecture(variant, config, seed, seeds):
    """The architecture dict of a per-seed variant (its search's, or a random draw)."""
    if variant == "random_arch":
        return random_architecture(config, seed)
    search = read_result(Task("search", config, seed=search_seed(seed, seeds)).run_id)
    return search["architecture"]


def variant_arguments(variant, config, classes, architecture=None):
    """``(meta_pooling, alpha, head)`` of ``variant`` at ``config``."""
    if variant == "mobilenet_v2":
        return "none", config.alpha, "classic"
    if variant == "mp_paper":
        return "paper", config.alpha, "classic"
    if variant == "mp_paper_head":
        return "paper", config.alpha, "paper"
    if variant in ABLATIONS:
        return variant, config.alpha, "classic"  # MobileNetV2MP resolves the name
    if variant in PER_SEED_VARIANTS:
        if architecture is None:
            raise ValueError(f"The {variant} variant needs its architecture.")
        return km.ArchitectureSpec.from_dict(architecture), config.alpha, "classic"
    if variant == "param_matched":
        return "none", param_match(config.alpha, classes)["alpha"], "classic"
    raise ValueError(f"Unknown variant {variant!r}.")


def compile_for(model, steps):
    schedule = keras.optimizers.schedules.CosineDecay(FLAGS.learning_rate, max(1, steps))
    model.compile(
        keras.optimizers.Adam(schedule),
        keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )


def param_match(alpha, classes):
    """The alpha at which plain MobileNetV2 has MP paper's parameter count.

    Parameters are a step function of alpha (channels round to multiples of
    8), so the bisection looks for the closest count on either side of the
    target and stops once within a quarter of the tolerance. Cached in
    ``param_match_a<alpha>_c<classes>.json``.
    """
    run_id = f"param_match_a{alpha:g}_c{classes}"
    cached = read_result(run_id)
    if cached is not None:
        return cached
    config = Config(32, alpha)  # parameters do not depend on the input size

    def params(meta_pooling, a):
        keras.backend.clear_session()
        return count_params(build_model(config, classes, meta_pooling, alpha=a))

    target = params("paper", alpha)
    evaluated = {}

    def relative(a):
        if a not in evaluated:
            evaluated[a] = params("none", a) / target - 1.0
        return evaluated[a]

    low, high = alpha, alpha * 1.25
    while relative(high) < 0:
        low, high = high, high * 1.25
    for _ in range(40):
        best = min(evaluated, key=lambda a: abs(evaluated[a]))
        if abs(evaluated[best]) <= FLAGS.match_tolerance / 4 or high - low < 1e-5:
            break
        middle = (low + high) / 2
        if relative(middle) < 0:
            low = middle
        else:
            high = middle
    best = min(evaluated, key=lambda a: abs(evaluated[a]))
    result = {
        "settings": settings(),
        "alpha": best,
        "base_alpha": alpha,
        "classes": classes,
        "target_params": target,
        "params": round(target * (1 + evaluated[best])),
        "relative_difference": evaluated[best],
        "within_tolerance": abs(evaluated[best]) <= FLAGS.match_tolerance,
        "alphas_tried": {f"{a:.6f}": v for a, v in sorted(evaluated.items())},
    }
    if not result["within_tolerance"]:
        logging.warning(
            "param_matched at alpha %g: closest count %+.2f%% of MP paper's (tolerance %.1f%%)",
            alpha, 100 * evaluated[best], 100 * FLAGS.match_tolerance,
        )  # fmt: skip
    write_json(result_path(run_id), result)
    return result


# ---------------------------------------------------------------------- runs


def search_seed(seed, seeds):
    return seeds[0] if FLAGS.search_once else seed


def run_search(task):
    """PMPL on the training split: weights on one part, alpha on the held-out part."""
    config, seed = task.config, task.seed
    info = dataset_info()
    weights_part, weights_info = training_data(config, seed, search_part="weights")
    arch_part, arch_info = training_data(config, seed + 1, search_part="arch")
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    supernet = build_model(config, info.num_classes, "search")
    steps = math.ceil(weights_info.num_examples / FLAGS.batch_size) * search_epochs()
    compile_for(supernet, steps)
    rate = FLAGS.arch_learning_rate
    pmpl = km.PMPLCallback(
        arch_data=arch_part, learning_rate=rate if rate == "auto" else float(rate), verbose=0
    )
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:  # recorded, not printed
        warnings.simplefilter("always", km.search.SearchUndecidedWarning)
        history = supernet.fit(weights_part, epochs=search_epochs(), callbacks=[pmpl], verbose=0)
    seconds = time.perf_counter() - start
    # The inherited child starts from these weights (same process, next task).
    _CACHE[("supernet", task.config, task.seed)] = (supernet, seconds)
    rows = pmpl.summary_rows()
    return {
        "decided_by_evidence": pmpl.decided_points,
        "warning": next((str(w.message) for w in caught), None),
        "budget": pmpl.budget,
        "architecture": pmpl.architecture.to_dict(),
        "search_seconds": seconds,
        "steps": steps,
        "weights_examples": weights_info.num_examples,
        "arch_examples": arch_info.num_examples,
        "final_train_accuracy": float(history.history["accuracy"][-1]),
        "points": [
            {
                "block": row["block"],
                "ops": list(row["ops"]),
                "state": row["state"],
                "evidence": row["evidence"],
                "candidates": row["candidates"],
                "probability": row["probability"],
                "fixed_at_step": row["fixed_at_step"],
            }
            for row in rows
        ],
    }


def inherited_child(task, seeds):
    """The searched child with its supernet's weights (``to_fixed_model``).

    The supernet is the one the search task just trained in this process; on
    a resumed study it is searched again (deterministically), not stored.
    """
    key = ("supernet", task.config, search_seed(task.seed, seeds))
    if key not in _CACHE:
        run_search(Task("search", task.config, seed=key[2]))
    supernet, seconds = _CACHE[key]
    return km.to_fixed_model(supernet), seconds


def run_train(task, architecture=None, search_seconds=0.0, model=None):
    """Trains one variant (from scratch, or ``model`` as given) and evaluates it."""
    config, seed = task.config, task.seed
    info = dataset_info()
    train, train_info = training_data(config, seed)
    test, test_info = test_data(config)
    meta_pooling, alpha, head = variant_arguments(
        task.variant, config, info.num_classes, architecture
    )
    keras.utils.set_random_seed(seed)
    if model is None:
        keras.backend.clear_session()
        model = build_model(config, info.num_classes, meta_pooling, alpha=alpha, head=head)
    steps = math.ceil(train_info.num_examples / FLAGS.batch_size) * FLAGS.epochs
    compile_for(model, steps)
    start = time.perf_counter()
    history = model.fit(train, epochs=FLAGS.epochs, verbose=0)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    test_loss, test_accuracy = model.evaluate(test, verbose=0)
    eval_seconds = time.perf_counter() - start
    return {
        "model_alpha": alpha,
        "head": head,
        "meta_pooling": meta_pooling if isinstance(meta_pooling, str) else meta_pooling.to_dict(),
        "params": count_params(model),
        "macs": count_macs(model),
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "train_accuracy": float(history.history["accuracy"][-1]),
        "train_examples": train_info.num_examples,
        "test_examples": test_info.num_examples,
        "steps": steps,
        "train_seconds": train_seconds,
        "search_seconds": search_seconds,
        "time_to_model_seconds": train_seconds + search_seconds,
        "eval_seconds": eval_seconds,
    }


def latency_models(config, variants, seeds):
    """``[(key, meta_pooling, alpha, head)]`` of the latency run; MobileNetV2 first."""
    classes = dataset_info().num_classes
    models = [(BASELINE, "none", config.alpha, "classic")]
    by_seed = {}
    keys = {}  # one model per distinct architecture
    for variant in variants:
        if variant == BASELINE:
            continue
        if variant in PER_SEED_VARIANTS:
            for seed in seeds:
                architecture = variant_architecture(variant, config, seed, seeds)
                text = json.dumps(architecture, sort_keys=True)
                if text not in keys:
                    keys[text] = f"{variant}/seed{seed}"
                    spec = km.ArchitectureSpec.from_dict(architecture)
                    models.append((keys[text], spec, config.alpha, "classic"))
                by_seed.setdefault(variant, {})[str(seed)] = keys[text]
            continue
        meta_pooling, alpha, head = variant_arguments(variant, config, classes)
        models.append((variant, meta_pooling, alpha, head))
    return models, by_seed


def run_latency(task, variants, seeds):
    """Float and int8 TFLite latency of every variant, interleaved with MobileNetV2's."""
    config = task.config
    classes = dataset_info().num_classes
    models, by_seed = latency_models(config, variants, seeds)
    calibration = calibration_images(config.size)
    entries = {}
    with tempfile.TemporaryDirectory() as folder:
        paths = {"float": [], "int8": []}
        for index, (key, meta_pooling, alpha, head) in enumerate(models):
            keras.backend.clear_session()
            keras.utils.set_random_seed(0)
            model = build_model(config, classes, meta_pooling, alpha=alpha, head=head)
            settle_batch_norms(model, calibration[:32], BN_MOMENTUM)
            entries[key] = {}
            for mode in ("float", "int8"):
                path = os.path.join(folder, f"model{index}_{mode}.tflite")
                exported = km.export.to_tflite(model, path, mode, calibration, strict=False)
                entries[key][f"{mode}_bytes"] = exported.size_bytes
                paths[mode].append(path)
        for mode in ("float", "int8"):
            # The baseline's file twice: the second interpreter's ratio shows
            # how far a ratio of 1 can be off by measurement noise alone.
            files = [paths[mode][0], *paths[mode]]
            medians = interleaved_latency(files, FLAGS.latency_runs, FLAGS.threads)
            control, medians = medians[0], medians[1:]
            for (key, *_), median in zip(models, medians):
                entries[key][f"{mode}_ms"] = median
                entries[key][f"{mode}_ratio"] = median / medians[0]
            entries[BASELINE][f"{mode}_control_ratio"] = control / medians[0]
    return {"models": entries, "architectures_by_seed": by_seed}


# ------------------------------------------------------------------ planning


def plan_tasks(configs, seeds, variants):
    """All tasks in run order: seed by seed (a partial study covers every
    variant), each config's search before its searched model; latency last."""
    tasks = []
    for seed in seeds:
        for config in configs:
            searching = {"searched", "searched_inherited"} & set(variants)
            if searching and search_seed(seed, seeds) == seed:
                tasks.append(Task("search", config, seed=seed))
            tasks += [Task("train", config, variant, seed) for variant in variants]
    tasks += [Task("latency", config) for config in configs]
    return tasks


def format_duration(seconds):
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Predictor:
    """Predicted seconds per task: ``timing.json`` if present, else times seen so far.

    With ``timing.json`` (from ``--estimate`` with the same settings) every
    task has a prediction from the start, scaled by how the runs finished so
    far compare with it (the machine's load changes). Without it, a task is
    predicted by the mean time of finished tasks of the same kind, variant
    and config, else of the same kind and config, else of the same kind.
    """

    def __init__(self, timing=None):
        self.timing = timing
        self.done = []  # (task, seconds)

    def a_priori(self, task):
        if self.timing is None:
            return None
        return predict_from_timing(task, self.timing)

    def add(self, task, seconds):
        self.done.append((task, seconds))

    def predict(self, task):
        prior = self.a_priori(task)
        if prior is not None:
            pairs = [(self.a_priori(t), s) for t, s in self.done]
            pairs = [(p, s) for p, s in pairs if p]
            scale = sum(s for _, s in pairs) / sum(p for p, _ in pairs) if pairs else 1.0
            return prior * scale
        for same in (
            lambda t: (t.kind, t.variant, t.config) == (task.kind, task.variant, task.config),
            lambda t: (t.kind, t.config) == (task.kind, task.config),
            lambda t: t.kind == task.kind,
        ):
            times = [s for t, s in self.done if same(t)]
            if times:
                return float(np.mean(times))
        return None

    def eta(self, tasks):
        predictions = [self.predict(t) for t in tasks]
        known = sum(p for p in predictions if p is not None)
        return known, sum(p is None for p in predictions)


def eta_text(predictor, remaining):
    seconds, unknown = predictor.eta(remaining)
    if not remaining:
        return "done"
    text = f"ETA {format_duration(seconds)}"
    if unknown:
        text += f" + {unknown} run(s) of kinds not timed yet"
    return text


# ------------------------------------------------------------------ estimate


class StepTimer(keras.callbacks.Callback):
    """Wall and process CPU time of every training step."""

    def __init__(self):
        super().__init__()
        self.wall, self.cpu = [], []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, batch, logs=None):
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


def stand_in_architecture():
    """The searched variant's cost before any search ran: a pair at every point.

    A short search leaves most points to the late stage, which fixes them to
    their top two ops; ``ssp + avg3`` everywhere is the costly end of that.
    """
    return km.ArchitectureSpec([("ssp", "avg3")] * 17).to_dict()


def measure_cost(config, variant, classes, convert=False):
    """Build, first step, steady step (wall, CPU), evaluation and conversion times."""
    steps = FLAGS.timing_steps + 2
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    callbacks = [StepTimer()]
    if variant == "search":
        model = build_model(config, classes, "search")
        arch, _ = training_data(config, 1, repeat=True, limit=FLAGS.batch_size * 4)
        callbacks.insert(0, km.PMPLCallback(arch_data=arch, late_stage=1.0, verbose=0))
    else:
        architecture = stand_in_architecture() if variant in PER_SEED_VARIANTS else None
        meta_pooling, alpha, head = variant_arguments(variant, config, classes, architecture)
        model = build_model(config, classes, meta_pooling, alpha=alpha, head=head)
    compile_for(model, steps)
    build_seconds = time.perf_counter() - start
    train, _ = training_data(config, 0, repeat=True, limit=FLAGS.batch_size * 4)
    model.fit(train, epochs=1, steps_per_epoch=steps, callbacks=callbacks, verbose=0)
    timer = callbacks[-1]
    cost = {
        "build_s": build_seconds,
        "first_step_s": timer.wall[0],
        "first_step_cpu_s": timer.cpu[0],
        "step_s": float(np.median(timer.wall[2:])),
        "step_cpu_s": float(np.mean(timer.cpu[2:])),
    }
    if variant != "search":
        test, _ = test_data(config, limit=EVAL_BATCH_SIZE * 2)
        start = time.perf_counter()
        model.evaluate(test, verbose=0)
        cost["eval_first_s"] = time.perf_counter() - start
        start = time.perf_counter()
        model.evaluate(test, verbose=0)
        cost["eval_batch_s"] = (time.perf_counter() - start) / 2
    if convert:
        calibration = calibration_images(config.size)
        settle_batch_norms(model, calibration[:32], BN_MOMENTUM)
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            for mode in ("float", "int8"):
                path = os.path.join(folder, f"{mode}.tflite")
                km.export.to_tflite(model, path, mode, calibration, strict=False)
            cost["convert_s"] = time.perf_counter() - start
    return cost


def task_steps(task):
    info = dataset_info()
    if task.kind == "search":
        weights = info.num_examples - math.floor(info.num_examples * FLAGS.search_fraction)
        return math.ceil(weights / FLAGS.batch_size) * search_epochs()
    return math.ceil(info.num_examples / FLAGS.batch_size) * FLAGS.epochs


def test_batches():
    _, info = test_data(Config(32, 1.0))
    return math.ceil(info.num_examples / EVAL_BATCH_SIZE)


def predict_from_timing(task, timing, cpu=False):
    """Seconds ``task`` should take by ``timing.json``'s costs.

    ``cpu=True``: steady steps at their CPU time over the cores TensorFlow can
    use (the idle-machine floor); the first step (mostly single-threaded
    tracing) at its CPU time.
    """
    costs = timing["costs"].get(task.config.key)
    if costs is None:
        return None
    cores = min(2, os.cpu_count() or 1)

    def steps_cost(cost, steps):
        if cpu:
            return cost["first_step_cpu_s"] + (steps - 1) * cost["step_cpu_s"] / cores
        return cost["first_step_s"] + (steps - 1) * cost["step_s"]

    overhead = timing.get("task_overhead_s", 2.0)
    if task.kind == "search":
        cost = costs["search"]
        return overhead + cost["build_s"] + steps_cost(cost, timing["steps"]["search"])
    if task.kind == "train":
        cost = costs[task.variant]
        evaluation = cost["eval_first_s"] + (timing["test_batches"] - 1) * cost["eval_batch_s"]
        return overhead + cost["build_s"] + steps_cost(cost, timing["steps"]["train"]) + evaluation
    converts = [c["convert_s"] for c in costs.values() if "convert_s" in c]
    builds = [c["build_s"] for c in costs.values()]
    models = len(timing["variants"]) + (1 if "mobilenet_v2" not in timing["variants"] else 0)
    invoke = 2 * FLAGS.latency_runs * (models + 1) * 0.002  # ~2 ms an invoke at most
    return models * (float(np.mean(converts)) + float(np.mean(builds))) + invoke


def run_estimate(configs, seeds, variants, tasks):
    """Times every model of the plan; writes timing.json; prints the ETA."""
    info = dataset_info()
    load_before = load_average()
    print(
        f"Timing {len(variants)} variants (+ the search supernet) at {len(configs)} config(s): "
        f"{FLAGS.timing_steps} steady steps each. Load average before: {load_before} on "
        f"{os.cpu_count()} CPUs.",
        flush=True,
    )
    start = time.perf_counter()
    costs = {}
    for config in configs:
        costs[config.key] = {}
        searching = {"searched", "searched_inherited"} & set(variants)
        needed = list(variants) + (["search"] if searching else [])
        for variant in needed:
            convert = variant in ("mobilenet_v2", "mp_paper")
            cost = measure_cost(config, variant, info.num_classes, convert=convert)
            costs[config.key][variant] = cost
            print(
                f"  {config.title:<22} {variant:<14} build {cost['build_s']:5.1f} s, "
                f"first step {cost['first_step_s']:5.1f} s, step {1000 * cost['step_s']:6.0f} ms "
                f"(CPU {1000 * cost['step_cpu_s']:6.0f} ms)"
                + (f", convert {cost['convert_s']:.1f} s" if "convert_s" in cost else ""),
                flush=True,
            )
    timing = {
        "settings": settings(),
        "machine": machine_description(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "costs": costs,
        "variants": variants,
        "steps": {
            "train": task_steps(Task("train", configs[0], variants[0], seeds[0])),
            "search": task_steps(Task("search", configs[0], seed=seeds[0])),
        },
        "test_batches": test_batches(),
        "task_overhead_s": 2.0,
        "timing_seconds": time.perf_counter() - start,
    }
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    write_json(os.path.join(FLAGS.output_dir, "timing.json"), timing)
    wall = {t.run_id: predict_from_timing(t, timing) for t in tasks}
    cpu = {t.run_id: predict_from_timing(t, timing, cpu=True) for t in tasks}
    startup = 30.0  # imports, data, parameter matching
    matching = 20.0 * len({c.alpha for c in configs}) if "param_matched" in variants else 0.0
    print(
        f"\nPlan: {len(tasks)} runs; {timing['steps']['train']} training steps per model, "
        f"{timing['steps']['search']} search steps per search, {timing['test_batches']} test "
        f"batches of {EVAL_BATCH_SIZE}."
    )
    print("| run | predicted (wall, load now) | CPU-time floor (2 idle cores) |")
    print("|---|---:|---:|")
    for t in tasks:
        print(
            f"| {t.run_id} | {format_duration(wall[t.run_id])} | {format_duration(cpu[t.run_id])} |"
        )
    total_wall = sum(wall.values()) + startup + matching
    total_cpu = sum(cpu.values()) + startup + matching
    print(
        f"\nPredicted study: {format_duration(total_wall)} at the load measured now "
        f"(load average {load_before} -> {timing['load_average_after']} on {os.cpu_count()} "
        f"CPUs); {format_duration(total_cpu)} if every steady step got both cores to itself "
        f"(CPU time / {min(2, os.cpu_count() or 1)}: the floor on an idle machine). "
        f"Timing took {format_duration(timing['timing_seconds'])}; written to "
        f"{os.path.join(FLAGS.output_dir, 'timing.json')}."
    )
    return timing


# -------------------------------------------------------------------- report


def welch(a, b):
    """Welch's t-test of mean(a) - mean(b): dict(diff, t, df, p), None below 2 each."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats  # installed with tensorflow-model-optimization

    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = float(a.mean() - b.mean())
    if va + vb == 0:
        return {"diff": diff, "t": math.inf if diff else 0.0, "df": None, "p": float(diff == 0)}
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return {"diff": diff, "t": t, "df": df, "p": float(2 * stats.t.sf(abs(t), df))}


def pooled_std(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) + len(b) <= 2:
        return None
    return math.sqrt(
        (
            (len(a) - 1) * a.var(ddof=1 if len(a) > 1 else 0)
            + (len(b) - 1) * b.var(ddof=1 if len(b) > 1 else 0)
        )
        / (len(a) + len(b) - 2)
    )


def detectable_difference(std, n):
    """Smallest difference of means a two-sided t-test (p < 0.05) detects with n seeds each."""
    from scipy import stats

    if std is None or n < 2:
        return None
    return float(stats.t.ppf(0.975, 2 * n - 2) * std * math.sqrt(2.0 / n))


def collect(tasks):
    """Results per config: {config: {variant: [train results]}}, searches, latency."""
    groups, searches, latency = {}, {}, {}
    for task in tasks:
        data = read_result(task.run_id)
        if data is None:
            continue
        if task.kind == "train":
            groups.setdefault(task.config, {}).setdefault(task.variant, []).append(data)
        elif task.kind == "search":
            searches.setdefault(task.config, {})[task.seed] = data
        else:
            latency[task.config] = data
    return groups, searches, latency


def variant_stats(runs):
    accuracies = [r["test_accuracy"] for r in runs]
    return {
        "accuracies": accuracies,
        "mean": float(np.mean(accuracies)),
        "std": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else None,
        "n": len(accuracies),
        "params": float(np.mean([r["params"] for r in runs])),
        "macs": float(np.mean([r["macs"] for r in runs])),
        "model_alpha": float(np.mean([r["model_alpha"] for r in runs])),
        "time": float(np.mean([r["time_to_model_seconds"] for r in runs])),
        "search_time": float(np.mean([r["search_seconds"] for r in runs])),
        # CPU seconds of the process (all threads): the work, whatever else ran
        # on the machine; wall times carry the machine's other load.
        "cpu": _mean_or_none([r.get("cpu_seconds", 0) + r.get("search_cpu_seconds", 0)
                              for r in runs if "cpu_seconds" in r]),
        "search_cpu": _mean_or_none([r["search_cpu_seconds"] for r in runs
                                     if "search_cpu_seconds" in r]),
    }  # fmt: skip


def _mean_or_none(values):
    return float(np.mean(values)) if values else None


def latency_ratio(latency, variant, mode):
    """Mean latency ratio of ``variant`` (per-seed variants: over their architectures)."""
    if latency is None:
        return None
    models = latency["models"]
    by_seed = latency.get("architectures_by_seed") or {
        "searched": latency.get("searched_by_seed", {})  # files written before the others
    }
    if variant in PER_SEED_VARIANTS:
        keys = list(by_seed.get(variant, {}).values())
        return float(np.mean([models[k][f"{mode}_ratio"] for k in keys])) if keys else None
    return models.get(variant, {}).get(f"{mode}_ratio")


def decided_points(search):
    """Points a search decided by evidence (older files: fixed by the margin)."""
    if "decided_by_evidence" in search:
        return search["decided_by_evidence"]
    return search["fixed_by_margin"]


def describe_architecture(architecture):
    spec = km.ArchitectureSpec.from_dict(architecture)
    return repr(spec).replace("ArchitectureSpec(ops=", "").split(", placement=")[0]


def verdict(test):
    if test is None:
        return "cannot be judged (fewer than 2 seeds)"
    if test["p"] < 0.05:
        return f"larger than seed noise (Welch p = {test['p']:.3f})"
    return f"within seed noise (Welch p = {test['p']:.2f})"


def comparison_sentence(name, other_name, stats, other_stats):
    diff = 100 * (stats["mean"] - other_stats["mean"])
    std = pooled_std(stats["accuracies"], other_stats["accuracies"])
    test = welch(stats["accuracies"], other_stats["accuracies"])
    text = (
        f"{name} {100 * stats['mean']:.2f}% vs {other_name} {100 * other_stats['mean']:.2f}% "
        f"({stats['n']} and {other_stats['n']} seeds): {diff:+.2f} points"
    )
    if std:
        text += f", {abs(diff) / (100 * std):.1f}x the pooled seed std ({100 * std:.2f})"
    return text + f"; {verdict(test)}.", test


def conclusions(groups, searches, latency):
    """'What this shows' bullets and 'does not show' bullets, from the numbers."""
    shows, caveats = [], []
    tests = 0
    stds = []
    for config in sorted(groups):
        stats = {v: variant_stats(r) for v, r in groups[config].items()}
        base = stats.get(BASELINE)
        lines = []
        if base is None:
            continue
        if "mp_paper" in stats:
            sentence, _ = comparison_sentence("MP paper", "MobileNetV2", stats["mp_paper"], base)
            tests += 1
            paper = stats["mp_paper"]
            cost = (
                f" It costs {100 * (paper['params'] / base['params'] - 1):+.1f}% parameters, "
                f"{100 * (paper['macs'] / base['macs'] - 1):+.1f}% MACs"
            )
            ratios = [latency_ratio(latency.get(config), "mp_paper", m) for m in ("float", "int8")]
            if ratios[0] is not None:
                cost += f", {ratios[0]:.2f}x float and {ratios[1]:.2f}x int8 latency"
            lines.append(sentence + cost + ".")
            if "param_matched" in stats:
                matched = stats["param_matched"]
                sentence, test = comparison_sentence(
                    "MP paper", f"MobileNetV2 at alpha {matched['model_alpha']:.4g} "
                    f"({matched['params'] / paper['params'] - 1:+.2%} of its parameters)",
                    paper, matched,
                )  # fmt: skip
                tests += 1
                survives = (
                    "so the gain survives the parameter-matched baseline"
                    if test is not None and test["p"] < 0.05 and test["diff"] > 0
                    else "so this study cannot tell the gain from the effect of the extra "
                    "parameters"
                    if paper["mean"] > base["mean"]
                    else "and MP paper did not beat MobileNetV2 in the first place"
                )
                lines.append(f"Parameter-matched: {sentence[:-1]}, {survives}.")
        others = []
        for variant, s in stats.items():
            if variant in (BASELINE, "mp_paper", "param_matched"):
                continue
            test = welch(s["accuracies"], base["accuracies"])
            tests += 1
            mark = " (beyond noise)" if test is not None and test["p"] < 0.05 else ""
            others.append(f"{variant} {100 * (s['mean'] - base['mean']):+.2f}{mark}")
        if others:
            lines.append("Other variants vs MobileNetV2 (points): " + ", ".join(others) + ".")
        if config in searches:
            found = searches[config]
            decided = [decided_points(s) for s in found.values()]
            points = len(next(iter(found.values()))["points"])
            mean_seconds = np.mean([s["search_seconds"] for s in found.values()])
            lines.append(
                f"The search ({len(found)} run(s), mean {format_duration(mean_seconds)}) "
                f"decided {', '.join(map(str, decided))} of its {points} points by evidence; "
                "the undecided ones have no enhancer."
            )
        best = max(stats, key=lambda v: stats[v]["mean"])
        lines.append(
            f"Best mean accuracy: {VARIANT_BY_KEY[best].label} ({100 * stats[best]['mean']:.2f}%)."
        )
        shows.append((config, lines))
        for s in stats.values():
            if s["std"] is not None:
                stds.append((s["std"], s["n"]))
    if stds:
        typical = float(np.median([s for s, _ in stds]))
        n = min(n for _, n in stds)
        detectable = detectable_difference(typical, n)
        caveats.append(
            f"Small effects: with {n} seeds per variant and a typical seed std of "
            f"{100 * typical:.2f} points, only differences above about {100 * detectable:.2f} "
            "points reach p < 0.05; 'within seed noise' means not shown, not shown absent."
        )
    else:
        caveats.append(
            "One seed per variant: no estimate of seed noise, so no difference can be judged."
        )
    if tests:
        caveats.append(
            f"Many comparisons: {tests} tests at p < 0.05 expect about {0.05 * tests:.1f} false "
            "positives by chance alone."
        )
    info = dataset_info()
    steps = task_steps(Task("train", Config(32, 1.0), BASELINE, 0))
    caveats += [
        f"The paper's claim (+2.3 top-1 on ImageNet at 224x224 after 300 epochs): this is "
        f"{FLAGS.dataset} ({info.num_examples} training images, {steps} steps per model, one "
        "short untuned recipe shared by all variants). A recipe, resolution or dataset that "
        "suits one architecture better can change the ranking.",
        "Latency is this CPU's (LiteRT with XNNPACK, batch 1), not the Edge TPU's; ratios "
        "are of models timed in one interleaved run and carry the noise shown by the second "
        "MobileNetV2 interpreter.",
    ]
    return shows, caveats


def write_report(configs, seeds, variants, tasks, started_machine):
    groups, searches, latency = collect(tasks)
    for config, by_variant in groups.items():
        for variant in ("searched", "searched_inherited"):  # their cost includes the search's
            for run in by_variant.get(variant, []):
                search = searches.get(config, {}).get(search_seed(run["seed"], seeds))
                if search is not None and "cpu_seconds" in search:
                    run["search_cpu_seconds"] = search["cpu_seconds"]
    if not groups:
        return None
    info = dataset_info()
    lines = [
        "# Does Meta-Pooling help? Study results",
        "",
        f"Command: `{command_line()}`",
        "",
        f"Machine: {started_machine['cpu_count']} CPUs (`os.cpu_count()`), "
        f"{started_machine['cpu_model']}; load average (1/5/15 min) at the start "
        f"{started_machine['load_average']}, at the end {load_average()}; "
        f"TensorFlow {started_machine['tensorflow']}, tf_keras {started_machine['tf_keras']}, "
        f"LiteRT {started_machine['ai_edge_litert']}, Python {started_machine['python']}.",
        "",
        f"Data: `{FLAGS.dataset}` split `{FLAGS.train_split}` (first {info.num_examples} "
        f"images, {info.num_classes} classes) for training, `{FLAGS.test_split}` "
        f"(first {FLAGS.test_images or 'all'}) for accuracy. Training: {FLAGS.epochs} epochs, "
        f"batch {FLAGS.batch_size}, Adam {FLAGS.learning_rate:g} cosine-decayed to 0, "
        f"augmentation `{FLAGS.augment}`, BN momentum {BN_MOMENTUM}, seeds "
        f"{', '.join(map(str, seeds))} (weight init and data order). Search: PMPL on the same "
        f"training images, {1 - FLAGS.search_fraction:.0%} for weights / "
        f"{FLAGS.search_fraction:.0%} held out for alpha, {search_epochs()} epochs, "
        f"PMPLCallback's defaults (evidence rule, undecided points -> no enhancer), alpha "
        f"lr {FLAGS.arch_learning_rate}, "
        + ("one search per (alpha, size)" if FLAGS.search_once else "one search per seed")
        + "; the searched model then trains from scratch like the others (`searched`) or from "
        "the supernet's weights (`searched_inherited`), and its time includes the search; "
        "`random_arch` draws each point's op uniformly from the same space.",
        "",
        "Accuracy: mean ± std over seeds (n); Δ and Welch p against MobileNetV2 of the same "
        "alpha and size. Latency: float / int8 TFLite, batch 1, "
        f"{FLAGS.threads} thread(s), median of {FLAGS.latency_runs} invokes interleaved with "
        "MobileNetV2's, as a ratio to it. Time: wall time of training (+ search) per model, "
        "mean over seeds; CPU: process CPU time of training and test evaluation (+ the "
        "search), which does not depend on what else the machine ran (wall time does).",
    ]
    for config in sorted(groups):
        stats = {v: variant_stats(r) for v, r in groups[config].items()}
        base = stats.get(BASELINE)
        lines += [
            "",
            f"## {config.title}",
            "",
            "| variant | alpha | params | vs MNv2 | MACs | vs MNv2 | test accuracy % | Δ (points) "
            "| Welch p | float latency | int8 latency | time | CPU |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for variant in variants:
            if variant not in stats:
                continue
            s = stats[variant]
            std = f" ± {100 * s['std']:.2f}" if s["std"] is not None else ""
            if base is not None:
                test = welch(s["accuracies"], base["accuracies"])
                delta = f"{100 * (s['mean'] - base['mean']):+.2f}"
                p = "—" if variant == BASELINE or test is None else f"{test['p']:.3f}"
                vs_params = f"{100 * (s['params'] / base['params'] - 1):+.1f}%"
                vs_macs = f"{100 * (s['macs'] / base['macs'] - 1):+.1f}%"
            else:
                delta = p = vs_params = vs_macs = "—"
            ratios = []
            for mode in ("float", "int8"):
                ratio = latency_ratio(latency.get(config), variant, mode)
                ratios.append("—" if ratio is None else f"{ratio:.2f}x")
            time_text = format_duration(s["time"])
            cpu_text = format_duration(s["cpu"]) if s["cpu"] is not None else "—"
            if variant in ("searched", "searched_inherited"):
                time_text += f" (search {format_duration(s['search_time'])})"
                if s["search_cpu"] is not None:
                    cpu_text += f" (search {format_duration(s['search_cpu'])})"
            lines.append(
                f"| {VARIANT_BY_KEY[variant].label} | {s['model_alpha']:.4g} "
                f"| {s['params'] / 1e6:.3f}M | {vs_params} | {s['macs'] / 1e6:.1f}M | {vs_macs} "
                f"| {100 * s['mean']:.2f}{std} ({s['n']}) | {delta} | {p} "
                f"| {ratios[0]} | {ratios[1]} | {time_text} | {cpu_text} |"
            )
        notes = []
        if config in latency:
            control = latency[config]["models"][BASELINE]
            notes.append(
                "Latency noise: a second interpreter of the MobileNetV2 file measured "
                f"{control['float_control_ratio']:.2f}x (float) and "
                f"{control['int8_control_ratio']:.2f}x (int8) of the first; MobileNetV2 "
                f"itself: {control['float_ms']:.2f} ms float, {control['int8_ms']:.2f} ms int8."
            )
        for seed, search in sorted(searches.get(config, {}).items()):
            notes.append(
                f"Searched architecture (seed {seed}, {format_duration(search['search_seconds'])}, "
                f"{decided_points(search)}/{len(search['points'])} points decided by evidence): "
                f"`{describe_architecture(search['architecture'])}`."
            )
        if "param_matched" in stats:
            match = param_match(config.alpha, info.num_classes)
            notes.append(
                f"Parameter match: MobileNetV2 at alpha {match['alpha']:.4f} has "
                f"{match['params']:,} parameters, {match['relative_difference']:+.2%} of MP "
                f"paper's {match['target_params']:,}."
            )
        lines += [""] + [f"- {n}" for n in notes] if notes else []
    shows, caveats = conclusions(groups, searches, latency)
    lines += ["", "## What this shows", ""]
    for config, config_lines in shows:
        lines.append(f"- **{config.title}.** " + " ".join(config_lines))
    lines += ["", "## What this does not show", ""] + [f"- {c}" for c in caveats]
    lines += [
        "",
        "![accuracy per variant](study_accuracy.png)",
        "",
        "![accuracy against cost](study_cost.png)",
        "",
    ]
    path = os.path.join(FLAGS.output_dir, "study.md")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    os.replace(path + ".tmp", path)
    plot(groups, latency, variants)
    return path


def plot(groups, latency, variants):
    """study_accuracy.png (mean ± std per variant) and study_cost.png (vs MACs, latency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = sorted(groups)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    figure, axes = plt.subplots(
        1, len(configs), figsize=(5.5 * len(configs), 0.45 * len(variants) + 1.8), squeeze=False
    )
    for ax, config in zip(axes[0], configs):
        shown = [v for v in variants if v in groups[config]]
        for row, variant in enumerate(shown):
            s = variant_stats(groups[config][variant])
            ax.errorbar(100 * s["mean"], row, xerr=100 * (s["std"] or 0), fmt="o", capsize=4,
                        color=colors[row % len(colors)])  # fmt: skip
            ax.scatter([100 * a for a in s["accuracies"]], [row] * s["n"], marker="|", s=80,
                       color="grey", zorder=3)  # fmt: skip
        base = groups[config].get(BASELINE)
        if base:
            ax.axvline(100 * variant_stats(base)["mean"], color="grey", linestyle=":")
        ax.set_yticks(range(len(shown)))
        ax.set_yticklabels([VARIANT_BY_KEY[v].label for v in shown], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("test accuracy % (mean ± std; ticks: seeds)")
        ax.set_title(config.title)
    figure.tight_layout()
    figure.savefig(os.path.join(FLAGS.output_dir, "study_accuracy.png"), dpi=110)
    plt.close(figure)

    figure, axes = plt.subplots(len(configs), 2, figsize=(11, 4 * len(configs)), squeeze=False)
    for (ax_macs, ax_latency), config in zip(axes, configs):
        shown = [v for v in variants if v in groups[config]]
        for index, variant in enumerate(shown):
            s = variant_stats(groups[config][variant])
            style = dict(fmt="o", capsize=3, color=colors[index % len(colors)],
                         label=VARIANT_BY_KEY[variant].label)  # fmt: skip
            ax_macs.errorbar(s["macs"] / 1e6, 100 * s["mean"], yerr=100 * (s["std"] or 0), **style)
            ratio = latency_ratio(latency.get(config), variant, "float")
            if ratio is not None:
                ax_latency.errorbar(ratio, 100 * s["mean"], yerr=100 * (s["std"] or 0), **style)
        ax_macs.set_xlabel("MACs per image (M)")
        ax_latency.set_xlabel("float TFLite latency / MobileNetV2's")
        for ax in (ax_macs, ax_latency):
            ax.set_ylabel("test accuracy %")
            ax.set_title(config.title)
            ax.grid(alpha=0.3)
        ax_macs.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(os.path.join(FLAGS.output_dir, "study_cost.png"), dpi=110)
    plt.close(figure)


# ---------------------------------------------------------------------- main


def summary_line(task, result):
    if task.kind == "train":
        return (
            f"test accuracy {100 * result['test_accuracy']:.2f}%, "
            f"train {format_duration(result['train_seconds'])}"
        )
    if task.kind == "search":
        return (
            f"{decided_points(result)}/{len(result['points'])} points decided by evidence, "
            f"{describe_architecture(result['architecture'])}"
        )
    ratios = result["models"]
    worst = max(r["float_ratio"] for r in ratios.values())
    return f"{len(ratios)} models, float latency ratios up to {worst:.2f}x"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    _CACHE.clear()  # a second study in the same process may use other data
    apply_quick_defaults()
    configs, seeds, variants = parse_plan_flags()
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    tasks = plan_tasks(configs, seeds, variants)
    machine = machine_description()
    info = dataset_info()
    print(
        f"Study: {len(variants)} variants x {len(configs)} config(s) x {len(seeds)} seed(s) on "
        f"{FLAGS.dataset} ({info.num_examples} training images, {info.num_classes} classes); "
        f"{os.cpu_count()} CPUs ({machine['cpu_model']}), load average {machine['load_average']}.",
        flush=True,
    )
    if FLAGS.estimate:
        run_estimate(configs, seeds, variants, tasks)
        return
    timing = None
    timing_path = os.path.join(FLAGS.output_dir, "timing.json")
    if os.path.exists(timing_path):
        with open(timing_path, encoding="utf-8") as f:
            timing = json.load(f)
        if timing.get("settings") != json.loads(json.dumps(settings())):
            timing = None  # made for other settings: its predictions do not apply
    predictor = Predictor(timing)
    pending = [t for t in tasks if read_result(t.run_id) is None]
    print(
        f"{len(tasks)} runs, {len(tasks) - len(pending)} already done (skipped); "
        f"{eta_text(predictor, pending)}"
        + ("" if timing else " (no timing.json: ETA from the runs as they finish)"),
        flush=True,
    )
    start = time.perf_counter()
    for number, task in enumerate(pending, 1):
        task_start, cpu_start = time.perf_counter(), time.process_time()
        load_before = load_average()
        if task.kind == "search":
            result = run_search(task)
        elif task.kind == "train":
            architecture, search_seconds, model = None, 0.0, None
            if task.variant in PER_SEED_VARIANTS:
                architecture = variant_architecture(task.variant, task.config, task.seed, seeds)
            if task.variant in ("searched", "searched_inherited"):
                search_task = Task("search", task.config, seed=search_seed(task.seed, seeds))
                search_seconds = read_result(search_task.run_id)["search_seconds"]
            if task.variant == "searched_inherited":
                model, _ = inherited_child(task, seeds)
            result = run_train(task, architecture, search_seconds, model=model)
        else:
            result = run_latency(task, variants, seeds)
        seconds = time.perf_counter() - task_start
        result.update(
            run_id=task.run_id,
            kind=task.kind,
            variant=task.variant,
            alpha=task.config.alpha,
            image_size=task.config.size,
            seed=task.seed,
            dataset=FLAGS.dataset,
            settings=settings(),
            wall_seconds=seconds,
            # CPU time of all threads: a load-independent measure of the work.
            cpu_seconds=time.process_time() - cpu_start,
            load_average_before=load_before,
            load_average_after=load_average(),
            finished=time.strftime("%Y-%m-%d %H:%M:%S"),
        )
        write_json(result_path(task.run_id), result)
        predictor.add(task, seconds)
        print(
            f"[{number}/{len(pending)}] {task.label}: {summary_line(task, result)} "
            f"({format_duration(seconds)}) | elapsed {format_duration(time.perf_counter() - start)}"
            f", {eta_text(predictor, pending[number:])}",
            flush=True,
        )
    report = write_report(configs, seeds, variants, tasks, machine)
    print(f"\nWrote {report} and its plots (total {format_duration(time.perf_counter() - start)}).")
    with open(report, encoding="utf-8") as f:
        print(f.read())


if __name__ == "__main__":
    app.run(main)

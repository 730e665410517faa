"""The study's plan: its flags, variants, configurations, tasks and result files."""

import dataclasses
import json
import os
import tempfile

from absl import app, flags

import keras_metapool as km
from keras_metapool._command_line import STUDY_PROGRAM
from keras_metapool.models.architecture import ABLATIONS


@dataclasses.dataclass(frozen=True)
class Variant:
    key: str
    label: str


#: The study's variants (flag key, report label), in the report's order.
VARIANTS = (
    Variant("mobilenet_v2", "MobileNetV2"),
    Variant("mp_paper", "MobileNetV2MP paper"),
    Variant("mp_paper_head", "MobileNetV2MP paper, paper head"),
    Variant("mp_paper_open", "MobileNetV2MP paper, SSP starting open (enhancer_init)"),
    Variant("ssp_all", "SSP after every block, no post-norm"),
    Variant("se_paper", "squeeze-excitation at MP paper's points (channel-attention anchor)"),
    Variant("global", "ablation: global (SSP everywhere)"),
    Variant("local", "ablation: local (avg3 everywhere)"),
    Variant("random", "ablation: random"),
    Variant("exclude_local", "ablation: exclude-local"),
    Variant("searched", "PMPL searched"),
    Variant("searched_inherited", "PMPL searched, supernet weights inherited"),
    Variant("random_arch", "random architecture from the search space"),
    Variant("random_matched", "random architecture, as many enhancers as the searched one"),
    Variant("random_searched", "random search at the PMPL search's CPU time, best retrained"),
    Variant("param_matched", "MobileNetV2, params matched to MP paper"),
)
VARIANT_BY_KEY = {v.key: v for v in VARIANTS}
assert set(ABLATIONS) <= set(VARIANT_BY_KEY)

#: The study's flags: their own FlagValues, apart from absl's global ones (the
#: ``keras-metapool`` command's), so the two sets may share names.
FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "dataset",
    "fashion_mnist",
    "`load_dataset` name: fashion_mnist, tfds:NAME, folder:PATH.",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "data_dir", None, "tfds data folder / Fashion-MNIST folder override.", flag_values=FLAGS
)
flags.DEFINE_string(
    "train_split", "train", "Split the models (and the search) train on.", flag_values=FLAGS
)
flags.DEFINE_string(
    "test_split",
    "test",
    "Split the accuracy is measured on (never searched on).",
    flag_values=FLAGS,
)
flags.DEFINE_list("alphas", ["0.35", "1.0"], "Width multipliers.", flag_values=FLAGS)
flags.DEFINE_list(
    "sizes", ["64"], "Square input sizes; every alpha runs at every size.", flag_values=FLAGS
)
flags.DEFINE_list(
    "extra_configs",
    [],
    "More ALPHA@SIZE pairs, e.g. 0.35@96 (the issue's 96x96 run).",
    flag_values=FLAGS,
)
flags.DEFINE_list(
    "seeds", ["0", "1", "2"], "Seeds: weight init, data order, search.", flag_values=FLAGS
)
flags.DEFINE_list(
    "variants",
    None,
    "Variants to run (default: all): " + "; ".join(f"{v.key} ({v.label})" for v in VARIANTS) + ".",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "train_images", 6000, "First N training images (0: all).", lower_bound=0, flag_values=FLAGS
)
flags.DEFINE_integer(
    "test_images", 5000, "First N test images (0: all).", lower_bound=0, flag_values=FLAGS
)
flags.DEFINE_integer(
    "epochs", 3, "Training epochs of every variant.", lower_bound=1, flag_values=FLAGS
)
flags.DEFINE_integer(
    "batch_size", 64, "Batch size (training and search).", lower_bound=1, flag_values=FLAGS
)
flags.DEFINE_float(
    "learning_rate",
    2e-3,
    "Adam learning rate, cosine-decayed to 0.",
    lower_bound=0,
    flag_values=FLAGS,
)
flags.DEFINE_enum(
    "augment", "none", ["none", "basic", "randaugment"], "Training augmentation.", flag_values=FLAGS
)
flags.DEFINE_integer(
    "search_epochs", None, "Epochs of the PMPL search over its half (default: --epochs).",
    lower_bound=1,
    flag_values=FLAGS,
)  # fmt: skip
flags.DEFINE_string(
    "arch_learning_rate", "auto",
    "Learning rate of the search logits (the architecture steps): 'auto' (PMPLCallback's "
    "default, sized to the search's steps) or a number.",
    flag_values=FLAGS,
)  # fmt: skip
flags.DEFINE_float(
    "search_fraction",
    0.5,
    "Share of the training images held out for the architecture steps.",
    flag_values=FLAGS,
)
flags.DEFINE_list(
    "search_candidates",
    None,
    "Candidate ops of the search (default: all 8 of docs/method.md §1).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "random_search_epochs", 1,
    "Epochs each architecture of random_searched's random search trains (on the search's "
    "weight part) before it is scored on the held-out part.",
    lower_bound=1,
    flag_values=FLAGS,
)  # fmt: skip
flags.DEFINE_bool(
    "search_once", False,
    "One search per (alpha, size), with the first seed, reused by every seed (cheaper; "
    "the seed spread then excludes the search's own variance). Default: one per seed.",
    flag_values=FLAGS,
)  # fmt: skip
flags.DEFINE_list(
    "search_seeds", [],
    "Seeds the search stage runs on (its searches and the variants trained from them: "
    "searched, searched_inherited, random_matched, random_searched), a subset of --seeds. "
    "Default: every seed. A fixed study of 10 seeds can carry a search stage of 5.",
    flag_values=FLAGS,
)  # fmt: skip
flags.DEFINE_float(
    "match_tolerance", 0.01, "Parameter match of param_matched (relative).", flag_values=FLAGS
)
flags.DEFINE_integer(
    "latency_runs", 100, "Interleaved timed invokes per model.", lower_bound=1, flag_values=FLAGS
)
flags.DEFINE_integer(
    "threads", 1, "Interpreter threads for latency.", lower_bound=1, flag_values=FLAGS
)
#: Where a study writes unless told: under runs/, like every subcommand.
DEFAULT_OUTPUT_DIR = os.path.join("runs", "study")
flags.DEFINE_string(
    "output_dir",
    DEFAULT_OUTPUT_DIR,
    "Where run JSONs, study.md and plots go (a study resumes from what is there).",
    flag_values=FLAGS,
)
flags.DEFINE_bool(
    "quick", False,
    "Minutes: alpha 0.35 at 32x32, seed 0, 512 training / 256 test images, 1 epoch, "
    "variants mobilenet_v2, mp_paper, param_matched, searched (over 3 candidates), "
    "searched_inherited, random_arch, "
    "20 latency runs (flags given explicitly win).",
    flag_values=FLAGS,
)  # fmt: skip
flags.DEFINE_bool(
    "estimate", False, "Only time every model of the plan and print the ETA.", flag_values=FLAGS
)
flags.DEFINE_bool(
    "report_only", False,
    "Run nothing: write study.md and its plots from the runs already in --output_dir, "
    "marked as in progress when runs of the plan are missing.",
    flag_values=FLAGS,
)  # fmt: skip
flags.DEFINE_integer(
    "timing_steps", 6, "Timed steps per model with --estimate.", lower_bound=2, flag_values=FLAGS
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
PER_SEED_VARIANTS = (
    "searched", "searched_inherited", "random_arch", "random_matched", "random_searched",
)  # fmt: skip
#: The variants that need their seed's search first.
SEARCH_VARIANTS = ("searched", "searched_inherited", "random_matched", "random_searched")
#: The searches of a study: PMPL's, and the random search at its compute.
SEARCH_KINDS = ("search", "random_search")
#: Variants whose time (wall and CPU) includes a search: the kind of that search.
TIMED_WITH_SEARCH = {
    "searched": "search", "searched_inherited": "search", "random_searched": "random_search",
}  # fmt: skip
BASELINE = "mobilenet_v2"


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

    kind: str  # "search" | "random_search" | "train" | "latency"
    config: Config
    variant: str = None
    seed: int = None

    @property
    def run_id(self):
        if self.kind == "latency":
            return f"latency_{self.config.key}"
        name = self.kind if self.kind in SEARCH_KINDS else self.variant
        return f"{name}_{self.config.key}_seed{self.seed}"

    @property
    def label(self):
        if self.kind == "latency":
            return f"latency, {self.config.title}"
        what = {"search": "PMPL search", "random_search": "random search at its compute"}.get(
            self.kind
        ) or VARIANT_BY_KEY[self.variant].label
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
    if FLAGS.search_seeds and not set(SEARCH_VARIANTS) & set(variants):
        raise app.UsageError(
            f"--search_seeds={','.join(FLAGS.search_seeds)} chooses the seeds of the search "
            f"stage, but --variants has none of its variants ({', '.join(SEARCH_VARIANTS)}): "
            "add one, or drop --search_seeds."
        )
    search_stage_seeds(seeds)  # its errors, before any run
    ordered = [v.key for v in VARIANTS if v.key in variants]  # canonical order
    return sorted(configs), seeds, ordered


def search_stage_seeds(seeds):
    """The seeds the search stage runs on: ``--search_seeds``, or all of ``seeds``."""
    if not FLAGS.search_seeds:
        return list(seeds)
    try:
        chosen = [int(s) for s in FLAGS.search_seeds]
    except ValueError:
        raise app.UsageError(f"--search_seeds takes numbers, got {FLAGS.search_seeds}.") from None
    outside = [s for s in chosen if s not in seeds]
    if outside or len(set(chosen)) != len(chosen):
        raise app.UsageError(
            f"--search_seeds must be distinct seeds of --seeds ({FLAGS.seeds}), got "
            f"{FLAGS.search_seeds}: add the missing ones to --seeds."
        )
    if FLAGS.search_once:
        raise app.UsageError(
            "--search_seeds and --search_once exclude each other: --search_once trains every "
            "seed on the first seed's search; drop one of them."
        )
    return chosen


def variant_seeds(variant, seeds):
    """The seeds ``variant`` runs on: the search stage's for its variants, else all."""
    return search_stage_seeds(seeds) if variant in SEARCH_VARIANTS else list(seeds)


def search_epochs():
    return FLAGS.search_epochs or FLAGS.epochs


def settings():
    """Everything a result depends on; stored in every JSON and compared on resume."""
    values = {
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
        "search_rule": (
            "PMPLCallback defaults (evidence rule: time-uniform bar, error_rate 0.05; "
            "undecided -> identity, warm-up 0.25)"
        ),
        "arch_learning_rate": FLAGS.arch_learning_rate,
        "search_fraction": FLAGS.search_fraction,
        "search_once": FLAGS.search_once,
        "random_search_epochs": FLAGS.random_search_epochs,
        "search_candidates": FLAGS.search_candidates or list(km.DEFAULT_CANDIDATES),
        "match_tolerance": FLAGS.match_tolerance,
        "latency_runs": FLAGS.latency_runs,
        "threads": FLAGS.threads,
    }
    if FLAGS.search_once:
        # Every seed trains the architecture of the first seed's search: a
        # study resumed with another first seed would mix two searches.
        values["search_seed"] = int(FLAGS.seeds[0])
    return values


def command_line():
    """The command that reproduces this study: the flags set explicitly."""
    parts = [STUDY_PROGRAM]
    for name in FLAGS:  # the study's own FlagValues: its flags only, in definition order
        flag = FLAGS[name]
        if flag.present and name not in ("estimate", "report_only"):
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


class OtherSettingsError(ValueError):
    """A run file in the output folder was made with other settings."""


def read_result(run_id):
    """The stored result of ``run_id``, or None; raises if it has other settings."""
    path = result_path(run_id)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    _check_settings(path, data)
    return data


#: The settings only a search, and the runs it feeds, depend on: a fixed
#: model's run is not compared on them (a study may add searches later).
SEARCH_SETTINGS = (
    "search_epochs", "search_rule", "arch_learning_rate", "search_fraction", "search_once",
    "search_candidates", "random_search_epochs",
)  # fmt: skip


def _check_settings(path, data):
    current = json.loads(json.dumps(settings()))
    stored = data.get("settings", {})
    if data.get("kind") not in SEARCH_KINDS and data.get("variant") not in SEARCH_VARIANTS:
        current = {k: v for k, v in current.items() if k not in SEARCH_SETTINGS}
        stored = {k: v for k, v in stored.items() if k not in SEARCH_SETTINGS}
    if stored != current:
        differing = sorted(k for k in set(current) | set(stored) if stored.get(k) != current.get(k))
        shown = ", ".join(
            f"{k} {stored.get(k)!r} there, {current.get(k)!r} now" for k in differing[:4]
        )
        shown += f" and {len(differing) - 4} more" if len(differing) > 4 else ""
        raise OtherSettingsError(
            f"{FLAGS.output_dir} holds a study made with other settings ({os.path.basename(path)}: "
            f"{shown}). A study's runs must share their settings: pass another --output_dir, "
            "or the settings of that study to resume it."
        )


def check_output_dir():
    """Fails before any run if a run file in ``--output_dir`` has other settings."""
    if not os.path.isdir(FLAGS.output_dir):
        return
    for name in sorted(os.listdir(FLAGS.output_dir)):
        if not name.endswith(".json") or name.startswith(".") or name == "timing.json":
            continue
        path = os.path.join(FLAGS.output_dir, name)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue  # not a run file of ours
        # Run files (and the parameter match): other JSON files are not the study's.
        if (
            isinstance(data, dict)
            and "settings" in data
            and ("run_id" in data or name.startswith("param_match_"))
        ):
            _check_settings(path, data)


def search_seed(seed, seeds):
    return seeds[0] if FLAGS.search_once else seed


def plan_tasks(configs, seeds, variants):
    """All tasks in run order: seed by seed (a partial study covers every
    variant), each config's search before its searched model; latency last."""
    tasks = []
    for seed in seeds:
        here = [v for v in variants if seed in variant_seeds(v, seeds)]
        for config in configs:
            searching = set(SEARCH_VARIANTS) & set(here)
            if searching and search_seed(seed, seeds) == seed:
                tasks.append(Task("search", config, seed=seed))
                if "random_searched" in here:  # its budget is that search's CPU time
                    tasks.append(Task("random_search", config, seed=seed))
            tasks += [Task("train", config, variant, seed) for variant in here]
    tasks += [Task("latency", config) for config in configs]
    return tasks

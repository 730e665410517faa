"""The command line's flags and the ``Options`` every subcommand runs from.

Flags are defined by ``define_flags()`` (called by ``keras_metapool.cli.run``),
not at import, so that importing ``keras_metapool.cli`` to call a subcommand
from Python never collides with a program's own absl flags.

``Options`` is a frozen snapshot of the flags. The subcommand functions take an
``Options``, not ``FLAGS``, so that ``demo`` can call them with its own
settings (``dataclasses.replace``) and Python callers can build one directly.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import textwrap

from absl import flags

from keras_metapool._command_line import PROGRAM
from keras_metapool._layer_facts import BATCH_NORM_MOMENTUM
from keras_metapool._ranges import OPEN_UNIT, Interval
from keras_metapool.data.pipelines import AUGMENTATIONS, DATASET_SOURCES
from keras_metapool.distribute import STRATEGIES
from keras_metapool.export.tflite import TFLITE_MODES
from keras_metapool.layers.candidate_ops import DEFAULT_CANDIDATES
from keras_metapool.models.architecture import NAMED_ARCHITECTURES, PLACEMENTS, SEARCH_PLACEMENT
from keras_metapool.models.mobilenet_v2_mp import HEADS, MIN_INPUT_SIZE, MobileNetV2MP
from keras_metapool.search.arguments import ARGUMENT_RANGES, END_RULES
from keras_metapool.search.decision import DECISION_RULES
from keras_metapool.search.pmpl import PMPLCallback

SUBCOMMANDS = ("search", "train", "qat", "export", "evaluate", "demo")


class UsageError(ValueError):
    """A command-line mistake found while running (e.g. a required flag missing): exit 2."""


#: Weight optimizers of the command line.
OPTIMIZERS = ("adam", "sgd")
#: Peak learning rates when --learning_rate is not given.
DEFAULT_LEARNING_RATES = {"adam": 2e-3, "sgd": 0.05}
QAT_FORMATS = ("h5", "saved_model")
#: ``--formats``: the SavedModel and every TFLite mode.
EXPORT_FORMATS = ("saved_model", *TFLITE_MODES)
_DATASET_PATTERN = re.compile(
    r"^(fashion_mnist|cluttered_fashion_mnist(:\S*)?"
    r"|tfds:[A-Za-z0-9_]+(/[\w.-]+)?(:[\w.*]+)?|folder:.+)$"
)


def _default_of(function, argument):
    """The library's default of ``function``'s ``argument`` (the flag's one home)."""
    return inspect.signature(function).parameters[argument].default


USAGE = """\
keras-metapool: Meta-Pooling MobileNetV2 from search to an Edge TPU-ready int8 TFLite.

usage: keras-metapool SUBCOMMAND [--flag=value ...] [--flagfile=FILE]

subcommands:
  search    PMPL search on a supernet -> architecture.json, search.png, search_summary.txt
  train     train a fixed architecture (--architecture) -> model.keras, checkpoints, logs
  qat       quantization-aware fine-tuning of a trained model (--model) -> qat_model/
  export    TFLite (--formats), SavedModel and the Edge TPU report of a model (--model)
  evaluate  accuracy, confusion matrix (PNG) and metrics (JSON) of a model or .tflite (--model)
  demo      search -> train -> QAT -> Edge TPU int8 TFLite -> report, on Fashion-MNIST
            (about 5 min on 2 CPU cores; --quick: about 2 minutes)
  study     does Meta-Pooling help on your data? MobileNetV2 vs MobileNetV2MP, PMPL and
            the baselines over seeds -> study.md (own flags: keras-metapool study --help)

Every artifact is written under --output_dir (default runs/SUBCOMMAND) by
writing a temporary file and renaming it, so no file is ever half-written.
--batch_size is the global batch (split over the replicas of --strategy).
search, train and qat resume after an interruption from OUTPUT_DIR/backup:
rerun the same command. `keras-metapool SUBCOMMAND --help` lists that
subcommand's flags; --helpfull lists absl's own flags as well.

examples:
  keras-metapool demo
  keras-metapool search --image_size=64 --alpha=0.35 --epochs=6 --output_dir=runs/search
  keras-metapool train --architecture=runs/search/architecture.json --image_size=64 \\
      --alpha=0.35 --epochs=10 --output_dir=runs/train
  keras-metapool qat --model=runs/train/model.keras --output_dir=runs/qat
  keras-metapool export --model=runs/qat/qat_model --formats=int8,edgetpu \\
      --output_dir=runs/export
  keras-metapool evaluate --model=runs/export/model_edgetpu.tflite
  keras-metapool study --dataset=folder:PATH --seeds=0,1,2 --output_dir=runs/study

qat, export and evaluate take the input size from --model (--image_size is ignored there).
"""


_DATA = "Data and model (all subcommands)"
_DEVICES = "Devices"
_TRAINING = "Training (search, train, qat)"


def _option(section, default, help, *, choices=None, bounds=None, check=None, kind=None):
    """One option: the ``Options`` field and everything its flag is built from.

    Args:
        section: The ``--help`` section it is listed in.
        default: Its default (the flag's too).
        help: The flag's help text.
        choices: Its vocabulary (an enum flag, or each item of a list flag).
        bounds: An ``Interval`` the value must lie in.
        check: ``(predicate, message)`` for any other rule.
        kind: The absl flag type when the field's type does not say it.
    """
    metadata = dict(section=section, help=help, choices=choices, bounds=bounds, check=check,
                    kind=kind)  # fmt: skip
    return dataclasses.field(default=default, metadata=metadata)


_POSITIVE = Interval(1, None)
_NON_NEGATIVE = Interval(0.0, None)
_UNIT = Interval(0.0, 1.0)


def _is_auto_or_positive(value):
    if value == "auto":
        return True
    try:
        return float(value) > 0
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True)
class Options:
    """Settings of one subcommand run (one field per flag; see ``--help``).

    Each field is the one home of its flag: default, help, vocabulary and
    bounds (taken from the library's own constants where the library has
    one); ``define_flags`` builds the command line from the fields.

    Build it with ``Options.from_flags()`` after parsing, or directly (every
    field has the flag's default) to call a subcommand from Python::

        from keras_metapool.cli import Options, train
        result = train(Options(image_size=64, alpha=0.35, epochs=3,
                               output_dir="runs/train"))
    """

    # fmt: off
    # -- data and model ------------------------------------------------------------------
    dataset: str = _option(
        _DATA, "fashion_mnist",
        "Image classification data: 'fashion_mnist' (offline, Debian's dataset-fashion-mnist), "
        "'cluttered_fashion_mnist[:KEY=VALUE,...]' (the spatial benchmark made from it: an item "
        "among clutter on a 128x128 canvas; use --image_size=128), "
        "'tfds:NAME[/CONFIG][:VERSION]' (a TensorFlow Datasets dataset already prepared in "
        "--data_dir) or 'folder:PATH' (PATH/train/<class>/*.png|jpg and PATH/test/...).",
        check=(lambda value: bool(_DATASET_PATTERN.match(value or "")),
               "--dataset must be " + ", ".join(f"'{s}'" for s in DATASET_SOURCES[:-1])
               + f" or '{DATASET_SOURCES[-1]}'"))
    data_dir: str | None = _option(
        _DATA, None,
        "tfds data_dir, or the folder holding the Fashion-MNIST IDX files (default: the "
        "searched folders).")
    image_size: int = _option(
        _DATA, 224,
        f"Square model input size in pixels, >= {MIN_INPUT_SIZE} (images are resized). 224 for "
        "ImageNet-like data; 32-96 for Fashion-MNIST on a CPU (demo: 64).",
        check=(lambda value: value >= MIN_INPUT_SIZE,
               f"--image_size must be >= {MIN_INPUT_SIZE} (MobileNetV2 downsamples 32x)"))
    train_limit: int | None = _option(
        _DATA, None, "Use only the first N training images (deterministic; default all).",
        bounds=_POSITIVE)
    test_limit: int | None = _option(
        _DATA, None, "Use only the first N test images (default all).", bounds=_POSITIVE)
    alpha: float = _option(
        _DATA, _default_of(MobileNetV2MP, "alpha"),
        "MobileNetV2 width multiplier (0.35, 0.5, 0.75, 1.0, 1.3, 1.4 are the usual ones).",
        bounds=Interval(0.01, None))
    batch_size: int = _option(
        _DATA, 64,
        "GLOBAL batch size: each of the N replicas of --strategy gets batch_size / N. Scale "
        "--learning_rate with it.", bounds=_POSITIVE)
    seed: int = _option(_DATA, 0, "Seed of weight initialisation, shuffling and augmentation.")
    output_dir: str | None = _option(
        _DATA, None, "Folder of every artifact (created if missing; default runs/SUBCOMMAND).")
    # -- devices ---------------------------------------------------------------------------
    strategy: str = _option(
        _DEVICES, STRATEGIES[0],
        "tf.distribute strategy: 'default' (one device), 'mirrored' (all local GPUs, or the "
        "--cpu_devices logical CPUs), 'multi_worker' (one process per worker, cluster in "
        "TF_CONFIG; run the same command on every worker), 'tpu' (--tpu).", choices=STRATEGIES)
    tpu: str | None = _option(
        _DEVICES, None,
        "TPU name or grpc:// address for --strategy=tpu (default: the local TPU).")
    cpu_devices: int | None = _option(
        _DEVICES, None,
        "Split the CPU into N >= 2 logical devices (testing --strategy=mirrored without GPUs).",
        bounds=Interval(2, None))
    # -- training --------------------------------------------------------------------------
    epochs: int = _option(_TRAINING, 10, "[search, train] Training epochs.", bounds=_POSITIVE)
    steps_per_epoch: int | None = _option(
        _TRAINING, None,
        "[search, train, qat] Steps per epoch (the data repeats); default: one pass over it.",
        bounds=_POSITIVE)
    optimizer: str = _option(
        _TRAINING, OPTIMIZERS[0],
        "[search, train, qat] Weight optimizer: 'adam', or 'sgd' (Nesterov momentum).",
        choices=OPTIMIZERS)
    learning_rate: float | None = _option(
        _TRAINING, None,
        "[search, train] Peak learning rate of the linear warm-up + cosine decay schedule "
        f"(default: adam {DEFAULT_LEARNING_RATES['adam']}, sgd {DEFAULT_LEARNING_RATES['sgd']}, "
        "for batch 64).", bounds=_NON_NEGATIVE)
    warmup_epochs: float = _option(
        _TRAINING, 1.0,
        "[search, train] Epochs of linear warm-up from 0 to --learning_rate (may be "
        "fractional); cosine decay to 0 follows.", bounds=_NON_NEGATIVE)
    momentum: float = _option(
        _TRAINING, 0.9, "Nesterov momentum of --optimizer=sgd.", bounds=_UNIT)
    weight_decay: float = _option(
        _TRAINING, 0.0, "Decoupled weight decay of the optimizer (0: none).",
        bounds=_NON_NEGATIVE)
    label_smoothing: float = _option(
        _TRAINING, 0.1, "[search, train, qat] Label smoothing of the cross-entropy.",
        bounds=Interval(0.0, 0.99))
    augment: str = _option(
        _TRAINING, AUGMENTATIONS[0],
        "[search, train, qat] Training augmentation: 'basic' (random resized crop + "
        "horizontal flip), 'randaugment', 'none'.", choices=AUGMENTATIONS)
    batch_norm_momentum: float = _option(
        _TRAINING, BATCH_NORM_MOMENTUM,
        "BatchNormalization momentum of new models (default: the paper's, in Keras terms); "
        "keras.applications' 0.999 leaves short runs with unsettled statistics.", bounds=_UNIT)
    validation_fraction: float = _option(
        _TRAINING, 0.1,
        "[train] Share of the training images held out (deterministically) to pick the best "
        "checkpoint; 0: no validation, the checkpoint is the last epoch. The test split is "
        "only reported, never used to choose.", bounds=Interval(0.0, 0.5))
    run_eagerly: bool = _option(
        _TRAINING, False,
        "[search, train, qat] Run training steps eagerly, without tracing them into a graph: "
        "faster for runs of a few steps (tracing the search step takes tens of seconds), "
        "slower for anything longer. Not with --strategy=multi_worker or tpu.")
    # -- search ----------------------------------------------------------------------------
    decision: str = _option(
        "search", _default_of(PMPLCallback, "decision"),
        "[search] How a point is decided: 'evidence' (its best op's loss slope beats "
        "identity's, or identity beats every op, by a bar that keeps the chance of any "
        "decision in a search with no signal at --error_rate) or "
        "'margin' (the paper's: the top-1 minus top-2 probability of the search logits' "
        "softmax reaches --threshold).",
        choices=DECISION_RULES)
    error_rate: float = _option(
        "search", _default_of(PMPLCallback, "error_rate"),
        "[search] The evidence rule's family-wise error: the chance that a search with no "
        "signal decides any point (lower: fewer false decisions, more steps per real one).",
        bounds=ARGUMENT_RANGES["error_rate"])
    undecided: str = _option(
        "search", _default_of(PMPLCallback, "undecided"),
        "[search] What points still undecided at the late stage become: 'identity' (no "
        "enhancer: costs nothing), 'top2' (the paper's: their two most probable ops, summed) "
        "or 'argmax'.", choices=END_RULES)
    warmup: float = _option(
        "search", _default_of(PMPLCallback, "warmup"),
        "[search] Share of the search's steps that train only the weights before the first "
        "architecture step.", bounds=ARGUMENT_RANGES["warmup"])
    arch_learning_rate: float | str = _option(
        "search", _default_of(PMPLCallback, "learning_rate"),
        "[search] Adam learning rate of the search logits, or 'auto': sized so that "
        "the architecture steps the run takes can reach the --threshold margin (the paper's 3e-4 "
        "needs far more steps than a CPU run affords).",
        check=(_is_auto_or_positive, "--arch_learning_rate must be 'auto' or a positive number"),
        kind="str")
    threshold: float = _option(
        "search", _default_of(PMPLCallback, "threshold"),
        "[search] The margin rule's tau: a point is fixed to its best op once its top-1 "
        "minus top-2 probability reaches it.", bounds=ARGUMENT_RANGES["threshold"])
    late_stage: float = _option(
        "search", 1.0,
        "[search] Fraction of the epochs after which undecided points get the --undecided "
        "rule. 1 (at the end): the whole budget searches, since `train` retrains the "
        "architecture from scratch (PMPLCallback's own default, the paper's 2/3, trains the "
        "result in the last third instead).", bounds=ARGUMENT_RANGES["late_stage"])
    one_level: bool = _option(
        "search", False,
        "[search] Learn the search logits on the training batches, from the weight step's "
        "own backward pass (a step costs about a plain step; no images held out), instead of on a "
        "held-out share (--search_fraction; a second pass per step).")
    search_fraction: float = _option(
        "search", 0.5,
        "[search] Share of the training images held out for the architecture steps.",
        bounds=OPEN_UNIT)
    placement: str = _option(
        "search", SEARCH_PLACEMENT,
        "[search] Where the searched enhancers go: on each block's expanded channels, after "
        "the depthwise ReLU6 ('hidden', where the authors searched) or after its projection "
        "('output').", choices=PLACEMENTS)
    candidates: tuple | None = _option(
        "search", None,
        f"[search] Candidate ops (default all {len(DEFAULT_CANDIDATES)}: "
        f"{','.join(DEFAULT_CANDIDATES)}).", kind="list")
    # -- train -----------------------------------------------------------------------------
    architecture: str = _option(
        "train", "paper",
        "[train] Meta-Pooling architecture: an architecture.json written by `search` (or "
        "ArchitectureSpec.save), or one of " + ", ".join(NAMED_ARCHITECTURES) + " ('none': "
        "plain MobileNetV2).")
    head: str = _option(
        "train", _default_of(MobileNetV2MP, "head"),
        "[train, search] Classifier head: 'classic' (keras.applications) or 'paper' (+1x1 conv "
        "1280, hard swish, dropout; +1.64M parameters).", choices=HEADS)
    # -- qat, export, evaluate ---------------------------------------------------------------
    model: str | None = _option(
        "qat", None,
        "[qat, export, evaluate] The model to read: a float .keras/.h5/SavedModel (from "
        "`train`), a QAT .h5/SavedModel (from `qat`), or for `evaluate` also a .tflite.")
    qat_epochs: int = _option(
        "qat", 1, "[qat] Quantization-aware fine-tuning epochs.", bounds=_POSITIVE)
    qat_learning_rate: float = _option(
        "qat", 1e-4,
        "[qat] Learning rate of the fine-tuning (cosine decay, no warm-up): low, the model is "
        "trained already.", bounds=_NON_NEGATIVE)
    calibration_samples: int = _option(
        "qat", 256,
        "[qat, export] Training images used to calibrate activation ranges (QAT) and as the "
        "TFLite converter's representative data (at most 128 are used there).",
        bounds=_POSITIVE)
    qat_format: str = _option(
        "qat", "saved_model",
        "[qat] File format of the QAT model: 'saved_model' (qat_model/, the default: it "
        "reloads, and TensorFlow does not call it legacy) or 'h5' (qat_model.h5, which "
        "tf_keras warns is legacy). Both reload inside keras_metapool.quantize_scope(); "
        ".keras does not reload TF-MOT models.", choices=QAT_FORMATS)
    formats: tuple = _option(
        "export", ("saved_model", "float", "int8", "edgetpu"),
        "[export] Comma-separated outputs among " + ", ".join(EXPORT_FORMATS) + " "
        "(model_MODE.tflite; saved_model/). 'edgetpu' is int8 with uint8 input/output and "
        "batch 1, checked against the Edge TPU's rules. A quantization-aware model (from qat) "
        "skips float and dynamic: its files are int8 inside whatever the mode.",
        choices=EXPORT_FORMATS)
    include_preprocessing: bool = _option(
        "export", False,
        "[export] The SavedModel takes raw [0, 255] images of any size (resized and scaled in "
        "the graph).")
    split: str = _option(
        "evaluate", "test",
        "[evaluate] Split to evaluate on ('test'; a tfds split string; for folder: a "
        "subfolder).")
    num_threads: int = _option(
        "evaluate", 1, "[evaluate, demo] TFLite interpreter threads (latency is per invoke).",
        bounds=_POSITIVE)
    quick: bool = _option(
        "demo", False,
        "[demo] A reduced demo (32x32 inputs, 2,048 training images, a 1-epoch search, 2 "
        "training epochs) that checks the whole pipeline in about 2 minutes; its accuracies "
        "mean little.")
    show_traceback: bool = _option(
        "Errors", False, "Print the full traceback of an error (default: one line).")
    # fmt: on

    @classmethod
    def from_flags(cls, flag_values=flags.FLAGS, defaults=None):
        """The parsed flags; ``defaults`` replace the defaults of flags not given.

        Args:
            flag_values: Parsed absl ``FlagValues``.
            defaults: ``{field: value}`` used for each flag the user did not
                set (``demo`` uses this for its own defaults).
        """
        defaults = defaults or {}
        values = {}
        for field in dataclasses.fields(cls):
            flag = flag_values[field.name]
            value = flag.value
            if not flag.present and field.name in defaults:
                value = defaults[field.name]
            if isinstance(value, list):
                value = tuple(value)
            values[field.name] = value
        return cls(**values)

    @property
    def peak_learning_rate(self):
        """``learning_rate``, or the optimizer's default."""
        if self.learning_rate is not None:
            return self.learning_rate
        return DEFAULT_LEARNING_RATES[self.optimizer]

    def output_path(self, *parts):
        """A path under ``output_dir``."""
        return os.path.join(self.output_dir, *parts)


def _flag_kind(field):
    """The absl flag type of an ``Options`` field: bool, int, float, str, enum or list."""
    if field.metadata["kind"]:
        return field.metadata["kind"]
    base = field.type.split("|")[0].strip()
    if base == "tuple":
        return "list"
    if base == "str" and field.metadata["choices"]:
        return "enum"
    return base


_DEFINE = {
    "bool": flags.DEFINE_bool,
    "int": flags.DEFINE_integer,
    "float": flags.DEFINE_float,
    "str": flags.DEFINE_string,
    "list": flags.DEFINE_list,
}


def _define(flag_values):
    """Defines one flag per ``Options`` field in ``flag_values``, with its validators."""
    for field in dataclasses.fields(Options):
        name, meta, kind = field.name, field.metadata, _flag_kind(field)
        default = list(field.default) if isinstance(field.default, tuple) else field.default
        if kind == "enum":
            flags.DEFINE_enum(name, default, meta["choices"], meta["help"], flag_values=flag_values)
        else:
            _DEFINE[kind](name, default, meta["help"], flag_values=flag_values)
        for rule, message in _validators(name, kind, meta):
            flags.register_validator(name, rule, message=message, flag_values=flag_values)


def _validators(name, kind, meta):
    """``(rule, message)`` pairs of one flag, from its bounds, vocabulary and check."""
    rules = []
    bounds = meta["bounds"]
    if bounds is not None:
        rules.append((lambda value: value is None or value in bounds, f"--{name} must be {bounds}"))
    if kind == "list" and meta["choices"]:
        choices = meta["choices"]
        rules.append((
            lambda value: bool(value) and all(item in choices for item in value),
            f"--{name} must be a comma-separated list of " + ", ".join(choices),
        ))  # fmt: skip
    if meta["check"] is not None:
        rules.append(meta["check"])
    return rules


def define_flags(flag_values=flags.FLAGS):
    """Defines the command line's flags in ``flag_values`` (idempotent)."""
    if "dataset" in flag_values and "quick" in flag_values:
        return
    _define(flag_values)


def _help_sections():
    sections = {}
    for field in dataclasses.fields(Options):
        sections.setdefault(field.metadata["section"], []).append(field.name)
    return tuple((title, tuple(names)) for title, names in sections.items())


#: ``--help``'s sections: (title, flag names), in the fields' order.
HELP_SECTIONS = _help_sections()


#: The ``--help`` sections each subcommand reads (``demo`` passes its flags to every stage).
SUBCOMMAND_SECTIONS = {
    "search": (_DATA, _DEVICES, _TRAINING, "search", "Errors"),
    "train": (_DATA, _DEVICES, _TRAINING, "train", "Errors"),
    "qat": (_DATA, _DEVICES, _TRAINING, "qat", "Errors"),
    "export": (_DATA, "export", "Errors"),
    "evaluate": (_DATA, "evaluate", "Errors"),
    "demo": tuple(title for title, _ in HELP_SECTIONS),
}


def _reads(subcommand, section, help_text):
    """Whether ``subcommand`` reads a flag: its help's ``[a, b]`` tag, else its section."""
    tag = re.match(r"\[([a-z, ]+)\]", help_text)
    if subcommand == "demo":
        return True
    if tag:
        return subcommand in [name.strip() for name in tag.group(1).split(",")]
    return section in SUBCOMMAND_SECTIONS[subcommand]


def format_help(flag_values=flags.FLAGS, width=100, subcommand=None):
    """``--help``: the usage text and every flag, grouped by subcommand; with
    ``subcommand``, its usage line and the flags it reads."""
    if subcommand is None:
        lines, sections = [USAGE], HELP_SECTIONS
    else:
        summary = next(
            line.strip()[len(subcommand) :].strip()
            for line in USAGE.splitlines()
            if line.startswith(f"  {subcommand} ")
        )
        lines = [
            f"usage: {PROGRAM} {subcommand} [--flag=value ...] [--flagfile=FILE]\n\n"
            f"{subcommand}: {summary}\n"
        ]
        sections = [
            (title, tuple(n for n in names if _reads(subcommand, title, flag_values[n].help)))
            for title, names in HELP_SECTIONS
        ]
    for title, names in sections:
        if not names:
            continue
        lines.append(f"{title}:")
        for name in names:
            flag = flag_values[name]
            prefix = "--[no]" if flag.flag_type() == "bool" else "--"
            lines.append(f"  {prefix}{name}:")
            default = flag.default_as_str or "None"
            body = f"{flag.help} (default: {default})"
            lines.extend(textwrap.wrap(body, width, initial_indent="      ",
                                       subsequent_indent="      "))  # fmt: skip
        lines.append("")
    return "\n".join(lines)


__all__ = [
    "EXPORT_FORMATS",
    "NAMED_ARCHITECTURES",
    "Options",
    "SUBCOMMANDS",
    "USAGE",
    "define_flags",
    "format_help",
]

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
import os
import re
import textwrap

from absl import flags

from keras_metapool.layers.common import BATCH_NORM_MOMENTUM

SUBCOMMANDS = ("search", "train", "qat", "export", "evaluate", "demo")


class UsageError(ValueError):
    """A command-line mistake found while running (e.g. a required flag missing): exit 2."""


STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
OPTIMIZERS = ("adam", "sgd")
AUGMENTATIONS = ("basic", "randaugment", "none")
HEADS = ("classic", "paper")
PLACEMENTS = ("output", "hidden")
DECISIONS = ("evidence", "margin")
UNDECIDED = ("identity", "top2", "argmax")
QAT_FORMATS = ("h5", "saved_model")
EXPORT_FORMATS = ("saved_model", "float", "dynamic", "int8", "uint8", "edgetpu")
#: Named architectures of ``--architecture`` (besides a JSON file).
NAMED_ARCHITECTURES = ("paper", "none", "global", "local", "random", "exclude_local")
MIN_IMAGE_SIZE = 32
#: Peak learning rates when --learning_rate is not given.
DEFAULT_LEARNING_RATES = {"adam": 2e-3, "sgd": 0.05}
_DATASET_PATTERN = re.compile(
    r"^(fashion_mnist|tfds:[A-Za-z0-9_]+(/[\w.-]+)?(:[\w.*]+)?|folder:.+)$"
)

# Help, grouped: (section title, flag names). `--help` prints these sections;
# `--helpfull` prints absl's own listing of every flag, absl's included.
HELP_SECTIONS = (
    (
        "Data and model (all subcommands)",
        ("dataset", "data_dir", "image_size", "train_limit", "test_limit", "alpha",
         "batch_size", "seed", "output_dir"),
    ),
    ("Devices", ("strategy", "tpu", "cpu_devices")),
    (
        "Training (search, train, qat)",
        ("epochs", "steps_per_epoch", "optimizer", "learning_rate", "warmup_epochs",
         "momentum", "weight_decay", "label_smoothing", "augment", "batch_norm_momentum",
         "validation_fraction", "run_eagerly"),
    ),
    (
        "search",
        ("decision", "evidence_z", "undecided", "warmup", "arch_learning_rate", "threshold",
         "late_stage", "one_level", "search_fraction", "placement", "candidates"),
    ),
    ("train", ("architecture", "head")),
    ("qat", ("model", "qat_epochs", "qat_learning_rate", "calibration_samples", "qat_format")),
    ("export", ("formats", "include_preprocessing")),
    ("evaluate", ("split", "num_threads")),
    ("demo", ("quick",)),
    ("Errors", ("show_traceback",)),
)  # fmt: skip

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

Every artifact is written under --output_dir (default runs/SUBCOMMAND) by
writing a temporary file and renaming it, so no file is ever half-written.
--batch_size is the global batch (split over the replicas of --strategy).
`train` resumes after an interruption from OUTPUT_DIR/backup: rerun the same
command. --helpfull lists absl's own flags as well.

examples:
  keras-metapool demo
  keras-metapool search --image_size=64 --alpha=0.35 --epochs=6 --output_dir=runs/search
  keras-metapool train --architecture=runs/search/architecture.json --image_size=64 \\
      --alpha=0.35 --epochs=10 --output_dir=runs/train
  keras-metapool qat --model=runs/train/model.keras --output_dir=runs/qat
  keras-metapool export --model=runs/qat/qat_model --formats=int8,edgetpu \\
      --output_dir=runs/export
  keras-metapool evaluate --model=runs/export/model_edgetpu.tflite

qat, export and evaluate take the input size from --model (--image_size is ignored there).
"""


def _define(flag_values):
    """Defines every flag of the command line in ``flag_values``."""
    f = flag_values
    # fmt: off
    # -- data and model --------------------------------------------------------------
    flags.DEFINE_string(
        "dataset", "fashion_mnist",
        "Image classification data: 'fashion_mnist' (offline, Debian's dataset-fashion-mnist), "
        "'tfds:NAME[/CONFIG][:VERSION]' (a TensorFlow Datasets dataset already prepared in "
        "--data_dir) or 'folder:PATH' (PATH/train/<class>/*.png|jpg and PATH/test/...).",
        flag_values=f)
    flags.DEFINE_string(
        "data_dir", None,
        "tfds data_dir, or the folder holding the Fashion-MNIST IDX files (default: the "
        "searched folders).", flag_values=f)
    flags.DEFINE_integer(
        "image_size", 224,
        f"Square model input size in pixels, >= {MIN_IMAGE_SIZE} (images are resized). 224 for "
        "ImageNet-like data; 32-96 for Fashion-MNIST on a CPU (demo: 64).", flag_values=f)
    flags.DEFINE_integer(
        "train_limit", None,
        "Use only the first N training images (deterministic; default all).", lower_bound=1,
        flag_values=f)
    flags.DEFINE_integer(
        "test_limit", None, "Use only the first N test images (default all).", lower_bound=1,
        flag_values=f)
    flags.DEFINE_float(
        "alpha", 1.0,
        "MobileNetV2 width multiplier (0.35, 0.5, 0.75, 1.0, 1.3, 1.4 are the usual ones).",
        lower_bound=0.01, flag_values=f)
    flags.DEFINE_integer(
        "batch_size", 64,
        "GLOBAL batch size: each of the N replicas of --strategy gets batch_size / N. Scale "
        "--learning_rate with it.", lower_bound=1, flag_values=f)
    flags.DEFINE_integer(
        "seed", 0, "Seed of weight initialisation, shuffling and augmentation.", flag_values=f)
    flags.DEFINE_string(
        "output_dir", None,
        "Folder of every artifact (created if missing; default runs/SUBCOMMAND).", flag_values=f)
    # -- devices ---------------------------------------------------------------------
    flags.DEFINE_enum(
        "strategy", "default", STRATEGIES,
        "tf.distribute strategy: 'default' (one device), 'mirrored' (all local GPUs, or the "
        "--cpu_devices logical CPUs), 'multi_worker' (one process per worker, cluster in "
        "TF_CONFIG; run the same command on every worker), 'tpu' (--tpu).", flag_values=f)
    flags.DEFINE_string(
        "tpu", None, "TPU name or grpc:// address for --strategy=tpu (default: the local TPU).",
        flag_values=f)
    flags.DEFINE_integer(
        "cpu_devices", None,
        "Split the CPU into N >= 2 logical devices (testing --strategy=mirrored without GPUs).",
        lower_bound=2, flag_values=f)
    # -- training --------------------------------------------------------------------
    flags.DEFINE_integer(
        "epochs", 10, "[search, train] Training epochs.", lower_bound=1, flag_values=f)
    flags.DEFINE_integer(
        "steps_per_epoch", None,
        "[search, train, qat] Steps per epoch (the data repeats); default: one pass over it.",
        lower_bound=1, flag_values=f)
    flags.DEFINE_enum(
        "optimizer", "adam", OPTIMIZERS,
        "[search, train, qat] Weight optimizer: 'adam', or 'sgd' (Nesterov momentum).",
        flag_values=f)
    flags.DEFINE_float(
        "learning_rate", None,
        "[search, train] Peak learning rate of the linear warm-up + cosine decay schedule "
        f"(default: adam {DEFAULT_LEARNING_RATES['adam']}, sgd {DEFAULT_LEARNING_RATES['sgd']}, "
        "for batch 64).", lower_bound=0.0, flag_values=f)
    flags.DEFINE_float(
        "warmup_epochs", 1.0,
        "[search, train] Epochs of linear warm-up from 0 to --learning_rate (may be "
        "fractional); cosine decay to 0 follows.", lower_bound=0.0, flag_values=f)
    flags.DEFINE_float(
        "momentum", 0.9, "[sgd] Nesterov momentum.", lower_bound=0.0, upper_bound=1.0,
        flag_values=f)
    flags.DEFINE_float(
        "weight_decay", 0.0, "Decoupled weight decay of the optimizer (0: none).",
        lower_bound=0.0, flag_values=f)
    flags.DEFINE_float(
        "label_smoothing", 0.1, "[search, train, qat] Label smoothing of the cross-entropy.",
        lower_bound=0.0, upper_bound=0.99, flag_values=f)
    flags.DEFINE_enum(
        "augment", "basic", AUGMENTATIONS,
        "[search, train, qat] Training augmentation: 'basic' (random resized crop + "
        "horizontal flip), 'randaugment', 'none'.", flag_values=f)
    flags.DEFINE_float(
        "batch_norm_momentum", BATCH_NORM_MOMENTUM,
        "BatchNormalization momentum of new models (default: the paper's, in Keras terms); "
        "keras.applications' 0.999 leaves short runs with unsettled statistics.",
        lower_bound=0.0, upper_bound=1.0, flag_values=f)
    flags.DEFINE_float(
        "validation_fraction", 0.1,
        "[train] Share of the training images held out (deterministically) to pick the best "
        "checkpoint; 0: no validation, the checkpoint is the last epoch. The test split is "
        "only reported, never used to choose.", lower_bound=0.0, upper_bound=0.5,
        flag_values=f)
    flags.DEFINE_bool(
        "run_eagerly", False,
        "[search, train, qat] Run training steps eagerly, without tracing them into a graph: "
        "faster for runs of a few steps (tracing the search step takes tens of seconds), "
        "slower for anything longer. Not with --strategy=multi_worker or tpu.", flag_values=f)
    # -- search ----------------------------------------------------------------------
    flags.DEFINE_enum(
        "decision", "evidence", DECISIONS,
        "[search] How a point is decided: 'evidence' (its best op's loss slope beats "
        "identity's, or identity beats every op, by --evidence_z standard errors) or "
        "'margin' (the paper's: softmax(alpha)'s top-1 minus top-2 reaches --threshold).",
        flag_values=f)
    flags.DEFINE_float(
        "evidence_z", 4.0, "[search] The evidence rule's bar, in standard errors.",
        lower_bound=0.0, flag_values=f)
    flags.DEFINE_enum(
        "undecided", "identity", UNDECIDED,
        "[search] What points still undecided at the late stage become: 'identity' (no "
        "enhancer: costs nothing), 'top2' (the paper's: their two most probable ops, summed) "
        "or 'argmax'.", flag_values=f)
    flags.DEFINE_float(
        "warmup", 0.25,
        "[search] Share of the search's steps that train only the weights before the first "
        "architecture step.", lower_bound=0.0, upper_bound=0.99, flag_values=f)
    flags.DEFINE_string(
        "arch_learning_rate", "auto",
        "[search] Adam learning rate of the architecture logits, or 'auto': sized so that "
        "the alpha steps the run takes can reach the --threshold margin (the paper's 3e-4 "
        "needs far more steps than a CPU run affords).", flag_values=f)
    flags.DEFINE_float(
        "threshold", 0.2,
        "[search] The margin rule's tau: a point is fixed to its best op once its top-1 "
        "minus top-2 probability reaches it.", lower_bound=0.0, upper_bound=1.0,
        flag_values=f)
    flags.DEFINE_float(
        "late_stage", 1.0,
        "[search] Fraction of the epochs after which undecided points get the --undecided "
        "rule. 1 (at the end): the whole budget searches, since `train` retrains the "
        "architecture from scratch (PMPLCallback's own default, the paper's 2/3, trains the "
        "result in the last third instead).", lower_bound=0.0, upper_bound=1.0,
        flag_values=f)
    flags.DEFINE_bool(
        "one_level", False,
        "[search] Learn alpha on the training batches, from the weight step's own backward "
        "pass (a step costs about a plain step; no images held out), instead of on a "
        "held-out share (--search_fraction; a second pass per step).", flag_values=f)
    flags.DEFINE_float(
        "search_fraction", 0.5,
        "[search] Share of the training images held out for the architecture steps.",
        lower_bound=0.0, upper_bound=1.0, flag_values=f)
    flags.DEFINE_enum(
        "placement", "hidden", PLACEMENTS,
        "[search] Where the searched enhancers go: on each block's expanded channels, after "
        "the depthwise ReLU6 ('hidden', where the authors searched) or after its projection "
        "('output').", flag_values=f)
    flags.DEFINE_list(
        "candidates", None,
        "[search] Candidate ops (default all 8: identity,ssp,max3,max5,max7,avg3,avg5,avg7).",
        flag_values=f)
    # -- train -----------------------------------------------------------------------
    flags.DEFINE_string(
        "architecture", "paper",
        "[train] Meta-Pooling architecture: an architecture.json written by `search` (or "
        "ArchitectureSpec.save), or one of " + ", ".join(NAMED_ARCHITECTURES) + " ('none': "
        "plain MobileNetV2).", flag_values=f)
    flags.DEFINE_enum(
        "head", "classic", HEADS,
        "[train, search] Classifier head: 'classic' (keras.applications) or 'paper' (+1x1 conv "
        "1280, hard swish, dropout; +1.64M parameters).", flag_values=f)
    # -- qat, export, evaluate -------------------------------------------------------
    flags.DEFINE_string(
        "model", None,
        "[qat, export, evaluate] The model to read: a float .keras/.h5/SavedModel (from "
        "`train`), a QAT .h5/SavedModel (from `qat`), or for `evaluate` also a .tflite.",
        flag_values=f)
    flags.DEFINE_integer(
        "qat_epochs", 1, "[qat] Quantization-aware fine-tuning epochs.", lower_bound=1,
        flag_values=f)
    flags.DEFINE_float(
        "qat_learning_rate", 1e-4,
        "[qat] Learning rate of the fine-tuning (cosine decay, no warm-up): low, the model is "
        "trained already.", lower_bound=0.0, flag_values=f)
    flags.DEFINE_integer(
        "calibration_samples", 256,
        "[qat, export] Training images used to calibrate activation ranges (QAT) and as the "
        "TFLite converter's representative data (at most 128 are used there).", lower_bound=1,
        flag_values=f)
    flags.DEFINE_enum(
        "qat_format", "saved_model", QAT_FORMATS,
        "[qat] File format of the QAT model: 'saved_model' (qat_model/, the default: it "
        "reloads, and TensorFlow does not call it legacy) or 'h5' (qat_model.h5, which "
        "tf_keras warns is legacy). Both reload inside keras_metapool.quantize_scope(); "
        ".keras does not reload TF-MOT models.", flag_values=f)
    flags.DEFINE_list(
        "formats", ["saved_model", "float", "int8", "edgetpu"],
        "[export] Comma-separated outputs among " + ", ".join(EXPORT_FORMATS) + " "
        "(model_MODE.tflite; saved_model/). 'edgetpu' is int8 with uint8 input/output and "
        "batch 1, checked against the Edge TPU's rules.", flag_values=f)
    flags.DEFINE_bool(
        "include_preprocessing", False,
        "[export] The SavedModel takes raw [0, 255] images of any size (resized and scaled in "
        "the graph).", flag_values=f)
    flags.DEFINE_string(
        "split", "test", "[evaluate] Split to evaluate on ('test'; a tfds split string; for "
        "folder: a subfolder).", flag_values=f)
    flags.DEFINE_integer(
        "num_threads", 1, "[evaluate, demo] TFLite interpreter threads (latency is per invoke).",
        lower_bound=1, flag_values=f)
    flags.DEFINE_bool(
        "quick", False,
        "[demo] A reduced demo (32x32 inputs, 2,048 training images, a 1-epoch search, 2 "
        "training epochs) that checks the whole pipeline in about 2 minutes; its accuracies "
        "mean little.",
        flag_values=f)
    flags.DEFINE_bool(
        "show_traceback", False, "Print the full traceback of an error (default: one line).",
        flag_values=f)
    # fmt: on

    flags.register_validator(
        "dataset",
        lambda value: bool(_DATASET_PATTERN.match(value or "")),
        message="--dataset must be 'fashion_mnist', 'tfds:NAME[/CONFIG][:VERSION]' or "
        "'folder:PATH'",
        flag_values=f,
    )
    flags.register_validator(
        "image_size",
        lambda value: value >= MIN_IMAGE_SIZE,
        message=f"--image_size must be >= {MIN_IMAGE_SIZE} (MobileNetV2 downsamples 32x)",
        flag_values=f,
    )
    flags.register_validator(
        "formats",
        lambda value: bool(value) and all(v in EXPORT_FORMATS for v in value),
        message="--formats must be a comma-separated list of " + ", ".join(EXPORT_FORMATS),
        flag_values=f,
    )
    flags.register_validator(
        "search_fraction",
        lambda value: 0.0 < value < 1.0,
        message="--search_fraction must be in (0, 1)",
        flag_values=f,
    )
    flags.register_validator(
        "arch_learning_rate",
        _is_auto_or_positive,
        message="--arch_learning_rate must be 'auto' or a positive number",
        flag_values=f,
    )
    flags.register_validator(
        "late_stage",
        lambda value: 0.0 < value <= 1.0,
        message="--late_stage must be in (0, 1]",
        flag_values=f,
    )


def _is_auto_or_positive(value):
    if value == "auto":
        return True
    try:
        return float(value) > 0
    except ValueError:
        return False


def define_flags(flag_values=flags.FLAGS):
    """Defines the command line's flags in ``flag_values`` (idempotent)."""
    if "dataset" in flag_values and "quick" in flag_values:
        return
    _define(flag_values)


def format_help(flag_values=flags.FLAGS, width=100):
    """``--help``: the usage text and every flag, grouped by subcommand."""
    lines = [USAGE]
    for title, names in HELP_SECTIONS:
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


@dataclasses.dataclass(frozen=True)
class Options:
    """Settings of one subcommand run (one field per flag; see ``--help``).

    Build it with ``Options.from_flags()`` after parsing, or directly (every
    field has the flag's default) to call a subcommand from Python::

        from keras_metapool.cli import Options, train
        result = train(Options(image_size=64, alpha=0.35, epochs=3,
                               output_dir="runs/train"))
    """

    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    image_size: int = 224
    train_limit: int | None = None
    test_limit: int | None = None
    alpha: float = 1.0
    batch_size: int = 64
    seed: int = 0
    output_dir: str | None = None
    strategy: str = "default"
    tpu: str | None = None
    cpu_devices: int | None = None
    epochs: int = 10
    steps_per_epoch: int | None = None
    optimizer: str = "adam"
    learning_rate: float | None = None
    warmup_epochs: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    augment: str = "basic"
    batch_norm_momentum: float = BATCH_NORM_MOMENTUM
    validation_fraction: float = 0.1
    run_eagerly: bool = False
    decision: str = "evidence"
    evidence_z: float = 4.0
    undecided: str = "identity"
    warmup: float = 0.25
    arch_learning_rate: float | str = "auto"
    threshold: float = 0.2
    late_stage: float = 1.0
    one_level: bool = False
    search_fraction: float = 0.5
    placement: str = "hidden"
    candidates: tuple | None = None
    architecture: str = "paper"
    head: str = "classic"
    model: str | None = None
    qat_epochs: int = 1
    qat_learning_rate: float = 1e-4
    calibration_samples: int = 256
    qat_format: str = "saved_model"
    formats: tuple = ("saved_model", "float", "int8", "edgetpu")
    include_preprocessing: bool = False
    split: str = "test"
    num_threads: int = 1
    quick: bool = False
    show_traceback: bool = False

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


__all__ = [
    "EXPORT_FORMATS",
    "NAMED_ARCHITECTURES",
    "Options",
    "SUBCOMMANDS",
    "USAGE",
    "define_flags",
    "format_help",
]

"""The ``keras-metapool`` command line: search, train, qat, export, evaluate, demo, study.

    keras-metapool SUBCOMMAND [--flag=value ...] [--flagfile=FILE]
    python -m keras_metapool.cli SUBCOMMAND ...

``keras-metapool --help`` documents every flag, ``keras-metapool SUBCOMMAND
--help`` those the subcommand reads. Each subcommand is also a
Python function taking an ``Options`` and a ``tf.distribute.Strategy``::

    from keras_metapool.cli import Options, make_strategy, train
    options = Options(image_size=64, alpha=0.35, epochs=3, output_dir="runs/train")
    result = train(options, make_strategy(options))
    print(result.test_accuracy, result.model_path)

``keras-metapool study`` is ``keras_metapool.study``, with flags of its own.

Errors in what the user asked for (a bad flag, a missing file, an unknown
dataset, ...) end the program with one line on stderr and a non-zero status:
2 for command-line mistakes, 1 for the rest; ``--show_traceback`` shows the
traceback instead.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from keras_metapool._command_line import PROGRAM, STUDY, STUDY_PROGRAM, one_line, write_error
from keras_metapool.cli import files
from keras_metapool.cli.demo_cmd import demo, demo_defaults
from keras_metapool.cli.evaluate_cmd import EvaluationResult, evaluate
from keras_metapool.cli.export_cmd import ExportResult, export
from keras_metapool.cli.options import (
    SUBCOMMANDS,
    Options,
    UsageError,
    define_flags,
    format_help,
)
from keras_metapool.cli.qat_cmd import QATResult, qat
from keras_metapool.cli.search_cmd import SearchResult, search
from keras_metapool.cli.train_cmd import TrainResult, train
from keras_metapool.cli.training import interruption_advice
from keras_metapool.distribute import make_strategy as _make_strategy
from keras_metapool.study import run as run_study

#: The function of each subcommand: ``function(options, strategy)``.
COMMANDS = dict(search=search, train=train, qat=qat, export=export, evaluate=evaluate, demo=demo)

#: Exit status of a command-line mistake (as argparse).
USAGE_ERROR = 2
#: Exit status of a failure while running.
RUN_ERROR = 1
_HELP_ARGS = ("-h", "--help", "-?", "--helpshort")


def _fail(message, status, subcommand=None):
    write_error(f"{PROGRAM} {subcommand}" if subcommand else PROGRAM, message)
    sys.exit(status)


def _parse_flags(argv):
    """absl's flag parsing, with our help text and one-line errors."""
    arguments = argv[1:]
    if "--" in arguments:
        arguments = arguments[: arguments.index("--")]
    if any(argument in _HELP_ARGS for argument in arguments):
        named = [a for a in arguments if a in SUBCOMMANDS]
        sys.stdout.write(format_help(subcommand=named[0] if named else None) + "\n")
        sys.exit(0)
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        named = [a for a in arguments if a in SUBCOMMANDS]
        _fail(
            f"{one_line(error)} (see {PROGRAM} --help)",
            USAGE_ERROR,
            named[0] if named else None,
        )


def make_strategy(options):
    """The ``tf.distribute.Strategy`` of ``options.strategy`` (``--tpu``, ``--cpu_devices``)."""
    return _make_strategy(options.strategy, tpu=options.tpu, cpu_devices=options.cpu_devices)


def main(argv):
    """Runs the subcommand in ``argv[1]`` with the parsed flags; returns the exit status."""
    arguments = argv[1:]
    expected = f"expected one of: {', '.join((*SUBCOMMANDS, STUDY))} (see {PROGRAM} --help)"
    if not arguments:
        _fail(f"missing subcommand; {expected}", USAGE_ERROR)
    subcommand = arguments[0]
    if subcommand == STUDY:  # its own flags, parsed by the study itself
        return run_study([STUDY_PROGRAM, *arguments[1:]])
    if subcommand not in SUBCOMMANDS:
        _fail(f"unknown subcommand {subcommand!r}; {expected}", USAGE_ERROR)
    if len(arguments) > 1:
        _fail(
            f"unexpected arguments {arguments[1:]}: flags are --name=value", USAGE_ERROR, subcommand
        )
    if not flags.FLAGS["verbosity"].present:
        # TensorFlow's INFO lines (e.g. one per checkpoint) would drown the progress.
        logging.set_verbosity(logging.WARNING)
    defaults = {"output_dir": os.path.join("runs", subcommand)}
    if subcommand == "demo":
        defaults.update(demo_defaults(flags.FLAGS.quick))
    options = Options.from_flags(flags.FLAGS, defaults=defaults)
    output_existed = os.path.exists(options.output_dir)
    try:
        files.prepare_output_dir(options.output_dir)
        strategy = make_strategy(options)
        COMMANDS[subcommand](options, strategy)
    except KeyboardInterrupt:
        resumable = subcommand in ("search", "train", "qat")
        advice = interruption_advice(options.output_path("backup")) if resumable else ""
        _fail(f"interrupted. {advice}".rstrip(), 130, subcommand)
    except (ValueError, OSError, ImportError, RuntimeError) as error:
        if not output_existed:
            _remove_empty_folders(options.output_dir)
        if options.show_traceback:
            raise
        status = USAGE_ERROR if isinstance(error, UsageError) else RUN_ERROR
        _fail(one_line(error), status, subcommand)
    return 0


def _remove_empty_folders(folder):
    """Removes ``folder`` if this run made it and wrote no file in it (empty subfolders go too)."""
    if not os.path.isdir(folder):
        return
    for root, _, names in os.walk(folder, topdown=False):
        if names:
            return
        try:
            os.rmdir(root)
        except OSError:
            return


def run(argv=None):
    """The console script's entry point (``keras-metapool``)."""
    # TensorFlow's start-up records were held at import (keras_metapool._quiet).
    argv = list(sys.argv if argv is None else argv)
    if argv[1:2] == [STUDY]:
        sys.exit(run_study([STUDY_PROGRAM, *argv[2:]]))
    define_flags()
    app.run(main, argv=argv, flags_parser=_parse_flags)


__all__ = [
    "COMMANDS",
    "EvaluationResult",
    "ExportResult",
    "Options",
    "QATResult",
    "SUBCOMMANDS",
    "SearchResult",
    "TrainResult",
    "demo",
    "evaluate",
    "export",
    "main",
    "make_strategy",
    "qat",
    "run",
    "search",
    "train",
]

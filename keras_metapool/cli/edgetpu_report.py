"""``python -m keras_metapool.export MODEL.tflite [--verbose] [--compile]``: the Edge TPU report.

The offline report of ``keras_metapool.export.edgetpu`` for each file, and the
real compiler's when ``--compile`` is given and ``edgetpu_compiler`` is on
``PATH``. Exit status: 0 when every op of every file maps to the Edge TPU, 1
when some fall back to the CPU, 2 for an unreadable file or a usage error.
"""

import shutil
import sys

from keras_metapool.export.edgetpu import edgetpu_report
from keras_metapool.export.edgetpu_compiler import run_edgetpu_compiler


def main(argv, verbose=False, compile_model=False, output_dir=None):
    """Prints the report of each file in ``argv[1:]``; returns the exit status."""
    paths = argv[1:]
    if not paths:
        print("usage: python -m keras_metapool.export MODEL.tflite ...", file=sys.stderr)
        return 2
    status = 0
    for number, path in enumerate(paths):
        if number:
            print()
        try:
            report = edgetpu_report(path)
        except (OSError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(report.format(verbose=verbose))
        if shutil.which("edgetpu_compiler"):
            if compile_model:
                compiled = run_edgetpu_compiler(path, output_dir)
                print()
                print(compiled.format(verbose=verbose))
                report = compiled
            else:
                print("edgetpu_compiler is on PATH: pass --compile to run it.")
        elif compile_model:
            print("error: --compile given but edgetpu_compiler is not on PATH.", file=sys.stderr)
            return 2
        if not report.all_mapped:
            status = 1
    return status


def run_cli():
    """The command line (``python -m keras_metapool.export``): absl flags, then ``main``."""
    from absl import app, flags

    flags.DEFINE_bool("verbose", False, "List every op that runs on the CPU, with its reason.")
    flags.DEFINE_bool(
        "compile", False, "Also run edgetpu_compiler (when on PATH) and print its report."
    )
    flags.DEFINE_string("out_dir", None, "Output folder of edgetpu_compiler (--compile).")

    def _main(argv):
        values = flags.FLAGS
        return main(
            argv,
            verbose=values.verbose,
            compile_model=values.compile,
            output_dir=values.out_dir,
        )

    app.run(_main)

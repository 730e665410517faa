"""Runs several ``keras-metapool`` command lines in one process, one TensorFlow start-up.

    python tests/cli_batch_script.py '[["train", "--image_size=16"], ["frobnicate"]]'

Prints one JSON list: per command line, its exit status and what it wrote to
stdout and stderr (Python-level writes; TensorFlow's C++ runtime logs go to
the process's real stderr). An exception other than ``SystemExit`` is not
caught: the script then fails with its traceback, as the command would.
Used by tests/test_cli_demo.py for the bad-command-line cases, which each
end before any training: a process per case would spend its time starting
TensorFlow.
"""

import contextlib
import io
import json
import sys

from absl import flags

from keras_metapool import cli, study


def main():
    results = []
    for argv in json.loads(sys.argv[1]):
        flags.FLAGS.unparse_flags()  # each command line starts from the defaults
        study.FLAGS.unparse_flags()  # `study`'s own flags too
        out, err = io.StringIO(), io.StringIO()
        status = None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.run(["keras-metapool", *argv])
            except SystemExit as exit_:
                status = exit_.code
        results.append(
            {"argv": argv, "status": status, "stdout": out.getvalue(), "stderr": err.getvalue()}
        )
    sys.stdout.write(json.dumps(results) + "\n")


if __name__ == "__main__":
    main()

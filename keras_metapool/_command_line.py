"""What the package's programs share: their names and their one-line errors.

``keras-metapool`` (``keras_metapool.cli``) and ``keras-metapool study``
(``keras_metapool.study``, flags of its own) both end a user's mistake with
one line on stderr, ``PROGRAM: error: MESSAGE``, and a non-zero status.
"""

import sys

#: The console script's name (setup.cfg's ``console_scripts``).
PROGRAM = "keras-metapool"
#: The study's subcommand, a program with flags of its own.
STUDY = "study"
#: How the study names itself in errors and ``--help``.
STUDY_PROGRAM = f"{PROGRAM} {STUDY}"


def one_line(error):
    """``error``'s message on one line (absl's and TensorFlow's span several)."""
    return " ".join(str(error).split()) or type(error).__name__


def write_error(where, message):
    """Writes ``WHERE: error: MESSAGE`` as one line on stderr."""
    sys.stderr.write(f"{where}: error: {message}\n")
    sys.stderr.flush()

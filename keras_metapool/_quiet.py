"""Keeps TensorFlow's native start-up records away from the command line's user.

TensorFlow 2.21 writes records from C++ to the process's stderr while it loads
("WARNING: All log messages before absl::InitializeLog() ...", "I0000 ...
oneDNN custom operations are on", "E0000 ... failed call to cuInit") and the
TFLite converter prints "fully_quantize: 0, inference_type: 6 ...". They come
before absl logging is set up, so no log level hides them all. When the
process is the ``keras-metapool`` command (the console script or ``python -m
keras_metapool.cli``) without ``--verbosity``/``-v``, the package holds what
native code writes to file descriptor 2 while TensorFlow loads and while a
model converts, and shows it only if that step fails. A program that imports
keras_metapool is never affected: nothing here runs for it.
"""

import contextlib
import os
import sys
import tempfile

from keras_metapool._command_line import PROGRAM

_CLI_MODULES = ("keras_metapool.cli", "keras_metapool.cli.__main__")
_VERBOSITY_FLAGS = ("--verbosity", "-v", "--v")

#: Whether this process is the quiet command line (set once, at import).
QUIET = False


def running_the_quiet_cli():
    """Whether this process is ``keras-metapool`` (either form), run without ``--verbosity``."""
    argv = list(getattr(sys, "orig_argv", sys.argv))
    is_script = os.path.basename(sys.argv[0] if sys.argv else "") == PROGRAM
    is_module = any(argv[i] == "-m" and argv[i + 1] in _CLI_MODULES for i in range(len(argv) - 1))
    verbose = any(a.split("=")[0] in _VERBOSITY_FLAGS for a in argv)
    return (is_script or is_module) and not verbose


@contextlib.contextmanager
def native_stderr_held(active=True):
    """Holds what is written to file descriptor 2 in the block; replays it if the block fails."""
    if not active:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                held.seek(0)
                sys.stderr.write(held.read().decode("utf-8", "replace"))
                sys.stderr.flush()


def load_tensorflow_quietly():
    """Imports TensorFlow (and makes it look for devices) with its records held."""
    global QUIET
    QUIET = True
    # C++ records after start-up (absl's INFO and WARNING levels).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_held():
        import tensorflow as tf

        tf.config.list_physical_devices()  # the cuInit record comes here, held too

"""Does Meta-Pooling help? The study, as a benchmark script.

The program lives in the package (``keras_metapool.study``, whose docstring
is the manual); this script runs it from this checkout, as
``keras-metapool study`` runs it from an installed copy:

    python benchmarks/study.py --quick
    python benchmarks/study.py --help

Unlike the installed command (``runs/study``), it writes into this
checkout's ``results/`` unless ``--output_dir`` says otherwise: the
project's measurements live there.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# This checkout's package, not an installed copy: the benchmarks measure this tree.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_metapool.study import run  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv
    if not any(a.startswith(("--output_dir", "-output_dir")) for a in argv[1:]):
        argv = [*argv, "--output_dir=" + os.path.join(os.path.dirname(__file__), "..", "results")]
    sys.exit(run(argv))

"""``python -m keras_metapool.study``: the study (``keras-metapool study``)."""

import sys

from keras_metapool.study import run

if __name__ == "__main__":
    sys.exit(run())

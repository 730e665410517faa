"""``python -m keras_metapool.export MODEL.tflite [--verbose] [--compile]``: the Edge TPU report.

A module of its own (not ``edgetpu.py``), because the package imports
``edgetpu`` and running an imported module with ``-m`` runs it twice.
"""

from keras_metapool.export.edgetpu import run_cli

if __name__ == "__main__":
    run_cli()

"""``python -m keras_metapool.export MODEL.tflite [--verbose] [--compile]``: the Edge TPU report.

A thin alias of the program in ``keras_metapool.cli.edgetpu_report``.
"""

from keras_metapool.cli.edgetpu_report import run_cli

if __name__ == "__main__":
    run_cli()

"""``python -m keras_metapool.cli SUBCOMMAND ...``: the ``keras-metapool`` command."""

from keras_metapool.cli import run

if __name__ == "__main__":
    run()

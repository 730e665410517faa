"""Every Python block of README.md runs as written (small sizes are in the blocks).

The block of the whole flow runs in tests/test_first_hour.py, which also checks
its accuracy. Each block runs in a fresh namespace, in an empty folder, so it
must define (and load) everything it uses.
"""

import warnings

import pytest
from helpers import CARD_FLOW_MARKER, readme_python_blocks

from keras_metapool._keras import keras

BLOCKS = [block for block in readme_python_blocks() if CARD_FLOW_MARKER not in block]


def test_readme_has_the_blocks_this_file_runs():
    assert len(BLOCKS) == 3  # quick start, Keras 3, search
    assert len(readme_python_blocks()) == len(BLOCKS) + 1


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs_as_written(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    keras.utils.set_random_seed(0)
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. a short search's SearchUndecidedWarning
        exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), namespace)
    # What each block leaves behind is what its prose says it makes.
    made = {
        0: lambda: namespace["mp"].name and (tmp_path / "arch.json").exists(),
        1: lambda: (
            (tmp_path / "mobilenet_v2_mp_qat.keras").exists()
            and type(namespace["qat"]).__module__.startswith("keras.")
            and namespace["litert"].num_examples == 256
        ),
        2: lambda: namespace["spec"].ops and (tmp_path / "search.png").exists(),
    }[index]
    assert made()

"""Shared test setup: quiet TensorFlow, deterministic seeds, small helpers."""

import collections
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# TensorFlow's native start-up records ("WARNING: All log messages before
# absl::InitializeLog()", "I0000 ... oneDNN", "... cuda drivers") bypass pytest's
# capture of this process and print after the summary: held while it loads.
_saved_stderr = os.dup(2)
with tempfile.TemporaryFile() as _held:
    os.dup2(_held.fileno(), 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(_saved_stderr, 2)
        os.close(_saved_stderr)

from keras_metapool._keras import keras  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from the same seeds, global policy and name counters."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(1234)
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


#: Test files by their measured time (seconds of test time, setup included, in a
#: full fresh-clone run on 2 cores: `pytest --durations=0`, 2026-12-07). pytest-xdist's
#: --dist loadfile hands out whole files, by default the files with the most tests
#: first; these few-test, long files then came last, and one worker could still
#: be running them while the other had nothing left. Longest first instead: the
#: end of the run is small files. A stale entry costs only balance, never a result.
LONG_FILES = {
    "test_quantization.py": 270,
    "test_examples.py": 215,
    "test_readme_snippets.py": 175,
    "test_first_hour.py": 170,
    "test_cli.py": 170,
    "test_study.py": 185,
    "test_cli_resume.py": 140,
    "test_keras3_out.py": 110,
    "test_save_load.py": 100,
    "test_transfer.py": 90,
    "test_pmpl.py": 70,
    "test_search_planted.py": 65,
    "test_mobilenet_v2_mp.py": 60,
    "test_export_tflite.py": 55,
    "test_weights.py": 50,
    "test_mixed_precision.py": 50,
    "test_derive.py": 40,
}


def pytest_collection_modifyitems(config, items):
    """Orders the files longest first (LONG_FILES), then by number of tests."""
    counts = collections.Counter(item.path for item in items)
    # list.sort is stable: the tests of one file keep their order.
    items.sort(key=lambda item: (-LONG_FILES.get(item.path.name, 0), -counts[item.path]))


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        'slow: a test of 3 s or more on 2 cores (measured); pytest -m "not slow" is the fast tier',
    )
    tf.config.threading.set_inter_op_parallelism_threads(2)
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the order above
        config.option.loadscopereorder = False

"""Shared test setup: quiet TensorFlow, deterministic seeds, small helpers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

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


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: trains on real data (still part of the default run)")
    tf.config.threading.set_inter_op_parallelism_threads(2)


#: The slowest test files (minutes each, mostly TensorFlow tracing and
#: subprocesses), scheduled first: pytest-xdist's --dist loadfile hands files
#: out in collection order, and a heavy file collected last ran alone at the
#: end while the other worker idled.
HEAVY_FILES_FIRST = (
    "test_cli.py",
    "test_study.py",
    "test_quantization.py",
    "test_cli_demo.py",
    "test_cli_resume.py",
    "test_export_tflite.py",
    "test_save_load.py",
    "test_pmpl.py",
    "test_mixed_precision.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: index for index, name in enumerate(HEAVY_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept

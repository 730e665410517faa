"""Tests for keras_metapool.distribute.make_strategy.

The strategies that need devices or collectives configured before TensorFlow
starts run in subprocesses (tests/distribute_script.py): two logical CPUs for
"mirrored", two local worker processes on loopback ports for "multi_worker".
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import free_ports

from keras_metapool.distribute import STRATEGIES, make_strategy

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distribute_script.py")
GLOBAL_BATCH = 16  # as in distribute_script.py
TIMEOUT = 240


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **extra)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _finish(processes):
    """Waits for all processes; on a failure or timeout kills the rest and fails with stderr."""
    errors = []
    for process in processes:
        try:
            _, stderr = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            pytest.fail(f"{process.args} timed out after {TIMEOUT} s")
        if process.returncode != 0:
            errors.append(stderr.decode()[-3000:])
    assert not errors, "\n\n".join(errors)


# ---------------------------------------------------------------- in process


def test_default_is_the_current_strategy():
    assert make_strategy() is tf.distribute.get_strategy()
    assert make_strategy("default").num_replicas_in_sync == 1


def test_unknown_strategy_names_the_choices():
    with pytest.raises(ValueError, match="Unknown strategy 'gpu'") as info:
        make_strategy("gpu")
    assert all(name in str(info.value) for name in STRATEGIES)


@pytest.mark.parametrize("cpu_devices", [1, 0, "2", 2.0])
def test_bad_cpu_devices(cpu_devices):
    with pytest.raises(ValueError, match="`cpu_devices` must be an integer >= 2"):
        make_strategy("mirrored", cpu_devices=cpu_devices)


def test_cpu_devices_after_tensorflow_started_says_too_late():
    tf.constant(1.0) + 1.0  # TensorFlow's devices are now initialized
    count = len(tf.config.list_logical_devices("CPU")) + 1
    with pytest.raises(RuntimeError, match=f"cpu_devices={count} came too late.*fresh process"):
        make_strategy("mirrored", cpu_devices=count)


def test_tpu_argument_only_for_tpu():
    with pytest.raises(ValueError, match="only used by the 'tpu' strategy"):
        make_strategy("mirrored", tpu="local")


def test_tpu_without_address_says_how_to_name_it(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.delenv("KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", raising=False)
    with pytest.raises(ValueError, match="tpu='local' on a Cloud TPU VM.*grpc://"):
        make_strategy("tpu")


WORKERS = {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}


@pytest.mark.parametrize(
    "tf_config,problem",
    [
        (None, "TF_CONFIG environment variable, which is not set"),
        ("{cluster: []}", "TF_CONFIG is not valid JSON"),
        (json.dumps({"task": {"type": "worker", "index": 0}}), "'cluster' is missing"),
        (json.dumps({"cluster": WORKERS}), "'task' is missing"),
        (
            json.dumps({"cluster": WORKERS, "task": {"type": "worker", "index": 2}}),
            "task index 2 is outside 0..1",
        ),
        (
            json.dumps({"cluster": WORKERS, "task": {"type": "ps", "index": 0}}),
            "task type 'ps' is not one of the cluster's",
        ),
        (
            json.dumps({"cluster": {"worker": ["host1"]}, "task": {"type": "worker", "index": 0}}),
            "address 'host1' is not 'host:port'",
        ),
    ],
)
def test_bad_tf_config_says_what_it_must_contain(monkeypatch, tf_config, problem):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError) as info:
        make_strategy("multi_worker")
    message = str(info.value)
    assert problem in message
    # Every message shows the expected shape of TF_CONFIG.
    assert '"cluster": {"worker": ["host1:12345", "host2:12345"]}' in message
    assert '"task": {"type": "worker", "index": 0}' in message


# ---------------------------------------------------------------- subprocesses


@pytest.mark.slow
def test_mirrored_on_two_cpus_splits_the_global_batch(tmp_path):
    out = tmp_path / "mirrored.npz"
    _finish(
        [
            subprocess.Popen(
                [sys.executable, SCRIPT, "mirrored", str(out)],
                env=_env(),
                stderr=subprocess.PIPE,
                cwd=tmp_path,
            )
        ]
    )
    result = np.load(out)
    assert result["replicas"] == 2
    # Each replica gets half of every global batch, in order.
    assert result["local_image_shapes"].tolist() == [[GLOBAL_BATCH // 2, 32, 32, 3]] * 2
    np.testing.assert_array_equal(np.concatenate(result["local_labels"]), result["global_labels"])
    # A step is a global batch: 64 examples / 16 = 4 steps an epoch, 2 epochs.
    assert result["num_examples"] == 64 and result["steps"] == 2 * 64 // GLOBAL_BATCH
    assert np.all(np.isfinite(result["loss"]))
    assert not np.allclose(result["before"], result["after"])


@pytest.mark.slow
def test_multi_worker_shards_the_data_and_keeps_weights_in_sync(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    outs = [tmp_path / f"worker{index}.npz" for index in range(2)]
    processes = [
        subprocess.Popen(
            [sys.executable, SCRIPT, "multi_worker", str(out)],
            env=_env(
                TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            ),
            stderr=subprocess.PIPE,
            cwd=tmp_path,
        )
        for i, out in enumerate(outs)
    ]
    _finish(processes)
    first, second = (np.load(out) for out in outs)
    assert first["replicas"] == second["replicas"] == 2
    # Both workers build the same global batches (same seed) ...
    np.testing.assert_array_equal(first["global_labels"], second["global_labels"])
    # ... and each keeps its own half (auto-shard policy DATA): per-worker
    # batch = global / 2, together exactly the global batch.
    half = GLOBAL_BATCH // 2
    assert first["local_image_shapes"].tolist() == [[half, 32, 32, 3]]
    np.testing.assert_array_equal(first["local_labels"][0], first["global_labels"][:half])
    np.testing.assert_array_equal(second["local_labels"][0], first["global_labels"][half:])
    # Steps count global batches; gradients are all-reduced, so both workers
    # end with the same, trained weights.
    assert first["steps"] == second["steps"] == 2 * 64 // GLOBAL_BATCH
    np.testing.assert_array_equal(first["after"], second["after"])
    np.testing.assert_array_equal(first["loss"], second["loss"])
    assert not np.allclose(first["before"], first["after"])

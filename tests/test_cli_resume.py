"""``keras-metapool train`` survives a kill, and trains under tf.distribute strategies."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf
from cli_helpers import (
    ROOT,
    SMALL,
    check_ok,
    cli_env,
    command,
    read_json,
    run_cli,
    temporaries,
)
from helpers import free_ports

from keras_metapool.cli import files, training

TIMEOUT = 600
CHANCE = 0.1


def _csv_epochs(path):
    with open(path, encoding="utf-8") as f:
        rows = f.read().splitlines()[1:]
    return [int(row.split(",")[0]) for row in rows if row]


def _csv_rows(path):
    """``{column: [value per epoch]}`` of a history CSV (numeric columns)."""
    with open(path, encoding="utf-8") as f:
        header, *rows = [line.split(",") for line in f.read().splitlines() if line]
    return {name: [float(row[i]) for row in rows] for i, name in enumerate(header)}


def _backed_up(folder):
    return training.backup_epoch(os.path.join(folder, "backup")) is not None


@pytest.mark.slow
def test_train_killed_mid_epoch_resumes_from_the_backup_and_finishes(tmp_path):
    out = tmp_path / "train"
    flags = (
        *SMALL, "--architecture=none", "--train_limit=1536", "--test_limit=200", "--epochs=3",
        "--learning_rate=5e-3", "--warmup_epochs=0", "--augment=none", f"--output_dir={out}",
    )  # fmt: skip
    process = subprocess.Popen(
        command("train", *flags),
        cwd=ROOT,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + TIMEOUT
    try:
        # Wait for the first epoch's backup, then kill in the second epoch.
        while not _backed_up(out):
            assert process.poll() is None, process.communicate()[1].decode()[-3000:]
            assert time.monotonic() < deadline, "no backup written"
            time.sleep(0.2)
        time.sleep(1.0)
        assert process.poll() is None, "training ended before it could be interrupted"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "model.keras").exists()  # not finished: no final model yet
    done_before = _csv_epochs(out / "history.csv")
    assert done_before and done_before == list(range(len(done_before)))
    # A temporary file of a save the kill cut short (as it would be left).
    (out / f".model{files.TEMP_MARK}12345.keras").write_bytes(b"half a model")

    result = check_ok(run_cli("train", *flags))
    assert "Resuming from the backup" in result.stdout
    metrics = read_json(out / "train_metrics.json")
    assert metrics["resumed_at_epoch"] >= 1
    # Every epoch logged once, in order: those before the kill are kept, the
    # one it interrupted is run again, not logged twice.
    assert _csv_epochs(out / "history.csv") == [0, 1, 2]
    assert metrics["test_accuracy"] > 2 * CHANCE
    assert not temporaries(out)  # the stale temporary is gone, no new one left
    assert not (out / "backup").exists()
    from keras_metapool._keras import keras

    model = keras.models.load_model(out / "model.keras")
    assert model.optimizer.iterations.numpy() == 3 * 44  # ceil(1383 / 32) steps an epoch
    # The resumed run is the uninterrupted one: the same batches from the epoch it
    # resumed at (data order and augmentation are functions of the seed and the pass).
    reference = tmp_path / "reference"
    check_ok(run_cli("train", *flags[:-1], f"--output_dir={reference}"))
    resumed_rows, reference_rows = (
        _csv_rows(out / "history.csv"),
        _csv_rows(reference / "history.csv"),
    )
    assert resumed_rows.keys() == reference_rows.keys()
    for column, values in reference_rows.items():
        np.testing.assert_allclose(
            resumed_rows[column], values, rtol=1e-6, atol=1e-7, err_msg=column
        )
    assert read_json(reference / "train_metrics.json")["test_accuracy"] == metrics["test_accuracy"]


def test_an_interruption_says_whether_a_rerun_resumes(tmp_path):
    # Interrupted during the final evaluation or save, the run has no backup
    # left (fit removed it): "rerun to resume" would retrain from epoch 1.
    backup = str(tmp_path / "backup")
    assert training.interruption_advice(backup).endswith("rerunning the same command starts over.")
    # A backup written after the third epoch (BackupAndRestore counts from 0).
    tf.train.Checkpoint(ckpt_saved_epoch=tf.Variable(2, dtype=tf.int64)).save(
        os.path.join(backup, "chief", "chief")
    )
    assert training.interruption_advice(backup) == (
        "Rerun the same command to resume from the backup, after epoch 3."
    )


def test_atomic_output_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError):
        with files.atomic_output(str(path)) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("half")
            raise RuntimeError("killed while writing")
    assert path.read_text(encoding="utf-8") == "old"
    assert not temporaries(tmp_path)
    with files.atomic_output(str(path)) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("new")
    assert path.read_text(encoding="utf-8") == "new" and not temporaries(tmp_path)


def _train_flags(out):
    return (
        # Plain MobileNetV2: the strategies do not depend on the architecture,
        # and it traces in a fraction of the time.
        *SMALL, "--architecture=none", "--train_limit=256", "--test_limit=64", "--epochs=1",
        "--steps_per_epoch=2", "--validation_fraction=0", "--augment=none",
        f"--output_dir={out}",
    )  # fmt: skip


def _trained_steps(history_csv):
    with open(history_csv, encoding="utf-8") as f:
        header, row = f.read().splitlines()[:2]
    values = dict(zip(header.split(","), row.split(",")))
    return float(values["loss"])


@pytest.mark.slow
def test_train_mirrored_on_two_logical_cpus(tmp_path):
    out = tmp_path / "mirrored"
    result = check_ok(run_cli("train", *_train_flags(out), "--strategy=mirrored",
                              "--cpu_devices=2"))  # fmt: skip
    assert "batch 32 over 2 replica(s)" in result.stdout
    assert _trained_steps(out / "history.csv") > 0
    from keras_metapool._keras import keras

    model = keras.models.load_model(out / "model.keras")
    assert model.optimizer.iterations.numpy() == 2


@pytest.mark.slow
def test_train_multi_worker_with_two_local_processes(tmp_path):
    out = tmp_path / "multi"
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    processes = [
        subprocess.Popen(
            command("train", *_train_flags(out), "--strategy=multi_worker"),
            cwd=ROOT,
            env=cli_env(
                TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=TIMEOUT))
    finally:
        for process in processes:
            process.kill()
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
        assert "over 2 replica(s)" in stdout
    # Worker 0 (the chief) wrote the artifacts; worker 1's scratch folder is gone.
    assert (out / "model.keras").exists() and _trained_steps(out / "history.csv") > 0
    assert not [name for name in os.listdir(out) if name.startswith(".worker-")]
    from keras_metapool._keras import keras

    model = keras.models.load_model(out / "model.keras")
    assert model.optimizer.iterations.numpy() == 2

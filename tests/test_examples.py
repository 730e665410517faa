"""Every script in examples/ runs as documented, at a tiny size, and makes what it says.

Each runs in a fresh process from an empty folder (the installed package, as a
user's copy would), with the small flags its own docstring suggests.
"""

import glob
import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
TINY = ["--image_size=32", "--train_size=128", "--test_size=64", "--batch_size=32"]


def _run(script, *flags, cwd):
    done = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, script), *flags],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_every_example_has_a_test_here():
    scripts = {os.path.basename(path) for path in glob.glob(os.path.join(EXAMPLES, "*.py"))}
    assert scripts == {
        "coral_export.py",
        "imagenet_recipe.py",
        "keras_native.py",
        "quickstart.py",
        "transfer_learning.py",
    }


@pytest.mark.slow
def test_quickstart_trains_both_models_and_saves_them(tmp_path):
    out = _run("quickstart.py", *TINY, "--epochs=1", "--output_dir=out", cwd=tmp_path)
    assert "params" in out and "test acc" in out
    saved = sorted(os.listdir(tmp_path / "out"))
    assert "paper_architecture.json" in saved
    assert len([name for name in saved if name.endswith(".keras")]) == 2


@pytest.mark.slow
def test_keras_native_searches_quantizes_and_exports(tmp_path):
    out = _run(
        "keras_native.py", *TINY, "--epochs=1", "--qat_epochs=1", "--output_dir=out",
        "--candidates=identity,ssp,avg3", cwd=tmp_path,
    )  # fmt: skip
    assert "Edge TPU .tflite (LiteRT, CPU)" in out
    assert glob.glob(str(tmp_path / "out" / "*edgetpu*.tflite"))


@pytest.mark.slow
def test_coral_export_writes_the_edgetpu_file_and_its_report(tmp_path):
    out = _run(
        "coral_export.py", "--image_size=32", "--train_size=128", "--epochs=1",
        "--output_dir=out", cwd=tmp_path,
    )  # fmt: skip
    assert "ops predicted on Edge TPU" in out
    assert glob.glob(str(tmp_path / "out" / "*_edgetpu.tflite"))


@pytest.mark.slow
def test_transfer_learning_keeps_the_base_predictions_then_fine_tunes(tmp_path):
    out = _run(
        "transfer_learning.py", "--image_size=32", "--train_size=128", "--test_size=64",
        "--epochs=1", "--control=false", cwd=tmp_path,
    )  # fmt: skip
    # Meta-Pooling added with open gates: the same function before fine-tuning.
    agreement = float(out.split("top-1 agreement with the base")[1].split()[0])
    assert agreement == 1.0
    assert "== 3. Fine-tuning" in out


@pytest.mark.slow
def test_imagenet_recipe_dry_run_builds_and_steps(tmp_path):
    out = _run("imagenet_recipe.py", "--dry_run", "--output_dir=out", cwd=tmp_path)
    assert "dry run done: 2 training and 2 validation steps" in out
    last = dict(item.split() for item in out.split("last epoch: ")[1].splitlines()[0].split(", "))
    assert 0.0 < float(last["loss"]) < 100.0  # a finite loss from the real recipe's pieces
    assert not os.listdir(tmp_path)  # a dry run leaves nothing behind

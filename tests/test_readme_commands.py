"""README's two commands stay true: CI runs the test one, the main job works."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_commands():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        block = re.search(r"```bash\n(.*?)```", f.read(), re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_starts_with_main_job_and_test_command():
    main_job, tests = _readme_commands()[:2]
    # The main job is the CLI's demo (tests/test_cli_demo.py runs its --quick form).
    assert main_job.endswith(".venv/bin/keras-metapool demo")
    assert "pytest" in tests
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci_commands = [
            line
            for line in f.read().splitlines()
            if line and not line.startswith(("#", "set ", "cd "))
        ]
    # CI must run exactly what README tells users to run.
    assert ci_commands == [tests]


def test_quickstart_trains_and_saves_reloadable_models(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "examples", "quickstart.py"),
            "--image_size=32",
            "--train_size=512",
            "--test_size=256",
            "--epochs=1",
            f"--output_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mobilenetv2mp_0.35_32" in result.stdout
    import keras_metapool as km
    from keras_metapool._keras import keras

    model = keras.models.load_model(tmp_path / "mobilenetv2mp_0.35_32.keras")
    assert sum(isinstance(layer, km.SpatialEnhancer) for layer in model.layers) == 11
    assert (
        km.ArchitectureSpec.load(tmp_path / "paper_architecture.json")
        == km.ArchitectureSpec.paper()
    )
    # The printed test accuracy is a real number in [0, 1] for both models.
    accuracies = re.findall(r"M\s+(\d\.\d{4})\s+\d+\s", result.stdout)
    assert len(accuracies) == 2 and all(0.0 <= float(a) <= 1.0 for a in accuracies)

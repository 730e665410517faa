"""README's two commands stay true: CI runs the test one; the main job is `keras-metapool demo`
(its --quick form runs in tests/test_cli.py)."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_commands():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        block = re.search(r"```bash\n(.*?)```", f.read(), re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_starts_with_main_job_and_test_command():
    main_job, tests = _readme_commands()[:2]
    # The main job is the CLI's demo (tests/test_cli.py runs its --quick form).
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

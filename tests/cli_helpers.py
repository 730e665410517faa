"""Running the ``keras-metapool`` command in subprocesses, as a user would."""

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 600
#: Small, fast settings every test run shares: 32x32 Fashion-MNIST, alpha 0.35.
SMALL = ("--image_size=32", "--alpha=0.35", "--batch_size=32", "--seed=0")
#: What TensorFlow's runtime prints to stderr when it is imported (its C++
#: logging starts before any flag of ours is read; TF_CPP_MIN_LOG_LEVEL does
#: not silence it in TF 2.21). Not ours, so not part of "one clear line".
RUNTIME_BANNER = (
    "WARNING: All log messages before absl::InitializeLog()",
    "To enable the following instructions",
)
#: A log record of TensorFlow's runtime or of a library's absl logging
#: ("E0000 00:00:1796.. 123 cuda_platform.cc:52] failed call to cuInit ...",
#: "W1201 21:50:43.8 1406 file_utils.py:394] ..."): labelled by its source
#: file, never mistaken for the command's own error line.
LOG_RECORD = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] ")


def cli_env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def command(subcommand, *flags):
    """``python -m keras_metapool.cli SUBCOMMAND FLAGS`` (the console script's module)."""
    return [sys.executable, "-m", "keras_metapool.cli", subcommand, *flags]


def run_cli(subcommand, *flags, cwd=None, timeout=TIMEOUT, env=None):
    """Runs a subcommand to its end; returns the CompletedProcess (text)."""
    return subprocess.run(
        command(subcommand, *flags),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or ROOT,
        env=env or cli_env(),
    )


def check_ok(result):
    """Asserts a subcommand succeeded, showing its output when not."""
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\n"
        f"stderr:\n{result.stderr[-3000:]}"
    )
    return result


def own_stderr_lines(stderr):
    """stderr without TensorFlow's import-time runtime banner."""
    return [
        line
        for line in stderr.splitlines()
        if line.strip() and not line.startswith(RUNTIME_BANNER) and not LOG_RECORD.match(line)
    ]


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def temporaries(folder):
    """Temporary files or folders (``.NAME.tmp-PID``) left anywhere under ``folder``."""
    found = []
    for root, dirs, files in os.walk(folder):
        found += [os.path.join(root, n) for n in dirs + files if ".tmp-" in n]
    return found


def png_size(path):
    """(width, height) of a PNG file, read from its header."""
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")

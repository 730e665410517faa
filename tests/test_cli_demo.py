"""Bad command lines, each one clear line. (``demo --quick`` runs in tests/test_cli.py.)"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from cli_helpers import (
    ROOT,
    SMALL,
    cli_env,
    own_stderr_lines,
    run_cli,
)

from keras_metapool import cli, study


def _check_one_line_error(status, stderr, expected_status, *fragments):
    lines = own_stderr_lines(stderr)
    assert status == expected_status, stderr[-2000:]
    assert "Traceback" not in stderr
    assert len(lines) == 1, lines
    assert lines[0].startswith("keras-metapool")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.slow
def test_bad_command_lines_in_their_own_process_exit_with_one_clear_line():
    # The real process: a command-line mistake (status 2) and a run error (1).
    # Exactly one line on stderr: TensorFlow's native start-up records (absl's
    # banner, oneDNN, cuInit) are held back at the default verbosity.
    result = run_cli("train", "--image_size=16")
    _check_one_line_error(result.returncode, result.stderr, 2, "--image_size", ">= 32")
    assert result.stderr.strip().splitlines() == own_stderr_lines(result.stderr)
    result = run_cli("train", "--architecture=/no/such/architecture.json")
    _check_one_line_error(result.returncode, result.stderr, 1, "not a file")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    # Asked for, they are there.
    result = run_cli("train", "--image_size=16", "--verbosity=1")
    assert len(result.stderr.strip().splitlines()) > 1


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    (folder / "architecture.json").write_text(json.dumps({"ops": ["ssp"] * 3}), encoding="utf-8")
    (folder / "flags.txt").write_text("--image_size=8\n", encoding="utf-8")
    (folder / "corrupt.keras").write_bytes(b"PK\x03\x04 not a whole zip file")
    for split in ("train", "test"):  # an image folder with one class
        (folder / "oneclass" / split / "cat").mkdir(parents=True)
        png = tf.io.encode_png(np.zeros((32, 32, 3), np.uint8)).numpy()
        for index in range(8):
            (folder / "oneclass" / split / "cat" / f"{index}.png").write_bytes(png)
    return folder


#: (command line, exit status, fragments of the one error line); ``{tmp}`` is a
#: folder with a corrupt architecture.json and a flag file.
BAD_COMMAND_LINES = [
    (["train", "--dataset=imagenet"], 2, ["--dataset", "fashion_mnist", "tfds:NAME"]),
    # A flag error names the subcommand, as README's "keras-metapool SUBCOMMAND: error:".
    (["train", "--image_size=16"], 2, ["keras-metapool train: error:", "--image_size", ">= 32"]),
    (["train", "--epochs=0"], 2, ["--epochs must be >= 1"]),
    # The callback's own ranges, checked when the flags are parsed (before any model).
    (["search", "--threshold=0"], 2,
     ["keras-metapool search: error:", "--threshold must be in (0, 1)"]),
    (["search", "--error_rate=1"], 2, ["--error_rate must be in (0, 1)"]),
    (["search", "--warmup=1"], 2, ["--warmup must be in [0, 1)"]),
    (["search", "--placement=middle"], 2, ["--placement", "output", "hidden"]),
    (["train", "--formats=int8,jpeg"], 2, ["--formats", "edgetpu"]),
    (["train", "--flagfile={tmp}/flags.txt"], 2, ["--image_size", ">= 32"]),
    (["train", "extra"], 2, ["unexpected arguments", "--name=value"]),
    (["frobnicate"], 2, ["unknown subcommand", "search", "demo", "study"]),
    # `study` is a program of its own (keras_metapool.study), with the same one-line errors.
    (["study", "--epochs=0"], 2, ["keras-metapool study: error:", "--epochs"]),
    (["study", "--variants=mp_paper,nope"], 2,
     ["keras-metapool study: error:", "Unknown variants ['nope']", "param_matched"]),
    (["study", "--dataset=folder:{tmp}/none", "--output_dir={tmp}/study"], 1,
     ["keras-metapool study: error:", "{tmp}/none", "does not exist"]),
    ([], 2, ["missing subcommand"]),
    (["train", "--architecture=/no/such/architecture.json"], 1,
     ["--architecture", "/no/such/architecture.json", "not a file"]),
    (["train", *SMALL, "--architecture={tmp}/architecture.json", "--output_dir={tmp}/o"], 1,
     ["not a valid architecture spec"]),
    (["evaluate", "--model=/no/such/model.tflite"], 1, ["/no/such/model.tflite", "does not exist"]),
    (["qat", "--output_dir={tmp}/o"], 2, ["keras-metapool qat: error:", "--model is required"]),
    (["export", "--output_dir={tmp}/no_model"], 2,
     ["keras-metapool export: error:", "--model is required"]),
    (["export", "--model={tmp}/corrupt.keras", "--output_dir={tmp}/corrupt"], 1,
     ["{tmp}/corrupt.keras", "could not be read as a Keras model"]),
    # A tfds dataset not prepared in --data_dir (nothing downloads), a missing image folder.
    (["train", *SMALL, "--dataset=tfds:mnist", "--data_dir={tmp}", "--output_dir={tmp}/o"], 1,
     ["mnist", "tfds build"]),
    (["search", *SMALL, "--dataset=folder:{tmp}/none", "--output_dir={tmp}/o"], 1,
     ["{tmp}/none", "does not exist"]),
    # File-system errors name the flag and the path given, not an errno or a temporary file.
    (["train", *SMALL, "--output_dir={tmp}/flags.txt"], 1,
     ["--output_dir={tmp}/flags.txt is a file", "pass another --output_dir"]),
    # One class: nothing to learn, refused instead of "test accuracy 1.0000".
    (["train", *SMALL, "--dataset=folder:{tmp}/oneclass", "--output_dir={tmp}/o1"], 1,
     ["has 1 class ('cat')", "at least 2", "PATH/<split>/<class>/"]),
    (["train", *SMALL, "--dataset=cluttered_fashion_mnist:clutter=-1", "--output_dir={tmp}/o"], 1,
     ["cluttered Fashion-MNIST", "`clutter`", "expected >= 0, got -1"]),
]  # fmt: skip


@pytest.fixture(scope="module")
def bad_results(folder):
    """Every BAD_COMMAND_LINES entry run by the command's own code, in one process."""
    command_lines = [[a.format(tmp=folder) for a in argv] for argv, _, _ in BAD_COMMAND_LINES]
    command_lines.append(["--help"])
    process = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "cli_batch_script.py"),
         json.dumps(command_lines)],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=cli_env(),
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BAD_COMMAND_LINES)))
def test_bad_command_lines_exit_with_one_clear_line(bad_results, folder, index):
    _, status, fragments = BAD_COMMAND_LINES[index]
    result = bad_results[index]
    fragments = [fragment.format(tmp=folder) for fragment in fragments]
    _check_one_line_error(result["status"], result["stderr"], status, *fragments)


def test_a_run_that_fails_before_writing_leaves_no_output_folder(bad_results, folder):
    assert [r["status"] for r in bad_results if "--output_dir={}/corrupt".format(folder)
            in r["argv"]] == [1]  # fmt: skip
    for name in ("no_model", "corrupt", "study", "o1"):
        assert not (folder / name).exists(), name


def test_help_documents_every_flag(bad_results):
    from keras_metapool.cli.options import HELP_SECTIONS

    result = bad_results[-1]
    assert result["status"] == 0
    for _, names in HELP_SECTIONS:
        for name in names:
            assert f"--{name}:" in result["stdout"] or f"--[no]{name}:" in result["stdout"], name


def test_an_output_dir_that_cannot_be_written_names_the_flag(tmp_path, monkeypatch):
    import errno

    from keras_metapool.cli import files

    def read_only(path, exist_ok=False):
        raise OSError(errno.EROFS, "Read-only file system", path)

    monkeypatch.setattr(files.os, "makedirs", read_only)
    with pytest.raises(ValueError) as info:
        files.prepare_output_dir(str(tmp_path / "out"))
    message = str(info.value)
    assert message.startswith(f"--output_dir={tmp_path / 'out'}: cannot write there")
    assert "(Read-only file system)" in message and "Errno" not in message


@pytest.mark.parametrize(
    "subcommand, listed, not_listed",
    [
        ("export", ["--formats", "--model", "--dataset"], ["--threshold", "--epochs"]),
        ("search", ["--threshold", "--epochs", "--candidates"], ["--formats"]),
        ("train", ["--architecture", "--epochs"], ["--threshold", "--formats"]),
    ],
)
def test_subcommand_help_lists_its_own_flags(subcommand, listed, not_listed, capsys):
    from keras_metapool.cli import _parse_flags
    from keras_metapool.cli.options import define_flags

    define_flags()
    with pytest.raises(SystemExit) as exit_info:
        _parse_flags(["keras-metapool", subcommand, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: keras-metapool {subcommand} ")
    for flag in listed:
        assert f"  {flag}:" in text, flag
    for flag in not_listed:
        assert f"  {flag}:" not in text, flag


def test_global_help_names_the_subcommands_and_what_resumes():
    from keras_metapool.cli.options import USAGE

    for name in ("search", "train", "qat", "export", "evaluate", "demo", "study"):
        assert f"\n  {name} " in USAGE
    assert "search, train and qat resume" in USAGE


def test_main_called_from_python_runs_the_study_with_its_own_flags(capsys):
    # `study` is listed among the subcommands, so cli.main must run it too (not
    # only the console script), with the study's flags and one-line errors.
    assert cli.main(["keras-metapool", "study", "--variants=mp_paper,nope"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("keras-metapool study: error: Unknown variants ['nope']"), line
    study.FLAGS.unparse_flags()  # leave the study's flags as the next test expects them


def test_study_help_lists_every_flag_and_variant_without_module_headers(capsys):
    assert cli.main(["keras-metapool", "study", "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: keras-metapool study")
    assert "keras_metapool." not in text and "absl.flags:" not in text, text
    own = text.split("Study flags:\n", 1)[1].split("Flag files (absl):\n", 1)[0]
    for flag in study.plan.FLAGS.flags_by_module_dict()["keras_metapool.study.plan"]:
        assert f"--{flag.name}:" in own or f"--[no]{flag.name}:" in own, flag.name
    variants_help = " ".join(own.split("--variants:", 1)[1].split("\n  --", 1)[0].split())
    for variant in study.plan.VARIANTS:
        assert variant.key in variants_help, variant.key

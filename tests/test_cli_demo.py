"""``keras-metapool demo --quick`` (the main job, reduced) and bad command lines."""

import json
import os

import pytest
from cli_helpers import (
    SMALL,
    check_ok,
    own_stderr_lines,
    png_size,
    read_json,
    run_cli,
    temporaries,
)

import keras_metapool as km
from keras_metapool.export.tflite import full_integer_problems
from keras_metapool.export.tflite_graph import read_tflite_graph

CHANCE = 0.1


def test_demo_quick_runs_every_stage_to_an_edgetpu_clean_int8_model(tmp_path):
    out = tmp_path / "demo"
    result = check_ok(run_cli("demo", "--quick", f"--output_dir={out}"))
    summary = read_json(out / "demo_summary.json")
    artifacts = summary["artifacts"]
    stages = ("architecture", "search plot", "float model", "QAT model", "Edge TPU int8 TFLite")
    for label in (*stages, "Edge TPU report", "confusion matrix", "metrics"):
        assert os.path.exists(artifacts[label]), label
        assert artifacts[label] in result.stdout  # the user is told where it is
    png_size(artifacts["search plot"])
    png_size(artifacts["confusion matrix"])
    # The searched architecture is what the float model was built from.
    spec = km.ArchitectureSpec.load(artifacts["architecture"])
    assert km.ArchitectureSpec.from_dict(summary["architecture"]) == spec
    assert not spec.is_searchable
    # Training happened: above chance, and the int8 model keeps it.
    assert summary["float_accuracy"] > 2 * CHANCE
    assert summary["int8_accuracy"] > 2 * CHANCE
    assert abs(summary["int8_accuracy"] - summary["qat_accuracy"]) <= 0.05
    # Edge TPU-clean: uint8 in/out, batch 1, every tensor 8-bit, every op mapped.
    tflite = artifacts["Edge TPU int8 TFLite"]
    graph = read_tflite_graph(tflite)
    assert full_integer_problems(graph, "uint8") == []
    assert list(graph.input_tensors[0].shape) == [1, 32, 32, 3]
    report = km.export.edgetpu_report(tflite)
    assert report.all_mapped and report.tpu_subgraphs == 1
    assert summary["edgetpu_all_mapped"] and summary["edgetpu_mapped_ops"] == report.num_ops
    assert summary["tflite_bytes"] == os.path.getsize(tflite)
    # The final table, printed and saved.
    table = (out / "demo_summary.md").read_text(encoding="utf-8")
    assert "int8 accuracy" in table and "Edge TPU mapped ops" in table
    assert f"{report.num_ops}/{report.num_ops} (100%)" in result.stdout
    assert not temporaries(out)


def _check_one_line_error(result, status, *fragments):
    lines = own_stderr_lines(result.stderr)
    assert result.returncode == status, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, lines
    assert lines[0].startswith("keras-metapool")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    "subcommand, flags, status, fragments",
    [
        ("train", ["--dataset=imagenet"], 2, ["--dataset", "fashion_mnist", "tfds:NAME"]),
        ("train", ["--image_size=16"], 2, ["--image_size", ">= 32"]),
        ("train", ["--epochs=0"], 2, ["--epochs"]),
        ("train", ["--architecture=/no/such/architecture.json"], 1,
         ["--architecture", "/no/such/architecture.json", "not a file"]),
        ("evaluate", ["--model=/no/such/model.tflite"], 1, ["/no/such/model.tflite",
                                                              "does not exist"]),
        ("frobnicate", [], 2, ["unknown subcommand", "search", "demo"]),
    ],
)  # fmt: skip
def test_bad_command_lines_exit_with_one_clear_line(subcommand, flags, status, fragments):
    _check_one_line_error(run_cli(subcommand, *flags), status, *fragments)


def test_missing_dataset_and_corrupt_architecture_exit_with_one_clear_line(tmp_path):
    # A tfds dataset that is not prepared in --data_dir (nothing downloads).
    result = run_cli(
        "train", *SMALL, "--dataset=tfds:mnist", f"--data_dir={tmp_path}",
        f"--output_dir={tmp_path / 'out'}",
    )  # fmt: skip
    _check_one_line_error(result, 1, "mnist")
    # An architecture file that is not a spec.
    bad = tmp_path / "architecture.json"
    bad.write_text(json.dumps({"ops": ["ssp"] * 3}), encoding="utf-8")
    result = run_cli("train", *SMALL, f"--architecture={bad}", f"--output_dir={tmp_path / 'o'}")
    _check_one_line_error(result, 1, "not a valid architecture spec")
    # An image folder that is not there.
    result = run_cli("search", *SMALL, f"--dataset=folder:{tmp_path / 'none'}",
                     f"--output_dir={tmp_path / 'o'}")  # fmt: skip
    _check_one_line_error(result, 1, str(tmp_path / "none"))


def test_help_documents_every_flag_and_flagfile_works(tmp_path):
    from keras_metapool.cli.options import HELP_SECTIONS, Options

    result = check_ok(run_cli("--help"))
    for _, names in HELP_SECTIONS:
        for name in names:
            assert f"--{name}:" in result.stdout or f"--[no]{name}:" in result.stdout, name
    # Every Options field is a documented flag (and the reverse).
    documented = {name for _, names in HELP_SECTIONS for name in names}
    assert documented == {field for field in Options.__dataclass_fields__}
    # --flagfile: a flag read from a file is applied (here: the bad size is caught).
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text("--image_size=8\n", encoding="utf-8")
    _check_one_line_error(run_cli("train", f"--flagfile={flagfile}"), 2, "--image_size")

"""The ``keras-metapool`` commands end to end, each in its own process.

One ``demo --quick`` (the main job, reduced: 32x32 Fashion-MNIST, alpha
0.35) runs once per module. It chains ``search`` -> ``train`` (the searched
architecture) -> ``qat`` -> ``export`` -> ``evaluate`` through the
subcommands' own functions, each stage writing the folder that subcommand
writes, so its stages are the subcommands' end-to-end runs. Two more
processes cover what the demo does not run: ``export`` of every format
from the demo's QAT model, and ``evaluate`` of its Keras model. The tests
check the artifacts, that they agree with each other, and that training
learned (accuracy above the 10% of chance).
"""

import os
import pathlib

import numpy as np
import pytest
from cli_helpers import (
    check_ok,
    png_size,
    read_json,
    run_cli,
    temporaries,
)

import keras_metapool as km
from keras_metapool._keras import keras
from keras_metapool.export.tflite import full_integer_problems
from keras_metapool.export.tflite_graph import read_tflite_graph

CHANCE = 0.1  # ten classes
TEST_IMAGES = 300


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    demo = root / "demo"
    out = {stage: str(demo / stage) for stage in ("search", "train", "qat", "evaluate")}
    out.update(demo=str(demo), export=str(root / "export"), evaluate_keras=str(root / "evaluate"))
    results = {}
    results["demo"] = check_ok(
        run_cli(
            "demo", "--quick", "--candidates=identity,ssp,avg3", "--arch_learning_rate=0.05",
            f"--test_limit={TEST_IMAGES}", f"--output_dir={demo}",
        )
    )  # fmt: skip
    results["export"] = check_ok(
        run_cli(
            "export", "--model=" + os.path.join(out["qat"], "qat_model"),
            "--formats=saved_model,int8,edgetpu", "--calibration_samples=64",
            f"--output_dir={out['export']}",
        )
    )  # fmt: skip
    results["evaluate model.keras"] = check_ok(
        run_cli(
            "evaluate", "--model=" + os.path.join(out["train"], "model.keras"),
            f"--test_limit={TEST_IMAGES}", f"--output_dir={out['evaluate_keras']}",
        )
    )  # fmt: skip
    return out, results


@pytest.mark.slow
def test_stderr_holds_only_lines_the_user_caused(chain):
    # At default verbosity: no runtime records ("INFO: Created TensorFlow Lite XNNPACK
    # delegate", "I0000 ..."), no raw Python warnings with a source path; only our own
    # warnings, one line each (here the quick search's: it decides nothing, at chance).
    for name, result in chain[1].items():
        for line in result.stderr.splitlines():
            assert not line.strip() or line.startswith("search: warning: "), (name, line)


@pytest.mark.slow
def test_demo_quick_runs_every_stage_to_an_edgetpu_clean_int8_model(chain):
    out, results = pathlib.Path(chain[0]["demo"]), chain[1]
    result = results["demo"]
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
    # 15 images (+ half an image of slack: k/N differences are not exact in floats).
    assert abs(summary["int8_accuracy"] - summary["qat_accuracy"]) <= (15.5 / TEST_IMAGES)
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


@pytest.mark.slow
def test_search_writes_a_fixed_architecture_plot_and_summary(chain):
    out, results = chain
    spec = km.ArchitectureSpec.load(os.path.join(out["search"], "architecture.json"))
    assert not spec.is_searchable and len(spec.ops) == 17
    # Every point chose among the three candidates given, one op or a pair.
    for ops in spec.ops:
        chosen = {ops} if isinstance(ops, str) else set(ops)
        assert chosen <= {"identity", "ssp", "avg3"}
    width, height = png_size(os.path.join(out["search"], "search.png"))
    assert width > 400 and height > 300
    with open(os.path.join(out["search"], "search_summary.txt"), encoding="utf-8") as f:
        summary = f.read()
    points = [f"block_{i}_hidden_mp" for i in range(1, 17)]  # the hidden placement
    rows = [line for line in summary.splitlines() if "_hidden_mp " in line]
    assert [row.split()[1] for row in rows] == points
    # One epoch of 4 steps decides nothing: every point defaulted to no enhancer, said so.
    assert all(row.split()[2:4] == ["defaulted", "identity"] for row in rows)
    bar = "time-uniform z bar, family error 0.05"
    assert f"0/16 points decided by evidence ({bar}), 16 defaulted" in summary
    assert "points decided by evidence" in results["demo"].stdout
    assert "Columns: block = MobileNetV2 block index" in summary  # every column explained
    # The undecided search warns in one clean line (no source path, no code line); the
    # end-of-fit notice about the supernet's weights is left out: `train` starts from scratch.
    stderr = results["demo"].stderr
    warned = [line for line in stderr.splitlines() if line.startswith("search: warning: ")]
    assert any("only 0 of 16 points were decided by evidence" in line for line in warned)
    assert "SearchUndecidedWarning" not in stderr and "pmpl.py" not in stderr
    assert "needs training before use" not in stderr
    history = open(os.path.join(out["search"], "search_history.csv"), encoding="utf-8").read()
    header = history.splitlines()[0].split(",")
    assert "pmpl/block_1_hidden_mp/ssp" in header
    # Blocks in numeric order: block_2 before block_10.
    assert header.index("pmpl/block_2_hidden_mp/ssp") < header.index("pmpl/block_10_hidden_mp/ssp")
    assert not os.path.exists(os.path.join(out["search"], "backup"))  # removed when done


@pytest.mark.slow
def test_train_learns_the_searched_architecture(chain):
    out, results = chain
    spec = km.ArchitectureSpec.load(os.path.join(out["search"], "architecture.json"))
    metrics = read_json(os.path.join(out["train"], "train_metrics.json"))
    assert km.ArchitectureSpec.from_dict(metrics["architecture"]) == spec
    assert metrics["test_images"] == TEST_IMAGES and metrics["epochs"] == 2
    assert metrics["test_accuracy"] > 2 * CHANCE
    model = keras.models.load_model(os.path.join(out["train"], "model.keras"))
    assert model.input_shape == (None, 32, 32, 3)
    # The lean model of the spec: no search mixtures, one enhancer per kept point.
    assert not any(isinstance(layer, km.MetaPoolingBlock) for layer in model.layers)
    best = keras.models.load_model(os.path.join(out["train"], "checkpoints", "best.keras"))
    assert [w.shape for w in best.weights] == [w.shape for w in model.weights]
    with open(os.path.join(out["train"], "history.csv"), encoding="utf-8") as f:
        rows = f.read().splitlines()
    assert rows[0].startswith("epoch") and "val_accuracy" in rows[0] and len(rows) == 3
    assert f"test accuracy {metrics['test_accuracy']:.4f}" in results["demo"].stdout
    # TensorBoard logs of both runs (training and validation).
    for run in ("train", "validation"):
        folder = os.path.join(out["train"], "logs", run)  # two levels, not three
        assert any(name.startswith("events.out.tfevents") for name in os.listdir(folder))


@pytest.mark.slow
def test_qat_model_reloads_and_keeps_the_accuracy(chain):
    out, _ = chain
    metrics = read_json(os.path.join(out["qat"], "qat_metrics.json"))
    train_metrics = read_json(os.path.join(out["train"], "train_metrics.json"))
    # The float model qat evaluates is the one train saved, on the same images.
    assert metrics["float_accuracy"] == pytest.approx(train_metrics["test_accuracy"], abs=1e-6)
    assert metrics["qat_accuracy"] > 2 * CHANCE
    assert abs(metrics["qat_accuracy"] - metrics["float_accuracy"]) < 0.1
    with km.quantize_scope():
        qat_model = keras.models.load_model(os.path.join(out["qat"], "qat_model"))
    assert any(type(layer).__name__ == "QuantizeWrapperV2" for layer in qat_model.layers)
    # The folder also serves without Keras: its signature computes the model.
    import tensorflow as tf

    serve = tf.saved_model.load(os.path.join(out["qat"], "qat_model")).signatures["serving_default"]
    images = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 3)).astype("float32")
    (served,) = serve(**{qat_model.input_names[0]: tf.constant(images)}).values()
    np.testing.assert_allclose(served.numpy(), qat_model(images, training=False).numpy(),
                               atol=1e-5)  # fmt: skip


@pytest.mark.slow
def test_export_writes_every_format_and_an_edgetpu_clean_model(chain):
    out, results = chain
    summary = read_json(os.path.join(out["export"], "export.json"))
    assert set(summary["outputs"]) == {"saved_model", "int8", "edgetpu"}
    edgetpu = summary["outputs"]["edgetpu"]
    assert edgetpu["input"]["dtype"] == "uint8" and edgetpu["input"]["shape"] == [1, 32, 32, 3]
    assert edgetpu["edgetpu"]["all_mapped"] and edgetpu["edgetpu"]["subgraphs"] == 1
    assert summary["outputs"]["int8"]["input"]["dtype"] == "int8"
    graph = read_tflite_graph(os.path.join(out["export"], "model_edgetpu.tflite"))
    assert full_integer_problems(graph, "uint8") == []
    # The QAT path too writes one scale per dense kernel (Edge TPU compiler 16).
    dense = [op for op in graph.ops if op.name == "FULLY_CONNECTED"]
    assert dense and all(len(graph.tensor(op.inputs[1]).scale) == 1 for op in dense)
    assert "HARD_SWISH" not in {op.name for op in graph.ops}
    assert full_integer_problems(read_tflite_graph(edgetpu["path"].replace("edgetpu", "int8")),
                                 "int8") == []  # fmt: skip
    report = open(os.path.join(out["export"], "edgetpu_report.txt"), encoding="utf-8").read()
    assert "Operator" in report and "Count" in report and "Status" in report
    assert f"{edgetpu['edgetpu']['tpu_ops']}" in results["export"].stdout
    assert not temporaries(out["export"])


@pytest.mark.slow
def test_export_saved_model_predicts_like_the_qat_model(chain):
    import tensorflow as tf

    out, _ = chain
    with km.quantize_scope():
        qat_model = keras.models.load_model(os.path.join(out["qat"], "qat_model"))
    serving = tf.saved_model.load(os.path.join(out["export"], "saved_model"))
    signature = serving.signatures["serving_default"]
    images = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    outputs = signature(images=tf.constant(images))
    assert "probabilities" in outputs
    # Eager and graph kernels may differ in the last bits, which can move a
    # fake-quantized output by one step of the int8 softmax grid (1/256).
    eager = qat_model(images, training=False).numpy()
    np.testing.assert_allclose(outputs["probabilities"].numpy(), eager, atol=1 / 256 + 1e-6)


@pytest.mark.slow
def test_evaluate_tflite_and_keras_report_accuracy_and_confusion_matrix(chain):
    out, results = chain
    tflite = read_json(os.path.join(out["evaluate"], "model_edgetpu_metrics.json"))
    keras_metrics = read_json(os.path.join(out["evaluate_keras"], "model_metrics.json"))
    qat = read_json(os.path.join(out["qat"], "qat_metrics.json"))
    train = read_json(os.path.join(out["train"], "train_metrics.json"))
    for metrics in (tflite, keras_metrics):
        matrix = np.array(metrics["confusion_matrix"])
        assert matrix.shape == (10, 10) and matrix.sum() == TEST_IMAGES
        assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / TEST_IMAGES)
        assert len(metrics["class_names"]) == 10
    # The Keras model evaluates as train measured it; the int8 model
    # predicts what its QAT model does, within a few images.
    # (evaluate calls the model eagerly, train compiled: other kernels, so a
    # near-tie may flip; two images at most.)
    assert keras_metrics["accuracy"] == pytest.approx(train["test_accuracy"], abs=2.5 / TEST_IMAGES)
    assert tflite["accuracy"] > 2 * CHANCE
    assert abs(tflite["accuracy"] - qat["qat_accuracy"]) <= 9.5 / TEST_IMAGES  # 9 images
    assert tflite["latency"]["median_ms"] > 0 and keras_metrics["latency"] is None
    for name in ("model_edgetpu", "model"):
        folder = out["evaluate_keras" if name == "model" else "evaluate"]
        width, height = png_size(os.path.join(folder, f"{name}_confusion_matrix.png"))
        assert width > 300 and height > 300
    assert "accuracy" in results["evaluate model.keras"].stdout


def test_evaluate_refuses_other_classes_and_says_which_results_it_replaces(tmp_path, capsys):
    from keras_metapool.cli import Options, evaluate

    paths = {}
    for name, classes in (("a", 10), ("b", 10), ("c", 3)):
        (tmp_path / name).mkdir()
        model = km.MobileNetV2MP(weights=None, alpha=0.35, input_shape=(32, 32, 3),
                                 classes=classes, meta_pooling="none")  # fmt: skip
        paths[name] = str(tmp_path / name / "model.keras")  # as every `train` names it
        model.save(paths[name])
    out = str(tmp_path / "evaluate")

    def options(name):
        return Options(model=paths[name], test_limit=20, output_dir=out)

    # 3 outputs on 10 classes: an accuracy over classes 0-2 only, before.
    with pytest.raises(ValueError, match="predicts 3 classes, --dataset=fashion_mnist has 10"):
        evaluate(options("c"))
    evaluate(options("a"))
    evaluate(options("a"))  # the same model again: nothing is lost
    assert "replacing" not in capsys.readouterr().out
    evaluate(options("b"))
    assert (
        f"replacing {out}/model_metrics.json, the results of {paths['a']} on 'test'"
        in capsys.readouterr().out
    )

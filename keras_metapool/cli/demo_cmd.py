"""``keras-metapool demo``: search -> train -> QAT -> Edge TPU int8 TFLite -> report.

The demo chains the other subcommands' functions on Fashion-MNIST with
settings that fit a CPU: every flag the user does not give takes the demo's
value below (``DEMO_DEFAULTS``, or ``QUICK_DEFAULTS`` with ``--quick``);
flags given apply to every stage. The search stage uses its own, smaller
share of the training images and epochs (``STAGE_SETTINGS``), since a search
step costs about 3.5 plain steps.

| | full demo | ``--quick`` |
|---|---|---|
| input, width | 64x64, alpha 0.35 | 32x32, alpha 0.35 |
| search | 4,000 images (half held out), 3 epochs, PMPLCallback defaults | 256 images, 1 epoch |
| train | 20,000 images (10% held out), 5 epochs, Adam 2e-3, no augmentation | 2,048, 2 epochs |
| QAT | 1 epoch on 10,000 of them, Adam 1e-4 | 16 steps |
| test | 2,000 images | 500 images |
| time on 2 CPU cores | about 5 minutes (measured 4m59s) | about 2 minutes |

The search uses PMPLCallback's defaults (evidence rule, undecided points ->
no enhancer, architecture learning rate sized to the run). At this budget few or no
points clear the evidence bar: the demo says how many did, and the searched
architecture has no enhancer where the search could not tell (docs/search.md).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time

from keras_metapool.cli import console, files
from keras_metapool.cli.evaluate_cmd import evaluate
from keras_metapool.cli.export_cmd import export
from keras_metapool.cli.qat_cmd import qat
from keras_metapool.cli.search_cmd import search
from keras_metapool.cli.train_cmd import train

#: Demo values of the flags the user does not give.
DEMO_DEFAULTS = dict(
    dataset="fashion_mnist",
    image_size=64,
    alpha=0.35,
    batch_size=64,
    train_limit=20_000,
    test_limit=2_000,
    epochs=5,
    learning_rate=2e-3,
    warmup_epochs=0.25,
    augment="none",
    qat_epochs=1,
    calibration_samples=256,
    output_dir=os.path.join("runs", "demo"),
)
QUICK_DEFAULTS = dict(
    DEMO_DEFAULTS,
    image_size=32,
    batch_size=32,
    train_limit=2048,
    test_limit=500,
    epochs=2,
    learning_rate=5e-3,
    warmup_epochs=0.0,
    calibration_samples=64,
    output_dir=os.path.join("runs", "demo_quick"),
)
#: Per-stage settings on top of the options: the search uses a smaller share
#: of the images (a search step costs about 3.5 plain steps); the quick demo's
#: search runs eagerly (a few steps: tracing the search step would take
#: longer than running it) and its QAT takes a few steps.
STAGE_SETTINGS = {
    False: {"search": dict(train_limit=4_000, epochs=3), "qat": dict(train_limit=10_000)},
    True: {
        "search": dict(train_limit=256, epochs=1, run_eagerly=True),
        "qat": dict(steps_per_epoch=16),
    },
}
STAGES = ("search", "train", "qat", "export", "evaluate")


def demo_defaults(quick):
    """The demo's flag defaults (``--quick`` or not)."""
    return dict(QUICK_DEFAULTS if quick else DEMO_DEFAULTS)


def _architecture_text(spec):
    if not spec.points:
        return "no enhancer anywhere (plain MobileNetV2)"
    counts = collections.Counter(
        "none" if op == "identity" else (op if isinstance(op, str) else "+".join(op))
        for op in spec.ops
    )
    return ", ".join(f"{op} x{count}" for op, count in counts.most_common())


#: What the five stages returned, and the seconds each took.
StageResults = collections.namedtuple(
    "StageResults", "found trained quantized exported evaluation seconds total"
)


def demo(options, strategy):
    """Runs the five stages, each in ``output_dir/<stage>``, and prints the table.

    Args:
        options: ``keras_metapool.cli.Options`` with the demo's defaults
            filled in (``Options.from_flags(defaults=demo_defaults(quick))``).
        strategy: The ``tf.distribute.Strategy`` of the training stages.

    Returns:
        ``{"rows": [(metric, value)], "summary": {...}}``, also written to
        ``demo_summary.md`` and ``demo_summary.json``.
    """
    os.makedirs(options.output_dir, exist_ok=True)
    results = _run_stages(options, strategy)
    rows, summary, artifacts = _report(options, results)
    root = options.output_dir
    table = [summary["title"], ""] + console.markdown_table(("", "value"), rows)
    files.write_text(os.path.join(root, "demo_summary.md"), "\n".join(table) + "\n")
    files.write_json(os.path.join(root, "demo_summary.json"), summary)
    width = max(len(label) for label, _ in artifacts)
    console.say("\nArtifacts:")
    for label, path in artifacts:
        console.say(f"  {label:<{width}}  {path}")
    console.say(f"  {'this table':<{width}}  {os.path.join(root, 'demo_summary.md')} (and .json)")
    console.say("\n" + "\n".join(table))
    return {"rows": rows, "summary": summary}


def _run_stages(options, strategy):
    """search -> train -> qat -> export -> evaluate, each in its own folder."""
    root = options.output_dir
    settings = STAGE_SETTINGS[options.quick]
    seconds = {}
    start_all = time.perf_counter()

    def stage(number, name, text, **values):
        console.say(f"\n[{number}/{len(STAGES)}] {name}: {text}")
        values = dict(settings.get(name, {}), **values)
        if "train_limit" in values and options.train_limit:
            values["train_limit"] = min(values["train_limit"], options.train_limit)
        return dataclasses.replace(options, output_dir=os.path.join(root, name), **values)

    def timed(name, function, *args):
        start = time.perf_counter()
        result = function(*args)
        seconds[name] = time.perf_counter() - start
        return result

    found = timed("search", search, stage(1, "search", "PMPL search on a supernet"), strategy)
    train_options = stage(
        2, "train", "the searched architecture, from scratch", architecture=found.architecture_path
    )
    trained = timed("train", train, train_options, strategy)
    qat_options = stage(3, "qat", "quantization-aware fine-tuning", model=trained.model_path)
    quantized = timed("qat", qat, qat_options, strategy)
    export_options = stage(
        4, "export", "Edge TPU-ready int8 TFLite", model=quantized.model_path, formats=("edgetpu",)
    )
    exported = timed("export", export, export_options)
    evaluate_options = stage(
        5, "evaluate", "the int8 TFLite model on the test images", model=exported.paths["edgetpu"]
    )
    evaluation = timed("evaluate", evaluate, evaluate_options)
    total = time.perf_counter() - start_all
    return StageResults(found, trained, quantized, exported, evaluation, seconds, total)


def _report(options, results):
    """``(rows, summary, artifacts)`` of the demo's table and summary files."""
    found, trained, quantized, exported, evaluation, seconds, total = results
    tflite_path = exported.paths["edgetpu"]
    report = exported.edgetpu_reports["edgetpu"]
    size = os.path.getsize(tflite_path)
    mapped = (
        f"{report.num_tpu_ops}/{report.num_ops} ({100 * report.mapped_fraction:.0f}%), "
        f"{report.tpu_subgraphs} subgraph{'s' if report.tpu_subgraphs != 1 else ''}"
    )
    rows = [
        ("architecture (searched)", _architecture_text(found.architecture)),
        (
            "points decided by evidence",
            f"{found.decided_points}/{found.total_points} (the others: no enhancer)",
        ),
        ("float accuracy (Keras)", f"{trained.test_accuracy:.4f}"),
        ("QAT accuracy (Keras)", f"{quantized.qat_accuracy:.4f}"),
        ("int8 accuracy (Edge TPU .tflite, LiteRT)", f"{evaluation.accuracy:.4f}"),
        (".tflite size", console.size_text(size)),
        (
            f"int8 latency (median, batch 1, {options.num_threads} thread, this CPU)",
            f"{evaluation.latency_ms:.3f} ms",
        ),
        (
            "Edge TPU mapped ops (compiler)"
            if report.source == "edgetpu_compiler"
            else "Edge TPU mapped ops (predicted from the op rules)",
            mapped,
        ),
        ("wall time", f"{total:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
         + ")"),
    ]  # fmt: skip
    title = (
        f"keras-metapool demo{' --quick' if options.quick else ''}: {options.dataset}, "
        f"{options.image_size}x{options.image_size}, alpha {options.alpha}, "
        f"{evaluation.num_examples} test images"
    )
    artifacts = [
        ("architecture", found.architecture_path),
        ("search plot", found.plot_path),
        ("search summary", found.summary_path),
        ("float model", trained.model_path),
        ("best checkpoint", trained.checkpoint_path),
        ("QAT model", quantized.model_path),
        ("Edge TPU int8 TFLite", tflite_path),
        ("Edge TPU report", exported.report_path),
        ("confusion matrix", evaluation.plot_path),
        ("metrics", evaluation.metrics_path),
        ("TensorBoard logs", os.path.join(options.output_dir, "*", "logs")),
    ]
    summary = {
        "title": title,
        "architecture": found.architecture.to_dict(),
        "decided_points": found.decided_points,
        "searched_points": found.total_points,
        "float_accuracy": trained.test_accuracy,
        "qat_accuracy": quantized.qat_accuracy,
        "int8_accuracy": evaluation.accuracy,
        "tflite_bytes": size,
        "int8_latency_ms": evaluation.latency_ms,
        "edgetpu_ops": report.num_ops,
        "edgetpu_mapped_ops": report.num_tpu_ops,
        "edgetpu_subgraphs": report.tpu_subgraphs,
        "edgetpu_all_mapped": report.all_mapped,
        "seconds": dict(seconds, total=total),
        "artifacts": dict(artifacts),
    }
    return rows, summary, artifacts

"""``keras-metapool search``: a PMPL search, from data to ``architecture.json``."""

from __future__ import annotations

import dataclasses
import os

from keras_metapool.cli import console, files, training
from keras_metapool.search import FixedAtEndWarning, PMPLCallback, plot_search

#: What search_summary.txt's columns mean (written under the table).
SUMMARY_COLUMNS = (
    "Columns: block = MobileNetV2 block index; point = the searched layer; state = decided "
    "(by evidence, or the margin) / defaulted (undecided at the end, given the --undecided "
    "rule) / searching;",
    "op(s) = the fixed op(s), or the current best; cand. = the point's candidates after "
    "pruning pooling windows larger than its feature map; p = the probability of the op(s) "
    "(softmax of the point's search logits);",
    "evidence = z in standard errors of the deciding slope comparison (evidence rule) or the "
    "top-1 minus top-2 margin (margin rule), at the decision, else now; bar = what the "
    "evidence had to reach (the evidence rule's time-uniform z bar at the point's step count, "
    "or --threshold); receptive field = what "
    "the op(s) add; decided at step = the training step of the decision.",
)


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What ``search`` wrote and found.

    Attributes:
        architecture: The searched ``ArchitectureSpec``.
        architecture_path: ``architecture.json`` (``ArchitectureSpec.load``).
        plot_path: ``search.png``: probability trajectories (``plot_search``).
        summary_path: ``search_summary.txt``: the per-block table.
        history_path: ``search_history.csv``: per-epoch logs, PMPL's included.
        train_accuracy: Supernet training accuracy of the last epoch.
        seconds: Wall time of the search (``fit``).
        decided_points: Points decided by evidence (or the margin).
        total_points: Points searched.
    """

    architecture: object
    architecture_path: str
    plot_path: str
    summary_path: str
    history_path: str
    train_accuracy: float
    seconds: float
    decided_points: int = 0
    total_points: int = 0


def search(options, strategy):
    """Runs PMPL on a ``MobileNetV2MP(meta_pooling="search")`` supernet.

    The training split (first ``train_limit`` images) is dealt into a weight
    part and a held-out part for the architecture steps
    (``load_dataset(search_part=...)``, ``search_fraction`` held out), unless
    ``one_level``: then the search logits learn on the training batches, from the weight
    step's own backward pass. The weights train with ``--optimizer`` on a
    warm-up + cosine schedule; ``PMPLCallback`` (its options: ``decision``,
    ``error_rate``, ``undecided``, ``warmup``, ``arch_learning_rate``,
    ``threshold``, ``late_stage``) decides the points. Interrupted, the same
    command resumes from ``OUTPUT_DIR/backup``.

    Args:
        options: ``keras_metapool.cli.Options``.
        strategy: The ``tf.distribute.Strategy`` to build the supernet under.

    Returns:
        A ``SearchResult``.
    """
    with files.artifact_folder(options, strategy) as folder:
        weights_data, arch_data, info, held_out = _search_data(options)
        steps = training.steps_per_epoch(options, info.num_examples)
        settings = _settings_text(options)
        console.say(
            f"search: supernet MobileNetV2MP alpha {options.alpha}, "
            f"{options.image_size}x{options.image_size}, {info.num_classes} classes, "
            f"{options.placement} placement; {info.num_examples} images for the weights, "
            f"{held_out}; {options.epochs} epochs of {steps} steps; {settings}."
        )
        supernet = training.build_for_training(
            options,
            strategy,
            "search",
            info.num_classes,
            steps,
            placement=options.placement,
            search_candidates=list(options.candidates) if options.candidates else None,
        )
        rate = options.arch_learning_rate
        pmpl = PMPLCallback(
            arch_data=arch_data,
            decision=options.decision,
            undecided=options.undecided,
            warmup=options.warmup,
            learning_rate=rate if rate == "auto" else float(rate),
            threshold=options.threshold,
            error_rate=options.error_rate,
            late_stage=options.late_stage,
        )
        callbacks, _ = training.training_callbacks(
            options,
            folder,
            "search_history.csv",
            options.output_path("backup"),
            options.epochs,
            extra=[pmpl],  # first: its logs reach the CSV and TensorBoard
        )
        # NOTE: the search writes an architecture, which `train` trains from scratch:
        # the supernet's weights (what FixedAtEndWarning is about) are not an output.
        with console.package_warnings_as_lines("search", skip=(FixedAtEndWarning,)):
            history, seconds = training.fit_timed(
                supernet, weights_data, num_classes=info.num_classes, epochs=options.epochs,
                steps=steps, callbacks=callbacks,
                backup_dir=options.output_path("backup"), strategy=strategy,
            )  # fmt: skip

        spec = pmpl.architecture
        lines = _write_outputs(
            folder,
            options,
            pmpl,
            f"{info.num_examples} images for the weights, {held_out}",
            settings,
        )
        console.say("\n".join(lines))
        accuracy = float(history.history.get(training.ACCURACY, [float("nan")])[-1])
        console.say(
            f"search: done in {seconds:.0f} s (training accuracy {accuracy:.4f}).\n"
            f"  architecture  {options.output_path('architecture.json')}\n"
            f"  plot          {options.output_path('search.png')}\n"
            f"  summary       {options.output_path('search_summary.txt')}\n"
            f"  history       {options.output_path('search_history.csv')}\n"
            f"  TensorBoard   {options.output_path('logs')}"
        )
        return SearchResult(
            architecture=spec,
            architecture_path=options.output_path("architecture.json"),
            plot_path=options.output_path("search.png"),
            summary_path=options.output_path("search_summary.txt"),
            history_path=options.output_path("search_history.csv"),
            train_accuracy=accuracy,
            seconds=seconds,
            decided_points=pmpl.decided_points,
            total_points=len(pmpl.points),
        )


def _search_data(options):
    """``(weights_data, arch_data, info, held_out text)``; no arch data one-level."""
    if options.one_level:
        weights_data, info = training.load_training_stream(options, limit=options.train_limit)
        return weights_data, None, info, "none held out (one-level)"
    parts = dict(limit=options.train_limit, search_fraction=options.search_fraction)
    weights_data, info = training.load_training_stream(options, search_part="weights", **parts)
    arch_data, arch_info = training.load_split(
        options, "train", training=True, search_part="arch", **parts
    )
    arch_data = training.one_hot_labels(arch_data, info.num_classes)
    held_out = f"{arch_info.num_examples} held out for the architecture steps"
    return weights_data, arch_data, info, held_out


def _settings_text(options):
    """The search's rule and schedule, as the log and the summary state them."""
    return (
        f"{options.decision} rule"
        + (f" (error rate {options.error_rate:g})" if options.decision == "evidence" else "")
        + f", undecided -> {options.undecided}, warm-up {options.warmup:g}, architecture lr "
        f"{options.arch_learning_rate}, late stage at {options.late_stage:.2f}"
    )


def _write_outputs(folder, options, pmpl, data_text, settings):
    """Writes architecture.json, search.png and search_summary.txt; the summary's lines."""
    spec = pmpl.architecture
    with files.atomic_output(os.path.join(folder, "architecture.json")) as tmp:
        spec.save(tmp)
    # The CSV holds every epoch, also those before a resume (the
    # callback's own record: only those of this process).
    plot_source = files.read_csv_columns(os.path.join(folder, "search_history.csv"))
    with files.atomic_output(os.path.join(folder, "search.png")) as tmp:
        plot_search(plot_source, tmp, title=f"PMPL search ({options.dataset})")
    budget = pmpl.budget
    lines = [
        f"PMPL search on {options.dataset}: MobileNetV2MP alpha {options.alpha}, "
        f"{options.image_size}x{options.image_size}, {options.placement} placement, "
        f"{options.epochs} epochs, {data_text}.",
        f"Settings: {settings}; {budget.get('arch_steps')} architecture steps after "
        f"{budget.get('warmup_steps')} warm-up steps, architecture learning rate "
        f"{budget.get('learning_rate', float('nan')):.3g}.",
        "",
    ]
    pmpl.summary(print_fn=lines.append)
    lines += ["", *SUMMARY_COLUMNS]
    lines += ["", f"Architecture: {spec!r}"]
    files.write_text(os.path.join(folder, "search_summary.txt"), "\n".join(lines) + "\n")
    return lines

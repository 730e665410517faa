"""The study's program: run every pending task of the plan, then write the report."""

import json
import logging as std_logging
import os
import re
import sys
import time

from absl import app, flags, logging

from keras_metapool._command_line import STUDY_PROGRAM as PROGRAM
from keras_metapool._command_line import one_line, write_error
from keras_metapool.study.estimate import Predictor, eta_text, format_duration, run_estimate
from keras_metapool.study.machine import load_average, machine_description
from keras_metapool.study.plan import (
    FLAGS,
    PER_SEED_VARIANTS,
    TIMED_WITH_SEARCH,
    Task,
    apply_quick_defaults,
    check_output_dir,
    parse_plan_flags,
    plan_tasks,
    read_result,
    result_path,
    search_seed,
    settings,
    write_json,
)
from keras_metapool.study.report import summary_line, write_report
from keras_metapool.study.runs import (
    _CACHE,
    dataset_info,
    inherited_child,
    latency_coverage,
    reused_result,
    run_latency,
    run_random_search,
    run_search,
    run_train,
    same_training_as,
    variant_architecture,
    variant_arguments,
)

_HELP_ARGS = ("-h", "--help", "-?", "--helpshort", "--helpfull")


class _WithoutRetracingNotes(std_logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" notes: a study builds many
    models on purpose, so each new model's traces are expected, not a problem to fix."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


_RETRACING_FILTER = _WithoutRetracingNotes()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    import tensorflow as tf

    tf.get_logger().addFilter(_RETRACING_FILTER)  # once: the same filter object
    _CACHE.clear()  # a second study in the same process may use other data
    apply_quick_defaults()
    configs, seeds, variants = parse_plan_flags()
    tasks = plan_tasks(configs, seeds, variants)
    machine = machine_description()
    info = dataset_info()  # a dataset that is not there fails here, before any folder
    check_output_dir()  # another study's folder fails here, before any run
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    print(
        f"Study: {len(variants)} variants x {len(configs)} config(s) x {len(seeds)} seed(s) on "
        f"{FLAGS.dataset} ({info.num_examples} training images, {info.num_classes} classes); "
        f"{os.cpu_count()} CPUs ({machine['cpu_model']}), load average {machine['load_average']}.",
        flush=True,
    )
    if FLAGS.estimate:
        run_estimate(configs, seeds, variants, tasks)
        return
    timing = _saved_timing()
    predictor = Predictor(timing)
    pending = _pending(tasks, variants, seeds)
    if FLAGS.report_only:
        print(
            f"{len(tasks)} runs, {len(tasks) - len(pending)} done; reporting those (--report_only)."
        )
        pending = []
    else:
        print(
            f"{len(tasks)} runs, {len(tasks) - len(pending)} already done (skipped); "
            f"{eta_text(predictor, pending)}"
            + ("" if timing else " (no timing.json: ETA from the runs as they finish)"),
            flush=True,
        )
    start = time.perf_counter()
    for number, task in enumerate(pending, 1):
        if task.kind != "latency" and read_result(task.run_id) is not None:
            print(f"[{number}/{len(pending)}] {task.label}: done meanwhile (skipped)", flush=True)
            continue  # another study process on this folder made it
        task_start = time.perf_counter()
        result = _run_task(task, variants, seeds, info.num_classes)
        seconds = time.perf_counter() - task_start
        write_json(result_path(task.run_id), result)
        if "same_training_as" not in result:  # a reused training took no time
            predictor.add(task, seconds)
        print(
            f"[{number}/{len(pending)}] {task.label}: {summary_line(task, result)} "
            f"({format_duration(seconds)}) | elapsed {format_duration(time.perf_counter() - start)}"
            f", {eta_text(predictor, pending[number:])}",
            flush=True,
        )
    report = write_report(configs, seeds, variants, tasks, machine)
    if report is None:
        print("No runs to report yet.")
        return
    print(f"\nWrote {report} and its plots (total {format_duration(time.perf_counter() - start)}).")
    with open(report, encoding="utf-8") as f:
        print(f.read())


def _saved_timing():
    """The output folder's timing.json, if it was made for these settings (else None)."""
    timing_path = os.path.join(FLAGS.output_dir, "timing.json")
    if not os.path.exists(timing_path):
        return None
    with open(timing_path, encoding="utf-8") as f:
        timing = json.load(f)
    if timing.get("settings") != json.loads(json.dumps(settings())):
        return None  # made for other settings: its predictions do not apply
    return timing


def _run_task(task, variants, seeds, num_classes):
    """Runs one task; its result with the run's identity, settings, times and load."""
    load_before = load_average()
    if task.kind == "train":
        architecture, search_seconds, model = None, 0.0, None
        if task.variant in PER_SEED_VARIANTS:
            architecture = variant_architecture(task.variant, task.config, task.seed, seeds)
        if task.variant in TIMED_WITH_SEARCH:
            kind = TIMED_WITH_SEARCH[task.variant]
            search_task = Task(kind, task.config, seed=search_seed(task.seed, seeds))
            search_seconds = read_result(search_task.run_id)["search_seconds"]
        if task.variant == "searched_inherited":
            # A resumed study searches again here: the search's time is
            # its own task's (search_seconds), not counted a second time.
            model, _ = inherited_child(task, seeds)
        # The parameter match (cached after its first run) is not training.
        variant_arguments(task.variant, task.config, num_classes, architecture)
    # The task's own work: the wall and CPU time the report's columns show.
    work_start, cpu_start = time.perf_counter(), time.process_time()
    if task.kind == "search":
        result = run_search(task)
    elif task.kind == "random_search":
        result = run_random_search(task)
    elif task.kind == "train":
        baseline = same_training_as(task, architecture, model)
        if baseline is not None:
            result = reused_result(baseline, architecture, search_seconds)
        else:
            result = run_train(task, architecture, search_seconds, model=model)
    else:
        result = run_latency(task, variants, seeds)
    work_seconds = time.perf_counter() - work_start
    result.update(
        run_id=task.run_id,
        kind=task.kind,
        variant=task.variant,
        alpha=task.config.alpha,
        image_size=task.config.size,
        seed=task.seed,
        dataset=FLAGS.dataset,
        settings=settings(),
        wall_seconds=work_seconds,
        # CPU time of all threads: a load-independent measure of the work.
        cpu_seconds=time.process_time() - cpu_start,
        load_average_before=load_before,
        load_average_after=load_average(),
        finished=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    return result


def _pending(tasks, variants, seeds):
    """The tasks to run, in order: those without a result this study can use.

    A latency run times the architectures of its configuration's runs: it
    runs again when any of them runs (a search done again may find another
    architecture), or when it was made for other variants or seeds (a study
    resumed with more of them), so the table never shows the latency of
    models other than those it reports.
    """
    missing = {t for t in tasks if t.kind != "latency" and read_result(t.run_id) is None}
    touched = {t.config for t in missing}
    for task in tasks:
        if task.kind == "latency":
            result = read_result(task.run_id)
            stale = result is None or result.get("covers") != latency_coverage(variants, seeds)
            if stale or task.config in touched:
                missing.add(task)
    return [t for t in tasks if t in missing]


def _flags_help():
    """absl's help of the study's flags, titled for the user instead of by Python module."""

    def title(header):  # a module's name, alone on a line
        module = header.group(1)
        return "Study flags:" if module.startswith("keras_metapool") else "Flag files (absl):"

    return re.sub(r"^([A-Za-z_][\w.]*):$", title, FLAGS.get_help(), flags=re.MULTILINE)


def run(argv=None):
    """Parses the study's flags from ``argv`` (default ``sys.argv``) and runs it.

    ``keras-metapool study``, ``python -m keras_metapool.study`` and
    ``python benchmarks/study.py`` call this. A flag error or a bad plan
    (an unknown variant, settings that do not match an existing output
    folder) ends with one line on stderr and status 2 or 1.

    Returns:
        The exit status (0 on success).
    """
    argv = list(sys.argv if argv is None else argv)
    if any(argument in _HELP_ARGS for argument in argv[1:]):
        sys.stdout.write(
            f"usage: {PROGRAM} [--flag=value ...]\n\n"
            "Does Meta-Pooling help? Trains MobileNetV2, MobileNetV2MP and its baselines on the\n"
            "same data with the same budget and seeds, and writes study.md with the verdict.\n\n"
            + _flags_help()
            + "\n"
        )
        return 0
    try:
        # Flags left out of argv take their defaults, not a previous run's values.
        FLAGS.unparse_flags()
        rest = FLAGS(argv)
        main(rest)
    except (flags.Error, app.UsageError) as error:
        write_error(PROGRAM, f"{one_line(error)} (see {PROGRAM} --help)")
        return 2
    except (ValueError, OSError) as error:
        write_error(PROGRAM, one_line(error))
        return 1
    return 0

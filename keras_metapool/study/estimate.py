"""``--estimate``: every model of the plan timed, the study's ETA predicted."""

import math
import os
import tempfile
import time

import numpy as np

import keras_metapool as km
from keras_metapool import keras
from keras_metapool.study.machine import (
    load_average,
    machine_description,
    settle_batch_norms,
)
from keras_metapool.study.plan import (
    BN_MOMENTUM,
    EVAL_BATCH_SIZE,
    FLAGS,
    SEARCH_VARIANTS,
    Config,
    Task,
    search_epochs,
    settings,
    write_json,
)
from keras_metapool.study.runs import (
    PER_SEED_VARIANTS,
    build_model,
    calibration_images,
    compile_for,
    dataset_info,
    test_data,
    training_data,
    variant_arguments,
)


def format_duration(seconds):
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Predictor:
    """Predicted seconds per task: ``timing.json`` if present, else times seen so far.

    With ``timing.json`` (from ``--estimate`` with the same settings) every
    task has a prediction from the start, scaled by how the runs finished so
    far compare with it (the machine's load changes). Without it, a task is
    predicted by the mean time of finished tasks of the same kind, variant
    and config, else of the same kind and config, else of the same kind.
    """

    def __init__(self, timing=None):
        self.timing = timing
        self.done = []  # (task, seconds)

    def a_priori(self, task):
        if self.timing is None:
            return None
        return predict_from_timing(task, self.timing)

    def add(self, task, seconds):
        self.done.append((task, seconds))

    def predict(self, task):
        prior = self.a_priori(task)
        if prior is not None:
            pairs = [(self.a_priori(t), s) for t, s in self.done]
            pairs = [(p, s) for p, s in pairs if p]
            scale = sum(s for _, s in pairs) / sum(p for p, _ in pairs) if pairs else 1.0
            return prior * scale
        for same in (
            lambda t: (t.kind, t.variant, t.config) == (task.kind, task.variant, task.config),
            lambda t: (t.kind, t.config) == (task.kind, task.config),
            lambda t: t.kind == task.kind,
        ):
            times = [s for t, s in self.done if same(t)]
            if times:
                return float(np.mean(times))
        return None

    def eta(self, tasks):
        predictions = [self.predict(t) for t in tasks]
        known = sum(p for p in predictions if p is not None)
        return known, sum(p is None for p in predictions)


def eta_text(predictor, remaining):
    seconds, unknown = predictor.eta(remaining)
    if not remaining:
        return "done"
    text = f"ETA {format_duration(seconds)}"
    if unknown:
        text += f" + {unknown} run(s) of kinds not timed yet"
    return text


# ------------------------------------------------------------------ estimate


class StepTimer(keras.callbacks.Callback):
    """Wall and process CPU time of every training step."""

    def __init__(self):
        super().__init__()
        self.wall, self.cpu = [], []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, batch, logs=None):
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


def stand_in_architecture():
    """The searched variant's cost before any search ran: a pair at every point.

    A short search leaves most points to the late stage, which fixes them to
    their top two ops; ``ssp + avg3`` everywhere is the costly end of that.
    """
    return km.ArchitectureSpec([("ssp", "avg3")] * 17).to_dict()


def measure_cost(config, variant, classes, convert=False):
    """Build, first step, steady step (wall, CPU), evaluation and conversion times."""
    steps = FLAGS.timing_steps + 2
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    callbacks = [StepTimer()]
    if variant == "search":
        model = build_model(config, classes, "search")
        arch, _ = training_data(config, 1, repeat=True, limit=FLAGS.batch_size * 4)
        callbacks.insert(0, km.PMPLCallback(arch_data=arch, late_stage=1.0, verbose=0))
    else:
        architecture = stand_in_architecture() if variant in PER_SEED_VARIANTS else None
        meta_pooling, alpha, head = variant_arguments(variant, config, classes, architecture)
        model = build_model(config, classes, meta_pooling, alpha=alpha, head=head)
    compile_for(model, steps)
    build_seconds = time.perf_counter() - start
    train, _ = training_data(config, 0, repeat=True, limit=FLAGS.batch_size * 4)
    model.fit(train, epochs=1, steps_per_epoch=steps, callbacks=callbacks, verbose=0)
    timer = callbacks[-1]
    cost = {
        "build_s": build_seconds,
        "first_step_s": timer.wall[0],
        "first_step_cpu_s": timer.cpu[0],
        "step_s": float(np.median(timer.wall[2:])),
        "step_cpu_s": float(np.mean(timer.cpu[2:])),
    }
    if variant != "search":
        test, _ = test_data(config, limit=EVAL_BATCH_SIZE * 2)
        start = time.perf_counter()
        model.evaluate(test, verbose=0)
        cost["eval_first_s"] = time.perf_counter() - start
        start = time.perf_counter()
        model.evaluate(test, verbose=0)
        cost["eval_batch_s"] = (time.perf_counter() - start) / 2
    if convert:
        calibration = calibration_images(config.size)
        settle_batch_norms(model, calibration[:32], BN_MOMENTUM)
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            for mode in ("float", "int8"):
                path = os.path.join(folder, f"{mode}.tflite")
                km.export.to_tflite(model, path, mode, calibration, strict=False)
            cost["convert_s"] = time.perf_counter() - start
    return cost


def task_steps(task):
    info = dataset_info()
    if task.kind == "search":
        weights = info.num_examples - math.floor(info.num_examples * FLAGS.search_fraction)
        return math.ceil(weights / FLAGS.batch_size) * search_epochs()
    return math.ceil(info.num_examples / FLAGS.batch_size) * FLAGS.epochs


def test_batches():
    _, info = test_data(Config(32, 1.0))
    return math.ceil(info.num_examples / EVAL_BATCH_SIZE)


def predict_from_timing(task, timing, cpu=False):
    """Seconds ``task`` should take by ``timing.json``'s costs.

    ``cpu=True``: steady steps at their CPU time over the cores TensorFlow can
    use (the idle-machine floor); the first step (mostly single-threaded
    tracing) at its CPU time.
    """
    costs = timing["costs"].get(task.config.key)
    if costs is None:
        return None
    cores = min(2, os.cpu_count() or 1)

    def steps_cost(cost, steps):
        if cpu:
            return cost["first_step_cpu_s"] + (steps - 1) * cost["step_cpu_s"] / cores
        return cost["first_step_s"] + (steps - 1) * cost["step_s"]

    overhead = timing.get("task_overhead_s", 2.0)
    if task.kind == "random_search":  # it spends what its search spent
        return predict_from_timing(Task("search", task.config, seed=task.seed), timing, cpu)
    if task.kind == "search":
        cost = costs["search"]
        return overhead + cost["build_s"] + steps_cost(cost, timing["steps"]["search"])
    if task.kind == "train":
        cost = costs[task.variant]
        evaluation = cost["eval_first_s"] + (timing["test_batches"] - 1) * cost["eval_batch_s"]
        return overhead + cost["build_s"] + steps_cost(cost, timing["steps"]["train"]) + evaluation
    converts = [c["convert_s"] for c in costs.values() if "convert_s" in c]
    builds = [c["build_s"] for c in costs.values()]
    models = len(timing["variants"]) + (1 if "mobilenet_v2" not in timing["variants"] else 0)
    invoke = 2 * FLAGS.latency_runs * (models + 1) * 0.002  # ~2 ms an invoke at most
    return models * (float(np.mean(converts)) + float(np.mean(builds))) + invoke


def run_estimate(configs, seeds, variants, tasks):
    """Times every model of the plan; writes timing.json; prints the ETA."""
    info = dataset_info()
    load_before = load_average()
    print(
        f"Timing {len(variants)} variants (+ the search supernet) at {len(configs)} config(s): "
        f"{FLAGS.timing_steps} steady steps each. Load average before: {load_before} on "
        f"{os.cpu_count()} CPUs.",
        flush=True,
    )
    start = time.perf_counter()
    costs = {}
    for config in configs:
        costs[config.key] = {}
        searching = set(SEARCH_VARIANTS) & set(variants)
        needed = list(variants) + (["search"] if searching else [])
        for variant in needed:
            convert = variant in ("mobilenet_v2", "mp_paper")
            cost = measure_cost(config, variant, info.num_classes, convert=convert)
            costs[config.key][variant] = cost
            print(
                f"  {config.title:<22} {variant:<14} build {cost['build_s']:5.1f} s, "
                f"first step {cost['first_step_s']:5.1f} s, step {1000 * cost['step_s']:6.0f} ms "
                f"(CPU {1000 * cost['step_cpu_s']:6.0f} ms)"
                + (f", convert {cost['convert_s']:.1f} s" if "convert_s" in cost else ""),
                flush=True,
            )
    timing = {
        "settings": settings(),
        "machine": machine_description(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "costs": costs,
        "variants": variants,
        "steps": {
            "train": task_steps(Task("train", configs[0], variants[0], seeds[0])),
            "search": task_steps(Task("search", configs[0], seed=seeds[0])),
        },
        "test_batches": test_batches(),
        "task_overhead_s": 2.0,
        "timing_seconds": time.perf_counter() - start,
    }
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    write_json(os.path.join(FLAGS.output_dir, "timing.json"), timing)
    wall = {t.run_id: predict_from_timing(t, timing) for t in tasks}
    cpu = {t.run_id: predict_from_timing(t, timing, cpu=True) for t in tasks}
    startup = 30.0  # imports, data, parameter matching
    matching = 20.0 * len({c.alpha for c in configs}) if "param_matched" in variants else 0.0
    print(
        f"\nPlan: {len(tasks)} runs; {timing['steps']['train']} training steps per model, "
        f"{timing['steps']['search']} search steps per search, {timing['test_batches']} test "
        f"batches of {EVAL_BATCH_SIZE}."
    )
    print("| run | predicted (wall, load now) | CPU-time floor (2 idle cores) |")
    print("|---|---:|---:|")
    for t in tasks:
        print(
            f"| {t.run_id} | {format_duration(wall[t.run_id])} | {format_duration(cpu[t.run_id])} |"
        )
    total_wall = sum(wall.values()) + startup + matching
    total_cpu = sum(cpu.values()) + startup + matching
    print(
        f"\nPredicted study: {format_duration(total_wall)} at the load measured now "
        f"(load average {load_before} -> {timing['load_average_after']} on {os.cpu_count()} "
        f"CPUs); {format_duration(total_cpu)} if every steady step got both cores to itself "
        f"(CPU time / {min(2, os.cpu_count() or 1)}: the floor on an idle machine). "
        f"Timing took {format_duration(timing['timing_seconds'])}; written to "
        f"{os.path.join(FLAGS.output_dir, 'timing.json')}."
    )
    return timing

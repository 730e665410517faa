"""The study's runs: data, models, the search, training and latency of each task."""

import json
import math
import os
import tempfile
import time
import warnings

import numpy as np
from absl import logging

import keras_metapool as km
from keras_metapool import keras
from keras_metapool.data import load_dataset
from keras_metapool.layers.candidate_ops import IDENTITY
from keras_metapool.models import count_macs, count_params
from keras_metapool.models.architecture import ABLATIONS, NUM_BLOCKS
from keras_metapool.study.machine import (
    interleaved_latency,
    settle_batch_norms,
)
from keras_metapool.study.plan import (
    BASELINE,
    BN_MOMENTUM,
    CALIBRATION_IMAGES,
    EVAL_BATCH_SIZE,
    FLAGS,
    PER_SEED_VARIANTS,
    Config,
    Task,
    read_result,
    result_path,
    search_epochs,
    search_seed,
    search_stage_seeds,
    settings,
    variant_seeds,
    write_json,
)

# ---------------------------------------------------------------------- data

_CACHE = {}


def dataset_info():
    """``DatasetInfo`` of the training split (classes, examples)."""
    if "info" not in _CACHE:
        _, _CACHE["info"] = load_dataset(
            FLAGS.dataset, FLAGS.train_split, image_size=32, batch_size=1,
            data_dir=FLAGS.data_dir, limit=FLAGS.train_images or None,
        )  # fmt: skip
    return _CACHE["info"]


def training_data(config, seed, search_part=None, repeat=False, limit=None):
    return load_dataset(
        FLAGS.dataset,
        FLAGS.train_split,
        image_size=config.size,
        batch_size=FLAGS.batch_size,
        training=True,
        augment=FLAGS.augment,
        seed=seed,
        data_dir=FLAGS.data_dir,
        limit=limit or FLAGS.train_images or None,
        search_part=search_part,
        search_fraction=FLAGS.search_fraction,
        repeat=repeat,
    )


def test_data(config, limit=None):
    return load_dataset(
        FLAGS.dataset,
        FLAGS.test_split,
        image_size=config.size,
        batch_size=EVAL_BATCH_SIZE,
        data_dir=FLAGS.data_dir,
        limit=limit or FLAGS.test_images or None,
    )


def calibration_images(size):
    """The first training images as a float array (int8 calibration, BN settling)."""
    key = ("calibration", size)
    if key not in _CACHE:
        data, _ = load_dataset(
            FLAGS.dataset, FLAGS.train_split, image_size=size, batch_size=CALIBRATION_IMAGES,
            data_dir=FLAGS.data_dir, limit=CALIBRATION_IMAGES,
        )  # fmt: skip
        _CACHE[key] = next(iter(data))[0].numpy()
    return _CACHE[key]


# -------------------------------------------------------------------- models


#: Variants built with MobileNetV2MP's other SSP initialisation.
OPEN_GATE_VARIANTS = ("mp_paper_open",)


def build_model(config, classes, meta_pooling, alpha=None, head="classic", enhancer_init="paper"):
    extra = {}
    if meta_pooling == "search" and FLAGS.search_candidates:
        extra["search_candidates"] = FLAGS.search_candidates
    return km.MobileNetV2MP(
        **extra,
        weights=None,
        alpha=config.alpha if alpha is None else alpha,
        input_shape=(config.size, config.size, 3),
        classes=classes,
        meta_pooling=meta_pooling,
        head=head,
        batch_norm_momentum=BN_MOMENTUM,
        enhancer_init=enhancer_init,
    )


#: Variants whose architecture differs per seed (a search's, or a random draw).


def random_architecture(config, seed, enhancers=None):
    """An architecture drawn from the search space: per point, one of its candidates.

    The space is the supernet's (``build_model(..., "search")``): the same
    placement and candidates, pooling windows larger than a point's map
    pruned; every candidate of a point equally likely. With ``enhancers``,
    that many points, drawn uniformly, get an op other than ``identity``
    (uniform among theirs) and the others none: the baseline for a searched
    architecture with as many enhancers.
    """
    from keras_metapool.models.mobilenet_v2_mp import block_map_sizes

    candidates = FLAGS.search_candidates or km.DEFAULT_CANDIDATES
    space = km.ArchitectureSpec.search(candidates=tuple(candidates))
    space = space.pruned_for_input(block_map_sizes(config.size, config.size))
    rng = np.random.default_rng(10_000 + seed)
    if enhancers is not None:
        points = [i for i, entry in enumerate(space.ops) if entry == "search"]
        chosen = set(rng.choice(points, size=min(enhancers, len(points)), replace=False).tolist())
        ops = []
        for i, entry in enumerate(space.ops):
            others = [op for op in space.candidates_at(i) if op != IDENTITY]
            if entry == "search" and i in chosen and others:
                ops.append(others[rng.integers(len(others))])
            else:
                ops.append(IDENTITY if entry == "search" else entry)
        name = f"random{seed}_{enhancers}enhancers"
        return km.ArchitectureSpec(
            ops, placement=space.placement, post_norm=space.post_norm, name=name
        ).to_dict()
    ops = [
        space.candidates_at(i)[rng.integers(len(space.candidates_at(i)))]
        if entry == "search"
        else entry
        for i, entry in enumerate(space.ops)
    ]
    return km.ArchitectureSpec(
        ops, placement=space.placement, post_norm=space.post_norm, name=f"random{seed}"
    ).to_dict()


def variant_architecture(variant, config, seed, seeds):
    """The architecture dict of a per-seed variant (its search's, or a random draw)."""
    if variant == "random_arch":
        return random_architecture(config, seed)
    if variant == "random_searched":
        found = read_result(Task("random_search", config, seed=search_seed(seed, seeds)).run_id)
        return found["architecture"]
    search = read_result(Task("search", config, seed=search_seed(seed, seeds)).run_id)
    if variant == "random_matched":
        found = km.ArchitectureSpec.from_dict(search["architecture"])
        return random_architecture(config, seed, enhancers=len(found.points))
    return search["architecture"]


def variant_arguments(variant, config, classes, architecture=None):
    """``(meta_pooling, alpha, head)`` of ``variant`` at ``config``."""
    if variant == "mobilenet_v2":
        return "none", config.alpha, "classic"
    if variant == "mp_paper":
        return "paper", config.alpha, "classic"
    if variant == "mp_paper_head":
        return "paper", config.alpha, "paper"
    if variant == "mp_paper_open":  # the same model, another init (OPEN_GATE_VARIANTS)
        return "paper", config.alpha, "classic"
    if variant == "se_paper":  # channel gating where the paper puts SSP
        ops = [IDENTITY if op == IDENTITY else "se" for op in km.ArchitectureSpec.paper().ops]
        return km.ArchitectureSpec(ops, post_norm=False, name="se_paper"), config.alpha, "classic"
    if variant == "ssp_all":
        spec = km.ArchitectureSpec(["ssp"] * NUM_BLOCKS, post_norm=False, name="ssp_all")
        return spec, config.alpha, "classic"
    if variant in ABLATIONS:
        return variant, config.alpha, "classic"  # MobileNetV2MP resolves the name
    if variant in PER_SEED_VARIANTS:
        if architecture is None:
            raise ValueError(f"The {variant} variant needs its architecture.")
        return km.ArchitectureSpec.from_dict(architecture), config.alpha, "classic"
    if variant == "param_matched":
        return "none", param_match(config.alpha, classes)["alpha"], "classic"
    raise ValueError(f"Unknown variant {variant!r}.")


def compile_for(model, steps):
    schedule = keras.optimizers.schedules.CosineDecay(FLAGS.learning_rate, max(1, steps))
    model.compile(
        keras.optimizers.Adam(schedule),
        keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )


def param_match(alpha, classes):
    """The alpha at which plain MobileNetV2 has MP paper's parameter count.

    Parameters are a step function of alpha (channels round to multiples of
    8), so the bisection looks for the closest count on either side of the
    target and stops once within a quarter of the tolerance. Cached in
    ``param_match_a<alpha>_c<classes>.json``.
    """
    run_id = f"param_match_a{alpha:g}_c{classes}"
    cached = read_result(run_id)
    if cached is not None:
        return cached
    config = Config(32, alpha)  # parameters do not depend on the input size

    def params(meta_pooling, a):
        keras.backend.clear_session()
        return count_params(build_model(config, classes, meta_pooling, alpha=a))

    target = params("paper", alpha)
    evaluated = {}

    def relative(a):
        if a not in evaluated:
            evaluated[a] = params("none", a) / target - 1.0
        return evaluated[a]

    low, high = alpha, alpha * 1.25
    while relative(high) < 0:
        low, high = high, high * 1.25
    for _ in range(40):
        best = min(evaluated, key=lambda a: abs(evaluated[a]))
        if abs(evaluated[best]) <= FLAGS.match_tolerance / 4 or high - low < 1e-5:
            break
        middle = (low + high) / 2
        if relative(middle) < 0:
            low = middle
        else:
            high = middle
    best = min(evaluated, key=lambda a: abs(evaluated[a]))
    result = {
        "settings": settings(),
        "alpha": best,
        "base_alpha": alpha,
        "classes": classes,
        "target_params": target,
        "params": round(target * (1 + evaluated[best])),
        "relative_difference": evaluated[best],
        "within_tolerance": abs(evaluated[best]) <= FLAGS.match_tolerance,
        "alphas_tried": {f"{a:.6f}": v for a, v in sorted(evaluated.items())},
    }
    if not result["within_tolerance"]:
        logging.warning(
            "param_matched at alpha %g: closest count %+.2f%% of MP paper's (tolerance %.1f%%)",
            alpha, 100 * evaluated[best], 100 * FLAGS.match_tolerance,
        )  # fmt: skip
    write_json(result_path(run_id), result)
    return result


# ---------------------------------------------------------------------- runs


def run_search(task):
    """PMPL on the training split: weights on one part, alpha on the held-out part."""
    config, seed = task.config, task.seed
    info = dataset_info()
    # NOTE: seeded before the data too: a tf.data shuffle takes the global seed
    # at hand when it is built, so every run of a seed shares its data order.
    keras.utils.set_random_seed(seed)
    weights_part, weights_info = training_data(config, seed, search_part="weights")
    arch_part, arch_info = training_data(config, seed + 1, search_part="arch")
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    supernet = build_model(config, info.num_classes, "search")
    steps = math.ceil(weights_info.num_examples / FLAGS.batch_size) * search_epochs()
    compile_for(supernet, steps)
    rate = FLAGS.arch_learning_rate
    pmpl = km.PMPLCallback(
        arch_data=arch_part, learning_rate=rate if rate == "auto" else float(rate), verbose=0
    )
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:  # recorded in the JSON, and reported
        warnings.simplefilter("always")
        history = supernet.fit(weights_part, epochs=search_epochs(), callbacks=[pmpl], verbose=0)
    seconds = time.perf_counter() - start
    # The inherited child starts from these weights (same process, next task).
    _CACHE[("supernet", task.config, task.seed)] = (supernet, seconds)
    rows = pmpl.summary_rows()
    return {
        "decided_by_evidence": pmpl.decided_points,
        "warnings": [
            {
                "category": f"{w.category.__module__}.{w.category.__qualname__}",
                "message": str(w.message),
            }
            for w in caught
        ],
        "budget": pmpl.budget,
        "architecture": pmpl.architecture.to_dict(),
        "search_seconds": seconds,
        "steps": steps,
        "weights_examples": weights_info.num_examples,
        "arch_examples": arch_info.num_examples,
        "final_train_accuracy": float(history.history["accuracy"][-1]),
        "points": [
            {
                "block": row["block"],
                "ops": list(row["ops"]),
                "state": row["state"],
                "evidence": row["evidence"],
                "candidates": row["candidates"],
                "probability": row["probability"],
                "fixed_at_step": row["fixed_at_step"],
            }
            for row in rows
        ],
    }


#: A random search stops after this many architectures even within its budget.
MAX_RANDOM_SEARCH_ARCHITECTURES = 100
#: The clock a random search spends its budget by: this process's CPU time, as
#: the study records every run's (``cpu_seconds``).
CPU_CLOCK = time.process_time


def run_random_search(task):
    """Random search at the PMPL search's compute (Li & Talwalkar, arXiv 1902.07638).

    Architectures drawn from the search space (as ``random_arch`` draws them,
    from their own seeds) each train ``--random_search_epochs`` on the
    search's weight part and are scored on its held-out part, until the
    process CPU time spent reaches the CPU time of the same seed's PMPL
    search (at least two architectures; the last one started finishes). The
    best held-out accuracy wins (the first drawn among equals); the
    ``random_searched`` variant trains it from scratch like ``searched``.
    The number of architectures depends on the machine's speed; the JSON
    records each one with its score and CPU time.
    """
    config, seed = task.config, task.seed
    search = Task("search", config, seed=seed)
    budget = (read_result(search.run_id) or {}).get("cpu_seconds")
    if budget is None:  # no search yet, or one written before the study recorded CPU time
        raise ValueError(
            f"{result_path(search.run_id)} is missing or has no cpu_seconds, the budget of "
            "the random search at its compute: delete the file if it is there and rerun the "
            "study, which runs that PMPL search before the random search."
        )
    info = dataset_info()
    keras.utils.set_random_seed(seed)  # before the data: see run_search
    weights_part, weights_info = training_data(config, seed, search_part="weights")
    held_out, held_out_info = load_dataset(
        FLAGS.dataset, FLAGS.train_split, image_size=config.size, batch_size=EVAL_BATCH_SIZE,
        data_dir=FLAGS.data_dir, limit=FLAGS.train_images or None, search_part="arch",
        search_fraction=FLAGS.search_fraction,
    )  # fmt: skip
    epochs = FLAGS.random_search_epochs
    steps = math.ceil(weights_info.num_examples / FLAGS.batch_size) * epochs
    tried, spent = [], 0.0
    start = time.perf_counter()
    while len(tried) < 2 or (spent < budget and len(tried) < MAX_RANDOM_SEARCH_ARCHITECTURES):
        cpu_start = CPU_CLOCK()
        # Seeds of their own: never one of random_arch's draws (10_000 + seed).
        architecture = random_architecture(config, (seed + 1) * 100_000 + len(tried))
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        model = build_model(config, info.num_classes, km.ArchitectureSpec.from_dict(architecture))
        compile_for(model, steps)
        model.fit(weights_part, epochs=epochs, verbose=0)
        _, accuracy = model.evaluate(held_out, verbose=0)
        seconds = CPU_CLOCK() - cpu_start
        spent += seconds
        tried.append(
            {"architecture": architecture, "held_out_accuracy": float(accuracy),
             "cpu_seconds": seconds}
        )  # fmt: skip
    best = max(range(len(tried)), key=lambda i: (tried[i]["held_out_accuracy"], -i))
    return {
        "architecture": tried[best]["architecture"],
        "best_index": best,
        "budget_cpu_seconds": budget,
        "spent_cpu_seconds": spent,
        "search_seconds": time.perf_counter() - start,
        "epochs_each": epochs,
        "weights_examples": weights_info.num_examples,
        "held_out_examples": held_out_info.num_examples,
        "tried": tried,
    }


def inherited_child(task, seeds):
    """The searched child with its supernet's weights (``to_fixed_model``).

    The supernet is the one the search task just trained in this process; on
    a resumed study it is searched again (deterministically), not stored.
    """
    key = ("supernet", task.config, search_seed(task.seed, seeds))
    if key not in _CACHE:
        run_search(Task("search", task.config, seed=key[2]))
    supernet, seconds = _CACHE[key]
    return km.to_fixed_model(supernet), seconds


def run_train(task, architecture=None, search_seconds=0.0, model=None):
    """Trains one variant (from scratch, or ``model`` as given) and evaluates it."""
    config, seed = task.config, task.seed
    info = dataset_info()
    keras.utils.set_random_seed(seed)  # before the data: see run_search
    train, train_info = training_data(config, seed)
    test, test_info = test_data(config)
    meta_pooling, alpha, head = variant_arguments(
        task.variant, config, info.num_classes, architecture
    )
    keras.utils.set_random_seed(seed)
    if model is None:
        keras.backend.clear_session()
        init = "open_gates" if task.variant in OPEN_GATE_VARIANTS else "paper"
        model = build_model(
            config, info.num_classes, meta_pooling, alpha=alpha, head=head, enhancer_init=init
        )
    steps = math.ceil(train_info.num_examples / FLAGS.batch_size) * FLAGS.epochs
    compile_for(model, steps)
    start = time.perf_counter()
    history = model.fit(train, epochs=FLAGS.epochs, verbose=0)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    test_loss, test_accuracy = model.evaluate(test, verbose=0)
    eval_seconds = time.perf_counter() - start
    return {
        "model_alpha": alpha,
        "head": head,
        "meta_pooling": meta_pooling if isinstance(meta_pooling, str) else meta_pooling.to_dict(),
        "params": count_params(model),
        "macs": count_macs(model),
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "train_accuracy": float(history.history["accuracy"][-1]),
        # Per epoch: where the learning curve stands at the end.
        "train_accuracy_per_epoch": [float(a) for a in history.history["accuracy"]],
        "train_loss_per_epoch": [float(a) for a in history.history["loss"]],
        "train_examples": train_info.num_examples,
        "test_examples": test_info.num_examples,
        "steps": steps,
        "train_seconds": train_seconds,
        "search_seconds": search_seconds,
        "time_to_model_seconds": train_seconds + search_seconds,
        "eval_seconds": eval_seconds,
    }


def same_training_as(task, architecture, model=None):
    """MobileNetV2's stored result of the task's seed, if the task would train it again.

    An architecture with no enhancer (a search that decided nothing, or a
    random draw matched to it) trained from scratch is MobileNetV2 built and
    trained with the same seed: the same initial weights and data order, so
    the same training step for step. None otherwise, or when that run is not
    stored yet.
    """
    if architecture is None or model is not None or task.variant == BASELINE:
        return None
    if km.ArchitectureSpec.from_dict(architecture).points:
        return None
    return read_result(Task("train", task.config, variant=BASELINE, seed=task.seed).run_id)


def reused_result(baseline, architecture, search_seconds=0.0):
    """A training result taken from ``baseline``'s run (``same_training_as``), said so.

    Everything ``run_train`` records comes from the baseline but the
    architecture and the search's time; the run's identity (``run_id``,
    ``variant``, times of this task) is the caller's to set, as for any run.
    """
    return dict(
        baseline,
        meta_pooling=km.ArchitectureSpec.from_dict(architecture).to_dict(),
        same_training_as=baseline["run_id"],
        search_seconds=search_seconds,
        time_to_model_seconds=baseline["train_seconds"] + search_seconds,
    )


def latency_models(config, variants, seeds):
    """``[(key, meta_pooling, alpha, head)]`` of the latency run; MobileNetV2 first."""
    classes = dataset_info().num_classes
    models = [(BASELINE, "none", config.alpha, "classic")]
    by_seed = {}
    keys = {}  # one model per distinct architecture
    for variant in variants:
        if variant == BASELINE:
            continue
        if variant in PER_SEED_VARIANTS:
            for seed in variant_seeds(variant, seeds):
                architecture = variant_architecture(variant, config, seed, seeds)
                text = json.dumps(architecture, sort_keys=True)
                if text not in keys:
                    keys[text] = f"{variant}/seed{seed}"
                    spec = km.ArchitectureSpec.from_dict(architecture)
                    models.append((keys[text], spec, config.alpha, "classic"))
                by_seed.setdefault(variant, {})[str(seed)] = keys[text]
            continue
        meta_pooling, alpha, head = variant_arguments(variant, config, classes)
        models.append((variant, meta_pooling, alpha, head))
    return models, by_seed


def latency_coverage(variants, seeds):
    """What a latency run timed: the architectures of these variants and seeds."""
    covers = {"variants": list(variants), "seeds": [int(seed) for seed in seeds]}
    if FLAGS.search_seeds:  # only when given: the files of studies without it stay current
        covers["search_seeds"] = search_stage_seeds(seeds)
    return covers


def run_latency(task, variants, seeds):
    """Float and int8 TFLite latency of every variant, interleaved with MobileNetV2's."""
    config = task.config
    classes = dataset_info().num_classes
    models, by_seed = latency_models(config, variants, seeds)
    calibration = calibration_images(config.size)
    entries = {}
    with tempfile.TemporaryDirectory() as folder:
        paths = {"float": [], "int8": []}
        for index, (key, meta_pooling, alpha, head) in enumerate(models):
            keras.backend.clear_session()
            keras.utils.set_random_seed(0)
            model = build_model(config, classes, meta_pooling, alpha=alpha, head=head)
            settle_batch_norms(model, calibration[:32], BN_MOMENTUM)
            entries[key] = {}
            for mode in ("float", "int8"):
                path = os.path.join(folder, f"model{index}_{mode}.tflite")
                exported = km.export.to_tflite(model, path, mode, calibration, strict=False)
                entries[key][f"{mode}_bytes"] = exported.size_bytes
                if mode == "int8":  # timed anyway, and said in the report
                    entries[key]["int8_problems"] = list(exported.problems)
                paths[mode].append(path)
        for mode in ("float", "int8"):
            # The baseline's file twice: the second interpreter's ratio shows
            # how far a ratio of 1 can be off by measurement noise alone.
            files = [paths[mode][0], *paths[mode]]
            medians = interleaved_latency(files, FLAGS.latency_runs, FLAGS.threads)
            control, medians = medians[0], medians[1:]
            for (key, *_), median in zip(models, medians):
                entries[key][f"{mode}_ms"] = median
                entries[key][f"{mode}_ratio"] = median / medians[0]
            entries[BASELINE][f"{mode}_control_ratio"] = control / medians[0]
    return {
        "models": entries,
        "architectures_by_seed": by_seed,
        "covers": latency_coverage(variants, seeds),
    }

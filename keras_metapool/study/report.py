"""study.md: the statistics, the tables and what they show, from the run files."""

import os

import numpy as np

import keras_metapool as km
from keras_metapool.study.comparisons import comparison_lines, paired_comparisons
from keras_metapool.study.estimate import format_duration, task_steps
from keras_metapool.study.machine import (
    load_average,
)
from keras_metapool.study.plan import (
    BASELINE,
    BN_MOMENTUM,
    FLAGS,
    TIMED_WITH_SEARCH,
    VARIANT_BY_KEY,
    Config,
    Task,
    command_line,
    read_result,
    search_epochs,
    search_seed,
)
from keras_metapool.study.plots import plot
from keras_metapool.study.runs import dataset_info, param_match
from keras_metapool.study.stats import (
    at_chance,
    by_seed,
    detectable_difference,
    int8_problems,
    latency_ratio,
    on_every_seed,
    paired,
    pooled_std,
    variant_stats,
)

# -------------------------------------------------------------------- report


def collect(tasks):
    """Results per config: {config: {variant: [train results]}}, searches, latency."""
    groups, searches, latency = {}, {}, {}
    for task in tasks:
        data = read_result(task.run_id)
        if data is None:
            continue
        if task.kind == "train":
            groups.setdefault(task.config, {}).setdefault(task.variant, []).append(data)
        elif task.kind == "search":
            searches.setdefault(task.config, {})[task.seed] = data
        elif task.kind == "random_search":
            continue  # its architecture is the random_searched run's; its JSON has the rest
        else:
            latency[task.config] = data
    return groups, searches, latency


def decided_points(search):
    """Points a search decided by evidence (older files: fixed by the margin)."""
    if "decided_by_evidence" in search:
        return search["decided_by_evidence"]
    return search["fixed_by_margin"]


def warned(search):
    """The categories of keras_metapool's warnings a search raised: sorted, comma-separated.

    Its JSON keeps every warning; the report names the package's own (such as
    ``SearchUndecidedWarning`` and ``ModelAtChanceWarning``), not those of
    TensorFlow's internals.
    """
    return ", ".join(
        sorted(
            {
                w["category"].rsplit(".", 1)[-1]
                for w in search.get("warnings", [])
                if w["category"].startswith("keras_metapool.")
            }
        )
    )


def describe_architecture(architecture):
    spec = km.ArchitectureSpec.from_dict(architecture)
    return repr(spec).replace("ArchitectureSpec(ops=", "").split(", placement=")[0]


def verdict(test):
    if test is None:
        return "cannot be judged (fewer than 2 seeds in common)"
    if test["p"] < 0.05:
        return f"larger than seed noise (paired p = {test['p']:.3f}, uncorrected)"
    return f"within seed noise (paired p = {test['p']:.2f})"


def comparison_sentence(name, other_name, stats, other_stats):
    diff = 100 * (stats["mean"] - other_stats["mean"])
    std = pooled_std(stats["accuracies"], other_stats["accuracies"])
    test = paired(stats["by_seed"], other_stats["by_seed"])
    text = (
        f"{name} {100 * stats['mean']:.2f}% vs {other_name} {100 * other_stats['mean']:.2f}% "
        f"({stats['n']} and {other_stats['n']} seeds): {diff:+.2f} points"
    )
    if std:
        text += f", {abs(diff) / (100 * std):.1f}x the pooled seed std ({100 * std:.2f})"
    return text + f"; {verdict(test)}.", test


_NO_BASELINE = (
    f"No `{BASELINE}` runs in this study, so nothing is concluded against MobileNetV2: "
    f"the tables above compare the variants it has (add {BASELINE} to --variants for "
    "the conclusions)."
)


def conclusions(groups, searches, latency):
    """'What this shows' bullets and 'does not show' bullets, from the numbers."""
    shows, tests, stds = [], 0, []
    for config in sorted(groups):
        stats = {v: variant_stats(r) for v, r in groups[config].items()}
        stds += [(s["std"], s["n"]) for s in stats.values() if s["std"] is not None]
        if BASELINE not in stats:
            # NOTE: every conclusion below is read against MobileNetV2's runs.
            shows.append((config, [_NO_BASELINE]))
            continue
        lines, config_tests = _config_conclusions(stats, searches.get(config), latency.get(config))
        shows.append((config, lines))
        tests += config_tests
    return shows, _caveats(stds, tests)


def _config_conclusions(stats, searches, latency):
    """``(lines, tests)`` of one configuration: MP paper against both baselines, the
    other variants, the search, the best; and how many tests those lines made."""
    base = stats[BASELINE]
    lines, tests = [], 0
    if "mp_paper" in stats:
        paper_lines, tests = _paper_lines(stats, base, latency)
        lines += paper_lines
    others = []
    for variant, s in stats.items():
        if variant in (BASELINE, "mp_paper", "param_matched"):
            continue
        test = paired(s["by_seed"], base["by_seed"])
        if test is None:
            others.append(f"{variant}: fewer than 2 seeds in common")
            continue
        tests += 1
        # NOTE: over the seeds both have: a search stage may run on fewer seeds.
        notes = [f"{test['n']} seeds"] if test["n"] != base["n"] else []
        notes += ["p < 0.05, uncorrected"] if test["p"] < 0.05 else []
        others.append(
            f"{variant} {100 * test['diff']:+.2f}" + (f" ({'; '.join(notes)})" if notes else "")
        )
    if others:
        lines.append(
            "Other variants vs MobileNetV2 (points, paired over the seeds both have): "
            + ", ".join(others)
            + "."
        )
    if searches:
        decided = [decided_points(s) for s in searches.values()]
        points = len(next(iter(searches.values()))["points"])
        mean_seconds = np.mean([s["search_seconds"] for s in searches.values()])
        lines.append(
            f"The search ({len(searches)} run(s), mean {format_duration(mean_seconds)}) "
            f"decided {', '.join(map(str, decided))} of its {points} points by evidence; "
            "the undecided ones have no enhancer."
        )
    lines.append(_best_line(stats))
    return lines, tests


def _best_line(stats):
    """The variant with the best mean accuracy, among those whose means are over the
    same seeds (a search stage may run on fewer seeds than the fixed variants)."""
    complete = {v: stats[v] for v in on_every_seed({v: s["by_seed"] for v, s in stats.items()})}
    seeds = set().union(*(s["by_seed"] for s in stats.values()))
    among = f" among the variants run on all {len(seeds)} seeds"
    if not complete:  # no variant ran on every seed: compare those with the most
        most = max(s["n"] for s in stats.values())
        complete = {v: s for v, s in stats.items() if s["n"] == most}
        among = f" among the variants with the most seeds ({most})"
    if len(complete) == len(stats):
        among = ""
    best = max(complete, key=lambda v: complete[v]["mean"])
    return (
        f"Best mean accuracy{among}: {VARIANT_BY_KEY[best].label} "
        f"({100 * stats[best]['mean']:.2f}%)."
    )


def _paper_lines(stats, base, latency):
    """``(lines, tests)``: MP paper against MobileNetV2 (with its cost), and against the
    parameter-matched one; how many comparisons those lines made."""
    paper = stats["mp_paper"]
    sentence, _ = comparison_sentence("MP paper", "MobileNetV2", paper, base)
    cost = (
        f" It costs {100 * (paper['params'] / base['params'] - 1):+.1f}% parameters, "
        f"{100 * (paper['macs'] / base['macs'] - 1):+.1f}% MACs"
    )
    ratios = [latency_ratio(latency, "mp_paper", m) for m in ("float", "int8")]
    if ratios[0] is not None:
        cost += f", {ratios[0]:.2f}x float and {ratios[1]:.2f}x int8 latency"
    lines = [sentence + cost + "."]
    if "param_matched" in stats:
        matched = stats["param_matched"]
        sentence, test = comparison_sentence(
            "MP paper", f"MobileNetV2 at alpha {matched['model_alpha']:.4g} "
            f"({matched['params'] / paper['params'] - 1:+.2%} of its parameters)",
            paper, matched,
        )  # fmt: skip
        survives = (
            "so the gain survives the parameter-matched baseline"
            if test is not None and test["p"] < 0.05 and test["diff"] > 0
            else "so this study cannot tell the gain from the effect of the extra parameters"
            if paper["mean"] > base["mean"]
            else "and MP paper did not beat MobileNetV2 in the first place"
        )
        lines.append(f"Parameter-matched: {sentence[:-1]}, {survives}.")
    return lines, len(lines)


def _caveats(stds, tests):
    """'What this does not show': seed noise and power, multiplicity, scope, latency."""
    caveats = []
    if stds:
        typical = float(np.median([s for s, _ in stds]))
        n, most = min(n for _, n in stds), max(n for _, n in stds)
        detectable = detectable_difference(typical, n)
        counts = f"{n}" if n == most else f"{n} (of up to {most})"
        caveats.append(
            f"Small effects: with {counts} seeds per variant and a typical seed std of "
            f"{100 * typical:.2f} points, only differences above about {100 * detectable:.2f} "
            "points reach p < 0.05; 'within seed noise' means not shown, not shown absent."
        )
    else:
        caveats.append(
            "One seed per variant: no estimate of seed noise, so no difference can be judged."
        )
    if tests:
        caveats.append(
            f"Many comparisons: {tests} tests at p < 0.05 expect about {0.05 * tests:.1f} false "
            "positives by chance alone."
        )
    info = dataset_info()
    steps = task_steps(Task("train", Config(32, 1.0), BASELINE, 0))
    caveats += [
        f"The paper's claim (+2.3 top-1 on ImageNet at 224x224 after 300 epochs): this is "
        f"{FLAGS.dataset} ({info.num_examples} training images, {steps} steps per model, one "
        "short untuned recipe shared by all variants). A recipe, resolution or dataset that "
        "suits one architecture better can change the ranking.",
        "Latency is this CPU's (LiteRT with XNNPACK, batch 1), not the Edge TPU's; ratios "
        "are of models timed in one interleaved run and carry the noise shown by the second "
        "MobileNetV2 interpreter.",
    ]
    return caveats


def chance_warnings(groups, classes):
    """Sentences for the variants whose accuracy is what guessing among ``classes`` gives."""
    found = []
    for config, by_variant in sorted(groups.items()):
        for variant, runs in by_variant.items():
            mean = float(np.mean([run["test_accuracy"] for run in runs]))
            examples = runs[0].get("test_examples")
            if examples and at_chance(mean, classes, examples):
                found.append(
                    f"{VARIANT_BY_KEY[variant].label} at {config.title}: {100 * mean:.2f}% on "
                    f"{examples} test images, what guessing among {classes} classes "
                    f"gives ({100 / classes:.1f}%)"
                )
    if not found:
        return []
    return [
        "",
        "**Models at chance: they learned nothing, so no comparison with them means "
        "anything** (train longer, on more images, or check the data): " + "; ".join(found) + ".",
    ]


def progress_note(tasks):
    """A warning when some of the plan's runs are not done yet (``--report_only``)."""
    done = sum(read_result(task.run_id) is not None for task in tasks)
    if done == len(tasks):
        return []
    return [
        "",
        f"**In progress: {done} of {len(tasks)} runs done.** What follows is what they show so "
        "far, not the study's result: its seeds and comparisons were planned for all runs.",
    ]


def test_images_text(groups):
    """How many test images the runs were measured on, as the report says it."""
    counts = sorted(
        {run["test_examples"] for runs in groups.values() for group in runs.values()
         for run in group if "test_examples" in run}
    )  # fmt: skip
    if not counts:
        return f"first {FLAGS.test_images}" if FLAGS.test_images else "all"
    shown = " or ".join(f"{count:,}" for count in counts)
    if FLAGS.test_images and counts[-1] < FLAGS.test_images:
        return f"{shown} images: all there are (--test_images={FLAGS.test_images})"
    return f"first {shown} images" if FLAGS.test_images else f"all {shown} images"


def _header_lines(groups, seeds, tasks, started_machine, info):
    """The report's title, command, machine, data and reading notes."""
    return [
        "# Does Meta-Pooling help? Study results",
        "",
        f"Command: `{command_line()}`",
        *progress_note(tasks),
        *chance_warnings(groups, info.num_classes),
        "",
        f"Machine: {started_machine['cpu_count']} CPUs (`os.cpu_count()`), "
        f"{started_machine['cpu_model']}; load average (1/5/15 min) at the start "
        f"{started_machine['load_average']}, at the end {load_average()}; "
        f"TensorFlow {started_machine['tensorflow']}, tf_keras {started_machine['tf_keras']}, "
        f"LiteRT {started_machine['ai_edge_litert']}, Python {started_machine['python']}.",
        "",
        f"Data: `{FLAGS.dataset}` split `{FLAGS.train_split}` (first {info.num_examples} "
        f"images, {info.num_classes} classes) for training, `{FLAGS.test_split}` "
        f"({test_images_text(groups)}) for accuracy. Training: {FLAGS.epochs} epochs, "
        f"batch {FLAGS.batch_size}, Adam {FLAGS.learning_rate:g} cosine-decayed to 0, "
        f"augmentation `{FLAGS.augment}`, BN momentum {BN_MOMENTUM}, seeds "
        f"{', '.join(map(str, seeds))} (weight init and data order). Search: PMPL on the same "
        f"training images, {1 - FLAGS.search_fraction:.0%} for weights / "
        f"{FLAGS.search_fraction:.0%} held out for the architecture steps, "
        f"{search_epochs()} epochs, "
        f"PMPLCallback's defaults (evidence rule, undecided points -> no enhancer), "
        f"architecture lr {FLAGS.arch_learning_rate}, "
        + (
            "one search per (alpha, size)"
            if FLAGS.search_once
            else "one search per seed"
            + (f" of seeds {', '.join(map(str, stage))}" if (stage := FLAGS.search_seeds) else "")
        )
        + "; the searched model then trains from scratch like the others (`searched`) or from "
        "the supernet's weights (`searched_inherited`), and its time includes the search; "
        "`random_arch` draws each point's op uniformly from the same space; `random_searched` "
        f"trains such draws {FLAGS.random_search_epochs} epoch(s) each on the search's weight "
        "part, scores them on its held-out part until the search's CPU time is spent, and "
        "trains the best from scratch (its time includes that random search).",
        "",
        "Accuracy: mean ± std over seeds (n); Δ (the mean of the per-seed differences, over the "
        "seeds both have) and the paired p against MobileNetV2 of the same alpha and size "
        "(uncorrected; the paired tables below correct the comparisons they list). Latency: "
        "float / "
        "int8 TFLite, batch 1, "
        f"{FLAGS.threads} thread(s), median of {FLAGS.latency_runs} invokes interleaved with "
        "MobileNetV2's, as a ratio to it. Time: wall time of training (+ search) per model, "
        "mean over seeds; CPU: process CPU time of training and test evaluation (+ the "
        "search), which does not depend on what else the machine ran (wall time does).",
    ]


def _config_lines(config, by_variant, searches, latency, variants, info):
    """One configuration's section: the table, its notes and the paired comparisons."""
    stats = {v: variant_stats(r) for v, r in by_variant.items()}
    base = stats.get(BASELINE)
    lines = [
        "",
        f"## {config.title}",
        "",
        "| variant | alpha | params | vs MNv2 | MACs | vs MNv2 | test accuracy % | Δ (points) "
        "| paired p | float latency | int8 latency | time | CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    not_integer = []
    for variant in variants:
        if variant not in stats:
            continue
        s = stats[variant]
        std = f" ± {100 * s['std']:.2f}" if s["std"] is not None else ""
        if base is not None:
            ours, theirs = by_seed(by_variant[variant]), by_seed(by_variant[BASELINE])
            test = paired(ours, theirs)
            # Over the seeds both have, as the p: a partial study's means differ in seeds.
            common = sorted(set(ours) & set(theirs))
            delta = (
                f"{100 * float(np.mean([ours[k] - theirs[k] for k in common])):+.2f}"
                if common
                else "—"
            )
            p = "—" if variant == BASELINE or test is None else f"{test['p']:.3f}"
            vs_params = f"{100 * (s['params'] / base['params'] - 1):+.1f}%"
            vs_macs = f"{100 * (s['macs'] / base['macs'] - 1):+.1f}%"
        else:
            delta = p = vs_params = vs_macs = "—"
        ratios = []
        for mode in ("float", "int8"):
            ratio = latency_ratio(latency.get(config), variant, mode)
            ratios.append("—" if ratio is None else f"{ratio:.2f}x")
        problems = int8_problems(latency.get(config), variant)
        if problems:  # exported with strict=False: timed, but not the int8 model it claims
            ratios[1] += " (not all int8)"
            not_integer.append(f"{VARIANT_BY_KEY[variant].label}: {problems[0]}")
        time_text = format_duration(s["time"])
        cpu_text = format_duration(s["cpu"]) if s["cpu"] is not None else "—"
        if variant in TIMED_WITH_SEARCH:
            time_text += f" (search {format_duration(s['search_time'])})"
            if s["search_cpu"] is not None:
                cpu_text += f" (search {format_duration(s['search_cpu'])})"
        lines.append(
            f"| {VARIANT_BY_KEY[variant].label} | {s['model_alpha']:.4g} "
            f"| {s['params'] / 1e6:.3f}M | {vs_params} | {s['macs'] / 1e6:.1f}M | {vs_macs} "
            f"| {100 * s['mean']:.2f}{std} ({s['n']}) | {delta} | {p} "
            f"| {ratios[0]} | {ratios[1]} | {time_text} | {cpu_text} |"
        )
    notes = [
        f"Not all int8 (its int8 latency is of a partly float file): {problem}."
        for problem in not_integer
    ]
    if config in latency:
        control = latency[config]["models"][BASELINE]
        notes.append(
            "Latency noise: a second interpreter of the MobileNetV2 file measured "
            f"{control['float_control_ratio']:.2f}x (float) and "
            f"{control['int8_control_ratio']:.2f}x (int8) of the first; MobileNetV2 "
            f"itself: {control['float_ms']:.2f} ms float, {control['int8_ms']:.2f} ms int8."
        )
    for seed, search in sorted(searches.get(config, {}).items()):
        notes.append(
            f"Searched architecture (seed {seed}, {format_duration(search['search_seconds'])}, "
            f"{decided_points(search)}/{len(search['points'])} points decided by evidence): "
            f"`{describe_architecture(search['architecture'])}`."
            + (f" It warned: {categories}." if (categories := warned(search)) else "")
        )
    if "param_matched" in stats:
        match = param_match(config.alpha, info.num_classes)
        notes.append(
            f"Parameter match: MobileNetV2 at alpha {match['alpha']:.4f} has "
            f"{match['params']:,} parameters, {match['relative_difference']:+.2%} of MP "
            f"paper's {match['target_params']:,}."
        )
    lines += [""] + [f"- {n}" for n in notes] if notes else []
    lines += comparison_lines(paired_comparisons(by_variant))
    return lines


def write_report(configs, seeds, variants, tasks, started_machine):
    groups, searches, latency = collect(tasks)
    for config, by_variant in groups.items():
        for variant, kind in TIMED_WITH_SEARCH.items():  # their cost includes the search's
            for run in by_variant.get(variant, []):
                search = read_result(
                    Task(kind, config, seed=search_seed(run["seed"], seeds)).run_id
                )
                if search is not None and "cpu_seconds" in search:
                    run["search_cpu_seconds"] = search["cpu_seconds"]
    if not groups:
        return None
    info = dataset_info()
    lines = _header_lines(groups, seeds, tasks, started_machine, info)
    for config in sorted(groups):
        lines += _config_lines(config, groups[config], searches, latency, variants, info)
    shows, caveats = conclusions(groups, searches, latency)
    lines += ["", "## What this shows", ""]
    for config, config_lines in shows:
        lines.append(f"- **{config.title}.** " + " ".join(config_lines))
    lines += ["", "## What this does not show", ""] + [f"- {c}" for c in caveats]
    lines += [
        "",
        "![accuracy per variant](study_accuracy.png)",
        "",
        "![accuracy against cost](study_cost.png)",
        "",
    ]
    path = os.path.join(FLAGS.output_dir, "study.md")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    os.replace(path + ".tmp", path)
    plot(groups, latency, variants)
    return path


def summary_line(task, result):
    if task.kind == "train":
        line = (
            f"test accuracy {100 * result['test_accuracy']:.2f}%, "
            f"train {format_duration(result['train_seconds'])}"
        )
        if "same_training_as" in result:
            line += f" (no enhancer: the training of {result['same_training_as']})"
        return line
    if task.kind == "search":
        return (
            f"{decided_points(result)}/{len(result['points'])} points decided by evidence, "
            f"{describe_architecture(result['architecture'])}"
            + (f"; warned: {categories}" if (categories := warned(result)) else "")
        )
    if task.kind == "random_search":
        return (
            f"{len(result['tried'])} architectures in {result['spent_cpu_seconds']:.0f} CPU s "
            f"(budget {result['budget_cpu_seconds']:.0f}), best held-out accuracy "
            f"{100 * result['tried'][result['best_index']]['held_out_accuracy']:.2f}%: "
            f"{describe_architecture(result['architecture'])}"
        )
    ratios = result["models"]
    worst = max(r["float_ratio"] for r in ratios.values())
    return f"{len(ratios)} models, float latency ratios up to {worst:.2f}x"

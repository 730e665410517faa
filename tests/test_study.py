"""`keras-metapool study` (keras_metapool.study): the --quick study is consistent; it resumes.

One quick study (alpha 0.35 at 32x32, one seed, MobileNetV2, MP paper, the
parameter-matched baseline and a PMPL search over three candidates) runs
once per module, in this process (no second TensorFlow start-up); the tests
read what it wrote.
"""

import importlib
import json
import os
import re

import numpy as np
import pytest

import keras_metapool as km
from keras_metapool import study
from keras_metapool._keras import keras
from keras_metapool.study import comparisons, plan, report
from keras_metapool.study import stats as study_stats

# The module: the package's name `main` is its function.
study_main = importlib.import_module("keras_metapool.study.main")
study_runs = importlib.import_module("keras_metapool.study.runs")

QUICK_VARIANTS = [
    "mobilenet_v2", "mp_paper", "searched", "searched_inherited", "random_arch", "param_matched",
]  # fmt: skip
CONFIG = "a0.35_px32"
TRAIN_RUNS = [f"{variant}_{CONFIG}_seed0" for variant in QUICK_VARIANTS]
ALL_RUNS = [*TRAIN_RUNS, f"search_{CONFIG}_seed0", f"latency_{CONFIG}", "param_match_a0.35_c10"]


def run_study(output_dir, *flags):
    study.FLAGS.unparse_flags()
    study.FLAGS(["study.py", "--quick", f"--output_dir={output_dir}", *flags])
    study.main(["study.py"])


def read(folder, run_id):
    with open(os.path.join(folder, f"{run_id}.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    run_study(folder)
    return folder


def table_rows(markdown, title):
    """The data rows of the markdown table under ``## title``, as lists of cells."""
    section = markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]


@pytest.mark.slow
def test_every_run_writes_one_json_with_the_settings(quick_study):
    names = sorted(f for f in os.listdir(quick_study) if f.endswith(".json"))
    assert names == sorted(f"{run_id}.json" for run_id in ALL_RUNS)
    settings = read(quick_study, TRAIN_RUNS[0])["settings"]
    assert settings["train_images"] == 512 and settings["epochs"] == 1
    for run_id in ALL_RUNS:
        assert read(quick_study, run_id)["settings"] == settings
    # Atomic writes leave no temporary files behind.
    assert not [f for f in os.listdir(quick_study) if f.startswith(".tmp")]


@pytest.mark.slow
def test_training_runs_are_consistent(quick_study):
    runs = {
        variant: read(quick_study, run_id) for variant, run_id in zip(QUICK_VARIANTS, TRAIN_RUNS)
    }
    for run in runs.values():
        assert 0.0 <= run["test_accuracy"] <= 1.0
        assert run["train_examples"] == 512 and run["test_examples"] == 256
        assert run["steps"] == 8  # 512 images / batch 64, one epoch
        assert run["train_seconds"] > 0 and run["cpu_seconds"] > 0
    base, paper, matched = runs["mobilenet_v2"], runs["mp_paper"], runs["param_matched"]
    assert paper["params"] > base["params"] and paper["macs"] > base["macs"]
    # The parameter-matched baseline: a wider plain MobileNetV2 within 1% of MP's count.
    assert matched["meta_pooling"] == "none" and matched["model_alpha"] > 0.35
    assert abs(matched["params"] / paper["params"] - 1) <= 0.01
    match = read(quick_study, "param_match_a0.35_c10")
    assert match["params"] == matched["params"] and match["target_params"] == paper["params"]
    # The searched model is the search's architecture, and its time includes the search.
    search = read(quick_study, f"search_{CONFIG}_seed0")
    searched = runs["searched"]
    assert searched["meta_pooling"] == search["architecture"]
    assert searched["search_seconds"] == search["search_seconds"] > 0
    assert searched["time_to_model_seconds"] == pytest.approx(
        searched["train_seconds"] + search["search_seconds"]
    )
    for entry in search["architecture"]["ops"]:  # only the quick search's candidates
        ops = entry if isinstance(entry, list) else [entry]
        assert set(ops) <= {"identity", "ssp", "avg3"}
    assert len(search["points"]) == 16  # the hidden placement: blocks 1-16
    assert search["decided_by_evidence"] == sum(p["state"] == "decided" for p in search["points"])
    assert search["budget"]["arch_steps"] > 0
    # Every warning of the search is kept (a one-epoch search decides little, and says so).
    categories = [w["category"] for w in search["warnings"]]
    assert "keras_metapool.search.SearchUndecidedWarning" in categories
    assert all(w["message"] for w in search["warnings"])
    # The inherited child: the same architecture, its time includes the search too.
    inherited = runs["searched_inherited"]
    assert inherited["meta_pooling"] == search["architecture"]
    assert inherited["search_seconds"] == search["search_seconds"]
    # The random architecture: one op per point from the same (pruned) space.
    random_ops = runs["random_arch"]["meta_pooling"]["ops"]
    assert random_ops[0] == "identity"  # block 0 has no hidden placement
    assert all(isinstance(op, str) for op in random_ops)
    assert set(random_ops[10:]) <= {"identity", "ssp"}  # 1x1 maps at 32x32: avg3 pruned
    assert random_ops == study.random_architecture(study.Config(32, 0.35), 0)["ops"]
    # The matched random baseline: as many enhancers as the searched child, at random points.
    config = study.Config(64, 0.35)
    for enhancers in (0, 1, 3):
        ops = study.random_architecture(config, 0, enhancers=enhancers)["ops"]
        placed = [i for i, op in enumerate(ops) if op != "identity"]
        assert len(placed) == enhancers and 0 not in placed
        assert {ops[i] for i in placed} <= {"ssp", "avg3"}  # the quick study's candidates
    drawn = {
        tuple(study.random_architecture(config, seed, enhancers=2)["ops"]) for seed in range(6)
    }
    assert len(drawn) > 1  # the points differ from seed to seed
    matched = study_runs.variant_architecture("random_matched", study.Config(32, 0.35), 0, [0])
    searched_points = km.ArchitectureSpec.from_dict(search["architecture"]).points
    assert len(km.ArchitectureSpec.from_dict(matched).points) == len(searched_points)


@pytest.mark.slow
def test_latency_is_relative_to_mobilenet_v2(quick_study):
    latency = read(quick_study, f"latency_{CONFIG}")
    models = latency["models"]
    assert set(models) == {
        "mobilenet_v2", "mp_paper", "param_matched", "searched/seed0", "random_arch/seed0",
    }  # fmt: skip
    assert latency["architectures_by_seed"] == {
        "searched": {"0": "searched/seed0"},
        "searched_inherited": {"0": "searched/seed0"},  # the same architecture: one model
        "random_arch": {"0": "random_arch/seed0"},
    }
    base = models["mobilenet_v2"]
    assert base["float_ratio"] == 1.0 and base["int8_ratio"] == 1.0
    # A second interpreter of the same file: only measurement noise apart.
    assert 0.5 < base["float_control_ratio"] < 2.0 and 0.5 < base["int8_control_ratio"] < 2.0
    for key, entry in models.items():
        assert entry["float_ms"] > 0 and entry["int8_ms"] > 0
        assert entry["float_ratio"] == pytest.approx(entry["float_ms"] / base["float_ms"])
        assert entry["int8_bytes"] < entry["float_bytes"], key  # int8 weights: a smaller file
        assert entry["int8_problems"] == [], key  # every model's int8 file is all int8
    # A file that is not all int8 would be timed anyway (strict=False), and said.
    latency["models"]["random_arch/seed0"]["int8_problems"] = ["op 3 HARD_SWISH is float"]
    assert study_stats.int8_problems(latency, "random_arch") == ["op 3 HARD_SWISH is float"]
    assert study_stats.int8_problems(latency, "mp_paper") == []


@pytest.mark.slow
def test_markdown_reports_every_variant_run(quick_study):
    with open(os.path.join(quick_study, "study.md"), encoding="utf-8") as f:
        markdown = f.read()
    assert f"--output_dir={quick_study} --quick" in markdown
    assert f"{os.cpu_count()} CPUs (`os.cpu_count()`)" in markdown
    rows = table_rows(markdown, "alpha 0.35, 32x32")
    # Rows in the study's canonical variant order, whatever order they were asked in.
    ordered = [v.key for v in study.VARIANTS if v.key in QUICK_VARIANTS]
    assert [row[0] for row in rows] == [study.VARIANT_BY_KEY[v].label for v in ordered]
    by_label = {study.VARIANT_BY_KEY[v].label: run for v, run in zip(QUICK_VARIANTS, TRAIN_RUNS)}
    for row in rows:
        run = read(quick_study, by_label[row[0]])
        assert row[6].startswith(f"{100 * run['test_accuracy']:.2f} (1)")
        assert row[2] == f"{run['params'] / 1e6:.3f}M"
        if not row[0].startswith("PMPL searched"):  # whose CPU time adds its search's
            assert row[12] == study.format_duration(run["cpu_seconds"])
    assert rows[0][9] == "1.00x" and rows[0][10] == "1.00x"  # the baseline against itself
    assert "## What this shows" in markdown and "## What this does not show" in markdown
    assert "One seed per variant" in markdown  # the quick study cannot judge differences
    assert re.search(r"It warned: [\w, ]*SearchUndecidedWarning", markdown)
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", markdown):
        assert os.path.exists(os.path.join(quick_study, image))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["study_accuracy.png", "study_cost.png"])
def test_plots_are_drawn_pngs(quick_study, name):
    import matplotlib.image

    path = os.path.join(quick_study, name)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 300
    assert pixels[..., :3].std() > 0.05  # something is drawn on the canvas


@pytest.mark.slow
def test_rerun_skips_finished_runs(quick_study, capsys):
    before = {f: os.stat(os.path.join(quick_study, f)).st_mtime_ns for f in os.listdir(quick_study)}
    run_study(quick_study)
    out = capsys.readouterr().out
    assert f"{len(ALL_RUNS) - 1} runs, {len(ALL_RUNS) - 1} already done (skipped)" in out
    for name, mtime in before.items():
        if name.endswith(".json"):
            assert os.stat(os.path.join(quick_study, name)).st_mtime_ns == mtime, name


@pytest.mark.slow
def test_latency_is_timed_again_for_more_seeds_or_variants(quick_study):
    # Its models are the architectures of the variants and seeds it was run
    # for: a study extended with more seeds must not report those alone.
    study.FLAGS.unparse_flags()
    study.FLAGS(["study.py", "--quick", f"--output_dir={quick_study}"])
    plan.apply_quick_defaults()
    latency = plan.Task("latency", study.Config(32, 0.35))
    ordered = [v.key for v in study.VARIANTS if v.key in QUICK_VARIANTS]
    assert read(quick_study, latency.run_id)["covers"] == {"variants": ordered, "seeds": [0]}
    tasks = plan.plan_tasks([latency.config], [0], ordered)
    assert study_main._pending(tasks, ordered, [0]) == []
    assert study_main._pending(tasks, ordered[:-1], [0]) == [latency]
    # More seeds: their runs, then the latency of every architecture.
    more = plan.plan_tasks([latency.config], [0, 1], ordered)
    pending = study_main._pending(more, ordered, [0, 1])
    assert pending[-1] == latency and {t.seed for t in pending[:-1]} == {1}
    # A search to do again (its file deleted) may find another architecture.
    search = os.path.join(quick_study, f"search_{CONFIG}_seed0.json")
    os.rename(search, search + ".away")
    try:
        pending = study_main._pending(tasks, ordered, [0])
    finally:
        os.rename(search + ".away", search)
    assert [t.kind for t in pending] == ["search", "latency"]


def test_one_search_for_all_seeds_records_whose_search_it_is():
    # --search_once trains every seed on the first seed's architecture: a
    # resume with another first seed must be refused, not mix two searches.
    recorded = []
    for seeds in ("0,1,2", "1,2,3"):
        study.FLAGS.unparse_flags()
        study.FLAGS(["study.py", "--search_once", f"--seeds={seeds}"])
        recorded.append(plan.settings())
    assert recorded[0]["search_seed"] == 0 and recorded[1]["search_seed"] == 1
    study.FLAGS.unparse_flags()
    study.FLAGS(["study.py", "--seeds=1,2,3"])
    assert "search_seed" not in plan.settings()  # earlier results keep their settings
    study.FLAGS.unparse_flags()


def test_each_run_starts_from_the_flag_defaults():
    # absl keeps a flag's value and "present" count between parses: a run
    # without --quick after one with it ran (and printed) the quick study.
    assert study.run(["study", "--quick", "--variants=nope"]) == 2
    assert study.FLAGS.quick
    assert study.run(["study", "--variants=nope"]) == 2
    assert not study.FLAGS.quick and not study.FLAGS["quick"].present
    study.FLAGS.unparse_flags()


@pytest.mark.slow
def test_rerun_with_other_settings_is_refused_before_any_run(quick_study, capsys):
    def files():
        return {name: os.path.getmtime(quick_study / name) for name in os.listdir(quick_study)}

    before = files()
    assert study.run(["study", "--quick", f"--output_dir={quick_study}", "--epochs=2"]) == 1
    error = capsys.readouterr().err
    assert "error:" in error and "other settings" in error and "epochs 1 there, 2 now" in error
    assert "--output_dir" in error and "delete" not in error
    assert files() == before  # nothing written, nothing removed
    study.FLAGS.unparse_flags()  # the quick study's flags again, for the tests after this one
    study.FLAGS(["study.py", "--quick", f"--output_dir={quick_study}"])


@pytest.mark.slow
def test_search_settings_bind_only_the_runs_a_search_feeds(quick_study, tmp_path):
    study.FLAGS.unparse_flags()
    study.FLAGS(["study.py", "--quick", f"--output_dir={tmp_path}"])
    try:
        other = dict(plan.settings(), search_rule="another rule")
        fixed = {"run_id": "a", "kind": "train", "variant": "mp_paper", "settings": other}
        (tmp_path / "mp_paper_a.json").write_text(json.dumps(fixed))
        plan.check_output_dir()  # a fixed model does not depend on the search rule
        searched = dict(fixed, run_id="b", variant="searched")
        (tmp_path / "searched_b.json").write_text(json.dumps(searched))
        with pytest.raises(plan.OtherSettingsError, match="search_rule 'another rule' there"):
            plan.check_output_dir()
    finally:
        study.FLAGS.unparse_flags()  # the quick study's flags again, for the tests after this one
        study.FLAGS(["study.py", "--quick", f"--output_dir={quick_study}"])


@pytest.mark.slow
def test_conclusions_follow_the_numbers(quick_study):
    """Synthetic seed results: a clear gain is called beyond noise, a small one is not."""
    config = study.Config(32, 0.35)

    def runs(accuracies, params=1000, macs=10):
        return [
            dict(test_accuracy=a, params=params, macs=macs, model_alpha=0.35,
                 time_to_model_seconds=1.0, search_seconds=0.0, seed=seed)
            for seed, a in enumerate(accuracies)
        ]  # fmt: skip

    groups = {
        config: {
            "mobilenet_v2": runs([0.800, 0.805, 0.795]),
            "mp_paper": runs([0.850, 0.853, 0.848], params=1030),
            "param_matched": runs([0.801, 0.806, 0.797], params=1031),
            "local": runs([0.802, 0.799, 0.806]),
            "searched": runs([0.900, 0.805]),  # a search stage on 2 of the 3 seeds
        }
    }
    shows, caveats = study.conclusions(groups, {}, {})
    text = " ".join(shows[0][1])
    assert "MP paper 85.03% vs MobileNetV2 80.00% (3 and 3 seeds): +5.03 points" in text
    assert text.count("larger than seed noise") == 2  # vs MobileNetV2 and vs param-matched
    assert "survives the parameter-matched baseline" in text
    assert "local +0.23, searched +5.00 (2 seeds)." in text  # paired over the seeds in common
    assert "Best mean accuracy among the variants run on all 3 seeds: MobileNetV2MP paper" in text
    assert any("2 (of up to 3) seeds per variant" in c for c in caveats)
    del groups[config]["searched"]

    groups[config]["mp_paper"] = runs([0.806, 0.792, 0.809], params=1030)
    text = " ".join(study.conclusions(groups, {}, {})[0][0][1])
    assert "within seed noise" in text and "larger than seed noise" not in text
    assert "cannot tell the gain from the effect of the extra parameters" in text

    # Without MobileNetV2's runs nothing is concluded against it, and the seeds
    # still count as seeds.
    del groups[config]["mobilenet_v2"]
    shows, caveats = study.conclusions(groups, {}, {})
    assert "No `mobilenet_v2` runs in this study" in " ".join(shows[0][1])
    assert any("with 3 seeds per variant" in c for c in caveats)
    assert not any("One seed per variant" in c for c in caveats)


def test_the_report_pairs_by_seed_corrects_with_holm_and_states_power():
    config = study.Config(32, 0.35)

    def runs(accuracies):
        return [{"test_accuracy": a, "seed": seed} for seed, a in enumerate(accuracies)]

    group = {
        "mobilenet_v2": runs([0.800, 0.805, 0.795, 0.790]),
        "mp_paper": runs([0.850, 0.853, 0.848, 0.842]),  # +0.05 every seed
        "param_matched": runs([0.801, 0.806, 0.797, 0.788]),
        "local": runs([0.802, 0.799, 0.806, 0.792]),
    }
    rows = comparisons.paired_comparisons(group)
    pairs = [(row["variant"], row["against"]) for row in rows]
    assert pairs == [
        ("mp_paper", "mobilenet_v2"), ("param_matched", "mobilenet_v2"),
        ("local", "mobilenet_v2"), ("mp_paper", "param_matched"),
    ]  # fmt: skip
    assert [row["holm_p"] for row in rows] == pytest.approx(study.holm([r["p"] for r in rows]))
    paper = rows[0]
    assert paper["diff"] == pytest.approx(0.05075) and paper["holm_p"] < 0.05
    assert paper["low"] < paper["diff"] < paper["high"]
    assert rows[2]["holm_p"] > 0.05  # local: noise
    text = "\n".join(comparisons.comparison_lines(rows))
    assert "Holm's correction over the 4 comparisons" in text and "(beyond noise)" in text
    assert "with 80% power after Holm's correction" in text
    assert comparisons.paired_comparisons({"mobilenet_v2": runs([0.8])}) == []
    # A searched child is a family of its own: against MobileNetV2, the parameter-matched
    # MobileNetV2, the best fixed variant and the random baselines, corrected apart from
    # the fixed family, whose rows stay what they were without it.
    searched = {
        **group,
        "searched": runs([0.800, 0.805, 0.795, 0.791]),
        "random_matched": runs([0.790, 0.801, 0.785, 0.780]),
        "random_searched": runs([0.801, 0.800, 0.799, 0.790]),
    }
    both = comparisons.paired_comparisons(searched)
    search_rows = [row for row in both if row["family"] == "search"]
    assert [(row["variant"], row["against"]) for row in search_rows] == [
        ("searched", "mobilenet_v2"), ("searched", "param_matched"), ("searched", "mp_paper"),
        ("searched", "random_matched"), ("searched", "random_searched"),
    ]  # fmt: skip
    assert [row["holm_p"] for row in search_rows] == pytest.approx(
        study.holm([row["p"] for row in search_rows])
    )
    fixed_rows = [row for row in both if row["family"] == "fixed"]
    assert [(r["variant"], r["against"], r["holm_p"]) for r in fixed_rows] == [
        (r["variant"], r["against"], r["holm_p"]) for r in rows
    ]
    assert all(0 <= row["power"] <= 1 for row in both)  # scipy's far tails are NaN
    text = "\n".join(comparisons.comparison_lines(both))
    assert "Holm's correction over the 5 comparisons" in text
    assert "| PMPL searched | MobileNetV2MP paper (best fixed variant) |" in text
    # The best fixed variant is picked among those run on every seed; a study without
    # MobileNetV2 compares what it has.
    partial = {**searched, "ssp_all": runs([0.95, 0.95])}
    assert comparisons.best_fixed_variant(partial) == "mp_paper"
    rows = comparisons.paired_comparisons(
        {"searched": searched["searched"], "random_matched": searched["random_matched"]}
    )
    assert [(row["variant"], row["against"]) for row in rows] == [("searched", "random_matched")]
    assert "searched child, a family of its own" in text
    # Models at chance are named at the top: 2 classes, 400 test images: chance 50%,
    # 3 binomial standard errors 7.5 points.
    group = {
        "mobilenet_v2": [{"test_accuracy": 0.5, "seed": 0, "test_examples": 400}],
        "mp_paper": [{"test_accuracy": 0.6, "seed": 0, "test_examples": 400}],
    }
    (_, line) = report.chance_warnings({config: group}, classes=2)
    assert "MobileNetV2 at alpha 0.35, 32x32: 50.00% on 400 test images" in line
    assert "MobileNetV2MP paper" not in line
    assert report.chance_warnings({config: {"mp_paper": group["mp_paper"]}}, classes=2) == []


@pytest.mark.slow
def test_a_study_drops_only_tensorflows_retracing_notes(quick_study):
    import logging

    import tensorflow as tf

    def record(message):
        return logging.LogRecord("tensorflow", logging.WARNING, "x.py", 1, message, None, None)

    logger = tf.get_logger()
    assert study_main._RETRACING_FILTER in logger.filters  # attached by the study's run
    note = "5 out of the last 5 calls to <function f> triggered tf.function retracing."
    assert not study_main._RETRACING_FILTER.filter(record(note))
    assert study_main._RETRACING_FILTER.filter(record("Gradients do not exist for variables"))


@pytest.mark.slow
def test_the_report_says_how_many_test_images_there_were(quick_study):
    config = study.Config(32, 0.35)
    groups = {config: {"mobilenet_v2": [{"test_examples": 20}, {"test_examples": 20}]}}
    study.FLAGS.test_images = 256
    assert report.test_images_text(groups) == "20 images: all there are (--test_images=256)"
    groups[config]["mobilenet_v2"] = [{"test_examples": 256}]
    assert report.test_images_text(groups) == "first 256 images"
    study.FLAGS.test_images = 0
    assert report.test_images_text(groups) == "all 256 images"
    study.FLAGS.test_images = 256  # the quick study's, for the tests after this one


@pytest.mark.slow
def test_report_only_writes_the_report_of_a_study_in_progress(quick_study, tmp_path, capsys):
    # Two of the quick study's runs, copied to a folder of their own: a study in progress.
    for run_id in ("mobilenet_v2_a0.35_px32_seed0", "mp_paper_a0.35_px32_seed0"):
        (tmp_path / f"{run_id}.json").write_bytes((quick_study / f"{run_id}.json").read_bytes())
    before = sorted(os.listdir(tmp_path))
    assert study.run(["study", "--quick", f"--output_dir={tmp_path}", "--report_only"]) == 0
    report_text = (tmp_path / "study.md").read_text(encoding="utf-8")
    assert "**In progress: 2 of 8 runs done.**" in report_text  # 6 trainings, search, latency
    assert "--report_only" not in report_text  # the command is the study's own
    runs_after = sorted(n for n in os.listdir(tmp_path) if n.endswith(".json"))
    assert runs_after == before  # nothing ran
    assert "8 runs, 2 done; reporting those (--report_only)." in capsys.readouterr().out
    study.FLAGS.unparse_flags()  # the quick study's flags again, for the tests after this one
    study.FLAGS(["study.py", "--quick", f"--output_dir={quick_study}"])
    capsys.readouterr()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["train", "search"])
def test_every_run_of_a_seed_builds_its_data_under_that_seed(kind, quick_study, monkeypatch):
    # A tf.data shuffle takes the global seed at hand when it is built: the first run of a
    # process (no global seed yet) and the next ones (the previous run's) would differ.
    import tensorflow as tf

    class Built(Exception):
        pass

    def record(*args, **kwargs):
        raise Built(tf.compat.v1.random.get_seed(None)[0])

    monkeypatch.setattr(study_runs, "training_data", record)
    keras.utils.set_random_seed(99)
    variant = "mobilenet_v2" if kind == "train" else None
    task = plan.Task(kind, study.Config(32, 0.35), variant, 3)
    with pytest.raises(Built) as built:
        (study_runs.run_train if kind == "train" else study_runs.run_search)(task)
    assert built.value.args[0] == 3


def test_paired_test_matches_a_hand_computed_example():
    from scipy import stats

    a = {0: 0.80, 1: 0.82, 2: 0.78, 3: 0.81, 7: 0.5}  # seed 7 has no partner: left out
    b = {0: 0.79, 1: 0.80, 2: 0.78, 3: 0.79}
    # Differences 0.01, 0.02, 0.00, 0.02: mean 0.0125, std sqrt(275e-6 / 3) = 0.0095743,
    # t = 0.0125 / (0.0095743 / 2) = 2.6112 on 3 degrees of freedom.
    result = study.paired(a, b)
    assert result["seeds"] == [0, 1, 2, 3] and result["n"] == 4 and result["df"] == 3
    assert result["diff"] == pytest.approx(0.0125)
    assert result["std"] == pytest.approx(0.0095743, rel=1e-4)
    assert result["t"] == pytest.approx(2.6112, rel=1e-4)
    reference = stats.ttest_rel([0.80, 0.82, 0.78, 0.81], [0.79, 0.80, 0.78, 0.79])
    assert result["p"] == pytest.approx(reference.pvalue)
    # 95% interval: 0.0125 +- t(0.975, 3) * 0.0095743 / 2 = 0.0125 +- 3.1824 * 0.0047871.
    assert result["low"] == pytest.approx(0.0125 - 0.015235, abs=1e-5)
    assert result["high"] == pytest.approx(0.0125 + 0.015235, abs=1e-5)
    assert study.paired({0: 0.8}, {0: 0.7}) is None
    # The same difference on every seed: no spread for a t-test; the exact sign-flip
    # test's p (2 / 2**n), also when rounding leaves a spread of 1e-17.
    same = study.paired({0: 0.75, 1: 0.5}, {0: 0.5, 1: 0.25})
    assert same["p"] == 0.5 and same["low"] == same["high"] == 0.25 and same["std"] == 0.0
    rounded = study.paired({0: 17 / 20, 1: 18 / 20}, {0: 16 / 20, 1: 17 / 20})
    assert rounded["p"] == 0.5 and rounded["std"] == 0.0
    ten = study.paired({s: 0.8 for s in range(10)}, {s: 0.7 for s in range(10)})
    assert ten["p"] == pytest.approx(2 / 2**10)
    assert study.paired({0: 0.5, 1: 0.5}, {0: 0.5, 1: 0.5})["p"] == 1.0


def test_holm_adjusts_step_down_and_keeps_the_order():
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 -> 0.06 (monotone).
    adjusted = study.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert study.holm([None, 0.5, 0.9]) == [None, pytest.approx(1.0), pytest.approx(1.0)]
    assert study.holm([]) == []


def test_paired_power_and_the_detectable_difference_agree():
    # A paired t-test with effect = std (Cohen's d 1) and 10 pairs at 0.05 has 80.3% power
    # (the noncentral t; G*Power gives the same).
    assert study.paired_power(1.0, 1.0, 10) == pytest.approx(0.803, abs=0.002)
    assert study.paired_power(0.0, 1.0, 10) == pytest.approx(0.05, abs=1e-6)
    detectable = study.paired_detectable(0.012, 10, alpha=0.05 / 6)
    assert study.paired_power(detectable, 0.012, 10, alpha=0.05 / 6) == pytest.approx(0.8, abs=1e-3)
    assert detectable > study.paired_detectable(0.012, 10)  # a stricter level needs more
    assert study.paired_detectable(0.012, 1) is None
    # Far beyond the noise scipy's noncentral tails are NaN; the power is still a number.
    for effect in (0.015, -0.015, 0.1):
        assert 0.99 < study.paired_power(effect, 0.0017, 4, alpha=0.05 / 4) <= 1


def test_welch_matches_scipy():
    from scipy import stats

    a, b = [0.81, 0.83, 0.82, 0.80], [0.79, 0.80, 0.78]
    ours = study.welch(a, b)
    t, p = stats.ttest_ind(a, b, equal_var=False)
    assert ours["t"] == pytest.approx(t) and ours["p"] == pytest.approx(p)
    assert ours["diff"] == pytest.approx(np.mean(a) - np.mean(b))
    assert study.welch([0.8], b) is None


def _parse_quick(output_dir, *flags):
    study.FLAGS.unparse_flags()
    study.FLAGS(["study.py", "--quick", f"--output_dir={output_dir}", *flags])
    plan.apply_quick_defaults()
    study_runs._CACHE.clear()


def test_the_random_search_runs_after_its_pmpl_search_and_feeds_random_searched(tmp_path):
    _parse_quick(tmp_path, "--variants=mobilenet_v2,searched,random_searched", "--seeds=0,1")
    config = study.Config(32, 0.35)
    kinds = [(t.kind, t.variant, t.seed) for t in plan.plan_tasks([config], [0, 1], [
        "mobilenet_v2", "searched", "random_searched"])]  # fmt: skip
    for seed in (0, 1):
        at = kinds.index(("search", None, seed))
        assert kinds[at + 1] == ("random_search", None, seed)
        assert kinds.index(("train", "random_searched", seed)) > at + 1
    random_search = plan.Task("random_search", config, seed=1)
    assert random_search.run_id == "random_search_a0.35_px32_seed1"
    # The variant trains the random search's winner, not a draw of its own.
    winner = km.ArchitectureSpec(["identity"] * 16 + ["ssp"], placement="hidden").to_dict()
    plan.write_json(
        plan.result_path(random_search.run_id),
        {"settings": plan.settings(), "kind": "random_search", "architecture": winner},
    )
    assert study_runs.variant_architecture("random_searched", config, 1, [0, 1]) == winner
    study.FLAGS.unparse_flags()


def test_a_search_stage_can_run_on_fewer_seeds_than_the_fixed_study(tmp_path):
    from absl import app

    _parse_quick(tmp_path, "--variants=mobilenet_v2,searched,random_searched",
                 "--seeds=0,1,2", "--search_seeds=0,2")  # fmt: skip
    config = study.Config(32, 0.35)
    variants = ["mobilenet_v2", "searched", "random_searched"]
    tasks = {(t.kind, t.variant, t.seed) for t in plan.plan_tasks([config], [0, 1, 2], variants)}
    for seed, searched in ((0, True), (1, False), (2, True)):
        assert ("train", "mobilenet_v2", seed) in tasks
        for task in (("search", None, seed), ("random_search", None, seed),
                     ("train", "searched", seed), ("train", "random_searched", seed)):  # fmt: skip
            assert (task in tasks) == searched, task
    # The latency run times the searched architectures of the stage's seeds only.
    for seed in (0, 2):
        spec = km.ArchitectureSpec(["identity"] * 16 + [["ssp", "avg3"][seed // 2]])
        plan.write_json(
            plan.result_path(plan.Task("search", config, seed=seed).run_id),
            {"settings": plan.settings(), "kind": "search", "architecture": spec.to_dict()},
        )
    _, by_seed = study_runs.latency_models(config, ["mobilenet_v2", "searched"], [0, 1, 2])
    assert sorted(by_seed["searched"]) == ["0", "2"]
    assert study_runs.latency_coverage(variants, [0, 1, 2])["search_seeds"] == [0, 2]
    for bad, message in (("--search_seeds=0,3", "distinct seeds of --seeds"),
                         ("--search_seeds=0,0", "distinct seeds of --seeds"),
                         ("--search_seeds=x", "takes numbers")):  # fmt: skip
        _parse_quick(tmp_path, "--seeds=0,1,2", "--variants=mobilenet_v2,searched", bad)
        with pytest.raises(app.UsageError, match=message):
            plan.parse_plan_flags()
    _parse_quick(tmp_path, "--seeds=0,1", "--search_seeds=0", "--variants=mobilenet_v2,mp_paper")
    with pytest.raises(app.UsageError, match="none of its variants"):
        plan.parse_plan_flags()
    _parse_quick(tmp_path, "--seeds=0,1", "--search_seeds=0", "--search_once",
                 "--variants=searched")  # fmt: skip
    with pytest.raises(app.UsageError, match="exclude each other"):
        plan.parse_plan_flags()
    study.FLAGS.unparse_flags()


@pytest.mark.slow
def test_the_random_search_spends_its_searchs_cpu_time_and_keeps_the_best(tmp_path, monkeypatch):
    _parse_quick(tmp_path, "--train_images=128")
    config = study.Config(32, 0.35)
    search = plan.Task("search", config, seed=0)
    plan.write_json(
        plan.result_path(search.run_id),
        {"settings": plan.settings(), "kind": "search", "cpu_seconds": 25.0},
    )
    # A clock whose every architecture costs 10 CPU seconds: 3 fit the budget of 25
    # (the third starts at 20), whatever this machine's speed.
    ticks = iter(range(0, 10**6, 10))  # two readings per architecture, 10 s apart
    monkeypatch.setattr(study_runs, "CPU_CLOCK", lambda: float(next(ticks)))
    result = study_runs.run_random_search(plan.Task("random_search", config, seed=0))
    tried = result["tried"]
    assert len(tried) == 3 and result["spent_cpu_seconds"] == 30.0
    assert result["budget_cpu_seconds"] == 25.0
    scores = [t["held_out_accuracy"] for t in tried]
    assert result["best_index"] == scores.index(max(scores))
    assert result["architecture"] == tried[result["best_index"]]["architecture"]
    # Its draws are its own: none is random_arch's architecture of the seed.
    drawn = [km.ArchitectureSpec.from_dict(t["architecture"]).ops for t in tried]
    assert len({tuple(map(str, ops)) for ops in drawn}) == 3
    assert km.ArchitectureSpec.from_dict(study_runs.random_architecture(config, 0)).ops not in drawn
    assert result["held_out_examples"] == 64 and result["weights_examples"] == 64
    study.FLAGS.unparse_flags()


def test_a_child_with_no_enhancer_takes_mobilenet_v2s_training_of_its_seed(tmp_path):
    _parse_quick(tmp_path, "--variants=mobilenet_v2,searched,random_matched", "--seeds=0")
    config = study.Config(32, 0.35)
    task = plan.Task("train", config, variant="searched", seed=0)
    plain = km.ArchitectureSpec(["identity"] * 17, placement="hidden").to_dict()
    with_ssp = km.ArchitectureSpec(["identity"] * 16 + ["ssp"], placement="hidden").to_dict()
    assert study_runs.same_training_as(task, plain) is None  # MobileNetV2's run not stored yet
    baseline_task = plan.Task("train", config, variant="mobilenet_v2", seed=0)
    baseline = {
        "settings": plan.settings(), "kind": "train", "run_id": baseline_task.run_id,
        "meta_pooling": "none", "test_accuracy": 0.5, "train_seconds": 40.0,
        "search_seconds": 0.0, "time_to_model_seconds": 40.0,
    }  # fmt: skip
    plan.write_json(plan.result_path(baseline_task.run_id), baseline)
    found = study_runs.same_training_as(task, plain)
    assert found["run_id"] == baseline_task.run_id
    # An enhancer, another seed's baseline, or a child with inherited weights trains.
    assert study_runs.same_training_as(task, with_ssp) is None
    other_seed = plan.Task("train", config, variant="searched", seed=1)
    assert study_runs.same_training_as(other_seed, plain) is None
    assert study_runs.same_training_as(task, plain, model=object()) is None
    result = study_runs.reused_result(found, plain, search_seconds=30.0)
    assert result["same_training_as"] == baseline_task.run_id
    assert result["meta_pooling"] == plain and result["test_accuracy"] == 0.5
    assert result["time_to_model_seconds"] == 70.0
    assert "no enhancer: the training of mobilenet_v2_a0.35_px32_seed0" in report.summary_line(
        task, result
    )
    study.FLAGS.unparse_flags()


def test_an_architecture_with_no_enhancer_is_mobilenet_v2_weight_for_weight():
    # What lets a child with no enhancer take MobileNetV2's training of its seed.
    def built(meta_pooling):
        keras.utils.set_random_seed(3)
        return km.MobileNetV2MP(
            weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=10,
            meta_pooling=meta_pooling, batch_norm_momentum=0.9,
        )  # fmt: skip

    plain = built("none")
    no_enhancer = built(km.ArchitectureSpec(["identity"] * 17, placement="hidden"))
    assert [w.name for w in no_enhancer.weights] == [w.name for w in plain.weights]
    for ours, theirs in zip(no_enhancer.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(ours, theirs)

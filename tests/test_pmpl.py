"""PMPLCallback mechanics: architecture steps, the fixing rule, logs, resume, errors.

Most tests use a tiny model whose search points carry MobileNetV2MP names
(tests/helpers.py): the callback only looks at MetaPoolingBlocks, and the tiny
model traces in a second where MobileNetV2MP's supernet takes ~20 s.
"""

import csv
import json
import logging
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import tensorflow as tf
from helpers import block_or_scatter_task, tiny_search_model

from keras_metapool._keras import keras
from keras_metapool.search import (
    PMPLCallback,
    SearchUndecidedWarning,
    decode_fixed_code,
    fixed_code,
    late_stage_epoch,
    plot_search,
)
from keras_metapool.search.decision import DECISION_TOLERANCE

CANDIDATES = ("identity", "max3", "avg3", "avg5")


def _compiled(model, learning_rate=1e-2):
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy")
    return model


def _logits_for(probabilities):
    return np.log(np.asarray(probabilities, np.float32))


def _data(count=64, seed=0):
    return block_or_scatter_task(count, seed)


class _Probe(keras.callbacks.Callback):
    """Records every point's fixed ops at each epoch end."""

    def __init__(self):
        super().__init__()
        self.fixed = []
        self.traces = []

    def on_train_batch_end(self, batch, logs=None):
        self.traces.append(self.model.train_function.experimental_get_tracing_count())

    def on_epoch_end(self, epoch, logs=None):
        self.fixed.append(
            {
                layer.name: layer.fixed_ops
                for layer in self.model.layers
                if hasattr(layer, "fixed_ops")
            }
        )


# -- the fixing rule ---------------------------------------------------------------
@pytest.mark.slow
def test_fixing_rule_fixes_the_argmax_only_past_the_threshold_then_top2_late():
    model = _compiled(tiny_search_model(CANDIDATES, points=(1, 2, 3)))
    blocks = [model.get_layer(f"block_{i}_mp") for i in (1, 2, 3)]
    # block 1: the argmax is candidate #2 (avg3), margin 0.25 >= 0.2.
    blocks[0].search_logits.assign(_logits_for([0.15, 0.15, 0.5, 0.2]))
    # block 2: margin 0.15 < 0.2: stays searching until the late stage,
    # which fixes its top two (avg5 and identity), in candidate order.
    blocks[1].search_logits.assign(_logits_for([0.3, 0.1, 0.15, 0.45]))
    # block 3: the top-1 is candidate #0 with margin exactly 0.2 (0.19999999
    # on some CPUs: within DECISION_TOLERANCE, so decided everywhere).
    blocks[2].search_logits.assign(_logits_for([0.45, 0.25, 0.15, 0.15]))
    x, y = _data(16)
    probe = _Probe()
    # learning_rate=0, weight_decay=0: the logits stay where they were set.
    pmpl = PMPLCallback.paper(learning_rate=1e-30, weight_decay=0.0, verbose=0)
    model.fit(x, y, batch_size=16, epochs=3, callbacks=[pmpl, probe], verbose=0)
    assert late_stage_epoch(3) == 2
    first, second, third = probe.fixed
    assert first == {"block_1_mp": ("avg3",), "block_2_mp": None, "block_3_mp": ("identity",)}
    assert second["block_2_mp"] is None
    assert third["block_2_mp"] == ("identity", "avg5")
    rows = {row["point"]: row for row in pmpl.summary_rows()}
    assert rows["block_1_mp"]["fixed_at_step"] == 1
    assert rows["block_2_mp"]["fixed_at_step"] is None  # the late stage fixed it


def test_a_margin_within_the_tolerance_of_the_threshold_decides_and_one_clearly_below_does_not():
    # Margins a few float32 steps below tau (what another CPU computes for the
    # same logits) decide; 1e-4 below does not. (The evidence rule's own case
    # is in test_decision.py.)
    bar = 0.2
    candidates = ("identity", "ssp")
    for gap, expected in ((4 * DECISION_TOLERANCE / 10, True), (1e-4, False)):
        top = np.float32(0.5 + np.float32(bar - gap) / 2)
        model = _compiled(tiny_search_model(candidates, points=(1,)))
        block = model.get_layer("block_1_mp")
        block.search_logits.assign(_logits_for([1 - top, top]))
        pmpl = PMPLCallback.paper(threshold=bar, verbose=0)
        _, decided, margin = pmpl._margin_decision(block)
        assert abs(float(margin) - (bar - gap)) < 1e-5
        assert bool(decided) is expected, gap


def test_the_compiled_step_sums_each_pair_times_the_previous_step():
    # The evidence's lag products, as the callback keeps them, against the
    # same sums recomputed from the per-step slopes (differences of the
    # running slope sums a probe reads after every step).
    model = _compiled(tiny_search_model(CANDIDATES, points=(1, 2)))
    x, y = _data(96)
    pmpl = PMPLCallback(warmup=0.0, error_rate=1e-9, late_stage=1.0, verbose=0)
    sums = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            sums.append([total.numpy().copy() for total in pmpl._state.evidence_sum])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nothing decided: the undecided warning
        model.fit(x, y, batch_size=16, epochs=2, callbacks=[pmpl, Probe()], verbose=0)
    assert pmpl.decided_points == 0
    for point in range(2):
        running = np.array([step[point] for step in sums])
        slopes = np.diff(np.concatenate([np.zeros_like(running[:1]), running]), axis=0)
        pairs = slopes[:, :, None] - slopes[:, None, :]
        expected = np.einsum("tij,tij->ij", pairs[1:], pairs[:-1])
        kept = pmpl._state.evidence_lag_products[point].numpy()
        np.testing.assert_allclose(kept, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
        assert np.abs(expected).max() > 0  # the sums saw real slopes
        assert pmpl._state.evidence_count[point].numpy() == len(sums)


def test_threshold_and_fix_every_are_respected():
    model = _compiled(tiny_search_model(CANDIDATES, points=(1,)))
    block = model.get_layer("block_1_mp")
    block.search_logits.assign(_logits_for([0.15, 0.15, 0.5, 0.2]))  # margin 0.3
    x, y = _data(16)
    probe = _Probe()
    pmpl = PMPLCallback.paper(
        learning_rate=1e-30, weight_decay=0.0, threshold=0.35, fix_every=2, verbose=0
    )
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[pmpl, probe], verbose=0)
    # Margin 0.3 < tau 0.35: never fixed to the argmax; the end of fit fixes
    # the top two.
    assert probe.fixed[0]["block_1_mp"] is None
    assert block.fixed_ops == ("avg3", "avg5")

    model = _compiled(tiny_search_model(CANDIDATES, points=(1,)))
    block = model.get_layer("block_1_mp")
    block.search_logits.assign(_logits_for([0.15, 0.15, 0.5, 0.2]))
    pmpl = PMPLCallback.paper(learning_rate=1e-30, weight_decay=0.0, fix_every=2, verbose=0)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[pmpl], verbose=0)
    # Confident from step 1, but checked only every 2nd step.
    assert pmpl.summary_rows()[0]["fixed_at_step"] == 2


def test_fixed_points_keep_their_search_logits_and_fixing_does_not_retrace():
    keras.utils.set_random_seed(0)
    model = _compiled(tiny_search_model(CANDIDATES, points=(1, 2)))
    fixed_block = model.get_layer("block_1_mp")
    fixed_block.fix("avg3")
    frozen = fixed_block.search_logits.numpy().copy()
    x, y = _data(64)
    # avg3 leads block 2 by the margin; checked at step 3, mid-fit.
    model.get_layer("block_2_mp").search_logits.assign(_logits_for([0.15, 0.15, 0.5, 0.2]))
    pmpl = PMPLCallback.paper(learning_rate=1e-30, weight_decay=0.0, fix_every=3, verbose=0)
    probe = _Probe()
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[pmpl, probe], verbose=0)
    np.testing.assert_array_equal(fixed_block.search_logits.numpy(), frozen)
    assert model.get_layer("block_2_mp").fixed_ops == ("avg3",)
    assert pmpl.summary_rows()[1]["fixed_at_step"] == 3
    # One trace (the optimizer and metrics are built before it), and no
    # retrace after the first step, though a point was fixed in mid-fit.
    assert set(probe.traces) == {1}


# -- architecture steps------------------------------------------------------------------
def test_user_optimizer_never_touches_search_logits_and_the_callback_does():
    x, y = _data(64)
    model = _compiled(tiny_search_model(CANDIDATES, points=(1,)))
    block = model.get_layer("block_1_mp")
    before = block.search_logits.numpy().copy()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # no PMPL: logits untouched
    np.testing.assert_array_equal(block.search_logits.numpy(), before)
    assert all("alpha" not in v.name for v in model.trainable_variables)
    pmpl = PMPLCallback(warmup=0.5, verbose=0)
    model.fit(x, y, batch_size=16, epochs=1, callbacks=[pmpl], verbose=0)
    assert not np.allclose(block.search_logits.numpy(), before)
    state = model._pmpl_state
    # One architecture step per training step after the warm-up (half of 4 steps).
    assert int(state.warmup_steps.numpy()) == 2
    assert int(state.adam_steps.numpy()) == 2
    assert pmpl.budget["arch_steps"] == 2
    assert int(state.arch_batches.numpy()) == 0  # one-level: no held-out batch drawn


def test_bilevel_architecture_step_uses_only_the_held_out_batches():
    x, y = _data(64)
    # Held-out batches with zero sample weights carry no gradient: with no
    # weight decay the logits must not move, though the weights train.
    zero_weights = np.zeros(len(y), np.float32)
    arch = tf.data.Dataset.from_tensor_slices((x, y, zero_weights)).batch(16)
    model = _compiled(tiny_search_model(CANDIDATES, points=(1,)))
    block = model.get_layer("block_1_mp")
    before = block.search_logits.numpy().copy()
    kernel = model.get_layer("stem").kernel.numpy().copy()
    pmpl = PMPLCallback(arch_data=arch, learning_rate=0.1, weight_decay=0.0, verbose=0)
    model.fit(x, y, batch_size=16, epochs=2, callbacks=[pmpl], verbose=0)
    np.testing.assert_allclose(block.search_logits.numpy(), before, atol=1e-7)
    assert not np.allclose(model.get_layer("stem").kernel.numpy(), kernel)
    # 8 steps; the search is the first epoch (the late stage, at 2/3 of 2
    # epochs, fixes every point at the second): 4 steps, 1 (a quarter) of
    # them warm-up. No held-out batch is drawn in the warm-up or once all
    # points are fixed.
    assert int(model._pmpl_state.arch_batches.numpy()) == 3


@pytest.mark.parametrize("arch", [False, True], ids=["one-level", "held-out"])
def test_the_step_that_finds_the_data_ended_searches_nothing(arch):
    # With no known length (a filtered dataset), fit ends each epoch when a
    # train step's get_next fails. Nothing of the search may run in that
    # step: before it waited for the batch, it took an architecture step, counted a
    # training step, and could have its held-out draw cancelled mid-flight,
    # which ended the held-out stream (fit then stopped a later epoch early).
    x, y = _data(48)
    examples = tf.data.Dataset.from_tensor_slices((x, y))
    unknown_length = examples.filter(lambda *_: True).batch(16)  # 3 steps an epoch
    model = _compiled(tiny_search_model(CANDIDATES, points=(1,)))
    arch_data = examples.batch(16) if arch else None
    pmpl = PMPLCallback(arch_data=arch_data, warmup=0.0, search_epochs=4, verbose=0)
    model.fit(unknown_length, epochs=2, callbacks=[pmpl], verbose=0)
    state = model._pmpl_state
    assert int(state.train_steps.numpy()) == 6
    assert int(state.adam_steps.numpy()) == 6
    assert int(state.arch_batches.numpy()) == (6 if arch else 0)


@pytest.mark.slow
def test_mirrored_strategy_search_reaches_the_single_device_architecture():
    script = os.path.join(os.path.dirname(__file__), "mirrored_search_script.py")
    result = subprocess.run(
        [sys.executable, script], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    single, mirrored = runs["single"], runs["mirrored"]
    assert mirrored["replicas"] == 2
    assert single["ops"] == mirrored["ops"] == ["avg3"]
    assert mirrored["fixed_at_step"] is not None and mirrored["accuracy"] > 0.95
    # Each replica drew its own held-out batch every step.
    assert mirrored["arch_batches"] == 2 * single["arch_batches"]


# -- visibility ----------------------------------------------------------------------
def test_logs_reach_history_and_csv_logger(tmp_path):
    x, y = _data(32)
    model = _compiled(tiny_search_model(CANDIDATES, points=(1, 2)))
    model.get_layer("block_1_mp").search_logits.assign(_logits_for([0.1, 0.1, 0.7, 0.1]))
    csv_path = tmp_path / "log.csv"
    pmpl = PMPLCallback.paper(learning_rate=1e-30, weight_decay=0.0, verbose=0)
    history = model.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        callbacks=[pmpl, keras.callbacks.CSVLogger(str(csv_path))],
        verbose=0,
    )
    logs = history.history
    np.testing.assert_allclose(logs["pmpl/block_1_mp/avg3"], [0.7, 0.7], rtol=1e-5)
    probabilities = sum(logs[f"pmpl/block_2_mp/{op}"][0] for op in CANDIDATES)
    assert probabilities == pytest.approx(1.0, abs=1e-5)
    assert decode_fixed_code(logs["pmpl/block_1_mp/fixed"][0]) == ("avg3",)
    assert logs["pmpl/block_2_mp/fixed"][0] == 0
    assert logs["pmpl/fixed_points"] == [1, 2]  # the late stage fixed block 2 at epoch 2
    assert logs["pmpl/decided_points"] == [1, 1]  # by the margin: block 1 only
    assert logs["pmpl_evidence/block_1_mp"][0] == pytest.approx(0.6, rel=1e-4)  # its margin
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["pmpl/block_1_mp/avg3"]) == pytest.approx(0.7, rel=1e-5)
    assert len(pmpl.history) == 2


def test_verbose_line_and_summary_describe_the_decisions(capsys):
    x, y = _data(16)
    model = _compiled(tiny_search_model(CANDIDATES, points=(1, 2)))
    model.get_layer("block_1_mp").search_logits.assign(_logits_for([0.1, 0.1, 0.1, 0.7]))
    pmpl = PMPLCallback.paper(learning_rate=1e-30, weight_decay=0.0, late_stage=1.0, verbose=1)
    with pytest.warns(SearchUndecidedWarning):  # 1 of 2 decided, logits can't move
        model.fit(x, y, batch_size=16, epochs=1, callbacks=[pmpl], verbose=0)
    out = capsys.readouterr().out
    assert "PMPL epoch 1: 1/2 points fixed by the margin; new: block_1_mp->avg5" in out
    assert "end of fit: undecided points -> top2: block_2_mp->" in out
    lines = []
    pmpl.summary(print_fn=lines.append)
    row = next(line for line in lines if "block_1_mp" in line)
    assert "decided" in row and "avg5" in row and "5x5" in row and "0.700" in row
    assert " 0.60 " in row  # the evidence: its margin when fixed
    row = next(line for line in lines if "block_2_mp" in line)
    assert "defaulted" in row
    assert lines[-1].startswith(
        "1/2 points decided by evidence (margin >= 0.2), 1 defaulted to 'top2'; 2 enlarge"
    )


def test_logged_codes_mean_the_same_ops_whatever_the_candidate_order(tmp_path):
    # A model listing its candidates in another order than the registry, and
    # a CSV whose columns CSVLogger sorts: the plot's records still decode
    # the ops that were fixed, and list the points in network order.
    from keras_metapool.search.plot import _records_from_logs

    candidates = ("avg5", "identity", "ssp", "max3")
    x, y = _data(16)
    model = _compiled(tiny_search_model(candidates, points=(1, 2, 10)))
    model.get_layer("block_1_mp").fix("ssp")
    model.get_layer("block_10_mp").fix(("identity", "avg5"))
    csv_path = tmp_path / "log.csv"
    pmpl = PMPLCallback.paper(learning_rate=1e-30, weight_decay=0.0, late_stage=1.0, verbose=0)
    callbacks = [pmpl, keras.callbacks.CSVLogger(str(csv_path))]
    model.fit(x, y, batch_size=16, epochs=1, callbacks=callbacks, verbose=0)
    with open(csv_path) as f:
        row = next(csv.DictReader(f))
    columns = {key: [float(value)] for key, value in row.items() if key.startswith("pmpl/")}
    assert list(columns).index("pmpl/block_10_mp/fixed") < list(columns).index(
        "pmpl/block_2_mp/fixed"
    )
    record = _records_from_logs(columns)[-1]
    assert list(record["fixed"]) == ["block_1_mp", "block_2_mp", "block_10_mp"]
    assert record["fixed"]["block_1_mp"] == ("ssp",)
    assert set(record["fixed"]["block_10_mp"]) == {"identity", "avg5"}
    # block_2 was still searching when the epoch was logged (fit's end fixed it after).
    assert record["fixed"]["block_2_mp"] is None


def test_fixed_code_round_trip():
    for ops in [("identity",), ("max3", "avg5"), ("identity", "avg3")]:
        assert decode_fixed_code(fixed_code(ops, CANDIDATES), CANDIDATES) == ops
    assert fixed_code(None, CANDIDATES) == 0
    assert decode_fixed_code(0.0, CANDIDATES) is None
    with pytest.raises(ValueError, match="not a fixed-state code"):
        decode_fixed_code(2 ** len(CANDIDATES), CANDIDATES)


# -- resuming ------------------------------------------------------------------------
class _Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def _resume_data():
    """(train, arch) datasets, deterministic: no shuffling."""
    x, y = block_or_scatter_task(256, seed=0)
    xa, ya = block_or_scatter_task(256, seed=1)
    arch = tf.data.Dataset.from_tensor_slices((xa, ya)).batch(32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(32), arch


def _fresh_resume_model():
    """The same initial model every time, as a restarted process would build."""
    keras.utils.set_random_seed(7)
    return _compiled(tiny_search_model(CANDIDATES, points=(1, 2)))


def _resume_run(tmp_path, interrupt_at=None):
    train, arch = _resume_data()
    fresh = _fresh_resume_model

    def callbacks(extra=()):
        pmpl = PMPLCallback(arch_data=arch, learning_rate=0.05, late_stage=0.75, verbose=0)
        backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
        return pmpl, [backup, pmpl, *extra]

    model = fresh()
    pmpl, cbs = callbacks([_Interrupt(interrupt_at)] if interrupt_at is not None else [])
    if interrupt_at is None:
        model.fit(train, epochs=4, callbacks=cbs, verbose=0)
        return model, pmpl
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(train, epochs=4, callbacks=cbs, verbose=0)
    model = fresh()  # a new process would start from scratch like this
    pmpl, cbs = callbacks()
    model.fit(train, epochs=4, callbacks=cbs, verbose=0)
    return model, pmpl


@pytest.mark.slow
def test_interrupted_search_resumes_to_the_uninterrupted_result(tmp_path):
    reference, reference_pmpl = _resume_run(tmp_path / "a")
    resumed, resumed_pmpl = _resume_run(tmp_path / "b", interrupt_at=2)
    for index in (1, 2):
        name = f"block_{index}_mp"
        ref_block, res_block = reference.get_layer(name), resumed.get_layer(name)
        assert res_block.fixed_ops == ref_block.fixed_ops
        np.testing.assert_allclose(
            res_block.search_logits.numpy(), ref_block.search_logits.numpy(), atol=1e-4
        )
    ref_state, res_state = reference._pmpl_state, resumed._pmpl_state
    for a, b in zip(ref_state.adam_v, res_state.adam_v):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-9)
    assert int(res_state.adam_steps.numpy()) == int(ref_state.adam_steps.numpy())
    assert int(res_state.arch_batches.numpy()) == int(ref_state.arch_batches.numpy())
    # The resumed run saw only epochs 2-3; the step at which each point was
    # fixed survives the restore.
    assert [r["fixed_at_step"] for r in resumed_pmpl.summary_rows()] == [
        r["fixed_at_step"] for r in reference_pmpl.summary_rows()
    ]


@pytest.mark.slow
def test_search_split_over_two_fits_resumes_from_a_tf_checkpoint(tmp_path):
    reference, _ = _resume_run(tmp_path / "a")
    train, arch = _resume_data()
    fresh = _fresh_resume_model

    def pmpl():
        return PMPLCallback(
            arch_data=arch, learning_rate=0.05, late_stage=0.75, search_epochs=4, verbose=0
        )

    first = fresh()
    first.fit(train, epochs=2, callbacks=[pmpl()], verbose=0)
    first.save_weights(str(tmp_path / "ckpt"))  # TF format: carries the search state
    second = fresh()
    second.load_weights(str(tmp_path / "ckpt"))
    second.fit(train, initial_epoch=2, epochs=4, callbacks=[pmpl()], verbose=0)
    for index in (1, 2):
        name = f"block_{index}_mp"
        assert second.get_layer(name).fixed_ops == reference.get_layer(name).fixed_ops
        np.testing.assert_allclose(
            second.get_layer(name).search_logits.numpy(),
            reference.get_layer(name).search_logits.numpy(),
            atol=1e-4,
        )
    assert int(second._pmpl_state.adam_steps.numpy()) == int(
        reference._pmpl_state.adam_steps.numpy()
    )


def test_a_fit_shorter_than_search_epochs_leaves_undecided_points_searching():
    x, y = _data(16)
    model = _compiled(tiny_search_model(CANDIDATES, points=(1,)))
    pmpl = PMPLCallback.paper(learning_rate=1e-30, weight_decay=0.0, search_epochs=3, verbose=0)
    model.fit(x, y, batch_size=16, epochs=1, callbacks=[pmpl], verbose=0)
    assert model.get_layer("block_1_mp").fixed_ops is None
    with pytest.warns(SearchUndecidedWarning):
        model.fit(x, y, batch_size=16, initial_epoch=1, epochs=3, callbacks=[pmpl], verbose=0)
    assert len(model.get_layer("block_1_mp").fixed_ops) == 2  # late stage at epoch 2


def test_a_search_resumed_without_its_state_says_so(tmp_path):
    x, y = _data(16)
    model = _compiled(tiny_search_model(CANDIDATES, points=(1,)))
    kwargs = dict(batch_size=16, epochs=3, verbose=0)
    model.fit(x, y, callbacks=[PMPLCallback(search_epochs=3, verbose=0)], **dict(kwargs, epochs=1))
    model.save_weights(str(tmp_path / "search.h5"))
    # The same model carries its state into the next fit: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.fit(x, y, callbacks=[PMPLCallback(search_epochs=3, verbose=0)], initial_epoch=1,
                  **dict(kwargs, epochs=2))  # fmt: skip
    # A model loaded from .h5 has the logits and the masks, not the counters.
    loaded = _compiled(tiny_search_model(CANDIDATES, points=(1,)))
    loaded.load_weights(str(tmp_path / "search.h5"))
    with pytest.warns(UserWarning, match="starts at epoch 2 with no search state"):
        loaded.fit(x, y, callbacks=[PMPLCallback(verbose=0)], initial_epoch=1, **kwargs)


# -- the model after the search --------------------------------------------------------
def test_train_step_is_restored_after_fit_and_the_model_saves(tmp_path):
    x, y = _data(16)
    model = _compiled(tiny_search_model(CANDIDATES, points=(1,)))
    before = model.get_weights()
    model.fit(x, y, batch_size=16, epochs=1, callbacks=[PMPLCallback(verbose=0)], verbose=0)
    assert "train_step" not in model.__dict__
    # The search's own state (moments, evidence, counters) is checkpointed
    # with the model but is not one of its weights: the weight list is the
    # same before and after a search, so set_weights and count_params agree.
    assert len(model.get_weights()) == len(before)
    model.set_weights(model.get_weights())
    logits = model.get_layer("block_1_mp").search_logits.numpy().copy()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # a plain fit: no architecture step
    np.testing.assert_array_equal(model.get_layer("block_1_mp").search_logits.numpy(), logits)
    path = str(tmp_path / "searched.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert reloaded.get_layer("block_1_mp").fixed_ops == model.get_layer("block_1_mp").fixed_ops
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))


# -- bad input -----------------------------------------------------------------------
def test_errors_are_clear():
    x, y = _data(8)
    plain = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(2)])  # fmt: skip
    plain.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="no MetaPoolingBlock"):
        plain.fit(x, y, epochs=1, callbacks=[PMPLCallback()], verbose=0)
    with pytest.raises(ValueError, match="batched tf.data.Dataset"):
        PMPLCallback(arch_data=(x, y))
    with pytest.raises(ValueError, match="threshold"):
        PMPLCallback(threshold=0.0)
    with pytest.raises(ValueError, match="Unknown decision 'vote'. Valid values: evidence, margin"):
        PMPLCallback(decision="vote")
    with pytest.raises(ValueError, match="Valid values: identity, top2, argmax"):
        PMPLCallback(undecided="random")
    with pytest.raises(ValueError, match="positive number or 'auto'"):
        PMPLCallback(learning_rate="fast")
    with pytest.raises(ValueError, match="warmup"):
        PMPLCallback(warmup=1.0)
    with pytest.raises(ValueError, match="min_evidence_steps"):
        PMPLCallback(min_evidence_steps=0)
    with pytest.raises(ValueError, match="fix_every"):
        PMPLCallback(fix_every=0)
    with pytest.raises(ValueError, match="arch_step"):
        PMPLCallback(arch_step="during")
    model = _compiled(tiny_search_model(CANDIDATES, points=(1,)))
    unbatched = tf.data.Dataset.from_tensor_slices((x, y))
    with pytest.raises(ValueError, match="Is the dataset batched"):
        model.fit(x, y, epochs=1, callbacks=[PMPLCallback(arch_data=unbatched)], verbose=0)
    no_labels = tf.data.Dataset.from_tensor_slices(x).batch(4)
    with pytest.raises(ValueError, match=r"\(images, labels\)"):
        model.fit(x, y, epochs=1, callbacks=[PMPLCallback(arch_data=no_labels)], verbose=0)
    uncompiled = tiny_search_model(CANDIDATES, points=(1,))
    uncompiled.compile("adam")  # no loss
    with pytest.raises(ValueError, match="needs a loss"):
        uncompiled.fit(x, y, epochs=1, callbacks=[PMPLCallback()], verbose=0)
    # An empty held-out stream would end the first architecture step like the end
    # of the training data (fit stops the epoch, nothing says why).
    too_few = tf.data.Dataset.from_tensor_slices((x, y)).batch(16, drop_remainder=True)
    with pytest.raises(ValueError, match="`arch_data` is empty"):
        model.fit(x, y, epochs=1, callbacks=[PMPLCallback(arch_data=too_few)], verbose=0)


def test_early_stopping_that_restores_weights_is_refused_before_the_search_starts():
    # EarlyStopping(restore_best_weights=True) sets every weight of its best
    # epoch at the end of fit, the logits and the fixed points included: the
    # searched model would go back to searching, whatever the callbacks' order.
    x, y = _data(16)
    model = _compiled(tiny_search_model(CANDIDATES, points=(1,)))
    logits = model.get_layer("block_1_mp").search_logits.numpy().copy()
    restoring = keras.callbacks.EarlyStopping("loss", restore_best_weights=True)
    for callbacks in ([PMPLCallback(verbose=0), restoring], [restoring, PMPLCallback(verbose=0)]):
        with pytest.raises(
            ValueError, match=r"restore_best_weights=True\) would set the search logits"
        ):
            model.fit(x, y, batch_size=8, epochs=2, callbacks=callbacks, verbose=0)
        np.testing.assert_array_equal(model.get_layer("block_1_mp").search_logits.numpy(), logits)
    # Without it, EarlyStopping ends the search early (at its second epoch,
    # before the late stage at the fourth) and the points are fixed then.
    flat = keras.callbacks.LambdaCallback(on_epoch_end=lambda _, logs: logs.update(flat=0.0))
    stopping = keras.callbacks.EarlyStopping("flat", mode="max", patience=0)
    pmpl = PMPLCallback(learning_rate=1e-30, verbose=0)
    with pytest.warns(SearchUndecidedWarning):
        history = model.fit(x, y, batch_size=8, epochs=6, callbacks=[pmpl, flat, stopping],
                            verbose=0)  # fmt: skip
    assert len(history.epoch) == 2
    assert model.get_layer("block_1_mp").is_fixed


def test_an_overflowing_mixed_precision_step_leaves_the_search_logits_as_they_were():
    # A loss scale too large for float16: the loss-scale optimizer skips the
    # weights' update (and lowers the scale); the logits' update, from the same
    # non-finite gradients, must be skipped too, not turn the logits into NaN.
    x, y = _data(32)
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = tiny_search_model(CANDIDATES, points=(1,))
    optimizer = keras.mixed_precision.LossScaleOptimizer(
        keras.optimizers.SGD(0.01), initial_scale=2.0**60
    )
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy())
    pmpl = PMPLCallback(warmup=0.0, search_epochs=10, verbose=0)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[pmpl], verbose=0)
    state = model._pmpl_state
    assert np.all(np.isfinite(model.get_layer("block_1_mp").search_logits.numpy()))
    assert np.all(np.isfinite([v.numpy() for v in state.adam_m + state.adam_v]))
    skipped = int(state.train_steps.numpy()) - int(state.adam_steps.numpy())
    assert skipped >= 1  # 2**60 overflows float16 at least at the first step
    assert float(optimizer.loss_scale.numpy()) < 2.0**60


def test_a_fit_cut_short_by_data_that_ran_out_says_the_search_did_not_end():
    x, y = _data(32)
    model = _compiled(tiny_search_model(CANDIDATES, points=(1, 2)))
    once = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)  # 4 batches, no repeat
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(once, steps_per_epoch=6, epochs=3, callbacks=[PMPLCallback(verbose=0)],
                  verbose=0)  # fmt: skip
    (warning,) = [w for w in caught if issubclass(w.category, SearchUndecidedWarning)]
    assert "fit ended after epoch 1 of its 3" in str(warning.message)
    assert "2 of 2 points are undecided" in str(warning.message)
    # A search split over two fits ends its first fit unfinished, and says nothing.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=8, epochs=1, callbacks=[PMPLCallback(search_epochs=3)],
                  verbose=0)  # fmt: skip
    assert not [w for w in caught if issubclass(w.category, SearchUndecidedWarning)]


def test_held_out_search_logits_gradients_are_loss_scaled_under_mixed_precision():
    # float16 holds nothing below 6e-8: held-out gradients that small (here
    # made so by a sample weight of 1e-7) vanished without the weights' loss
    # scaling, and the search counted steps of zero evidence.
    x, y = _data(32)
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = tiny_search_model(CANDIDATES, points=(1,))
    model.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy())
    assert hasattr(model.optimizer, "get_scaled_loss")  # a loss-scale optimizer
    weights = np.full(len(y), 1e-7, np.float32)
    arch = tf.data.Dataset.from_tensor_slices((x, y, weights)).batch(8).repeat()
    pmpl = PMPLCallback(arch_data=arch, warmup=0.0, search_epochs=10, verbose=0)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[pmpl], verbose=0)
    state = model._pmpl_state
    assert int(state.adam_steps.numpy()) == 4
    assert np.count_nonzero(state.evidence_sum[0].numpy()) == len(CANDIDATES)


# -- plot_search -----------------------------------------------------------------------
def _png_size(path):
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


@pytest.mark.slow
def test_plot_search_draws_from_the_callback_and_from_history(tmp_path):
    x, y = _data(16)
    model = _compiled(tiny_search_model(CANDIDATES, points=(1, 2, 3)))
    model.get_layer("block_1_mp").search_logits.assign(_logits_for([0.1, 0.1, 0.7, 0.1]))
    pmpl = PMPLCallback(learning_rate=0.05, verbose=0)
    history = model.fit(x, y, batch_size=8, epochs=3, callbacks=[pmpl], verbose=0)
    from_callback = _png_size(plot_search(pmpl, str(tmp_path / "a.png")))
    from_history = _png_size(plot_search(history, str(tmp_path / "b.png")))
    # 3 point panels + the counts panel: one row of 4 panels.
    assert from_callback == from_history
    assert from_callback[0] > 2 * from_callback[1]


def test_plot_search_counts_without_probabilities_and_rejects_bad_input(tmp_path):
    x, y = _data(16)
    model = _compiled(tiny_search_model(CANDIDATES, points=(1,)))
    pmpl = PMPLCallback(log_probabilities=False, verbose=0)
    history = model.fit(x, y, batch_size=8, epochs=2, callbacks=[pmpl], verbose=0)
    width, height = _png_size(plot_search(history.history, str(tmp_path / "counts.png")))
    assert width > 0 and height > 0
    with pytest.raises(ValueError, match="No PMPL entries"):
        plot_search({"loss": [1.0]}, str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="does not exist"):
        plot_search(pmpl, str(tmp_path / "missing" / "x.png"))
    with pytest.raises(ValueError, match="run fit first"):
        plot_search(PMPLCallback(), str(tmp_path / "x.png"))


@pytest.mark.slow
def test_epochs_after_the_late_stage_run_the_fixed_ops_alone_and_quietly(caplog):
    # At 2/3 of 3 epochs every point is fixed; the third epoch is traced with
    # each point's op alone: same training, no "Gradients do not exist" per step.
    x, y = _data(64)
    # SSP has weights: idle, they once had no gradient in the fixed-op trace.
    model = _compiled(tiny_search_model(("identity", "ssp", "avg3"), points=(1, 2)))
    pmpl = PMPLCallback(verbose=0)
    tf_logger = logging.getLogger("tensorflow")  # does not propagate to the root
    tf_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level("WARNING", logger="tensorflow"):
            model.fit(x, y, batch_size=16, epochs=3, callbacks=[pmpl], verbose=0)
    finally:
        tf_logger.removeHandler(caplog.handler)
    assert "Gradients do not exist" not in caplog.text
    blocks = [model.get_layer(f"block_{i}_mp") for i in (1, 2)]
    assert all(block.is_fixed for block in blocks)
    # With nothing left to search, the third epoch is Keras' own step: the
    # search counted the 8 steps of the first two epochs only.
    assert int(model._pmpl_state.train_steps.numpy()) == 8
    # After fit the model traces in full again, its masks deciding the output.
    assert all(block._traced_ops is None for block in blocks)

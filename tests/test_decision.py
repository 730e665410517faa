"""The evidence rule's error bound and power, on synthetic slope streams.

The streams stand in for what the callback accumulates per point: each step,
one loss slope per candidate. A common part moves every slope alike (the
batch's difficulty) and cancels in the paired differences; each op's own part
is AR(1), because successive slopes are not independent (the weights move
slowly; real searches measured a lag-1 autocorrelation of 0.13-0.20 in the
pair differences, docs/search.md). Pure NumPy/TensorFlow, no training.
"""

import math
import warnings

import numpy as np
import pytest
import tensorflow as tf
from helpers import slope_streams, tiny_search_model

from keras_metapool._keras import keras
from keras_metapool.layers.candidate_ops import DEFAULT_CANDIDATES
from keras_metapool.search import PMPLCallback
from keras_metapool.search.decision import (
    DECISION_TOLERANCE,
    anytime_z_bar,
    comparisons,
    evidence_scores,
    evidence_verdict,
)

CANDIDATES = DEFAULT_CANDIDATES
MIN_STEPS = 20


def _run_rule(searches, points, steps, autocorrelation, bar_of, shift=0.0, seed=0):
    """Feeds streams through the rule; per point, the first step it decided and the op.

    ``bar_of(count)`` is the bar; ``shift`` lowers ``ssp``'s mean slope.
    """
    streams = searches * points
    decided_at = np.full(streams, -1)
    decided_op = np.full(streams, -1)
    evidence = slope_streams(
        streams, CANDIDATES, steps, autocorrelation, ("ssp", shift) if shift else None, seed
    )
    for step, count, slope_sum, squares, lag_products in evidence:
        if step < MIN_STEPS:
            continue
        best, z, _ = evidence_scores(count, slope_sum, squares, lag_products)
        decided, _ = evidence_verdict(best, z, CANDIDATES, bar_of(count))
        new = decided.numpy() & (decided_at < 0)
        decided_at[new] = step
        decided_op[new] = best.numpy()[new]
    return decided_at.reshape(searches, points), decided_op.reshape(searches, points)


def _anytime_bar(points, steps, error_rate=0.05):
    error = error_rate / comparisons([(len(CANDIDATES), True)] * points)
    return lambda count: anytime_z_bar(count, error, steps)


@pytest.mark.parametrize("autocorrelation", [0.0, 0.2])
def test_searches_with_no_signal_decide_a_point_at_most_at_the_error_rate(autocorrelation):
    searches, points, steps = 300, 8, 200
    decided_at, _ = _run_rule(searches, points, steps, autocorrelation, _anytime_bar(points, steps))
    rate = np.mean((decided_at >= 0).any(axis=1))
    assert rate <= 0.05, rate
    # The same streams against the one-look bar of the same error per
    # comparison (z 3.32), checked at every step as the rule looks: far more
    # often, so the bound is the bar's doing, not the streams' luck.
    one_look = 3.32  # the normal quantile of 1 - 0.05 / (2 * 8 points * 7 comparisons)
    fixed_at, _ = _run_rule(searches, points, steps, autocorrelation, lambda count: one_look)
    assert np.mean((fixed_at >= 0).any(axis=1)) > 0.1


def test_a_planted_shift_is_decided_to_the_op_that_carries_it():
    searches, steps = 400, 200
    decided_at, op = _run_rule(searches, 1, steps, 0.2, _anytime_bar(8, steps), shift=0.8, seed=1)
    found = (decided_at >= 0) & (op == CANDIDATES.index("ssp"))
    assert np.mean(found) >= 0.9
    # Nothing else was ever decided in its place.
    assert np.all(op[decided_at >= 0] == CANDIDATES.index("ssp"))


def test_the_bar_is_robbins_normal_mixture_tightest_at_the_planned_steps():
    error, planned = 1e-3, 400
    log_inverse = math.log(1 / error)
    rate = (2 * log_inverse + math.log(1 + 2 * log_inverse)) / planned
    # By hand at the planned count: n r = 2 log(1/a) + log(1 + 2 log(1/a)).
    scaled = planned * rate
    expected = math.sqrt(2 * (scaled + 1) / scaled * (0.5 * math.log(1 + scaled) + log_inverse))
    assert float(anytime_z_bar(planned, error, planned)) == pytest.approx(expected, rel=1e-5)
    bars = anytime_z_bar(np.array([20, 100, planned, 4 * planned, 40 * planned]), error, planned)
    bars = bars.numpy()
    assert bars[0] > bars[1] > bars[2]  # stricter early, when few steps are in
    assert bars[4] > bars[3]  # and slowly growing late (like sqrt(log n))
    # Everywhere above the one-look two-sided z of the same error (3.29).
    assert bars.min() > 3.29


def test_the_comparisons_count_each_op_against_identity():
    assert comparisons([(8, True), (3, True)]) == 7 + 2
    assert comparisons([(4, False)]) == 4  # no identity: the best against each other op


def test_batched_scores_equal_the_scores_of_each_point():
    rng = np.random.default_rng(3)
    count = np.array([25.0, 40.0, 60.0])
    slopes = rng.standard_normal((3, 70, 4))
    slope_sum = np.stack([s[: int(n)].sum(0) for s, n in zip(slopes, count)])
    squares = np.stack(
        [((s[: int(n), :, None] - s[: int(n), None, :]) ** 2).sum(0) for s, n in zip(slopes, count)]
    )
    lags = np.stack(
        [
            np.einsum(
                "tij,tij->ij",
                *(
                    s[1 : int(n), :, None] - s[1 : int(n), None, :],
                    s[: int(n) - 1, :, None] - s[: int(n) - 1, None, :],
                ),
            )  # fmt: skip
            for s, n in zip(slopes, count)
        ]
    )
    best, z, _ = evidence_scores(count, slope_sum, squares, lags)
    for i in range(3):
        one_best, one_z, _ = evidence_scores(count[i], slope_sum[i], squares[i], lags[i])
        assert int(one_best) == int(best[i])
        np.testing.assert_allclose(one_z.numpy(), z[i].numpy(), rtol=1e-5, atol=1e-5)
    # The z of op j is its mean lead over the best, in (widened) standard errors.
    plain_best, plain_z, _ = evidence_scores(count, slope_sum, squares)
    assert np.all(np.abs(z.numpy()) <= np.abs(plain_z.numpy()) + 1e-6)


def test_a_score_within_the_tolerance_of_its_bar_decides_and_one_clearly_below_does_not():
    candidates = ("identity", "ssp")
    for gap, expected in ((4 * DECISION_TOLERANCE / 10, True), (1e-4, False)):
        score = np.float32(4.0 - gap)  # the best op (ssp) beats identity by z = score
        decided, _ = evidence_verdict(1, tf.constant([score, 0.0]), candidates, 4.0)
        assert bool(decided) is expected, gap


@pytest.mark.slow
def test_a_search_whose_candidates_are_one_function_decides_nothing():
    # On a 1x1 map every pooling window sees the pixel itself: the four
    # candidates compute the same function, so their slopes are equal.
    candidates = ("identity", "max3", "avg3", "max5")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 1, 1, 3)).astype("float32")
    y = (x[:, 0, 0, 0] > 0).astype("int32")
    keras.utils.set_random_seed(0)
    model = tiny_search_model(candidates, input_shape=(1, 1, 3), points=(1, 2))
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", ["accuracy"])
    pmpl = PMPLCallback(verbose=0, late_stage=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the undecided search's warning
        model.fit(x, y, batch_size=8, epochs=3, callbacks=[pmpl], verbose=0)
    assert pmpl._state.evidence_count.numpy().min() >= 3 * 32 * 0.75 - 1  # it looked
    assert pmpl.decided_points == 0
    assert {row["state"] for row in pmpl.summary_rows()} == {"defaulted"}

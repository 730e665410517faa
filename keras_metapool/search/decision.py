"""How a searching point is decided: the evidence rule and the margin rule.

The evidence rule (the default) watches, per point, the loss slope along each
candidate's mixture weight, batch after batch, and decides a point once one op
beats ``identity`` (or ``identity`` beats every op) by more than a
*time-uniform* bar: a bar that holds however often it is checked, so the
chance that noise in the slopes alone decides any point stays at or below
``error_rate`` (asymptotically: the bar assumes many steps and a dependence
the lag-1 correction captures). A steady slope difference is decided whatever
causes it, including effects that are not gains in accuracy. docs/search.md,
"The evidence rule", has the derivation and the measurements.

Every function here is elementwise over leading batch dimensions, so the same
code runs inside the compiled train step (one point) and in simulations (many
slope streams at once).
"""

import math

import numpy as np
import tensorflow as tf

from keras_metapool.layers.candidate_ops import IDENTITY

#: How a point is decided during the search (PMPLCallback's ``decision``).
DECISION_RULES = ("evidence", "margin")
#: The evidence rule's default family-wise error: the chance that a search with
#: no signal decides any of its points.
DEFAULT_ERROR_RATE = 0.05
#: A score within this of its bar counts as reaching it. The same logits give a
#: softmax that differs in its last bits across CPUs (a margin of exactly 0.2
#: computes as 0.19999999 on some), so a bare ``>=`` would decide differently.
DECISION_TOLERANCE = 1e-6
#: The bar's tuning point when the search's length is unknown (it stays valid at
#: every length; only where it is tightest moves).
PLANNED_STEPS_UNKNOWN = 500


def comparisons(candidate_counts):
    """How many paired comparisons the evidence rule can act on, over all points.

    A point with ``k`` candidates is decided through its ``k - 1`` comparisons
    with ``identity`` (``k`` when it has no identity candidate: its best op
    against each other one).

    Args:
        candidate_counts: Per point, ``(number of candidates, has identity)``.
    """
    return sum(count - 1 if has_identity else count for count, has_identity in candidate_counts)


def anytime_z_bar(count, comparison_error, planned_steps):
    """The z a paired comparison needs after ``count`` steps, valid at every step.

    Robbins' normal-mixture boundary in its asymptotic form (Waudby-Smith et
    al., "Time-uniform central limit theory", arXiv 2103.06476, Theorem 2.2;
    Howard et al., arXiv 1810.08240): with the running mean ``m_n`` of ``n``
    paired slope differences and their standard deviation ``s_n``, the chance
    that ``|m_n| / (s_n / sqrt(n))`` ever exceeds

        ``sqrt(2 (n r + 1) / (n r) * log(sqrt(n r + 1) / comparison_error))``

    at any ``n`` is at most ``comparison_error`` when the true mean is 0, in
    the limit of many steps of independent increments. ``r`` (rho squared)
    sets where the bar is tightest: at ``planned_steps`` for
    ``r = (2 log(1/a) + log(1 + 2 log(1/a))) / planned_steps``. The bar is
    higher early (about 6.2 after 20 of 500 steps for ``a = 4.5e-4``) and
    grows like ``sqrt(log n)`` late (4.4 at 500 steps).

    Args:
        count: Steps seen (a number, array or tensor; any shape).
        comparison_error: Two-sided error of this one comparison, in (0, 1).
        planned_steps: The number of steps the search plans to take (> 0).

    Returns:
        A float32 tensor shaped like ``count``.
    """
    log_inverse = math.log(1.0 / comparison_error)
    rate = (2.0 * log_inverse + math.log(1.0 + 2.0 * log_inverse)) / float(planned_steps)
    scaled = tf.maximum(tf.cast(count, tf.float32), 1.0) * rate
    return tf.sqrt(2.0 * (scaled + 1.0) / scaled * (0.5 * tf.math.log1p(scaled) + log_inverse))


def evidence_scores(count, slope_sum, squares, lag_products=None):
    """The evidence rule's statistics of a point (or a batch of points).

    Args:
        count: Number of logit gradients seen, shaped ``batch``.
        slope_sum: Per op, the sum of its loss slopes, shaped ``batch + (k,)``.
        squares: Per op pair ``(j, i)``, the sum of ``(slope_j - slope_i)**2``,
            shaped ``batch + (k, k)``.
        lag_products: Per op pair, the sum over steps of the pair's slope
            difference times the previous step's (shaped like ``squares``), or
            None. Successive slopes are not independent (the weights move
            slowly): with these sums the standard error is widened by the
            long-run factor ``(1 + r) / (1 - r)`` of the differences' lag-1
            autocorrelation ``r`` (clipped to [0, 0.9]).

    Returns:
        ``(best, z, count)``: the index of the op with the lowest mean slope
        (the one whose weight lowers the loss most), and for every op ``j``
        the z score of ``mean(slope_j - slope_best)`` over its paired
        standard error from the squares (widened for autocorrelation), as
        the normal z of the same tail probability for the estimate's degrees
        of freedom (0 for ``best`` itself and before 3 steps).
    """
    count = tf.cast(count, tf.float32)
    slope_sum = tf.convert_to_tensor(slope_sum, tf.float32)
    squares = tf.convert_to_tensor(squares, tf.float32)
    n = tf.maximum(count, 3.0)[..., None]
    mean = slope_sum / n
    best = tf.argmin(mean, axis=-1, output_type=tf.int32)
    lead = mean - tf.gather(mean, best[..., None], axis=-1, batch_dims=best.shape.rank)

    def with_best(pair_sums):  # pair_sums[..., :, best]: each op against the best
        pair_sums = tf.convert_to_tensor(pair_sums, tf.float32)
        return tf.gather(pair_sums, best[..., None], axis=-1, batch_dims=best.shape.rank)[..., 0]

    variance = tf.maximum(with_best(squares) / n - tf.square(lead), 0.0) * n / (n - 1.0)
    freedom = n - 1.0
    if lag_products is not None:
        # One autocorrelation per point, pooled over all its pairs: a pair's
        # own estimate is noisy, and the pair that looks best is the one
        # whose estimate came out low.
        pair_lead = tf.square(mean[..., :, None] - mean[..., None, :])
        pooled_covariance = tf.reduce_sum(
            tf.convert_to_tensor(lag_products, tf.float32) / (n[..., None] - 1.0) - pair_lead,
            axis=(-2, -1),
        )
        pooled_variance = tf.reduce_sum(squares / n[..., None] - pair_lead, axis=(-2, -1))
        correlation = tf.clip_by_value(pooled_covariance / (pooled_variance + 1e-30), 0.0, 0.9)
        widening = ((1.0 + correlation) / (1.0 - correlation))[..., None]
        variance = variance * widening
        freedom = freedom / widening  # fewer independent steps than steps
    t = lead / tf.sqrt(variance / n + 1e-30)
    # The standard error is estimated: t has a heavier tail than a normal z,
    # which matters at the bar's far tail. Mapped to the z of the same tail
    # probability (Wallace 1959; within 0.01 of exact for 19+ degrees of
    # freedom up to t = 8).
    freedom = tf.maximum(freedom, 1.0)
    z = (
        tf.sign(t)
        * (8.0 * freedom + 1.0)
        / (8.0 * freedom + 3.0)
        * tf.sqrt(freedom * tf.math.log1p(tf.square(t) / freedom))
    )
    z = tf.where(count[..., None] >= 3.0, z, tf.zeros_like(z))
    return best, z, count


def evidence_verdict(best, z, candidates, bar):
    """Whether a point's evidence decides it, and the score that says so.

    The best op is decided when it beats ``identity`` by ``bar`` (an enhancer
    helps; among enhancers, the best mean wins), or, when it is ``identity``
    itself (or there is no identity candidate), when it beats every other op
    by ``bar``. The score is that z (the smallest over the compared ops); a
    score within ``DECISION_TOLERANCE`` of ``bar`` reaches it.

    Args:
        best, z: From ``evidence_scores``.
        candidates: The point's candidate names, in its order.
        bar: The z to reach (a number, or a tensor shaped like ``best``).

    Returns:
        ``(decided, score)``, shaped like ``best``.
    """
    best = tf.convert_to_tensor(best, tf.int32)
    z = tf.convert_to_tensor(z, tf.float32)
    others = tf.not_equal(tf.range(len(candidates)), best[..., None])
    against_all = tf.reduce_min(tf.where(others, z, np.inf), axis=-1)
    if IDENTITY in candidates:
        identity = candidates.index(IDENTITY)
        score = tf.where(tf.equal(best, identity), against_all, z[..., identity])
    else:
        score = against_all
    return score >= bar - DECISION_TOLERANCE, score


def margin_verdict(logits, threshold):
    """The margin rule (the paper's): ``(winner index, decided, margin)``.

    A point whose two most probable ops differ by ``threshold`` (within
    ``DECISION_TOLERANCE``) is decided to its most probable op.
    """
    probabilities = tf.nn.softmax(logits)
    top = tf.math.top_k(probabilities, k=2)
    margin = top.values[..., 0] - top.values[..., 1]
    return top.indices[..., 0], margin >= threshold - DECISION_TOLERANCE, margin


def margin_logit_lead(candidates, threshold):
    """The logit lead a point's top op needs for a ``threshold`` probability margin.

    With the other ``candidates - 1`` logits equal, ``p1 - p2 >= threshold``
    needs ``exp(lead) >= (1 + threshold * (candidates - 1)) / (1 - threshold)``:
    ln 3 (about 1.1) for 8 candidates and 0.2, 0.56 for 3.
    """
    return float(np.log((1.0 + threshold * (candidates - 1)) / (1.0 - threshold)))


__all__ = [
    "DECISION_RULES",
    "DECISION_TOLERANCE",
    "DEFAULT_ERROR_RATE",
    "anytime_z_bar",
    "comparisons",
    "evidence_scores",
    "evidence_verdict",
    "margin_logit_lead",
    "margin_verdict",
]

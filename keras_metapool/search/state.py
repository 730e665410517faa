"""The search's own state (a checkpointed module) and the codes of a point's fixed ops."""

import numpy as np
import tensorflow as tf

from keras_metapool.layers.candidate_ops import DEFAULT_CANDIDATES, IDENTITY

#: A warm-up that ends at an epoch boundary not reached yet.
NEVER = np.iinfo(np.int64).max


def fixed_code(ops, candidates=DEFAULT_CANDIDATES):
    """The number ``logs`` holds for a point's fixed state.

    0 while the point searches; else the sum of ``2**k`` over the indices
    ``k`` (in ``candidates``) of the fixed op(s). ``decode_fixed_code``
    inverts it. The logs use the default, the registry's order of all
    candidate ops (``DEFAULT_CANDIDATES``), whatever order a model lists its
    own candidates in: a code then means the same ops in every log, and a
    CSV (whose columns CSVLogger sorts) decodes without knowing the model.
    """
    if not ops:
        return 0
    return int(sum(2 ** candidates.index(op) for op in ops))


def decode_fixed_code(code, candidates=DEFAULT_CANDIDATES):
    """Inverse of ``fixed_code``: a tuple of op names, or None while searching."""
    code = int(round(float(code)))
    if code == 0:
        return None
    ops = tuple(op for k, op in enumerate(candidates) if code & (1 << k))
    if not ops or code >= 1 << len(candidates):
        raise ValueError(f"{code} is not a fixed-state code over candidates {list(candidates)}.")
    return ops


def is_enlarging(ops):
    """Whether a fixed op set enlarges the receptive field (holds a non-identity op)."""
    return any(op != IDENTITY for op in ops)


class SearchState(tf.Module):
    """The search's own state, tracked by the model so checkpoints carry it.

    ``BackupAndRestore`` and ``tf.train.Checkpoint(model=...)`` save the
    model's dependencies; attached to the model as ``_pmpl_state``, the
    logits' optimizer moments, the evidence sums and the counters are saved
    and restored with the weights (the search logits and the fixed masks are
    the blocks' own weights).
    """

    def __init__(self, blocks):
        super().__init__(name="pmpl_state")

        def variable(value, dtype, name):
            return tf.Variable(
                value,
                dtype=dtype,
                trainable=False,
                name=name,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )

        def per_block(shape_of, name):
            return [variable(tf.zeros(shape_of(b), tf.float32), tf.float32, name) for b in blocks]

        count = len(blocks)
        self.adam_m = per_block(lambda b: b.search_logits.shape, "adam_m")
        self.adam_v = per_block(lambda b: b.search_logits.shape, "adam_v")
        # Evidence: per point, the number of logit gradients seen, the sum of
        # each op's loss slope and of the squared pairwise slope differences.
        self.evidence_count = variable(np.zeros(count, np.float32), tf.float32, "evidence_n")
        self.evidence_sum = per_block(lambda b: b.search_logits.shape, "evidence_sum")
        pairs = lambda b: (b.search_logits.shape[0], b.search_logits.shape[0])  # noqa: E731
        self.evidence_squares = per_block(pairs, "evidence_squares")
        # Successive slopes are not independent: the sums of each pair's
        # difference times the previous step's widen the standard error.
        self.evidence_lag_products = per_block(pairs, "evidence_lag_products")
        self.evidence_previous = per_block(lambda b: b.search_logits.shape, "evidence_previous")
        self.evidence_at_fix = variable(np.zeros(count, np.float32), tf.float32, "evidence_at")
        self.adam_steps = variable(0, tf.int64, "adam_steps")
        #: Training steps of the search (none once every point is fixed).
        self.train_steps = variable(0, tf.int64, "train_steps")
        self.arch_batches = variable(0, tf.int64, "arch_batches")
        #: Steps before the first architecture step (set when fit starts, kept on resume).
        self.warmup_steps = variable(-1, tf.int64, "warmup_steps")
        self.fixed_at_step = variable(-np.ones(count, np.int64), tf.int64, "fixed_at_step")

    def matches(self, blocks):
        return len(self.adam_m) == len(blocks) and all(
            m.shape == b.search_logits.shape for m, b in zip(self.adam_m, blocks)
        )


__all__ = ["NEVER", "SearchState", "decode_fixed_code", "fixed_code", "is_enlarging"]

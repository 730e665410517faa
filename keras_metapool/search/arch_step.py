"""PMPL's compiled part: the architecture step, the evidence it gathers, and the fixing rule.

``PMPLCallback`` installs these into the model's train step, so they run
without Python per step, with ``steps_per_execution`` and under
``tf.distribute``. The decision rules themselves are in
``keras_metapool.search.decision``.
"""

import functools

import tensorflow as tf

from keras_metapool import _internals
from keras_metapool._keras import keras
from keras_metapool.layers.candidate_ops import CANDIDATE_OPS
from keras_metapool.search.decision import (
    anytime_z_bar,
    evidence_scores,
    evidence_verdict,
    margin_verdict,
)


def per_example_loss(loss):
    """A loss callable returning per-example values (no reduction)."""
    if isinstance(loss, keras.losses.Loss):
        config = dict(loss.get_config(), reduction=keras.losses.Reduction.NONE)
        return type(loss).from_config(config)
    return loss


class ArchitectureStepMixin:
    """The compiled part of ``PMPLCallback`` (a mixin: it reads the callback's
    settings, ``self._blocks`` and ``self._state``)."""

    def _logits_phase(self):
        """Whether this step searches: past the warm-up, with a point not fixed yet."""
        searching = tf.reduce_any(
            tf.stack([tf.reduce_max(b.fixed_mask) <= 0.0 for b in self._blocks.values()])
        )
        return (self._state.train_steps >= self._state.warmup_steps) & searching

    def _train_step(self, data):
        # Nothing of the search starts before the batch is there: without a
        # known epoch length, fit ends an epoch on the step whose get_next
        # fails, and whatever ran beside it would count a step that never
        # trained, or have its held-out draw cancelled mid-flight, which ends
        # the held-out stream for good (fit then stops a later epoch early).
        batch = [t for t in tf.nest.flatten(data, expand_composites=True) if t is not None]
        with tf.control_dependencies(batch):
            if self.arch_data is None:
                logs = self._one_level_step(data)
            else:
                if self.arch_step == "before":
                    self._bilevel_logits_step()
                logs = self._original_train_step(data)
                if self.arch_step == "after":
                    self._bilevel_logits_step()
            self._state.train_steps.assign_add(1)
            self._fix_decided_points()
        return logs

    def _one_level_step(self, data):
        """Keras' train step, with the logits' gradient from the same backward pass."""
        model = self.model
        optimizer = model.optimizer
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        logits = [block.search_logits for block in self._blocks.values()]
        variables = model.trainable_variables
        scales_loss = hasattr(optimizer, "get_scaled_loss")  # mixed precision
        with tf.GradientTape() as tape:
            tape.watch(logits)
            y_pred = model(x, training=True)
            loss = model.compute_loss(x, y, y_pred, sample_weight)
            scaled = optimizer.get_scaled_loss(loss) if scales_loss else loss
        _internals.validate_target_and_loss(model, y, loss)
        grads = tape.gradient(scaled, list(variables) + logits)
        if scales_loss:
            grads = optimizer.get_unscaled_gradients(grads)
        weight_grads, logit_grads = grads[: len(variables)], grads[len(variables) :]
        optimizer.apply_gradients(zip(weight_grads, variables))
        # compute_loss divides by the global batch: replicas' gradients add up.
        self._logits_update(logit_grads, tf.distribute.ReduceOp.SUM)
        return model.compute_metrics(x, y, y_pred, sample_weight)

    def _bilevel_logits_step(self):
        logits = [block.search_logits for block in self._blocks.values()]

        def held_out():
            grads = self._held_out_gradients(next(self._arch_iterator))
            return [tf.zeros_like(a) if g is None else g for a, g in zip(logits, grads)]

        # The held-out pass is skipped during the warm-up (and its batches
        # are not drawn), so warm-up steps cost what plain steps cost. The
        # cross-replica parts stay outside the cond (no merge_call in it).
        active = self._logits_phase()
        grads = tf.cond(active, held_out, lambda: [tf.zeros_like(a) for a in logits])
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        self._state.arch_batches.assign_add(tf.cast(active, tf.int64) * replicas)
        self._logits_update(grads, tf.distribute.ReduceOp.MEAN)

    def _held_out_gradients(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        logits = [block.search_logits for block in self._blocks.values()]
        optimizer = self.model.optimizer
        # Under mixed precision the backward pass runs in float16, where
        # small gradients underflow to 0: scaled like the weights' loss (an
        # overflow then makes them non-finite, and _logits_update skips them).
        scales_loss = hasattr(optimizer, "get_scaled_loss")
        with tf.GradientTape() as tape:
            tape.watch(logits)
            y_pred = self.model(x, training=True)
            per_example = tf.cast(self._loss_fn(y, y_pred), tf.float32)
            if sample_weight is not None:
                weights = tf.cast(sample_weight, tf.float32)
                per_example = per_example * tf.reshape(
                    weights, tf.concat([tf.shape(weights), [1] * (per_example.shape.rank - 1)], 0)
                )
            loss = tf.reduce_mean(per_example)
            scaled = optimizer.get_scaled_loss(loss) if scales_loss else loss
        grads = tape.gradient(scaled, logits)
        if scales_loss:
            grads = optimizer.get_unscaled_gradients(grads)
        return grads

    def _logits_update(self, grads, reduce_op):
        blocks = list(self._blocks.values())
        grads = [
            tf.zeros_like(b.search_logits) if g is None else tf.cast(g, tf.float32)
            for b, g in zip(blocks, grads)
        ]
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            grads = context.all_reduce(reduce_op, grads)
        state = self._state
        # A loss-scaled (mixed precision) step that overflowed: the optimizer
        # skips the weights' update and lowers the scale; the logits skip their own
        # (the same on every replica: the gradients are reduced above).
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
        active = self._logits_phase() & finite
        step = tf.cast(state.adam_steps + 1, tf.float32)
        correction_1 = 1.0 - tf.pow(self.beta_1, step)
        correction_2 = 1.0 - tf.pow(self.beta_2, step)
        counted = []
        for index, (block, grad) in enumerate(zip(blocks, grads)):
            logits, m, v = block.search_logits, state.adam_m[index], state.adam_v[index]
            # Fixed points keep their logits (and probabilities) as they were.
            update_point = active & (tf.reduce_max(block.fixed_mask) <= 0.0)
            # The loss slope along each op's mixture weight: dL/dlogit_k =
            # p_k (s_k - sum_j p_j s_j), so s_k - mean = grad_k / p_k.
            probs = tf.nn.softmax(logits)
            slope = grad / tf.maximum(probs, 1e-30)
            if self.latency_weight:
                # d/dlogits of weight * sum_k p_k c_k, and its slope c_k per op.
                cost = self.latency_weight * self._costs(block)
                grad = grad + probs * (cost - tf.reduce_sum(probs * cost))
                slope = slope + cost
            difference = slope[:, None] - slope[None, :]
            where = functools.partial(tf.where, update_point)
            state.evidence_sum[index].assign(
                where(state.evidence_sum[index] + slope, state.evidence_sum[index])
            )
            state.evidence_squares[index].assign(
                where(
                    state.evidence_squares[index] + tf.square(difference),
                    state.evidence_squares[index],
                )
            )
            previous = state.evidence_previous[index]
            previous_difference = tf.where(
                state.evidence_count[index] > 0.0,
                previous[:, None] - previous[None, :],
                tf.zeros_like(difference),
            )
            lag_products = state.evidence_lag_products[index]
            lag_products.assign(
                where(lag_products + difference * previous_difference, lag_products)
            )
            previous.assign(where(slope, previous))
            counted.append(update_point)
            grad = grad + self.weight_decay * logits
            new_m = self.beta_1 * m + (1.0 - self.beta_1) * grad
            new_v = self.beta_2 * v + (1.0 - self.beta_2) * tf.square(grad)
            update = (new_m / correction_1) / (tf.sqrt(new_v / correction_2) + self.epsilon)
            logits.assign(where(logits - self._logits_lr * update, logits))
            m.assign(where(new_m, m))
            v.assign(where(new_v, v))
        state.evidence_count.assign_add(tf.cast(tf.stack(counted), tf.float32))
        state.adam_steps.assign_add(tf.cast(active, tf.int64))

    def _costs(self, block):
        """The latency table's cost of each of ``block``'s candidates (0 if absent)."""
        table = self.latency_table.get(block.name, self.latency_table)
        for op, cost in table.items():
            if op in CANDIDATE_OPS and not isinstance(cost, (int, float)):
                raise ValueError(f"latency_table: cost of {op!r} must be a number, got {cost!r}.")
        costs = [float(table.get(op, 0.0)) if isinstance(table, dict) else 0.0
                 for op in block.candidates]  # fmt: skip
        return tf.constant(costs, tf.float32)

    def _fix_decided_points(self):
        state = self._state
        step = state.train_steps
        check = tf.equal(step % self.fix_every, 0) & self._logits_phase()
        fixed_at, evidence = [], []
        for index, block in enumerate(self._blocks.values()):
            searching = tf.reduce_max(block.fixed_mask) <= 0.0
            winner, decided, score = self._decision(block, index)
            fix_now = check & searching & decided
            block.fixed_mask.assign(tf.where(fix_now, winner, block.fixed_mask))
            fixed_at.append(fix_now)
            evidence.append(score)
        fix_now = tf.stack(fixed_at)
        state.fixed_at_step.assign(tf.where(fix_now, step, state.fixed_at_step), read_value=False)
        state.evidence_at_fix.assign(
            tf.where(fix_now, tf.stack(evidence), state.evidence_at_fix), read_value=False
        )

    def _decision(self, block, index):
        """``(winner one-hot, decided, score)`` of a point under the decision rule."""
        if self.decision == "margin":
            return self._margin_decision(block)
        return self._evidence_decision(block, index)

    def _margin_decision(self, block):
        winner, decided, margin = margin_verdict(block.search_logits, self.threshold)
        return tf.one_hot(winner, len(block.candidates), dtype=tf.float32), decided, margin

    def _evidence_decision(self, block, index):
        state = self._state
        winner, z_scores, count = evidence_scores(
            state.evidence_count[index],
            state.evidence_sum[index],
            state.evidence_squares[index],
            state.evidence_lag_products[index],
        )
        decided, score = evidence_verdict(winner, z_scores, block.candidates, self._bar(count))
        decided = decided & (count >= self.min_evidence_steps)
        return tf.one_hot(winner, len(block.candidates), dtype=tf.float32), decided, score

    def _bar(self, count):
        """The z the evidence rule needs after ``count`` logit gradients."""
        return anytime_z_bar(count, self._comparison_error, self._planned_steps)

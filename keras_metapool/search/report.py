"""PMPL's reporting: ``logs`` entries, the progress-bar helpers, the epoch digest, ``summary()``."""

import sys

import numpy as np

from keras_metapool._keras import keras
from keras_metapool.layers.candidate_ops import CANDIDATE_OPS
from keras_metapool.search.state import is_enlarging

#: Prefix of the PMPL entries of ``logs`` (History, CSVLogger, TensorBoard).
LOG_PREFIX = "pmpl"
#: Prefix of each point's current evidence in ``logs`` (outside ``LOG_PREFIX``,
#: whose ``pmpl/<point>/<op>`` entries are probabilities).
EVIDENCE_LOG_PREFIX = "pmpl_evidence"


#: The ``logs`` counts that stay in Keras' progress bar; every other PMPL
#: entry (two per point and candidate, one evidence per point: thousands of
#: characters an epoch) reaches History, CSVLogger and TensorBoard only.
PROGRESS_BAR_COUNTS = tuple(
    f"{LOG_PREFIX}/{count}" for count in ("fixed_points", "decided_points", "enlarging_points")
)


def is_per_point_log(key):
    """Whether ``key`` is a per-point PMPL ``logs`` entry (kept off the progress bar)."""
    return key.startswith((f"{LOG_PREFIX}/", f"{EVIDENCE_LOG_PREFIX}/")) and (
        key not in PROGRESS_BAR_COUNTS
    )


class _BeforeProgressBar(keras.callbacks.Callback):
    """Drops the per-point PMPL entries after History has them, before the bar prints."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            for key in [key for key in logs if is_per_point_log(key)]:
                del logs[key]


class _AfterProgressBar(keras.callbacks.Callback):
    """Prints the PMPL digest once the bar has ended its line, not glued to it."""

    def __init__(self, pmpl):
        super().__init__()
        self.pmpl = pmpl

    def on_epoch_end(self, epoch, logs=None):
        self.pmpl._flush_digest()


class ReportingMixin:
    """What ``PMPLCallback`` prints and returns about the search (a mixin)."""

    def _surround_progress_bar(self, callback_list):
        """Puts two helpers around Keras' progress bar in this ``fit``'s callbacks.

        Keras calls History, then the progress bar, after the user's callbacks
        (so CSVLogger and TensorBoard listed after this one still see every
        entry). The first helper, between History and the bar, keeps the
        per-point entries off the bar; the second prints the epoch digest
        after the bar has ended its line. Without a progress bar (``verbose=0``)
        or a Keras ``CallbackList`` calling, nothing changes.

        Returns:
            Whether the helpers are in place.
        """
        if not isinstance(callback_list, keras.callbacks.CallbackList):
            return False
        callbacks = callback_list.callbacks
        bars = [i for i, c in enumerate(callbacks) if isinstance(c, keras.callbacks.ProgbarLogger)]
        if not bars:
            return False
        for callback in callbacks:
            if isinstance(callback, _AfterProgressBar) and callback.pmpl is self:
                return True  # a CallbackList reused for another fit
        before, after = _BeforeProgressBar(), _AfterProgressBar(self)
        for helper in (before, after):
            helper.set_model(self.model)
            helper.set_params(self.params)
        # Inserted behind this callback: CallbackList's loop calling it is not disturbed.
        callbacks.insert(bars[0] + 1, after)
        callbacks.insert(bars[0], before)
        return True

    def _flush_digest(self):
        if self._digest:
            self._print(self._digest)
        self._digest = None

    @property
    def decided_points(self):
        """How many points the rule decided (by evidence, or the margin); not defaulted ones."""
        if self._state is None:
            raise ValueError("PMPLCallback has not been used in fit yet: nothing decided.")
        return int(np.sum(self._state.fixed_at_step.numpy() >= 0))

    def _current_evidence(self):
        """``{point: its evidence now}``: the score of its decision rule (z or margin)."""
        return {
            block.name: float(self._decision(block, index)[2].numpy())
            for index, block in enumerate(self._blocks.values())
        }

    @staticmethod
    def _describe(fixed):
        return ", ".join(f"{name}->{'+'.join(ops)}" for name, ops in fixed.items())

    @staticmethod
    def _totals(fixed):
        counts = {}
        for ops in fixed.values():
            key = "+".join(ops) if ops else "searching"
            counts[key] = counts.get(key, 0) + 1
        return ", ".join(f"{key} {count}" for key, count in sorted(counts.items()))

    def _print(self, text):
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def summary_rows(self):
        """Per-point rows of ``summary()``.

        Dicts with ``block``, ``point``, ``state`` (``"decided"``: fixed by
        evidence or the margin; ``"defaulted"``: fixed by the ``undecided``
        rule; ``"searching"``), ``ops`` (fixed, or the current best),
        ``probability`` (of those ops), ``evidence`` (the z, or the margin,
        at the decision, else now), ``bar`` (what ``evidence`` had to reach
        then: the evidence rule's time-uniform z bar at the point's step
        count, or ``threshold``), ``candidates`` (how many the point had),
        ``receptive_field`` and ``fixed_at_step``.
        """
        if not self._blocks:
            raise ValueError("PMPLCallback has not been used in fit yet: nothing to summarize.")
        state = self._state
        fixed_at = state.fixed_at_step.numpy()
        at_fix = state.evidence_at_fix.numpy()
        now = self._current_evidence()
        counts = state.evidence_count.numpy()
        rows = []
        for index, (block_id, block) in enumerate(self._blocks.items()):
            probs = block.probabilities()
            ops = block.fixed_ops or (max(probs, key=probs.get),)
            decided = fixed_at[index] >= 0
            if decided:
                status = "decided"
            else:
                status = "defaulted" if block.is_fixed else "searching"
            rows.append(
                dict(
                    block=block_id,
                    point=block.name,
                    state=status,
                    ops=ops,
                    probability=float(sum(probs[op] for op in ops)),
                    evidence=float(at_fix[index]) if decided else now[block.name],
                    bar=(
                        float(self._bar(counts[index]).numpy())
                        if self.decision == "evidence"
                        else self.threshold
                    ),
                    candidates=len(block.candidates),
                    receptive_field=" + ".join(CANDIDATE_OPS[op].receptive_field for op in ops),
                    fixed_at_step=int(fixed_at[index]) if decided else None,
                )
            )
        return rows

    def summary(self, print_fn=None):
        """Prints the per-point table: decision, evidence, op(s), receptive field.

        Columns: ``state`` (decided by evidence, defaulted by the
        ``undecided`` rule, or still searching), ``op(s)``, ``cand.`` (the
        point's candidates after pruning), ``p`` (softmax(α) of the
        op(s)), ``evidence`` (z in standard errors for the evidence rule,
        the top-2 margin for the margin rule; at the decision, else now),
        ``bar`` (what the evidence had to reach), the receptive field the
        op(s) add, and the step of the decision.

        Args:
            print_fn: Called with each line (default ``print``).
        """
        print_fn = print_fn or print
        rows = self.summary_rows()
        header = f"{'block':>5}  {'point':<18} {'state':<9} {'op(s)':<14} {'cand.':>5} {'p':>6} "
        header += f"{'evidence':>8} {'bar':>5}  {'receptive field':<26} decided at step"
        print_fn(header)
        print_fn("-" * len(header))
        for row in rows:
            step = "-" if row["fixed_at_step"] is None else str(row["fixed_at_step"])
            print_fn(
                f"{row['block']:>5}  {row['point']:<18} {row['state']:<9} "
                f"{'+'.join(row['ops']):<14} {row['candidates']:>5} {row['probability']:>6.3f} "
                f"{row['evidence']:>8.2f} {row['bar']:>5.2f}  {row['receptive_field']:<26} {step}"
            )
        decided = self.decided_points
        defaulted = sum(row["state"] == "defaulted" for row in rows)
        enlarging = sum(is_enlarging(row["ops"]) for row in rows if row["state"] != "searching")
        bar = (
            f"time-uniform z bar, family error {self.error_rate:g}"
            if self.decision == "evidence"
            else f"margin >= {self.threshold:g}"
        )
        print_fn(
            f"{decided}/{len(rows)} points decided by evidence ({bar}), {defaulted} defaulted "
            f"to '{self.undecided}'; {enlarging} enlarge the receptive field."
        )

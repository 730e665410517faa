"""PMPLCallback: progressive meta-pooling learning inside ``model.fit``."""

import functools
import sys
import warnings

import numpy as np
import tensorflow as tf

from keras_metapool import _internals
from keras_metapool._keras import keras, require_tf_keras_model
from keras_metapool._layer_facts import UNSETTLED_BATCH_NORM
from keras_metapool._ranges import OPEN_UNIT, Interval
from keras_metapool.layers.candidate_ops import CANDIDATE_OPS, DEFAULT_CANDIDATES, IDENTITY
from keras_metapool.search.derive import (
    UNDECIDED_RULES,
    derive_architecture,
    search_blocks,
    undecided_ops,
)

ARCH_STEP_POSITIONS = ("before", "after")
#: How a point is decided during the search (PMPLCallback's ``decision``).
DECISION_RULES = ("evidence", "margin")
#: The ranges of PMPLCallback's numeric arguments (the CLI validates its flags with them).
ARGUMENT_RANGES = {
    "warmup": Interval(0.0, 1.0, "left"),
    "beta_1": Interval(0.0, 1.0, "left"),
    "beta_2": Interval(0.0, 1.0, "left"),
    "epsilon": Interval(0.0, None, "neither"),
    "weight_decay": Interval(0.0, None),
    "threshold": OPEN_UNIT,
    "evidence_z": Interval(0.0, None, "neither"),
    "late_stage": Interval(0.0, 1.0, "right"),
}
#: A score within this of its bar counts as reaching it. The same logits give a
#: softmax that differs in its last bits across CPUs (a margin of exactly 0.2
#: computes as 0.19999999 on some), so a bare ``>=`` would decide differently.
DECISION_TOLERANCE = 1e-6
#: What points still undecided at the late stage become (``undecided``).
END_RULES = ("identity", "top2", "argmax")
#: ``learning_rate="auto"``: sized to the budget, within these bounds.
AUTO = "auto"
AUTO_RATE_RANGE = (3e-4, 5e-2)
#: The automatic architecture learning rate when the steps per epoch are unknown.
AUTO_RATE_UNKNOWN = 3e-3
#: A warm-up that ends at an epoch boundary not reached yet.
NEVER = np.iinfo(np.int64).max
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


class _SearchState(tf.Module):
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
        self.evidence_squares = per_block(
            lambda b: (b.search_logits.shape[0], b.search_logits.shape[0]), "evidence_squares"
        )
        self.evidence_at_fix = variable(np.zeros(count, np.float32), tf.float32, "evidence_at")
        self.adam_steps = variable(0, tf.int64, "adam_steps")
        self.train_steps = variable(0, tf.int64, "train_steps")
        self.arch_batches = variable(0, tf.int64, "arch_batches")
        #: Steps before the first architecture step (set when fit starts, kept on resume).
        self.warmup_steps = variable(-1, tf.int64, "warmup_steps")
        self.fixed_at_step = variable(-np.ones(count, np.int64), tf.int64, "fixed_at_step")

    def matches(self, blocks):
        return len(self.adam_m) == len(blocks) and all(
            m.shape == b.search_logits.shape for m, b in zip(self.adam_m, blocks)
        )


def _per_example_loss(loss):
    """A loss callable returning per-example values (no reduction)."""
    if isinstance(loss, keras.losses.Loss):
        config = dict(loss.get_config(), reduction=keras.losses.Reduction.NONE)
        return type(loss).from_config(config)
    return loss


def _refuse_weight_restoring_callbacks(callback_list):
    """Refuses, before a search starts, callbacks that would set its state back.

    ``EarlyStopping(restore_best_weights=True)`` sets every weight of its
    best epoch at the end of ``fit`` (tf_keras 2.21, stopped early or not):
    the search logits, the fixed points and the search's counters are weights too, so the
    searched model would go back to an earlier epoch's search.
    """
    for callback in getattr(callback_list, "callbacks", ()):
        if isinstance(callback, keras.callbacks.EarlyStopping) and callback.restore_best_weights:
            raise ValueError(
                "PMPLCallback: EarlyStopping(restore_best_weights=True) would set the search "
                "logits, the fixed points and the search's counters back to its best epoch at the "
                "end of fit, and the searched model would be searching again. Use "
                "restore_best_weights=False (an early stop still ends the search, and the "
                "points are fixed then); to keep the best epoch of training after the "
                "search, use ModelCheckpoint(save_best_only=True) and load it after fit."
            )


def margin_logit_lead(candidates, threshold):
    """The logit lead a point's top op needs for a ``threshold`` probability margin.

    With the other ``candidates - 1`` logits equal, ``p1 - p2 >= threshold``
    needs ``exp(lead) >= (1 + threshold * (candidates - 1)) / (1 - threshold)``:
    ln 3 (about 1.1) for 8 candidates and 0.2, 0.56 for 3.
    """
    return float(np.log((1.0 + threshold * (candidates - 1)) / (1.0 - threshold)))


class SearchUndecidedWarning(UserWarning):
    """A PMPL search ended with most points undecided, or fixed with no training after."""


class FixedAtEndWarning(SearchUndecidedWarning):
    """Points were fixed at the very end of fit: the searched model's weights were trained
    for the mixture there, so it needs training before use (an architecture retrained from
    scratch, as ``keras-metapool train`` does, is not affected)."""


class ModelAtChanceWarning(UserWarning):
    """The model trained with PMPLCallback ended fit at chance training accuracy."""


#: Training accuracy below chance + this share of the way to 1 counts as "at
#: chance" (10 classes: below 0.19; the BN-momentum failure measured 0.095,
#: a healthy 2-epoch Fashion-MNIST search 0.64).
CHANCE_MARGIN = 0.1


def training_accuracy(logs):
    """The training accuracy in fit's ``logs`` (any Keras accuracy name), or None."""
    for key, value in (logs or {}).items():
        if key.startswith("val_") or "top_k" in key:
            continue
        if key in ("acc", "accuracy") or key.endswith("_accuracy"):
            return float(value)
    return None


class PMPLCallback(keras.callbacks.Callback):
    """Progressive Meta-Pooling Learning (docs/method.md §4) as a Keras callback.

    Drop it into ``fit`` on a search model
    (``MobileNetV2MP(meta_pooling="search")``, the default). During ``fit``:

    1. **Warm-up.** For the first ``warmup`` share of the search's steps
       only the weights train, every candidate at equal weight, so that no
       op is judged before its weights have learned anything (as PC-DARTS).
    2. **Architecture steps.** Then every training step also takes one step
       on the search logits (the paper's α, ``MetaPoolingBlock.search_logits``)
       of every searching point, with the callback's own Adam
       (``beta_1=0.5``, ``beta_2=0.999``, L2 ``weight_decay=1e-3`` added to
       the gradient, as the reference's ``torch.optim.Adam``). The user's
       optimizer never touches the logits (non-trainable). With ``arch_data``
       the architecture step uses a held-out batch: first-order bi-level
       optimisation, as first-order DARTS (a second forward and backward pass
       per step). Without it (one-level), the logits' gradient comes from the
       weight step's own backward pass, at no extra pass.
       ``learning_rate="auto"`` sizes the step to the budget: Adam moves a
       logit by at most about its learning rate per step, so the rate is
       twice the logit lead a ``threshold`` margin needs, divided by the
       number of architecture steps ``fit`` will take. A mixed-precision step
       whose loss scale overflowed takes no architecture step, as the
       loss-scale optimizer takes no weight step.
    3. **Decisions.** With ``decision="evidence"`` (the default), every
       logit gradient also measures, per point and op, the slope of the loss
       along that op's mixture weight (``dL/dα_k / p_k``, the loss change
       per unit of weight moved onto op ``k``). A point is fixed, for good,
       once the evidence is significant: to its best op (the lowest mean
       slope) when that op beats ``identity`` by ``evidence_z`` standard
       errors of the paired slope difference; to ``identity`` when
       ``identity`` beats every other op so. Noise alone rarely gets there,
       while the margin of ``softmax(α)`` reacts to noise and to signal
       alike. ``decision="margin"`` is the paper's rule: a point whose two
       most probable ops differ by ``threshold`` is fixed to its most probable
       op. Checks run every ``fix_every`` steps; fixing sets a mask variable
       (no retrace).
    4. **The late stage.** At the start of epoch ``round(late_stage *
       epochs)`` (by default 2/3 of the epochs, the paper's), every point
       still searching gets the ``undecided`` rule: ``"identity"`` (default:
       no enhancer; a point the evidence did not decide costs nothing),
       ``"top2"`` (the paper's: its two most probable ops, summed) or
       ``"argmax"``. The epochs after it train the fixed architecture, so
       the model ``fit`` returns is trained as it will be used (measured on
       3,000 Fashion-MNIST images, 2 epochs at 64 px: test accuracy 0.68
       where fixing at the end of ``fit`` left 0.12-0.15, a network trained
       for a mixture it no longer computes). The search itself (warm-up,
       architecture steps, the automatic learning rate) runs before it.
       ``fit`` ending earlier (e.g. ``EarlyStopping``) fixes the undecided
       points at its end (``EarlyStopping(restore_best_weights=True)`` is
       refused: it would set the logits and the fixed points back to its best
       epoch after the search), so after ``fit`` every point is fixed and
       ``pmpl.architecture`` (or ``keras_metapool.derive_architecture``) is
       the result. When fewer than half the points were decided by evidence
       (or, with the margin rule, the logits' budget could not reach the
       threshold), or points were fixed at the very end (the weights never
       trained for them), ``fit`` ends with one ``SearchUndecidedWarning``
       saying what to change.

    ``PMPLCallback.paper()`` gives the paper's settings (margin rule, top-2
    late stage at 2/3 of the epochs, no warm-up, learning rate 3e-4).

    Resuming: the search logits and the fixed masks are model weights; the
    logits' optimizer moments, the evidence sums and the step counters live in a
    module attached to the model (``model._pmpl_state``).
    ``tf_keras.callbacks.BackupAndRestore`` and TF-format checkpoints
    (``model.save_weights("ckpt")``, ``tf.train.Checkpoint(model=model)``)
    carry all of it, so an interrupted search resumed from them continues as
    an uninterrupted one (with a deterministic ``arch_data``: the held-out
    batches resume where they stopped). ``.h5``/``.keras`` weights carry
    the logits and the masks but not the rest: a search started past epoch 1
    without that state warns.

    Logs: at each epoch end, for every point ``P`` (its layer name, e.g.
    ``block_6_hidden_mp``) and candidate ``op``, ``logs["pmpl/P/op"]`` is the
    probability of ``op`` (with ``log_probabilities``) and
    ``logs["pmpl/P/fixed"]`` the fixed state (``fixed_code``, over
    ``DEFAULT_CANDIDATES``: 0 while searching), ``logs["pmpl_evidence/P"]``
    the point's current evidence (z), plus ``pmpl/fixed_points``,
    ``pmpl/decided_points`` (by evidence) and ``pmpl/enlarging_points``.
    Listed before ``CSVLogger``/``TensorBoard`` in ``callbacks``, the
    callback's entries reach them (and always reach ``History``). With
    ``verbose=1`` a one-line digest is printed per epoch; ``summary()``
    prints the per-point table and ``keras_metapool.plot_search`` draws the
    trajectories.

    Args:
        arch_data: Held-out ``tf.data.Dataset`` of batched ``(images,
            labels)`` (or ``(images, labels, sample_weights)``) for the
            architecture steps, never the test set; repeated as needed. None:
            one-level search on the training batches (no extra pass).
        decision: ``"evidence"`` (default) or ``"margin"`` (the paper's).
        undecided: What points still searching at the late stage become:
            ``"identity"`` (default), ``"top2"`` (the paper's) or
            ``"argmax"``.
        warmup: Share of the search's steps before the first architecture
            step, in [0, 1).
        learning_rate: Adam learning rate of the search logits, or ``"auto"``
            (default): sized to the architecture steps ``fit`` will take
            (above), between 3e-4 (the paper's) and 0.05; 3e-3 when the steps
            per epoch are unknown.
        beta_1: Adam's first-moment decay.
        beta_2: Adam's second-moment decay.
        epsilon: Adam's epsilon.
        weight_decay: L2 coefficient on the search logits (added to their gradient).
        threshold: The margin rule's tau: top-1 minus top-2 probability.
            Both rules count a score within ``DECISION_TOLERANCE`` (1e-6) of
            its bar as reaching it, so a margin of exactly tau decides on
            every CPU.
        evidence_z: The evidence rule's bar, in standard errors (default 4;
            checked at every step, so noise crosses it more often than a
            one-shot test would: on random labels 2 of 12 points were decided
            with a 192-step search, 0 of 12 with 128, docs/search.md). Raise
            it for fewer false decisions, at the cost of more steps per real
            one.
        min_evidence_steps: Logit gradients a point needs before the
            evidence rule may decide it.
        fix_every: Check for points to fix every this many training steps.
        late_stage: Fraction of the epochs after which undecided points get
            the ``undecided`` rule (default 2/3, the paper's); 1.0 leaves
            that to the end of ``fit``: the whole budget searches, and the
            result must be trained before use (retrained from scratch, as
            the CLI's ``train`` does, or fine-tuned).
        search_epochs: Length of the whole search in epochs, when it spans
            several ``fit`` calls (e.g. ``fit(epochs=10)`` then
            ``fit(initial_epoch=10, epochs=30)``); default: ``fit``'s
            ``epochs``. The warm-up, the automatic learning rate and the
            late stage count from it, and a ``fit`` ending before it (unless
            stopped early, e.g. by ``EarlyStopping``) leaves undecided points
            searching.
        arch_step: With ``arch_data``: ``"before"`` (default, as DARTS) or
            ``"after"`` the weight step.
        latency_weight: Weight of an expected-latency term added to the
            logits' loss (beyond the paper; FBNet, arXiv 1812.03443): per point,
            ``latency_weight * sum_k p_k * cost_k``. 0 (default) leaves the
            loss as it is. Its slope along op ``k``'s weight (``cost_k``
            times the weight) joins the evidence, so an op must beat
            identity by more than it costs.
        latency_table: The ``cost_k``: ``{op: cost}`` for every point, or
            ``{point layer name: {op: cost}}``; ops not listed cost 0. Costs
            are in the unit the weight is scaled to (e.g. milliseconds of
            int8 latency per point: ``benchmarks/latency_table.py`` measures
            them on this CPU, and predicts Edge TPU costs from op counts).
        loss: Loss of a bi-level architecture step (default: the model's compiled
            loss), a loss name, function or ``tf_keras.losses.Loss``.
            One-level steps use the compiled loss.
        log_probabilities: Put every op's probability in ``logs`` (Keras'
            progress bar prints every entry).
        verbose: 1 prints one line per epoch, 0 is silent.
    """

    def __init__(
        self,
        arch_data=None,
        decision="evidence",
        undecided="identity",
        warmup=0.25,
        learning_rate="auto",
        beta_1=0.5,
        beta_2=0.999,
        epsilon=1e-8,
        weight_decay=1e-3,
        threshold=0.2,
        evidence_z=4.0,
        min_evidence_steps=20,
        fix_every=1,
        late_stage=2.0 / 3.0,
        search_epochs=None,
        arch_step="before",
        loss=None,
        log_probabilities=True,
        verbose=1,
        latency_weight=0.0,
        latency_table=None,
    ):
        super().__init__()
        if arch_data is not None and not isinstance(arch_data, tf.data.Dataset):
            raise ValueError(
                "`arch_data` must be a batched tf.data.Dataset of (images, labels), got "
                f"{type(arch_data).__name__}. For arrays: tf.data.Dataset.from_tensor_slices("
                "(x, y)).batch(batch_size); to cut one from the training data: "
                "keras_metapool.split_for_search."
            )
        if arch_data is not None and tf.get_static_value(arch_data.cardinality()) == 0:
            # Its first draw would end fit's epoch like the end of the training data.
            raise ValueError(
                "`arch_data` is empty: the architecture steps need at least one held-out batch. "
                "A .batch(n, drop_remainder=True) of fewer than n examples, or an empty "
                "split, gives none; batch without drop_remainder or hold out more examples."
            )
        if decision not in DECISION_RULES:
            raise ValueError(
                f"Unknown decision {decision!r}. Valid values: {', '.join(DECISION_RULES)}."
            )
        if undecided not in END_RULES:
            raise ValueError(
                f"Unknown undecided {undecided!r}. Valid values: {', '.join(END_RULES)}."
            )
        if learning_rate != AUTO and (
            isinstance(learning_rate, (str, bool)) or not float(learning_rate) > 0
        ):
            raise ValueError(
                f"`learning_rate` must be a positive number or 'auto', got {learning_rate!r}."
            )
        arguments = locals()
        for name, interval in ARGUMENT_RANGES.items():
            interval.check(name, arguments[name])
        for name, value in (("fix_every", fix_every), ("min_evidence_steps", min_evidence_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if search_epochs is not None and (
            isinstance(search_epochs, bool)
            or not isinstance(search_epochs, int)
            or search_epochs < 1
        ):
            raise ValueError(f"`search_epochs` must be a positive integer, got {search_epochs!r}.")
        if arch_step not in ARCH_STEP_POSITIONS:
            raise ValueError(
                f"Unknown arch_step {arch_step!r}. Valid values: {', '.join(ARCH_STEP_POSITIONS)}."
            )
        self.arch_data = arch_data
        self.decision = decision
        self.undecided = undecided
        self.warmup = float(warmup)
        self.learning_rate = learning_rate if learning_rate == AUTO else float(learning_rate)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.weight_decay = float(weight_decay)
        self.threshold = float(threshold)
        self.evidence_z = float(evidence_z)
        self.min_evidence_steps = int(min_evidence_steps)
        self.fix_every = int(fix_every)
        self.late_stage = float(late_stage)
        self._digest = None  # the epoch line, printed after the progress bar
        self._around_bar = False
        self.search_epochs = search_epochs
        self.arch_step = arch_step
        self.loss = loss
        self.log_probabilities = bool(log_probabilities)
        self.verbose = int(verbose)
        if not latency_weight >= 0:
            raise ValueError(f"`latency_weight` must be >= 0, got {latency_weight!r}.")
        if latency_weight and not isinstance(latency_table, dict):
            raise ValueError(
                "`latency_weight` needs a `latency_table`: {op: cost} or "
                "{point layer name: {op: cost}} (benchmarks/latency_table.py measures one)."
            )
        self.latency_weight = float(latency_weight)
        self.latency_table = dict(latency_table or {})
        #: One record per finished epoch: {"epoch", "probabilities", "fixed"}.
        self.history = []
        #: The budget of the last ``fit``: total/warm-up/architecture steps and the
        #: architecture learning rate used (``learning_rate`` resolved).
        self.budget = {}
        self._blocks = {}
        self._state = None
        self._arch_iterator = None
        self._loss_fn = None
        self._late_epoch = None
        self._logits_lr = None
        self._claimed_fit = False

    @classmethod
    def paper(cls, **overrides):
        """A callback with the paper's settings (docs/method.md §4).

        The margin rule (tau 0.2) with the architecture learning rate 3e-4, no
        warm-up, and the late stage at 2/3 of the epochs fixing undecided
        points to their top two ops. Keyword arguments override any of them.
        """
        settings = dict(
            decision="margin", undecided="top2", warmup=0.0, learning_rate=3e-4,
            late_stage=2.0 / 3.0,
        )  # fmt: skip
        settings.update(overrides)
        return cls(**settings)

    # -- setup -------------------------------------------------------------
    @property
    def points(self):
        """The searched points: ``{layer name: MetaPoolingBlock}`` in block order."""
        return {block.name: block for block in self._blocks.values()}

    def _resolve_loss(self):
        loss = self.loss if self.loss is not None else getattr(self.model, "loss", None)
        if loss is None or (isinstance(loss, (dict, list, tuple)) and not loss):
            raise ValueError(
                "PMPLCallback needs a loss for the architecture step: compile the model with a "
                "loss, or pass PMPLCallback(loss=...)."
            )
        if isinstance(loss, (dict, list, tuple)):
            raise ValueError(
                "The model has several losses; pass the architecture step's loss with "
                "PMPLCallback(loss=...)."
            )
        return _per_example_loss(keras.losses.get(loss))

    def _check_arch_data(self):
        spec = self.arch_data.element_spec
        if not isinstance(spec, tuple) or len(spec) not in (2, 3):
            raise ValueError(
                "`arch_data` must yield (images, labels) or (images, labels, sample_weights) "
                f"tuples, got elements {spec}."
            )
        image_shape = spec[0].shape
        expected_rank = len(self.model.input_shape)
        if image_shape.rank != expected_rank:
            raise ValueError(
                f"`arch_data` images have shape {image_shape}; the model expects batches "
                f"shaped {self.model.input_shape}. Is the dataset batched?"
            )

    def _plan_budget(self):
        """Warm-up steps and the architecture learning rate, from the search's length."""
        steps_per_epoch = self.params.get("steps")
        # The search ends at the late stage; the epochs after it train the result.
        search_epochs = min(self._late_epoch, self._total_epochs)
        total = search_epochs * steps_per_epoch if steps_per_epoch else None
        state = self._state
        # Without a known epoch length the warm-up ends at an epoch boundary.
        self._warmup_epoch = int(round(self.warmup * search_epochs))
        if int(state.warmup_steps.numpy()) < 0:  # a fresh search (not a resume)
            if total is not None:
                state.warmup_steps.assign(int(round(self.warmup * total)))
            else:
                state.warmup_steps.assign(0 if self._warmup_epoch == 0 else NEVER)
        warmup_steps = int(state.warmup_steps.numpy())
        arch_steps = None if total is None else max(total - min(warmup_steps, total), 0)
        most = max(len(b.candidates) for b in self._blocks.values())
        lead = margin_logit_lead(most, self.threshold)
        if self.learning_rate != AUTO:
            rate = self.learning_rate
        elif arch_steps:
            rate = float(np.clip(2.0 * lead / arch_steps, AUTO_RATE_RANGE[0], AUTO_RATE_RANGE[1]))
        else:
            rate = AUTO_RATE_UNKNOWN
        self._logits_lr = rate
        self.budget = dict(
            total_steps=total,
            warmup_steps=None if total is None else min(warmup_steps, total),
            arch_steps=arch_steps,
            learning_rate=rate,
            margin_lead=lead,
        )

    def on_train_begin(self, logs=None):
        callback_list = _internals.calling_object()
        model = self.model
        require_tf_keras_model(model, "PMPLCallback")
        _refuse_weight_restoring_callbacks(callback_list)
        self._blocks = search_blocks(model)
        if not self._blocks:
            raise ValueError(
                f"PMPLCallback: model '{model.name}' has no MetaPoolingBlock to search. "
                "Build it with MobileNetV2MP(meta_pooling='search')."
            )
        self._loss_fn = self._resolve_loss()  # one-level steps check it too
        if self.arch_data is not None:
            self._check_arch_data()
        blocks = list(self._blocks.values())
        state = getattr(model, "_pmpl_state", None)
        if state is None or not state.matches(blocks):
            with model.distribute_strategy.scope():
                state = _SearchState(blocks)
            # A checkpoint dependency of the model: checkpoints and
            # BackupAndRestore save it, and restore it (deferred if the
            # restore already happened); not among the model's weights.
            _internals.attach_checkpoint_dependency(model, "_pmpl_state", state)
        self._state = state
        self._total_epochs = self.search_epochs or self.params.get("epochs") or 1
        self._late_epoch = late_stage_epoch(self._total_epochs, self.late_stage)
        self._last_epoch = -1
        self._arch_iterator = None
        self._warned = False
        self._plan_budget()
        # The architecture step and the fixing rule join the model's compiled train
        # step, so they run without Python per step, with steps_per_execution
        # and under tf.distribute, and fit's own train function is rebuilt.
        self._digest = None
        self._around_bar = self._surround_progress_bar(callback_list)
        self._restore_train_step()  # a previous search that did not end
        self._original_train_step = model.train_step
        model.train_step = self._train_step
        model.make_train_function = self._guarded_make_train_function
        model.train_function = type(model).make_train_function(model, force=True)
        self._claimed_fit = False  # this fit's train function is made

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

    def set_model(self, model):
        # Keras calls this at the start of every fit this callback is in,
        # before it asks for the train function.
        super().set_model(model)
        self._claimed_fit = True

    def _guarded_make_train_function(self, force=False):
        """The model's ``make_train_function`` while a search is installed.

        An exception in ``fit`` skips ``on_train_end``, which would leave the
        search step in the model for good. The next ``fit`` asks for its
        train function before any callback runs: if this callback is not in
        it, the model gets its own train step back, so a plain ``fit`` after
        an interrupted search does not touch the search logits.
        """
        model = self.model
        if not self._claimed_fit:
            self._restore_train_step()
            return model.make_train_function(force=True)
        self._claimed_fit = False
        return type(model).make_train_function(model, force=force)

    def _restore_train_step(self):
        model = self.model
        for patched in ("train_step", "make_train_function"):
            if patched in model.__dict__:
                delattr(model, patched)
        model.train_function = None

    # -- the compiled part -------------------------------------------------
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
        probs = tf.nn.softmax(block.search_logits)
        top = tf.math.top_k(probs, k=2)
        margin = top.values[0] - top.values[1]
        winner = tf.one_hot(top.indices[0], len(block.candidates), dtype=tf.float32)
        return winner, margin >= self.threshold - DECISION_TOLERANCE, margin

    def _evidence_decision(self, block, index):
        winner, z_scores, count = evidence_scores(
            self._state.evidence_count[index],
            self._state.evidence_sum[index],
            self._state.evidence_squares[index],
        )
        decided, score = evidence_verdict(winner, z_scores, block.candidates, self.evidence_z)
        decided = decided & (count >= self.min_evidence_steps)
        return tf.one_hot(winner, len(block.candidates), dtype=tf.float32), decided, score

    # -- epochs ------------------------------------------------------------
    def _fix_undecided(self):
        fixed = {}
        for block in self._blocks.values():
            if block.is_fixed:
                continue
            rule = self.undecided
            if rule == "identity" and IDENTITY not in block.candidates:
                rule = "argmax"  # no 'no enhancer' to fall back on
            block.fix(undecided_ops(block, rule))
            fixed[block.name] = block.fixed_ops
        return fixed

    def on_epoch_begin(self, epoch, logs=None):
        if self.arch_data is not None and self._arch_iterator is None:
            # Made here, after any restore (BackupAndRestore restores in its
            # on_train_begin), so the held-out stream resumes where it stopped.
            skip = int(self._state.arch_batches.numpy())
            self._arch_iterator = iter(self.arch_data.repeat().skip(skip))
        state = self._state
        if self._last_epoch == -1 and epoch > 0:
            self._warn_if_starting_late(epoch)
        if int(state.warmup_steps.numpy()) == NEVER and epoch >= self._warmup_epoch:
            state.warmup_steps.assign(state.train_steps)
        if epoch >= self._late_epoch:
            fixed = self._fix_undecided()
            if fixed and self.verbose:
                self._print(
                    f"PMPL late stage (epoch {epoch + 1}): undecided points -> "
                    f"{self.undecided}: {self._describe(fixed)}"
                )
        self._compute_only_fixed_ops()

    def _warn_if_starting_late(self, epoch):
        """Warns when a search starts past epoch 1 with no state to continue from."""
        searching = any(not block.is_fixed for block in self._blocks.values())
        if not searching or epoch >= self._late_epoch or int(self._state.train_steps.numpy()):
            return
        warnings.warn(
            f"PMPL search starts at epoch {epoch + 1} with no search state: its step "
            "counters, the logits' optimizer moments and the evidence start from zero, while the "
            f"warm-up, the automatic learning rate and the late stage (epoch "
            f"{self._late_epoch + 1}) count from epoch 1. Resuming an interrupted search "
            "from a .keras/.h5 file (it carries the search logits and the fixed points "
            "only)? Resume from BackupAndRestore or a TF checkpoint instead, which continue "
            "exactly. A new search? Start it at initial_epoch=0.",
            UserWarning,
            stacklevel=3,
        )

    def _compute_only_fixed_ops(self):
        """Rebuilds the model's functions so fixed points run their op(s) alone.

        Fixing mid-epoch only sets masks (no retrace: every candidate still
        runs, at weight 0). At an epoch's start, points fixed so far are
        traced as their op(s) only, so the epochs after the late stage cost
        what the fixed network costs (measured in benchmarks/search_overhead.py).
        """
        changed = False
        for block in self._blocks.values():
            if block.is_fixed:
                changed |= block.compute_only_fixed(True)
        if changed:
            self._reset_functions()
            self.model.train_function = type(self.model).make_train_function(self.model, force=True)

    def _reset_functions(self):
        model = self.model
        model.train_function = None
        model.test_function = None
        model.predict_function = None

    def _snapshot(self):
        probabilities, fixed = {}, {}
        for block in self._blocks.values():
            probabilities[block.name] = block.probabilities()
            fixed[block.name] = block.fixed_ops
        return probabilities, fixed

    def on_epoch_end(self, epoch, logs=None):
        self._last_epoch = epoch
        probabilities, fixed = self._snapshot()
        previous = self.history[-1]["fixed"] if self.history else {}
        self.history.append({"epoch": epoch, "probabilities": probabilities, "fixed": fixed})
        decided = self.decided_points
        if logs is not None:
            evidence = self._current_evidence()
            for name, block in self.points.items():
                if self.log_probabilities:
                    for op, p in probabilities[name].items():
                        logs[f"{LOG_PREFIX}/{name}/{op}"] = p
                logs[f"{LOG_PREFIX}/{name}/fixed"] = fixed_code(fixed[name])
                logs[f"{EVIDENCE_LOG_PREFIX}/{name}"] = evidence[name]
            done = [ops for ops in fixed.values() if ops]
            logs[f"{LOG_PREFIX}/fixed_points"] = len(done)
            logs[f"{LOG_PREFIX}/decided_points"] = decided
            logs[f"{LOG_PREFIX}/enlarging_points"] = sum(is_enlarging(ops) for ops in done)
        if self.verbose:
            new = {n: ops for n, ops in fixed.items() if ops and previous.get(n) != ops}
            line = f"PMPL epoch {epoch + 1}: {decided}/{len(fixed)} points "
            line += "decided by evidence" if self.decision == "evidence" else "fixed by the margin"
            if new:
                line += f"; new: {self._describe(new)}"
            self._digest = line + f"; totals: {self._totals(fixed)}"
            if not self._around_bar:
                self._flush_digest()

    def on_train_end(self, logs=None):
        finished = self._last_epoch + 1 >= self._total_epochs or self.model.stop_training
        fixed = self._fix_undecided() if finished else {}
        if fixed and self.verbose:
            self._print(
                f"PMPL end of fit: undecided points -> {self.undecided}: {self._describe(fixed)}"
            )
        if fixed and self.history:
            # The last record shows the state fit leaves behind.
            self.history[-1]["fixed"] = self._snapshot()[1]
        # The model traces in full again (its fixed masks still decide the output).
        if [block for block in self._blocks.values() if block.compute_only_fixed(False)]:
            self._reset_functions()
        self._restore_train_step()
        if finished:
            self._warn_if_undecided(fixed_at_end=len(fixed))
            self._warn_if_at_chance(logs)
        else:
            self._warn_if_cut_short()

    def _warn_if_cut_short(self):
        """Warns when fit ended before its epochs with no callback stopping it.

        tf_keras ends fit that way when the input runs out of data (it logs
        "Your input ran out of data"); the search is then neither finished
        nor fixed, and nothing else would say what that means for it.
        """
        epochs = self.params.get("epochs") or 0
        undecided = [block.name for block in self._blocks.values() if not block.is_fixed]
        if not undecided or self._last_epoch + 1 >= epochs:
            return  # a search split over several fits ends its first ones here
        warnings.warn(
            f"PMPL search: fit ended after epoch {self._last_epoch + 1} of its {epochs} with no "
            "callback stopping it (did the input run out of data?), before the search's end: "
            f"{len(undecided)} of {len(self._blocks)} points are undecided and the model "
            "still computes every candidate there. Give fit data for all its epochs "
            "(dataset.repeat() with steps_per_epoch, or a steps_per_epoch the data fills) and "
            "search again, or take the architecture as it stands with "
            "derive_architecture(model, undecided='identity').",
            SearchUndecidedWarning,
            stacklevel=2,
        )

    def _warn_if_at_chance(self, logs):
        """One ``ModelAtChanceWarning`` when fit's last training accuracy is about chance."""
        accuracy = training_accuracy(logs)
        classes = self.model.output_shape[-1] if len(self.model.outputs) == 1 else None
        if accuracy is None or not classes or classes < 2:
            return
        chance = 1.0 / classes
        if accuracy < chance + CHANCE_MARGIN * (1.0 - chance):
            warnings.warn(
                f"The searched model's training accuracy after fit is {accuracy:.3f}, about "
                f"chance for {classes} classes ({chance:.3f}): it has not learned, and its "
                f"architecture says nothing. Likely causes: {UNSETTLED_BATCH_NORM}, a "
                "learning rate far off, labels that do not match the outputs, or too few "
                "steps.",
                ModelAtChanceWarning,
                stacklevel=2,
            )

    def _warn_if_undecided(self, fixed_at_end=0):
        decided = self.decided_points
        total = len(self._blocks)
        # What the search really took (the budget may not have known the epoch length).
        state = self._state
        taken = int(state.adam_steps.numpy())
        warmup = int(state.warmup_steps.numpy())
        reasons = []
        if decided * 2 < total:
            reasons.append(
                f"only {decided} of {total} points were decided by evidence; the other "
                f"{total - decided} became '{self.undecided}'"
            )
        reach, lead = taken * self._logits_lr, self.budget["margin_lead"]
        if self.decision == "margin" and reach < lead:
            reasons.append(
                f"the search logits could not reach the {self.threshold} margin: {taken} "
                f"architecture steps at learning rate {self._logits_lr:.2g} move a logit by at "
                f"most {reach:.2f}, the margin needs a lead of {lead:.2f}"
            )
        if reasons:
            warmup_text = (
                "a warm-up of the whole run" if warmup == NEVER else f"{warmup} warm-up steps"
            )
            message = (
                "PMPL search: " + "; ".join(reasons) + ". "
                f"It took {taken} architecture steps after {warmup_text}. The architecture is "
                "honest about it (undecided points cost nothing with undecided='identity'), but it "
                "is not a search result: give the search more steps (more epochs or images), "
                "fewer candidates (search_candidates=...), or a lower evidence_z."
            )
            warnings.warn(message, SearchUndecidedWarning, stacklevel=2)
        if fixed_at_end:
            message = (
                f"PMPL search: {fixed_at_end} point(s) fixed only at the end of fit (late_stage="
                f"{self.late_stage:.2g} of {self._total_epochs} epochs): the supernet's weights "
                "were trained for the search mixture there, not for the op they now compute, so "
                "this model (and to_fixed_model of it) needs training before use: fit again, or "
                "retrain the architecture from scratch, or search with late_stage < 1."
            )
            warnings.warn(message, FixedAtEndWarning, stacklevel=2)

    # -- evidence ----------------------------------------------------------
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

    # -- reporting ---------------------------------------------------------
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

    @property
    def architecture(self):
        """The searched ``ArchitectureSpec`` (``undecided``'s rule where still searching)."""
        if not self._blocks:
            raise ValueError("PMPLCallback has not been used in fit yet: no architecture.")
        rule = self.undecided if self.undecided in UNDECIDED_RULES else "argmax"
        return derive_architecture(self.model, undecided=rule)

    def summary_rows(self):
        """Per-point rows of ``summary()``.

        Dicts with ``block``, ``point``, ``state`` (``"decided"``: fixed by
        evidence or the margin; ``"defaulted"``: fixed by the ``undecided``
        rule; ``"searching"``), ``ops`` (fixed, or the current best),
        ``probability`` (of those ops), ``evidence`` (the z, or the margin,
        at the decision, else now), ``candidates`` (how many the point had),
        ``receptive_field`` and ``fixed_at_step``.
        """
        if not self._blocks:
            raise ValueError("PMPLCallback has not been used in fit yet: nothing to summarize.")
        state = self._state
        fixed_at = state.fixed_at_step.numpy()
        at_fix = state.evidence_at_fix.numpy()
        now = self._current_evidence()
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
        the receptive field the op(s) add, and the step of the decision.

        Args:
            print_fn: Called with each line (default ``print``).
        """
        print_fn = print_fn or print
        rows = self.summary_rows()
        header = f"{'block':>5}  {'point':<18} {'state':<9} {'op(s)':<14} {'cand.':>5} {'p':>6} "
        header += f"{'evidence':>8}  {'receptive field':<26} decided at step"
        print_fn(header)
        print_fn("-" * len(header))
        for row in rows:
            step = "-" if row["fixed_at_step"] is None else str(row["fixed_at_step"])
            print_fn(
                f"{row['block']:>5}  {row['point']:<18} {row['state']:<9} "
                f"{'+'.join(row['ops']):<14} {row['candidates']:>5} {row['probability']:>6.3f} "
                f"{row['evidence']:>8.2f}  {row['receptive_field']:<26} {step}"
            )
        decided = self.decided_points
        defaulted = sum(row["state"] == "defaulted" for row in rows)
        enlarging = sum(is_enlarging(row["ops"]) for row in rows if row["state"] != "searching")
        bar = (
            f"evidence z >= {self.evidence_z:g}"
            if self.decision == "evidence"
            else f"margin >= {self.threshold:g}"
        )
        print_fn(
            f"{decided}/{len(rows)} points decided by evidence ({bar}), {defaulted} defaulted "
            f"to '{self.undecided}'; {enlarging} enlarge the receptive field."
        )

    def get_config(self):
        return dict(
            decision=self.decision,
            undecided=self.undecided,
            warmup=self.warmup,
            learning_rate=self.learning_rate,
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=self.epsilon,
            weight_decay=self.weight_decay,
            threshold=self.threshold,
            evidence_z=self.evidence_z,
            min_evidence_steps=self.min_evidence_steps,
            fix_every=self.fix_every,
            late_stage=self.late_stage,
            search_epochs=self.search_epochs,
            arch_step=self.arch_step,
            log_probabilities=self.log_probabilities,
            verbose=self.verbose,
            latency_weight=self.latency_weight,
            latency_table=self.latency_table,
        )


def evidence_scores(count, slope_sum, squares):
    """The evidence rule's statistics of one point.

    Args:
        count: Number of logit gradients seen.
        slope_sum: Per op, the sum of its loss slopes.
        squares: Per op pair ``(j, k)``, the sum of ``(slope_j - slope_k)**2``.

    Returns:
        ``(best, z, count)``: the index of the op with the lowest mean slope
        (the one whose weight lowers the loss most), and for every op ``j``
        the z score of ``mean(slope_j - slope_best)``, its paired standard
        error from the squares (0 for ``best`` itself).
    """
    count = tf.convert_to_tensor(count, tf.float32)
    n = tf.maximum(count, 2.0)
    mean = slope_sum / n
    best = tf.argmin(mean, output_type=tf.int32)
    lead = mean - mean[best]
    second_moment = tf.gather(squares, best, axis=1) / n
    variance = tf.maximum(second_moment - tf.square(lead), 0.0) * n / (n - 1.0)
    z = lead / tf.sqrt(variance / n + 1e-30)
    z = tf.where(count >= 2.0, z, tf.zeros_like(z))
    return best, z, count


def evidence_verdict(best, z, candidates, bar):
    """Whether a point's evidence decides it, and the score that says so.

    The best op is decided when it beats ``identity`` by ``bar`` (an
    enhancer helps; among enhancers, the best mean wins), or, when it is
    ``identity`` itself (or there is no identity candidate), when it beats
    every other op by ``bar``. The score is that z (the smallest over the
    compared ops).
    """
    others = tf.not_equal(tf.range(len(candidates)), best)
    against_all = tf.reduce_min(tf.where(others, z, tf.fill(tf.shape(z), np.inf)))
    if IDENTITY not in candidates:
        return against_all >= bar - DECISION_TOLERANCE, against_all
    identity = candidates.index(IDENTITY)
    score = tf.where(tf.equal(best, identity), against_all, z[identity])
    return score >= bar - DECISION_TOLERANCE, score


def late_stage_epoch(epochs, late_stage=2.0 / 3.0):
    """The epoch (0-based) at whose start PMPL's late stage runs."""
    return int(round(late_stage * epochs))


__all__ = [
    "FixedAtEndWarning",
    "PMPLCallback",
    "SearchUndecidedWarning",
    "evidence_scores",
    "evidence_verdict",
    "margin_logit_lead",
    "decode_fixed_code",
    "fixed_code",
    "is_enlarging",
    "late_stage_epoch",
]

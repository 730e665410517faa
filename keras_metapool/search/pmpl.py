"""PMPLCallback: progressive meta-pooling learning inside ``model.fit``.

The callback's lifecycle (setup, epochs, the late stage, the end of ``fit``)
lives here; its argument checks in ``search.arguments``, its compiled step in
``search.arch_step``, the decision rules in ``search.decision``, its state in
``search.state``, what it prints in ``search.report`` and its warnings in
``search.diagnostics``.
"""

import numpy as np

from keras_metapool import _internals
from keras_metapool._keras import keras, require_tf_keras_model
from keras_metapool.layers.candidate_ops import IDENTITY
from keras_metapool.models.derive import (
    UNDECIDED_RULES,
    derive_architecture,
    search_blocks,
    undecided_ops,
)
from keras_metapool.search.arch_step import ArchitectureStepMixin, per_example_loss
from keras_metapool.search.arguments import (
    AUTO,
    AUTO_RATE_RANGE,
    AUTO_RATE_UNKNOWN,
    check_arguments,
)
from keras_metapool.search.decision import (
    DEFAULT_ERROR_RATE,
    PLANNED_STEPS_UNKNOWN,
    comparisons,
    margin_logit_lead,
)
from keras_metapool.search.diagnostics import (
    DiagnosticsMixin,
    FixedAtEndWarning,
    ModelAtChanceWarning,
    SearchUndecidedWarning,
    refuse_weight_restoring_callbacks,
)
from keras_metapool.search.report import EVIDENCE_LOG_PREFIX, LOG_PREFIX, ReportingMixin
from keras_metapool.search.state import (
    NEVER,
    SearchState,
    decode_fixed_code,
    fixed_code,
    is_enlarging,
)


class PMPLCallback(
    ArchitectureStepMixin, ReportingMixin, DiagnosticsMixin, keras.callbacks.Callback
):
    """Progressive Meta-Pooling Learning (docs/method.md §4) as a Keras callback.

    Drop it into ``fit`` on a search model
    (``MobileNetV2MP(meta_pooling="search")``, the default). During ``fit``:

    1. **Warm-up.** For the first ``warmup`` share of the search's steps only
       the weights train, every candidate at equal weight (as PC-DARTS).
    2. **Architecture steps.** Then every training step also takes one Adam
       step on the search logits (the paper's α,
       ``MetaPoolingBlock.search_logits``; the user's optimizer never touches
       them). With ``arch_data`` the step uses a held-out batch (first-order
       DARTS: a second forward and backward pass); without it (one-level)
       the gradient comes from the weight step's own backward pass.
       ``learning_rate="auto"`` sizes the step to the steps ``fit`` will take.
    3. **Decisions.** With ``decision="evidence"`` (the default) each logit
       gradient also gives every op's loss slope; a point is fixed for good
       once its best op beats ``identity`` (or ``identity`` beats every op)
       by a time-uniform bar, which keeps the chance that noise alone
       decides any point at about ``error_rate``, however often it looks
       (``keras_metapool.search.decision``). A steady loss effect that is
       not a gain in accuracy is decided like one (docs/search.md).
       ``decision="margin"`` is the paper's rule: fixed once the top two
       probabilities differ by ``threshold``.
    4. **The late stage.** At the start of epoch ``round(late_stage *
       epochs)`` (2/3 of them, the paper's) every point still searching gets
       the ``undecided`` rule (``"identity"``: no enhancer, costs nothing),
       and the epochs after it train the fixed architecture. ``fit`` ending
       earlier fixes them at its end. After ``fit``, ``pmpl.architecture``
       is the result; a search that decided fewer than half its points, or
       fixed points at the very end, ends with one ``SearchUndecidedWarning``
       saying what to change.

    The search's state (logits, masks, the logits' optimizer moments, the
    evidence) resumes exactly from ``BackupAndRestore`` and TF-format
    checkpoints. Per-point probabilities, fixed states (``fixed_code``) and
    evidence go to ``logs`` as ``pmpl/<point>/<op>``, ``pmpl/<point>/fixed``
    and ``pmpl_evidence/<point>`` (History, and CSVLogger/TensorBoard listed
    after this callback), not to the progress bar. docs/api.md ("Search")
    has the details, docs/search.md the defaults' reasons and measurements.

    Example:
        >>> supernet = keras_metapool.MobileNetV2MP(weights=None, input_shape=(64, 64, 3),
        ...                                         classes=10)
        >>> supernet.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
        >>> pmpl = keras_metapool.PMPLCallback()
        >>> supernet.fit(images, labels, epochs=30, callbacks=[pmpl])
        >>> pmpl.summary()
        >>> spec = pmpl.architecture          # an ArchitectureSpec: spec.save("arch.json")

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
        error_rate: The evidence rule's family-wise error, in (0, 1)
            (default 0.05): the chance that noise in the loss slopes alone
            decides any of the points, however often the rule looks
            (asymptotically). Lower it for fewer false decisions, at the
            cost of more steps per real one.
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

    Raises:
        ValueError: at construction, for an argument outside its range or vocabulary
            (``keras_metapool.search.arguments``) or an ``arch_data`` that is not a
            non-empty batched ``tf.data.Dataset``; when ``fit`` starts, for a model with no
            ``MetaPoolingBlock``, no loss, several losses without ``loss=``,
            ``arch_data`` not shaped like the model's input, or an
            ``EarlyStopping(restore_best_weights=True)`` among the callbacks.
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
        error_rate=DEFAULT_ERROR_RATE,
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
        check_arguments(locals())
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
        self.error_rate = float(error_rate)
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
        return per_example_loss(keras.losses.get(loss))

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
        # The evidence bar: the family's error split over every comparison a
        # decision can rest on, tightest at the planned number of steps.
        counts = [(len(b.candidates), IDENTITY in b.candidates) for b in self._blocks.values()]
        self._comparison_error = self.error_rate / max(comparisons(counts), 1)
        self._planned_steps = arch_steps or PLANNED_STEPS_UNKNOWN
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
        refuse_weight_restoring_callbacks(callback_list)
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
                state = SearchState(blocks)
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
        model.train_function = self._search_train_function(force=True)
        self._claimed_fit = False  # this fit's train function is made

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
        return self._search_train_function(force=force)

    def _search_train_function(self, force):
        """Keras' train function over the model's installed step (the search
        step; Keras' own once every point is fixed), traced once (see
        ``_internals.build_training_variables``)."""
        model = self.model
        made = type(model).make_train_function(model, force=force)
        return _internals.train_function_building_first(model, made)

    def _restore_train_step(self):
        model = self.model
        for patched in ("train_step", "make_train_function"):
            if patched in model.__dict__:
                delattr(model, patched)
        model.train_function = None

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

    def _compute_only_fixed_ops(self):
        """Rebuilds the model's functions so fixed points run their op(s) alone.

        Fixing mid-epoch only sets masks (no retrace: every candidate still
        runs, at weight 0). At an epoch's start, points fixed so far are
        traced as their op(s) only, and once every point is fixed the model's
        own train step takes over, so the epochs after the late stage cost what
        the fixed network costs (measured in benchmarks/search_overhead.py).
        """
        changed = False
        for block in self._blocks.values():
            if block.is_fixed:
                changed |= block.compute_only_fixed(True)
        if changed:
            self._reset_functions()
            if all(block.is_fixed for block in self._blocks.values()):
                # NOTE: nothing is left to search, and Keras' own step traces in
                # well under the search step's time over the same network.
                self.model.train_step = self._original_train_step
            self.model.train_function = self._search_train_function(force=True)

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

    @property
    def architecture(self):
        """The searched ``ArchitectureSpec`` (``undecided``'s rule where still searching)."""
        if not self._blocks:
            raise ValueError("PMPLCallback has not been used in fit yet: no architecture.")
        rule = self.undecided if self.undecided in UNDECIDED_RULES else "argmax"
        return derive_architecture(self.model, undecided=rule)

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
            error_rate=self.error_rate,
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


def late_stage_epoch(epochs, late_stage=2.0 / 3.0):
    """The epoch (0-based) at whose start PMPL's late stage runs."""
    return int(round(late_stage * epochs))


__all__ = [
    "EVIDENCE_LOG_PREFIX",
    "FixedAtEndWarning",
    "LOG_PREFIX",
    "ModelAtChanceWarning",
    "PMPLCallback",
    "SearchUndecidedWarning",
    "decode_fixed_code",
    "fixed_code",
    "is_enlarging",
    "late_stage_epoch",
]

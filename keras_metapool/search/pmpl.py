"""PMPLCallback: progressive meta-pooling learning inside ``model.fit``."""

import sys

import numpy as np
import tensorflow as tf

from keras_metapool._keras import keras
from keras_metapool.layers.candidate_ops import CANDIDATE_OPS, DEFAULT_CANDIDATES, IDENTITY
from keras_metapool.search.derive import derive_architecture, search_blocks, top_ops

ARCH_STEP_POSITIONS = ("before", "after")
#: Prefix of the PMPL entries of ``logs`` (History, CSVLogger, TensorBoard).
LOG_PREFIX = "pmpl"


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
    alpha optimizer's moments and the counters are saved and restored with
    the weights (alpha and the fixed masks are the blocks' own weights).
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

        self.adam_m = [variable(tf.zeros_like(b.alpha), tf.float32, "adam_m") for b in blocks]
        self.adam_v = [variable(tf.zeros_like(b.alpha), tf.float32, "adam_v") for b in blocks]
        self.adam_steps = variable(0, tf.int64, "adam_steps")
        self.train_steps = variable(0, tf.int64, "train_steps")
        self.arch_batches = variable(0, tf.int64, "arch_batches")
        self.fixed_at_step = variable(-np.ones(len(blocks), np.int64), tf.int64, "fixed_at_step")

    def matches(self, blocks):
        return len(self.adam_m) == len(blocks) and all(
            m.shape == b.alpha.shape for m, b in zip(self.adam_m, blocks)
        )


def _per_example_loss(loss):
    """A loss callable returning per-example values (no reduction)."""
    if isinstance(loss, keras.losses.Loss):
        config = dict(loss.get_config(), reduction=keras.losses.Reduction.NONE)
        return type(loss).from_config(config)
    return loss


class PMPLCallback(keras.callbacks.Callback):
    """Progressive Meta-Pooling Learning (METHOD.md §4) as a Keras callback.

    Drop it into ``fit`` on a search model
    (``MobileNetV2MP(meta_pooling="search")``, the default). During ``fit``:

    1. **alpha steps.** Every training step also takes one step on the
       architecture logits ``alpha`` of every searching point, with the
       callback's own Adam (``learning_rate=3e-4``, ``beta_1=0.5``,
       ``beta_2=0.999``, L2 ``weight_decay=1e-3`` added to the gradient, as
       the reference's ``torch.optim.Adam``). The user's optimizer never
       touches alpha (it is non-trainable). With ``arch_data`` the alpha step
       uses a held-out batch: first-order bi-level optimisation, as first-order
       DARTS. Without it, alpha is learned on the training batch itself
       (one-level), which is cheaper to set up but lets alpha overfit with the
       weights; prefer ``split_for_search``. The alpha step is part of the
       compiled train step (no Python per step) and runs under any
       ``tf.distribute`` strategy: each replica draws its own held-out batch
       and the alpha gradients are averaged over replicas.
    2. **Progressive fixing.** After every ``fix_every`` training steps, each
       searching point whose two most probable ops differ by at least
       ``threshold`` in ``softmax(alpha)`` is fixed, for good, to its most
       probable op. Fixing sets a mask variable: no retrace.
    3. **Late stage.** At the start of epoch ``round(late_stage * epochs)``,
       every point still searching is fixed to its two most probable ops
       (summed). ``fit`` ending earlier (e.g. ``EarlyStopping``) does the same
       at its end, so after ``fit`` every point is fixed and
       ``pmpl.architecture`` (or ``keras_metapool.derive_architecture``) is
       the result.

    Resuming: alpha and the fixed masks are model weights; the alpha
    optimizer's moments and the step counters live in a module attached to
    the model (``model._pmpl_state``). ``tf_keras.callbacks.BackupAndRestore``
    and TF-format checkpoints (``model.save_weights("ckpt")``,
    ``tf.train.Checkpoint(model=model)``) carry all of it, so an interrupted
    search resumed from them continues as an uninterrupted one (with a
    deterministic ``arch_data``: the held-out batches resume where they
    stopped). ``.h5``/``.keras`` weights carry alpha and the masks but not the
    optimizer moments.

    Logs: at each epoch end, for every point ``P`` (its layer name, e.g.
    ``block_6_mp``) and candidate ``op``, ``logs["pmpl/P/op"]`` is the
    probability of ``op`` and ``logs["pmpl/P/fixed"]`` the fixed state
    (``fixed_code``, over ``DEFAULT_CANDIDATES``: 0 while searching), plus ``pmpl/fixed_points`` and
    ``pmpl/enlarging_points``. Listed before ``CSVLogger``/``TensorBoard`` in
    ``callbacks``, the callback's entries reach them (and always reach
    ``History``). Keras' progress bar prints every log entry; pass
    ``log_probabilities=False`` for the counts alone. With ``verbose=1`` a
    one-line digest is printed per epoch; ``summary()`` prints the per-block
    table and ``keras_metapool.plot_search`` draws the trajectories.

    Args:
        arch_data: Held-out ``tf.data.Dataset`` of batched ``(images,
            labels)`` (or ``(images, labels, sample_weights)``) for the alpha
            steps, never the test set; repeated as needed. None: one-level
            search on the training batches.
        learning_rate: Adam learning rate of alpha.
        beta_1: Adam's first-moment decay.
        beta_2: Adam's second-moment decay.
        epsilon: Adam's epsilon.
        weight_decay: L2 coefficient on alpha (added to its gradient).
        threshold: The fixing margin tau: top-1 minus top-2 probability.
        fix_every: Check for points to fix every this many training steps.
        late_stage: Fraction of the epochs after which undecided points are
            fixed to their top two ops; 1.0 leaves that to the end of ``fit``.
        search_epochs: Length of the whole search in epochs, when it spans
            several ``fit`` calls (e.g. ``fit(epochs=10)`` then
            ``fit(initial_epoch=10, epochs=30)``); default: ``fit``'s
            ``epochs``. The late stage counts from it, and a ``fit`` ending
            before it (unless stopped early, e.g. by ``EarlyStopping``) leaves
            undecided points searching.
        arch_step: ``"before"`` (default, as DARTS) or ``"after"`` the weight
            step.
        loss: Loss of the alpha step (default: the model's compiled loss),
            a loss name, function or ``tf_keras.losses.Loss``.
        log_probabilities: Put every op's probability in ``logs``.
        verbose: 1 prints one line per epoch, 0 is silent.
    """

    def __init__(
        self,
        arch_data=None,
        learning_rate=3e-4,
        beta_1=0.5,
        beta_2=0.999,
        epsilon=1e-8,
        weight_decay=1e-3,
        threshold=0.2,
        fix_every=1,
        late_stage=2.0 / 3.0,
        search_epochs=None,
        arch_step="before",
        loss=None,
        log_probabilities=True,
        verbose=1,
    ):
        super().__init__()
        if arch_data is not None and not isinstance(arch_data, tf.data.Dataset):
            raise ValueError(
                "`arch_data` must be a batched tf.data.Dataset of (images, labels), got "
                f"{type(arch_data).__name__}. For arrays: tf.data.Dataset.from_tensor_slices("
                "(x, y)).batch(batch_size); to cut one from the training data: "
                "keras_metapool.split_for_search."
            )
        checks = {
            "learning_rate": learning_rate > 0,
            "beta_1": 0 <= beta_1 < 1,
            "beta_2": 0 <= beta_2 < 1,
            "epsilon": epsilon > 0,
            "weight_decay": weight_decay >= 0,
            "threshold": 0 < threshold <= 1,
            "late_stage": 0 < late_stage <= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"`{name}` is out of range: {locals()[name]!r}.")
        if isinstance(fix_every, bool) or not isinstance(fix_every, int) or fix_every < 1:
            raise ValueError(f"`fix_every` must be a positive integer, got {fix_every!r}.")
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
        self.learning_rate = float(learning_rate)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.weight_decay = float(weight_decay)
        self.threshold = float(threshold)
        self.fix_every = int(fix_every)
        self.late_stage = float(late_stage)
        self.search_epochs = search_epochs
        self.arch_step = arch_step
        self.loss = loss
        self.log_probabilities = bool(log_probabilities)
        self.verbose = int(verbose)
        #: One record per finished epoch: {"epoch", "probabilities", "fixed"}.
        self.history = []
        self._blocks = {}
        self._state = None
        self._arch_iterator = None
        self._loss_fn = None
        self._late_epoch = None

    # -- setup -------------------------------------------------------------
    @property
    def points(self):
        """The searched points: ``{layer name: MetaPoolingBlock}`` in block order."""
        return {block.name: block for block in self._blocks.values()}

    def _resolve_loss(self):
        loss = self.loss if self.loss is not None else getattr(self.model, "loss", None)
        if loss is None or (isinstance(loss, (dict, list, tuple)) and not loss):
            raise ValueError(
                "PMPLCallback needs a loss for the alpha step: compile the model with a "
                "loss, or pass PMPLCallback(loss=...)."
            )
        if isinstance(loss, (dict, list, tuple)):
            raise ValueError(
                "The model has several losses; pass the alpha step's loss with "
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

    def on_train_begin(self, logs=None):
        model = self.model
        self._blocks = search_blocks(model)
        if not self._blocks:
            raise ValueError(
                f"PMPLCallback: model '{model.name}' has no MetaPoolingBlock to search. "
                "Build it with MobileNetV2MP(meta_pooling='search')."
            )
        if self.arch_data is not None:
            self._check_arch_data()
        self._loss_fn = self._resolve_loss()
        blocks = list(self._blocks.values())
        state = getattr(model, "_pmpl_state", None)
        if state is None or not state.matches(blocks):
            with model.distribute_strategy.scope():
                state = _SearchState(blocks)
            # Tracked by the model: checkpoints and BackupAndRestore save it,
            # and restore it (deferred if the restore already happened).
            model._pmpl_state = state
        self._state = state
        self._total_epochs = self.search_epochs or self.params.get("epochs") or 1
        self._late_epoch = late_stage_epoch(self._total_epochs, self.late_stage)
        self._last_epoch = -1
        self._arch_iterator = None
        # The alpha step and the fixing rule join the model's compiled train
        # step, so they run without Python per step, with steps_per_execution
        # and under tf.distribute, and fit's own train function is rebuilt.
        if "train_step" in model.__dict__:  # a previous search did not end
            del model.train_step
        self._original_train_step = model.train_step
        model.train_step = self._train_step
        model.train_function = None
        model.train_function = model.make_train_function(force=True)

    def _restore_train_step(self):
        model = self.model
        if "train_step" in model.__dict__:
            del model.train_step
        model.train_function = None

    # -- the compiled part -------------------------------------------------
    def _train_step(self, data):
        if self.arch_step == "before":
            self._arch_update(self._arch_batch(data))
        logs = self._original_train_step(data)
        if self.arch_step == "after":
            self._arch_update(self._arch_batch(data))
        self._fix_confident_points()
        return logs

    def _arch_batch(self, data):
        if self.arch_data is None:
            return data
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        self._state.arch_batches.assign_add(replicas)
        return next(self._arch_iterator)

    def _arch_update(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        blocks = list(self._blocks.values())
        alphas = [block.alpha for block in blocks]
        with tf.GradientTape() as tape:
            tape.watch(alphas)
            y_pred = self.model(x, training=True)
            per_example = tf.cast(self._loss_fn(y, y_pred), tf.float32)
            if sample_weight is not None:
                weights = tf.cast(sample_weight, tf.float32)
                per_example = per_example * tf.reshape(
                    weights, tf.concat([tf.shape(weights), [1] * (per_example.shape.rank - 1)], 0)
                )
            loss = tf.reduce_mean(per_example)
        grads = tape.gradient(loss, alphas)
        grads = [tf.zeros_like(a) if g is None else g for a, g in zip(alphas, grads)]
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            grads = context.all_reduce(tf.distribute.ReduceOp.MEAN, grads)
        state = self._state
        step = tf.cast(state.adam_steps + 1, tf.float32)
        correction_1 = 1.0 - tf.pow(self.beta_1, step)
        correction_2 = 1.0 - tf.pow(self.beta_2, step)
        for block, alpha, grad, m, v in zip(blocks, alphas, grads, state.adam_m, state.adam_v):
            # Fixed points keep their alpha (and its probabilities) as they were.
            searching = tf.reduce_max(block.fixed_mask) <= 0.0
            grad = grad + self.weight_decay * alpha
            new_m = self.beta_1 * m + (1.0 - self.beta_1) * grad
            new_v = self.beta_2 * v + (1.0 - self.beta_2) * tf.square(grad)
            update = (new_m / correction_1) / (tf.sqrt(new_v / correction_2) + self.epsilon)
            alpha.assign(tf.where(searching, alpha - self.learning_rate * update, alpha))
            m.assign(tf.where(searching, new_m, m))
            v.assign(tf.where(searching, new_v, v))
        state.adam_steps.assign_add(1)

    def _fix_confident_points(self):
        state = self._state
        step = state.train_steps.assign_add(1)
        check = tf.equal(step % self.fix_every, 0)
        fixed_at = []
        for block in self._blocks.values():
            probs = tf.nn.softmax(block.alpha)
            top = tf.math.top_k(probs, k=2)
            searching = tf.reduce_max(block.fixed_mask) <= 0.0
            fix_now = check & searching & (top.values[0] - top.values[1] >= self.threshold)
            winner = tf.one_hot(top.indices[0], len(block.candidates), dtype=tf.float32)
            block.fixed_mask.assign(tf.where(fix_now, winner, block.fixed_mask))
            fixed_at.append(fix_now)
        state.fixed_at_step.assign(
            tf.where(tf.stack(fixed_at), step, state.fixed_at_step), read_value=False
        )

    # -- epochs ------------------------------------------------------------
    def _fix_undecided_to_top2(self):
        fixed = {}
        for block in self._blocks.values():
            if block.is_fixed:
                continue
            block.fix(top_ops(block, 2))
            fixed[block.name] = block.fixed_ops
        return fixed

    def on_epoch_begin(self, epoch, logs=None):
        if self.arch_data is not None and self._arch_iterator is None:
            # Made here, after any restore (BackupAndRestore restores in its
            # on_train_begin), so the held-out stream resumes where it stopped.
            skip = int(self._state.arch_batches.numpy())
            self._arch_iterator = iter(self.arch_data.repeat().skip(skip))
        if epoch >= self._late_epoch:
            fixed = self._fix_undecided_to_top2()
            if fixed and self.verbose:
                self._print(f"PMPL late stage (epoch {epoch + 1}): {self._describe(fixed)}")

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
        if logs is not None:
            for name, block in self.points.items():
                if self.log_probabilities:
                    for op, p in probabilities[name].items():
                        logs[f"{LOG_PREFIX}/{name}/{op}"] = p
                logs[f"{LOG_PREFIX}/{name}/fixed"] = fixed_code(fixed[name])
            done = [ops for ops in fixed.values() if ops]
            logs[f"{LOG_PREFIX}/fixed_points"] = len(done)
            logs[f"{LOG_PREFIX}/enlarging_points"] = sum(is_enlarging(ops) for ops in done)
        if self.verbose:
            new = {n: ops for n, ops in fixed.items() if ops and previous.get(n) != ops}
            line = f"PMPL epoch {epoch + 1}: {sum(bool(o) for o in fixed.values())}/"
            line += f"{len(fixed)} points fixed"
            if new:
                line += f"; new: {self._describe(new)}"
            self._print(line + f"; totals: {self._totals(fixed)}")

    def on_train_end(self, logs=None):
        finished = self._last_epoch + 1 >= self._total_epochs or self.model.stop_training
        fixed = self._fix_undecided_to_top2() if finished else {}
        if fixed and self.verbose:
            self._print(f"PMPL end of fit: undecided points fixed to their top two: "
                        f"{self._describe(fixed)}")  # fmt: skip
        if fixed and self.history:
            # The last record shows the state fit leaves behind.
            self.history[-1]["fixed"] = self._snapshot()[1]
        self._restore_train_step()

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
        """The searched ``ArchitectureSpec`` (argmax where still undecided)."""
        if not self._blocks:
            raise ValueError("PMPLCallback has not been used in fit yet: no architecture.")
        return derive_architecture(self.model)

    def summary_rows(self):
        """Per-point rows of ``summary()``: dicts with block, point, state, ops,
        probability, receptive_field and fixed_at_step."""
        if not self._blocks:
            raise ValueError("PMPLCallback has not been used in fit yet: nothing to summarize.")
        fixed_at = self._state.fixed_at_step.numpy()
        rows = []
        for index, (block_id, block) in enumerate(self._blocks.items()):
            probs = block.probabilities()
            ops = block.fixed_ops or (max(probs, key=probs.get),)
            rows.append(
                dict(
                    block=block_id,
                    point=block.name,
                    state="fixed" if block.is_fixed else "searching",
                    ops=ops,
                    probability=float(sum(probs[op] for op in ops)),
                    receptive_field=" + ".join(CANDIDATE_OPS[op].receptive_field for op in ops),
                    fixed_at_step=int(fixed_at[index]) if fixed_at[index] >= 0 else None,
                )
            )
        return rows

    def summary(self, print_fn=None):
        """Prints the per-block table: op(s), probability, receptive field.

        Args:
            print_fn: Called with each line (default ``print``).
        """
        print_fn = print_fn or print
        rows = self.summary_rows()
        header = f"{'block':>5}  {'point':<18} {'state':<9} {'op(s)':<14} {'p':>6}  "
        header += f"{'receptive field':<34} fixed at step"
        print_fn(header)
        print_fn("-" * len(header))
        for row in rows:
            step = "-" if row["fixed_at_step"] is None else str(row["fixed_at_step"])
            if row["state"] == "fixed" and row["fixed_at_step"] is None:
                step = "late stage"
            print_fn(
                f"{row['block']:>5}  {row['point']:<18} {row['state']:<9} "
                f"{'+'.join(row['ops']):<14} {row['probability']:>6.3f}  "
                f"{row['receptive_field']:<34} {step}"
            )
        fixed = [row for row in rows if row["state"] == "fixed"]
        enlarging = sum(is_enlarging(row["ops"]) for row in fixed)
        print_fn(
            f"{len(fixed)}/{len(rows)} points fixed; {enlarging} enlarge the receptive "
            f"field, {len(fixed) - enlarging} have no enhancer."
        )

    def get_config(self):
        return dict(
            learning_rate=self.learning_rate,
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=self.epsilon,
            weight_decay=self.weight_decay,
            threshold=self.threshold,
            fix_every=self.fix_every,
            late_stage=self.late_stage,
            search_epochs=self.search_epochs,
            arch_step=self.arch_step,
            log_probabilities=self.log_probabilities,
            verbose=self.verbose,
        )


def split_for_search(dataset, fraction=0.5):
    """Splits a dataset into a weight part and a held-out part for alpha.

    Elements are dealt deterministically, interleaved: with ``fraction=0.5``
    every other element is held out (METHOD.md §4's 50/50 split). Split an
    unbatched dataset of examples (then batch both parts), before any
    shuffling; a dataset reshuffled each iteration would deal different
    elements to the two parts every epoch, and they would overlap.

    Args:
        dataset: A ``tf.data.Dataset``.
        fraction: Share of the elements held out for the alpha steps, in (0, 1).

    Returns:
        ``(train_part, arch_part)``, two ``tf.data.Dataset``.
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(f"`dataset` must be a tf.data.Dataset, got {type(dataset).__name__}.")
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"`fraction` must be in (0, 1), got {fraction!r}.")
    fraction = float(fraction)

    def held_out(index):
        # Element i is held out when floor((i + 1) f) > floor(i f): evenly
        # interleaved, exactly round(n f) of n elements.
        i = tf.cast(index, tf.float64)
        return tf.floor((i + 1.0) * fraction) > tf.floor(i * fraction)

    numbered = dataset.enumerate()
    arch = numbered.filter(lambda i, _: held_out(i)).map(lambda _, element: element)
    train = numbered.filter(lambda i, _: tf.logical_not(held_out(i))).map(
        lambda _, element: element
    )
    return train, arch


def late_stage_epoch(epochs, late_stage=2.0 / 3.0):
    """The epoch (0-based) at whose start PMPL's late stage runs."""
    return int(round(late_stage * epochs))


__all__ = [
    "PMPLCallback",
    "decode_fixed_code",
    "fixed_code",
    "is_enlarging",
    "late_stage_epoch",
    "split_for_search",
]

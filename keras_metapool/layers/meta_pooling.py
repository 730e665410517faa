"""MetaPoolingBlock: the searchable mixture of candidate ops (docs/method.md §2)."""

import warnings

import numpy as np
import tensorflow as tf

from keras_metapool._keras import keras
from keras_metapool._layer_facts import BATCH_NORM_MOMENTUM, SSP_ARGUMENTS, true_or_false
from keras_metapool._ranges import MOMENTUM, NON_NEGATIVE, POSITIVE
from keras_metapool.layers.activations import hard_swish
from keras_metapool.layers.building import (
    build_in_own_scope,
    build_sublayer,
    feature_map_shape,
    traced_as_written,
)
from keras_metapool.layers.candidate_ops import (
    DEFAULT_CANDIDATES,
    IDENTITY,
    build_candidate_op,
    validate_op_name,
)

#: The SSP arguments a block passes to its ``ssp`` candidate itself.
_SSP_ARGUMENTS_OF_THE_BLOCK = ("batch_norm_momentum",)

#: Standard deviation of the search logits' normal initialisation (docs/method.md §2).
DEFAULT_SEARCH_LOGITS_INIT_STDDEV = 1e-3


def _checked_ssp_kwargs(ssp_kwargs):
    """``ssp_kwargs`` as a dict, refused if it names anything SSP does not take from it."""
    ssp_kwargs = dict(ssp_kwargs or {})
    allowed = [name for name in SSP_ARGUMENTS if name not in _SSP_ARGUMENTS_OF_THE_BLOCK]
    unknown = sorted(set(ssp_kwargs) - set(allowed))
    if unknown:
        raise ValueError(
            f"`ssp_kwargs` has {', '.join(map(repr, unknown))}; the ssp candidate takes "
            f"{', '.join(allowed)} from it (its batch_norm_momentum is the block's own)."
        )
    return ssp_kwargs


def _normalize_fixed(fixed, candidates):
    """Validates a fixed state: None, one op name, or a pair of distinct names."""
    if fixed is None:
        return None
    ops = (fixed,) if isinstance(fixed, str) else tuple(fixed)
    if len(ops) not in (1, 2) or len(set(ops)) != len(ops):
        raise ValueError(
            f"`fixed` must be one op name or a pair of two distinct op names, got {fixed!r}."
        )
    for op in ops:
        validate_op_name(op, "fixed")
        if op not in candidates:
            raise ValueError(
                f"`fixed` op {op!r} is not among this block's candidates {list(candidates)}."
            )
    return tuple(ops)


@keras.utils.register_keras_serializable(package="keras_metapool")
class MetaPoolingBlock(keras.layers.Layer):
    """The parameterized spatial enhancer searched by PMPL (docs/method.md §2).

    While searching, the block computes the mixture

    ```
    sum_k softmax(α)_k * op_k(x)              (post_norm=False)
    hswish(BN(sum_k softmax(α)_k * op_k(x)))  (post_norm=True, the paper's)
    ```

    with one scalar logit ``α_k`` per candidate op: the *search logits*
    ``search_logits``, the paper's α (not ``alpha``, which names the width
    multiplier in ``MobileNetV2MP``). Without the post-norm
    (the default of ``MobileNetV2MP``'s search supernet), every candidate is
    scored as exactly what the derived model computes at that point:
    ``identity`` as no layer at all, ``ssp`` as the lone SSP layer. With it,
    ``identity`` is scored as ``hswish(BN(x))`` while the derived model drops
    the point: the reference code's mismatch, kept for faithfulness.
    ``search_logits`` is a non-trainable variable: the user's optimizer never
    updates it; the PMPL search does (``keras_metapool.PMPLCallback``).

    A block can be *fixed*, for good, to one op or to a pair of ops:
    - to one op: the output is ``op(x)`` (``hswish(BN(op(x)))`` with the
      post-norm);
    - to a pair: ``op_a(x) + op_b(x)`` (unweighted sum; inside the post-norm
      with it);
    - to ``identity`` alone: the output is ``x`` itself; the block then stands
      for "no enhancer here", which the deployed model drops entirely
      (BN and activation included).

    The fixed state lives in a non-trainable variable (``fixed_mask``), so it
    is saved and restored with the weights, in every save format, and fixing
    a block during ``fit`` does not retrace the compiled step. The other ops
    still run (at weight 0, so they get no gradient); the lean model built
    from a fixed architecture (``MobileNetV2MP(meta_pooling=spec)``) computes
    only the chosen ops.

    Args:
        candidates: Names of the candidate ops (default: all 8 of
            ``keras_metapool.layers.CANDIDATE_OPS``). At least two, distinct.
        post_norm: Follow the mixture with BatchNormalization + hard swish
            (the paper's search mixture). Default True, the form of blocks
            saved before the option existed; ``MobileNetV2MP`` passes its
            spec's ``post_norm``.
        fixed: Initial fixed state: None (searching), an op name or a pair.
        search_logits_init_stddev: Standard deviation of the normal
            initialisation of ``search_logits`` (None: 1e-3, docs/method.md
            §2). ``alpha_init_stddev``, its former name, still works with a
            ``DeprecationWarning``.
        batch_norm_momentum: Momentum of the block's BatchNormalization and of
            the one inside SSP.
        batch_norm_epsilon: Epsilon of the block's BatchNormalization.
        ssp_kwargs: Extra keyword arguments for the ``SpatialEnhancer``
            candidate.
        seed: Optional seed of the ``search_logits`` initialiser.
        **kwargs: Standard layer arguments.

    Input shape:
        4D tensor ``(batch, H, W, C)``; any ``H, W >= 1``.

    Output shape:
        Same as the input.

    Saved files: the search logits are stored as the weight ``alpha`` (the
    paper's name, and the one every saved supernet and checkpoint holds), so
    files saved before the rename load as they are.
    """

    def __init__(
        self,
        candidates=DEFAULT_CANDIDATES,
        post_norm=True,
        fixed=None,
        search_logits_init_stddev=None,
        batch_norm_momentum=BATCH_NORM_MOMENTUM,
        batch_norm_epsilon=1e-3,
        ssp_kwargs=None,
        seed=None,
        **kwargs,
    ):
        if "alpha_init_stddev" in kwargs:
            if search_logits_init_stddev is not None:
                raise ValueError(
                    "Pass search_logits_init_stddev or its deprecated name alpha_init_stddev, "
                    "not both."
                )
            warnings.warn(
                "MetaPoolingBlock(alpha_init_stddev=...) is deprecated: the search logits are "
                "`search_logits`, so pass search_logits_init_stddev=... (`alpha` names the "
                "width multiplier).",
                DeprecationWarning,
                stacklevel=2,
            )
            search_logits_init_stddev = kwargs.pop("alpha_init_stddev")
        super().__init__(**kwargs)
        candidates = tuple(candidates)
        for name in candidates:
            validate_op_name(name, "candidates")
        if len(candidates) < 2 or len(set(candidates)) != len(candidates):
            raise ValueError(
                f"`candidates` must list at least two distinct op names, got {list(candidates)}."
            )
        self.candidates = candidates
        self.post_norm = true_or_false("post_norm", post_norm)
        self._initial_fixed = _normalize_fixed(fixed, candidates)
        # Fixed op(s) the next trace computes alone (``compute_only_fixed``).
        self._traced_ops = None
        if search_logits_init_stddev is None:
            search_logits_init_stddev = DEFAULT_SEARCH_LOGITS_INIT_STDDEV
        self.search_logits_init_stddev = float(
            NON_NEGATIVE.check("search_logits_init_stddev", search_logits_init_stddev)
        )
        self.batch_norm_momentum = float(MOMENTUM.check("batch_norm_momentum", batch_norm_momentum))
        self.batch_norm_epsilon = float(POSITIVE.check("batch_norm_epsilon", batch_norm_epsilon))
        self.ssp_kwargs = _checked_ssp_kwargs(ssp_kwargs)
        self.seed = seed
        self.ops = [
            build_candidate_op(
                name,
                layer_name=name,
                batch_norm_momentum=self.batch_norm_momentum,
                ssp_kwargs=self.ssp_kwargs,
                dtype=self.dtype_policy,
            )
            for name in candidates
        ]
        self.bn = None
        if self.post_norm:
            self.bn = keras.layers.BatchNormalization(
                momentum=self.batch_norm_momentum,
                epsilon=self.batch_norm_epsilon,
                name="bn",
                dtype=self.dtype_policy,
            )

    @build_in_own_scope
    def build(self, input_shape):
        input_shape = feature_map_shape(self, input_shape)
        count = len(self.candidates)
        # The logits and the mask stay float32 under mixed precision: softmax
        # over tiny logits (init N(0, 1e-3)) would lose them in float16. Under a
        # tf.distribute strategy, the search updates them inside the replicated
        # train step with the same value on every replica: ONLY_FIRST_REPLICA
        # lets it assign there. The weight keeps the name "alpha": saved
        # supernets and checkpoints (keyed by it) load as they are.
        self.search_logits = self.add_weight(
            name="alpha",
            shape=(count,),
            initializer=keras.initializers.RandomNormal(
                stddev=self.search_logits_init_stddev, seed=self.seed
            ),
            trainable=False,
            dtype="float32",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            experimental_autocast=False,
        )
        self.fixed_mask = self.add_weight(
            name="fixed_mask",
            shape=(count,),
            initializer=keras.initializers.Constant(self._mask_for(self._initial_fixed)),
            trainable=False,
            dtype="float32",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            experimental_autocast=False,
        )
        for sublayer in self.ops + ([self.bn] if self.bn is not None else []):
            build_sublayer(sublayer, input_shape)
        super().build(input_shape)

    # -- fixed state -------------------------------------------------------
    def _mask_for(self, fixed):
        mask = np.zeros(len(self.candidates), np.float32)
        for name in fixed or ():
            mask[self.candidates.index(name)] = 1.0
        return mask

    @property
    def fixed_ops(self):
        """The fixed op names (a tuple of one or two), or None while searching."""
        if not self.built:
            return self._initial_fixed
        mask = self.fixed_mask.numpy()
        ops = tuple(name for name, on in zip(self.candidates, mask) if on > 0)
        return ops or None

    @property
    def is_fixed(self):
        """Whether the block is fixed to one op or a pair."""
        return self.fixed_ops is not None

    def fix(self, ops):
        """Fixes the block to one op (a name) or a pair (two names), for good.

        Raises:
            ValueError: for unknown names, names outside ``candidates``, or
                more than two ops.
        """
        ops = _normalize_fixed(ops, self.candidates)
        if ops is None:
            raise ValueError("`fix` needs an op name or a pair; use unfix() to search again.")
        self._traced_ops = None
        if not self.built:
            self._initial_fixed = ops
        else:
            self.fixed_mask.assign(self._mask_for(ops))

    def unfix(self):
        """Returns the block to the searching state (its search logits are kept)."""
        self._traced_ops = None
        if not self.built:
            self._initial_fixed = None
        else:
            self.fixed_mask.assign(np.zeros(len(self.candidates), np.float32))

    def compute_only_fixed(self, enabled=True):
        """Whether calls traced from now on compute only the fixed op(s), if fixed.

        A fixed block otherwise still runs every candidate (at weight 0), so
        that fixing needs no retrace. ``PMPLCallback`` turns this on for the
        points fixed before an epoch starts and rebuilds the train function:
        the epochs after the late stage then cost what the fixed network
        costs. The output is the same either way. ``fix`` and ``unfix`` turn
        it off; a function traced while it was on keeps computing only the
        op(s) it saw, so rebuild it (``model.make_train_function(force=True)``).

        Returns:
            Whether the setting changed.
        """
        traced = self.fixed_ops if enabled else None
        changed = traced != self._traced_ops
        self._traced_ops = traced
        return changed

    def __getattr__(self, name):
        # `alpha`, the deprecated name of `search_logits`, answers here rather
        # than as a property: tf_keras' .keras saving reads every name dir()
        # lists, and would warn on every save and load.
        if name == "alpha":
            warnings.warn(
                "MetaPoolingBlock.alpha is deprecated: use MetaPoolingBlock.search_logits (the "
                "same variable; `alpha` names the width multiplier).",
                DeprecationWarning,
                stacklevel=2,
            )
            return self.search_logits
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def probabilities(self):
        """``softmax(search_logits)`` as a dict ``{op name: probability}``."""
        if not self.built:
            raise ValueError(f"MetaPoolingBlock '{self.name}' is not built yet.")
        probs = tf.nn.softmax(self.search_logits).numpy()
        return dict(zip(self.candidates, probs.tolist()))

    # -- computation -------------------------------------------------------
    def mixture_weights(self):
        """The weight of each op: the fixed mask if fixed, else softmax(search_logits)."""
        is_fixed = tf.reduce_max(self.fixed_mask) > 0.0
        return tf.where(is_fixed, self.fixed_mask, tf.nn.softmax(self.search_logits))

    def _candidate_outputs(self, inputs, training):
        """Every candidate's output, max pooling chained.

        Where all candidates run at every step, a chain of 3x3 max pools gives
        max3, max5 and max7 for 27 comparisons per element instead of 83: a
        3x3 max of a 3x3 max is exactly the 5x5 max, 'same' padding included
        (measured: the pooling part of a step 25% faster). The lean model uses
        the plain layers. (A separable average pooling was not faster here,
        and would not be bit-exact; average pooling uses the layers.)
        """
        outputs = {}
        max_sizes = [int(name[3:]) for name in self.candidates if name.startswith("max")]
        pooled = inputs
        for size in range(3, max(max_sizes, default=1) + 1, 2):
            pooled = tf.nn.max_pool2d(pooled, 3, 1, "SAME")
            outputs[f"max{size}"] = pooled
        return [
            outputs[name] if name in outputs else op(inputs, training=training)
            for name, op in zip(self.candidates, self.ops)
        ]

    @traced_as_written
    def call(self, inputs, training=None):
        if self._traced_ops is not None:
            return self._fixed_call(inputs, training)
        weights = tf.cast(self.mixture_weights(), inputs.dtype)
        # Every op runs, even at weight 0: a tf.cond per op to skip them made
        # the supernet's first step trace 2.5x slower and its steps ~2x slower
        # (measured on MobileNetV2MP 0.35, 64x64). A zero weight still makes a
        # fixed block's output exactly its op's, and gives unused ops zero
        # gradient; the lean model of a fixed architecture has no unused ops.
        outputs = self._candidate_outputs(inputs, training)
        mixed = tf.add_n([weights[i] * output for i, output in enumerate(outputs)])
        if not self.post_norm:
            # Weights 1 and 0 make a fixed block's output its op's, exactly.
            return mixed
        output = hard_swish(self.bn(mixed, training=training))
        if IDENTITY not in self.candidates:
            return output
        identity_only = tf.reduce_all(tf.equal(self.fixed_mask, self._mask_for((IDENTITY,))))
        return tf.where(identity_only, inputs, output)

    def _fixed_call(self, inputs, training):
        """``call`` of a fixed block, computing its fixed op(s) only (same output)."""
        chosen = self._traced_ops
        used = [op for name, op in zip(self.candidates, self.ops) if name in chosen]
        idle = [op for op in self.ops if op not in used]
        outputs = [op(inputs, training=training) for op in used]
        mixed = tf.add_n(outputs) if len(outputs) > 1 else outputs[0]
        if not self.post_norm:
            output = mixed
        elif chosen == (IDENTITY,):
            output, idle = inputs, [*idle, self.bn]
        else:
            output = hard_swish(self.bn(mixed, training=training))
        weights = [w for layer in idle for w in layer.trainable_weights]
        if not weights:
            return output
        # A zero tie keeps the idle weights in the graph with a zero gradient,
        # as in the masked mixture: without it Keras warns, for every step,
        # that they have no gradient. One scalar, added once.
        tie = 0.0 * tf.add_n([tf.reduce_sum(tf.cast(w, tf.float32)) for w in weights])
        return output + tf.cast(tie, output.dtype)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            candidates=list(self.candidates),
            post_norm=self.post_norm,
            fixed=list(self.fixed_ops) if self.fixed_ops else None,
            search_logits_init_stddev=self.search_logits_init_stddev,
            batch_norm_momentum=self.batch_norm_momentum,
            batch_norm_epsilon=self.batch_norm_epsilon,
            ssp_kwargs=self.ssp_kwargs,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config):
        # Configs saved before the rename name the argument alpha_init_stddev:
        # a file format, read as it is, without a warning.
        config = dict(config)
        if "alpha_init_stddev" in config:
            if config.get("search_logits_init_stddev") is not None:
                raise ValueError(
                    "MetaPoolingBlock config holds both search_logits_init_stddev and its "
                    "former name alpha_init_stddev; keep one."
                )
            config["search_logits_init_stddev"] = config.pop("alpha_init_stddev")
        return cls(**config)

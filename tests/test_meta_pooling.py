"""Tests of MetaPoolingBlock (docs/method.md §2): mixture numerics, fixing, saving."""

import re
import warnings

import numpy as np
import pytest
import tensorflow as tf
from helpers import np_bn, np_hswish, randomize_layers

from keras_metapool._keras import keras
from keras_metapool.layers import (
    CANDIDATE_OPS,
    DEFAULT_CANDIDATES,
    MetaPoolingBlock,
    hard_swish,
)


def np_softmax(a):
    e = np.exp(a - np.max(a))
    return e / e.sum()


def make_block(channels, rng, candidates=DEFAULT_CANDIDATES, **kwargs):
    """A built block with random weights everywhere and logits = linspace."""
    block = MetaPoolingBlock(candidates=candidates, **kwargs)
    block.build((None, None, None, channels))
    randomize_layers([layer for layer in [*block.ops, block.bn] if layer is not None], rng)
    block.search_logits.assign(np.linspace(-1.0, 1.5, len(candidates)).astype(np.float32))
    return block


def np_block_bn(block, y):
    bn = block.bn
    return np_bn(
        y,
        bn.gamma.numpy().astype(np.float64),
        bn.beta.numpy().astype(np.float64),
        bn.moving_mean.numpy().astype(np.float64),
        bn.moving_variance.numpy().astype(np.float64),
        bn.epsilon,
    )


def np_mixture(block, x):
    """hswish(BN(sum_k softmax(search_logits)_k op_k(x))) from the individual ops' outputs."""
    probs = np_softmax(block.search_logits.numpy().astype(np.float64))
    outs = [block.ops[k](x, training=False).numpy().astype(np.float64) for k in range(len(probs))]
    mixed = sum(p * o for p, o in zip(probs, outs))
    return np_hswish(np_block_bn(block, mixed))


def tf_fixed(block, x, names):
    """hswish(bn(sum of the named ops' outputs)) with the block's own layers, in TF."""
    outs = [block.ops[block.candidates.index(n)](x, training=False) for n in names]
    total = outs[0] if len(outs) == 1 else outs[0] + outs[1]
    return hard_swish(block.bn(total, training=False)).numpy()


@pytest.fixture
def x16(rng):
    return rng.normal(0.0, 1.0, (2, 5, 4, 16)).astype(np.float32)


# -- 5. mixture numerics and fixing ------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 5, 4, 16), (1, 1, 1, 16), (3, 2, 7, 40)])
def test_mixture_matches_numpy(rng, shape):
    block = make_block(shape[-1], rng)
    x = rng.normal(0.0, 1.0, shape).astype(np.float32)
    out = block(x, training=False).numpy()
    np.testing.assert_allclose(out, np_mixture(block, x), rtol=1e-5, atol=1e-5)
    assert block.fixed_ops is None and not block.is_fixed


def test_mixture_without_identity_candidate(rng, x16):
    block = make_block(16, rng, candidates=("ssp", "avg3", "max5"))
    np.testing.assert_allclose(
        block(x16, training=False).numpy(), np_mixture(block, x16), rtol=1e-5, atol=1e-5
    )


def test_probabilities_are_softmax_of_search_logits(rng):
    block = make_block(16, rng)
    probs = block.probabilities()
    assert list(probs) == list(DEFAULT_CANDIDATES)
    values = np.array(list(probs.values()))
    np.testing.assert_allclose(values.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        values, np_softmax(block.search_logits.numpy().astype(np.float64)), rtol=1e-6
    )
    np.testing.assert_allclose(
        block.mixture_weights().numpy(), np_softmax(block.search_logits.numpy()), rtol=1e-6
    )
    assert np.argmax(values) == len(DEFAULT_CANDIDATES) - 1  # linspace is increasing


def test_probabilities_before_build_raises():
    with pytest.raises(ValueError, match="not built"):
        MetaPoolingBlock().probabilities()


def test_search_logits_initialisation():
    block = MetaPoolingBlock(seed=3)
    block.build((None, 4, 4, 16))
    logits = block.search_logits.numpy()
    assert logits.shape == (len(DEFAULT_CANDIDATES),) and logits.dtype == np.float32
    assert np.all(np.abs(logits) < 1e-2) and np.std(logits) > 0  # N(0, 1e-3)
    np.testing.assert_array_equal(block.fixed_mask.numpy(), 0.0)


@pytest.mark.parametrize("name", DEFAULT_CANDIDATES[1:])
def test_fix_single_op_is_exact(rng, x16, name):
    block = make_block(16, rng)
    logits = block.search_logits.numpy().copy()
    block.fix(name)
    assert block.fixed_ops == (name,) and block.is_fixed
    np.testing.assert_array_equal(block.search_logits.numpy(), logits)
    out = block(x16, training=False).numpy()
    np.testing.assert_array_equal(out, tf_fixed(block, x16, [name]))
    weights = block.mixture_weights().numpy()
    np.testing.assert_array_equal(weights, [float(c == name) for c in block.candidates])


@pytest.mark.parametrize(
    "pair", [("ssp", "avg3"), ("identity", "max5"), ("avg7", "max3"), ("max7", "identity")]
)
def test_fix_pair_is_exact_unweighted_sum(rng, x16, pair):
    block = make_block(16, rng)
    logits = block.search_logits.numpy().copy()
    block.fix(pair)
    assert set(block.fixed_ops) == set(pair) and len(block.fixed_ops) == 2
    np.testing.assert_array_equal(block.search_logits.numpy(), logits)
    out = block(x16, training=False).numpy()
    np.testing.assert_array_equal(out, tf_fixed(block, x16, pair))


def test_fix_identity_returns_input_exactly(rng, x16):
    block = make_block(16, rng)
    block.fix("identity")
    assert block.fixed_ops == ("identity",)
    for training in (False, True):
        np.testing.assert_array_equal(block(x16, training=training).numpy(), x16)
    # Also inside a graph.
    np.testing.assert_array_equal(tf.function(lambda t: block(t, training=False))(x16).numpy(), x16)


def _gradients(block, x, variables):
    with tf.GradientTape() as tape:
        tape.watch(variables)
        loss = tf.reduce_sum(block(x, training=True) ** 2)
    return tape.gradient(loss, variables, unconnected_gradients="zero")


def test_fixed_block_gives_unused_ops_and_search_logits_no_gradient(rng, x16):
    """Fixed to avg3, SSP's weights and the logits learn nothing; unfixed they do."""
    block = make_block(16, rng, candidates=("ssp", "avg3"))
    ssp = block.ops[0]
    variables = ssp.trainable_weights + [block.search_logits]
    block.fix("avg3")
    for grad in _gradients(block, x16, variables):
        np.testing.assert_array_equal(grad.numpy(), 0.0)
    block.unfix()
    grads = _gradients(block, x16, variables)
    assert all(np.any(g.numpy() != 0.0) for g in grads)


def test_identity_fixed_block_passes_gradient_straight_through(rng, x16):
    block = make_block(16, rng)
    block.fix("identity")
    x = tf.constant(x16)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = block(x, training=True)
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), np.ones_like(x16))


def test_unfix_returns_to_mixture(rng, x16):
    block = make_block(16, rng)
    mixture = np_mixture(block, x16)
    logits = block.search_logits.numpy().copy()
    for fixed in ("ssp", ("avg5", "max3"), "identity"):
        block.fix(fixed)
        assert not np.allclose(block(x16, training=False).numpy(), mixture, atol=1e-3)
        block.unfix()
        assert block.fixed_ops is None
        np.testing.assert_array_equal(block.search_logits.numpy(), logits)
        np.testing.assert_allclose(
            block(x16, training=False).numpy(), mixture, rtol=1e-5, atol=1e-5
        )


def test_refix_replaces_previous_state(rng, x16):
    block = make_block(16, rng)
    block.fix(("ssp", "avg3"))
    block.fix("max5")
    assert block.fixed_ops == ("max5",)
    np.testing.assert_array_equal(
        block(x16, training=False).numpy(), tf_fixed(block, x16, ["max5"])
    )


def test_fix_before_build(rng, x16):
    block = MetaPoolingBlock(candidates=("ssp", "avg3", "max3"))
    block.fix(("max3", "avg3"))
    assert set(block.fixed_ops) == {"avg3", "max3"}
    block(x16)  # builds
    assert set(block.fixed_ops) == {"avg3", "max3"}
    np.testing.assert_array_equal(block.fixed_mask.numpy(), [0.0, 1.0, 1.0])
    block.unfix()
    assert block.fixed_ops is None


# -- 6. persistence of the fixed state -----------------------------------------------
@pytest.mark.parametrize("fixed", ["ssp", ("avg3", "identity"), "identity"])
def test_config_round_trip_keeps_fixed_state(rng, x16, fixed):
    block = make_block(
        16,
        rng,
        candidates=("identity", "ssp", "avg3", "max5"),
        batch_norm_momentum=0.9,
        batch_norm_epsilon=1e-2,
        seed=7,
    )
    block.fix(fixed)
    config = block.get_config()
    clone = MetaPoolingBlock.from_config(config)
    expected = (fixed,) if isinstance(fixed, str) else fixed
    assert set(clone.fixed_ops) == set(expected)
    assert clone.candidates == block.candidates
    assert clone.batch_norm_epsilon == 1e-2 and clone.batch_norm_momentum == 0.9
    clone.build((None, None, None, 16))
    assert set(clone.fixed_ops) == set(expected)
    np.testing.assert_array_equal(clone.fixed_mask.numpy(), block.fixed_mask.numpy())
    clone.set_weights(block.get_weights())
    np.testing.assert_array_equal(
        clone(x16, training=False).numpy(), block(x16, training=False).numpy()
    )


def test_config_of_unfixed_block(rng):
    block = make_block(16, rng)
    config = block.get_config()
    assert config["fixed"] is None
    assert MetaPoolingBlock.from_config(config).fixed_ops is None


# -- the search logits' names: `search_logits` in code, "alpha" in files ----------------
def test_deprecated_alpha_attribute_warns_and_is_the_search_logits(rng):
    block = make_block(8, rng)
    with pytest.warns(DeprecationWarning, match="search_logits"):
        logits = block.alpha
    assert logits is block.search_logits


def test_deprecated_alpha_init_stddev_warns_and_is_kept():
    with pytest.warns(DeprecationWarning, match="search_logits_init_stddev"):
        block = MetaPoolingBlock(("identity", "avg3"), alpha_init_stddev=0.5)
    assert block.search_logits_init_stddev == 0.5
    assert "alpha_init_stddev" not in block.get_config()
    for new_value in (0.1, 1e-3):  # the default, passed explicitly, is not overridden either
        with pytest.raises(ValueError, match="not both"):
            MetaPoolingBlock(
                ("identity", "avg3"), alpha_init_stddev=0.5, search_logits_init_stddev=new_value
            )


def test_a_config_saved_before_the_rename_loads_without_a_warning(rng):
    config = make_block(8, rng).get_config()
    config["alpha_init_stddev"] = config.pop("search_logits_init_stddev")
    config["alpha_init_stddev"] = 0.25
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        block = MetaPoolingBlock.from_config(config)
    assert block.search_logits_init_stddev == 0.25
    config["search_logits_init_stddev"] = 0.5
    with pytest.raises(ValueError, match="keep one"):
        MetaPoolingBlock.from_config(config)


def test_saving_and_loading_a_block_does_not_read_the_deprecated_name(tmp_path):
    model, _ = _tiny_model()
    path = str(tmp_path / "model.keras")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="MetaPoolingBlock.alpha")
        model.save(path)
        keras.models.load_model(path)
    assert "alpha" not in dir(model.get_layer("mp"))


def test_checkpoints_written_with_the_weight_name_alpha_restore_the_search_logits(tmp_path):
    """TF checkpoints (BackupAndRestore, save_weights) key the logits by "alpha"."""
    values = np.array([0.25, -0.5], np.float32)
    # A checkpoint as keras_metapool wrote it before the rename: the logits
    # tracked as the model's first weighted layer's "alpha".
    old_layer = tf.Module()
    old_layer.alpha = tf.Variable(values)
    old_model = tf.Module()
    setattr(old_model, "layer_with_weights-0", old_layer)
    path = tf.train.Checkpoint(model=old_model).write(str(tmp_path / "old"))

    inputs = keras.Input((4, 4, 3))
    block = MetaPoolingBlock(("identity", "avg3"), name="mp")
    model = keras.Model(inputs, block(inputs))
    tf.train.Checkpoint(model=model).read(path).expect_partial()
    np.testing.assert_array_equal(block.search_logits.numpy(), values)


def _tiny_model(channels=8):
    inputs = keras.Input(shape=(6, 5, channels))
    block = MetaPoolingBlock(
        candidates=("identity", "ssp", "avg3", "max3"), batch_norm_momentum=0.9, name="mp"
    )
    y = block(inputs)
    y = keras.layers.GlobalAveragePooling2D()(y)
    outputs = keras.layers.Dense(3)(y)
    return keras.Model(inputs, outputs), block


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
@pytest.mark.parametrize("fmt", ["keras", "h5", "tf"])
@pytest.mark.parametrize("fixed", [("ssp", "avg3"), "max3"])
def test_saved_model_keeps_fixed_state(rng, tmp_path, fmt, fixed):
    model, block = _tiny_model()
    randomize_layers([layer for layer in [*block.ops, block.bn] if layer is not None], rng)
    block.search_logits.assign(np.linspace(0.5, -0.5, 4).astype(np.float32))
    x = rng.normal(0.0, 1.0, (3, 6, 5, 8)).astype(np.float32)
    unfixed_pred = model.predict(x, verbose=0)
    block.fix(fixed)  # after build: only the mask variable changes
    pred = model.predict(x, verbose=0)
    assert not np.allclose(pred, unfixed_pred, atol=1e-4)

    if fmt == "tf":
        path = tmp_path / "saved"
        model.save(str(path), save_format="tf")
    else:
        path = tmp_path / f"model.{fmt}"
        model.save(str(path))
    keras.backend.clear_session()
    loaded = keras.models.load_model(str(path))
    loaded_block = loaded.get_layer("mp")
    assert isinstance(loaded_block, MetaPoolingBlock)
    assert loaded_block.fixed_ops == block.fixed_ops
    np.testing.assert_array_equal(loaded_block.search_logits.numpy(), block.search_logits.numpy())
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), pred)
    # The reloaded block can still be unfixed back to the mixture.
    loaded_block.unfix()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), unfixed_pred, rtol=1e-5, atol=1e-5)


# -- 7. the search logits are not trained; no retrace on fix ------------------------
def test_search_logits_not_trainable_and_unchanged_by_fit(rng):
    model, block = _tiny_model()
    trainable_ids = {id(v) for v in model.trainable_weights}
    assert id(block.search_logits) not in trainable_ids
    assert id(block.fixed_mask) not in trainable_ids
    assert any(v is block.search_logits for v in model.non_trainable_weights)
    block.search_logits.assign(np.array([0.3, -0.2, 0.1, 0.0], np.float32))
    logits = block.search_logits.numpy().copy()
    mask = block.fixed_mask.numpy().copy()
    ssp = block.ops[block.candidates.index("ssp")]
    op_weights = [v.numpy().copy() for v in ssp.trainable_weights]
    assert op_weights

    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), loss="mse")
    x = rng.normal(0.0, 1.0, (16, 6, 5, 8)).astype(np.float32)
    y = rng.normal(0.0, 1.0, (16, 3)).astype(np.float32)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)

    np.testing.assert_array_equal(block.search_logits.numpy(), logits)
    np.testing.assert_array_equal(block.fixed_mask.numpy(), mask)
    for old, var in zip(op_weights, ssp.trainable_weights):
        assert not np.array_equal(var.numpy(), old), var.name


def test_no_retrace_when_fixed_between_calls(rng, x16):
    block = make_block(16, rng)
    traces = []

    @tf.function
    def run(t):
        traces.append(1)
        return block(t, training=False)

    mixture = run(x16).numpy()
    np.testing.assert_allclose(mixture, np_mixture(block, x16), rtol=1e-5, atol=1e-5)
    for fixed in ("ssp", ("avg3", "max5"), "identity"):
        block.fix(fixed)
        out = run(x16).numpy()
        names = (fixed,) if isinstance(fixed, str) else fixed
        expected = x16 if fixed == "identity" else tf_fixed(block, x16, names)
        np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    block.unfix()
    np.testing.assert_allclose(run(x16).numpy(), mixture, rtol=1e-6, atol=1e-6)
    assert len(traces) == 1


# -- 4. mixed precision -------------------------------------------------------------------
@pytest.mark.parametrize(
    "policy,compute_dtype,tol",
    [("mixed_float16", tf.float16, 2e-2), ("mixed_bfloat16", tf.bfloat16, 1e-1)],
)
def test_block_mixed_precision(rng, x16, policy, compute_dtype, tol):
    reference = make_block(16, rng)
    expected = reference(x16, training=False).numpy()
    reference.fix(("ssp", "avg3"))
    expected_fixed = reference(x16, training=False).numpy()
    reference.unfix()

    keras.mixed_precision.set_global_policy(policy)
    block = MetaPoolingBlock()
    block.build((None, None, None, 16))
    assert block.search_logits.dtype == tf.float32 and block.fixed_mask.dtype == tf.float32
    assert all(v.dtype == tf.float32 for v in block.weights)
    block.set_weights(reference.get_weights())
    # Logits that differ by 1e-3 must survive: the logits are not autocast.
    probs = np.array(list(block.probabilities().values()))
    np.testing.assert_allclose(probs, np_softmax(reference.search_logits.numpy()), rtol=1e-6)

    out = block(x16, training=False)
    assert out.dtype == compute_dtype
    out = tf.cast(out, tf.float32).numpy()
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)

    block.fix(("ssp", "avg3"))
    assert block.search_logits.dtype == tf.float32 and block.fixed_mask.dtype == tf.float32
    out_fixed = block(x16, training=False)
    assert out_fixed.dtype == compute_dtype
    np.testing.assert_allclose(
        tf.cast(out_fixed, tf.float32).numpy(), expected_fixed, rtol=tol, atol=tol
    )
    block.fix("identity")
    out_id = block(x16, training=False)
    assert out_id.dtype == compute_dtype
    np.testing.assert_array_equal(out_id.numpy(), tf.cast(x16, compute_dtype).numpy())
    out_train = block(x16, training=True)
    assert out_train.dtype == compute_dtype


def test_block_mixed_precision_tiny_search_logits_not_lost():
    keras.mixed_precision.set_global_policy("mixed_float16")
    block = MetaPoolingBlock(candidates=("avg3", "max3"))
    block.build((None, None, None, 8))
    block.search_logits.assign([0.0, 1e-4])
    probs = block.probabilities()
    assert probs["max3"] > probs["avg3"]


# -- 8. errors --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"post_norm": "false"}, "`post_norm` must be true or false"),  # bool("false") is True
        ({"batch_norm_momentum": 7}, "`batch_norm_momentum` must be in"),
        ({"batch_norm_epsilon": 0.0}, "`batch_norm_epsilon` must be > 0"),
        ({"search_logits_init_stddev": -1}, "`search_logits_init_stddev` must be >= 0"),
        ({"ssp_kwargs": {"reduciton": 4}}, "'reduciton'; the ssp candidate takes reduction"),
        ({"ssp_kwargs": {"batch_norm_momentum": 0.5}}, "its batch_norm_momentum is the block's"),
    ],
)
def test_block_refuses_arguments_it_would_change_or_ignore(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MetaPoolingBlock(("identity", "ssp"), **kwargs)


def test_unknown_candidate_lists_valid_names():
    with pytest.raises(ValueError) as info:
        MetaPoolingBlock(candidates=("ssp", "avg4"))
    message = str(info.value)
    assert "avg4" in message
    for name in CANDIDATE_OPS:
        assert name in message


@pytest.mark.parametrize("candidates", [("ssp", "ssp"), ("ssp",), (), ("avg3", "max3", "avg3")])
def test_duplicate_or_single_candidate_rejected(candidates):
    with pytest.raises(ValueError, match="candidates"):
        MetaPoolingBlock(candidates=candidates)


@pytest.mark.parametrize("built", [False, True])
@pytest.mark.parametrize(
    "bad",
    ["max9", ("ssp", "avg3", "max3"), "avg7", ("ssp", "ssp"), (), ["ssp", "max9"]],
)
def test_fix_rejects_invalid(rng, built, bad):
    block = MetaPoolingBlock(candidates=("identity", "ssp", "avg3", "max3"), fixed="avg3")
    if built:
        block.build((None, None, None, 16))
    with pytest.raises(ValueError):
        block.fix(bad)
    assert block.fixed_ops == ("avg3",)  # a failed fix leaves the state alone


def test_fix_unknown_name_lists_valid_names():
    block = MetaPoolingBlock(candidates=("ssp", "avg3"))
    with pytest.raises(ValueError) as info:
        block.fix("max9")
    assert all(name in str(info.value) for name in CANDIDATE_OPS)


def test_fix_op_outside_candidates_message():
    block = MetaPoolingBlock(candidates=("ssp", "avg3"))
    with pytest.raises(ValueError, match="max3"):
        block.fix("max3")


@pytest.mark.parametrize("fixed", ["max9", ("ssp", "avg3", "max3"), "avg7"])
def test_constructor_rejects_invalid_fixed(fixed):
    with pytest.raises(ValueError):
        MetaPoolingBlock(candidates=("ssp", "avg3", "max3"), fixed=fixed)


@pytest.mark.parametrize("shape", [(2, 4, 8), (2, 3, 4, 5, 8), (8,)])
def test_block_rejects_non_4d_input(shape):
    with pytest.raises(ValueError, match="4D"):
        MetaPoolingBlock()(tf.zeros(shape))


# -- the search supernet's form: no post-norm --------------------------------------
def test_without_post_norm_the_mixture_is_the_weighted_sum_and_a_fixed_op_is_that_op(rng, x16):
    from keras_metapool.layers import build_candidate_op

    block = MetaPoolingBlock(post_norm=False)
    block.build((None, None, None, 16))
    randomize_layers(list(block.ops), rng)
    block.search_logits.assign(np.linspace(-1.0, 1.5, len(DEFAULT_CANDIDATES)).astype(np.float32))
    assert block.bn is None  # and no variable of a block-level BN:
    assert not any(v.name.startswith(f"{block.name}/bn/") for v in block.variables)
    probs = np_softmax(block.search_logits.numpy().astype(np.float64))
    outs = [op(x16, training=False).numpy().astype(np.float64) for op in block.ops]
    expected = sum(p * o for p, o in zip(probs, outs))
    np.testing.assert_allclose(block(x16, training=False).numpy(), expected, atol=1e-5)
    for name in DEFAULT_CANDIDATES:
        # The derived model's layer for this op, with the block's weights for it.
        child = build_candidate_op(name, layer_name=name)
        child.build(x16.shape)
        child.set_weights(block.ops[block.candidates.index(name)].get_weights())
        block.fix(name)
        np.testing.assert_array_equal(
            block(x16, training=False).numpy(), child(x16, training=False).numpy(), err_msg=name
        )
    block.fix("identity")
    np.testing.assert_array_equal(block(x16, training=False).numpy(), x16)  # no layer at all
    config = block.get_config()
    assert config["post_norm"] is False
    assert MetaPoolingBlock.from_config(config).post_norm is False


@pytest.mark.parametrize("post_norm", [True, False])
@pytest.mark.parametrize("fixed", ["ssp", "avg5", "max7", "identity", ("max3", "avg3")])
def test_compute_only_fixed_gives_the_same_output_without_running_other_ops(
    rng, x16, post_norm, fixed
):
    block = make_block(16, rng, post_norm=post_norm)
    block.fix(fixed)
    expected = block(x16, training=False).numpy()
    chosen = block.fixed_ops
    calls = []
    for name, op in zip(block.candidates, block.ops):
        original = op.call

        def spy(inputs, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(inputs, *args, **kwargs)

        op.call = spy
    assert block.compute_only_fixed(True) and not block.compute_only_fixed(True)
    np.testing.assert_array_equal(block(x16, training=False).numpy(), expected)
    assert set(calls) == set(chosen)  # the others never ran
    calls.clear()
    block.fix("avg3")  # fixing again ends it: every op runs (at weight 0) once more
    block(x16, training=False)
    assert set(calls) == set(block.candidates) - {"max3", "max5", "max7"}  # a chain of tf pools

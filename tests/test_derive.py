"""From a searched MobileNetV2MP to its lean fixed model."""

import numpy as np
import pytest
from helpers import calibrate_batch_norms

from keras_metapool import ArchitectureSpec, MetaPoolingBlock, MobileNetV2MP
from keras_metapool._keras import keras
from keras_metapool.search import (
    derive_architecture,
    search_blocks,
    to_fixed_model,
    transfer_weights,
)

SHAPE = (32, 32, 3)


def _search_model(**kwargs):
    kwargs = dict(weights=None, input_shape=SHAPE, alpha=0.35, classes=7, **kwargs)
    return MobileNetV2MP(**kwargs)


def _fix_at_random(model, seed, pairs=False):
    """Fixes every point to a random op (or, every third point, a pair)."""
    rng = np.random.default_rng(seed)
    chosen = {}
    for index, (block_id, block) in enumerate(search_blocks(model).items()):
        candidates = list(block.candidates)
        if pairs and index % 3 == 0:
            ops = tuple(sorted(rng.choice(len(candidates), 2, replace=False)))
            ops = tuple(candidates[i] for i in ops)
        else:
            ops = (candidates[rng.integers(len(candidates))],)
        block.fix(ops)
        chosen[block_id] = ops
    return chosen


def _expected_layer_count(chosen, head, post_norm):
    """MobileNetV2's layers plus what each fixed point adds in the lean model."""
    base = len(_search_model(meta_pooling="none", head=head).layers)
    added = 0
    for ops in chosen.values():
        if ops == ("identity",):
            continue  # dropped entirely
        # ops, their Add, then BN + hswish with the post-norm
        added += len(ops) + (1 if len(ops) == 2 else 0) + (2 if post_norm else 0)
    return base + added


@pytest.mark.slow
@pytest.mark.parametrize(
    "placement, head, pairs, post_norm, seed",
    [
        ("hidden", "classic", False, False, 2),  # the default supernet
        ("output", "paper", True, False, 1),
        ("output", "classic", True, True, 1),  # the paper's search mixture
    ],
)
def test_fixed_model_is_lean_and_predicts_like_the_search_model(
    placement, head, pairs, post_norm, seed
):
    # seed: random networks whose predictions are not all one class.
    spec = ArchitectureSpec.search(placement, post_norm=post_norm)
    search = _search_model(meta_pooling=spec, head=head)
    calibrate_batch_norms(search, seed=seed, randomize_alpha=True)
    chosen = _fix_at_random(search, seed=3, pairs=pairs)
    fixed = to_fixed_model(search)

    assert not any(isinstance(layer, MetaPoolingBlock) for layer in fixed.layers)
    assert not any("alpha" in v.name for v in fixed.variables)
    assert len(fixed.layers) == _expected_layer_count(chosen, head, post_norm)
    spec = derive_architecture(search)
    assert spec.placement == placement and spec.post_norm == post_norm
    for block_id, ops in chosen.items():
        assert spec.ops[block_id] == (ops[0] if len(ops) == 1 else ops)
    images = np.random.default_rng(0).uniform(-1, 1, (6, *SHAPE)).astype("float32")
    # Eager calls: compiled graphs would each get their own grappler/oneDNN
    # fusions, whose rounding differences a deep random network amplifies.
    expected = search(images, training=False).numpy()
    np.testing.assert_allclose(fixed(images, training=False).numpy(), expected, atol=1e-6)
    assert (expected.argmax(1) != expected.argmax(1)[0]).any()  # not a saturated model
    assert fixed.count_params() < search.count_params()


@pytest.mark.slow
def test_derived_spec_round_trips_through_json_and_builds_the_same_model():
    search = _search_model()
    _fix_at_random(search, seed=5, pairs=True)
    spec = derive_architecture(search)
    again = ArchitectureSpec.from_json(spec.to_json())
    assert again == spec
    a = MobileNetV2MP(weights=None, input_shape=SHAPE, alpha=0.35, classes=7, meta_pooling=spec)
    b = to_fixed_model(search)
    assert [layer.name for layer in a.layers[1:]] == [layer.name for layer in b.layers[1:]]


def test_undecided_points_follow_the_rule():
    search = _search_model(search_candidates=("identity", "ssp", "avg3"))
    blocks = search_blocks(search)
    assert len(blocks) == 16  # hidden placement: blocks 1-16
    odds = {"identity": 0.2, "ssp": 0.5, "avg3": 0.3}
    for block in blocks.values():  # 32x32 input: avg3 is pruned on the small maps
        probs = np.array([odds[op] for op in block.candidates], np.float32)
        block.search_logits.assign(np.log(probs / probs.sum()))
    blocks[4].fix("avg3")
    assert derive_architecture(search).ops[4] == "avg3"
    assert derive_architecture(search).ops[1] == "identity"  # the default rule
    assert derive_architecture(search, undecided="argmax").ops[1] == "ssp"
    assert derive_architecture(search, undecided="top2").ops[1] == ("ssp", "avg3")
    assert derive_architecture(search, undecided="top2").ops[16] == ("identity", "ssp")
    with pytest.raises(ValueError, match="15 unfixed search point"):
        derive_architecture(search, undecided="error")
    with pytest.raises(ValueError, match="Finish the search first"):
        to_fixed_model(search)
    with pytest.raises(ValueError, match="undecided"):
        derive_architecture(search, undecided="most")


@pytest.mark.slow
def test_transfer_weights_warm_starts_another_architecture_and_rejects_misfits():
    # The ablations have BN + hswish after each op: a paper-mixture supernet.
    search = _search_model(meta_pooling=ArchitectureSpec.search("output", post_norm=True))
    calibrate_batch_norms(search, seed=2)
    other = MobileNetV2MP(
        weights=None, input_shape=SHAPE, alpha=0.35, classes=7,
        meta_pooling=ArchitectureSpec.ablation("random"),
    )  # fmt: skip
    transfer_weights(search, other)
    source = search.get_layer("block_7_mp").ops[
        search.get_layer("block_7_mp").candidates.index("ssp")
    ]
    for a, b in zip(other.get_layer("block_7_mp_ssp").get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)
    wider = MobileNetV2MP(
        weights=None, input_shape=SHAPE, alpha=0.5, classes=7, meta_pooling="paper"
    )
    before = [w.copy() for w in wider.get_weights()]
    with pytest.raises(ValueError, match="expects weight shapes"):
        transfer_weights(search, wider)
    for a, b in zip(wider.get_weights(), before):  # nothing assigned
        np.testing.assert_array_equal(a, b)
    narrowed = _search_model(
        meta_pooling=ArchitectureSpec.search("output", ("identity", "avg3"), post_norm=True)
    )
    with pytest.raises(ValueError, match="no counterpart"):
        transfer_weights(narrowed, other)


def test_a_frozen_search_model_gives_its_weights_to_the_right_variables():
    # Keras lists trainable weights first: a frozen SSP lists its moving
    # statistics before its gates, so a copy by position failed (or, with
    # equal shapes, would have swapped values).
    search = _search_model(search_candidates=("identity", "ssp", "avg3"))
    calibrate_batch_norms(search, seed=1, randomize_alpha=True)
    for block in search_blocks(search).values():
        block.fix(("ssp",))
    search.trainable = False
    fixed = to_fixed_model(search)
    images = np.random.default_rng(0).uniform(-1, 1, (4, *SHAPE)).astype("float32")
    expected = search(images, training=False).numpy()
    np.testing.assert_allclose(fixed(images, training=False).numpy(), expected, atol=1e-6)


def test_models_without_search_points():
    plain = _search_model(meta_pooling="paper")
    assert to_fixed_model(plain) is plain
    with pytest.raises(ValueError, match="no MetaPoolingBlock"):
        derive_architecture(plain)
    with pytest.raises(ValueError, match="tf_keras Model"):
        search_blocks("model.keras")


@pytest.mark.slow
def test_fixed_model_after_reload_from_file(tmp_path):
    search = _search_model(classifier_activation=None)
    calibrate_batch_norms(search, seed=4)
    _fix_at_random(search, seed=4)
    path = str(tmp_path / "search.keras")
    search.save(path)
    reloaded = keras.models.load_model(path)
    fixed = to_fixed_model(reloaded)
    images = np.random.default_rng(1).uniform(-1, 1, (3, *SHAPE)).astype("float32")
    np.testing.assert_allclose(
        fixed(images, training=False).numpy(), search(images, training=False).numpy(), atol=1e-5
    )
    assert fixed.get_layer("predictions").activation is keras.activations.linear

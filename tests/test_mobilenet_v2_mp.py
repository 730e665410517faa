"""Tests for MobileNetV2MP: shapes, parity with keras.applications, structure, errors."""

import math

import numpy as np
import pytest
from helpers import CHOICES, METHOD_ABLATIONS

import keras_metapool
from keras_metapool import (
    ArchitectureSpec,
    HardSwish,
    MetaPoolingBlock,
    MobileNetV2MP,
    SpatialEnhancer,
)
from keras_metapool._keras import keras

NUM_BLOCKS = 17
#: MobileNetV2 blocks with a residual add (stride 1, same width in and out).
ADD_BLOCKS = (2, 4, 5, 7, 8, 9, 11, 12, 14, 15)


def prefix(i):
    return f"block_{i}_" if i else "expanded_conv_"


def last_channels(alpha):
    """Width of MobileNetV2's last 1x1 conv: 1280, widened (to a multiple of 8) for alpha > 1."""
    if alpha <= 1.0:
        return 1280
    value = 1280 * alpha
    rounded = max(8, int(value + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * value else rounded


def parents(model, name):
    """Names of the layers feeding layer ``name`` in ``model``."""
    layers = model.get_layer(name).inbound_nodes[0].inbound_layers
    if not isinstance(layers, (list, tuple)):
        layers = [layers]
    return [layer.name for layer in layers]


def children(model, name):
    """Names of the layers that consume layer ``name``'s output in ``model``."""
    result = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if name in parents(model, layer.name):
            result.append(layer.name)
    return result


def enhancer_layers(model, i, placement="output"):
    stem = prefix(i) + ("mp" if placement == "output" else "hidden_mp")
    return [layer for layer in model.layers if layer.name.startswith(stem)]


def block_output_consumers(i):
    """The layers that should consume block ``i``'s output (before any add), sorted."""
    if i in ADD_BLOCKS:
        return [prefix(i) + "add"]
    if i == NUM_BLOCKS - 1:
        return ["Conv_1"]
    # The next block's expansion, and its residual add (as the shortcut) if it has one.
    consumers = [prefix(i + 1) + "expand"]
    if i + 1 in ADD_BLOCKS:
        consumers.append(prefix(i + 1) + "add")
    return sorted(consumers)


def spec_of(meta_pooling, placement=None):
    if isinstance(meta_pooling, ArchitectureSpec):
        return meta_pooling
    return {
        "none": ArchitectureSpec.plain(),
        "paper": ArchitectureSpec.paper(),
        "search": ArchitectureSpec.search(placement) if placement else ArchitectureSpec.search(),
    }[meta_pooling]


def custom_hidden_spec():
    return ArchitectureSpec(
        ["identity"] + ["avg3", ("ssp", "max3"), "search"] * 5 + ["ssp"], placement="hidden"
    )


def custom_output_spec():
    return ArchitectureSpec(
        ["max3", "identity", ("avg5", "ssp"), "search"] * 4 + ["ssp"], post_norm=False
    )


# -- output shapes --------------------------------------------------------------

SHAPE_CASES = [
    # id, input_shape, alpha, include_top, pooling, meta_pooling, placement, head
    ("32-a0.35-top-none", (32, 32, 3), 0.35, True, None, "none", None, "classic"),
    ("64x48-a0.5-features-paper", (64, 48, 3), 0.5, False, None, "paper", None, "classic"),
    ("96-a1.0-avg-search", (96, 96, 3), 1.0, False, "avg", "search", None, "classic"),
    ("96-a1.4-features-none", (96, 96, 3), 1.4, False, None, "none", None, "classic"),
    ("224-a0.35-top-paper-paperhead", (224, 224, 3), 0.35, True, None, "paper", None, "paper"),
    ("224-a0.35-features-none", (224, 224, 3), 0.35, False, None, "none", None, "classic"),
    ("64x48-a0.35-max-search-hidden", (64, 48, 3), 0.35, False, "max", "search", "hidden",
     "classic"),
    ("32-a1.4-top-ablation-paperhead", (32, 32, 3), 1.4, True, None, "ablation_random", None,
     "paper"),
    ("96-a0.5-features-custom-hidden", (96, 96, 3), 0.5, False, None, "custom_hidden", None,
     "classic"),
    ("64x48-a1.0-top-custom-output", (64, 48, 3), 1.0, True, None, "custom_output", None,
     "classic"),
    ("32-a0.5-max-paper", (32, 32, 3), 0.5, False, "max", "paper", None, "classic"),
]  # fmt: skip


def _resolve_case_spec(meta_pooling):
    if meta_pooling == "ablation_random":
        return ArchitectureSpec.ablation("random")
    if meta_pooling == "custom_hidden":
        return custom_hidden_spec()
    if meta_pooling == "custom_output":
        return custom_output_spec()
    return meta_pooling


@pytest.mark.slow
@pytest.mark.parametrize(
    "input_shape, alpha, include_top, pooling, meta_pooling, placement, head",
    [case[1:] for case in SHAPE_CASES],
    ids=[case[0] for case in SHAPE_CASES],
)
def test_output_shapes(input_shape, alpha, include_top, pooling, meta_pooling, placement, head):
    meta_pooling = _resolve_case_spec(meta_pooling)
    classes = 7
    model = MobileNetV2MP(
        input_shape=input_shape,
        alpha=alpha,
        include_top=include_top,
        weights=None,
        pooling=pooling,
        classes=classes,
        meta_pooling=meta_pooling,
        placement=placement,
        head=head,
    )
    rows, cols, _ = input_shape
    channels = last_channels(alpha)
    if include_top:
        expected = (None, classes)
    elif pooling:
        expected = (None, channels)
    else:
        expected = (None, math.ceil(rows / 32), math.ceil(cols / 32), channels)
    assert model.input_shape == (None,) + tuple(input_shape)
    assert model.output_shape == expected

    x = np.random.default_rng(0).uniform(-1, 1, (1,) + tuple(input_shape)).astype("float32")
    y = model(x, training=False).numpy()
    assert y.shape == (1,) + expected[1:]
    assert np.all(np.isfinite(y))
    if include_top:  # softmax classifier
        np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-5)
    if pooling:
        pool_type = {"avg": keras.layers.GlobalAveragePooling2D,
                     "max": keras.layers.GlobalMaxPooling2D}[pooling]  # fmt: skip
        assert isinstance(model.layers[-1], pool_type)
    if include_top:
        has_head_conv = any(layer.name == "head_conv" for layer in model.layers)
        assert has_head_conv == (head == "paper")

    # The enhancers sit exactly at the spec's points, at its placement.
    spec = spec_of(meta_pooling, placement)
    for i in range(NUM_BLOCKS):
        found = enhancer_layers(model, i, spec.placement)
        assert bool(found) == (i in spec.points), (i, [layer.name for layer in found])
        other = "hidden" if spec.placement == "output" else "output"
        assert not enhancer_layers(model, i, other)


@pytest.mark.slow
def test_output_shape_with_dynamic_input_size():
    model = MobileNetV2MP(
        input_shape=(None, None, 3), alpha=0.35, include_top=False, weights=None,
        meta_pooling="paper",
    )  # fmt: skip
    assert model.output_shape == (None, None, None, 1280)
    for shape in [(1, 32, 32, 3), (1, 64, 96, 3)]:
        y = model(np.zeros(shape, "float32"), training=False)
        assert y.shape == (1, math.ceil(shape[1] / 32), math.ceil(shape[2] / 32), 1280)
    # For odd sizes a dynamic-size model pads as keras.applications does (its
    # stride-2 padding cannot depend on the parity): the same feature-map size.
    reference = keras.applications.MobileNetV2(
        input_shape=(None, None, 3), alpha=0.35, include_top=False, weights=None
    )
    x = np.zeros((1, 70, 33, 3), "float32")
    assert model(x, training=False).shape == reference(x, training=False).shape


def test_input_tensor_keras_input():
    inp = keras.Input((64, 48, 3))
    model = MobileNetV2MP(
        input_tensor=inp, alpha=0.35, include_top=False, weights=None, meta_pooling="paper"
    )
    assert len(model.inputs) == 1
    assert model.inputs[0] is inp
    assert model.input_shape == (None, 64, 48, 3)
    assert model.output_shape == (None, 2, 2, 1280)
    assert parents(model, "Conv1") == [inp.node.layer.name]


@pytest.mark.slow
def test_input_tensor_with_preceding_layer():
    inp = keras.Input((64, 48, 3))
    scaled = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(inp)
    model = MobileNetV2MP(
        input_tensor=scaled, alpha=0.35, include_top=False, pooling="avg", weights=None,
        meta_pooling="paper",
    )  # fmt: skip
    # The model starts at the source input and includes the preceding layer.
    assert len(model.inputs) == 1
    assert model.inputs[0] is inp
    assert parents(model, "Conv1") == ["scale"]
    assert model.output_shape == (None, 1280)

    plain = MobileNetV2MP(
        input_shape=(64, 48, 3), alpha=0.35, include_top=False, pooling="avg", weights=None,
        meta_pooling="paper",
    )  # fmt: skip
    rng = np.random.default_rng(1)
    # Moving statistics from a random batch (momentum 0), so that the output
    # depends on the input (with the initial ones a random MobileNetV2 saturates).
    norms = [m for m in model.submodules if isinstance(m, keras.layers.BatchNormalization)]
    for bn in norms:
        bn.momentum = 0.0
    model(rng.uniform(0, 255, (8, 64, 48, 3)).astype("float32"), training=True)
    plain.set_weights(model.get_weights())
    raw = rng.uniform(0, 255, (2, 64, 48, 3)).astype("float32")
    expected = model(raw, training=False).numpy()
    assert not np.allclose(expected[0], expected[1])
    scaled_raw = model.get_layer("scale")(raw).numpy()
    np.testing.assert_allclose(scaled_raw, raw / 127.5 - 1.0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        plain(scaled_raw, training=False).numpy(), expected, rtol=1e-6, atol=1e-6
    )


def test_input_tensor_shape_conflict_raises():
    inp = keras.Input((64, 48, 3))
    with pytest.raises(ValueError, match="input_shape"):
        MobileNetV2MP(input_tensor=inp, input_shape=(64, 64, 3), weights=None)


# -- meta_pooling="none" is keras.applications' MobileNetV2 --------------------------


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [0.35, 0.75, 1.0, 1.4])
def test_none_matches_keras_mobilenet_v2_structure(alpha):
    ours = MobileNetV2MP(input_shape=(32, 32, 3), alpha=alpha, weights=None, meta_pooling="none")
    reference = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=alpha, weights=None)
    assert ours.count_params() == reference.count_params()
    assert len(ours.trainable_weights) == len(reference.trainable_weights)
    assert len(ours.non_trainable_weights) == len(reference.non_trainable_weights)

    def weighted_layers(model):
        return [(layer.name, [tuple(w.shape) for w in layer.weights])
                for layer in model.layers if layer.weights]  # fmt: skip

    assert weighted_layers(ours) == weighted_layers(reference)
    assert ours.name == reference.name


# -- structure ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def paper_model():
    keras.utils.set_random_seed(1)
    return MobileNetV2MP(input_shape=(32, 32, 3), alpha=0.35, weights=None, meta_pooling="paper")


@pytest.mark.slow
def test_paper_structure(paper_model):
    model = paper_model
    for i in range(NUM_BLOCKS):
        found = enhancer_layers(model, i)
        if i < 6:
            assert found == []
            continue
        assert [layer.name for layer in found] == [prefix(i) + "mp_ssp"]
        assert isinstance(found[0], SpatialEnhancer)
        name = found[0].name
        assert parents(model, name) == [prefix(i) + "project_BN"]
        # No BN or activation after it: straight into the add or the next block.
        assert sorted(children(model, name)) == block_output_consumers(i)
        assert children(model, prefix(i) + "project_BN") == [name]
        if i in ADD_BLOCKS:
            assert name in parents(model, prefix(i) + "add")
    assert sorted(n.name for n in model.layers if n.name.endswith("_add")) == sorted(
        prefix(i) + "add" for i in ADD_BLOCKS
    )
    # No extra BatchNormalization or hard swish anywhere (SSP's own BN is inside it).
    assert not [layer for layer in model.layers if isinstance(layer, HardSwish)]
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 1 + 3 * NUM_BLOCKS - 1 + 1  # stem, 2 or 3 per block, last conv
    assert all("_mp" not in layer.name for layer in bns)


@pytest.mark.slow
@pytest.mark.parametrize("placement", ["output", "hidden"])
def test_search_structure(placement):
    model = MobileNetV2MP(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, meta_pooling="search",
        placement=placement, search_candidates=("identity", "ssp", "avg3"),
    )  # fmt: skip
    blocks = [layer for layer in model.layers if isinstance(layer, MetaPoolingBlock)]
    assert len(blocks) == (17 if placement == "output" else 16)
    # 32x32 input: blocks 0-2 see 16x16 or 8x8 maps, 3-5 4x4, 6-9 2x2, 10-16 1x1;
    # a 3x3 window is larger than the last two kinds, so avg3 is pruned there.
    large_maps = range(6)
    for i in range(NUM_BLOCKS):
        found = enhancer_layers(model, i, placement)
        if placement == "hidden" and i == 0:
            assert found == []
            continue
        assert len(found) == 1 and isinstance(found[0], MetaPoolingBlock)
        name = found[0].name
        expected = ("identity", "ssp", "avg3") if i in large_maps else ("identity", "ssp")
        assert found[0].candidates == expected, i
        assert not found[0].post_norm  # the search supernet's default form
        if placement == "output":
            assert name == prefix(i) + "mp"
            assert parents(model, name) == [prefix(i) + "project_BN"]
            assert sorted(children(model, name)) == block_output_consumers(i)
        else:
            assert name == prefix(i) + "hidden_mp"
            assert parents(model, name) == [prefix(i) + "depthwise_relu"]
            assert children(model, name) == [prefix(i) + "project"]
            assert children(model, prefix(i) + "depthwise_relu") == [name]


def test_search_default_is_hidden_without_post_norm_and_a_lone_candidate_is_fixed():
    model = MobileNetV2MP(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, search_candidates=("identity", "max5")
    )
    # max5 fits only the 16x16 and 8x8 maps (blocks 0-2): elsewhere identity
    # is left alone, so the point is fixed to it (no layer at all).
    points = {layer.name for layer in model.layers if isinstance(layer, MetaPoolingBlock)}
    assert points == {"block_1_hidden_mp", "block_2_hidden_mp"}
    assert not any(layer.name.startswith("block_3_") and "mp" in layer.name
                   for layer in model.layers)  # fmt: skip


@pytest.mark.slow
def test_paper_head_adds_one_1280_conv():
    kwargs = dict(input_shape=(32, 32, 3), alpha=1.0, weights=None, meta_pooling="none")
    classic = MobileNetV2MP(head="classic", **kwargs)
    paper = MobileNetV2MP(head="paper", **kwargs)
    assert paper.count_params() - classic.count_params() == 1280 * 1280 + 1280
    conv = paper.get_layer("head_conv")
    assert tuple(conv.kernel.shape) == (1, 1, 1280, 1280)
    assert conv.use_bias
    assert isinstance(paper.get_layer("head_hswish"), HardSwish)
    assert paper.get_layer("head_dropout").rate == pytest.approx(0.2)
    assert parents(paper, "head_conv") == ["avg_pool"]
    assert parents(paper, "predictions") == ["head_dropout"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(METHOD_ABLATIONS))
def test_ablation_structure(name):
    model = MobileNetV2MP(
        input_shape=(32, 32, 3), alpha=0.35, weights=None,
        meta_pooling=ArchitectureSpec.ablation(name),
    )  # fmt: skip
    for i, index in enumerate(METHOD_ABLATIONS[name]):
        op = CHOICES[index]
        found = sorted(layer.name for layer in enhancer_layers(model, i))
        if op == "identity":
            assert found == []
            continue
        stem = prefix(i) + "mp"
        assert found == sorted([f"{stem}_{op}", f"{stem}_BN", f"{stem}_hswish"])
        layer = model.get_layer(f"{stem}_{op}")
        if op == "ssp":
            assert isinstance(layer, SpatialEnhancer)
        else:
            assert type(layer) is keras.layers.AveragePooling2D
            size = int(op[3:])
            assert tuple(layer.pool_size) == (size, size)
            assert tuple(layer.strides) == (1, 1)
            assert layer.padding == "same"
        assert isinstance(model.get_layer(f"{stem}_BN"), keras.layers.BatchNormalization)
        assert isinstance(model.get_layer(f"{stem}_hswish"), HardSwish)
        assert parents(model, layer.name) == [prefix(i) + "project_BN"]
        assert children(model, layer.name) == [f"{stem}_BN"]
        assert children(model, f"{stem}_BN") == [f"{stem}_hswish"]
        assert sorted(children(model, f"{stem}_hswish")) == block_output_consumers(i)


@pytest.mark.slow
def test_pair_entries_sum_two_ops():
    spec = ArchitectureSpec(
        ["identity"] * 14 + [("identity", "avg3"), "identity", ("ssp", "max3")], post_norm=False
    )
    model = MobileNetV2MP(input_shape=(32, 32, 3), alpha=0.35, weights=None, meta_pooling=spec)
    assert isinstance(model.get_layer("block_16_mp_ssp"), SpatialEnhancer)
    assert isinstance(model.get_layer("block_16_mp_max3"), keras.layers.MaxPooling2D)
    assert sorted(parents(model, "block_16_mp_sum")) == ["block_16_mp_max3", "block_16_mp_ssp"]
    assert children(model, "block_16_mp_sum") == ["Conv_1"]
    # A pair with identity is x + avg3(x), between project_BN and the add.
    assert sorted(children(model, "block_14_project_BN")) == [
        "block_14_mp_avg3",
        "block_14_mp_identity",
    ]
    assert children(model, "block_14_mp_sum") == ["block_14_add"]
    probe = keras.Model(
        model.input,
        [model.get_layer("block_14_project_BN").output, model.get_layer("block_14_mp_sum").output],
    )
    x = np.random.default_rng(2).uniform(-1, 1, (1, 32, 32, 3)).astype("float32")
    features, summed = (t.numpy() for t in probe(x, training=False))
    avg3 = keras.layers.AveragePooling2D(3, strides=1, padding="same")(features).numpy()
    np.testing.assert_allclose(summed, features + avg3, rtol=1e-5, atol=1e-6)


def test_new_layers_do_not_change_shared_layers(paper_model):
    """The paper model holds the plain model's layers plus exactly the SSP layers."""
    plain = MobileNetV2MP(input_shape=(32, 32, 3), alpha=0.35, weights=None, meta_pooling="none")
    plain_names = [layer.name for layer in plain.layers if layer.weights]
    paper_names = [layer.name for layer in paper_model.layers if layer.weights]
    extra = sorted(set(paper_names) - set(plain_names))
    assert extra == sorted(prefix(i) + "mp_ssp" for i in range(6, 17))
    assert [n for n in paper_names if n in set(plain_names)] == plain_names


# -- argument errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"alpha": 0}, "alpha"),
        ({"alpha": -1}, "alpha"),
        ({"alpha": -0.5}, "alpha"),
        ({"alpha": "1.0"}, "alpha"),
        ({"alpha": None}, "alpha"),
        ({"alpha": True}, "alpha"),
        ({"input_shape": (31, 64, 3)}, "input_shape"),
        ({"input_shape": (64, 31, 3)}, "input_shape"),
        ({"input_shape": (64, 64)}, "input_shape"),
        ({"meta_pooling": "ssp_everywhere"}, "meta_pooling"),
        ({"meta_pooling": None}, "meta_pooling"),
        ({"meta_pooling": ["ssp"] * 16}, "meta_pooling"),
        ({"meta_pooling": {"ops": ["ssp"] * 16}}, "meta_pooling"),
        ({"meta_pooling": {"ops": ["ssp"] * 18, "placement": "output"}}, "meta_pooling"),
        ({"placement": "middle"}, "placement"),
        ({"meta_pooling": ArchitectureSpec.search("hidden"), "placement": "output"},
         "placement"),
        ({"meta_pooling": ArchitectureSpec.paper(), "placement": "hidden"}, "placement"),
        ({"head": "fancy"}, "head"),
        ({"head": "paper", "include_top": False}, "head"),
        ({"pooling": "sum", "include_top": False}, "pooling"),
        ({"pooling": "max", "include_top": True}, "pooling"),  # the head would average
        ({"classes": 0}, "classes"),
        ({"weights": "imagenet", "classes": 10}, "classes"),
        ({"weights": "imagenet", "alpha": 0.6}, "alpha"),
        ({"weights": 3}, "weights"),
    ],
    ids=lambda value: repr(value)[:40] if isinstance(value, dict) else str(value),
)  # fmt: skip
def test_bad_arguments_name_the_argument(kwargs, argument):
    arguments = dict(input_shape=(32, 32, 3), alpha=0.35, weights=None)
    arguments.update(kwargs)
    with pytest.raises(ValueError) as info:
        MobileNetV2MP(**arguments)
    assert argument in str(info.value)


def test_head_paper_without_top_also_names_include_top():
    with pytest.raises(ValueError, match="include_top"):
        MobileNetV2MP(input_shape=(32, 32, 3), weights=None, head="paper", include_top=False)


def test_unknown_meta_pooling_lists_valid_values():
    with pytest.raises(ValueError) as info:
        MobileNetV2MP(input_shape=(32, 32, 3), weights=None, meta_pooling="ssp")
    for valid in ("search", "paper", "none", "ArchitectureSpec"):
        assert valid in str(info.value)


# -- package helpers ------------------------------------------------------------------


def test_preprocess_input_maps_to_minus_one_one():
    x = np.array([[[[0.0, 127.5, 255.0]]]], "float32")
    np.testing.assert_allclose(keras_metapool.preprocess_input(x.copy()), [[[[-1.0, 0.0, 1.0]]]])
    images = np.random.default_rng(3).integers(0, 256, (2, 8, 8, 3)).astype("float32")
    out = keras_metapool.preprocess_input(images.copy())
    assert out.min() >= -1.0 and out.max() <= 1.0
    np.testing.assert_allclose(out, images / 127.5 - 1.0, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_numpy_scalars_are_accepted_for_classes_and_alpha():
    # Class counts often come from a dataset as NumPy integers.
    model = MobileNetV2MP(
        weights=None, alpha=np.float32(0.35), input_shape=(32, 32, 3), classes=np.int64(7)
    )
    assert model.output_shape == (None, 7)
    with pytest.raises(ValueError, match="classes"):
        MobileNetV2MP(weights=None, alpha=0.35, input_shape=(32, 32, 3), classes=7.0)
    with pytest.raises(ValueError, match="classes"):
        MobileNetV2MP(weights=None, alpha=0.35, input_shape=(32, 32, 3), classes=True)

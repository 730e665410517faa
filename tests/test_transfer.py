"""from_mobilenet_v2: a trained keras.applications MobileNetV2 keeps its function."""

import numpy as np
import pytest

import keras_metapool as km
from keras_metapool._keras import keras
from keras_metapool.data import load_fashion_mnist, to_model_input
from keras_metapool.models import infer_alpha
from keras_metapool.models.architecture import ArchitectureSpec

IMAGE_SIZE = 64  # blocks 6-16 then see 4x4 and 2x2 maps, where SSP is not trivial


@pytest.fixture(scope="module")
def trained_base():
    """A keras.applications MobileNetV2 trained briefly on real Fashion-MNIST."""
    keras.utils.set_random_seed(0)
    x_train, y_train = load_fashion_mnist("train", limit=2500)
    x_test, y_test = load_fashion_mnist("test", limit=1000)
    x_train, x_test = to_model_input(x_train, IMAGE_SIZE), to_model_input(x_test, IMAGE_SIZE)
    base = keras.applications.MobileNetV2(
        weights=None, alpha=0.35, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), classes=10
    )
    # keras.applications' momentum 0.999 leaves a 2-epoch run at chance (docs/method.md §5).
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    base.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    base.fit(x_train, y_train, batch_size=64, epochs=2, verbose=0)
    probs = base.predict(x_test, batch_size=250, verbose=0)
    return base, x_test, y_test, probs


def _agreement(model, x, reference):
    probs = model.predict(x, batch_size=250, verbose=0)
    return float(np.mean(probs.argmax(1) == reference.argmax(1))), probs


@pytest.mark.slow
def test_trained_base_is_above_chance(trained_base):
    _, _, y_test, probs = trained_base
    # The agreement checks below mean something only for a base that learned.
    accuracy = np.mean(probs.argmax(1) == y_test)
    assert accuracy > 0.5, accuracy


@pytest.mark.slow
@pytest.mark.parametrize("placement", ["output", "hidden"])
def test_identity_init_keeps_predictions(trained_base, placement):
    base, x_test, _, probs = trained_base
    spec = ArchitectureSpec(["identity"] * 6 + ["ssp"] * 11, placement=placement, post_norm=False)
    model = km.from_mobilenet_v2(base, meta_pooling=spec)
    ssp = [layer for layer in model.layers if isinstance(layer, km.SpatialEnhancer)]
    assert len(ssp) == 11
    agreement, mp_probs = _agreement(model, x_test, probs)
    assert agreement >= 0.99
    np.testing.assert_allclose(mp_probs, probs, atol=1e-4)


@pytest.mark.slow
def test_paper_model_keeps_predictions_and_weights(trained_base):
    base, x_test, _, probs = trained_base
    model = km.from_mobilenet_v2(base)  # meta_pooling="paper"
    assert _agreement(model, x_test, probs)[0] >= 0.99
    # Layers outside the folded project_BNs carry the base's weights unchanged.
    for layer in base.layers:
        if layer.weights and not layer.name.endswith("project_BN"):
            for mine, theirs in zip(model.get_layer(layer.name).get_weights(), layer.get_weights()):
                np.testing.assert_array_equal(mine, theirs)
    assert model.get_layer("bn_Conv1").momentum == 0.9


@pytest.mark.slow
def test_paper_init_changes_the_function(trained_base):
    # The option matters: the paper's gates (random kernels, bias 0) halve
    # each signal twice per block, which the base never saw.
    base, x_test, _, probs = trained_base
    model = km.from_mobilenet_v2(base, enhancer_init="paper")
    assert _agreement(model, x_test, probs)[0] < 0.9


@pytest.mark.slow
def test_headless_base_keeps_pooling_and_features():
    base = keras.applications.MobileNetV2(
        weights=None, alpha=0.5, input_shape=(48, 64, 3), include_top=False, pooling="max"
    )
    model = km.from_mobilenet_v2(base)
    assert model.output_shape == base.output_shape == (None, 1280)
    x = np.random.default_rng(1).uniform(-1, 1, (3, 48, 64, 3)).astype("float32")
    np.testing.assert_allclose(model(x), base(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [0.35, 0.5, 0.75, 1.0, 1.3])
def test_infer_alpha(alpha):
    base = keras.applications.MobileNetV2(
        weights=None, alpha=alpha, input_shape=(32, 32, 3), include_top=False
    )
    assert infer_alpha(base) == alpha
    renamed = keras.Model(base.inputs, base.outputs, name="custom")
    assert infer_alpha(renamed) == alpha


@pytest.mark.parametrize("alpha", [0.6, 1.125])  # not an ImageNet width; "1.12" in its name
def test_any_width_is_inferred_and_rebuilds_the_same_network(alpha):
    named = keras.applications.MobileNetV2(weights=None, alpha=alpha, input_shape=(32, 32, 3),
                                           classes=3)  # fmt: skip
    base = keras.Model(named.inputs, named.outputs, name="custom")
    rebuilt = km.from_mobilenet_v2(base, meta_pooling="none")
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(rebuilt(images), base(images), atol=1e-5)


def test_rejects_what_is_not_a_mobilenet_v2():
    with pytest.raises(ValueError, match="base_model"):
        km.from_mobilenet_v2("mobilenet")
    inputs = keras.Input((32, 32, 3))
    other = keras.Model(inputs, keras.layers.Conv2D(8, 3, name="Conv1")(inputs))
    with pytest.raises(ValueError, match="base_model"):
        km.from_mobilenet_v2(other)
    base = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="enhancer_init 'zeros'. Valid values: paper, open_gates"):
        km.from_mobilenet_v2(base, enhancer_init="zeros")
    with pytest.raises(ValueError, match="alpha"):
        km.from_mobilenet_v2(base, alpha=1.0)


def test_a_model_that_would_lose_or_rescale_layers_is_refused(tmp_path):
    # Already Meta-Pooling: its trained gates would get the open gates'
    # inverse scale folded into the projections, silently.
    shape = (32, 32, 3)
    paper = km.MobileNetV2MP(weights=None, alpha=0.35, input_shape=shape, classes=5,
                             meta_pooling="paper")  # fmt: skip
    with pytest.raises(ValueError, match="already has Meta-Pooling .*'block_6_mp"):
        km.from_mobilenet_v2(paper)
    # The way forward the message gives works: shared layers load by name.
    paper.save_weights(str(tmp_path / "w.h5"))
    other = km.MobileNetV2MP(weights=None, alpha=0.35, input_shape=shape, classes=5,
                             meta_pooling=ArchitectureSpec.ablation("global"))  # fmt: skip
    other.load_weights(str(tmp_path / "w.h5"), by_name=True, skip_mismatch=True)
    for name in ("Conv1", "block_3_project", "predictions"):
        for mine, theirs in zip(other.get_layer(name).weights, paper.get_layer(name).weights):
            np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    # Preprocessing in front of the network would be dropped by the rebuild.
    inputs = keras.Input(shape)
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1, name="to_unit_range")(inputs)
    base = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_tensor=scaled,
                                          classes=5)  # fmt: skip
    with pytest.raises(ValueError, match=r"layers in front of .* \(to_unit_range\)"):
        km.from_mobilenet_v2(base, meta_pooling="none")


def test_the_earlier_identity_init_name_warns_and_keeps_the_function():
    base = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(32, 32, 3))
    with pytest.warns(DeprecationWarning, match="now spelled 'open_gates'"):
        model = km.from_mobilenet_v2(base, enhancer_init="identity")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model(x), base(x), rtol=1e-4, atol=1e-5)


def test_a_head_of_its_own_is_refused_and_its_backbone_converts():
    # A head MobileNetV2MP does not build (max pooling, dropout) would have
    # been rebuilt as average pooling + "predictions", with no word.
    shape = (32, 32, 3)
    backbone = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=shape,
                                              include_top=False)  # fmt: skip
    features = keras.layers.GlobalMaxPooling2D()(backbone.output)
    features = keras.layers.Dropout(0.3)(features)
    outputs = keras.layers.Dense(4, activation="softmax", name="predictions")(features)
    custom = keras.Model(backbone.input, outputs, name="custom_head")
    theirs = r"\['GlobalMaxPooling2D', 'Dropout', 'Dense'\] after 'out_relu'"
    with pytest.raises(ValueError, match=theirs + r".*\['GlobalAveragePooling2D', 'Dense'\]"):
        km.from_mobilenet_v2(custom)
    # The way forward the message gives keeps the function.
    trunk = km.from_mobilenet_v2(
        keras.Model(custom.input, custom.get_layer("out_relu").output), meta_pooling="none"
    )
    x = trunk.output
    for layer in custom.layers[-3:]:
        x = layer(x)
    rebuilt = keras.Model(trunk.input, x)
    images = np.random.default_rng(0).uniform(-1, 1, (3, *shape)).astype("float32")
    np.testing.assert_allclose(rebuilt(images), custom(images), atol=1e-5)

"""Tests for weight loading (keras_metapool.models.weights) through MobileNetV2MP(weights=...)."""

import os
import pathlib
import shutil

import numpy as np
import pytest
from helpers import calibrate_batch_norms

from keras_metapool import MobileNetV2MP, SpatialEnhancer
from keras_metapool._keras import keras
from keras_metapool.models import weights as weights_lib
from keras_metapool.models.weights import LayersKeptInitWarning

SHAPE = (32, 32, 3)


def images(shape=SHAPE, batch=2, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (batch,) + tuple(shape)).astype("float32")


def layer_weights(model):
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


def assert_same_weights(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def imagenet_name(alpha, rows, include_top=True):
    suffix = "" if include_top else "_no_top"
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}{suffix}.h5"


def _no_download(*args, **kwargs):
    raise AssertionError(f"tests must not download: get_file{args}")


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty Keras cache in tmp_path, and no way to download."""
    home = tmp_path / "keras_home"
    (home / "models").mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(keras.utils, "get_file", _no_download)
    return home


# -- meta_pooling="none" and keras.applications exchange weight files ----------------


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [0.35, 0.75, 1.0, 1.4])
def test_none_weights_interchange_with_keras(alpha, tmp_path):
    common = dict(input_shape=SHAPE, alpha=alpha, classifier_activation=None)
    reference = keras.applications.MobileNetV2(weights=None, **common)
    ours = MobileNetV2MP(weights=None, meta_pooling="none", **common)
    calibrate_batch_norms(reference, 1)
    calibrate_batch_norms(ours, 2)
    x = images()
    y_reference = reference(x, training=False).numpy()
    y_ours = ours(x, training=False).numpy()
    # Else the comparisons below would prove nothing:
    assert not np.allclose(y_reference, y_ours)
    assert not np.allclose(y_reference[0], y_reference[1])
    assert not np.allclose(y_ours[0], y_ours[1])

    # keras.applications -> MobileNetV2MP(weights=path)
    keras_file = tmp_path / "keras.h5"
    reference.save_weights(str(keras_file))
    loaded = MobileNetV2MP(weights=keras_file, meta_pooling="none", **common)
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), y_reference)

    # MobileNetV2MP -> keras model.load_weights (which matches by layer order)
    ours_file = tmp_path / "ours.h5"
    ours.save_weights(str(ours_file))
    reference.load_weights(str(ours_file))
    np.testing.assert_array_equal(reference(x, training=False).numpy(), y_ours)


# -- MobileNetV2MP weight files -------------------------------------------------------


@pytest.mark.slow
def test_paper_weights_round_trip_by_path(tmp_path):
    model = MobileNetV2MP(input_shape=SHAPE, alpha=0.35, weights=None, meta_pooling="paper")
    calibrate_batch_norms(model, 3)
    path = tmp_path / "paper.h5"
    model.save_weights(str(path))
    loaded = MobileNetV2MP(input_shape=SHAPE, alpha=0.35, weights=str(path), meta_pooling="paper")
    expected = layer_weights(model)
    got = layer_weights(loaded)
    assert expected.keys() == got.keys()
    for name in expected:
        assert_same_weights(got[name], expected[name])
    x = images()
    expected = model(x, training=False).numpy()
    assert not np.allclose(expected[0], expected[1])
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), expected)


@pytest.mark.slow
def test_plain_weights_into_paper_model_keep_ssp_init(tmp_path):
    plain = MobileNetV2MP(input_shape=SHAPE, alpha=0.35, weights=None, meta_pooling="none")
    calibrate_batch_norms(plain, 4)
    path = tmp_path / "plain.h5"
    plain.save_weights(str(path))
    kwargs = dict(input_shape=SHAPE, alpha=0.35, meta_pooling="paper")
    keras.utils.set_random_seed(99)
    with pytest.warns(LayersKeptInitWarning, match="11 layers of this model") as caught:
        model = MobileNetV2MP(weights=str(path), **kwargs)
    assert "block_16_mp_ssp" in str(caught[0].message)
    keras.utils.set_random_seed(99)
    fresh = MobileNetV2MP(weights=None, **kwargs)
    source = layer_weights(plain)
    for layer in model.layers:
        if not layer.weights:
            continue
        if isinstance(layer, SpatialEnhancer):
            assert layer.name not in source
            assert_same_weights(layer.get_weights(), fresh.get_layer(layer.name).get_weights())
        else:
            assert_same_weights(layer.get_weights(), source[layer.name])


# -- errors ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_file(tmp_path_factory):
    """Weights of MobileNetV2MP(meta_pooling='none', alpha=0.35, classes=10) in .h5."""
    model = MobileNetV2MP(
        input_shape=SHAPE, alpha=0.35, weights=None, meta_pooling="none", classes=10
    )
    path = tmp_path_factory.mktemp("weights") / "plain10.h5"
    model.save_weights(str(path))
    return path


@pytest.mark.slow
def test_classes_mismatch_names_classes(plain_file):
    with pytest.raises(ValueError) as info:
        MobileNetV2MP(
            input_shape=SHAPE, alpha=0.35, weights=str(plain_file), meta_pooling="none",
            classes=5,
        )  # fmt: skip
    message = str(info.value)
    assert "`classes`" in message
    assert "10" in message and "5" in message


def test_corrupt_weights_file_names_weights(tmp_path):
    path = tmp_path / "x.h5"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError) as info:
        MobileNetV2MP(input_shape=SHAPE, alpha=0.35, weights=str(path), meta_pooling="none")
    assert "weights" in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.5, 0.02])
def test_truncated_weights_file_names_weights(plain_file, tmp_path, fraction):
    data = pathlib.Path(plain_file).read_bytes()
    path = tmp_path / "truncated.h5"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ValueError) as info:
        MobileNetV2MP(
            input_shape=SHAPE, alpha=0.35, weights=str(path), meta_pooling="none", classes=10
        )
    assert "weights" in str(info.value)


def test_missing_weights_file_names_weights(tmp_path):
    path = tmp_path / "nowhere" / "w.h5"
    with pytest.raises(ValueError) as info:
        MobileNetV2MP(input_shape=SHAPE, alpha=0.35, weights=str(path), meta_pooling="none")
    assert "weights" in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.slow
def test_weights_of_another_architecture_name_the_layers(tmp_path):
    paper = MobileNetV2MP(input_shape=SHAPE, alpha=0.35, weights=None, meta_pooling="paper")
    path = tmp_path / "paper.h5"
    paper.save_weights(str(path))
    with pytest.raises(ValueError) as info:
        MobileNetV2MP(input_shape=SHAPE, alpha=0.35, weights=str(path), meta_pooling="none")
    message = str(info.value)
    assert "weights" in message
    ssp_layers = [f"block_{i}_mp_ssp" for i in range(6, 17)]
    assert any(f"'{name}'" in message for name in ssp_layers), message


@pytest.mark.slow
def test_weights_of_another_placement_name_the_layers(tmp_path):
    kwargs = dict(input_shape=SHAPE, alpha=0.35, meta_pooling="search",
                  search_candidates=("identity", "avg3"))  # fmt: skip
    hidden = MobileNetV2MP(weights=None, placement="hidden", **kwargs)
    path = tmp_path / "hidden.h5"
    hidden.save_weights(str(path))
    with pytest.raises(ValueError) as info:
        MobileNetV2MP(weights=str(path), placement="output", **kwargs)
    assert "hidden_mp" in str(info.value)


@pytest.mark.slow
def test_weights_of_another_alpha_name_the_layer(tmp_path):
    wide = MobileNetV2MP(input_shape=SHAPE, alpha=0.5, weights=None, meta_pooling="none")
    narrow = MobileNetV2MP(input_shape=SHAPE, alpha=0.35, weights=None, meta_pooling="none")
    mismatched = [
        layer.name
        for layer in narrow.layers
        if layer.weights
        and [w.shape for w in layer.weights]
        != [w.shape for w in wide.get_layer(layer.name).weights]
    ]
    assert mismatched  # the two widths do differ somewhere
    path = tmp_path / "wide.h5"
    wide.save_weights(str(path))
    with pytest.raises(ValueError) as info:
        MobileNetV2MP(input_shape=SHAPE, alpha=0.35, weights=str(path), meta_pooling="none")
    message = str(info.value)
    assert "weights" in message
    assert any(f"'{name}'" in message for name in mismatched), message
    assert "Conv1'" not in message  # the first layers have the same shapes at both widths


# -- weights="imagenet" ---------------------------------------------------------------


@pytest.mark.slow
def test_imagenet_weights_from_cache_fill_shared_layers(keras_home):
    source = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3))
    calibrate_batch_norms(source, 5)
    source.save_weights(str(keras_home / "models" / imagenet_name(0.35, 96)))

    kwargs = dict(alpha=0.35, input_shape=(96, 96, 3), meta_pooling="paper")
    keras.utils.set_random_seed(11)
    model = MobileNetV2MP(weights="imagenet", **kwargs)
    keras.utils.set_random_seed(11)
    fresh = MobileNetV2MP(weights=None, **kwargs)

    shared = layer_weights(source)
    new = []
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name in shared:
            assert_same_weights(layer.get_weights(), shared[layer.name])
        else:
            new.append(layer.name)
            assert_same_weights(layer.get_weights(), fresh.get_layer(layer.name).get_weights())
    assert sorted(new) == sorted(f"block_{i}_mp_ssp" for i in range(6, 17))
    assert set(shared) <= {layer.name for layer in model.layers}


@pytest.mark.slow
def test_imagenet_no_top_reads_the_no_top_file(keras_home):
    source = keras.applications.MobileNetV2(
        weights=None, alpha=0.35, input_shape=(96, 96, 3), include_top=False
    )
    calibrate_batch_norms(source, 6)
    source.save_weights(str(keras_home / "models" / imagenet_name(0.35, 96, include_top=False)))
    # Only the no-top file is cached: reading any other name would call get_file.
    model = MobileNetV2MP(
        weights="imagenet", alpha=0.35, input_shape=(96, 96, 3), include_top=False,
        meta_pooling="none",
    )  # fmt: skip
    x = images((96, 96, 3), batch=2)
    expected = source(x, training=False).numpy()
    assert not np.allclose(expected[0], expected[1])
    np.testing.assert_array_equal(
        model(x, training=False).numpy(), source(x, training=False).numpy()
    )


def test_imagenet_filename_follows_keras():
    assert weights_lib.imagenet_weights_filename(0.35, 96, True) == imagenet_name(0.35, 96)
    assert weights_lib.imagenet_weights_filename(1, 224, False) == imagenet_name(1.0, 224, False)
    # keras.applications' own naming, as in its source.
    assert imagenet_name(1.0, 224) == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"


@pytest.mark.slow
def test_imagenet_missing_and_no_download_names_file_and_folder(tmp_path, monkeypatch):
    home = tmp_path / "empty_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    calls = []

    def offline_get_file(fname, *args, **kwargs):
        calls.append(fname)
        raise OSError("no network here")

    assert weights_lib.keras.utils is keras.utils  # the attribute the loader calls
    monkeypatch.setattr(keras.utils, "get_file", offline_get_file)
    # The file is looked for before the model is built (the costly part).
    from keras_metapool.models import mobilenet_v2_mp

    built = []
    monkeypatch.setattr(mobilenet_v2_mp, "functional_model", lambda *a, **k: built.append(1))
    with pytest.raises(ValueError) as info:
        MobileNetV2MP(
            weights="imagenet", alpha=0.35, input_shape=(96, 96, 3), include_top=False,
            meta_pooling="paper",
        )  # fmt: skip
    message = str(info.value)
    name = imagenet_name(0.35, 96, include_top=False)
    assert calls == [name] and not built
    assert name in message
    assert os.path.join(str(home), "models") in message
    assert "weights" in message


@pytest.mark.slow
def test_imagenet_odd_size_uses_224_file(keras_home):
    source = keras.applications.MobileNetV2(
        weights=None, alpha=0.35, input_shape=(224, 224, 3), include_top=False
    )
    source.save_weights(str(keras_home / "models" / imagenet_name(0.35, 224, include_top=False)))
    model = MobileNetV2MP(
        weights="imagenet", alpha=0.35, input_shape=(64, 48, 3), include_top=False,
        meta_pooling="none",
    )  # fmt: skip
    shared = layer_weights(source)
    for layer in model.layers:
        if layer.weights:
            assert_same_weights(layer.get_weights(), shared[layer.name])


def test_imagenet_file_copied_by_hand_is_found(keras_home, tmp_path):
    """A file placed at the path the error names is the one loaded."""
    source = keras.applications.MobileNetV2(
        weights=None, alpha=0.35, input_shape=(96, 96, 3), include_top=False
    )
    calibrate_batch_norms(source, 7)
    elsewhere = tmp_path / "download.h5"
    source.save_weights(str(elsewhere))
    target = os.path.join(str(keras_home), "models", imagenet_name(0.35, 96, include_top=False))
    shutil.copy(elsewhere, target)
    path = weights_lib.imagenet_weights_path(0.35, 96, include_top=False)
    assert os.path.samefile(path, target)


def test_empty_keras_home_means_the_home_folder(monkeypatch):
    monkeypatch.setenv("KERAS_HOME", "")
    assert weights_lib.keras_cache_dir() == os.path.expanduser(os.path.join("~", ".keras"))

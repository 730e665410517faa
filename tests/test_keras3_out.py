"""Keras 3 out: fixed float MobileNetV2MP models become Keras 3 models (keras_metapool.keras3)."""

import os
import subprocess
import sys
import textwrap

import keras as keras3
import numpy as np
import pytest
import tf_keras
from helpers import calibrate_batch_norms, run_python

import keras_metapool as km
from keras_metapool import keras3 as kmp3
from keras_metapool.models.naming import op_layer_name

SIZE = 32
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: A spec with every kind of fixed enhancer: pooling, a pair, SSP, post-norm.
POOLING_SPEC = km.ArchitectureSpec(
    ["identity", "max3", "avg3", ("ssp", "avg3"), "identity", "max3"] + ["ssp"] * 11,
    post_norm=True,
)


def _model(meta_pooling, seed=0):
    # Seeded: how far BN rounding is amplified at the output depends on the draw.
    tf_keras.utils.set_random_seed(seed)
    model = km.MobileNetV2MP(
        weights=None, alpha=0.35, input_shape=(SIZE, SIZE, 3), classes=10,
        meta_pooling=meta_pooling,
    )  # fmt: skip
    calibrate_batch_norms(model, seed)  # outputs that differ per image
    return model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).uniform(-1, 1, (16, SIZE, SIZE, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def converted(images):
    """{name: (tf_keras model, Keras 3 model)}."""
    out = {}
    for seed, (name, arch) in enumerate((("paper", "paper"), ("pooling", POOLING_SPEC))):
        model = _model(arch, seed)
        out[name] = (model, kmp3.to_keras3(model))
    return out


@pytest.mark.parametrize("name", ["paper", "pooling"])
def test_every_keras3_layer_computes_what_its_tf_keras_layer_computes(name, converted, images):
    """Layer by layer, on the tf_keras layer's own input: no amplification."""
    model, k3 = converted[name]
    assert [layer.name for layer in k3.layers] == [layer.name for layer in model.layers]
    inbound = {
        entry["config"]["name"]: [item[0] for item in entry["inbound_nodes"][0]]
        for entry in model.get_config()["layers"]
        if entry["inbound_nodes"]
    }
    probe = tf_keras.Model(model.inputs, [layer.output for layer in model.layers[1:]])
    values = dict(zip([layer.name for layer in model.layers[1:]], probe(images[:4])))
    values[model.layers[0].name] = images[:4]
    for layer in model.layers[1:]:
        inputs = [np.asarray(values[n]) for n in inbound[layer.name]]
        out = k3.get_layer(layer.name)(inputs if len(inputs) > 1 else inputs[0])
        expected = np.asarray(values[layer.name])
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(np.asarray(out), expected, atol=2e-6 * scale, err_msg=layer.name)
    ssp = [layer for layer in k3.layers if type(layer).__name__ == "SpatialEnhancer"]
    assert ssp and all(isinstance(layer, kmp3.SpatialEnhancer) for layer in ssp)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["paper", "pooling"])
def test_to_keras3_predicts_like_the_tf_keras_model(name, converted, images):
    model, k3 = converted[name]
    assert isinstance(k3, keras3.Model)
    expected = model.predict(images, verbose=0)
    assert np.ptp(expected.argmax(-1)) > 0  # not one class for every image
    # Keras 3's BatchNormalization rounds differently from tf_keras' fused
    # kernel (~1e-6 per layer, the test above); a random network with batch
    # statistics of 8 images amplifies that at the output, by how much depends
    # on the draw and on the CPU's float path (seen: 6.6e-5 to 4.1e-3), so the
    # bound is a multiple of that, far below the outputs' spread.
    got = k3.predict(images, verbose=0)
    assert expected.std() > 0.05
    np.testing.assert_allclose(got, expected, atol=1e-2)


_RELOAD = textwrap.dedent(
    """
    import sys
    import keras
    import numpy as np
    import keras_metapool.keras3  # registers SpatialEnhancer and HardSwish

    model = keras.saving.load_model(sys.argv[1], safe_mode=True)
    np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))
    print(keras.backend.backend(), "tf_keras" in sys.modules)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_keras_file_reloads_without_tf_keras_on_each_backend(backend, converted, images, tmp_path):
    _, k3 = converted["pooling"]
    path, inputs, outputs = tmp_path / "m.keras", tmp_path / "x.npy", tmp_path / "y.npy"
    k3.save(path)
    np.save(inputs, images)
    out = run_python(_RELOAD, path, inputs, outputs, env={"KERAS_BACKEND": backend})
    assert out.split()[-2:] == [backend, "False"]  # that backend, no tf_keras
    # JAX's kernels (XLA) round differently from TensorFlow's; this random
    # network with batch statistics of 8 images amplifies that (measured 4e-3).
    tolerance = 1e-6 if backend == "tensorflow" else 1e-2
    np.testing.assert_allclose(np.load(outputs), k3.predict(images, verbose=0), atol=tolerance)


_LITERT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras_metapool as km
    from keras_metapool.export import tflite_predict, to_tflite
    from keras_metapool.keras3 import to_keras3

    folder = sys.argv[1]
    km.MobileNetV2MP  # the tf_keras API
    from keras_metapool._keras import keras
    keras.utils.set_random_seed(0)
    model = km.MobileNetV2MP(weights=None, alpha=0.35, input_shape=(32, 32, 3), classes=10,
                             meta_pooling="paper")
    norms = [m for m in model.submodules if isinstance(m, keras.layers.BatchNormalization)]
    for bn in norms:  # batch statistics: outputs that differ per image
        bn.momentum = 0.0
    model(np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 3)).astype("float32"), training=True)
    images = np.random.default_rng(1).uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32)
    # tf_keras first: no Keras 3 model in the process yet (docs/api.md, "Keras 3").
    to_tflite(model, folder + "/tf_keras.tflite", "float")
    to_keras3(model).export(folder + "/k3.tflite", format="litert", verbose=False)
    a = tflite_predict(folder + "/k3.tflite", images)
    b = tflite_predict(folder + "/tf_keras.tflite", images)
    print("max_abs_diff", float(np.abs(a - b).max()), "spread", float(b.std(axis=0).max()))
    """
)


@pytest.mark.slow
def test_litert_export_matches_the_tf_keras_float_export(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    for _ in range(3):  # TF 2.21's converter can segfault with Keras 3 models (docs/api.md)
        done = subprocess.run(
            [sys.executable, "-c", _LITERT, str(tmp_path)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if done.returncode != -11:  # SIGSEGV: run again, anything else counts
            break
    assert done.returncode == 0, done.stderr[-3000:]
    words = done.stdout.split()
    difference, spread = float(words[-3]), float(words[-1])
    assert spread > 1e-3  # the outputs differ per image: a real comparison
    assert difference < 1e-4  # float TFLite kernels (XLA vs TF graph) round differently


@pytest.mark.slow
def test_keras3_builder_makes_a_trainable_keras3_model(images):
    keras3.utils.set_random_seed(0)
    model = kmp3.MobileNetV2MP(
        weights=None, alpha=0.35, input_shape=(SIZE, SIZE, 3), classes=4,
    )  # fmt: skip
    assert isinstance(model, keras3.Model)
    names = {layer.name for layer in model.layers}
    assert {op_layer_name(i, "output", "ssp") for i in range(6, 17)} <= names  # paper
    # NOTE: eager steps: what is checked is the layers' gradients, not Keras' tracing
    # (a traced MobileNetV2 train step costs ~25 s on 2 cores).
    model.compile(keras3.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", run_eagerly=True)
    labels = np.arange(len(images)) % 4
    before = model.get_layer(op_layer_name(6, "output", "ssp")).gate_h.kernel.numpy().copy()
    losses = [model.train_on_batch(images, labels) for _ in range(10)]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert not np.allclose(
        model.get_layer(op_layer_name(6, "output", "ssp")).gate_h.kernel.numpy(), before
    )


def test_keras3_builder_refuses_the_search():
    with pytest.raises(ValueError, match=r"fixed architectures.*to_fixed_model"):
        kmp3.MobileNetV2MP(weights=None, meta_pooling="search", input_shape=(SIZE, SIZE, 3))


@pytest.mark.slow
def test_search_and_qat_models_are_refused_with_the_way_forward(images):
    supernet = km.MobileNetV2MP(weights=None, alpha=0.35, input_shape=(SIZE, SIZE, 3))
    with pytest.raises(ValueError, match=r"MetaPoolingBlock.*keras_metapool\.to_fixed_model"):
        kmp3.to_keras3(supernet)
    qat = km.quantize_model(_model("none"), representative_data=images)
    with pytest.raises(
        ValueError, match=r"QAT model.*to_tflite.*float model.*keras3\.quantize_model"
    ):
        kmp3.to_keras3(qat)
    with pytest.raises(ValueError, match=r"needs a tf_keras model"):
        kmp3.to_keras3(keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)]))


def test_a_tf_keras_model_inside_a_keras3_model_names_the_way_out():
    model = _model("paper")
    nestings = {
        "added as a layer to": lambda: keras3.Sequential(
            [keras3.Input((SIZE, SIZE, 3)), model, keras3.layers.Dense(5)]
        ),
        "called on a Keras 3 tensor in": lambda: model(keras3.Input((SIZE, SIZE, 3))),
    }
    for how, nest in nestings.items():
        with pytest.raises(TypeError) as raised:
            nest()
        message = str(raised.value)
        assert (
            f"is a tf_keras model (keras_metapool builds on tf_keras for QAT); it cannot be {how}"
            in (message)
        )
        assert "keras_metapool.keras3.to_keras3(model)" in message
        assert "keras_metapool.keras3.MobileNetV2MP(" in message
    # A Keras 3 layer on its output: refused when the layer reads the tensor's shape, before
    # tf_keras wraps the layer's ops in Lambda layers (and warns about their variables).
    with pytest.raises(TypeError, match=r"Keras 3 layer or model was given a tf_keras tensor"):
        keras3.layers.Dense(5)(model.output)
    # Its tensors straight into keras.Model: Keras 3 raises, printing our tensor and its hint.
    with pytest.raises(ValueError) as raised:
        keras3.Model(model.input, model.output)
    message = str(raised.value)
    assert message.startswith("All `inputs` values must be KerasTensors")
    assert "convert the model first with keras_metapool.keras3.to_keras3(model)" in message
    # tf_keras itself keeps nesting it; a clone is tf_keras' own Functional.
    nested = tf_keras.Sequential([model, tf_keras.layers.Dense(5)])
    assert nested.output_shape == (None, 5)
    assert type(tf_keras.models.clone_model(model)).__name__ == "Functional"

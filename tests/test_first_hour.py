"""What a newcomer meets first: the card's flow with the defaults, honest warnings,
short progress lines, no process-wide side effects, and an install that imports."""

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from helpers import CARD_FLOW_MARKER, PLANTED_TASKS, readme_python_blocks, tiny_search_model

import keras_metapool as km
from keras_metapool._keras import keras
from keras_metapool.layers.candidate_ops import DEFAULT_CANDIDATES
from keras_metapool.search import ModelAtChanceWarning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_readmes_flow_with_the_defaults_gives_a_useful_edge_tpu_model(tmp_path, monkeypatch):
    # README's block of the whole flow, run as written: no batch_norm_momentum
    # argument (with keras.applications' 0.999 it ended at chance, 0.095, at
    # every stage). Measured 2026-12-04 (2 seeds): search model 0.59-0.68, QAT
    # 0.74, int8 Edge TPU file 0.75-0.77 on the test images.
    (block,) = [b for b in readme_python_blocks() if CARD_FLOW_MARKER in b]
    monkeypatch.chdir(tmp_path)
    keras.utils.set_random_seed(0)
    namespace = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(block, "README.md (the whole flow)", "exec"), namespace)
    assert not [w for w in caught if issubclass(w.category, ModelAtChanceWarning)]
    searched = namespace["model"].evaluate(
        namespace["test_images"], namespace["test_labels"], verbose=0
    )[1]
    assert searched > 0.4  # trained as it will be used: the late stage is not the end
    assert namespace["int8_accuracy"] >= 0.6, (searched, namespace["int8_accuracy"])
    # The file is what the prose says: uint8 images of batch 1, every op on the Edge TPU.
    result = namespace["result"]
    assert (result.input.dtype, list(result.input.shape)) == ("uint8", [1, 64, 64, 3])
    assert result.edgetpu_report.all_mapped
    # The SavedModel serves raw pixels of another size.
    import tensorflow as tf

    serving = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"]
    outputs = serving(images=tf.zeros([2, 40, 50, 3], tf.uint8))
    assert outputs["probabilities"].shape == (2, 10)


def _tiny_fit(x, y, learning_rate):
    keras.utils.set_random_seed(0)
    model = tiny_search_model(DEFAULT_CANDIDATES, x.shape[1:], points=(1,))
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy", ["acc"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=32, epochs=3, callbacks=[km.PMPLCallback(verbose=0)], verbose=0)
    return [w for w in caught if issubclass(w.category, ModelAtChanceWarning)]


@pytest.mark.slow
def test_a_model_at_chance_after_the_search_warns_and_a_healthy_one_does_not():
    x, y = PLANTED_TASKS["block_or_scatter"](512, seed=0)
    balanced = np.arange(len(y)) % 2  # labels unrelated to the images, half each
    stuck = _tiny_fit(x, balanced, learning_rate=0.0)  # nothing can learn
    assert len(stuck) == 1
    message = str(stuck[0].message)
    assert "about chance for 2 classes (0.500)" in message
    assert "batch_norm_momentum" in message
    assert _tiny_fit(x, y, learning_rate=1e-2) == []


@pytest.mark.slow
def test_the_progress_bar_keeps_to_the_counts_and_history_keeps_every_entry(capsys):
    x, y = PLANTED_TASKS["block_or_scatter"](64, seed=0)
    model = tiny_search_model(DEFAULT_CANDIDATES, x.shape[1:], points=(1, 2))
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for verbose in (1, 2):
            history = model.fit(
                x, y, batch_size=16, epochs=2, callbacks=[km.PMPLCallback()], verbose=verbose
            )
            out = capsys.readouterr().out
            assert "pmpl/block_1_mp" not in out and "pmpl_evidence" not in out
            assert "pmpl/decided_points" in out
            lines = out.splitlines()
            # The search's line is a line of its own, after the bar's.
            assert [line for line in lines if line.startswith("PMPL epoch")] == [
                line for line in lines if "PMPL epoch" in line
            ]
            assert len([line for line in lines if line.startswith("PMPL epoch")]) == 2
            assert max(len(line.split("\r")[-1]) for line in lines) < 400
            assert len(history.history["pmpl/block_1_mp/identity"]) == 2
            assert len(history.history["pmpl_evidence/block_2_mp"]) == 2


def _run(code, cwd):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_quantize_model_leaves_tf_keras_and_the_environment_as_they_were(tmp_path):
    last = _run(
        """
        import os
        import tensorflow as tf
        import keras_metapool as km
        from keras_metapool import keras
        # NOTE: a small model: what is checked is the process, not the network.
        inputs = keras.Input((8, 8, 3))
        features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
        model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(features))
        km.quantize_model(model)
        km.quantize_scope()
        print(os.environ.get("TF_USE_LEGACY_KERAS"), tf.keras.__name__.split(".")[0])
        """,
        cwd=tmp_path,
    )
    # Without keras_metapool, tf.keras here is Keras 3 (package "keras").
    assert last == "None keras"


@pytest.mark.slow
def test_a_script_beside_a_clone_named_keras_metapool_imports_the_package(tmp_path):
    # A clone in ./keras_metapool has no __init__.py at its root: with an
    # editable install's finder it won as a namespace package.
    os.symlink(ROOT, tmp_path / "keras_metapool")
    script = tmp_path / "train.py"
    script.write_text("import keras_metapool\nprint(keras_metapool.MobileNetV2MP.__name__)\n")
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "MobileNetV2MP"


@pytest.mark.parametrize("layer", ["MobileNetV2MP", "SpatialEnhancer", "MetaPoolingBlock"])
def test_batch_norm_momentum_defaults_to_the_papers(layer):
    if layer == "MobileNetV2MP":
        model = km.MobileNetV2MP(weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=2)
        momenta = {
            m.momentum for m in model.submodules if isinstance(m, keras.layers.BatchNormalization)
        }
    else:
        instance = getattr(km, layer)()
        instance.build((None, 8, 8, 16))
        momenta = {instance.get_config()["batch_norm_momentum"]}
        momenta |= {
            m.momentum
            for m in instance._flatten_layers()
            if isinstance(m, keras.layers.BatchNormalization)
        }
    assert momenta == {0.9}

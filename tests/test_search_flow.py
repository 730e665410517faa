"""The flow the README promises, literally: default supernet, fit, fixed, lean."""

import numpy as np
import pytest

import keras_metapool
from keras_metapool.data.fashion_mnist import load_fashion_mnist
from keras_metapool.data.preprocessing import to_model_input


@pytest.mark.slow
def test_default_supernet_fit_with_pmpl_fixes_every_point_and_goes_lean():
    images, labels = load_fashion_mnist("train", limit=4)
    x = np.asarray(to_model_input(images, 224))  # the default input size

    model = keras_metapool.MobileNetV2MP(weights=None)  # meta_pooling="search"
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    pmpl = keras_metapool.PMPLCallback(verbose=0)
    history = model.fit(x, labels, batch_size=2, epochs=1, callbacks=[pmpl], verbose=0)

    blocks = [layer for layer in model.layers if isinstance(layer, keras_metapool.MetaPoolingBlock)]
    assert len(blocks) == 16  # the hidden placement: blocks 1-16
    # Two steps decide nothing: every point ends as "no enhancer".
    assert all(block.fixed_ops == ("identity",) for block in blocks)
    assert "pmpl/block_6_hidden_mp/ssp" in history.history
    spec = pmpl.architecture
    assert spec == keras_metapool.derive_architecture(model)
    assert not spec.is_searchable and not spec.points

    lean = keras_metapool.to_fixed_model(model)
    assert not any(isinstance(layer, keras_metapool.MetaPoolingBlock) for layer in lean.layers)
    np.testing.assert_allclose(
        lean(x, training=False).numpy(), model(x, training=False).numpy(), atol=1e-6
    )

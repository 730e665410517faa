"""Whole MobileNetV2MP models under mixed precision."""

import numpy as np
import pytest

from keras_metapool._keras import keras
from keras_metapool.models import ArchitectureSpec, MobileNetV2MP, from_mobilenet_v2


@pytest.mark.slow
# Each policy on its own architectures (not every pair: 10-20 s each, mostly tracing):
# the search model under bfloat16 (CPU's mixed precision), the others under float16.
@pytest.mark.parametrize(
    "meta_pooling,policy",
    [
        ("paper", "mixed_float16"),
        ("search", "mixed_bfloat16"),
        (ArchitectureSpec.ablation("random"), "mixed_float16"),
    ],
)
def test_model_matches_float32_and_trains(meta_pooling, policy):
    kwargs = dict(
        weights=None,
        alpha=0.35,
        input_shape=(32, 32, 3),
        classes=10,
        meta_pooling=meta_pooling,
        classifier_activation=None,
    )
    reference = MobileNetV2MP(**kwargs)
    keras.mixed_precision.set_global_policy(policy)
    model = MobileNetV2MP(**kwargs)
    model.set_weights(reference.get_weights())
    x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    logits = model(x, training=False)
    assert logits.dtype == keras.mixed_precision.global_policy().compute_dtype
    tolerance = 0.05 if policy == "mixed_float16" else 0.3
    np.testing.assert_allclose(
        np.asarray(logits, np.float32), reference(x, training=False), atol=tolerance, rtol=tolerance
    )
    # NOTE: an eager step: loss scaling and the dtypes are the same as in a traced one.
    model.compile(
        keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(True),
        run_eagerly=True,
    )  # fmt: skip
    history = model.fit(x, np.arange(4), epochs=1, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_a_model_rebuilt_from_a_mixed_precision_base_keeps_its_policy():
    keras.mixed_precision.set_global_policy("mixed_float16")
    base = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(32, 32, 3),
                                          classes=4)  # fmt: skip
    keras.mixed_precision.set_global_policy("float32")
    model = from_mobilenet_v2(base)
    for name in ("Conv1", "block_6_mp_ssp", "predictions"):
        assert model.get_layer(name).dtype_policy.name == "mixed_float16"
    assert keras.mixed_precision.global_policy().name == "float32"
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(model(x), np.float32), base(x), atol=2e-2)

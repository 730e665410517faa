"""Helpers shared by the tests: reference data and model calibration."""

import numpy as np

from keras_metapool._keras import keras

#: METHOD.md §3's ablation index lists and their choice list, written out here
#: independently of keras_metapool's own constants.
CHOICES = ["ssp", "avg3", "avg5", "avg7", "identity"]
METHOD_ABLATIONS = {
    "global": [0] * 17,
    "local": [1] * 17,
    "random": [0, 1, 3, 1, 2, 4, 3, 0, 2, 4, 0, 4, 1, 1, 1, 3, 3],
    "exclude_local": [4, 4, 0, 4, 4, 0, 0, 4, 0, 4, 0, 0, 4, 0, 0, 0, 0],
}


def calibrate_batch_norms(model, seed, randomize_alpha=False):
    """Non-default BN parameters and statistics (and, optionally, search logits).

    gamma and beta are drawn at random; the moving statistics become those of
    a random batch (one training pass with momentum 0). With untouched
    statistics a randomly initialised MobileNetV2 saturates and predicts the
    same for every input, which would make output comparisons meaningless.
    """
    rng = np.random.default_rng(seed)
    for variable in model.variables:
        name = variable.name
        shape = tuple(variable.shape)
        if name.endswith("beta:0"):
            variable.assign(rng.normal(0.0, 0.1, shape).astype("float32"))
        elif name.endswith("gamma:0"):
            variable.assign(rng.uniform(0.8, 1.2, shape).astype("float32"))
        elif randomize_alpha and name.endswith("/alpha:0"):
            variable.assign(rng.normal(0.0, 1.0, shape).astype("float32"))
    norms = [m for m in model.submodules if isinstance(m, keras.layers.BatchNormalization)]
    assert norms
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.momentum = 0.0
    batch = rng.uniform(-1, 1, (8,) + tuple(model.input_shape[1:])).astype("float32")
    model(batch, training=True)
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum


# -- NumPy references of METHOD.md §1 ------------------------------------------------
def np_hswish(z):
    return z * np.clip(z + 3.0, 0.0, 6.0) / 6.0


def np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_conv1x1(z, kernel, bias):
    """1x1 convolution, NHWC, kernel of shape (1, 1, cin, cout)."""
    return np.einsum("bhwc,cd->bhwd", z, kernel[0, 0]) + bias


def np_bn(z, gamma, beta, mean, var, eps):
    return (z - mean) / np.sqrt(var + eps) * gamma + beta


def randomize_weights(layer, rng):
    """Assigns random non-trivial values to every weight of ``layer``."""
    assert layer.weights, "layer has no weights to randomize"
    for var in layer.weights:
        shape = tuple(var.shape)
        name = var.name
        if "moving_variance" in name:
            value = rng.uniform(0.3, 2.0, shape)
        elif "gamma" in name:
            value = rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
        elif "kernel" in name:
            value = rng.normal(0.0, 1.5 / np.sqrt(shape[-2]), shape)
        else:  # biases, beta, moving_mean
            value = rng.normal(0.0, 0.5, shape)
        var.assign(value.astype(var.dtype.as_numpy_dtype))

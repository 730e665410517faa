"""Helpers shared by the tests: reference data and model calibration."""

import numpy as np

from keras_metapool._keras import keras

#: docs/method.md §3's ablation index lists and their choice list, written out here
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


# -- NumPy references of docs/method.md §1 ------------------------------------------------
def np_hswish(z):
    return z * np.clip(z + 3.0, 0.0, 6.0) / 6.0


def np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_conv1x1(z, kernel, bias):
    """1x1 convolution, NHWC, kernel of shape (1, 1, cin, cout)."""
    return np.einsum("bhwc,cd->bhwd", z, kernel[0, 0]) + bias


def np_bn(z, gamma, beta, mean, var, eps):
    return (z - mean) / np.sqrt(var + eps) * gamma + beta


def randomize_layers(layers, rng):
    """``randomize_weights`` on every layer of ``layers`` that has weights."""
    for layer in layers:
        if layer.weights:
            randomize_weights(layer, rng)


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


# -- tiny search models ----------------------------------------------------------------
def tiny_search_model(
    candidates,
    input_shape=(16, 16, 1),
    points=(1, 2),
    classes=2,
    pool="max",
    post_norm=False,
    fixed=None,
):
    """A small functional model with MobileNetV2MP-named search points.

    Conv1x1 -> [MetaPoolingBlock "block_<i>_mp" for i in points] -> global
    pooling -> Dense. PMPLCallback and derive_architecture find points by
    name, so this exercises the search machinery at a fraction of
    MobileNetV2MP's tracing cost. ``fixed`` fixes every point to that op
    (a model of one candidate alone).
    """
    from keras_metapool.layers import MetaPoolingBlock

    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 1, name="stem")(inputs)
    for index in points:
        x = MetaPoolingBlock(
            candidates=candidates,
            post_norm=post_norm,
            fixed=fixed,
            batch_norm_momentum=0.9,
            name=f"block_{index}_mp",
            seed=index,
        )(x)
    pooling = (
        keras.layers.GlobalMaxPooling2D if pool == "max" else keras.layers.GlobalAveragePooling2D
    )
    x = pooling(name="pool")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="tiny_search")


def block_or_scatter_task(count, seed, size=16, block=3):
    """A bright ``block``x``block`` square (label 1) or as many scattered pixels (0).

    Under a global max pool, the identity and max pooling see a maximum of 1
    in both classes; only averaging over a window tells them apart (1 against
    at most 2/9 for a 3x3 average): a task that needs a larger receptive
    field, with a single right kind of answer.
    """
    rng = np.random.default_rng(seed)
    cells_per_side = size // 4
    if cells_per_side**2 < block**2:
        raise ValueError(f"size {size} has too few 4x4 cells for {block**2} pixels")
    images = np.zeros((count, size, size, 1), np.float32)
    labels = rng.integers(0, 2, count)
    for i in range(count):
        if labels[i]:
            r, c = rng.integers(0, size - block + 1, 2)
            images[i, r : r + block, c : c + block] = 1.0
        else:
            # One pixel per 4x4 cell, jittered within its first 3x3: never adjacent.
            for cell in rng.choice(cells_per_side**2, block**2, replace=False):
                r, c = divmod(int(cell), cells_per_side)
                images[i, 4 * r + rng.integers(0, 3), 4 * c + rng.integers(0, 3)] = 1.0
    images += rng.normal(0.0, 0.05, images.shape).astype(np.float32)
    return images, labels


def peak_or_clutter_task(count, seed, size=24):
    """One pixel at 1.0 (label 1) or none, in a clutter of pixels at 0.5 (20%).

    Under a global max pool the identity separates the classes cleanly (1.0
    against 0.5); averaging mixes the peak with its neighbours and with the
    clutter, so a larger receptive field only hurts: a task where the
    smallest receptive field is the answer.
    """
    rng = np.random.default_rng(seed)
    images = (rng.random((count, size, size, 1)) < 0.2).astype(np.float32) * 0.5
    labels = rng.integers(0, 2, count)
    for i in np.flatnonzero(labels):
        r, c = rng.integers(0, size, 2)
        images[i, r, c] = 1.0
    images += rng.normal(0.0, 0.05, images.shape).astype(np.float32)
    return images, labels


def aligned_glyphs_task(count, seed, size=24, glyph=2, apart=10):
    """Two bright glyphs far apart: on the same rows (label 1) or not (0).

    The glyphs are ``glyph`` x ``glyph`` squares at least ``apart`` columns
    apart, beyond every pooling window (7 at most); in class 0 their rows
    differ by at least ``2 * glyph``. Under a global max pool only an op that
    relates a pixel to its whole row can tell the classes apart: SSP (its row
    descriptor doubles where both glyphs share a row). A task whose one
    right answer is SSP.
    """
    rng = np.random.default_rng(seed)
    images = np.zeros((count, size, size, 1), np.float32)
    labels = rng.integers(0, 2, count)
    last = size - glyph
    for i in range(count):
        c1 = int(rng.integers(0, last - apart + 1))
        c2 = int(rng.integers(c1 + apart, last + 1))
        r1 = int(rng.integers(0, last + 1))
        if labels[i]:
            r2 = r1
        else:
            rows = [r for r in range(last + 1) if abs(r - r1) >= 2 * glyph]
            r2 = int(rng.choice(rows))
        for r, c in ((r1, c1), (r2, c2)):
            images[i, r : r + glyph, c : c + glyph] = 1.0
        if rng.random() < 0.5:  # glyphs left/right of each other either way
            images[i] = images[i, :, ::-1]
    images += rng.normal(0.0, 0.05, images.shape).astype(np.float32)
    return images, labels


#: The planted tasks of the search tests and of benchmarks/planted_search.py.
PLANTED_TASKS = {
    "aligned_glyphs": aligned_glyphs_task,
    "block_or_scatter": block_or_scatter_task,
    "peak_or_clutter": peak_or_clutter_task,
}


def slope_streams(streams, candidates, steps, autocorrelation, shift=None, seed=0):
    """Synthetic evidence of ``streams`` search points, step by step.

    Each step, one loss slope per candidate: a common part that moves every
    slope alike (it cancels in the paired differences), each op's own AR(1)
    noise of lag-1 ``autocorrelation`` (real slopes are not independent), and
    ``shift = (op, amount)`` lowering one op's mean slope (a real effect, in
    units of an op's own noise). Yields ``(step, count, slope_sum, squares,
    lag_products)``, the running sums the callback keeps (``search/arch_step.py``).
    """
    rng = np.random.default_rng(seed)
    k = len(candidates)
    count = np.zeros(streams)
    slope_sum = np.zeros((streams, k))
    squares = np.zeros((streams, k, k))
    lag_products = np.zeros((streams, k, k))
    own = np.zeros((streams, k))
    mean = np.zeros(k)
    if shift is not None:
        mean[candidates.index(shift[0])] = -shift[1]
    previous = None
    for step in range(1, steps + 1):
        innovation = rng.standard_normal((streams, k))
        own = autocorrelation * own + np.sqrt(1.0 - autocorrelation**2) * innovation
        slopes = own + 3.0 * rng.standard_normal((streams, 1)) + mean
        difference = slopes[:, :, None] - slopes[:, None, :]
        count += 1
        slope_sum += slopes
        squares += difference**2
        if previous is not None:
            lag_products += difference * previous
        previous = difference
        yield step, count, slope_sum, squares, lag_products


def run_python(script, *args, env=None):
    """Runs ``script`` in a fresh Python process from the repository root; its stdout.

    A fresh process imports only what the script imports, as a user's program
    would (e.g. Keras 3 without tf_keras); a failure shows its stderr.
    """
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        cwd=root, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {})),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def free_ports(count):
    """``count`` TCP ports free on the loopback address (for local multi-worker clusters)."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


# -- README ----------------------------------------------------------------------------
def readme_python_blocks():
    """The ```python blocks of README.md, in order, as written."""
    import os
    import re

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
        return re.findall(r"^```python\n(.*?)^```", f.read(), re.S | re.M)


#: Marks README's block of the whole flow (tests/test_first_hour.py runs it).
CARD_FLOW_MARKER = "int8_accuracy ="

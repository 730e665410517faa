"""Loading weights into MobileNetV2MP by layer name, with clear mismatches.

keras.applications loads weight files by layer order; a MobileNetV2MP has
extra layers, so we match by layer name instead and say exactly what does not
fit, rather than loading a shifted set of tensors or skipping layers quietly.
"""

import os

import h5py
import numpy as np
import tensorflow as tf
from absl import logging

from keras_metapool._keras import keras

IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
IMAGENET_SIZES = (96, 128, 160, 192, 224)
IMAGENET_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"


def _layer_weights(layer):
    # The order Keras writes into .h5 files: trainable, then non-trainable.
    return layer.trainable_weights + layer.non_trainable_weights


def imagenet_weights_filename(alpha, rows, include_top):
    """The keras.applications file name of the ImageNet MobileNetV2 weights."""
    suffix = "" if include_top else "_no_top"
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}{suffix}.h5"


def keras_cache_dir():
    """The Keras cache folder: ``$KERAS_HOME`` if set and not empty, else ``~/.keras``.

    keras_metapool.data.fashion_mnist resolves it the same way; it keeps its own
    copy so that module stays importable without TensorFlow.
    """
    return os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras"))


def imagenet_weights_path(alpha, rows, include_top):
    """Path of the cached ImageNet weights file, downloading it if possible.

    Raises:
        ValueError: if the file is not cached and cannot be downloaded; the
            message names the file and the folder to place it in.
    """
    filename = imagenet_weights_filename(alpha, rows, include_top)
    cache_dir = keras_cache_dir()
    target = os.path.join(cache_dir, "models", filename)
    if os.path.exists(target):
        return target
    try:
        return keras.utils.get_file(
            filename, IMAGENET_BASE_URL + filename, cache_subdir="models", cache_dir=cache_dir
        )
    except Exception as error:  # no network, proxy refusal, HTTP error ...
        raise ValueError(
            f"weights='imagenet': the file {filename} is not in the Keras cache and "
            f"could not be downloaded ({type(error).__name__}: {error}). Place it at "
            f"{target} (same file keras.applications.MobileNetV2 uses), or pass "
            "weights=None or a path to a weights file."
        ) from None


def _read_legacy_h5(path):
    """{layer name: [arrays]} from a Keras 2 .h5 weights (or full model) file.

    Returns None when the file is HDF5 but not in that layout.
    """
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in group.attrs:
            return None
        result = {}
        for raw in group.attrs["layer_names"]:
            name = raw.decode("utf8") if isinstance(raw, bytes) else str(raw)
            layer_group = group[name]
            names = [
                n.decode("utf8") if isinstance(n, bytes) else str(n)
                for n in layer_group.attrs.get("weight_names", [])
            ]
            if names:
                result[name] = [np.asarray(layer_group[n]) for n in names]
        return result


def load_weights_by_name(model, path, new_layers=()):
    """Loads a Keras .h5 weights file into ``model``, matching layers by name.

    Every layer in the file must exist in the model with the same weight
    shapes. Every model layer with weights must be in the file, except the
    layers named in ``new_layers`` (Meta-Pooling additions), which keep their
    initial values when the file lacks them.

    Args:
        model: The Keras model to fill.
        path: A legacy Keras .h5 file (``save_weights('x.h5')`` or
            ``save('x.h5')``), e.g. keras.applications' ImageNet files.
        new_layers: Names of layers that may be missing from the file.

    Returns:
        The names of the model layers that kept their initial values.

    Raises:
        ValueError: naming the layer, weight and shapes that do not match.
    """
    try:
        stored = _read_legacy_h5(path)
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(
            f"`weights`: could not read {path} (corrupt or truncated?): {error}"
        ) from None
    if stored is None:
        raise ValueError(f"`weights`: {path} is HDF5 but not a Keras weights file.")
    model_layers = {layer.name: layer for layer in model.layers if layer.weights}
    extra = sorted(set(stored) - set(model_layers))
    if extra:
        raise ValueError(
            f"`weights`: {path} holds layers this model does not have: {extra[:8]}"
            f"{' ...' if len(extra) > 8 else ''}. Was it saved from another architecture "
            "(meta_pooling, placement or head)?"
        )
    missing = sorted(set(model_layers) - set(stored) - set(new_layers))
    if missing:
        raise ValueError(
            f"`weights`: {path} lacks weights for layers {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}."
        )
    assignments = []
    for name, arrays in stored.items():
        variables = _layer_weights(model_layers[name])
        shapes_model = [tuple(v.shape) for v in variables]
        shapes_file = [tuple(a.shape) for a in arrays]
        if shapes_model != shapes_file:
            if name == "predictions":  # the classifier: a `classes` mismatch
                raise ValueError(
                    f"`classes`: the weights file {path} has a classifier for "
                    f"{shapes_file[-1][-1]} classes, the model has {shapes_model[-1][-1]}. "
                    "Pass the matching `classes`, or include_top=False."
                )
            raise ValueError(
                f"`weights`: layer '{name}' does not match {path}: the model expects "
                f"shapes {shapes_model}, the file has {shapes_file}. Check alpha, "
                "input channels and the architecture."
            )
        assignments.extend(zip(variables, arrays))
    # Assign only after every check passed: a failed load changes nothing.
    for variable, array in assignments:
        variable.assign(array)
    kept = sorted(set(model_layers) - set(stored))
    if kept:
        logging.info("%d layers not in %s keep their initial values: %s", len(kept), path, kept)
    return kept


def check_weights_path(path):
    """Whether ``path`` is a TF checkpoint prefix (True) or a file (False).

    Raises:
        ValueError: if neither exists.
    """
    path = os.fspath(path)
    if tf.io.gfile.exists(path + ".index"):
        return True
    if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
        return False
    raise ValueError(
        f"`weights`: no file at {path}. Expected None, 'imagenet', or the path "
        "to a weights file (.h5, or a TensorFlow checkpoint prefix)."
    )


def load_weights_file(model, path, new_layers=()):
    """Loads ``path`` (a Keras .h5 file or a TF checkpoint) into ``model``.

    Raises:
        ValueError: if the file is missing, unreadable, or does not match.
    """
    path = os.fspath(path)
    if not check_weights_path(path):
        if h5py.is_hdf5(path):
            return load_weights_by_name(model, path, new_layers)
        raise ValueError(
            f"`weights`: {path} is neither a Keras .h5 weights file nor a TensorFlow "
            "checkpoint (is it corrupt or truncated?)."
        )
    try:
        status = model.load_weights(path)
        status.assert_existing_objects_matched()
    except Exception as error:
        raise ValueError(
            f"`weights`: the checkpoint {path} does not match this model: {error}"
        ) from None
    return []

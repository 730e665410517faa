"""Loading weights into MobileNetV2MP by layer name, with clear mismatches.

keras.applications loads weight files by layer order; a MobileNetV2MP has
extra layers, so we match by layer name instead and say exactly what does not
fit, rather than loading a shifted set of tensors or skipping layers quietly.
"""

import collections
import json
import os
import re
import warnings
import zipfile

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


def _keras3_object_name(class_name):
    """Keras 3's snake-case name of a class, as its .weights.h5 groups use it."""
    # Keras 3 (keras.src.utils.naming.to_snake_case) names each layer's group
    # after its class, numbered in model order: conv2d, conv2d_1, ...
    intermediate = re.sub("(.)([A-Z][a-z0-9]+)", r"\1_\2", class_name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", intermediate).lower()


def _read_keras3_h5(path, model, new_layers):
    """{layer name: [arrays]} from a Keras 3 ``.weights.h5`` file of a MobileNetV2.

    Keras 3 keys each layer's group by its class and position (``layers/
    batch_normalization_3/vars/0``), not by its name. The layers of a
    MobileNetV2MP other than ``new_layers`` are keras.applications'
    MobileNetV2 in its order, so the k-th one of a class is that class's
    group number k. Returns None when the file is not in that layout; groups
    that no model layer maps to come back under their group name (reported
    as layers the model does not have).
    """
    with h5py.File(path, "r") as f:
        if "layers" not in f or "layer_names" in f.attrs:
            return None
        groups = f["layers"]

        def values(name):
            group = groups.get(name)
            if group is None or "vars" not in group or not len(group["vars"]):
                return None
            return [np.asarray(group["vars"][str(i)]) for i in range(len(group["vars"]))]

        counts, result, mapped = collections.Counter(), {}, set()
        for layer in model.layers:
            if layer.name in new_layers:
                continue
            key = _keras3_object_name(type(layer).__name__)
            group = key if counts[key] == 0 else f"{key}_{counts[key]}"
            counts[key] += 1
            mapped.add(group)
            arrays = values(group)
            if arrays is not None:
                result[layer.name] = arrays
        for group in groups:
            arrays = None if group in mapped else values(group)
            if arrays is not None:
                result[f"{group} (Keras 3 group)"] = arrays
        return result


def _keras_zip_version(path):
    """The Keras version that wrote a ``.keras`` file (its metadata.json)."""
    with zipfile.ZipFile(path) as archive:
        with archive.open("metadata.json") as f:
            return str(json.load(f).get("keras_version", ""))


def _read_keras_file(path):
    """{layer name: [arrays]} of the model saved in a ``.keras`` file.

    Keras 3 files load with Keras 3 (``keras_metapool.keras3`` registers the
    package's layers, so converted Meta-Pooling models load too), tf_keras
    files with tf_keras; both in safe mode, without compiling.
    """
    version = _keras_zip_version(path)
    if version.startswith("2."):
        loaded = keras.models.load_model(path, compile=False, safe_mode=True)
    else:
        import keras as keras3

        import keras_metapool.keras3  # noqa: F401  (registers SpatialEnhancer, HardSwish)

        loaded = keras3.saving.load_model(path, compile=False, safe_mode=True)
    return {
        layer.name: [np.asarray(v) for v in layer.trainable_weights + layer.non_trainable_weights]
        for layer in loaded.layers
        if layer.weights
    }


def _read_weights(path, model, new_layers):
    """{layer name: [arrays]} from any supported weights file, or a ValueError."""
    try:
        if zipfile.is_zipfile(path):
            return _read_keras_file(path)
        stored = _read_legacy_h5(path)
        if stored is None:
            stored = _read_keras3_h5(path, model, set(new_layers))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"`weights`: could not read {path} (corrupt or truncated?): {error}"
        ) from None
    if stored is None:
        raise ValueError(
            f"`weights`: {path} is HDF5 but neither a Keras 2 weights file (layer_names) "
            "nor a Keras 3 .weights.h5 file (layers/...)."
        )
    return stored


def load_weights_by_name(model, path, new_layers=()):
    """Loads a Keras weights file into ``model``, matching layers by name.

    Every layer in the file must exist in the model with the same weight
    shapes. Every model layer with weights must be in the file, except the
    layers named in ``new_layers`` (Meta-Pooling additions), which keep their
    initial values when the file lacks them.

    Args:
        model: The Keras model to fill.
        path: A Keras 2 .h5 file (``save_weights('x.h5')`` or ``save('x.h5')``),
            e.g. keras.applications' ImageNet files; a Keras 3
            ``.weights.h5`` file of a MobileNetV2 (Keras 3 keys layers by
            class and position, which the MobileNetV2 layer order maps to
            names); or a ``.keras`` file (Keras 3 or tf_keras).
        new_layers: Names of layers that may be missing from the file.

    Returns:
        The names of the model layers that kept their initial values.

    Raises:
        ValueError: naming the layer, weight and shapes that do not match.
    """
    stored = _read_weights(path, model, new_layers)
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
        "to a weights file (.h5, .weights.h5, .keras, or a TensorFlow checkpoint prefix)."
    )


class LayersKeptInitWarning(UserWarning):
    """A weights file had nothing for some layers of the model, which kept their init."""


def load_weights_file(model, path, new_layers=()):
    """Loads ``path`` (a Keras .h5 file or a TF checkpoint) into ``model``.

    Layers in ``new_layers`` (the Meta-Pooling additions) may be missing from
    a Keras file; they keep their initial values, with a
    ``LayersKeptInitWarning`` that names them.

    Raises:
        ValueError: if the file is missing, unreadable, or does not match.
    """
    path = os.fspath(path)
    if not check_weights_path(path):
        if h5py.is_hdf5(path) or zipfile.is_zipfile(path):
            kept = load_weights_by_name(model, path, new_layers)
            if kept:
                # Unlike weights="imagenet", where it is the point, a user's file
                # without some layers may be the wrong file: say so.
                warnings.warn(
                    f"`weights`: {path} has no weights for {len(kept)} layers of this model, "
                    f"which keep their initial values: {kept[:8]}"
                    f"{' ...' if len(kept) > 8 else ''}. "
                    "Expected when the file holds a plain MobileNetV2 and this model adds "
                    "Meta-Pooling layers (they start untrained, as with weights='imagenet'; "
                    "keras_metapool.from_mobilenet_v2 starts them as a no-op instead); if the "
                    "file was saved from this architecture, it is not this model's file.",
                    LayersKeptInitWarning,
                    stacklevel=3,
                )
            return kept
        raise ValueError(
            f"`weights`: {path} is neither a Keras weights file (.h5, .weights.h5, "
            ".keras) nor a TensorFlow checkpoint (is it corrupt or truncated?)."
        )
    try:
        status = model.load_weights(path)
        status.assert_existing_objects_matched()
    except Exception as error:
        raise ValueError(
            f"`weights`: the checkpoint {path} does not match this model: {error}"
        ) from None
    return []

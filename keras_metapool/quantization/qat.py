"""Quantization-aware training (TF-MOT) of MobileNetV2MP models.

``quantize_model`` builds the QAT model, ``calibrate_activation_ranges`` sets
its activation ranges from data, ``quantize_scope`` loads a saved one.
"""

import contextlib

import numpy as np
import tensorflow as tf
from absl import logging

from keras_metapool import _internals
from keras_metapool._calibration import NO_CALIBRATION_DATA, RangeStatistics, warn_if_collapsed
from keras_metapool._int8_facts import MOBILENET_INPUT_RANGE
from keras_metapool._internals import import_tfmot as _tfmot
from keras_metapool._keras import keras, require_float32_model, require_tf_keras_model
from keras_metapool.data.samples import DEFAULT_CALIBRATION_SAMPLES, calibration_samples
from keras_metapool.layers.building import weight_path
from keras_metapool.layers.meta_pooling import MetaPoolingBlock
from keras_metapool.models.derive import to_fixed_model
from keras_metapool.quantization import configs
from keras_metapool.quantization.configs import FixedRangeQuantizer
from keras_metapool.quantization.layers import fake_quant_points
from keras_metapool.quantization.scheme import TRANSFORMS, transform_for

_OUR_QUANTIZED_LAYERS = {row.twin.__name__: row.twin for row in TRANSFORMS if row.twin}


def quantize_scope(*custom_objects):
    """Context in which a QAT model from ``quantize_model`` can be loaded.

    TF-MOT's ``quantize_scope`` plus keras_metapool's quantized layers and
    configs. Formats (tf_keras 2.21, TF-MOT 0.8.1):

    - ``.h5`` (``model.save("qat.h5")``): reloads inside this scope;
    - SavedModel (``model.save(dir, save_format="tf")``): reloads inside this
      scope as a Keras model (to train on or convert); ``tf.saved_model.load``
      needs no scope;
    - ``.keras``: does not reload TF-MOT models; ``quantize_model`` makes
      ``model.save("*.keras")`` raise an error that says so.

    Args:
        *custom_objects: Optional dicts of further custom objects.

    Returns:
        A ``keras.utils.CustomObjectScope``.

    Example:
        >>> with keras_metapool.quantization.quantize_scope():
        ...     qat = keras.models.load_model("qat.h5")
    """
    ours = dict(_OUR_QUANTIZED_LAYERS)
    for name in configs.__all__:
        ours[name] = getattr(configs, name)
    return _tfmot().quantization.keras.quantize_scope(*custom_objects, ours)


def _describe(model):
    return f"{type(model).__module__}.{type(model).__name__}"


def _check_model(model):
    require_tf_keras_model(model, "quantize_model")
    if not (isinstance(model, keras.Sequential) or _internals.is_graph_network(model)):
        raise ValueError(
            f"quantize_model expects a functional or Sequential tf_keras model (as built by "
            f"MobileNetV2MP); '{model.name}' is a subclassed model ({_describe(model)})."
        )
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built; build it before quantize_model.")
    tfmot = _tfmot()
    if any(isinstance(layer, tfmot.quantization.keras.QuantizeWrapper) for layer in model.layers):
        raise ValueError(
            f"Model '{model.name}' is already quantization-aware (it holds QuantizeWrapper "
            "layers); quantize_model takes the float model."
        )
    require_float32_model(model, "quantize_model", "TF-MOT simulates int8 from float32")


def _lean_model(model):
    """The model to quantize: a fixed search model becomes its lean model."""
    if any(isinstance(layer, MetaPoolingBlock) for layer in model.layers):
        # Raises a ValueError naming the unfixed points, if any.
        return to_fixed_model(model)
    return model


def _unsupported_layers(model, registry):
    unsupported = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            unsupported.append(f"{layer.name} (a nested model)")
        elif transform_for(layer) is not None:
            continue  # the scheme's table decides it
        elif type(layer) is keras.layers.BatchNormalization:
            continue  # folded by TF-MOT after a convolution, else our twin
        elif not registry.supports(layer):
            unsupported.append(f"{layer.name} ({type(layer).__name__})")
    return unsupported


def _copy_float_weights(source, twin):
    """Copies ``source``'s weights into its quantized ``twin``, matched by name."""
    targets = {weight_path(twin, variable): variable for variable in twin.weights}
    for variable in source.weights:
        path = weight_path(source, variable)
        if path not in targets:
            raise RuntimeError(
                f"Quantized twin of '{source.name}' has no weight '{path}' "
                f"(it has {sorted(targets)})."
            )
        targets[path].assign(variable)


def _set_weight_ranges_from_weights(qat_model):
    """Sets TF-MOT's weight-quantizer ranges from the weights they quantize.

    TF-MOT sets them only on a training step (to [-6, 6] until then), so a
    fresh QAT model would quantize every kernel to almost nothing before its
    first step; with the ranges of the current weights it predicts like the
    int8 model from the start.
    """
    tfmot = _tfmot()
    for layer in qat_model.layers:
        if not isinstance(layer, tfmot.quantization.keras.QuantizeWrapper):
            continue
        for weight, quantizer, variables in _internals.weight_quantizers(layer):
            if not isinstance(quantizer, tfmot.quantization.keras.quantizers.LastValueQuantizer):
                continue
            if not variables or "min_var" not in variables:
                continue
            values = weight.numpy()
            if quantizer.per_axis:
                axes = tuple(range(values.ndim - 1))
                low, high = values.min(axis=axes), values.max(axis=axes)
            else:
                low, high = values.min(), values.max()
            if quantizer.symmetric:
                bound = np.maximum(np.abs(low), np.abs(high))
                low, high = -bound, bound
            else:  # TFLite ranges always hold 0
                low, high = np.minimum(low, 0.0), np.maximum(high, 0.0)
            variables["min_var"].assign(low.reshape(variables["min_var"].shape))
            variables["max_var"].assign(high.reshape(variables["max_var"].shape))


def _fix_input_range(qat_model, input_range):
    """Replaces TF-MOT's input quantizer by a fixed ``input_range``.

    TF-MOT's input ``QuantizeLayer`` starts from an empty range (every input
    quantizes to 0 until the first training step) and widens it to all values
    seen. Fixed, the range can be chosen to put the inputs on the grid: see
    ``MOBILENET_INPUT_RANGE``.
    """
    low, high = input_range
    quantizer = FixedRangeQuantizer(low, high)
    for layer in _internals.input_quantize_layers(qat_model):
        variables = layer.quantizer_vars
        variables["min_var"].assign(low)
        variables["max_var"].assign(high)
        layer.quantizer = quantizer


@contextlib.contextmanager
def _activation_ranges_from_batches(qat_model):
    """While active, ``qat_model``'s moving-average quantizers calibrate instead.

    Every call (training or not) records the batch's min and max (0 always
    included, as TFLite requires) and sets the range variables to their mean
    over the batches seen so far: where TF-MOT's moving average (decay 0.999)
    would arrive after thousands of steps, in a few batches. Only this
    model's quantizers change, and only inside the ``with`` block: TF-MOT's
    (through ``_internals``) and those of keras_metapool's twin layers.
    """
    statistics = RangeStatistics()

    def record(inputs, weights):
        min_var, max_var = weights["min_var"], weights["max_var"]
        low, high = statistics.record(
            min_var.ref(), min_var.name, tf.reduce_min(inputs), tf.reduce_max(inputs)
        )
        min_var.assign(low)
        max_var.assign(high)

    twin_points = [
        point
        for layer in qat_model.layers
        for point in fake_quant_points(getattr(layer, "layer", layer))
        if point.fixed_range is None
    ]
    with _internals.moving_average_quantizers_replaced(qat_model, twin_points, record):
        yield statistics


def calibrate_activation_ranges(
    qat_model, representative_data, num_samples=DEFAULT_CALIBRATION_SAMPLES, batch_size=32
):
    """Sets the activation ranges of a QAT model from data, as post-training calibration does.

    TF-MOT starts every activation range at [-6, 6] and moves it by a moving
    average with decay 0.999 per training step, so a short QAT run (a few
    hundred steps) trains and converts with ranges that are mostly still the
    initial ones: coarse steps for small activations, clipping for large ones.
    This sets each range (TF-MOT's and those of keras_metapool's quantized
    layers) to the mean over batches of the batch min/max, running the model
    in inference mode (BatchNormalization uses its moving statistics, which
    it does not update). Training continues from these ranges.

    Args:
        qat_model: A model from ``quantize_model``.
        representative_data: Images preprocessed as the model's input: a NumPy
            array ``(N, H, W, C)``, a ``tf.data.Dataset`` of images or
            ``(images, labels)``, or an iterable of batches (as ``to_tflite``'s
            ``representative_data``).
        num_samples: Images used, at most (default 128).
        batch_size: Images per forward pass.

    Returns:
        ``qat_model``, calibrated in place.
    """
    input_shape = tuple(qat_model.inputs[0].shape[1:])
    samples = calibration_samples(representative_data, input_shape, num_samples)
    images = np.concatenate(samples)
    with _activation_ranges_from_batches(qat_model) as statistics:
        for start in range(0, len(images), batch_size):
            qat_model(images[start : start + batch_size], training=False)
    warn_if_collapsed(statistics, qat_model.name, len(images))
    return qat_model


def _forbid_keras_format(qat_model):
    """Makes ``qat_model.save("*.keras")`` fail with a clear message.

    The .keras format does not reload TF-MOT models (tf_keras 2.21, TF-MOT
    0.8.1): the save succeeds and the load fails deep inside deserialization.
    """
    original_save = qat_model.save

    def save(filepath, *args, **kwargs):
        path = str(filepath)
        save_format = kwargs.get("save_format")
        if save_format == "keras" or (save_format is None and path.endswith(".keras")):
            raise ValueError(
                f"Cannot save the quantization-aware model '{qat_model.name}' as '{path}': "
                "the .keras format does not reload TF-MOT models. Save it as .h5 "
                "(model.save('qat.h5')) or as a SavedModel (model.save(dir, "
                "save_format='tf')), and load it inside "
                "keras_metapool.quantization.quantize_scope()."
            )
        return original_save(filepath, *args, **kwargs)

    save.__doc__ = original_save.__doc__
    qat_model.save = save
    return qat_model


def quantize_model(
    model,
    representative_data=None,
    num_calibration_samples=DEFAULT_CALIBRATION_SAMPLES,
    input_range=MOBILENET_INPUT_RANGE,
):
    """TF-MOT quantization-aware training model of a MobileNetV2MP.

    Returns a new model (the input is not modified) that fake-quantizes every
    weight and activation where the int8 TFLite model quantizes them, so that
    training it (an epoch or a few, at a low learning rate, from the trained
    float model) adapts the weights to int8. Convert it with
    ``keras_metapool.export.to_tflite(qat_model, path, mode="int8", ...)``.

    - Standard layers follow TF-MOT's default 8-bit scheme (convolution +
      BatchNormalization folded, per-channel convolution weights).
    - ``SpatialEnhancer`` (SSP), ``HardSwish`` and a BatchNormalization that
      follows no convolution (the post-norm of enhancers) are replaced by
      quantized twins (``keras_metapool.quantization.layers``) that
      fake-quantize every tensor of their int8 form inside the layer.
    - Where TF-MOT's defaults differ from the int8 kernels, the kernels win:
      ``AveragePooling2D`` rounds to its input's grid (as AVERAGE_POOL_2D;
      TF-MOT's own output range would add a QUANTIZE op), and a softmax
      classifier's probabilities are put on the SOFTMAX output grid (1/256)
      outside training, so that the QAT model's top-1 (ties included) is the
      int8 model's. ``keras.layers.Identity`` (in pairs such as
      ``("identity", "ssp")``) is left unquantized: TFLite drops it.
    - A search model (``meta_pooling="search"``) whose points are all fixed is
      first turned into its lean fixed model
      (``keras_metapool.search.to_fixed_model``), so no unused candidate op is
      quantized or exported.
    - The model predicts like its int8 form from the start: weight ranges are
      set from the weights (TF-MOT sets them on the first training step), the
      input range is fixed to ``input_range`` (TF-MOT's quantizes every input
      to 0 until the first step), and with ``representative_data`` the
      activation ranges are calibrated (``calibrate_activation_ranges``);
      without, they start at TF-MOT's [-6, 6] and move by a slow moving
      average during training, which clips the wide products inside SSP and
      hard swish: in a one-epoch QAT run of the "global" ablation (SSP + BN +
      hard swish after every block) that cost 8 accuracy points, calibrated
      it gained 3 (``benchmarks/qat_fidelity.py``). Pass representative data.

    Saving: ``.h5`` or SavedModel (``save_format="tf"``), reloaded inside
    ``quantize_scope()``; ``model.save("*.keras")`` raises an error (the
    format does not reload TF-MOT models).

    TF-MOT is imported when this function or ``quantize_scope`` first runs,
    without its side effect: ``os.environ`` (TF-MOT sets
    ``TF_USE_LEGACY_KERAS``) and what ``tf.keras`` means for the rest of the
    program stay as they were.

    Args:
        model: A float32 functional tf_keras model built by ``MobileNetV2MP``
            (any fixed architecture: "paper", "none", an ``ArchitectureSpec``;
            either head; either placement), or a search model with all points
            fixed.
        representative_data: Training images (``num_calibration_samples``
            of them are used), preprocessed as the model's input, to calibrate the
            activation ranges from: a NumPy array
            ``(N, H, W, C)``, a ``tf.data.Dataset`` of images or ``(images,
            labels)``, or an iterable of batches (as ``to_tflite``'s).
        num_calibration_samples: At most this many images are used (128).
        input_range: Fixed ``(min, max)`` of the input quantization (it
            becomes the int8 model's input scale and zero point). Default
            ``MOBILENET_INPUT_RANGE``, ``(-1, 127/128)``: the range of
            ``keras_metapool.preprocess_input`` on a grid that holds -1
            exactly and no pixel value at a rounding tie.

    Returns:
        The quantization-aware ``tf_keras`` model; its layers are
        ``QuantizeWrapperV2`` (prefix ``quant_``) around the original layers or
        their quantized twins, plus TF-MOT's input ``QuantizeLayer``.

    Raises:
        ValueError: if the model is not a float32 functional tf_keras model,
            is already quantization-aware, holds layers with no quantization
            support (named in the message), is a search model with unfixed
            points (finish the search or derive the architecture first), or
            if ``representative_data`` is unusable.

    Example:
        >>> from keras_metapool.quantization import quantize_model
        >>> qat = quantize_model(model, representative_data=train_images[:256])
        >>> qat.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
        >>> qat.fit(train_images, train_labels, epochs=1)
        >>> keras_metapool.export.to_tflite(qat, "model.tflite", mode="int8",
        ...                                 representative_data=train_images[:128])
    """
    _check_model(model)
    model = _lean_model(model)
    tfmot = _tfmot()
    registry = tfmot.quantization.keras.default_8bit.Default8BitQuantizeRegistry()
    unsupported = _unsupported_layers(model, registry)
    if unsupported:
        raise ValueError(
            f"quantize_model cannot quantize these layers of '{model.name}': "
            f"{', '.join(unsupported)}. Supported: MobileNetV2MP's layers and those of "
            "TF-MOT's default 8-bit registry."
        )

    twins = {}

    def annotate(layer):
        transform = transform_for(layer)  # the scheme's table (quantization/scheme.py)
        if transform is None:  # TF-MOT's default registry; the same object keeps its weights
            return tfmot.quantization.keras.quantize_annotate_layer(layer)
        if transform.twin is not None:
            twin = transform.twin.from_config(layer.get_config())
            twins[layer.name] = twin
            layer = twin
        return tfmot.quantization.keras.quantize_annotate_layer(layer, transform.config())

    with quantize_scope():
        annotated = keras.models.clone_model(model, clone_function=annotate)
        for name, twin in twins.items():
            _copy_float_weights(model.get_layer(name), twin)
        qat_model = tfmot.quantization.keras.quantize_apply(annotated)
    _set_weight_ranges_from_weights(qat_model)
    _fix_input_range(qat_model, input_range)
    if representative_data is not None:
        calibrate_activation_ranges(qat_model, representative_data, num_calibration_samples)
    else:
        logging.warning(NO_CALIBRATION_DATA)
    return _internals.trace_train_step_once(_forbid_keras_format(qat_model))

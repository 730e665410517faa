"""Quantization-aware training in Keras 3 (TensorFlow backend), to a full-int8 TFLite file.

``quantize_model`` rewrites a fixed float Keras 3 model, layer by layer as
``TRANSFORMS`` declares, into one that simulates the int8 model while it
trains; ``keras_metapool.export.to_tflite`` converts it (``int8``, ``uint8``,
``edgetpu``) with the checks of the tf_keras route. The int8 semantics are
those of ``keras_metapool.quantization.quantize_model`` (TF-MOT's default
8-bit scheme plus keras_metapool's twins), written with Keras 3's own
``keras.quantizers.fake_quant_with_min_max_vars``; no tf_keras and no TF-MOT
are imported.
"""

import dataclasses
from typing import Callable

import keras
import numpy as np
from absl import logging

from keras_metapool._calibration import NO_CALIBRATION_DATA, RangeStatistics, warn_if_collapsed
from keras_metapool._int8_facts import MOBILENET_INPUT_RANGE
from keras_metapool._model_checks import require_float32_model, require_tensorflow_backend
from keras_metapool.data.samples import DEFAULT_CALIBRATION_SAMPLES, calibration_samples
from keras_metapool.keras3 import qat_layers
from keras_metapool.keras3.layers import HardSwish, SpatialEnhancer
from keras_metapool.keras3.tracing import trace_train_step_once

#: What follows a layer's output in the QAT model (``Transform.output``).
TRACKED = "a moving-average range"  # an ActivationQuantizer after the layer
FOLDED = "none: the converter fuses it into the next op"  # Conv -> BN, BN -> ReLU
INSIDE = "inside the twin"  # the twin quantizes its own output
INPUT_GRID = "its input's grid"  # AVERAGE_POOL_2D keeps its input's scale
UNCHANGED = "none: values of its input"  # padding, max pooling, dropout, reshaping

_FOLDING = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


@dataclasses.dataclass
class Place:
    """A layer of the float model with its neighbours.

    Attributes:
        layer: The layer.
        consumers: The ``Place`` of each layer that reads its output.
        producers: The ``Place`` of each layer whose output it reads.
    """

    layer: object
    consumers: list = dataclasses.field(default_factory=list)
    producers: list = dataclasses.field(default_factory=list)


def _of_type(*classes):
    return lambda place: type(place.layer) in classes


def _activation(layer):
    return keras.activations.serialize(layer.activation)


def _only_consumer_is(place, cls):
    return len(place.consumers) == 1 and type(place.consumers[0].layer) is cls


def _convolution_before_batch_norm(place):
    """A linear convolution read only by a BatchNormalization (the converter folds it in)."""
    return (
        type(place.layer) in _FOLDING
        and _activation(place.layer) == "linear"
        and _only_consumer_is(place, keras.layers.BatchNormalization)
    )


def _batch_norm_after_convolution(place):
    return type(place.layer) is keras.layers.BatchNormalization and any(
        _convolution_before_batch_norm(producer) for producer in place.producers
    )


@dataclasses.dataclass(frozen=True)
class Transform:
    """One row of the Keras 3 QAT scheme.

    Attributes:
        name: What the row matches, for messages and docs.
        matches: ``Place -> bool``.
        twin: The class that replaces the layer (its config, its weights),
            or None to keep the layer's class.
        output: What follows its output (``TRACKED``, ``FOLDED``, ...).
    """

    name: str
    matches: Callable
    twin: type
    output: str


#: Read top to bottom; the first row that matches a layer decides it. A layer no
#: row matches is refused (``quantize_model`` names it).
TRANSFORMS = (
    Transform("SpatialEnhancer (SSP)", _of_type(SpatialEnhancer),
              qat_layers.QuantizedSpatialEnhancer, INSIDE),
    Transform("HardSwish", _of_type(HardSwish), qat_layers.QuantizedHardSwish, INSIDE),
    Transform("BatchNormalization after a convolution, before a ReLU",
              lambda place: _batch_norm_after_convolution(place)
              and _only_consumer_is(place, keras.layers.ReLU),
              None, FOLDED),
    Transform("BatchNormalization after a convolution", _batch_norm_after_convolution, None,
              TRACKED),
    Transform("BatchNormalization nothing folds", _of_type(keras.layers.BatchNormalization),
              qat_layers.QuantizedBatchNormalization, INSIDE),
    Transform("Conv2D before its BatchNormalization",
              lambda place: type(place.layer) is keras.layers.Conv2D
              and _convolution_before_batch_norm(place),
              qat_layers.QuantizedConv2D, FOLDED),
    Transform("Conv2D", _of_type(keras.layers.Conv2D), qat_layers.QuantizedConv2D, TRACKED),
    Transform("DepthwiseConv2D before its BatchNormalization",
              lambda place: type(place.layer) is keras.layers.DepthwiseConv2D
              and _convolution_before_batch_norm(place),
              qat_layers.QuantizedDepthwiseConv2D, FOLDED),
    Transform("DepthwiseConv2D", _of_type(keras.layers.DepthwiseConv2D),
              qat_layers.QuantizedDepthwiseConv2D, TRACKED),
    Transform("Dense with softmax (the classifier)",
              lambda place: type(place.layer) is keras.layers.Dense
              and _activation(place.layer) == "softmax",
              qat_layers.QuantizedDense, INSIDE),
    Transform("Dense, linear",
              lambda place: type(place.layer) is keras.layers.Dense
              and _activation(place.layer) == "linear",
              qat_layers.QuantizedDense, TRACKED),
    Transform("ReLU, Add, GlobalAveragePooling2D",
              _of_type(keras.layers.ReLU, keras.layers.Add, keras.layers.GlobalAveragePooling2D),
              None, TRACKED),
    Transform("AveragePooling2D", _of_type(keras.layers.AveragePooling2D), None, INPUT_GRID),
    Transform("ZeroPadding2D, MaxPooling2D, Dropout, Flatten, Reshape, Identity",
              _of_type(keras.layers.ZeroPadding2D, keras.layers.MaxPooling2D,
                       keras.layers.Dropout, keras.layers.Flatten, keras.layers.Reshape,
                       keras.layers.Identity),
              None, UNCHANGED),
)  # fmt: skip


def transform_for(place):
    """The first row of ``TRANSFORMS`` that matches ``place``, or None (not supported)."""
    return next((row for row in TRANSFORMS if row.matches(place)), None)


def _history_names(structure):
    """Names of the layers whose outputs a node config reads (``keras_history``)."""
    if isinstance(structure, dict):
        if "keras_history" in structure:
            return [structure["keras_history"][0]]
        return [name for value in structure.values() for name in _history_names(value)]
    if isinstance(structure, (list, tuple)):
        return [name for value in structure for name in _history_names(value)]
    return []


def places(model):
    """``{layer name: Place}`` of ``model``'s graph (read from its functional config)."""
    found = {layer.name: Place(layer) for layer in model.layers}
    for entry in model.get_config()["layers"]:
        place = found[entry["config"]["name"]]
        for source in dict.fromkeys(_history_names(entry.get("inbound_nodes", []))):
            found[source].consumers.append(place)
            place.producers.append(found[source])
    return found


def _check_model(model):
    if not isinstance(model, keras.Model) or type(model).__module__.startswith("tf_keras"):
        raise ValueError(
            "keras_metapool.keras3.quantize_model takes a Keras 3 model (keras.Model); got "
            f"{type(model).__module__}.{type(model).__name__}. A tf_keras model is quantized "
            "with keras_metapool.quantize_model (TF-MOT), or converted first with "
            "keras_metapool.keras3.to_keras3."
        )
    if isinstance(model, keras.Sequential):
        raise ValueError(
            f"keras_metapool.keras3.quantize_model takes functional models; '{model.name}' is "
            "a Sequential model. Rebuild it functionally from its layers: x = inputs = "
            "keras.Input(shape); for layer in model.layers: x = layer(x); then "
            "keras.Model(inputs, x)."
        )
    try:
        config = model.get_config()
    except NotImplementedError:
        config = None
    if not config or "layers" not in config:
        raise ValueError(
            f"keras_metapool.keras3.quantize_model expects a functional Keras 3 model (as "
            f"keras.applications and keras_metapool.keras3.MobileNetV2MP build); "
            f"'{model.name}' is a subclassed model."
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"keras_metapool.keras3.quantize_model takes one image input and one output; "
            f"'{model.name}' has {len(model.inputs)} inputs and {len(model.outputs)} outputs."
        )
    require_float32_model(
        model, "keras_metapool.keras3.quantize_model", "int8 is simulated from float32"
    )
    for layer in model.layers:
        if type(layer).__name__ in qat_layers.QAT_LAYERS:
            raise ValueError(
                f"Model '{model.name}' is already quantization-aware (layer '{layer.name}' is "
                f"{type(layer).__name__}); quantize_model takes the float model."
            )
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise ValueError(
                f"Layer '{layer.name}' is {layer.data_format}; TFLite and the Edge TPU run "
                "channels_last models."
            )


def _copy_float_weights(source, target):
    """Copies ``source``'s weights into ``target`` (same name), matched by variable path."""
    targets = {variable.path: variable for variable in target.weights}
    for variable in source.weights:
        if variable.path not in targets:
            raise RuntimeError(
                f"The QAT layer '{target.name}' has no weight '{variable.path}' "
                f"(it has {sorted(targets)})."
            )
        targets[variable.path].assign(variable.value)


def quantize_model(
    model,
    representative_data=None,
    num_calibration_samples=DEFAULT_CALIBRATION_SAMPLES,
    input_range=MOBILENET_INPUT_RANGE,
):
    """Keras 3 quantization-aware training model: trains with ``fit``, simulates int8.

    Returns a new Keras 3 model (``model`` is not modified) in which every
    weight and activation is fake-quantized where the int8 TFLite model
    quantizes it, as ``keras_metapool.quantize_model`` (tf_keras, TF-MOT) does:

    - convolution weights per output channel and ``Dense`` weights per tensor,
      from the weights' own ranges (``qat_layers.fake_quant_weights``);
    - activations per tensor, after each op the converter keeps: a
      convolution's BatchNormalization and ReLU are folded into it, so its
      range follows the ReLU; ``ZeroPadding2D``, ``MaxPooling2D``,
      ``Dropout``, ``Flatten`` and ``Reshape`` keep their input's values,
      ``AveragePooling2D`` rounds to its input's grid;
    - SSP, hard swish and a BatchNormalization no convolution folds become
      twins that quantize every tensor of their int8 form
      (``keras_metapool.keras3.qat_layers``); hard swish stays ADD + MUL + MUL
      (the Edge TPU has no HARD_SWISH);
    - a softmax classifier's probabilities sit on the SOFTMAX grid (1/256)
      outside training, so the model's top-1 is the int8 file's;
    - the input is quantized on ``input_range``.

    Each layer's fate is a row of ``TRANSFORMS``. With ``representative_data``
    the activation ranges are calibrated (``calibrate_activation_ranges``);
    without, they start at [-6, 6] and move by a slow moving average (decay
    0.999) while training: pass data. Train a few hundred steps at a low
    learning rate (1e-4 with Adam), then
    ``keras_metapool.export.to_tflite(qat, path, mode="edgetpu", representative_data=...)``.

    The model saves as ``.keras`` and reloads in safe mode in a process that
    imported ``keras_metapool.keras3`` (which registers the layers), ranges
    included.

    Args:
        model: A fixed float32 functional Keras 3 model with channels-last
            layers: ``keras_metapool.keras3.MobileNetV2MP(...)`` (``"paper"``,
            ``"none"``, any fixed spec, either head), ``to_keras3`` of a tf_keras
            MobileNetV2MP, or ``keras.applications.MobileNetV2``.
        representative_data: Training images preprocessed as the model's input
            (a NumPy array ``(N, H, W, C)``, a ``tf.data.Dataset`` of images or
            ``(images, labels)``, or an iterable of batches), to calibrate the
            activation ranges from.
        num_calibration_samples: At most this many images are used (128).
        input_range: Fixed ``(min, max)`` of the input quantization (the int8
            file's input scale and zero point). Default
            ``MOBILENET_INPUT_RANGE``, ``(-1, 127/128)``: MobileNetV2's [-1, 1]
            on a grid that holds -1 exactly and no pixel value at a rounding tie.

    Returns:
        The quantization-aware Keras 3 model (the float layers' names;
        ``<name>_quant`` for each ``ActivationQuantizer``).

    Raises:
        ValueError: on a backend other than TensorFlow; for a model that is
            not a float32 functional Keras 3 model with one input and one
            output (a Sequential model included), that is already
            quantization-aware, or that holds a layer no row of ``TRANSFORMS``
            supports (named in the message).

    Example:
        >>> from keras_metapool import keras3
        >>> qat = keras3.quantize_model(model, representative_data=images[:256])
        >>> qat.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
        >>> qat.fit(images, labels, epochs=1)                       # doctest: +SKIP
        >>> keras_metapool.export.to_tflite(qat, "model_edgetpu.tflite", mode="edgetpu",
        ...                                 representative_data=images[:128])  # doctest: +SKIP
    """
    require_tensorflow_backend("keras_metapool.keras3.quantize_model")
    _check_model(model)
    graph = places(model)
    rows, unsupported = {}, []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        row = transform_for(graph[layer.name])
        if row is None:
            unsupported.append(f"'{layer.name}' ({type(layer).__name__})")
        rows[layer.name] = row
    if unsupported:
        raise ValueError(
            f"keras_metapool.keras3.quantize_model cannot quantize these layers of "
            f"'{model.name}': {', '.join(unsupported)}. Supported: "
            f"{'; '.join(row.name for row in TRANSFORMS)} (keras_metapool.keras3.qat.TRANSFORMS)."
        )

    (model_input,) = model.inputs
    (input_layer,) = [layer for layer in model.layers if isinstance(layer, keras.layers.InputLayer)]
    grids = {}  # id(tensor) -> the ActivationQuantizer whose grid it is on
    quantized_input = {}

    def clone(layer):
        row = rows[layer.name]
        return (row.twin or type(layer)).from_config(layer.get_config())

    def call(layer, *args, **kwargs):
        def on_grid(tensor):
            if id(tensor) in quantized_input:
                return quantized_input[id(tensor)]
            if tensor.name == model_input.name and id(tensor) not in grids:
                quantizer = qat_layers.ActivationQuantizer(
                    fixed_range=input_range, name=f"{input_layer.name}_quant"
                )
                quantized = quantizer(tensor)
                grids[id(quantized)] = quantizer
                quantized_input[id(tensor)] = quantized
                return quantized
            return tensor

        args = keras.tree.map_structure(
            lambda x: on_grid(x) if isinstance(x, keras.KerasTensor) else x, args
        )
        output = layer(*args, **kwargs)
        row = rows[layer.name]
        inputs = [x for x in keras.tree.flatten(args) if isinstance(x, keras.KerasTensor)]
        if row.output == TRACKED:
            quantizer = qat_layers.ActivationQuantizer(name=f"{layer.name}_quant")
            output = quantizer(output)
            grids[id(output)] = quantizer
        elif row.output == INPUT_GRID and len(inputs) == 1 and id(inputs[0]) in grids:
            quantizer = grids[id(inputs[0])]
            output = quantizer(output, update=False)
            grids[id(output)] = quantizer
        elif row.output == UNCHANGED and len(inputs) == 1 and id(inputs[0]) in grids:
            grids[id(output)] = grids[id(inputs[0])]
        return output

    qat_model = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for layer in model.layers:
        if not isinstance(layer, keras.layers.InputLayer):
            _copy_float_weights(layer, qat_model.get_layer(layer.name))
    if representative_data is not None:
        calibrate_activation_ranges(qat_model, representative_data, num_calibration_samples)
    else:
        logging.warning(NO_CALIBRATION_DATA)
    return trace_train_step_once(qat_model)


def _range_layers(qat_model):
    return [layer for layer in qat_model.layers if isinstance(layer, qat_layers.RangeTracking)]


def calibrate_activation_ranges(
    qat_model, representative_data, num_samples=DEFAULT_CALIBRATION_SAMPLES, batch_size=32
):
    """Sets a Keras 3 QAT model's activation ranges from data (mean batch min/max).

    As ``keras_metapool.quantization.calibrate_activation_ranges``: the model
    runs in inference mode (BatchNormalization on its moving statistics) on
    up to ``num_samples`` images, and every moving-average range is set to
    the mean over batches of the batch min/max (0 included). Training goes on
    from there.

    Args:
        qat_model: A model from ``keras_metapool.keras3.quantize_model``.
        representative_data: Images preprocessed as the model's input (as
            ``quantize_model``'s).
        num_samples: Images used, at most (default 128).
        batch_size: Images per forward pass.

    Returns:
        ``qat_model``, calibrated in place.

    Raises:
        ValueError: if ``representative_data`` is unusable (wrong shape or
            empty).
    """
    input_shape = tuple(qat_model.inputs[0].shape[1:])
    images = np.concatenate(calibration_samples(representative_data, input_shape, num_samples))
    statistics = RangeStatistics()
    layers = _range_layers(qat_model)
    for layer in layers:
        object.__setattr__(layer, "_calibration", statistics)
    try:
        for start in range(0, len(images), batch_size):
            qat_model(images[start : start + batch_size], training=False)
    finally:
        for layer in layers:
            object.__setattr__(layer, "_calibration", None)
    warn_if_collapsed(statistics, qat_model.name, len(images))
    return qat_model


__all__ = [
    "Place",
    "places",
    "FOLDED",
    "INPUT_GRID",
    "INSIDE",
    "TRACKED",
    "TRANSFORMS",
    "UNCHANGED",
    "Transform",
    "calibrate_activation_ranges",
    "quantize_model",
    "transform_for",
]

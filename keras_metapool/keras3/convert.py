"""tf_keras MobileNetV2MP -> Keras 3 model with the same predictions.

The Keras 3 model is rebuilt layer for layer from the tf_keras model's graph:
standard layers from their configs (``Conv2D``, ``BatchNormalization``, ...),
the package's own layers as their Keras 3 versions
(``keras_metapool.keras3.layers``), the same layer names, then the weights
copied layer by layer. One builder (``keras_metapool.MobileNetV2MP``, one block
table, one ``ArchitectureSpec``) therefore drives both flavours.
"""

import keras

from keras_metapool._keras import keras as tf_keras
from keras_metapool._keras import require_tf_keras_model
from keras_metapool.keras3.layers import LAYERS
from keras_metapool.keras3.tracing import trace_train_step_once

# Config keys tf_keras writes that Keras 3's constructors do not take.
_TF_KERAS_ONLY_KEYS = ("batch_input_shape", "fused", "renorm", "renorm_clipping",
                       "renorm_momentum", "virtual_batch_size", "adjustment")  # fmt: skip
_DEPTHWISE_TF_KERAS_ONLY_KEYS = ("filters", "groups", "kernel_initializer",
                                 "kernel_regularizer", "kernel_constraint")  # fmt: skip


def _unsupported(layer):
    name = type(layer).__name__
    if name == "MetaPoolingBlock":
        return (
            f"layer '{layer.name}' is a searchable MetaPoolingBlock: only fixed models convert. "
            "Derive the searched model first: keras_metapool.to_fixed_model(model) (after "
            "the search), or build a fixed one: MobileNetV2MP(meta_pooling='paper' / 'none' "
            "/ an ArchitectureSpec)."
        )
    if name.startswith("Quantize") or name.startswith("Quantized"):
        return (
            f"layer '{layer.name}' ({name}) belongs to a tf_keras QAT model, whose int8 "
            "model is the .tflite from keras_metapool.export.to_tflite. Convert the float "
            "model the QAT model came from; Keras 3 QAT is "
            "keras_metapool.keras3.quantize_model."
        )
    return None


def _keras3_layer(layer):
    """The Keras 3 twin of one tf_keras layer (unbuilt), from its config."""
    name = type(layer).__name__
    config = dict(layer.get_config())
    config["dtype"] = layer.dtype_policy.name  # tf_keras writes a policy object or a string
    for key in _TF_KERAS_ONLY_KEYS:
        config.pop(key, None)
    if name in LAYERS:
        return LAYERS[name].from_config(config)
    if name == "DepthwiseConv2D":
        for key in _DEPTHWISE_TF_KERAS_ONLY_KEYS:
            config.pop(key, None)
    if name == "BatchNormalization" and isinstance(config.get("axis"), (list, tuple)):
        (config["axis"],) = config["axis"]
    cls = getattr(keras.layers, name, None)
    if cls is None:
        raise ValueError(
            f"to_keras3 cannot convert layer '{layer.name}' ({type(layer).__module__}.{name}): "
            "it converts MobileNetV2MP models (keras.applications layers, SpatialEnhancer, "
            "HardSwish, pooling enhancers)."
        )
    return cls.from_config(config)


def _copy_weights(source, target):
    """Copies ``source``'s weights into its twin, sublayer by sublayer for ours."""
    if type(source).__name__ == "SpatialEnhancer":
        for part in ("reduce", "reduce_bn", "gate_h", "gate_w"):
            getattr(target, part).set_weights(getattr(source, part).get_weights())
        return
    values = source.get_weights()
    if len(values) != len(target.weights):
        raise AssertionError(f"{source.name}: {len(values)} weights vs {len(target.weights)}")
    target.set_weights(values)


def to_keras3(model, name=None):
    """A Keras 3 model that computes what a fixed float tf_keras MobileNetV2MP computes.

    The graph is rebuilt in Keras 3, layer for layer and with the same layer
    names, from Keras 3 layers: keras' own for the MobileNetV2 layers and the
    pooling enhancers, ``keras_metapool.keras3.layers`` for SSP and hard
    swish. Weights (BN statistics included) are copied. The result trains,
    predicts and saves as any Keras 3 model, on any backend: its ``.keras``
    file reloads in safe mode in a process that imported
    ``keras_metapool.keras3`` (which registers the two layers), and
    ``model.export(path, format="litert")`` writes a float TFLite file.

    Args:
        model: A tf_keras MobileNetV2MP with fixed enhancers (``"paper"``,
            ``"none"``, any ``ArchitectureSpec``, or ``to_fixed_model`` of a
            searched supernet); float, not QAT.
        name: Name of the Keras 3 model (default: the tf_keras model's).

    Returns:
        A ``keras.Model`` (Keras 3).

    Raises:
        ValueError: for a Keras 3 model, a search supernet (derive it first
            with ``keras_metapool.to_fixed_model``), a QAT model (convert the
            float one), or a layer the converter does not know.

    Example:
        >>> import keras_metapool
        >>> from keras_metapool.keras3 import to_keras3
        >>> tf_model = keras_metapool.MobileNetV2MP(weights=None, meta_pooling="paper")
        >>> k3_model = to_keras3(tf_model)  # doctest: +SKIP
    """
    require_tf_keras_model(model, "to_keras3")
    for layer in model.layers:
        problem = _unsupported(layer)
        if problem:
            raise ValueError(f"to_keras3: {problem}")
    config = model.get_config()
    if len(config["input_layers"]) != 1 or len(config["output_layers"]) != 1:
        raise ValueError("to_keras3 converts single-input, single-output models.")
    layers = {layer.name: layer for layer in model.layers}
    tensors, twins = {}, {}
    for entry in config["layers"]:
        layer = layers[entry["config"]["name"]]
        if isinstance(layer, tf_keras.layers.InputLayer):
            tensors[layer.name] = keras.Input(
                shape=tuple(model.inputs[0].shape[1:]), name=layer.name
            )
            continue
        nodes = entry["inbound_nodes"]
        if len(nodes) != 1:
            raise ValueError(f"to_keras3: layer '{layer.name}' is used {len(nodes)} times.")
        inbound = [tensors[item[0]] for item in nodes[0]]
        twins[layer.name] = _keras3_layer(layer)
        tensors[layer.name] = twins[layer.name](inbound if len(inbound) > 1 else inbound[0])
        _copy_weights(layer, twins[layer.name])
    (output,) = config["output_layers"]
    (source,) = config["input_layers"]
    converted = keras.Model(tensors[source[0]], tensors[output[0]], name=name or model.name)
    return trace_train_step_once(converted)

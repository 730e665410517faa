"""Every use of TF-MOT's, tf_keras' and the TFLite converter's non-public API.

keras_metapool otherwise uses public API only. Each function below names the
private attribute or class it reads, why the public API does not do, and the
versions it was verified on (TF 2.21, tf_keras 2.21, TF-MOT 0.8.1). When one
of those libraries changes, this module (and its tests, which exercise every
function through the layers, ``quantize_model``, ``to_tflite`` and
``PMPLCallback``) is where to look.

Nothing here patches a class or the process: TF-MOT's calibration hook swaps
the quantizer objects of one model for the length of a ``with`` block.

Two subclasses stay with their own modules, because they are class
definitions and not accesses: ``keras_metapool._keras.Functional`` subclasses
tf_keras' unexported ``Functional`` (``tf_keras.src.engine.functional``, so
the builder's models stay functional) and answers Keras 3's
``_keras_history`` probe (the Keras 3 nesting error);
``keras_metapool.cli.training_loop.AtomicModelCheckpoint`` overrides
``ModelCheckpoint._save_handler`` (files appear whole). ``quantize_model``
overrides ``save`` on the one model it returns (a clear error for
``.keras``), through the public method, and ``make_train_function`` (see
``trace_train_step_once``), per instance.
"""

import contextlib
import os
import sys
import warnings

import tensorflow as tf

#: The variable TF-MOT sets on import (``tensorflow_model_optimization``'s
#: ``compat.py``), which decides what ``tf.keras`` resolves to.
_LEGACY_KERAS_VARIABLE = "TF_USE_LEGACY_KERAS"


# -- TF-MOT ---------------------------------------------------------------
def import_tfmot():
    """TF-MOT, imported without changing ``tf.keras`` or ``os.environ`` for the program.

    TF-MOT's import sets ``TF_USE_LEGACY_KERAS=1`` and reads ``tf.keras``,
    which would resolve it to Keras 2 for the rest of the process (or not,
    had the program used it first). ``tf.keras`` is resolved first, under
    the program's own setting, and the variable is put back after; TF-MOT
    itself uses ``tf_keras`` either way.
    """
    if "tensorflow_model_optimization" not in sys.modules:
        before = os.environ.get(_LEGACY_KERAS_VARIABLE)
        getattr(tf.keras, "__name__", None)  # tf.keras is lazy: resolve it now
        try:
            import tensorflow_model_optimization  # noqa: F401
        finally:
            if before is None:
                os.environ.pop(_LEGACY_KERAS_VARIABLE, None)
            else:
                os.environ[_LEGACY_KERAS_VARIABLE] = before
    import tensorflow_model_optimization as tfmot

    return tfmot


def weight_quantizers(wrapper):
    """``(weight, quantizer, range variables)`` of a ``QuantizeWrapper``'s weights.

    Private: ``QuantizeWrapper._weight_vars``. TF-MOT sets weight ranges only
    on a training step; ``quantize_model`` sets them from the weights at once.
    """
    return list(getattr(wrapper, "_weight_vars", []))


def output_range_variables(wrapper):
    """The ``{"min_var", "max_var"}`` of a ``QuantizeWrapper``'s output quantizer, or None.

    Private: ``QuantizeWrapper._output_quantizer_vars``. Average pooling's
    quantizer reuses the range of the tensor it pools (``InputGridQuantizer``).
    """
    variables = getattr(wrapper, "_output_quantizer_vars", None)
    return variables if variables and "min_var" in variables else None


def input_quantize_layers(model):
    """TF-MOT's input ``QuantizeLayer``s of a QAT model that quantize.

    Private: the class is not exported (matched by name); its ``quantizer``
    and ``quantizer_vars`` are swapped/set to fix the input range.
    """
    return [
        layer
        for layer in model.layers
        if type(layer).__name__ == "QuantizeLayer" and getattr(layer, "quantizer", None)
    ]


def _moving_average_sites(model):
    """``(holder, key)`` pairs where TF-MOT keeps ``model``'s ``MovingAverageQuantizer``s.

    ``holder[key]`` (a list) or ``getattr(holder, key)`` is the quantizer.
    Private: ``QuantizeWrapper._quantize_activations`` (each a
    ``QuantizeAwareActivation`` with ``.quantizer``) and
    ``QuantizeWrapper._output_quantizers``.
    """
    moving_average = import_tfmot().quantization.keras.quantizers.MovingAverageQuantizer
    sites = []
    for layer in model.layers:
        for activation in getattr(layer, "_quantize_activations", []):
            if isinstance(getattr(activation, "quantizer", None), moving_average):
                sites.append((activation, "quantizer"))
        outputs = getattr(layer, "_output_quantizers", None) or []
        sites += [(outputs, i) for i, q in enumerate(outputs) if isinstance(q, moving_average)]
    return sites


class _CalibratingQuantizer:
    """Stands in for one quantizer: ``record``s its input, then quantizes for inference."""

    def __init__(self, quantizer, record):
        self.quantizer = quantizer
        self.record = record

    def __call__(self, inputs, training, weights, **kwargs):
        self.record(inputs, weights)
        return self.quantizer(inputs, False, weights, **kwargs)


@contextlib.contextmanager
def moving_average_quantizers_replaced(model, holders, record):
    """While active, ``model``'s moving-average quantizers call ``record`` first.

    Every call of one of ``model``'s TF-MOT ``MovingAverageQuantizer``s, or
    of the ``.quantizer`` of one of ``holders`` (keras_metapool's twin layers'
    fake-quant points), and of nothing else in the process, runs
    ``record(inputs, range_variables)`` and then quantizes in inference mode
    (``calibrate_activation_ranges``). Calls must be eager: a traced function
    keeps the quantizers it saw.
    """
    sites = _moving_average_sites(model) + [(holder, "quantizer") for holder in holders]

    def get(holder, key):
        return holder[key] if isinstance(holder, list) else getattr(holder, key)

    def put(holder, key, value):
        if isinstance(holder, list):
            holder[key] = value
        else:
            setattr(holder, key, value)

    originals = [get(holder, key) for holder, key in sites]
    for (holder, key), quantizer in zip(sites, originals):
        put(holder, key, _CalibratingQuantizer(quantizer, record))
    try:
        yield
    finally:
        for (holder, key), quantizer in zip(sites, originals):
            put(holder, key, quantizer)


# -- tf_keras -------------------------------------------------------------
def attach_checkpoint_dependency(model, name, trackable):
    """Makes ``trackable`` a checkpoint dependency of ``model``, not one of its weights.

    Private: ``Trackable._track_trackable``. Assigned as an attribute, a
    ``tf.Module`` is tracked by Keras too, and its variables join
    ``model.weights`` (``get_weights``/``set_weights``, ``count_params``).
    Tracked this way it is saved and restored by ``tf.train.Checkpoint``,
    ``save_weights`` (TF format) and ``BackupAndRestore`` under the same
    name, restored on attachment if the restore came first, and stays out of
    the weights. The attribute is set past Keras' ``__setattr__``.
    """
    model._track_trackable(trackable, name=name, overwrite=True)
    object.__setattr__(model, name, trackable)


def inbound_layers(layer):
    """The layers feeding ``layer``, one list per call of it (node).

    Private: ``Layer._inbound_nodes``. Needed to tell a BatchNormalization
    that TF-MOT folds into its convolution from one it cannot fold, and to
    find the quantizer upstream of an average pooling.
    """
    layers = []
    for node in getattr(layer, "_inbound_nodes", ()):
        upstream = node.inbound_layers
        layers.append(list(upstream) if isinstance(upstream, (list, tuple)) else [upstream])
    return layers


def is_graph_network(model):
    """Whether ``model`` is functional (not subclassed). Private: ``_is_graph_network``."""
    return bool(getattr(model, "_is_graph_network", False))


def build_training_variables(model, element_spec):
    """Creates the variables fit's first step would create, so fit traces its step once.

    ``tf.function`` traces a function twice when its first trace creates
    variables (once creating them, once more without), and fit's first step
    creates the optimizer's slots and the compiled metrics' totals: a
    supernet's step took ~18 s to trace twice, ~10 s once (tf_keras 2.21).
    Private: ``compiled_loss.build`` and ``compiled_metrics.build`` (what
    Keras' train step calls on its first batch), given zeros shaped like the
    model's output and ``element_spec``'s targets; ``optimizer.build`` (what
    ``apply_gradients`` calls) over the trainable variables, as the train
    step passes them.

    Returns whether it built. It leaves fit to do it (two traces, the same
    result) where it cannot tell what fit would build: no targets in
    ``element_spec``, a model that is not functional, an optimizer of the
    legacy API, or a ``tf.distribute`` strategy (variables made per replica).
    """
    specs = tf.nest.flatten(element_spec)
    if not specs or not all(isinstance(spec, tf.TensorSpec) for spec in specs):
        return False
    if not isinstance(element_spec, tuple) or len(element_spec) < 2 or element_spec[1] is None:
        return False  # images only: fit has no targets to build metrics for
    from keras_metapool._keras import keras

    optimizer = model.optimizer
    if (
        tf.distribute.has_strategy()
        or not is_graph_network(model)
        or not isinstance(optimizer, keras.optimizers.Optimizer)
        or model.compiled_loss is None
    ):
        return False

    def zeros(shape, dtype):
        return tf.zeros([1, *[1 if d is None else d for d in list(shape)[1:]]], dtype)

    y_pred = tf.nest.map_structure(lambda t: zeros(t.shape, t.dtype), model.output)
    y_true = tf.nest.map_structure(lambda s: zeros(s.shape, s.dtype), element_spec[1])
    if not model.compiled_loss.built:
        model.compiled_loss.build(y_pred)
    if not model.compiled_metrics.built:
        model.compiled_metrics.build(y_pred, y_true)
    with tf.init_scope():
        optimizer.build(model.trainable_variables)
    return True


class TrainFunctionBuildingFirst:
    """fit's train function, which creates its step's variables before the first trace.

    fit calls it with the data's iterator; on the first call it runs
    ``build(model, element_spec)`` (by default ``build_training_variables``;
    Keras 3's is in ``keras_metapool.keras3.tracing``). Every other attribute
    is the wrapped function's.
    """

    def __init__(self, model, function, build=None):
        self._model = model
        self._function = function
        self._build = build or build_training_variables
        self._built = False

    def __call__(self, iterator):
        if not self._built:
            self._built = True
            self._build(self._model, getattr(iterator, "element_spec", None))
        return self._function(iterator)

    def __getattr__(self, name):
        function = self.__dict__.get("_function")  # absent while copy makes an instance
        if function is None:
            raise AttributeError(name)
        return getattr(function, name)


def train_function_building_first(model, made, build=None):
    """``made`` (the train function ``make_train_function`` made) as ``model``'s
    train function, wrapped in ``TrainFunctionBuildingFirst`` once."""
    if not isinstance(made, TrainFunctionBuildingFirst):
        made = TrainFunctionBuildingFirst(model, made, build)
    model.train_function = made
    return made


def trace_train_step_once(model, build=None):
    """Makes ``model.fit`` trace its train step once: ``make_train_function``
    overridden on this one instance (for models of a class not our own);
    ``build`` as ``TrainFunctionBuildingFirst`` takes it."""
    plain = model.make_train_function

    def make_train_function(force=False):
        plain(force=force)  # sets model.train_function (Keras 3's returns None)
        return train_function_building_first(model, model.train_function, build)

    model.make_train_function = make_train_function
    return model


def validate_target_and_loss(model, y, loss):
    """Keras' own check of a train step's targets and loss (``Model._validate_target_and_loss``).

    ``PMPLCallback``'s one-level step replaces ``train_step`` and keeps Keras'
    error for a model compiled without a loss or fed no targets.
    """
    model._validate_target_and_loss(y, loss)


def calling_object(depth=2):
    """The ``self`` of the function ``depth`` frames up, or None (``sys._getframe``).

    ``PMPLCallback.on_train_begin`` finds the ``CallbackList`` calling it
    (Keras gives callbacks no handle on it) to put its helpers around the
    progress bar.
    """
    return sys._getframe(depth).f_locals.get("self")


def with_argument_list_of(target, wrapper):
    """``wrapper``, showing tf_keras ``target``'s argument list.

    Private: ``tf.__internal__.decorator.make_decorator``. tf_keras reads a
    layer call's arguments with ``tf_inspect``, which sees through TF's own
    decorators only (not ``functools.wraps``); a call whose list it cannot
    read is passed ``training`` and ``mask`` whether it takes them or not.
    """
    return tf.__internal__.decorator.make_decorator(target, wrapper)


# -- TFLite converter -----------------------------------------------------
def quantize_dense_weights_per_tensor(converter):
    """Makes the converter quantize FULLY_CONNECTED weights per tensor.

    Private: ``TFLiteConverter._experimental_disable_per_channel_quantization_for_dense_layers``.
    TF >= 2.16 quantizes them per channel, a format edgetpu_compiler 16 (2021)
    predates.
    """
    converter._experimental_disable_per_channel_quantization_for_dense_layers = True


def convert_from_frozen_graph(converter):
    """Makes a ``from_concrete_functions`` converter freeze the function, not save it.

    ``TFLiteConverterV2.experimental_lower_to_saved_model``, not in TF's API
    docs. ``from_concrete_functions`` sets it: the converter then writes the
    function and its variables as a SavedModel to a temporary folder and loads
    it back, which is most of a conversion's time. Frozen (the variables
    folded in as constants), the same model gives the same ops and identical
    outputs, 2.4-3.0x faster in every mode, float and QAT models alike
    (``benchmarks/export_time.py``). The frozen file has no signature;
    ``export.tflite_graph.with_signature`` writes it.
    """
    converter.experimental_lower_to_saved_model = False


@contextlib.contextmanager
def frozen_conversion_warning_silenced():
    """Hides the frozen path's "Statistics for quantized inputs were expected".

    ``tensorflow/lite/python/convert.py`` warns so for every int8 / uint8
    input it converts from a frozen graph without ``quantized_input_stats``,
    which only the legacy (pre-calibration) quantizer reads; with a
    representative dataset the calibration sets the input's scale.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Statistics for quantized inputs were expected", category=UserWarning
        )
        yield

"""Turning a keras.applications MobileNetV2 into a MobileNetV2MP."""

import contextlib
import re
import warnings

from absl import logging

from keras_metapool._keras import is_keras3, keras
from keras_metapool.models.architecture import BLOCKS, resolve_spec
from keras_metapool.models.mobilenet_v2_mp import (
    ENHANCER_INITS,
    OPEN_GATE,
    MobileNetV2MP,
    block_filters,
    last_filters,
    stem_filters,
)
from keras_metapool.models.naming import BACKBONE_OUTPUT, block_prefix, point_of_enhancer_layer
from keras_metapool.models.weights import IMAGENET_ALPHAS

#: ``from_mobilenet_v2``'s earlier name for ``enhancer_init="open_gates"``.
DEPRECATED_IDENTITY_INIT = "identity"


#: The grid infer_alpha tries last: multiples of 0.005 up to 4.
_ALPHA_STEP, _ALPHA_STEPS = 0.005, 800


def _filters(model, layer_name):
    try:
        return model.get_layer(layer_name).filters
    except ValueError:
        raise ValueError(
            f"`base_model` is not a keras.applications MobileNetV2: it has no layer '{layer_name}'."
        ) from None


def _channel_counts(alpha):
    """What ``alpha`` decides: the stem's, every block's and the last conv's channels."""
    blocks = tuple(block_filters(filters, alpha) for _, filters, _ in BLOCKS)
    return (stem_filters(alpha), *blocks, last_filters(alpha))


def _model_channel_counts(model):
    names = ["Conv1", *(block_prefix(i) + "project" for i in range(len(BLOCKS))), "Conv_1"]
    return tuple(_filters(model, name) for name in names)


def _alpha_fits(model, alpha):
    return _model_channel_counts(model) == _channel_counts(alpha)


def infer_alpha(model):
    """The width multiplier of a keras.applications MobileNetV2.

    Read from the model name (``mobilenetv2_<alpha>_<rows>``, or
    ``mobilenetv2mp_...`` for a MobileNetV2MP) when it is the default one, else
    the first standard alpha whose channel counts match, else the first
    multiple of 0.005 in (0, 4] that reproduces them: the channel counts are
    all the width multiplier decides, so any alpha reproducing them rebuilds
    the same network (a custom name, or 1.125 named "1.12", is no obstacle).

    Raises:
        ValueError: if no alpha reproduces the model's channel counts.
    """
    match = re.match(r"mobilenetv2(?:mp)?_(\d+\.\d+)_", model.name)
    candidates = ([float(match.group(1))] if match else []) + list(IMAGENET_ALPHAS)
    candidates += [round(step * _ALPHA_STEP, 3) for step in range(1, _ALPHA_STEPS + 1)]
    counts = _model_channel_counts(model)
    for alpha in candidates:
        if _channel_counts(alpha) == counts:
            return alpha
    raise ValueError(
        f"Could not infer the width multiplier alpha of '{model.name}': none reproduces its "
        "channel counts. Is it a keras.applications MobileNetV2 / MobileNetV2MP? "
        "(from_mobilenet_v2 also takes alpha=.)"
    )


def builder_arguments(model, alpha=None):
    """The ``MobileNetV2MP`` arguments that rebuild ``model``'s frame.

    Everything but the Meta-Pooling choices: input shape, width (inferred
    unless given), classifier (classes, activation, head) or pooling, and BN
    momentum. Read from the layers, so it works on a keras.applications
    MobileNetV2, a MobileNetV2MP, and either one loaded from a file.

    Raises:
        ValueError: if the model is not a MobileNetV2(MP) or ``alpha`` does
            not match its channel counts.
    """
    names = [layer.name for layer in model.layers]
    if "Conv1" in names:
        in_front = [
            layer.name
            for layer in model.layers[: names.index("Conv1")]
            if type(layer).__name__ != "InputLayer"
        ]
        if in_front:
            raise ValueError(
                f"Model '{model.name}' has layers in front of MobileNetV2's first convolution "
                f"({', '.join(in_front)}), e.g. preprocessing from input_tensor=. A rebuilt "
                "MobileNetV2MP has MobileNetV2's own layers only, so they would be lost: apply "
                "them in the input pipeline instead, or wrap the result in a model that does."
            )
    alpha = infer_alpha(model) if alpha is None else alpha
    if not _alpha_fits(model, alpha):
        raise ValueError(f"`alpha`={alpha} does not match the model's channel counts.")
    layer_names = {layer.name for layer in model.layers}
    kwargs = dict(
        input_shape=tuple(model.input_shape[1:]),
        alpha=alpha,
        include_top="predictions" in layer_names,
        weights=None,
        batch_norm_momentum=model.get_layer("bn_Conv1").momentum,
    )
    if kwargs["include_top"]:
        predictions = model.get_layer("predictions")
        kwargs["classes"] = predictions.units
        # By name: a Keras 3 model's activation is a Keras 3 function.
        kwargs["classifier_activation"] = predictions.activation.__name__
        kwargs["head"] = "paper" if "head_conv" in layer_names else "classic"
    else:
        kwargs["pooling"] = {
            "GlobalAveragePooling2D": "avg",
            "GlobalMaxPooling2D": "max",
        }.get(type(model.layers[-1]).__name__)
    return kwargs


@contextlib.contextmanager
def precision_of(model):
    """Models built inside take ``model``'s dtype policy (its ``Conv1``'s).

    A rebuilt model then computes as ``model`` did: mixed precision stays
    mixed. The global policy is restored on exit.
    """
    policy = keras.mixed_precision.global_policy()
    # By name: a Keras 3 model's policy is a Keras 3 object.
    keras.mixed_precision.set_global_policy(model.get_layer("Conv1").dtype_policy.name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(policy)


def from_mobilenet_v2(
    base_model,
    meta_pooling="paper",
    placement=None,
    alpha=None,
    enhancer_init="open_gates",
    batch_norm_momentum=None,
    name=None,
):
    """A MobileNetV2MP carrying the weights of a keras.applications MobileNetV2.

    Every layer of ``base_model`` is copied by name into a new MobileNetV2MP
    of the same width, input shape, classifier and dtype policy (mixed
    precision stays so); the Meta-Pooling layers are new.

    With ``enhancer_init="open_gates"`` (default) the new model computes the
    same function as the base wherever an enhancer is a lone SSP without
    post-norm (the ``"paper"`` model): each SSP starts with zero gate kernels
    and both gates at 0.9, i.e. as a constant scale by 0.81, and the inverse
    scale is folded into the adjacent linear layer (the block's
    ``project_BN`` at the output placement, its ``project`` convolution at the
    hidden placement). Predictions match the base up to float rounding, and
    the gates sit where their gradients are healthy, so fine-tuning can grow
    the receptive field from there. This deviates from the paper, whose gates
    start from random kernels and zero bias; ``enhancer_init="paper"`` gives
    the paper's initialisation (and a model that needs training before it
    predicts like the base).

    Enhancers that hold a pooling op, a pair, a search mixture, or a
    post-norm (BN + hard swish) change the function under any init: such
    models need fine-tuning before they match the base (a warning says so).

    Args:
        base_model: A ``keras.applications.MobileNetV2``, Keras 3 (``import
            keras``) or tf_keras, or a MobileNetV2MP built with
            ``meta_pooling="none"``, trained or not. The result is a tf_keras
            model either way (TF-MOT's QAT needs tf_keras); the layers share
            keras.applications' names in both Keras versions, so the weights
            are copied by name.
        meta_pooling: As in ``MobileNetV2MP`` (default ``"paper"``).
        placement: As in ``MobileNetV2MP``.
        alpha: Width multiplier of the base; inferred when None.
        enhancer_init: ``"open_gates"`` (default: the base's function kept,
            above) or ``"paper"``, the values ``MobileNetV2MP`` takes
            (``ENHANCER_INITS``). ``"identity"``, this argument's earlier name
            for ``"open_gates"``, still works and warns
            (``DeprecationWarning``).
        batch_norm_momentum: Momentum of the new model's BatchNormalization
            layers; default: the base's.
        name: Name of the new model.

    Returns:
        The new ``tf_keras.Model``.

    Raises:
        ValueError: if ``base_model`` is not a MobileNetV2, has layers in
            front of ``Conv1`` or a head that MobileNetV2MP does not build
            (convert its backbone then: the message says how), an argument is
            invalid, or the weights do not fit.
    """
    enhancer_init = _checked_base_and_init(base_model, enhancer_init)
    frame = builder_arguments(base_model, alpha)
    if batch_norm_momentum is not None:
        frame["batch_norm_momentum"] = batch_norm_momentum
    spec = resolve_spec(meta_pooling, placement)
    preserving = enhancer_init == "open_gates"
    lone_ssp = [i for i, entry in enumerate(spec.ops) if entry == "ssp" and not spec.post_norm]
    if preserving and len(lone_ssp) != len(spec.points):
        logging.warning(
            "from_mobilenet_v2: %r has enhancers that cannot start as the identity "
            "(pooling ops, pairs, search mixtures or BN + hswish after an op); the new "
            "model will not predict like the base until it is fine-tuned.",
            spec,
        )
    with precision_of(base_model):
        model = MobileNetV2MP(
            meta_pooling=spec,
            enhancer_init=enhancer_init,
            name=name,
            **frame,
        )
    _check_same_head(base_model, model)
    _copy_weights(base_model, model)
    if preserving:
        for block_id in lone_ssp:
            _fold_inverse_gate_scale(model, block_id, spec.placement)
    return model


def _checked_base_and_init(base_model, enhancer_init):
    """``from_mobilenet_v2``'s checks of its base and init; the init's current name."""
    if enhancer_init == DEPRECATED_IDENTITY_INIT:
        warnings.warn(
            "from_mobilenet_v2(enhancer_init='identity') is now spelled 'open_gates', as "
            "in MobileNetV2MP; 'identity' will stop working in a later release.",
            DeprecationWarning,
            stacklevel=3,  # the caller of from_mobilenet_v2
        )
        enhancer_init = "open_gates"
    if enhancer_init not in ENHANCER_INITS:
        raise ValueError(
            f"Unknown enhancer_init {enhancer_init!r}. Valid values: {', '.join(ENHANCER_INITS)}."
        )
    if not (isinstance(base_model, keras.Model) or is_keras3(base_model)):
        raise ValueError(
            "`base_model` must be a keras.applications.MobileNetV2 (Keras 3 or tf_keras), "
            f"got {type(base_model).__module__}.{type(base_model).__name__}."
        )
    if not hasattr(base_model, "get_layer"):
        raise ValueError(
            f"`base_model` must be a MobileNetV2 model, got the Keras 3 "
            f"{type(base_model).__name__} '{getattr(base_model, 'name', '?')}'."
        )
    enhancers = [layer.name for layer in base_model.layers if point_of_enhancer_layer(layer.name)]
    if enhancers:
        # Its trained gates would get the open gates' inverse scale folded in.
        raise ValueError(
            f"`base_model` '{base_model.name}' already has Meta-Pooling (layer "
            f"'{enhancers[0]}'); from_mobilenet_v2 adds it to a plain MobileNetV2. To move "
            "its weights to another architecture, save them (model.save_weights('w.h5')) and "
            "load them into the new MobileNetV2MP with load_weights('w.h5', by_name=True, "
            "skip_mismatch=True), or use to_fixed_model after a search."
        )
    return enhancer_init


def _copy_weights(base_model, model):
    """Copies every weighted layer of the base into its same-named MobileNetV2MP layer."""
    for layer in base_model.layers:
        if not layer.weights:
            continue
        try:
            target = model.get_layer(layer.name)
        except ValueError:
            raise ValueError(
                f"`base_model` layer '{layer.name}' has no counterpart in MobileNetV2MP; "
                "is it a keras.applications MobileNetV2?"
            ) from None
        source = layer.get_weights()
        expected = [w.shape for w in target.get_weights()]
        if [w.shape for w in source] != expected:
            raise ValueError(
                f"`base_model` layer '{layer.name}' has weight shapes "
                f"{[w.shape for w in source]}, MobileNetV2MP expects {expected}."
            )
        target.set_weights(source)


def _head_layer_types(model):
    """The type names of the layers after MobileNetV2's last activation, in order."""
    names = [layer.name for layer in model.layers]
    if BACKBONE_OUTPUT not in names:
        return None
    return [type(layer).__name__ for layer in model.layers[names.index(BACKBONE_OUTPUT) + 1 :]]


def _check_same_head(base_model, model):
    """Refuses a base whose head the rebuilt MobileNetV2MP would not have.

    ``builder_arguments`` reads the classifier's size and activation, not the
    layers around it: a GlobalMaxPooling2D or Dropout in front of
    "predictions" would silently become MobileNetV2MP's average pooling.
    """
    theirs, ours = _head_layer_types(base_model), _head_layer_types(model)
    if theirs != ours:
        raise ValueError(
            f"`base_model` '{base_model.name}' has the layers {theirs} after "
            f"'{BACKBONE_OUTPUT}'; the rebuilt MobileNetV2MP would have {ours}, so yours would "
            "be lost. Convert the backbone instead: from_mobilenet_v2(keras.Model("
            f"base_model.input, base_model.get_layer('{BACKBONE_OUTPUT}').output)), then put "
            "your head on the result."
        )


def _fold_inverse_gate_scale(model, block_id, placement):
    """Undoes an open-gated SSP's constant scale in the adjacent linear layer."""
    inverse = 1.0 / OPEN_GATE**2
    prefix = block_prefix(block_id)
    if placement == "output":
        # SSP follows project_BN, whose output is affine in gamma and beta.
        bn = model.get_layer(prefix + "project_BN")
        bn.gamma.assign(bn.gamma * inverse)
        bn.beta.assign(bn.beta * inverse)
    else:
        # SSP precedes the (linear, bias-free) project convolution.
        project = model.get_layer(prefix + "project")
        project.kernel.assign(project.kernel * inverse)

"""MobileNetV2MP: keras.applications' MobileNetV2 with Meta-Pooling."""

import numbers

from absl import logging

from keras_metapool._keras import backend, functional_model, keras
from keras_metapool._layer_facts import BATCH_NORM_MOMENTUM, MIN_INPUT_SIZE
from keras_metapool._ranges import MOMENTUM
from keras_metapool.layers.activations import HardSwish
from keras_metapool.layers.candidate_ops import IDENTITY, build_candidate_op
from keras_metapool.layers.meta_pooling import MetaPoolingBlock
from keras_metapool.layers.spatial_enhancer import open_gate_bias
from keras_metapool.models import weights as weights_lib
from keras_metapool.models.architecture import BLOCKS, SEARCH, resolve_spec
from keras_metapool.models.naming import (
    BACKBONE_OUTPUT,
    block_prefix,
    enhancer_layer_name,
    enhancer_part_name,
    op_layer_name,
)

HEADS = ("classic", "paper")
ENHANCER_INITS = ("paper", "open_gates")
#: Each SSP gate's value under enhancer_init="open_gates": open enough to pass
#: the signal, far enough from saturation for the gates to keep learning.
OPEN_GATE = 0.9
#: Width of the paper head's extra 1x1 convolution (docs/method.md §3).
PAPER_HEAD_CHANNELS = 1280
BN_EPSILON = 1e-3


def make_divisible(value, divisor=8, min_value=None):
    """Rounds a channel count as MobileNetV2 does (to a multiple of 8)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:  # never round down by more than 10%
        rounded += divisor
    return rounded


def stem_filters(alpha):
    """Output channels of the stem convolution ``Conv1``."""
    return make_divisible(32 * alpha, 8)


def last_filters(alpha):
    """Output channels of the last convolution ``Conv_1`` (as keras.applications:
    not narrowed for alpha <= 1)."""
    return make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280


def block_filters(filters, alpha):
    """Output channels of a block whose width at alpha=1 is ``filters``."""
    return make_divisible(int(filters * alpha), 8)


def block_map_sizes(rows, cols):
    """The feature-map ``(height, width)`` at each block's enhancer, both placements.

    The stem halves the input; a stride-2 block halves it again, rounding up
    (keras.applications pads so). None stays None (a dynamic size).
    """

    def halve(size):
        return None if size is None else -(-int(size) // 2)

    size = (halve(rows), halve(cols))
    sizes = []
    for _, _, stride in BLOCKS:
        if stride == 2:
            size = (halve(size[0]), halve(size[1]))
        sizes.append(size)
    return sizes


def _validate_arguments(alpha, include_top, weights, pooling, classes, classifier_activation, head):
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or alpha <= 0:
        raise ValueError(f"`alpha` must be a number > 0, got {alpha!r}.")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"`pooling` must be None, 'avg' or 'max', got {pooling!r}.")
    if pooling is not None and include_top:
        # keras.applications ignores it here; the classifier head always averages.
        raise ValueError(
            f"`pooling`={pooling!r} applies to include_top=False (the features); the "
            "classifier head always pools by average. Drop `pooling`, or pass "
            "include_top=False and put your own head on the pooled features."
        )
    if head not in HEADS:
        raise ValueError(f"Unknown head {head!r}. Valid values: {', '.join(HEADS)}.")
    if head == "paper" and not include_top:
        raise ValueError("head='paper' is a classifier head: it needs include_top=True.")
    if isinstance(classes, bool) or not isinstance(classes, numbers.Integral) or classes < 1:
        raise ValueError(f"`classes` must be a positive integer, got {classes!r}.")
    if weights == "imagenet":
        if include_top and classes != 1000:
            raise ValueError(
                f"`classes`: weights='imagenet' with include_top=True has 1000 classes, "
                f"got classes={classes}. Use include_top=False for another class count."
            )
        if float(alpha) not in weights_lib.IMAGENET_ALPHAS:
            raise ValueError(
                f"`alpha`: ImageNet weights exist for alpha in {weights_lib.IMAGENET_ALPHAS}, "
                f"got {alpha}."
            )
        if include_top and classifier_activation not in (None, "softmax"):
            raise ValueError(
                "`classifier_activation`: with ImageNet weights it must be None or "
                f"'softmax', got {classifier_activation!r}."
            )
        if include_top and head != "classic":
            raise ValueError("head='paper' has no ImageNet weights; use weights=None.")
    elif (
        weights is not None
        and not isinstance(weights, (str, bytes))
        and not hasattr(weights, "__fspath__")
    ):
        raise ValueError(
            f"`weights` must be None, 'imagenet' or a path to a weights file, got {weights!r}."
        )


def _resolve_input_shape(input_shape, input_tensor, weights):
    """(input layer, model inputs, static input shape) per keras.applications."""
    if backend.image_data_format() != "channels_last":
        raise ValueError("MobileNetV2MP supports image_data_format='channels_last' only.")
    tensor_shape = None
    if input_tensor is not None:
        if not backend.is_keras_tensor(input_tensor):
            try:
                tensor_shape = tuple(input_tensor.shape)[1:]
            except AttributeError:
                raise ValueError(
                    f"`input_tensor` must be a Keras or TF tensor, got {type(input_tensor)}."
                ) from None
        else:
            tensor_shape = tuple(backend.int_shape(input_tensor))[1:]
    if input_shape is None:
        input_shape = tensor_shape if tensor_shape is not None else (224, 224, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"`input_shape` must be (height, width, channels), got {input_shape!r}.")
    if tensor_shape is not None and any(
        a is not None and b is not None and a != b for a, b in zip(input_shape, tensor_shape)
    ):
        raise ValueError(
            f"`input_shape` {input_shape} does not match `input_tensor`'s shape {tensor_shape}."
        )
    rows, cols, channels = input_shape
    for size in (rows, cols):
        if size is not None and size < MIN_INPUT_SIZE:
            raise ValueError(
                f"`input_shape`: height and width must be at least {MIN_INPUT_SIZE} "
                f"(MobileNetV2 downsamples by 32), got {input_shape}."
            )
    if channels is None or (weights == "imagenet" and channels != 3):
        raise ValueError(
            f"`input_shape`: {'ImageNet weights need 3' if channels else 'a known number of'} "
            f"channels, got {input_shape}."
        )
    if input_tensor is None:
        img_input = keras.layers.Input(shape=input_shape)
    elif not backend.is_keras_tensor(input_tensor):
        img_input = keras.layers.Input(tensor=input_tensor, shape=input_shape)
    else:
        img_input = input_tensor
    if input_tensor is not None:
        inputs = keras.utils.get_source_inputs(input_tensor)
    else:
        inputs = img_input
    return img_input, inputs, input_shape


class _Builder:
    """Assembles the layers; remembers which ones MobileNetV2 does not have."""

    def __init__(self, spec, momentum, ssp_kwargs):
        self.spec = spec
        self.momentum = momentum
        self.ssp_kwargs = ssp_kwargs
        self.new_layers = []

    def bn(self, name):
        return keras.layers.BatchNormalization(
            axis=-1, epsilon=BN_EPSILON, momentum=self.momentum, name=name
        )

    def new(self, layer):
        self.new_layers.append(layer.name)
        return layer

    def enhancer(self, x, block_id):
        """Applies the spec's enhancer of ``block_id`` to ``x``."""
        entry = self.spec.ops[block_id]
        if entry == IDENTITY:
            return x
        placement = self.spec.placement
        name = enhancer_layer_name(block_id, placement)
        if entry == SEARCH:
            block = MetaPoolingBlock(
                candidates=self.spec.candidates_at(block_id),
                post_norm=self.spec.post_norm,
                batch_norm_momentum=self.momentum,
                ssp_kwargs=self.ssp_kwargs,
                name=name,
            )
            return self.new(block)(x)
        ops = entry if isinstance(entry, tuple) else (entry,)
        outputs = [
            self.new(
                build_candidate_op(
                    op,
                    layer_name=op_layer_name(block_id, placement, op),
                    batch_norm_momentum=self.momentum,
                    ssp_kwargs=self.ssp_kwargs,
                )
            )(x)
            for op in ops
        ]
        if len(outputs) == 1:
            y = outputs[0]
        else:
            y = keras.layers.Add(name=enhancer_part_name(block_id, placement, "sum"))(outputs)
        if self.spec.post_norm:
            y = self.new(self.bn(enhancer_part_name(block_id, placement, "BN")))(y)
            y = HardSwish(name=enhancer_part_name(block_id, placement, "hswish"))(y)
        return y

    def inverted_res_block(self, inputs, expansion, stride, alpha, filters, block_id):
        in_channels = backend.int_shape(inputs)[-1]
        pointwise_filters = block_filters(filters, alpha)
        prefix = block_prefix(block_id)
        x = inputs
        if block_id:
            x = keras.layers.Conv2D(
                expansion * in_channels, 1, padding="same", use_bias=False,
                name=prefix + "expand",
            )(x)  # fmt: skip
            x = self.bn(prefix + "expand_BN")(x)
            x = keras.layers.ReLU(6.0, name=prefix + "expand_relu")(x)
        if stride == 2:
            x = keras.layers.ZeroPadding2D(padding=_correct_pad(x, 3), name=prefix + "pad")(x)
        x = keras.layers.DepthwiseConv2D(
            3, strides=stride, use_bias=False, padding="same" if stride == 1 else "valid",
            name=prefix + "depthwise",
        )(x)  # fmt: skip
        x = self.bn(prefix + "depthwise_BN")(x)
        x = keras.layers.ReLU(6.0, name=prefix + "depthwise_relu")(x)
        if self.spec.placement == "hidden":
            x = self.enhancer(x, block_id)
        x = keras.layers.Conv2D(
            pointwise_filters, 1, padding="same", use_bias=False, name=prefix + "project"
        )(x)
        x = self.bn(prefix + "project_BN")(x)
        if self.spec.placement == "output":
            x = self.enhancer(x, block_id)
        if in_channels == pointwise_filters and stride == 1:
            return keras.layers.Add(name=prefix + "add")([inputs, x])
        return x


def _correct_pad(x, kernel_size):
    """ZeroPadding2D amounts for a 'valid' stride-2 convolution, as keras does."""
    input_size = backend.int_shape(x)[1:3]
    adjust = (1, 1) if input_size[0] is None else (1 - input_size[0] % 2, 1 - input_size[1] % 2)
    correct = (kernel_size // 2, kernel_size // 2)
    return ((correct[0] - adjust[0], correct[0]), (correct[1] - adjust[1], correct[1]))


def MobileNetV2MP(
    input_shape=None,
    alpha=1.0,
    include_top=True,
    weights="imagenet",
    input_tensor=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name=None,
    meta_pooling="search",
    placement=None,
    head="classic",
    batch_norm_momentum=BATCH_NORM_MOMENTUM,
    search_candidates=None,
    enhancer_init="paper",
):
    """Instantiates MobileNetV2 with Meta-Pooling (arXiv 2301.10038).

    The signature and behaviour are those of
    ``keras.applications.MobileNetV2``; every layer the two share has the same
    name, so keras.applications weight files load. The Meta-Pooling arguments
    choose which spatial enhancer follows each of the 17 inverted-residual
    blocks.

    Args:
        input_shape: ``(height, width, channels)``; height and width >= 32
            (or None for a dynamic size). Defaults to the shape of
            ``input_tensor``, else ``(224, 224, 3)``.
        alpha: Width multiplier (> 0): 0.35, 0.5, 0.75, 1.0, 1.3 and 1.4 have
            ImageNet weights.
        include_top: Include the classifier head.
        weights: None (random init), ``"imagenet"`` (the keras.applications
            ImageNet MobileNetV2 weights for the shared layers; the new
            Meta-Pooling layers keep their init), or a path to a weights file
            (a Keras ``.h5``, matched by layer name, or a TF checkpoint; the
            Meta-Pooling layers a plain model's file lacks keep their init,
            named in a ``keras_metapool.models.weights.LayersKeptInitWarning``).
            ``"imagenet"`` reads ``$KERAS_HOME/models/<file>`` (default
            ``~/.keras/models``), downloading it when a network allows; the
            error names the file to place there otherwise.
        input_tensor: Optional Keras tensor to use as the image input.
        pooling: With ``include_top=False``: None (4D features), ``"avg"`` or
            ``"max"`` (global pooling to 2D).
        classes: Number of classes (with ``include_top=True``).
        classifier_activation: Activation of the last Dense layer (None
            returns logits).
        name: Model name. Default ``mobilenetv2mp_<alpha>_<rows>``
            (``mobilenetv2_<alpha>_<rows>`` for ``meta_pooling="none"``).
        meta_pooling: Which enhancers to insert:
            - ``"search"`` (default): a searchable ``MetaPoolingBlock`` at every
              insertion point; train it with ``keras_metapool.PMPLCallback``.
            - ``"paper"``: the paper's final model, SSP after blocks 6-16
              without extra BatchNormalization/activation.
            - ``"none"``: plain MobileNetV2 (same parameters as
              keras.applications).
            - ``"global"``, ``"local"``, ``"random"``, ``"exclude_local"``:
              docs/method.md §3's ablations (``ArchitectureSpec.named``; every
              name is in ``NAMED_ARCHITECTURES``).
            - an ``ArchitectureSpec`` (or its dict): per-block op choices, e.g.
              ``ArchitectureSpec.ablation("random")`` or a searched result.
        placement: ``"output"`` (after the block's projection BN, before its
            residual add; the default of ``"paper"`` and ``"none"``) or
            ``"hidden"`` (after the depthwise ReLU, on the expanded channels;
            blocks 1-16; the default of ``"search"``, whose supernet then
            has no post-norm: see ``ArchitectureSpec.search``). An
            ``ArchitectureSpec`` carries its own placement.
        head: ``"classic"`` (default: global average pool and Dense, as
            keras.applications) or ``"paper"``: global average pool, 1x1
            convolution 1280->1280 with bias, hard swish, Dropout(0.2),
            Dense. The paper head adds about 1.64M parameters at alpha=1.0.
            Its hard swish (like SSP's and the post-norm's) is written so that
            int8 TFLite models contain only Edge TPU ops (ADD, MUL; no
            HARD_SWISH): see ``keras_metapool.layers.activations``.
        batch_norm_momentum: Momentum of every BatchNormalization. Default
            0.9, the paper's (PyTorch's 0.1): a departure from
            keras.applications' 0.999, whose moving statistics a few-epoch
            run from scratch never settles (measured: a 2-epoch run on 3,000
            Fashion-MNIST images then evaluated at chance, 0.095). Weights,
            layer names and inference outputs are unaffected; pass 0.999 for
            keras.applications' exact training behaviour on long runs.
        search_candidates: Candidate op names of the ``"search"`` preset
            (default: ``keras_metapool.layers.DEFAULT_CANDIDATES``, the
            paper's eight; ``"se"`` can be added). At
            each point, pooling windows larger than its feature map are
            dropped (they would be copies of one global pooling); a point
            left with one candidate is fixed to it. With a static input size
            only; an ``ArchitectureSpec`` with ``point_candidates`` sets the
            lists explicitly.
        enhancer_init: ``"paper"`` (default initialisers: random gate
            kernels, zero gate bias) or ``"open_gates"``: zero gate kernels
            and biases such that each gate is 0.9, so SSP starts as a
            constant scale by 0.81. A deviation from the paper, used by
            ``from_mobilenet_v2`` to insert SSP into a trained network
            without changing its function.

    Returns:
        A ``tf_keras.Model``.

    Raises:
        ValueError: for invalid arguments (the message names the argument),
            weights that cannot be found, read or matched.
    """
    _validate_arguments(alpha, include_top, weights, pooling, classes, classifier_activation, head)
    if enhancer_init not in ENHANCER_INITS:
        raise ValueError(
            f"Unknown enhancer_init {enhancer_init!r}. Valid values: {', '.join(ENHANCER_INITS)}."
        )
    MOMENTUM.check("batch_norm_momentum", batch_norm_momentum)
    spec = resolve_spec(meta_pooling, placement, search_candidates)
    if weights is not None and weights != "imagenet":
        weights_lib.check_weights_path(weights)  # fail before the costly build
    img_input, inputs, input_shape = _resolve_input_shape(input_shape, input_tensor, weights)
    # Pooling windows larger than a point's feature map are dropped there.
    spec = spec.pruned_for_input(block_map_sizes(*input_shape[:2]))
    rows = input_shape[0]
    if weights == "imagenet" and (rows != input_shape[1] or rows not in weights_lib.IMAGENET_SIZES):
        logging.warning(
            "`input_shape` is undefined, non-square, or not in %s: loading the weights "
            "for input size 224.", weights_lib.IMAGENET_SIZES,
        )  # fmt: skip
        rows = 224
    if weights == "imagenet":  # found (or fetched) before the costly build
        imagenet_path = weights_lib.imagenet_weights_path(alpha, rows, include_top)

    ssp_kwargs = {}
    if enhancer_init == "open_gates":
        # Both gates at OPEN_GATE scale the input by OPEN_GATE**2.
        gate_bias = open_gate_bias(OPEN_GATE**2)
        ssp_kwargs = {"gate_bias": gate_bias, "zero_gate_kernels": True}
    builder = _Builder(spec, float(batch_norm_momentum), ssp_kwargs)

    x = keras.layers.Conv2D(
        stem_filters(alpha), 3, strides=(2, 2), padding="same", use_bias=False,
        name="Conv1",
    )(img_input)  # fmt: skip
    x = builder.bn("bn_Conv1")(x)
    x = keras.layers.ReLU(6.0, name="Conv1_relu")(x)
    for block_id, (expansion, filters, stride) in enumerate(BLOCKS):
        x = builder.inverted_res_block(x, expansion, stride, alpha, filters, block_id)

    x = keras.layers.Conv2D(last_filters(alpha), 1, use_bias=False, name="Conv_1")(x)
    x = builder.bn("Conv_1_bn")(x)
    x = keras.layers.ReLU(6.0, name=BACKBONE_OUTPUT)(x)

    if include_top:
        if head == "paper":
            x = keras.layers.GlobalAveragePooling2D(keepdims=True, name="avg_pool")(x)
            x = builder.new(
                keras.layers.Conv2D(PAPER_HEAD_CHANNELS, 1, use_bias=True, name="head_conv")
            )(x)
            x = HardSwish(name="head_hswish")(x)
            x = keras.layers.Flatten(name="head_flatten")(x)
            x = keras.layers.Dropout(0.2, name="head_dropout")(x)
        else:
            x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(int(classes), activation=classifier_activation, name="predictions")(
            x
        )
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)

    if name is None:
        stem = "mobilenetv2" if not spec.points else "mobilenetv2mp"
        name = f"{stem}_{alpha:0.2f}_{input_shape[0]}"
    model = functional_model(inputs, x, name=name)

    if weights == "imagenet":
        weights_lib.load_weights_by_name(model, imagenet_path, new_layers=builder.new_layers)
    elif weights is not None:
        weights_lib.load_weights_file(model, weights, new_layers=builder.new_layers)
    return model

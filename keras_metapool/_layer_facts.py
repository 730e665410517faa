"""Facts about the layers that both Keras flavours read, with no Keras import.

``keras_metapool.layers`` (tf_keras) and ``keras_metapool.keras3`` (Keras 3)
build the same layers; what they must agree on lives here, once, in a module
that imports neither Keras (so ``keras_metapool.keras3`` loads without
tf_keras).
"""

import math
import numbers

import numpy as np

from keras_metapool._ranges import MOMENTUM, POSITIVE

#: The constant of hard swish's division, ``relu6(x + 3) / 6``.
HARD_SWISH_SCALE = 1.0 / 6.0

# Momentum of every BatchNormalization the package creates, in Keras terms
# (PyTorch's 0.1, the paper's). keras.applications uses 0.999, which suits
# long ImageNet runs but leaves the moving statistics of a few-epoch run
# unsettled: measured on 3,000 Fashion-MNIST images, 2 epochs at 64 px, the
# searched model then evaluated at chance (0.095) where 0.9 gave 0.37-0.43
# (0.59-0.68 with today's search defaults, tests/test_first_hour.py).
BATCH_NORM_MOMENTUM = 0.9
#: The smallest model input side MobileNetV2MP accepts (it downsamples 32x); the
#: data pipelines refuse smaller images with it.
MIN_INPUT_SIZE = 32
#: How the warnings that list likely causes name unsettled BN statistics.
UNSETTLED_BATCH_NORM = (
    "BatchNormalization statistics unsettled by a short run (a batch_norm_momentum near 1, "
    f"such as keras.applications' 0.999; MobileNetV2MP's default {BATCH_NORM_MOMENTUM} "
    "settles them within an epoch or two)"
)

#: SSP's bottleneck: channel reduction, lower bound of its width, BN epsilon.
SSP_REDUCTION = 32
SSP_MIN_CHANNELS = 8
SSP_BATCH_NORM_EPSILON = 1e-3


def ssp_reduced_channels(channels, reduction=SSP_REDUCTION, min_channels=SSP_MIN_CHANNELS):
    """Width of SSP's bottleneck: ``max(min_channels, channels // reduction)``."""
    return max(int(min_channels), int(channels) // int(reduction))


#: SSP's constructor arguments beyond the standard layer ones, in order.
SSP_ARGUMENTS = (
    "reduction",
    "min_channels",
    "batch_norm_momentum",
    "batch_norm_epsilon",
    "gate_bias",
    "zero_gate_kernels",
)


class SSPArguments:
    """SSP's constructor and config, shared by both Keras flavours' ``SpatialEnhancer``.

    Listed before the Keras layer base class; checks and stores the
    ``SSP_ARGUMENTS`` (``ssp_arguments``) and puts them in ``get_config``.
    """

    def __init__(
        self,
        reduction=SSP_REDUCTION,
        min_channels=SSP_MIN_CHANNELS,
        batch_norm_momentum=BATCH_NORM_MOMENTUM,
        batch_norm_epsilon=SSP_BATCH_NORM_EPSILON,
        gate_bias=0.0,
        zero_gate_kernels=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        arguments = ssp_arguments(
            reduction, min_channels, batch_norm_momentum, batch_norm_epsilon,
            gate_bias, zero_gate_kernels,
        )  # fmt: skip
        for name, value in arguments.items():
            setattr(self, name, value)

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in SSP_ARGUMENTS})
        return config


def ssp_arguments(
    reduction, min_channels, batch_norm_momentum, batch_norm_epsilon, gate_bias, zero_gate_kernels
):
    """SSP's arguments checked and normalised: ``{name: value}`` in ``SSP_ARGUMENTS`` order.

    Checked, not coerced: ``reduction=2.9`` or ``zero_gate_kernels="false"``
    would otherwise become 2 and True without a word.

    Raises:
        ValueError: for a ``reduction`` or ``min_channels`` that is not a
            whole number >= 1, a momentum outside [0, 1), an epsilon <= 0, a
            gate bias that is not a finite number, or a ``zero_gate_kernels``
            that is not True or False.
    """
    return dict(
        reduction=whole_number("reduction", reduction, minimum=1),
        min_channels=whole_number("min_channels", min_channels, minimum=1),
        batch_norm_momentum=float(MOMENTUM.check("batch_norm_momentum", batch_norm_momentum)),
        batch_norm_epsilon=float(POSITIVE.check("batch_norm_epsilon", batch_norm_epsilon)),
        gate_bias=finite_number("gate_bias", gate_bias),
        zero_gate_kernels=true_or_false("zero_gate_kernels", zero_gate_kernels),
    )


def whole_number(name, value, minimum):
    """``value`` as an int if it is a whole number >= ``minimum`` (8 or 8.0), else ValueError."""
    if not isinstance(value, bool) and isinstance(value, numbers.Real):
        if float(value).is_integer() and value >= minimum:
            return int(value)
    raise ValueError(f"`{name}` must be a whole number >= {minimum}, got {value!r}.")


def finite_number(name, value):
    """``value`` as a float if it is a finite real number, else ValueError."""
    if not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value):
        return float(value)
    raise ValueError(f"`{name}` must be a finite number, got {value!r}.")


def true_or_false(name, value):
    """``value`` as a bool if it is one (NumPy's too), else ValueError: bool("false") is True."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"`{name}` must be true or false, got {value!r}.")

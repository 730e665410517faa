"""Facts about the layers that both Keras flavours read, with no Keras import.

``keras_metapool.layers`` (tf_keras) and ``keras_metapool.keras3`` (Keras 3)
build the same layers; what they must agree on lives here, once, in a module
that imports neither Keras (so ``keras_metapool.keras3`` loads without
tf_keras).
"""

# Momentum of every BatchNormalization the package creates, in Keras terms
# (PyTorch's 0.1, the paper's). keras.applications uses 0.999, which suits
# long ImageNet runs but leaves the moving statistics of a few-epoch run
# unsettled: measured on 3,000 Fashion-MNIST images, 2 epochs at 64 px, the
# searched model then evaluated at chance (0.095) where 0.9 gave 0.37-0.43
# (0.59-0.68 with today's search defaults, tests/test_first_hour.py).
BATCH_NORM_MOMENTUM = 0.9

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

    Raises:
        ValueError: if ``reduction`` or ``min_channels`` is below 1.
    """
    if int(reduction) < 1:
        raise ValueError(f"`reduction` must be >= 1, got {reduction!r}.")
    if int(min_channels) < 1:
        raise ValueError(f"`min_channels` must be >= 1, got {min_channels!r}.")
    return dict(
        reduction=int(reduction),
        min_channels=int(min_channels),
        batch_norm_momentum=float(batch_norm_momentum),
        batch_norm_epsilon=float(batch_norm_epsilon),
        gate_bias=float(gate_bias),
        zero_gate_kernels=bool(zero_gate_kernels),
    )

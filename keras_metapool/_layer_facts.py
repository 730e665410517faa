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

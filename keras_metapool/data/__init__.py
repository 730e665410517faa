"""Datasets for keras_metapool.

For now this holds the offline Fashion-MNIST loader, which returns numpy
arrays read from local IDX files (no download, no TensorFlow import), and
``to_model_input`` to resize and scale them for MobileNetV2. The ``tf.data``
input pipelines built on top of them come later.
"""

from keras_metapool.data.fashion_mnist import (
    FASHION_MNIST_CLASS_NAMES,
    fashion_mnist_search_path,
    load_fashion_mnist,
)
from keras_metapool.data.preprocessing import to_model_input

__all__ = [
    "FASHION_MNIST_CLASS_NAMES",
    "fashion_mnist_search_path",
    "load_fashion_mnist",
    "to_model_input",
]

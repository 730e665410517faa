"""Datasets for keras_metapool.

- :func:`load_dataset`: ``tf.data`` pipelines of MobileNetV2 inputs from
  Fashion-MNIST, tensorflow-datasets or an image folder (batched, shuffled,
  augmented, shardable across replicas), with a :class:`DatasetInfo`;
- :func:`load_fashion_mnist`: the offline Fashion-MNIST reader, numpy arrays
  from local IDX files (no download; that module does not import TensorFlow);
- :func:`to_model_input`: resize and scale numpy images for MobileNetV2.
"""

from keras_metapool.data.fashion_mnist import (
    FASHION_MNIST_CLASS_NAMES,
    fashion_mnist_search_path,
    load_fashion_mnist,
)
from keras_metapool.data.pipelines import (
    AUGMENTATIONS,
    DATASET_SOURCES,
    DatasetInfo,
    DatasetNotFoundError,
    load_dataset,
)
from keras_metapool.data.preprocessing import to_model_input

__all__ = [
    "AUGMENTATIONS",
    "DATASET_SOURCES",
    "FASHION_MNIST_CLASS_NAMES",
    "DatasetInfo",
    "DatasetNotFoundError",
    "fashion_mnist_search_path",
    "load_dataset",
    "load_fashion_mnist",
    "to_model_input",
]

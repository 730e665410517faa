"""Datasets for keras_metapool.

- :func:`load_dataset`: ``tf.data`` pipelines of MobileNetV2 inputs from
  Fashion-MNIST, tensorflow-datasets or an image folder (batched, shuffled,
  augmented, shardable across replicas), with a :class:`DatasetInfo`;
- :func:`make_cluttered_fashion_mnist`: the spatial benchmark (an item
  scaled and placed among clutter on a 128x128 canvas), numpy arrays made
  from the same files (``load_dataset("cluttered_fashion_mnist")``);
- :func:`load_fashion_mnist`: the offline Fashion-MNIST reader, numpy arrays
  from local IDX files (no download; that module does not import TensorFlow);
- :func:`to_model_input`: resize and scale numpy images for MobileNetV2;
- :func:`split_for_search`: the weight part and the held-out part of a search;
- :func:`calibration_samples`: representative data (QAT calibration, int8
  export) as single images checked against the model's input.
"""

from keras_metapool.data.cluttered import (
    CLUTTERED_FASHION_MNIST,
    ClutteredParams,
    make_cluttered_fashion_mnist,
)
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
from keras_metapool.data.samples import (
    DEFAULT_CALIBRATION_SAMPLES,
    INPUT_NAME,
    calibration_samples,
)
from keras_metapool.data.splits import split_for_search

__all__ = [
    "AUGMENTATIONS",
    "CLUTTERED_FASHION_MNIST",
    "ClutteredParams",
    "DEFAULT_CALIBRATION_SAMPLES",
    "INPUT_NAME",
    "DATASET_SOURCES",
    "FASHION_MNIST_CLASS_NAMES",
    "DatasetInfo",
    "DatasetNotFoundError",
    "fashion_mnist_search_path",
    "load_dataset",
    "calibration_samples",
    "load_fashion_mnist",
    "make_cluttered_fashion_mnist",
    "split_for_search",
    "to_model_input",
]

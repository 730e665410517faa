"""Representative data: the calibration images of QAT and of the int8 TFLite export.

``calibration_samples`` turns whatever the user passes as
``representative_data`` (an array, a dataset, a generator) into single
images, checked against the model's input shape. ``quantize_model`` and
``to_tflite`` both read it through here.
"""

import numpy as np
import tensorflow as tf

from keras_metapool.data.preprocessing import warn_if_not_model_input

#: Calibration images used by default: enough for stable activation ranges
#: of MobileNetV2, few enough to keep conversion quick.
DEFAULT_CALIBRATION_SAMPLES = 128
#: Name of the exported models' input, and the key of dict elements of
#: representative data.
INPUT_NAME = "images"


def calibration_samples(data, input_shape, limit=DEFAULT_CALIBRATION_SAMPLES):
    """Up to ``limit`` single images ``(1, H, W, C)`` float32 from ``data``.

    Args:
        data: Images preprocessed as the model's input: a NumPy array
            ``(N, H, W, C)``, a ``tf.data.Dataset`` of images, ``(images,
            labels)`` or ``{"images": ...}``, or an iterable / generator /
            callable of such batches (a list of single images is a batch).
        input_shape: The model's ``(H, W, C)`` (None for a dynamic size).
        limit: Maximum number of images taken.

    Returns:
        A list of float32 arrays of shape ``(1, H, W, C)``.

    Raises:
        ValueError: if ``data`` is None, empty, of an unsupported type, or
            holds images of the wrong shape.
    """
    if data is None:
        raise ValueError(
            "representative_data is None; expected about 100-200 training images "
            "preprocessed as the model's input (a tf.data.Dataset, a NumPy array "
            "(N, H, W, C) or a generator of batches)."
        )
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"`num_calibration_samples` must be a positive int, got {limit!r}.")
    samples = []
    for batch in _iterate_batches(data):
        for image in _as_images(batch, input_shape):
            samples.append(image[None])
            if len(samples) >= limit:
                break
        if len(samples) >= limit:
            break
    if not samples:
        raise ValueError("representative_data is empty; expected at least one image.")
    warn_if_not_model_input(np.concatenate(samples), "representative_data")
    return samples


def _iterate_batches(data):
    """Yields the elements of any supported representative-data container."""
    if isinstance(data, tf.data.Dataset):
        yield from data.as_numpy_iterator()
    elif isinstance(data, (np.ndarray, tf.Tensor)):
        yield np.asarray(data)
    elif callable(data):
        yield from _iterate_batches(data())
    elif hasattr(data, "__iter__") and not isinstance(data, (str, bytes, dict)):
        yield from data
    else:
        raise ValueError(
            "representative_data must be a tf.data.Dataset, a NumPy array, or an "
            f"iterable / generator / callable of image batches; got {type(data).__name__}."
        )


def _as_images(element, input_shape):
    """The single images ``(H, W, C)`` of one element (batch, image or tuple)."""
    rank = len(input_shape)
    if isinstance(element, dict):
        if INPUT_NAME not in element:
            raise ValueError(
                f"A dict element of representative_data needs an {INPUT_NAME!r} key; "
                f"got keys {sorted(element)}."
            )
        element = element[INPUT_NAME]
    elif isinstance(element, (tuple, list)):
        if not element:
            raise ValueError("representative_data yielded an empty tuple/list.")
        items = [np.asarray(item) for item in element]
        if len(items) > 1 and all(i.ndim == rank and i.shape == items[0].shape for i in items):
            element = np.stack(items)  # a chunk of single images
        else:
            element = element[0]  # (images, labels) or [images] (the converter's convention)
    array = np.asarray(element, dtype=np.float32)
    if array.ndim == rank:
        array = array[None]
    if array.ndim != rank + 1 or not all(
        want is None or want == got for want, got in zip(input_shape, array.shape[1:])
    ):
        raise ValueError(
            f"representative_data images must have shape {tuple(input_shape)} (one image) "
            f"or (N, *{tuple(input_shape)}) (a batch), matching the model's input; "
            f"got {array.shape}."
        )
    return array


__all__ = ["DEFAULT_CALIBRATION_SAMPLES", "INPUT_NAME", "calibration_samples"]

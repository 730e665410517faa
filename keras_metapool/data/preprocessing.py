"""Turning raw image arrays into MobileNetV2 inputs, and telling when images are not."""

import warnings

import numpy as np

#: MobileNetV2's input range: ``preprocess_input`` maps pixels p to p / 127.5 - 1.
MODEL_INPUT_RANGE = (-1.0, 1.0)
#: Overshoot beyond it still taken as preprocessed (bilinear resizing, augmentation).
_RANGE_SLACK = 0.5


class InputRangeWarning(UserWarning):
    """Images given as model input do not look preprocessed to MobileNetV2's [-1, 1]."""


def warn_if_not_model_input(images, what):
    """One ``InputRangeWarning`` when ``images`` do not look like MobileNetV2 inputs.

    Two mistakes give no error downstream, only a useless result: raw pixels
    (0-255: calibration sets scales 128x too wide, an int8 input clips them
    to white) and pixels scaled to [0, 1] (``x / 255``: the negative half of
    the input range is never seen).

    Args:
        images: Array-like of images (any shape).
        what: How the caller names them in the message, e.g. "representative_data".

    Returns:
        Whether it warned.
    """
    values = np.asarray(images)
    if values.size == 0:
        return False
    low, high = float(values.min()), float(values.max())
    expected = (
        "MobileNetV2MP models take images preprocessed to [-1, 1]: "
        "keras_metapool.preprocess_input(pixels) or keras_metapool.data.to_model_input"
    )
    if low < MODEL_INPUT_RANGE[0] - _RANGE_SLACK or high > MODEL_INPUT_RANGE[1] + _RANGE_SLACK:
        problem = "raw pixels (0-255)?"
    elif low >= 0.0 and high > 0.0:
        problem = "no value below 0: pixels scaled to [0, 1] (x / 255)?"
    else:
        return False
    warnings.warn(
        f"{what} spans [{low:.2f}, {high:.2f}], {problem} {expected}.",
        InputRangeWarning,
        stacklevel=3,
    )
    return True


def to_model_input(images, image_size, batch_size=1024):
    """Grey or RGB uint8 images -> float32 ``(N, S, S, 3)`` in ``[-1, 1]``.

    Images are resized bilinearly to ``image_size`` x ``image_size``, grey
    images are repeated to 3 channels, and values are scaled as
    ``keras.applications.mobilenet_v2.preprocess_input`` does.

    Args:
        images: Raw pixels 0-255, uint8 (or a float array of such values):
            ``(N, H, W)`` or ``(N, H, W, 1 or 3)``.
        image_size: Output height and width (>= 1).
        batch_size: Images resized at a time (bounds peak memory).

    Returns:
        A float32 numpy array ``(N, image_size, image_size, 3)``.

    Raises:
        ValueError: for a wrong rank, channel count or size, or float images
            that are not 0-255 pixels (already scaled to [0, 1] or [-1, 1]:
            scaled again, they would become near-constant -1, a blank image).
    """
    import tensorflow as tf  # deferred: the loaders stay importable without TF

    images = np.asarray(images)
    if images.dtype != np.uint8 and images.size:
        low, high = float(images.min()), float(images.max())
        if low < 0.0 or high > 255.0 or 0.0 < high <= 1.0:
            raise ValueError(
                f"`images` span [{low:.3g}, {high:.3g}]; to_model_input takes raw pixels 0-255 "
                "(uint8). Already scaled to [0, 1] (x / 255)? Pass the original pixels. "
                "Already model input in [-1, 1]? Use them as they are."
            )
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"`images` must be (N, H, W), (N, H, W, 1) or (N, H, W, 3); got {images.shape}."
        )
    if int(image_size) < 1:
        raise ValueError(f"`image_size` must be >= 1, got {image_size!r}.")
    out = np.empty((len(images), image_size, image_size, 3), np.float32)
    for start in range(0, len(images), batch_size):
        chunk = tf.convert_to_tensor(images[start : start + batch_size], tf.float32)
        chunk = tf.image.resize(chunk, (image_size, image_size), method="bilinear")
        if chunk.shape[-1] == 1:
            chunk = tf.repeat(chunk, 3, axis=-1)
        out[start : start + batch_size] = chunk.numpy() / 127.5 - 1.0
    return out

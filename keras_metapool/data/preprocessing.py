"""Turning raw image arrays into MobileNetV2 inputs."""

import numpy as np


def to_model_input(images, image_size, batch_size=1024):
    """Grey or RGB uint8 images -> float32 ``(N, S, S, 3)`` in ``[-1, 1]``.

    Images are resized bilinearly to ``image_size`` x ``image_size``, grey
    images are repeated to 3 channels, and values are scaled as
    ``keras.applications.mobilenet_v2.preprocess_input`` does.

    Args:
        images: uint8 array ``(N, H, W)`` or ``(N, H, W, 1 or 3)``.
        image_size: Output height and width (>= 1).
        batch_size: Images resized at a time (bounds peak memory).

    Returns:
        A float32 numpy array ``(N, image_size, image_size, 3)``.

    Raises:
        ValueError: for a wrong rank, channel count or size.
    """
    import tensorflow as tf  # deferred: the loaders stay importable without TF

    images = np.asarray(images)
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

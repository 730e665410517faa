"""Preprocessing and augmentation of ``load_dataset``'s images (resize, RGB, [-1, 1], crops,
RandAugment)."""

from __future__ import annotations

import math

import tensorflow as tf

# Random resized crop ("basic" augmentation): share of the image area kept and
# aspect-ratio range of the crop. The lower area bound is 0.25 rather than
# Inception's 0.08: the sources here include 28x28 images, where an 8% crop
# keeps a handful of pixels.
CROP_AREA_RANGE = (0.25, 1.0)
CROP_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)
# RandAugment-style ops: this many ops per image, each drawn uniformly from
# _RANDAUGMENT_OPS, with these strengths.
RANDAUGMENT_LAYERS = 2
RANDAUGMENT_COLOR = 0.4  # brightness / contrast / saturation factor in 1 +- this
RANDAUGMENT_TRANSLATE = 0.15  # shift up to this share of the width / height
RANDAUGMENT_ROTATE_DEGREES = 20.0
RANDAUGMENT_CUTOUT = 0.3  # side of the cut-out square, share of the shorter side
_CUTOUT_FILL = 127.5  # mid grey: 0 after scaling to [-1, 1]


def _preprocess(images, image_size, augment, seed):
    """uint8 ``[B, H, W, C]`` (C = 1 or 3) -> float32 ``[B, S, S, 3]`` in ``[-1, 1]``.

    With ``augment="none"`` this is exactly ``to_model_input``: bilinear
    resize, grey repeated to RGB, ``x / 127.5 - 1``.
    """
    images = tf.cast(images, tf.float32)
    size = (image_size, image_size)
    if augment == "none":
        images = tf.image.resize(images, size, method="bilinear")
    else:
        crop_seed, rand_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        if augment == "randaugment":
            # At source resolution: cheaper than at image_size, same effect.
            images = _rand_augment(images, rand_seed)
        images = _random_resized_crop_and_flip(images, size, crop_seed)
    # Scale before repeating grey to RGB: a third of the arithmetic.
    images = _to_rgb(images / 127.5 - 1.0)
    images.set_shape([None, image_size, image_size, 3])
    return images


def _to_rgb(images):
    channels = images.shape[-1]
    if channels == 1:
        return tf.repeat(images, 3, axis=-1)
    if channels == 3:
        return images
    if channels is not None:
        if channels == 4:  # RGBA: drop alpha
            return images[..., :3]
        raise ValueError(f"Images must have 1, 3 or 4 channels, got {channels}.")
    return tf.cond(
        tf.shape(images)[-1] == 1,
        lambda: tf.repeat(images, 3, axis=-1),
        lambda: images[..., :3],
    )


def _uniform(seed, batch, low, high):
    return tf.random.stateless_uniform([batch], seed, minval=low, maxval=high)


def _random_resized_crop_and_flip(images, size, seed):
    """Per-image random crop (area and aspect ratio as CROP_*) resized to ``size``, half flipped."""
    batch = tf.shape(images)[0]
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 5))
    area = _uniform(seeds[0], batch, *CROP_AREA_RANGE)
    log_aspect = _uniform(seeds[1], batch, *(math.log(r) for r in CROP_ASPECT_RANGE))
    aspect = tf.exp(log_aspect)
    # Box sides as fractions of the image's height and width.
    height = tf.minimum(tf.sqrt(area / aspect), 1.0)
    width = tf.minimum(tf.sqrt(area * aspect), 1.0)
    top = _uniform(seeds[2], batch, 0.0, 1.0) * (1.0 - height)
    left = _uniform(seeds[3], batch, 0.0, 1.0) * (1.0 - width)
    right = left + width
    # crop_and_resize mirrors a box whose left edge is right of its right
    # edge: the horizontal flip comes free with the crop.
    flip = _uniform(seeds[4], batch, 0.0, 1.0) < 0.5
    left, right = tf.where(flip, right, left), tf.where(flip, left, right)
    boxes = tf.stack([top, left, top + height, right], axis=1)
    return tf.image.crop_and_resize(images, boxes, tf.range(batch), size, method="bilinear")


def _rand_augment(images, seed):
    """RANDAUGMENT_LAYERS ops per image, each one of _RANDAUGMENT_OPS at random."""
    batch = tf.shape(images)[0]
    for layer_seed in tf.unstack(tf.random.experimental.stateless_split(seed, RANDAUGMENT_LAYERS)):
        choice_seed, *op_seeds = tf.unstack(
            tf.random.experimental.stateless_split(layer_seed, 1 + len(_RANDAUGMENT_OPS))
        )
        choice = tf.random.stateless_uniform(
            [batch], choice_seed, minval=0, maxval=len(_RANDAUGMENT_OPS), dtype=tf.int32
        )
        # Every op on the whole batch, then each image keeps its chosen one:
        # vectorized, and cheap at source resolution.
        candidates = tf.stack(
            [op(images, s) for op, s in zip(_RANDAUGMENT_OPS, op_seeds)], axis=1
        )  # [B, num_ops, H, W, C]
        images = tf.gather(candidates, choice, axis=1, batch_dims=1)
    return images


def _factor(seed, batch, strength):
    """Per-image factor in 1 +- strength, shaped to broadcast over [B, H, W, C]."""
    return tf.reshape(_uniform(seed, batch, 1.0 - strength, 1.0 + strength), [-1, 1, 1, 1])


def _identity(images, seed):
    del seed
    return images


def _brightness(images, seed):
    return tf.clip_by_value(images * _factor(seed, tf.shape(images)[0], RANDAUGMENT_COLOR), 0, 255)


def _contrast(images, seed):
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    factor = _factor(seed, tf.shape(images)[0], RANDAUGMENT_COLOR)
    return tf.clip_by_value(mean + factor * (images - mean), 0, 255)


def _saturation(images, seed):
    # Blend with the grey version; grey images are unchanged.
    grey = tf.reduce_mean(images, axis=-1, keepdims=True)
    factor = _factor(seed, tf.shape(images)[0], RANDAUGMENT_COLOR)
    return tf.clip_by_value(grey + factor * (images - grey), 0, 255)


def _transform(images, transforms, fill_value=0.0):
    """Applies per-image projective transforms (output -> input point maps), zero fill."""
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=fill_value,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


def _translate(images, seed):
    shape = tf.shape(images)
    batch = shape[0]
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    dx_seed, dy_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    dx = _uniform(dx_seed, batch, -RANDAUGMENT_TRANSLATE, RANDAUGMENT_TRANSLATE) * width
    dy = _uniform(dy_seed, batch, -RANDAUGMENT_TRANSLATE, RANDAUGMENT_TRANSLATE) * height
    ones, zeros = tf.ones_like(dx), tf.zeros_like(dx)
    transforms = tf.stack([ones, zeros, -dx, zeros, ones, -dy, zeros, zeros], axis=1)
    return _transform(images, transforms)


def _rotate(images, seed):
    shape = tf.shape(images)
    batch = shape[0]
    center_y = (tf.cast(shape[1], tf.float32) - 1.0) / 2.0
    center_x = (tf.cast(shape[2], tf.float32) - 1.0) / 2.0
    limit = math.radians(RANDAUGMENT_ROTATE_DEGREES)
    angle = _uniform(seed, batch, -limit, limit)
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Output point (x, y) samples the input at the point rotated back by angle.
    offset_x = center_x - cos * center_x - sin * center_y
    offset_y = center_y + sin * center_x - cos * center_y
    zeros = tf.zeros_like(angle)
    transforms = tf.stack([cos, sin, offset_x, -sin, cos, offset_y, zeros, zeros], axis=1)
    return _transform(images, transforms)


def _cutout(images, seed):
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    side = tf.cast(tf.minimum(height, width), tf.float32) * RANDAUGMENT_CUTOUT
    y_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    center_y = _uniform(y_seed, batch, 0.0, 1.0) * tf.cast(height, tf.float32)
    center_x = _uniform(x_seed, batch, 0.0, 1.0) * tf.cast(width, tf.float32)
    rows = tf.cast(tf.range(height), tf.float32)[tf.newaxis, :, tf.newaxis]
    cols = tf.cast(tf.range(width), tf.float32)[tf.newaxis, tf.newaxis, :]
    inside = (tf.abs(rows - center_y[:, None, None]) < side / 2) & (
        tf.abs(cols - center_x[:, None, None]) < side / 2
    )
    return tf.where(inside[..., tf.newaxis], _CUTOUT_FILL, images)


_RANDAUGMENT_OPS = (_identity, _brightness, _contrast, _saturation, _translate, _rotate, _cutout)

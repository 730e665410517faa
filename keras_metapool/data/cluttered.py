"""Cluttered Fashion-MNIST: a spatial task built offline from Fashion-MNIST.

Each example is one Fashion-MNIST item, scaled by a random factor and placed
at a random position on a larger black canvas, over square crops cut from
other items of the same split (the clutter). The label is the item's. It is
the cluttered-MNIST protocol of Spatial Transformer Networks (Jaderberg et
al., arXiv 1506.02025: a digit on a 60x60 canvas with 8 random 6x6 crops of
other digits) with Fashion-MNIST items, a scale range and a larger canvas, so
that MobileNetV2's late blocks see real maps (at 128 px, blocks 6-12 work on
8x8 maps and blocks 13-16 on 4x4) and a crop of clutter looks locally like a
part of an item: telling the classes apart needs the whole item's shape.

Everything is a function of ``(split, parameters, seed)``: the same call gives
the same canvases, and item ``i`` is the same canvas whatever ``limit`` is.
The test canvases are made from the test split alone (item and clutter), so
no test canvas holds a piece of a training item. Only numpy; the canvases are
made in memory from the local IDX files (``load_fashion_mnist``), and the
last few results are kept for the life of the process.

Example::

    from keras_metapool.data import make_cluttered_fashion_mnist
    images, labels = make_cluttered_fashion_mnist("train", limit=1000)
    images.shape, images.dtype     # ((1000, 128, 128), dtype('uint8'))
"""

from __future__ import annotations

import dataclasses
import operator
import os

import numpy as np

from keras_metapool.data.fashion_mnist import load_fashion_mnist

__all__ = [
    "CLUTTERED_FASHION_MNIST",
    "ClutteredParams",
    "layout",
    "make_cluttered_fashion_mnist",
    "parse_cluttered_name",
]

#: The dataset's name in ``load_dataset`` and ``--dataset``.
CLUTTERED_FASHION_MNIST = "cluttered_fashion_mnist"
_ITEM_SIZE = 28  # Fashion-MNIST's side
_SPLIT_STREAMS = {"train": 1, "test": 2}  # the test canvases draw their own randomness
_CACHE: dict = {}
_CACHE_MAX = 4


@dataclasses.dataclass(frozen=True)
class ClutteredParams:
    """The parameters of cluttered Fashion-MNIST (the defaults are the benchmark's).

    Attributes:
        canvas: Side of the square canvas, in pixels.
        min_scale: Smallest scale of an item (its 28 px side times this).
        max_scale: Largest scale of an item; the canvas must hold it.
        clutter: Crops of other items per canvas (0: the item alone, translated).
        clutter_size: Side of each clutter crop, in canvas pixels; at most
            the side of the smallest scaled item.
        seed: Seed of the placement and clutter (not of training).
    """

    canvas: int = 128
    min_scale: float = 1.5
    max_scale: float = 2.5
    clutter: int = 16
    clutter_size: int = 14
    seed: int = 0

    def __post_init__(self):
        for name in ("canvas", "clutter", "clutter_size", "seed"):
            value = getattr(self, name)
            try:
                number = operator.index(value)
            except TypeError:
                raise ValueError(
                    f"cluttered Fashion-MNIST: `{name}` must be an integer, got {value!r}."
                ) from None
            object.__setattr__(self, name, number)
        for name in ("min_scale", "max_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise ValueError(
                    f"cluttered Fashion-MNIST: `{name}` must be a number, got {value!r}."
                )
            if not np.isfinite(value) or value <= 0:
                raise ValueError(
                    f"cluttered Fashion-MNIST: `{name}` must be a positive number, got {value!r}."
                )
            object.__setattr__(self, name, float(value))
        if self.min_scale > self.max_scale:
            raise ValueError(
                f"cluttered Fashion-MNIST: min_scale {self.min_scale:g} is above max_scale "
                f"{self.max_scale:g}; expected min_scale <= max_scale."
            )
        if self.clutter < 0:
            raise ValueError(
                f"cluttered Fashion-MNIST: `clutter` is the number of crops per canvas, "
                f"expected >= 0, got {self.clutter}."
            )
        if self.seed < 0:
            raise ValueError(f"cluttered Fashion-MNIST: `seed` must be >= 0, got {self.seed}.")
        largest = self.item_side(self.max_scale)
        if self.canvas < largest:
            raise ValueError(
                f"cluttered Fashion-MNIST: a canvas of {self.canvas} px cannot hold the largest "
                f"item ({_ITEM_SIZE} px x max_scale {self.max_scale:g} = {largest} px); use "
                f"canvas >= {largest} or max_scale <= {self.canvas / _ITEM_SIZE:.3g}."
            )
        smallest = self.item_side(self.min_scale)
        if not 1 <= self.clutter_size <= smallest:
            raise ValueError(
                f"cluttered Fashion-MNIST: `clutter_size` must be 1 to {smallest} px (the side "
                f"of the smallest item, {_ITEM_SIZE} px x min_scale {self.min_scale:g}), got "
                f"{self.clutter_size}."
            )

    @staticmethod
    def item_side(scale):
        """The side in pixels of an item drawn at ``scale``."""
        return int(_sides(scale))

    @property
    def name(self):
        """The ``load_dataset`` name that gives these parameters."""
        changed = [
            f"{field.name}={getattr(self, field.name)!r}"
            for field in dataclasses.fields(self)
            if getattr(self, field.name) != field.default
        ]
        return CLUTTERED_FASHION_MNIST + (":" + ",".join(changed) if changed else "")


def parse_cluttered_name(name):
    """The :class:`ClutteredParams` of a dataset name, or None for another dataset.

    ``"cluttered_fashion_mnist"`` gives the defaults;
    ``"cluttered_fashion_mnist:canvas=96,clutter=8"`` changes some of them
    (``canvas``, ``min_scale``, ``max_scale``, ``clutter``, ``clutter_size``,
    ``seed``).

    Raises:
        ValueError: for a malformed part, an unknown or repeated key, or a
            value out of range (see :class:`ClutteredParams`).
    """
    if not isinstance(name, str) or not (
        name == CLUTTERED_FASHION_MNIST or name.startswith(CLUTTERED_FASHION_MNIST + ":")
    ):
        return None
    keys = [field.name for field in dataclasses.fields(ClutteredParams)]
    values = {}
    text = name[len(CLUTTERED_FASHION_MNIST) + 1 :]
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in keys or key in values:
            why = "repeated" if key in values else "not KEY=VALUE" if not sep else "unknown key"
            raise ValueError(
                f"Dataset {name!r}: {part!r} is {why}; expected "
                f"{CLUTTERED_FASHION_MNIST}[:KEY=VALUE,...] with keys {', '.join(keys)}, e.g. "
                f"{CLUTTERED_FASHION_MNIST}:canvas=96,clutter=8."
            )
        try:
            values[key] = float(value) if key.endswith("scale") else int(value)
        except ValueError:
            kind = "a number" if key.endswith("scale") else "an integer"
            raise ValueError(
                f"Dataset {name!r}: {key} must be {kind}, got {value.strip()!r}."
            ) from None
    return ClutteredParams(**values)


def make_cluttered_fashion_mnist(
    split="train",
    params=None,
    limit=None,
    data_dir: str | os.PathLike | None = None,
):
    """Makes the canvases of one split of cluttered Fashion-MNIST.

    Item ``i`` of the split is drawn at a scale uniform in ``[min_scale,
    max_scale]`` at a uniform position that keeps it inside the canvas; each
    of the ``clutter`` crops is a ``clutter_size`` square window of another
    item of the same split (drawn at its own scale, window at a random place
    inside it), at a uniform position inside the canvas. Pixels combine by
    their maximum (bright objects on black), resizing is bilinear.

    Args:
        split: ``"train"`` or ``"test"``.
        params: A :class:`ClutteredParams` (default: the benchmark's).
        limit: Only the first ``limit`` canvases (the same ones as in a
            larger call).
        data_dir: Folder of the Fashion-MNIST IDX files (see
            ``load_fashion_mnist``).

    Returns:
        ``(images, labels)``: ``uint8`` ``(N, canvas, canvas)`` (read-only:
        ``.copy()`` before changing it) and ``int64`` ``(N,)``, labels 0..9
        (``FASHION_MNIST_CLASS_NAMES``).

    Raises:
        ValueError: for an unknown split or a ``limit`` below 1.
        FileNotFoundError: if the Fashion-MNIST files are not found.
    """
    params = ClutteredParams() if params is None else params
    if not isinstance(params, ClutteredParams):
        raise ValueError(f"`params` must be a ClutteredParams or None, got {params!r}.")
    if split not in _SPLIT_STREAMS:
        raise ValueError(f"Unknown split {split!r}; valid splits are {sorted(_SPLIT_STREAMS)}.")
    items, labels = load_fashion_mnist(split, data_dir=data_dir)
    count = len(labels) if limit is None else min(_positive(limit), len(labels))
    key = (split, params, count, id(items))
    if key not in _CACHE:
        canvases = _draw(items, params, count, split)
        canvases.setflags(write=False)
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = (canvases, items)  # items: keeps id(items) from being reused
    return _CACHE[key][0], labels[:count]


def _positive(limit):
    number = operator.index(limit)
    if number < 1:
        raise ValueError(f"`limit` must be a positive integer or None, got {limit!r}.")
    return number


def layout(params, total, split="train"):
    """Where everything goes on the canvases of a split of ``total`` items.

    Every random number is drawn here, for the whole split in a fixed order,
    so canvas ``i`` does not depend on how many canvases are made.

    Returns:
        A dict of integer arrays: ``item_side`` ``(N,)`` and ``item_yx``
        ``(N, 2)`` (top-left corner) of each item; ``clutter_source``
        ``(N, K)`` (the item a crop is cut from, never the canvas's own),
        ``clutter_side`` ``(N, K)`` (that item's scaled side), ``window_yx``
        ``(N, K, 2)`` (the crop's corner inside the scaled item) and
        ``clutter_yx`` ``(N, K, 2)`` (its corner on the canvas).
    """
    rng = np.random.default_rng([params.seed, _SPLIT_STREAMS[split]])
    count, side, crop = (total, params.clutter), params.canvas, params.clutter_size
    item_side = _sides(rng.uniform(params.min_scale, params.max_scale, total))
    item_yx = (rng.random((total, 2)) * (side - item_side[:, None] + 1)).astype(int)
    # An offset in 1..total-1 never picks the canvas's own item.
    offset = rng.integers(1, max(total, 2), count)
    clutter_source = (np.arange(total)[:, None] + offset) % max(total, 1)
    clutter_side = _sides(rng.uniform(params.min_scale, params.max_scale, count))
    window_yx = (rng.random((*count, 2)) * (clutter_side[..., None] - crop + 1)).astype(int)
    clutter_yx = (rng.random((*count, 2)) * (side - crop + 1)).astype(int)
    return {
        "item_side": item_side,
        "item_yx": item_yx,
        "clutter_source": clutter_source,
        "clutter_side": clutter_side,
        "window_yx": window_yx,
        "clutter_yx": clutter_yx,
    }


def _sides(scales):
    return np.maximum(1, np.rint(_ITEM_SIZE * np.asarray(scales))).astype(int)


def _draw(items, params, count, split):
    """The first ``count`` canvases of ``split`` (``items``: all of its 28x28 items)."""
    plan = layout(params, len(items), split)
    side, crop = params.canvas, params.clutter_size
    canvases = np.zeros((count, side, side), np.uint8)
    items = items.astype(np.float32)
    for i in range(count):
        canvas = canvases[i]
        for j in range(params.clutter):
            (top, left), (y, x) = plan["window_yx"][i, j], plan["clutter_yx"][i, j]
            matrix = _resize_matrix(plan["clutter_side"][i, j])
            rows, cols = matrix[top : top + crop], matrix[left : left + crop]
            patch = _to_uint8(rows @ items[plan["clutter_source"][i, j]] @ cols.T)
            region = canvas[y : y + crop, x : x + crop]
            np.maximum(region, patch, out=region)
        size, (y, x) = plan["item_side"][i], plan["item_yx"][i]
        matrix = _resize_matrix(size)
        region = canvas[y : y + size, x : x + size]
        np.maximum(region, _to_uint8(matrix @ items[i] @ matrix.T), out=region)
    return canvases


def _to_uint8(values):
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


_RESIZE_MATRICES: dict = {}


def _resize_matrix(size):
    """``(size, 28)``: bilinear resampling with half-pixel centres (``tf.image.resize``'s)."""
    if size not in _RESIZE_MATRICES:
        source = (np.arange(size) + 0.5) * _ITEM_SIZE / size - 0.5
        source = np.clip(source, 0, _ITEM_SIZE - 1)
        low = np.floor(source).astype(int)
        high = np.minimum(low + 1, _ITEM_SIZE - 1)
        weight = (source - low).astype(np.float32)
        matrix = np.zeros((size, _ITEM_SIZE), np.float32)
        matrix[np.arange(size), low] += 1 - weight
        matrix[np.arange(size), high] += weight
        _RESIZE_MATRICES[size] = matrix
    return _RESIZE_MATRICES[size]

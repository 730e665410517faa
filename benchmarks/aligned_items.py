"""A candidate planted task for the search's power: two items, on the same row or not.

Each 128x128 canvas holds two Fashion-MNIST items (scaled to ``--item_size``),
one in the left third and one in the right third of the canvas, so a third
of it apart. The label is whether their rows match: class ``same_row`` when
their vertical offsets differ by at most ``--same_row`` pixels, ``other_rows``
when by at least ``--other_rows`` (drawn up to the canvas side; none in
between). The items are drawn at random, so the label is geometry alone:
telling it needs a receptive field spanning both items at a resolution fine
enough for a few pixels of vertical offset. A planted task is useful only if
MobileNetV2 falls short of it and an enhancer helps; at the defaults
MobileNetV2 learns it (docs/search.md, "Power at full scale").

It writes an image folder (``OUTPUT/train/<class>/*.png``,
``OUTPUT/test/<class>/*.png``; the test canvases use the test split's items
only), which every command reads as ``--dataset=folder:OUTPUT``:

    python benchmarks/aligned_items.py --output=runs/aligned_items
    python benchmarks/study.py --dataset=folder:runs/aligned_items --sizes=128 \\
        --alphas=0.35 --seeds=0 --train_images=8000 --test_images=0 --epochs=8 \\
        --variants=mobilenet_v2 --output_dir=results/aligned
"""

import os
import sys

# This checkout's package, not an installed copy: the benchmarks measure this tree.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from PIL import Image  # noqa: E402

from keras_metapool.data.fashion_mnist import load_fashion_mnist  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output", "runs/aligned_items", "Folder to write (must not exist).")
flags.DEFINE_integer("train_images", 8000, "Training canvases (half of each class).")
flags.DEFINE_integer("test_images", 2000, "Test canvases (half of each class).")
flags.DEFINE_integer("canvas", 128, "Canvas side in pixels.")
flags.DEFINE_integer("item_size", 16, "Item side in pixels (Fashion-MNIST's 28 resized).")
flags.DEFINE_integer("same_row", 1, "Largest vertical offset of a same_row pair, in pixels.")
flags.DEFINE_integer("other_rows", 4, "Smallest vertical offset of an other_rows pair.")
flags.DEFINE_integer("seed", 0, "Seed of the layout (the test split draws its own stream).")

CLASSES = ("other_rows", "same_row")


def _items(split, size):
    """The split's items resized to ``size`` pixels (uint8), and each one's middle row.

    The middle row is that of the item's visible pixels (a sneaker fills the
    lower part of its 28x28 frame, trousers all of it), so "same row" means
    what it looks like.
    """
    images, _ = load_fashion_mnist(split)
    resized = [Image.fromarray(image).resize((size, size), Image.BILINEAR) for image in images]
    items = np.stack([np.asarray(image) for image in resized])
    rows = np.nonzero(items.max(axis=2) > 32)  # (item, row) of every visible row
    first = np.full(len(items), size, np.int64)
    last = np.zeros(len(items), np.int64)
    np.minimum.at(first, rows[0], rows[1])
    np.maximum.at(last, rows[0], rows[1])
    return items, (first + last) / 2.0


def _middle_rows(rng, label):
    """Two middle rows (canvas pixels) whose offset fits the label."""
    side = FLAGS.canvas
    first = float(rng.uniform(0, side))
    if label == 1:
        offset = float(rng.uniform(-FLAGS.same_row, FLAGS.same_row))
    else:
        offset = float(rng.uniform(FLAGS.other_rows, side)) * (1 if rng.random() < 0.5 else -1)
    return first, first + offset


def make_canvases(split, count, stream):
    """``(canvases uint8 [count, canvas, canvas], labels [count])``, classes alternating."""
    size, side = FLAGS.item_size, FLAGS.canvas
    items, middles = _items(split, size)
    rng = np.random.default_rng([FLAGS.seed, stream])
    third = side // 3
    canvases = np.zeros((count, side, side), np.uint8)
    labels = np.arange(count) % 2
    for index, label in enumerate(labels):
        while True:  # a layout with both items inside the canvas
            chosen = rng.integers(0, len(items), 2)
            tops = [round(row - middles[i]) for row, i in zip(_middle_rows(rng, label), chosen)]
            if all(0 <= top <= side - size for top in tops):
                break
        lefts = (
            int(rng.integers(0, third - size + 1)),
            int(rng.integers(side - third, side - size + 1)),
        )
        for item, top, left in zip(chosen, tops, lefts):
            canvases[index, top : top + size, left : left + size] = items[item]
    return canvases, labels


def main(argv):
    del argv
    if os.path.exists(FLAGS.output):
        raise SystemExit(f"aligned_items: {FLAGS.output} exists; choose another --output.")
    if FLAGS.canvas // 3 < FLAGS.item_size:
        raise SystemExit("aligned_items: --item_size must fit a third of --canvas.")
    for stream, (split, count) in enumerate(
        (("train", FLAGS.train_images), ("test", FLAGS.test_images)), start=1
    ):
        canvases, labels = make_canvases(split, count, stream)
        for name in CLASSES:
            os.makedirs(os.path.join(FLAGS.output, split, name))
        for index, (canvas, label) in enumerate(zip(canvases, labels)):
            path = os.path.join(FLAGS.output, split, CLASSES[label], f"{index:05d}.png")
            Image.fromarray(canvas).save(path)
        print(f"{split}: {count} canvases in {os.path.join(FLAGS.output, split)}")


if __name__ == "__main__":
    app.run(main)

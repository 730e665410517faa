"""Deterministic splits of a dataset: the weight part and the held-out part of a search."""

import tensorflow as tf

from keras_metapool._ranges import OPEN_UNIT


def split_for_search(dataset, fraction=0.5):
    """Splits a dataset into a weight part and a held-out part for alpha.

    Elements are dealt deterministically, interleaved: with ``fraction=0.5``
    every other element is held out (docs/method.md §4's 50/50 split). Split an
    unbatched dataset of examples (then batch both parts), before any
    shuffling; a dataset reshuffled each iteration would deal different
    elements to the two parts every epoch, and they would overlap.

    Args:
        dataset: A ``tf.data.Dataset``.
        fraction: Share of the elements held out for the alpha steps, in (0, 1).

    Returns:
        ``(train_part, arch_part)``, two ``tf.data.Dataset``.
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(f"`dataset` must be a tf.data.Dataset, got {type(dataset).__name__}.")
    fraction = float(OPEN_UNIT.check("fraction", fraction))

    def held_out(index):
        # Element i is held out when floor((i + 1) f) > floor(i f): evenly
        # interleaved, exactly round(n f) of n elements.
        i = tf.cast(index, tf.float64)
        return tf.floor((i + 1.0) * fraction) > tf.floor(i * fraction)

    numbered = dataset.enumerate()
    arch = numbered.filter(lambda i, _: held_out(i)).map(lambda _, element: element)
    train = numbered.filter(lambda i, _: tf.logical_not(held_out(i))).map(
        lambda _, element: element
    )
    return train, arch


__all__ = ["split_for_search"]

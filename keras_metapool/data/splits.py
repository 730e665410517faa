"""Deterministic splits of a dataset: the weight part and the held-out part of a search."""

import math

import tensorflow as tf

from keras_metapool._ranges import OPEN_UNIT


def held_out_count(num_examples, fraction):
    """How many of ``num_examples`` elements ``split_for_search`` holds out.

    ``floor(num_examples * fraction)``, in the float64 arithmetic the split's
    own filter uses, so the two can never disagree.
    """
    return int(math.floor(float(num_examples) * float(fraction)))


def split_for_search(dataset, fraction=0.5):
    """Splits a dataset into a weight part and a held-out part for the architecture steps.

    Elements are dealt deterministically, interleaved: with ``fraction=0.5``
    every other element is held out (docs/method.md §4's 50/50 split), and of
    ``n`` elements exactly ``floor(n * fraction)`` are held out
    (:func:`held_out_count`). Split an unbatched dataset of examples (then
    batch both parts), before any shuffling; a dataset reshuffled each
    iteration would deal different elements to the two parts every epoch,
    and they would overlap.

    When the dataset's length is known, both parts know theirs, so ``fit``
    knows its steps per epoch and ``PMPLCallback`` sizes its warm-up and its
    architecture learning rate in steps from the first epoch.

    Args:
        dataset: A ``tf.data.Dataset``.
        fraction: Share of the elements held out for the architecture steps, in (0, 1).

    Returns:
        ``(train_part, arch_part)``, two ``tf.data.Dataset``.

    Raises:
        ValueError: If ``dataset`` is not a ``tf.data.Dataset``, ``fraction``
            is outside (0, 1), or the dataset's known length leaves a part
            empty.
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(f"`dataset` must be a tf.data.Dataset, got {type(dataset).__name__}.")
    fraction = float(OPEN_UNIT.check("fraction", fraction))

    def held_out(index):
        # Element i is held out when floor((i + 1) f) > floor(i f): evenly
        # interleaved, and the count over i < n telescopes to floor(n f).
        i = tf.cast(index, tf.float64)
        return tf.floor((i + 1.0) * fraction) > tf.floor(i * fraction)

    numbered = dataset.enumerate()
    arch = numbered.filter(lambda i, _: held_out(i)).map(lambda _, element: element)
    train = numbered.filter(lambda i, _: tf.logical_not(held_out(i))).map(
        lambda _, element: element
    )
    # A filter hides the length; put it back where it is known.
    length = tf.get_static_value(dataset.cardinality())
    if length == tf.data.INFINITE_CARDINALITY:
        arch_length = train_length = tf.data.INFINITE_CARDINALITY
    elif length is not None and length >= 0:
        arch_length = held_out_count(length, fraction)
        train_length = int(length) - arch_length
        if arch_length == 0 or train_length == 0:
            raise ValueError(
                f"split_for_search: fraction={fraction} of {int(length)} element(s) leaves "
                f"{train_length} for the weights and {arch_length} held out; each part needs "
                "at least one. Split the unbatched examples, not batches, or change `fraction`."
            )
    else:
        return train, arch
    arch = arch.apply(tf.data.experimental.assert_cardinality(arch_length))
    train = train.apply(tf.data.experimental.assert_cardinality(train_length))
    return train, arch


__all__ = ["held_out_count", "split_for_search"]

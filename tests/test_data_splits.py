"""split_for_search: the weight part and the held-out part of a search."""

import numpy as np
import pytest
import tensorflow as tf

from keras_metapool.data import split_for_search


@pytest.mark.parametrize("fraction", [0.5, 0.2, 0.75])
def test_split_for_search_is_disjoint_complete_and_deterministic(fraction):
    dataset = tf.data.Dataset.range(40)
    train, arch = split_for_search(dataset, fraction)
    train_items = [int(v) for v in train]
    arch_items = [int(v) for v in arch]
    assert sorted(train_items + arch_items) == list(range(40))
    assert len(arch_items) == round(40 * fraction)
    assert arch_items == [int(v) for v in split_for_search(dataset, fraction)[1]]


def test_split_for_search_keeps_tuple_elements():
    dataset = tf.data.Dataset.from_tensor_slices((np.arange(6), np.arange(6) * 10))
    train, arch = split_for_search(dataset)
    assert [(int(a), int(b)) for a, b in arch] == [(1, 10), (3, 30), (5, 50)]
    assert [(int(a), int(b)) for a, b in train] == [(0, 0), (2, 20), (4, 40)]


def test_split_for_search_rejects_bad_input():
    with pytest.raises(ValueError, match="fraction"):
        split_for_search(tf.data.Dataset.range(4), 1.0)
    with pytest.raises(ValueError, match="tf.data.Dataset"):
        split_for_search([1, 2, 3])

"""split_for_search: the weight part and the held-out part of a search."""

import math

import numpy as np
import pytest
import tensorflow as tf

from keras_metapool.data import split_for_search
from keras_metapool.data.splits import held_out_count


@pytest.mark.parametrize("fraction", [0.5, 0.2, 0.75])
def test_split_for_search_is_disjoint_complete_and_deterministic(fraction):
    dataset = tf.data.Dataset.range(40)
    train, arch = split_for_search(dataset, fraction)
    train_items = [int(v) for v in train]
    arch_items = [int(v) for v in arch]
    assert sorted(train_items + arch_items) == list(range(40))
    assert len(arch_items) == held_out_count(40, fraction)
    assert arch_items == [int(v) for v in split_for_search(dataset, fraction)[1]]


def test_split_for_search_keeps_tuple_elements():
    dataset = tf.data.Dataset.from_tensor_slices((np.arange(6), np.arange(6) * 10))
    train, arch = split_for_search(dataset)
    assert [(int(a), int(b)) for a, b in arch] == [(1, 10), (3, 30), (5, 50)]
    assert [(int(a), int(b)) for a, b in train] == [(0, 0), (2, 20), (4, 40)]


@pytest.mark.parametrize("length", [7, 10, 41])
@pytest.mark.parametrize("fraction", [0.5, 0.3, 0.9])
def test_each_part_knows_its_length_and_it_is_the_length_it_has(length, fraction):
    # fit reads the length to know its steps per epoch (a filter hides it).
    train, arch = split_for_search(tf.data.Dataset.range(length), fraction)
    assert (
        int(arch.cardinality()) == held_out_count(length, fraction) == math.floor(length * fraction)
    )
    assert int(train.cardinality()) == length - held_out_count(length, fraction)
    # assert_cardinality fails on iteration if the stated length were wrong.
    assert len(list(arch)) + len(list(train)) == length


def test_a_part_of_unknown_or_infinite_length_stays_so():
    unknown = tf.data.Dataset.range(10).filter(lambda i: i < 5)
    assert all(
        int(p.cardinality()) == tf.data.UNKNOWN_CARDINALITY for p in split_for_search(unknown)
    )
    endless = tf.data.Dataset.range(10).repeat()
    assert all(
        int(p.cardinality()) == tf.data.INFINITE_CARDINALITY for p in split_for_search(endless)
    )
    assert [int(v) for v in split_for_search(endless)[1].take(6)] == [1, 3, 5, 7, 9, 1]


def test_split_for_search_rejects_bad_input():
    with pytest.raises(ValueError, match="fraction"):
        split_for_search(tf.data.Dataset.range(4), 1.0)
    with pytest.raises(ValueError, match="tf.data.Dataset"):
        split_for_search([1, 2, 3])
    with pytest.raises(ValueError, match=r"0 held out; each part needs at least one"):
        split_for_search(tf.data.Dataset.range(5), 0.1)

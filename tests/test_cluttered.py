"""Cluttered Fashion-MNIST (keras_metapool.data.cluttered): the spatial benchmark's data."""

import json

import numpy as np
import pytest
from cli_helpers import SMALL, run_cli
from test_fashion_mnist import write_idx

from keras_metapool.data import (
    ClutteredParams,
    DatasetNotFoundError,
    load_dataset,
    make_cluttered_fashion_mnist,
)
from keras_metapool.data import cluttered as cl
from keras_metapool.data import fashion_mnist as fm

SMALL_PARAMS = ClutteredParams(canvas=64, min_scale=1.0, max_scale=1.5, clutter=6, clutter_size=8)


@pytest.fixture(autouse=True)
def _fresh_caches():
    cl._CACHE.clear()
    fm._CACHE.clear()
    yield
    cl._CACHE.clear()
    fm._CACHE.clear()


def _write_items(folder, split, value, count=40):
    """``count`` items: a full 28x28 square of ``value`` each, labels 0..9 in turn."""
    names = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}[split]  # fmt: skip
    write_idx(folder / names[0], np.full((count, 28, 28), value, np.uint8))
    write_idx(folder / names[1], np.arange(count) % 10)


@pytest.fixture
def square_items(tmp_path):
    """Training items are squares of 200, test items squares of 100."""
    _write_items(tmp_path, "train", 200)
    _write_items(tmp_path, "test", 100)
    return tmp_path


def test_canvases_are_a_function_of_seed_and_index():
    first, labels = make_cluttered_fashion_mnist("train", SMALL_PARAMS, limit=50)
    cl._CACHE.clear()
    again, _ = make_cluttered_fashion_mnist("train", SMALL_PARAMS, limit=50)
    np.testing.assert_array_equal(first, again)
    # Canvas i is the same whatever the limit.
    fewer, fewer_labels = make_cluttered_fashion_mnist("train", SMALL_PARAMS, limit=20)
    np.testing.assert_array_equal(fewer, first[:20])
    np.testing.assert_array_equal(fewer_labels, labels[:20])
    # Labels are the items' own.
    np.testing.assert_array_equal(labels, fm.load_fashion_mnist("train", limit=50)[1])
    other_seed = ClutteredParams(**{**SMALL_PARAMS.__dict__, "seed": 1})
    different, _ = make_cluttered_fashion_mnist("train", other_seed, limit=50)
    assert (different != first).any(axis=(1, 2)).all()


def test_shapes_and_dtypes_are_what_load_dataset_documents():
    images, labels = make_cluttered_fashion_mnist("test", SMALL_PARAMS, limit=8)
    assert images.shape == (8, 64, 64) and images.dtype == np.uint8
    assert labels.shape == (8,) and labels.dtype == np.int64
    assert not images.flags.writeable
    dataset, info = load_dataset(
        SMALL_PARAMS.name, "train", image_size=64, batch_size=4, limit=8, training=True
    )
    batch, batch_labels = next(iter(dataset))
    assert batch.shape == (4, 64, 64, 3) and batch.dtype.name == "float32"
    assert batch_labels.dtype.name == "int32"
    assert -1.0 <= float(np.min(batch)) and float(np.max(batch)) <= 1.0
    assert info.num_classes == 10 and info.num_examples == 8 and info.image_size == 64
    # Without augmentation the pipeline only scales: canvas pixel p -> p / 127.5 - 1.
    dataset, _ = load_dataset(SMALL_PARAMS.name, "test", image_size=64, batch_size=8, limit=8)
    np.testing.assert_allclose(
        next(iter(dataset))[0][..., 0].numpy(), images / 127.5 - 1.0, atol=1e-6
    )


def test_test_canvases_hold_only_test_items(square_items):
    # Test items are 100 everywhere (bilinear keeps a constant), training items
    # 200: a single pixel above 100 on a test canvas would be a training item.
    params = ClutteredParams(canvas=64, min_scale=1.0, max_scale=1.5, clutter=12, clutter_size=8)
    test, _ = make_cluttered_fashion_mnist("test", params, data_dir=square_items)
    train, _ = make_cluttered_fashion_mnist("train", params, data_dir=square_items)
    assert test.max() == 100 and np.isin(test, (0, 100)).all()
    assert train.max() == 200 and np.isin(train, (0, 200)).all()


def test_item_and_clutter_lie_whole_inside_the_canvas(square_items):
    params = ClutteredParams(canvas=60, min_scale=1.0, max_scale=2.0, clutter=5, clutter_size=9)
    plan = cl.layout(params, 40, "test")
    canvas = params.canvas
    assert (plan["item_yx"] >= 0).all() and (
        plan["item_yx"] + plan["item_side"][:, None] <= canvas
    ).all()
    assert (plan["clutter_yx"] >= 0).all() and (plan["clutter_yx"] + 9 <= canvas).all()
    assert (plan["window_yx"] >= 0).all()
    assert (plan["window_yx"] + 9 <= plan["clutter_side"][..., None]).all()
    assert set(np.unique(plan["item_side"])) <= set(range(28, 57))
    assert (plan["clutter_source"] != np.arange(40)[:, None]).all()
    # The canvases show exactly the item's square and the crops' squares.
    images, _ = make_cluttered_fashion_mnist("test", params, data_dir=square_items)
    for i, image in enumerate(images):
        expected = np.zeros((canvas, canvas), bool)
        (y, x), side = plan["item_yx"][i], plan["item_side"][i]
        expected[y : y + side, x : x + side] = True
        for y, x in plan["clutter_yx"][i]:
            expected[y : y + 9, x : x + 9] = True
        np.testing.assert_array_equal(image > 0, expected)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"canvas": 40, "max_scale": 2.0}, "canvas of 40 px cannot hold the largest item"),
        ({"clutter": -1}, "number of crops per canvas, expected >= 0"),
        ({"clutter_size": 0}, "`clutter_size` must be 1 to"),
        ({"clutter_size": 40, "min_scale": 1.0}, "`clutter_size` must be 1 to 28 px"),
        ({"min_scale": 2.0, "max_scale": 1.0}, "min_scale 2 is above max_scale 1"),
        ({"min_scale": -1.0}, "`min_scale` must be a positive number"),
        ({"canvas": 64.5}, "`canvas` must be an integer"),
    ],
)
def test_bad_parameters_get_one_clear_error(arguments, message):
    with pytest.raises(ValueError, match=message):
        ClutteredParams(**arguments)


@pytest.mark.parametrize(
    "name, message",
    [
        ("cluttered_fashion_mnist:clutter=-2", "expected >= 0"),
        ("cluttered_fashion_mnist:size=3", "unknown key"),
        ("cluttered_fashion_mnist:clutter", "not KEY=VALUE"),
        ("cluttered_fashion_mnist:clutter=1,clutter=2", "repeated"),
        ("cluttered_fashion_mnist:canvas=big", "canvas must be an integer"),
    ],
)
def test_bad_names_fail_in_load_dataset_with_the_way_forward(name, message):
    with pytest.raises(ValueError, match=message):
        load_dataset(name, "train", image_size=64, limit=4)


def test_names_round_trip_and_missing_files_say_what_to_install(tmp_path):
    params = cl.parse_cluttered_name("cluttered_fashion_mnist:canvas=96,clutter=4,max_scale=2")
    assert params == ClutteredParams(canvas=96, clutter=4, max_scale=2.0)
    assert cl.parse_cluttered_name(params.name) == params
    assert cl.parse_cluttered_name("cluttered_fashion_mnist") == ClutteredParams()
    assert cl.parse_cluttered_name("fashion_mnist") is None
    with pytest.raises(DatasetNotFoundError, match="dataset-fashion-mnist"):
        load_dataset("cluttered_fashion_mnist", "train", data_dir=tmp_path, limit=4)


@pytest.mark.slow
def test_the_cli_trains_on_the_cluttered_dataset(tmp_path):
    result = run_cli(
        "train", *SMALL,
        "--dataset=cluttered_fashion_mnist:canvas=32,min_scale=0.8,max_scale=1,clutter=4",
        "--epochs=1", "--train_limit=64", "--test_limit=32", f"--output_dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "train_metrics.json").read_text())
    assert metrics["dataset"].startswith("cluttered_fashion_mnist:canvas=32")
    assert metrics["image_size"] == 32 and metrics["test_images"] == 32

"""Tests for keras_metapool.data.load_dataset: the three sources, augmentation, errors.

The tfds source is tested offline: a tiny GeneratorBasedBuilder defined here
is prepared into a temporary data_dir and loaded from its files (without its
code registered, as a dataset prepared on another machine would be).
"""

import gzip
import struct

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_metapool._keras import keras
from keras_metapool.data import (
    DATASET_SOURCES,
    FASHION_MNIST_CLASS_NAMES,
    DatasetInfo,
    DatasetNotFoundError,
    load_dataset,
    load_fashion_mnist,
    to_model_input,
)
from keras_metapool.data import fashion_mnist as fm

SIZE = 32
FOLDER_CLASSES = ("cat", "dog", "fox")
TFDS_CLASSES = ("circle", "square", "triangle")


def images_and_labels(dataset):
    """All (images, labels) of one pass over a batched dataset, as numpy."""
    batches = list(dataset.as_numpy_iterator())
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def first_batch(dataset):
    return next(iter(dataset.as_numpy_iterator()))


def check_model_input(images, labels, num_classes):
    assert images.dtype == np.float32 and images.shape[1:] == (SIZE, SIZE, 3)
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() < num_classes


# ------------------------------------------------------------------ fixtures


def random_image(rng, channels):
    return rng.integers(0, 256, size=(30, 40, channels), dtype=np.uint8)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """root/<split>/<class>/*.png, grey and RGB mixed; 'test' lacks the 'fox' class.

    Returns (root, {split: [(array, label), ...] in file order}).
    """
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    written = {}
    for split, classes, per_class in [
        ("train", FOLDER_CLASSES, 4),
        ("test", FOLDER_CLASSES[:2], 2),
    ]:
        written[split] = []
        for class_name in classes:
            (root / split / class_name).mkdir(parents=True)
            for i in range(per_class):
                image = random_image(rng, channels=1 if i % 2 else 3)
                path = root / split / class_name / f"{i:03d}.png"
                path.write_bytes(tf.io.encode_png(image).numpy())
                written[split].append((image, FOLDER_CLASSES.index(class_name)))
    (root / "train" / "cat" / "notes.txt").write_text("not an image: ignored")
    return root, written


class TinyShapes(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """3 classes of 40x30 grey images: 20 train, 6 test examples."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(30, 40, 1)),
                    "label": tfds.features.ClassLabel(names=TFDS_CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(20, 1), "test": self._generate_examples(6, 2)}

    def _generate_examples(self, count, seed):
        rng = np.random.default_rng(seed)
        for i in range(count):
            yield i, {"image": random_image(rng, channels=1), "label": i % 3}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    TinyShapes(data_dir=str(data_dir)).download_and_prepare()
    return data_dir


def write_idx(path, array):
    array = np.asarray(array, np.uint8)
    header = struct.pack(f">I{array.ndim}I", 0x0800 | array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


@pytest.fixture
def no_fashion_mnist(tmp_path, monkeypatch):
    """Every place Fashion-MNIST is looked for is an empty folder; returns them."""
    places = {name: tmp_path / name for name in ("env", "system", "keras_home", "tfds")}
    for folder in places.values():
        folder.mkdir()
    monkeypatch.setenv("KERAS_METAPOOL_FASHION_MNIST_DIR", str(places["env"]))
    monkeypatch.setattr(fm, "_SYSTEM_DIR", places["system"])
    monkeypatch.setenv("KERAS_HOME", str(places["keras_home"]))
    monkeypatch.setenv("TFDS_DATA_DIR", str(places["tfds"]))
    return places


# ------------------------------------------------------------ fashion_mnist


def test_fashion_mnist_eval_is_to_model_input_of_the_first_examples():
    dataset, info = load_dataset(
        "fashion_mnist", split="test", image_size=SIZE, batch_size=16, limit=40
    )
    assert info == DatasetInfo("fashion_mnist", 10, FASHION_MNIST_CLASS_NAMES, 40, SIZE)
    assert [len(y) for _, y in dataset.as_numpy_iterator()] == [16, 16, 8]
    images, labels = images_and_labels(dataset)
    check_model_input(images, labels, 10)
    raw_images, raw_labels = load_fashion_mnist("test", limit=40)
    np.testing.assert_array_equal(labels, raw_labels)
    np.testing.assert_allclose(images, to_model_input(raw_images, SIZE), atol=1e-6)
    # Grey became RGB: three equal channels.
    np.testing.assert_array_equal(images[..., 0], images[..., 2])


def test_fashion_mnist_from_the_keras_cache_when_nothing_else(no_fashion_mnist):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    cache = no_fashion_mnist["keras_home"] / "datasets" / "fashion-mnist"
    cache.mkdir(parents=True)
    write_idx(cache / "t10k-images-idx3-ubyte.gz", images)
    write_idx(cache / "t10k-labels-idx1-ubyte.gz", [3, 1, 4, 1, 5, 9])
    dataset, info = load_dataset("fashion_mnist", split="test", image_size=SIZE, batch_size=4)
    got_images, got_labels = images_and_labels(dataset)
    assert info.num_examples == 6 and got_labels.tolist() == [3, 1, 4, 1, 5, 9]
    np.testing.assert_allclose(got_images, to_model_input(images, SIZE), atol=1e-6)


class FashionMnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Stands in for tfds's fashion_mnist (same name, version and features), 5 examples."""

    VERSION = tfds.core.Version("3.0.1")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(28, 28, 1)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(), "test": self._generate_examples()}

    def _generate_examples(self):
        for i in range(5):
            yield i, {"image": np.full((28, 28, 1), 50 * i, np.uint8), "label": 9 - i}


def test_fashion_mnist_from_prepared_tfds_last(no_fashion_mnist):
    FashionMnist(data_dir=str(no_fashion_mnist["tfds"])).download_and_prepare()
    dataset, info = load_dataset("fashion_mnist", split="test", image_size=SIZE, batch_size=8)
    images, labels = images_and_labels(dataset)
    assert info.num_examples == 5 and info.class_names == FASHION_MNIST_CLASS_NAMES
    assert sorted(labels.tolist()) == [5, 6, 7, 8, 9]
    # Flat images stay flat: 50 * i scaled to [-1, 1].
    assert sorted(np.round(images.mean(axis=(1, 2, 3)), 4).tolist()) == pytest.approx(
        [50 * i / 127.5 - 1 for i in range(5)], abs=1e-4
    )


def test_fashion_mnist_missing_gives_one_message_with_every_place(no_fashion_mnist):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion_mnist")
    message = str(info.value)
    for folder in ("env", "system", "keras_home"):
        assert str(no_fashion_mnist[folder]) in message
    assert f"tensorflow-datasets 'fashion_mnist' in {no_fashion_mnist['tfds']}" in message
    assert "(Keras cache)" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "KERAS_METAPOOL_FASHION_MNIST_DIR" in message
    assert "tfds build fashion_mnist" in message
    assert isinstance(info.value, ValueError) and isinstance(info.value, FileNotFoundError)


def test_fashion_mnist_data_dir_is_the_only_place_searched(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion_mnist", data_dir=tmp_path)
    message = str(info.value)
    assert (
        f"    {tmp_path}\n" in message and "/usr/share/datasets" not in message.split("To fix")[0]
    )
    assert "apt-get install dataset-fashion-mnist" in message


# ------------------------------------------------------------ tfds / folder


@pytest.mark.slow
def test_tfds_dataset_prepared_in_data_dir(tfds_dir):
    dataset, info = load_dataset(
        "tfds:tiny_shapes",
        split="train",
        data_dir=tfds_dir,
        image_size=SIZE,
        batch_size=8,
        training=True,
        augment="randaugment",
    )
    assert info == DatasetInfo("tfds:tiny_shapes", 3, TFDS_CLASSES, 20, SIZE)
    images, labels = images_and_labels(dataset)
    assert [len(y) for _, y in dataset.as_numpy_iterator()] == [8, 8, 4]
    check_model_input(images, labels, 3)
    assert sorted(labels.tolist()) == sorted(i % 3 for i in range(20))
    np.testing.assert_array_equal(images[..., 0], images[..., 1])  # grey -> RGB


def test_tfds_eval_matches_the_stored_images(tfds_dir):
    dataset, info = load_dataset(
        "tfds:tiny_shapes", split="test[:4]", data_dir=tfds_dir, image_size=SIZE
    )
    images, labels = images_and_labels(dataset)
    stored = tfds.builder("tiny_shapes", data_dir=str(tfds_dir)).as_dataset(split="test[:4]")
    stored = list(stored.as_numpy_iterator())
    assert info.num_examples == 4 and labels.tolist() == [ex["label"] for ex in stored]
    expected = to_model_input(np.stack([ex["image"] for ex in stored]), SIZE)
    np.testing.assert_allclose(images, expected, atol=1e-5)


def _round_robin(written, per_class):
    """Written images in the stored order: the i-th file of every class, then the next."""
    return [written[label * per_class + i] for i in range(per_class) for label in range(3)]


def test_folder_eval_reads_every_image_round_robin_over_the_classes(image_folder):
    root, written = image_folder
    dataset, info = load_dataset(f"folder:{root}", split="train", image_size=SIZE, batch_size=5)
    assert info == DatasetInfo(f"folder:{root}", 3, FOLDER_CLASSES, 12, SIZE)
    images, labels = images_and_labels(dataset)
    check_model_input(images, labels, 3)
    stored = _round_robin(written["train"], per_class=4)
    assert labels.tolist() == [label for _, label in stored] == [0, 1, 2] * 4
    expected = np.concatenate([to_model_input(image[None], SIZE) for image, _ in stored])
    np.testing.assert_allclose(images, expected, atol=1e-5)
    # The first images of a limit hold every class, not the first classes only.
    limited, _ = load_dataset(f"folder:{root}", split="train", image_size=SIZE, limit=6)
    assert sorted(images_and_labels(limited)[1].tolist()) == [0, 0, 1, 1, 2, 2]


def test_folder_labels_mean_the_same_class_in_every_split(image_folder):
    root, written = image_folder
    _, train_info = load_dataset(f"folder:{root}", split="train", image_size=SIZE)
    dataset, test_info = load_dataset(f"folder:{root}", split="test", image_size=SIZE)
    # 'test' has no 'fox' folder, yet its classes and labels follow train's.
    assert test_info.class_names == train_info.class_names == FOLDER_CLASSES
    assert images_and_labels(dataset)[1].tolist() == [0, 1, 0, 1]


# -------------------------------------------------- determinism, augmentation


def training_batch(seed, augment="basic", **kwargs):
    dataset, _ = load_dataset(
        "fashion_mnist",
        image_size=SIZE,
        batch_size=32,
        training=True,
        augment=augment,
        seed=seed,
        limit=256,
        **kwargs,
    )
    return first_batch(dataset)


@pytest.mark.slow
@pytest.mark.parametrize("augment", ["basic", "randaugment"])
def test_same_seed_same_batches_other_seed_other_batches(augment):
    images, labels = training_batch(7, augment)
    again_images, again_labels = training_batch(7, augment)
    np.testing.assert_array_equal(images, again_images)
    np.testing.assert_array_equal(labels, again_labels)
    other_images, other_labels = training_batch(8, augment)
    assert not np.array_equal(labels, other_labels)
    assert not np.allclose(images, other_images)


def test_randaugment_adds_ops_to_the_basic_crop_and_flip():
    basic_images, basic_labels = training_batch(7, "basic")
    rand_images, rand_labels = training_batch(7, "randaugment")
    np.testing.assert_array_equal(basic_labels, rand_labels)  # same seed, same order
    changed = np.abs(basic_images - rand_images).max(axis=(1, 2, 3)) > 0.05
    # Two ops per image, one of seven is identity: nearly all images change.
    assert changed.mean() > 0.7


def test_each_epoch_is_reshuffled_and_augmented_anew(image_folder):
    root, _ = image_folder
    dataset, _ = load_dataset(
        f"folder:{root}", image_size=SIZE, batch_size=12, training=True, seed=1
    )
    (images_1, labels_1), (images_2, labels_2) = (first_batch(dataset) for _ in range(2))
    assert sorted(labels_1) == sorted(labels_2) and not np.array_equal(labels_1, labels_2)
    assert not np.allclose(np.sort(images_1.ravel()), np.sort(images_2.ravel()))
    # repeat=True: passes of the same split, each shuffled and augmented anew.
    repeated, _ = load_dataset(
        f"folder:{root}", image_size=SIZE, batch_size=12, training=True, seed=1, repeat=True
    )
    (images_1, labels_1), (images_2, labels_2) = repeated.take(2).as_numpy_iterator()
    assert sorted(labels_1) == sorted(labels_2) and not np.array_equal(labels_1, labels_2)
    assert not np.allclose(np.sort(images_1.ravel()), np.sort(images_2.ravel()))


def nearest_distances(images, references):
    """For each image, the max-abs distance to the closest reference image."""
    diff = np.abs(images[:, None] - references[None]).max(axis=(2, 3, 4))
    return diff.min(axis=1)


def test_augmentation_changes_training_images_only():
    eval_set, _ = load_dataset("fashion_mnist", image_size=SIZE, batch_size=64, limit=64)
    eval_images, eval_labels = images_and_labels(eval_set)
    again, _ = images_and_labels(eval_set)
    np.testing.assert_array_equal(eval_images, again)  # eval: never augmented

    for augment, changed in [("none", False), ("basic", True), ("randaugment", True)]:
        dataset, _ = load_dataset(
            "fashion_mnist",
            image_size=SIZE,
            batch_size=64,
            limit=64,
            training=True,
            augment=augment,
        )
        images, labels = images_and_labels(dataset)
        assert sorted(labels.tolist()) == sorted(eval_labels.tolist())
        distances = nearest_distances(images, eval_images)
        if changed:
            assert np.all(distances > 0.05), augment
        else:
            # Shuffled only: every image is one of the eval images, unchanged.
            assert np.all(distances < 1e-6)
            assert not np.array_equal(labels, eval_labels)


def test_search_parts_are_disjoint_and_cover_the_split_before_shuffling():
    full, info = load_dataset("fashion_mnist", image_size=SIZE, batch_size=64, limit=20)
    full_images, full_labels = images_and_labels(full)
    parts = {}
    for part in ("weights", "arch"):
        dataset, part_info = load_dataset(
            "fashion_mnist",
            image_size=SIZE,
            batch_size=64,
            limit=20,
            search_part=part,
            search_fraction=0.3,
        )
        parts[part] = images_and_labels(dataset)
        assert part_info.num_examples == len(parts[part][1])
    # split_for_search deals the examples interleaved: 0.3 of 20 -> 6 held out.
    assert len(parts["arch"][1]) == 6 and len(parts["weights"][1]) == 14
    held_out = np.floor((np.arange(20) + 1) * 0.3) > np.floor(np.arange(20) * 0.3)
    np.testing.assert_array_equal(parts["arch"][0], full_images[held_out])
    np.testing.assert_array_equal(parts["weights"][0], full_images[~held_out])
    # Training shuffles within a part, never across parts.
    dataset, _ = load_dataset(
        "fashion_mnist",
        image_size=SIZE,
        batch_size=64,
        limit=20,
        search_part="arch",
        search_fraction=0.3,
        training=True,
        augment="none",
    )
    images, _ = images_and_labels(dataset)
    assert np.all(nearest_distances(images, full_images[held_out]) < 1e-6)


def test_drop_remainder_gives_static_full_batches():
    dataset, _ = load_dataset(
        "fashion_mnist", image_size=SIZE, batch_size=16, limit=40, drop_remainder=True
    )
    assert dataset.element_spec[0].shape.as_list() == [16, SIZE, SIZE, 3]
    assert len(list(dataset)) == 2


def test_auto_shard_policy_is_data():
    dataset, _ = load_dataset("fashion_mnist", image_size=SIZE, limit=8)
    assert (
        dataset.options().experimental_distribute.auto_shard_policy
        == tf.data.experimental.AutoShardPolicy.DATA
    )


# ------------------------------------------------------------------- errors


def test_unknown_source_lists_the_accepted_forms():
    with pytest.raises(ValueError, match="Unknown dataset 'mnist'") as info:
        load_dataset("mnist")
    assert all(form in str(info.value) for form in DATASET_SOURCES)


def test_tfds_not_prepared_says_how_to_prepare(tfds_dir):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("tfds:mnist", data_dir=tfds_dir)
    message = str(info.value)
    assert f"'mnist' is not prepared in {tfds_dir}" in message
    assert f"tfds build mnist --data_dir={tfds_dir}" in message and "data_dir=" in message


def test_tfds_unknown_name(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="'no_such_dataset' is neither known to"):
        load_dataset("tfds:no_such_dataset", data_dir=tmp_path)


def test_tfds_unknown_split_lists_the_splits(tfds_dir):
    with pytest.raises(
        ValueError, match=r"no split 'validation'; its splits are \['test', 'train'\]"
    ):
        load_dataset("tfds:tiny_shapes", split="validation", data_dir=tfds_dir)


def test_folder_errors_say_what_layout_was_expected(tmp_path, image_folder):
    root, _ = image_folder
    layout = "expected the layout"
    with pytest.raises(DatasetNotFoundError, match=f"{tmp_path / 'nope'} does not exist: {layout}"):
        load_dataset(f"folder:{tmp_path / 'nope'}")
    with pytest.raises(
        DatasetNotFoundError, match=r"no 'validation' split folder \(found \['test', 'train'\]\)"
    ):
        load_dataset(f"folder:{root}", split="validation")
    (tmp_path / "flat" / "train").mkdir(parents=True)
    (tmp_path / "flat" / "train" / "a.png").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match=f"has no class subfolders: {layout}"):
        load_dataset(f"folder:{tmp_path / 'flat'}")
    (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=r"class folders \['cat'\] but no images"):
        load_dataset(f"folder:{tmp_path / 'empty'}")


@pytest.mark.parametrize("source", ["fashion_mnist", "folder"])
def test_the_training_stream_can_start_at_any_batch(source, image_folder):
    # Pass after pass, each shuffled and augmented by (seed, pass): a stream started at
    # batch k is the full stream from batch k, also across a pass boundary.
    name = "fashion_mnist" if source == "fashion_mnist" else f"folder:{image_folder[0]}"
    common = dict(image_size=32, batch_size=3, training=True, augment="randaugment", seed=5,
                  repeat=True, limit=10)  # fmt: skip
    full, info = load_dataset(name, **common)
    per_pass = -(-info.num_examples // 3)
    reference = [(x.numpy(), y.numpy()) for x, y in full.take(3 * per_pass)]
    for start in (1, per_pass, per_pass + 2):
        stream, _ = load_dataset(name, start_batch=start, **common)
        for (x, y), (want_x, want_y) in zip(stream.take(per_pass), reference[start:]):
            np.testing.assert_array_equal(y, want_y)
            np.testing.assert_array_equal(x, want_x)
    # Each pass holds every example once, in its own order.
    labels = [y for _, y in reference]
    first, second = (
        np.concatenate(labels[:per_pass]),
        np.concatenate(labels[per_pass : 2 * per_pass]),
    )
    assert sorted(first) == sorted(second) and len(first) == info.num_examples
    # The stream is a function of its own seed alone: the same under any global seed
    # (0 included: TensorFlow combines a global seed of 0 with an op seed by comparing them).
    for global_seed in (0, 7):
        keras.utils.set_random_seed(global_seed)
        stream, _ = load_dataset(name, start_batch=1, **common)
        (x, y), (want_x, want_y) = next(iter(stream)), reference[1]
        np.testing.assert_array_equal(y, want_y)
        np.testing.assert_array_equal(x, want_x)
    with pytest.raises(ValueError, match="needs training=True and repeat=True"):
        load_dataset(name, image_size=32, start_batch=2)


def test_a_folder_with_one_class_is_refused(tmp_path, image_folder):
    _, written = image_folder
    for split in ("train", "test"):
        (tmp_path / split / "cat").mkdir(parents=True)
        (tmp_path / split / "cat" / "0.png").write_bytes(
            tf.io.encode_png(written["train"][0][0]).numpy()
        )
    with pytest.raises(ValueError, match=r"has 1 class \('cat'\): classification needs at least 2"):
        load_dataset(f"folder:{tmp_path}")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"image_size": 16}, "`image_size` must be an integer >= 32"),
        ({"batch_size": 0}, "`batch_size` must be an integer >= 1"),
        ({"limit": 0}, "`limit` must be an integer >= 1"),
        ({"seed": 1.5}, "`seed` must be an integer >= 0"),
        ({"augment": "mixup"}, "`augment` must be one of"),
        ({"search_part": "alpha"}, "`search_part` must be None, 'weights' or 'arch'"),
        ({"search_fraction": 1.0}, r"`search_fraction` must be in \(0, 1\)"),
        ({"split": "validation"}, "Fashion-MNIST has splits 'train' and 'test'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_dataset("fashion_mnist", **kwargs)

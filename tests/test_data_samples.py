"""calibration_samples: representative data in any supported form, as checked single images."""

import warnings

import numpy as np
import pytest
import tensorflow as tf

from keras_metapool.data import calibration_samples, to_model_input

SIZE = 32


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(-1, 1, (40, SIZE, SIZE, 3)).astype(np.float32)


def test_representative_data_forms_give_the_same_calibration(images):
    shape = (SIZE, SIZE, 3)
    labels = np.zeros(len(images))
    reference = calibration_samples(images, shape, limit=10)
    forms = [
        tf.data.Dataset.from_tensor_slices((images, labels)).batch(4),  # (x, y) batches
        tf.data.Dataset.from_tensor_slices(images),  # single images
        lambda: (images[i : i + 3] for i in range(0, 30, 3)),  # a generator factory
        [[image] for image in images[:12]],  # the converter's own convention
        [list(images[i : i + 4]) for i in range(0, 12, 4)],  # chunks of single images
    ]
    for form in forms:
        samples = calibration_samples(form, shape, limit=10)
        assert len(samples) == 10
        np.testing.assert_array_equal(np.concatenate(samples), np.concatenate(reference))


def test_calibration_samples_refuse_what_is_not_images(images):
    with pytest.raises(ValueError, match=r"representative_data is None; expected"):
        calibration_samples(None, (SIZE, SIZE, 3))
    with pytest.raises(ValueError, match=r"must have shape \(32, 32, 3\).*got \(40, 16, 16, 3\)"):
        calibration_samples(images[:, :16, :16], (SIZE, SIZE, 3))
    with pytest.raises(ValueError, match=r"needs an 'images' key; got keys \['x'\]"):
        calibration_samples([{"x": images}], (SIZE, SIZE, 3))
    with pytest.raises(ValueError, match=r"`num_calibration_samples` must be a positive int"):
        calibration_samples(images, (SIZE, SIZE, 3), limit=0)


def test_images_that_are_not_preprocessed_warn_once(images):
    from keras_metapool.data.preprocessing import InputRangeWarning

    shape = (SIZE, SIZE, 3)
    raw = (images + 1.0) * 127.5  # 0-255 pixels
    with pytest.warns(
        InputRangeWarning, match=r"spans \[0\.\d+, 25\d\.\d+\], raw pixels"
    ) as caught:
        calibration_samples(raw, shape)
    assert len(caught) == 1
    with pytest.warns(InputRangeWarning, match=r"no value below 0: pixels scaled to \[0, 1\]"):
        calibration_samples(raw / 255.0, shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputRangeWarning)
        calibration_samples(images, shape)  # [-1, 1]
        calibration_samples(np.zeros((4, *shape), np.float32), shape)  # black: no sign of a mistake


def test_to_model_input_refuses_images_already_scaled():
    # Scaled a second time, [0, 1] or [-1, 1] images become about -1
    # everywhere: a blank input, and no error downstream.
    pixels = np.random.default_rng(0).integers(0, 256, (3, 8, 8), dtype=np.uint8)
    expected = to_model_input(pixels, SIZE)
    assert expected.min() < -0.9 and expected.max() > 0.9
    np.testing.assert_allclose(to_model_input(pixels.astype(np.float32), SIZE), expected)
    for scaled, span in [(pixels / 255.0, r"\[0, 1\]"), (pixels / 127.5 - 1.0, r"\[-1, 1\]")]:
        with pytest.raises(ValueError, match=r"takes raw pixels 0-255 .*" + span):
            to_model_input(scaled, SIZE)
    black = np.zeros((2, 8, 8), np.float32)  # no sign of a mistake
    np.testing.assert_array_equal(to_model_input(black, SIZE), -1.0)

"""Calibration of activation ranges from data, shared by both QAT routes (no Keras import).

``keras_metapool.quantization.calibrate_activation_ranges`` (tf_keras) and
``keras_metapool.keras3.calibrate_activation_ranges`` run the QAT model on
calibration images in inference mode; every moving-average range records each
batch's min and max here and is set to their mean over the batches seen.
"""

import warnings

from keras_metapool._layer_facts import UNSETTLED_BATCH_NORM

#: What quantize_model (either route) logs when it gets no representative data.
NO_CALIBRATION_DATA = (
    "quantize_model: no representative_data, so activation ranges start at [-6, 6] and move "
    "slowly (moving average, decay 0.999): short QAT runs clip wide activations (SSP's and "
    "hard swish's products reach 20 and more). Pass about 256 training images as "
    "representative_data to calibrate them."
)


class CollapsedRangeWarning(UserWarning):
    """Calibration found activation ranges of zero width (a tensor that is always 0)."""


class RangeStatistics:
    """Running means of batch minima and maxima, one entry per range.

    Each batch's min and max are widened to include 0 (TFLite ranges hold 0);
    the range is the mean over batches: where TF-MOT's moving average (decay
    0.999) would arrive after thousands of training steps, in a few batches.
    """

    def __init__(self):
        self._seen = {}

    def record(self, key, name, low, high):
        """Adds one batch (``low``/``high``: its min and max); returns the range to set."""
        seen = self._seen.setdefault(key, [0.0, 0.0, 0, name])
        seen[0] += min(float(low), 0.0)
        seen[1] += max(float(high), 0.0)
        seen[2] += 1
        mean_low = seen[0] / seen[2]
        return mean_low, max(seen[1] / seen[2], mean_low + 1e-6)

    def collapsed(self):
        """Names of the ranges whose every batch was all zeros."""
        return sorted(name for low, high, _, name in self._seen.values() if high - low <= 0.0)

    def __len__(self):
        return len(self._seen)


def warn_if_collapsed(statistics, model_name, num_images, stacklevel=3):
    """One ``CollapsedRangeWarning`` naming the ranges that stayed [0, 0], if any."""
    collapsed = statistics.collapsed()
    if not collapsed:
        return
    warnings.warn(
        f"{len(collapsed)} of {len(statistics)} activation ranges of '{model_name}' "
        f"collapsed on the {num_images} calibration images (every value 0): "
        f"{', '.join(collapsed[:5])}{', ...' if len(collapsed) > 5 else ''}. "
        "The int8 model passes nothing through them. Likely causes: an untrained float "
        f"model, {UNSETTLED_BATCH_NORM}, or calibration images not preprocessed like the "
        "model's input ([-1, 1] for MobileNetV2MP).",
        CollapsedRangeWarning,
        stacklevel=stacklevel,
    )

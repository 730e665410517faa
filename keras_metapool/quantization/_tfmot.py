"""The one place keras_metapool imports TF Model Optimization (TF-MOT)."""

import os
import sys

import tensorflow as tf

#: The variable TF-MOT sets on import (``tensorflow_model_optimization``'s
#: ``compat.py``), which decides what ``tf.keras`` resolves to.
_LEGACY_KERAS_VARIABLE = "TF_USE_LEGACY_KERAS"


def import_tfmot():
    """TF-MOT, imported without changing ``tf.keras`` or ``os.environ`` for the program.

    TF-MOT's import sets ``TF_USE_LEGACY_KERAS=1`` and reads ``tf.keras``,
    which would resolve it to Keras 2 for the rest of the process (or not,
    had the program used it first). ``tf.keras`` is resolved first, under
    the program's own setting, and the variable is put back after; TF-MOT
    itself uses ``tf_keras`` either way.
    """
    if "tensorflow_model_optimization" not in sys.modules:
        before = os.environ.get(_LEGACY_KERAS_VARIABLE)
        getattr(tf.keras, "__name__", None)  # tf.keras is lazy: resolve it now
        try:
            import tensorflow_model_optimization  # noqa: F401
        finally:
            if before is None:
                os.environ.pop(_LEGACY_KERAS_VARIABLE, None)
            else:
                os.environ[_LEGACY_KERAS_VARIABLE] = before
    import tensorflow_model_optimization as tfmot

    return tfmot

"""What the training subcommands share, by concern: ``training_data`` (splits, the
training stream), ``training_models`` (models, optimizers, loading) and
``training_loop`` (callbacks, resume, ``fit``). The subcommands read them through
this module.
"""

from keras_metapool.cli.training_data import (
    backup_epoch,
    calibration_images,
    load_split,
    load_training_stream,
    one_hot_labels,
    resumed_epoch,
    steps_per_epoch,
    take_images,
)
from keras_metapool.cli.training_loop import (
    AtomicModelCheckpoint,
    NaturalOrderCSVLogger,
    fit_timed,
    interruption_advice,
    natural_key,
    remove_empty_backup,
    tensorboard_available,
    training_callbacks,
)
from keras_metapool.cli.training_models import (
    ACCURACY,
    build_for_training,
    build_model,
    compile_model,
    evaluate_accuracy,
    learning_rate_schedule,
    load_model,
    make_optimizer,
)

__all__ = [
    "ACCURACY",
    "AtomicModelCheckpoint",
    "NaturalOrderCSVLogger",
    "backup_epoch",
    "build_for_training",
    "build_model",
    "calibration_images",
    "compile_model",
    "evaluate_accuracy",
    "fit_timed",
    "interruption_advice",
    "learning_rate_schedule",
    "load_model",
    "load_split",
    "load_training_stream",
    "make_optimizer",
    "natural_key",
    "one_hot_labels",
    "remove_empty_backup",
    "resumed_epoch",
    "steps_per_epoch",
    "take_images",
    "tensorboard_available",
    "training_callbacks",
]

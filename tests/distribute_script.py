"""Trains a tiny model for a few steps under make_strategy, in its own process.

Started by test_distribute.py: logical CPU devices and collective ops must be
configured before TensorFlow initializes, which the test process has long
done. Usage::

    python distribute_script.py mirrored OUT.npz        # 2 logical CPUs
    TF_CONFIG=... python distribute_script.py multi_worker OUT.npz

Writes to OUT.npz what the test checks: the number of replicas, the labels of
the first global batch and of this process's first per-replica batches, the
number of training steps, the losses and the weights before and after.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_metapool.distribute import make_strategy  # noqa: E402

MODE, OUT = sys.argv[1], sys.argv[2]
# First thing: the strategy (multi_worker) and the CPU split (mirrored) must
# come before any other TensorFlow op.
strategy = make_strategy(MODE, cpu_devices=2 if MODE == "mirrored" else None)

from keras_metapool._keras import keras  # noqa: E402
from keras_metapool.data import load_dataset  # noqa: E402

GLOBAL_BATCH = 16
DATA = dict(image_size=32, batch_size=GLOBAL_BATCH, training=True, limit=64, seed=3)


def tiny_model():
    return keras.Sequential(
        [
            keras.layers.Conv2D(4, 3, strides=2, activation="relu", input_shape=(32, 32, 3)),
            keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )


class CountSteps(keras.callbacks.Callback):
    steps = 0

    def on_train_batch_end(self, batch, logs=None):
        CountSteps.steps += 1


keras.utils.set_random_seed(0)
# Separate, identical datasets: each is iterated from its first epoch.
global_labels = next(iter(load_dataset("fashion_mnist", **DATA)[0]))[1].numpy()
distributed = strategy.experimental_distribute_dataset(load_dataset("fashion_mnist", **DATA)[0])
images, labels = next(iter(distributed))
local_images = [x.numpy() for x in strategy.experimental_local_results(images)]
local_labels = [y.numpy() for y in strategy.experimental_local_results(labels)]

with strategy.scope():
    model = tiny_model()
    model.compile(
        keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
before = np.concatenate([w.ravel() for w in model.get_weights()])
train, info = load_dataset("fashion_mnist", **DATA)
history = model.fit(train, epochs=2, callbacks=[CountSteps()], verbose=0)
after = np.concatenate([w.ravel() for w in model.get_weights()])

np.savez(
    OUT,
    replicas=strategy.num_replicas_in_sync,
    num_examples=info.num_examples,
    global_labels=global_labels,
    local_labels=np.stack(local_labels),
    local_image_shapes=np.array([x.shape for x in local_images]),
    steps=CountSteps.steps,
    loss=np.array(history.history["loss"]),
    before=before,
    after=after,
)

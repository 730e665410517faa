"""Runs one PMPL search on one device and under MirroredStrategy (2 CPUs).

Started in its own process by test_pmpl_distributed.py: logical devices
must be configured before TensorFlow initialises, which the test process
has long done. Prints one JSON line with both results.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import block_or_scatter_task, tiny_search_model  # noqa: E402

from keras_metapool._keras import keras  # noqa: E402
from keras_metapool.search import PMPLCallback  # noqa: E402

CANDIDATES = ("identity", "max3", "avg3")


def search(strategy):
    keras.utils.set_random_seed(0)
    x, y = block_or_scatter_task(1024, seed=0)
    xa, ya = block_or_scatter_task(1024, seed=1)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    arch = tf.data.Dataset.from_tensor_slices((xa, ya)).batch(32)
    with strategy.scope():
        model = tiny_search_model(CANDIDATES, points=(1,))
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", ["accuracy"])
    pmpl = PMPLCallback(arch_data=arch, learning_rate=0.01, verbose=0)
    history = model.fit(train, epochs=6, callbacks=[pmpl], verbose=0)
    row = pmpl.summary_rows()[0]
    return {
        "replicas": strategy.num_replicas_in_sync,
        "ops": list(row["ops"]),
        "fixed_at_step": row["fixed_at_step"],
        "accuracy": history.history["accuracy"][-1],
        "arch_batches": int(model._pmpl_state.arch_batches.numpy()),
    }


if __name__ == "__main__":
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    single = search(tf.distribute.OneDeviceStrategy(devices[0]))
    mirrored = search(tf.distribute.MirroredStrategy(devices))
    print(json.dumps({"single": single, "mirrored": mirrored}))

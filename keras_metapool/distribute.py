"""``tf.distribute`` strategies by name: one machine, several GPUs, several machines, TPUs.

    >>> strategy = make_strategy("mirrored")          # all local GPUs (or CPUs)
    >>> with strategy.scope():
    ...     model = MobileNetV2MP(...)
    ...     model.compile(...)
    >>> train, info = load_dataset("fashion_mnist", batch_size=256, training=True)
    >>> model.fit(train, epochs=10)

**Global batch.** ``keras_metapool.data.load_dataset(batch_size=B)`` yields
batches of B examples in total; under a strategy with N replicas in sync
(``strategy.num_replicas_in_sync``) ``model.fit`` splits each into N
per-replica batches of B / N, computes the gradients on each replica and
sums them (all-reduce), so one step sees B examples whatever N is. Keep B
divisible by N, scale B with N to keep the per-device batch, and scale the
learning rate with B as usual. Losses and metrics of ``compile``/``fit`` are
already averaged over the global batch.

**Several machines** (``"multi_worker"``): start the same program on every
machine, each with a ``TF_CONFIG`` environment variable (JSON) naming the
whole cluster and the machine's own place in it::

    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                "task": {"type": "worker", "index": 0}}'   # index 1 on host2

Every worker loads the dataset with the same arguments and the same global
batch size; ``load_dataset`` sets the auto-shard policy to ``DATA``, so each
worker trains on its own part of every global batch. Worker 0 is the chief:
let only it write checkpoints and exports (or give the others temporary
folders). The strategy must be created first thing in the program, before any
other TensorFlow op.

**Cloud TPU** (``"tpu"``): on a TPU VM pass ``tpu="local"``; with a TPU node
pass its name or ``grpc://IP:8470`` address; in Colab or on GKE, where
``TPU_NAME`` or ``KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS`` is set, ``tpu`` may be
left out. Use ``drop_remainder=True`` in ``load_dataset`` (TPUs need static
shapes), and note that the data is read by the host: for datasets on
``gs://`` pass a ``data_dir`` the TPU can reach.

**Testing on CPU**: ``make_strategy("mirrored", cpu_devices=2)`` splits the
CPU into two logical devices, so ``MirroredStrategy`` runs two replicas
without a GPU. Do it first thing in a fresh process.
"""

from __future__ import annotations

import json
import operator
import os

import tensorflow as tf

__all__ = ["STRATEGIES", "make_strategy"]

#: Strategy names accepted by :func:`make_strategy`.
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")

_TF_CONFIG_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}\''
)


def make_strategy(name="default", tpu=None, cpu_devices=None):
    """Creates a ``tf.distribute.Strategy`` by name.

    See the module docstring for the global batch size, ``TF_CONFIG`` and
    Cloud TPU usage.

    Args:
        name: One of ``STRATEGIES``:

            - ``"default"``: ``tf.distribute.get_strategy()``, the current
              strategy (one device unless inside another strategy's scope).
            - ``"mirrored"``: ``MirroredStrategy`` over all local GPUs, or over
              all logical CPUs when there is no GPU (see ``cpu_devices``).
            - ``"multi_worker"``: ``MultiWorkerMirroredStrategy`` over the
              cluster in the ``TF_CONFIG`` environment variable.
            - ``"tpu"``: ``TPUClusterResolver(tpu)``, then
              ``initialize_tpu_system`` and ``TPUStrategy``.
        tpu: For ``"tpu"``: ``"local"`` on a TPU VM, a TPU name or a
            ``grpc://`` address; ``None`` only where the environment names the
            TPU (``TPU_NAME``, ``KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS``). Must be
            ``None`` for the other strategies.
        cpu_devices: If given (an integer >= 2), the CPU is split into that
            many logical devices before the strategy is created, e.g. to test
            ``"mirrored"`` without GPUs. Must happen before TensorFlow
            initializes its devices (before any op runs or model is built);
            calling again with the same number is a no-op.

    Returns:
        The ``tf.distribute.Strategy``.

    Raises:
        ValueError: for an unknown ``name``, a bad ``cpu_devices``, ``tpu``
            given for a non-TPU strategy, a missing or malformed
            ``TF_CONFIG`` (the message says what it must contain), or no TPU
            address where one is needed.
        RuntimeError: if ``cpu_devices`` comes after TensorFlow initialized
            its devices with a different number of CPUs.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}: expected one of {STRATEGIES}.")
    if tpu is not None and name != "tpu":
        raise ValueError(f"`tpu` is only used by the 'tpu' strategy, got tpu={tpu!r} for {name!r}.")
    if cpu_devices is not None:
        _split_cpu(cpu_devices)

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if not devices:
            # MirroredStrategy() alone would take only the first CPU.
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        _check_tf_config(os.environ.get("TF_CONFIG"))
        return tf.distribute.MultiWorkerMirroredStrategy()
    return _tpu_strategy(tpu)


def _split_cpu(cpu_devices):
    try:
        count = operator.index(cpu_devices)
    except TypeError:
        count = None
    if count is None or count < 2:
        raise ValueError(
            f"`cpu_devices` must be an integer >= 2 (the number of logical CPU devices), "
            f"got {cpu_devices!r}."
        )
    cpu = tf.config.list_physical_devices("CPU")[0]
    configured = tf.config.get_logical_device_configuration(cpu)
    if configured is not None and len(configured) == count:
        return  # already split this way
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError as e:
        raise RuntimeError(
            f"cpu_devices={count} came too late: TensorFlow has already initialized its "
            f"devices ({len(tf.config.list_logical_devices('CPU'))} logical CPU). Call "
            "make_strategy(..., cpu_devices=N) first thing in a fresh process, before any "
            f"TensorFlow op runs or any model is built. ({e})"
        ) from None


def _check_tf_config(raw):
    """Raises a ValueError saying what TF_CONFIG must contain unless ``raw`` is valid."""
    must = (
        "TF_CONFIG must be a JSON object with 'cluster' (a map from task type, at least "
        "'worker', to a list of 'host:port' addresses, the same on every worker) and 'task' "
        "({'type': 'worker', 'index': this worker's position in that list}), e.g. "
        f"{_TF_CONFIG_EXAMPLE}"
    )
    if not raw:
        raise ValueError(
            "The 'multi_worker' strategy reads the cluster from the TF_CONFIG environment "
            f"variable, which is not set. Set it on every worker. {must}"
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {raw!r}. {must}") from None
    problem = _tf_config_problem(config)
    if problem:
        raise ValueError(f"TF_CONFIG is malformed: {problem} (got {raw!r}). {must}")


def _tf_config_problem(config):
    if not isinstance(config, dict):
        return "it is not a JSON object"
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        return "'cluster' is missing or not a non-empty object"
    for task_type, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses:
            return f"cluster[{task_type!r}] is not a non-empty list of addresses"
        for address in addresses:
            host, _, port = str(address).rpartition(":")
            if not isinstance(address, str) or not host or not port.isdigit():
                return f"cluster[{task_type!r}] address {address!r} is not 'host:port'"
    if "worker" not in cluster and "chief" not in cluster:
        return "'cluster' has neither 'worker' nor 'chief'"
    if not isinstance(task, dict):
        return "'task' is missing or not an object"
    task_type, index = task.get("type"), task.get("index")
    if task_type not in cluster:
        return f"task type {task_type!r} is not one of the cluster's {sorted(cluster)}"
    if not isinstance(index, int) or isinstance(index, bool):
        return f"task index {index!r} is not an integer"
    if not 0 <= index < len(cluster[task_type]):
        return f"task index {index} is outside 0..{len(cluster[task_type]) - 1}"
    return None


def _tpu_strategy(tpu):
    if tpu is None and not (
        os.environ.get("TPU_NAME") or os.environ.get("KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS")
    ):
        raise ValueError(
            "The 'tpu' strategy needs to know which TPU: pass tpu='local' on a Cloud TPU VM, "
            "the TPU name or its 'grpc://IP:8470' address for a TPU node (--tpu=...), or set "
            "TPU_NAME."
        )
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    except (ValueError, RuntimeError) as e:
        raise ValueError(
            f"No TPU found for tpu={tpu!r} ({e}). On a TPU VM use tpu='local'; otherwise the "
            "TPU name or 'grpc://IP:8470'."
        ) from None
    if tpu != "local":
        tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)

"""Helpers shared by the benchmark scripts, from ``keras_metapool.study.machine``.

The scripts run as ``python benchmarks/NAME.py``, which puts this folder on
``sys.path``, so they import it as ``_common``. The helpers live in the
package (the study uses them too); this module only names them here.
"""

from keras_metapool.study.machine import (  # noqa: F401
    cpu_model,
    interleaved_latency,
    load_average,
    machine_description,
    settle_batch_norms,
)

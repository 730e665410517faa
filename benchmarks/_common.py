"""Helpers shared by the benchmark scripts, from ``keras_metapool.study.machine``.

The scripts run as ``python benchmarks/NAME.py``, which puts this folder on
``sys.path``, so they import it as ``_common``. The helpers live in the
package (the study uses them too); this module names them here, and holds
``write_results``, the JSON record the scripts' ``--json`` writes.
"""

import json
import sys
import time

from keras_metapool.study.machine import (  # noqa: F401
    cpu_model,
    interleaved_latency,
    load_average,
    machine_description,
    settle_batch_norms,
)


def write_results(path, settings, rows):
    """Writes a benchmark's ``rows`` as JSON, with the command, date, settings and machine."""
    record = dict(
        command="python " + " ".join(sys.argv),
        date=time.strftime("%Y-%m-%d"),
        **settings,
        machine=machine_description(),
        rows=rows,
    )
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)

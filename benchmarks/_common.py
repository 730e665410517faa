"""Helpers shared by the benchmark scripts, from ``keras_metapool.study.machine``.

The scripts run as ``python benchmarks/NAME.py``, which puts this folder on
``sys.path``, so they import it as ``_common``. The helpers live in the
package (the study uses them too); this module names them here, and holds
``write_results``, the JSON record the scripts' ``--json`` writes.
"""

import json
import sys
import time

import numpy as np

from keras_metapool.study.machine import (  # noqa: F401
    cpu_model,
    interleaved_latency,
    load_average,
    machine_description,
    settle_batch_norms,
)


def plain_paired_z(count, slope_sum, squares):
    """The evidence rule's statistics without its corrections: the plain paired z.

    What the rule used before its time-uniform bar (no widening for
    autocorrelation, no t-to-z mapping), for comparing the two on the same
    evidence. Elementwise over leading dimensions, as
    ``keras_metapool.search.decision.evidence_scores``; returns ``(best, z)``.
    """
    n = np.maximum(np.asarray(count, float), 2.0)[..., None]
    mean = np.asarray(slope_sum, float) / n
    best = mean.argmin(axis=-1)
    lead = mean - np.take_along_axis(mean, best[..., None], axis=-1)
    column = np.take_along_axis(np.asarray(squares, float), best[..., None, None], axis=-1)[..., 0]
    variance = np.maximum(column / n - lead**2, 0.0) * n / (n - 1.0)
    return best, lead / np.sqrt(variance / n + 1e-30)


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

"""The evidence rule on synthetic slope streams: its error with no signal, its power with one.

A stream stands in for one point of a search (``tests/helpers.py``,
``slope_streams``): each step, one loss slope per default candidate. A common
part moves all slopes alike (it cancels in the paired differences); each op's
own part is AR(1) with autocorrelation ``phi`` (real searches measured
0.13-0.20 in the pair differences). With no signal,
the fraction of searches (``--points`` points each) that decide any point is
the family-wise error the rule promises to keep at ``--error_rate``; with
``ssp``'s mean slope lowered by ``shift`` (in units of an op's own noise), the
fraction of single points decided to ``ssp`` within N architecture steps is
the power. The same streams also go through a fixed bar (``z >= 4`` on the
plain paired z, checked at every step) for comparison.

    python benchmarks/decision_error.py                 # the table in docs/search.md
    python benchmarks/decision_error.py --searches=200  # quicker

Writes ``results/decision_error.json``.
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# This checkout's package, not an installed copy: the benchmarks measure this tree.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import numpy as np  # noqa: E402
from _common import plain_paired_z  # noqa: E402
from absl import app, flags  # noqa: E402
from helpers import slope_streams  # noqa: E402

from keras_metapool.layers.candidate_ops import DEFAULT_CANDIDATES  # noqa: E402
from keras_metapool.search.decision import (  # noqa: E402
    anytime_z_bar,
    comparisons,
    evidence_scores,
    evidence_verdict,
)

FLAGS = flags.FLAGS
flags.DEFINE_integer("searches", 500, "Simulated searches per row.")
flags.DEFINE_integer("points", 16, "Points per search (MobileNetV2MP's default search: 16).")
flags.DEFINE_list("steps", ["100", "300", "1000"], "Architecture steps of a search.")
flags.DEFINE_list("phis", ["0", "0.15", "0.3"], "Lag-1 autocorrelations of an op's own noise.")
flags.DEFINE_list("shifts", ["0.25", "0.5", "1.0"], "Planted effects (power rows).")
flags.DEFINE_float("error_rate", 0.05, "The family-wise error the bar is set for.")
flags.DEFINE_integer("min_steps", 20, "PMPLCallback's min_evidence_steps.")
flags.DEFINE_string("json", "results/decision_error.json", "Where the results go.")

CANDIDATES = DEFAULT_CANDIDATES
SSP = CANDIDATES.index("ssp")


def simulate(searches, points, steps, phi, shift, seed):
    """Per point: the step the rule decided (-1: never), its op, and the fixed bar's step."""
    streams = searches * points
    error = FLAGS.error_rate / comparisons([(len(CANDIDATES), True)] * points)
    decided_at = np.full(streams, -1)
    decided_op = np.full(streams, -1)
    fixed_bar_at = np.full(streams, -1)
    evidence = slope_streams(
        streams, CANDIDATES, steps, phi, ("ssp", shift) if shift else None, seed
    )
    for step, count, slope_sum, squares, lag_products in evidence:
        if step < FLAGS.min_steps:
            continue
        best, z, _ = evidence_scores(count, slope_sum, squares, lag_products)
        decided, _ = evidence_verdict(best, z, CANDIDATES, anytime_z_bar(count, error, steps))
        new = decided.numpy() & (decided_at < 0)
        decided_at[new], decided_op[new] = step, best.numpy()[new]
        # The fixed bar on the plain paired z (no widening, no t correction).
        plain_best, plain_z = plain_paired_z(count, slope_sum, squares)
        fixed, _ = evidence_verdict(plain_best, plain_z, CANDIDATES, 4.0)
        fixed_bar_at[fixed.numpy() & (fixed_bar_at < 0)] = step
    return decided_at, decided_op, fixed_bar_at


def main(argv):
    del argv
    rows = []
    started = time.time()
    for steps in map(int, FLAGS.steps):
        for phi in map(float, FLAGS.phis):
            decided_at, _, fixed_at = simulate(FLAGS.searches, FLAGS.points, steps, phi, 0.0, 0)
            rule = float(np.mean((decided_at >= 0).reshape(-1, FLAGS.points).any(axis=1)))
            fixed = float(np.mean((fixed_at >= 0).reshape(-1, FLAGS.points).any(axis=1)))
            rows.append(dict(kind="no signal", steps=steps, phi=phi, rule=rule, fixed_z4=fixed))
            print(f"no signal, {steps} steps, phi {phi}: searches deciding any point: "
                  f"rule {rule:.3f}, fixed z >= 4 {fixed:.3f}")  # fmt: skip
        for shift in map(float, FLAGS.shifts):
            decided_at, op, fixed_at = simulate(FLAGS.searches, 1, steps, 0.15, shift, 1)
            power = float(np.mean((decided_at >= 0) & (op == SSP)))
            rows.append(dict(kind="power", steps=steps, phi=0.15, shift=shift, rule=power,
                             fixed_z4=float(np.mean(fixed_at >= 0))))  # fmt: skip
            print(f"power, {steps} steps, shift {shift}: ssp decided {power:.3f}")
    result = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
        "searches": FLAGS.searches,
        "points": FLAGS.points,
        "error_rate": FLAGS.error_rate,
        "seconds": round(time.time() - started),
        "rows": rows,
    }
    os.makedirs(os.path.dirname(FLAGS.json) or ".", exist_ok=True)
    with open(FLAGS.json, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    app.run(main)

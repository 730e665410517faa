"""plot_search: what PMPL did, epoch by epoch, as one PNG."""

import math
import os

from keras_metapool.layers.candidate_ops import DEFAULT_CANDIDATES
from keras_metapool.models.naming import block_of
from keras_metapool.search.report import LOG_PREFIX
from keras_metapool.search.state import decode_fixed_code, is_enlarging


def _network_order(point):
    """Sort key of a point's layer name: its block's place in the network.

    Logs may list points in any order (CSVLogger sorts its columns, which
    puts ``block_10_mp`` before ``block_1_mp``); panels follow the network.
    """
    block = block_of(point)
    return (10**6 if block is None else block, point)


def _canonical_ops(ops):
    """Ops in the registry's order (the order logs and codes use), others after."""
    known = [op for op in DEFAULT_CANDIDATES if op in ops]
    return known + [op for op in ops if op not in DEFAULT_CANDIDATES]


def _records_from_logs(history):
    """Per-epoch records out of a History dict with PMPL entries."""
    probability_keys = {}
    code_keys = []
    for key in history:
        parts = key.split("/")
        if len(parts) != 3 or parts[0] != LOG_PREFIX:
            continue
        _, point, op = parts
        if op == "fixed":
            code_keys.append(point)
        else:
            probability_keys.setdefault(point, []).append(op)
    if not code_keys:
        raise ValueError(
            "No PMPL entries in this history: was PMPLCallback among fit's callbacks "
            "(and before CSVLogger, for a CSV)?"
        )
    code_keys.sort(key=_network_order)
    epochs = len(history[f"{LOG_PREFIX}/{code_keys[0]}/fixed"])
    records = []
    for epoch in range(epochs):
        probabilities, fixed = {}, {}
        for point in code_keys:
            ops = _canonical_ops(probability_keys.get(point, []))
            probabilities[point] = {op: history[f"{LOG_PREFIX}/{point}/{op}"][epoch] for op in ops}
            # Codes are over the registry's order (fixed_code), so they decode
            # with or without the probabilities being logged.
            fixed[point] = decode_fixed_code(history[f"{LOG_PREFIX}/{point}/fixed"][epoch])
        record = {"epoch": epoch, "probabilities": probabilities, "fixed": fixed}
        enlarging_key = f"{LOG_PREFIX}/enlarging_points"
        if enlarging_key in history:
            record["enlarging_points"] = int(history[enlarging_key][epoch])
        records.append(record)
    return records


def _records(source):
    history = getattr(source, "history", source)
    if isinstance(history, list):  # PMPLCallback.history
        if not history:
            raise ValueError("The PMPLCallback has no epochs recorded yet: run fit first.")
        return history
    if isinstance(history, dict):  # keras History (or its .history dict)
        return _records_from_logs(history)
    raise ValueError(
        "plot_search takes a PMPLCallback, the History fit returned, or its .history dict; "
        f"got {type(source).__name__}."
    )


def _draw_point(axis, point, records, epochs, ops, colors):
    """One point's panel: every op's probability per epoch, and where it was fixed."""
    drawn = []
    for op in ops:
        values = [r["probabilities"].get(point, {}).get(op) for r in records]
        if any(v is not None for v in values):
            axis.plot(epochs, values, color=colors[op], lw=1.5, marker=".")
            drawn += [v for v in values if v is not None]
    point_ops = {op for r in records for op in r["probabilities"].get(point, {})}
    if point_ops:  # uniform over the point's (pruned) candidates
        axis.axhline(1.0 / len(point_ops), color="0.5", ls=":", lw=1)
        drawn.append(1.0 / len(point_ops))
    first = next((r for r in records if r["fixed"].get(point)), None)
    if first is not None:
        label = "+".join(first["fixed"][point])
        axis.axvline(first["epoch"] + 1, color="0.4", ls="--", lw=1)
        axis.set_title(f"{point}: {label}", fontsize=9)
    else:
        axis.set_title(f"{point}: searching", fontsize=9)
    if drawn:
        low, high = min(drawn), max(drawn)
        pad = max(0.02, 0.1 * (high - low))
        axis.set_ylim(max(0.0, low - pad), min(1.0, high + pad))
    axis.tick_params(labelsize=7)
    axis.grid(alpha=0.3)


def _draw_counts(axis, records, epochs):
    """The last panel: points with no enhancer, enlarging, searching, per epoch."""
    none_counts, enlarging_counts, searching_counts = [], [], []
    for record in records:
        decided = [ops_ for ops_ in record["fixed"].values() if ops_]
        enlarging = record.get("enlarging_points", sum(is_enlarging(o) for o in decided))
        none_counts.append(len(decided) - enlarging)
        enlarging_counts.append(enlarging)
        searching_counts.append(len(record["fixed"]) - len(decided))
    axis.plot(epochs, none_counts, marker="o", color="tab:gray", label="no enhancer")
    axis.plot(epochs, enlarging_counts, marker="o", color="tab:green", label="enlarging")
    axis.plot(epochs, searching_counts, marker="o", color="tab:orange", label="searching")
    axis.set_title("points per epoch", fontsize=9)
    axis.set_xlabel("epoch", fontsize=8)
    axis.set_ylabel("points", fontsize=8)
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)


def _draw_legend(figure, plt, ops, colors):
    """The figure's legend: the ops' colours and the two reference lines."""
    handles = [plt.Line2D([], [], color=colors[op], lw=2) for op in ops]
    handles += [
        plt.Line2D([], [], color="0.5", ls=":", lw=1),
        plt.Line2D([], [], color="0.4", ls="--", lw=1),
    ]
    labels = [*ops, "uniform (1 / candidates)", "point fixed"]
    figure.legend(handles, labels, loc="upper right", ncol=len(labels), fontsize=8)


def plot_search(history_or_callback, path, title=None):
    """Draws a PMPL search: probability trajectories and the choices made.

    One panel per search point shows every candidate's probability
    (the softmax of the search logits) over the epochs, with a dashed line where the point
    was fixed (and to what). The probability axis spans the values drawn
    (with a margin), not [0, 1]: early in a search the probabilities sit
    within a few hundredths of uniform (the dotted line) and would be one
    flat line on a [0, 1] scale. The last panel counts, per epoch, the
    points with no enhancer (fixed to ``identity``), with an enlarging
    enhancer, and still searching. Epoch ticks are whole epochs.

    Args:
        history_or_callback: The ``PMPLCallback`` used in ``fit``, the
            ``History`` that ``fit`` returned, or ``History.history``.
        path: Where to write the PNG; its folder must exist.
        title: Figure title (default "PMPL search").

    Returns:
        ``path``.

    Raises:
        ValueError: if the input holds no PMPL record or the folder is missing.
        ImportError: if matplotlib is not installed (``pip install
            keras_metapool[plot]``).
    """
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"plot_search: folder {folder!r} does not exist.")
    records = _records(history_or_callback)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "plot_search needs matplotlib: pip install 'keras_metapool[plot]'."
        ) from error

    points = sorted(records[-1]["fixed"], key=_network_order)
    epochs = [record["epoch"] + 1 for record in records]
    logged = {op for r in records for point in points for op in r["probabilities"].get(point, {})}
    ops = _canonical_ops(logged)
    colors = {op: plt.cm.tab10(i % 10) for i, op in enumerate(ops)}
    point_panels = len(points) if ops else 0
    panels = point_panels + 1
    columns = min(4, panels)
    rows = math.ceil(panels / columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(3.6 * columns, 2.6 * rows), squeeze=False, sharex=True
    )
    flat = axes.ravel()
    for index, point in enumerate(points[:point_panels]):
        _draw_point(flat[index], point, records, epochs, ops, colors)
        if index % columns == 0:
            flat[index].set_ylabel("probability", fontsize=8)
    _draw_counts(flat[panels - 1], records, epochs)
    # Whole epochs only (a one-epoch run included), at most about ten ticks.
    step = max(1, math.ceil(len(epochs) / 10))
    for axis in flat[:panels]:
        axis.set_xticks(list(range(epochs[0], epochs[-1] + 1, step)))
        axis.tick_params(labelbottom=True)
    flat[panels - 1].set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
    for axis in flat[panels:]:
        axis.axis("off")
    if ops:
        _draw_legend(figure, plt, ops, colors)
    figure.suptitle(title or "PMPL search", x=0.01, ha="left")
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

"""PMPLCallback's arguments: their vocabularies, ranges and checks.

The command line validates its search flags with the same ranges
(``keras_metapool.cli.options``).
"""

import tensorflow as tf

from keras_metapool._ranges import OPEN_UNIT, Interval
from keras_metapool.search.decision import DECISION_RULES

#: Where the architecture step runs relative to the weight step.
ARCH_STEP_POSITIONS = ("before", "after")
#: The ranges of PMPLCallback's numeric arguments (the CLI validates its flags with them).
ARGUMENT_RANGES = {
    "warmup": Interval(0.0, 1.0, "left"),
    "beta_1": Interval(0.0, 1.0, "left"),
    "beta_2": Interval(0.0, 1.0, "left"),
    "epsilon": Interval(0.0, None, "neither"),
    "weight_decay": Interval(0.0, None),
    "threshold": OPEN_UNIT,
    "error_rate": OPEN_UNIT,
    "late_stage": Interval(0.0, 1.0, "right"),
}
#: What points still undecided at the late stage become (``undecided``).
END_RULES = ("identity", "top2", "argmax")
#: ``learning_rate="auto"``: sized to the budget, within these bounds.
AUTO = "auto"
AUTO_RATE_RANGE = (3e-4, 5e-2)
#: The automatic architecture learning rate when the steps per epoch are unknown.
AUTO_RATE_UNKNOWN = 3e-3


def check_arguments(arguments):
    """PMPLCallback's argument checks: one clear error for the first bad argument."""
    arch_data, decision, undecided = (arguments[n] for n in ("arch_data", "decision", "undecided"))
    learning_rate, fix_every = arguments["learning_rate"], arguments["fix_every"]
    min_evidence_steps, search_epochs = arguments["min_evidence_steps"], arguments["search_epochs"]
    arch_step = arguments["arch_step"]
    latency_weight, latency_table = arguments["latency_weight"], arguments["latency_table"]
    if arch_data is not None and not isinstance(arch_data, tf.data.Dataset):
        raise ValueError(
            "`arch_data` must be a batched tf.data.Dataset of (images, labels), got "
            f"{type(arch_data).__name__}. For arrays: tf.data.Dataset.from_tensor_slices("
            "(x, y)).batch(batch_size); to cut one from the training data: "
            "keras_metapool.split_for_search."
        )
    if arch_data is not None and tf.get_static_value(arch_data.cardinality()) == 0:
        # Its first draw would end fit's epoch like the end of the training data.
        raise ValueError(
            "`arch_data` is empty: the architecture steps need at least one held-out batch. "
            "A .batch(n, drop_remainder=True) of fewer than n examples, or an empty "
            "split, gives none; batch without drop_remainder or hold out more examples."
        )
    if decision not in DECISION_RULES:
        raise ValueError(
            f"Unknown decision {decision!r}. Valid values: {', '.join(DECISION_RULES)}."
        )
    if undecided not in END_RULES:
        raise ValueError(f"Unknown undecided {undecided!r}. Valid values: {', '.join(END_RULES)}.")
    if learning_rate != AUTO and (
        isinstance(learning_rate, (str, bool)) or not float(learning_rate) > 0
    ):
        raise ValueError(
            f"`learning_rate` must be a positive number or 'auto', got {learning_rate!r}."
        )
    for name, interval in ARGUMENT_RANGES.items():
        interval.check(name, arguments[name])
    for name, value in (("fix_every", fix_every), ("min_evidence_steps", min_evidence_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    if search_epochs is not None and (
        isinstance(search_epochs, bool) or not isinstance(search_epochs, int) or search_epochs < 1
    ):
        raise ValueError(f"`search_epochs` must be a positive integer, got {search_epochs!r}.")
    if arch_step not in ARCH_STEP_POSITIONS:
        raise ValueError(
            f"Unknown arch_step {arch_step!r}. Valid values: {', '.join(ARCH_STEP_POSITIONS)}."
        )
    if not latency_weight >= 0:
        raise ValueError(f"`latency_weight` must be >= 0, got {latency_weight!r}.")
    if latency_weight and not isinstance(latency_table, dict):
        raise ValueError(
            "`latency_weight` needs a `latency_table`: {op: cost} or "
            "{point layer name: {op: cost}} (benchmarks/latency_table.py measures one)."
        )

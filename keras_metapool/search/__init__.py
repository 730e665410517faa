"""PMPL search: the PMPLCallback and what comes out of it.

- ``PMPLCallback``: progressive meta-pooling learning inside ``model.fit``;
- ``derive_architecture`` / ``transfer_weights`` / ``to_fixed_model``: from a
  searched supernet to the lean fixed model;
- ``plot_search``: probability trajectories and choices over epochs.
"""

from keras_metapool.models.derive import (
    derive_architecture,
    search_blocks,
    to_fixed_model,
    transfer_weights,
)
from keras_metapool.search.plot import plot_search
from keras_metapool.search.pmpl import (
    FixedAtEndWarning,
    ModelAtChanceWarning,
    PMPLCallback,
    SearchUndecidedWarning,
    late_stage_epoch,
)
from keras_metapool.search.state import decode_fixed_code, fixed_code, is_enlarging

__all__ = [
    "FixedAtEndWarning",
    "ModelAtChanceWarning",
    "PMPLCallback",
    "SearchUndecidedWarning",
    "decode_fixed_code",
    "fixed_code",
    "is_enlarging",
    "late_stage_epoch",
    "plot_search",
    "derive_architecture",
    "search_blocks",
    "to_fixed_model",
    "transfer_weights",
]

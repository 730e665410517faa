"""PMPL's warnings: what a search that ended badly, or was set up badly, says."""

import warnings

from keras_metapool._keras import keras
from keras_metapool._layer_facts import UNSETTLED_BATCH_NORM
from keras_metapool.search.state import NEVER


class SearchUndecidedWarning(UserWarning):
    """A PMPL search ended with most points undecided, or fixed with no training after."""


class FixedAtEndWarning(SearchUndecidedWarning):
    """Points were fixed at the very end of fit: the searched model's weights were trained
    for the mixture there, so it needs training before use (an architecture retrained from
    scratch, as ``keras-metapool train`` does, is not affected)."""


class ModelAtChanceWarning(UserWarning):
    """The model trained with PMPLCallback ended fit at chance training accuracy."""


# NOTE: their public home, whatever file defines them: a warning's category name
# (as the study's run files record it) stays the same when the code moves.
for _warning in (SearchUndecidedWarning, FixedAtEndWarning, ModelAtChanceWarning):
    _warning.__module__ = "keras_metapool.search"


#: Training accuracy below chance + this share of the way to 1 counts as "at
#: chance" (10 classes: below 0.19; the BN-momentum failure measured 0.095,
#: a healthy 2-epoch Fashion-MNIST search 0.64).
CHANCE_MARGIN = 0.1


def training_accuracy(logs):
    """The training accuracy in fit's ``logs`` (any Keras accuracy name), or None."""
    for key, value in (logs or {}).items():
        if key.startswith("val_") or "top_k" in key:
            continue
        if key in ("acc", "accuracy") or key.endswith("_accuracy"):
            return float(value)
    return None


def refuse_weight_restoring_callbacks(callback_list):
    """Refuses, before a search starts, callbacks that would set its state back.

    ``EarlyStopping(restore_best_weights=True)`` sets every weight of its
    best epoch at the end of ``fit`` (tf_keras 2.21, stopped early or not):
    the search logits, the fixed points and the search's counters are weights too, so the
    searched model would go back to an earlier epoch's search.
    """
    for callback in getattr(callback_list, "callbacks", ()):
        if isinstance(callback, keras.callbacks.EarlyStopping) and callback.restore_best_weights:
            raise ValueError(
                "PMPLCallback: EarlyStopping(restore_best_weights=True) would set the search "
                "logits, the fixed points and the search's counters back to its best epoch at the "
                "end of fit, and the searched model would be searching again. Use "
                "restore_best_weights=False (an early stop still ends the search, and the "
                "points are fixed then); to keep the best epoch of training after the "
                "search, use ModelCheckpoint(save_best_only=True) and load it after fit."
            )


class DiagnosticsMixin:
    """The warnings ``PMPLCallback`` gives at the start and the end of ``fit`` (a mixin)."""

    def _warn_if_starting_late(self, epoch):
        """Warns when a search starts past epoch 1 with no state to continue from."""
        searching = any(not block.is_fixed for block in self._blocks.values())
        if not searching or epoch >= self._late_epoch or int(self._state.train_steps.numpy()):
            return
        warnings.warn(
            f"PMPL search starts at epoch {epoch + 1} with no search state: its step "
            "counters, the logits' optimizer moments and the evidence start from zero, while the "
            f"warm-up, the automatic learning rate and the late stage (epoch "
            f"{self._late_epoch + 1}) count from epoch 1. Resuming an interrupted search "
            "from a .keras/.h5 file (it carries the search logits and the fixed points "
            "only)? Resume from BackupAndRestore or a TF checkpoint instead, which continue "
            "exactly. A new search? Start it at initial_epoch=0.",
            UserWarning,
            stacklevel=3,
        )

    def _warn_if_cut_short(self):
        """Warns when fit ended before its epochs with no callback stopping it.

        tf_keras ends fit that way when the input runs out of data (it logs
        "Your input ran out of data"); the search is then neither finished
        nor fixed, and nothing else would say what that means for it.
        """
        epochs = self.params.get("epochs") or 0
        undecided = [block.name for block in self._blocks.values() if not block.is_fixed]
        if not undecided or self._last_epoch + 1 >= epochs:
            return  # a search split over several fits ends its first ones here
        warnings.warn(
            f"PMPL search: fit ended after epoch {self._last_epoch + 1} of its {epochs} with no "
            "callback stopping it (did the input run out of data?), before the search's end: "
            f"{len(undecided)} of {len(self._blocks)} points are undecided and the model "
            "still computes every candidate there. Give fit data for all its epochs "
            "(dataset.repeat() with steps_per_epoch, or a steps_per_epoch the data fills) and "
            "search again, or take the architecture as it stands with "
            "derive_architecture(model, undecided='identity').",
            SearchUndecidedWarning,
            stacklevel=2,
        )

    def _warn_if_at_chance(self, logs):
        """One ``ModelAtChanceWarning`` when fit's last training accuracy is about chance."""
        accuracy = training_accuracy(logs)
        classes = self.model.output_shape[-1] if len(self.model.outputs) == 1 else None
        if accuracy is None or not classes or classes < 2:
            return
        chance = 1.0 / classes
        if accuracy < chance + CHANCE_MARGIN * (1.0 - chance):
            warnings.warn(
                f"The searched model's training accuracy after fit is {accuracy:.3f}, about "
                f"chance for {classes} classes ({chance:.3f}): it has not learned, and its "
                f"architecture says nothing. Likely causes: {UNSETTLED_BATCH_NORM}, a "
                "learning rate far off, labels that do not match the outputs, or too few "
                "steps.",
                ModelAtChanceWarning,
                stacklevel=2,
            )

    def _warn_if_undecided(self, fixed_at_end=0):
        decided = self.decided_points
        total = len(self._blocks)
        # What the search really took (the budget may not have known the epoch length).
        state = self._state
        taken = int(state.adam_steps.numpy())
        warmup = int(state.warmup_steps.numpy())
        reasons = []
        if decided * 2 < total:
            reasons.append(
                f"only {decided} of {total} points were decided by evidence; the other "
                f"{total - decided} became '{self.undecided}'"
            )
            if self.decision == "evidence" and taken >= 2:
                # A mean lead of bar / sqrt(n) standard deviations reaches the bar at n steps.
                smallest = float(self._bar(taken).numpy()) / taken**0.5
                reasons.append(
                    f"at {taken} architecture steps an op is decided only once its mean loss "
                    f"slope leads by about {smallest:.2f} standard deviations of the paired "
                    "difference, more if successive slopes are correlated (4x the steps halve "
                    "that)"
                )
        reach, lead = taken * self._logits_lr, self.budget["margin_lead"]
        if self.decision == "margin" and reach < lead:
            reasons.append(
                f"the search logits could not reach the {self.threshold} margin: {taken} "
                f"architecture steps at learning rate {self._logits_lr:.2g} move a logit by at "
                f"most {reach:.2f}, the margin needs a lead of {lead:.2f}"
            )
        if reasons:
            warmup_text = (
                "a warm-up of the whole run" if warmup == NEVER else f"{warmup} warm-up steps"
            )
            message = (
                "PMPL search: " + "; ".join(reasons) + ". "
                f"It took {taken} architecture steps after {warmup_text}. The architecture is "
                "honest about it (undecided points cost nothing with undecided='identity'), but it "
                "is not a search result: give the search more steps (more epochs or images), "
                "fewer candidates (search_candidates=...), or a higher error_rate."
            )
            warnings.warn(message, SearchUndecidedWarning, stacklevel=2)
        if fixed_at_end:
            message = (
                f"PMPL search: {fixed_at_end} point(s) fixed only at the end of fit (late_stage="
                f"{self.late_stage:.2g} of {self._total_epochs} epochs): the supernet's weights "
                "were trained for the search mixture there, not for the op they now compute, so "
                "this model (and to_fixed_model of it) needs training before use: fit again, or "
                "retrain the architecture from scratch, or search with late_stage < 1."
            )
            warnings.warn(message, FixedAtEndWarning, stacklevel=2)

"""What every searcher tells the results about its trials, and how it picks up after a crash.

A searcher is a function of the journal (``pipelines.journal.TrialLog``) and its seed: on
``--resume`` it is rebuilt from the trials the journal holds, never from Tune's pickled state,
which lags the journal by seconds. Each suggestion gets a ``Placement``: the trial's place in the
searcher's order (``trial_index``), the journal id it is recorded under, and where the config came
from. A trial that was running when the driver died is suggested again first, under its old id
and index, with its last checkpoint in the hidden config key ``RESUME_KEY``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Config key a re-run trial finds its checkpoint under; trainables pop it before training.
RESUME_KEY = "_resume_checkpoint"


@dataclass(frozen=True)
class Placement:
    """A suggestion's place in the search."""

    trial_id: str
    index: int
    source: str | None = None


class TrialOrder:
    """Mixin: placements of suggestions, and the queue of trials to re-run first."""

    def _init_order(self) -> None:
        self._placements: dict[str, Placement] = {}
        self._reruns: list[tuple[Placement, dict[str, Any], str | None]] = []
        self._packs: dict[str, list[tuple[Placement, dict[str, Any]]]] = {}

    def placement(self, tune_trial_id: str) -> Placement | None:
        return self._placements.get(tune_trial_id)

    def members(self, tune_trial_id: str) -> list[tuple[Placement, dict[str, Any]]] | None:
        """A pack's member trials (``pipelines.packs``) in order: placement and config; None
        for a Tune trial that runs one config."""
        return getattr(self, "_packs", {}).get(tune_trial_id)

    def _place(self, tune_trial_id: str, index: int, source: str | None) -> None:
        self._placements[tune_trial_id] = Placement(tune_trial_id, index, source)

    def _queue_reruns(self, log: Any, checkpoint_exists=None) -> list[dict[str, Any]]:
        """Queue the trials that never ended; returns them (journal trial dicts)."""
        unfinished = log.unfinished()
        for trial in unfinished:
            checkpoint = log.last_checkpoint(trial["trial_id"], checkpoint_exists)
            self._reruns.append((Placement(trial["trial_id"], trial["trial_index"], trial.get("source")),
                                 dict(trial["config"]), checkpoint))
        return unfinished

    def _take_rerun(self, tune_trial_id: str) -> dict[str, Any] | None:
        taken = self._next_rerun()
        if taken is None:
            return None
        self._placements[tune_trial_id] = taken[0]
        return taken[1]

    def _next_rerun(self) -> tuple[Placement, dict[str, Any]] | None:
        """The next trial to re-run: its placement (old id and index) and its config, with its
        last checkpoint under ``RESUME_KEY``."""
        if not self._reruns:
            return None
        placement, config, checkpoint = self._reruns.pop(0)
        config = self.space.finalize(config)
        if checkpoint:
            config[RESUME_KEY] = checkpoint
        return placement, config

    @property
    def rerun_configs(self) -> list[dict[str, Any]]:
        return [dict(config) for _, config, _ in self._reruns]

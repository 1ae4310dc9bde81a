"""Grid and random search: a Searcher that hands out a precomputed list of configs in order.

The list comes from the Space (``Space.grid()`` or ``Space.sample()``), so both algorithms share
one Ray Tune path with the model-based searcher: the same concurrency cap, the same resume.
"""

from __future__ import annotations

from typing import Any

from ray.tune.search import Searcher

from pipelines.packs import AUTO, PACK_KEY, pack_size
from pipelines.searchers._resume import Placement, TrialOrder
from pipelines.searchers._state import PickledState
from search_spaces.space import Space


class ListedSearcher(TrialOrder, PickledState, Searcher):
    """Suggest ``configs`` one after another, then finish.

    Parameters
    ----------
    space : Space
        Used to finalize each config (fixed params added, inactive ones dropped).
    configs : list of dict
        What to run, in order.
    metric, mode : str
        Passed to Ray Tune's Searcher.
    source : str
        What the configs are (``grid``, ``random``), recorded with each trial.
    configs_per_trial : int or "auto"
        Configs per Tune trial (``pipelines.packs``): 1 (the default) suggests one config per
        trial; N packs N at a time; ``"auto"`` sizes packs by guided self-scheduling over
        ``slots`` trials running at once (set ``slots`` before the run).
    """

    def __init__(self, space: Space, configs: list[dict[str, Any]], metric: str | None = None,
                 mode: str | None = None, source: str = "listed",
                 configs_per_trial: int | str = 1):
        super().__init__(metric=metric, mode=mode)
        self._init_order()
        self.space = space
        self._source = source
        self._configs = [space.finalize(c) for c in configs]
        # Indices still to suggest, in order (a resume removes those the journal holds).
        self._queue = list(range(len(self._configs)))
        if configs_per_trial != AUTO and not (isinstance(configs_per_trial, int)
                                              and configs_per_trial >= 1):
            raise ValueError(f"configs_per_trial must be a positive integer or {AUTO!r}, "
                             f"got {configs_per_trial!r}")
        self.configs_per_trial = configs_per_trial
        self.slots = 1
        self._live: set[str] = set()  # packs handed out and not ended

    @property
    def packs(self) -> bool:
        """Whether Tune trials are packs of configs."""
        return self.configs_per_trial != 1

    @property
    def total(self) -> int:
        return len(self._configs)

    def resume(self, log: Any, checkpoint_exists=None) -> int:
        """Continue after the trials of a journal: re-run the unfinished, skip the ended.

        Returns the number of trials left to run (re-runs included).
        """
        started = {t["trial_index"] for t in log.trials.values()}
        self._queue_reruns(log, checkpoint_exists)
        self._queue = [i for i in range(len(self._configs)) if i not in started]
        return len(self._reruns) + len(self._queue)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.packs:
            return self._suggest_pack(trial_id)
        rerun = self._take_rerun(trial_id)
        if rerun is not None:
            return rerun
        if not self._queue:
            return Searcher.FINISHED
        index = self._queue.pop(0)
        self._place(trial_id, index, self._source)
        return dict(self._configs[index])

    def _suggest_pack(self, trial_id: str) -> dict[str, Any] | None:
        """The next pack: re-runs first, then configs in order. A member's journal id is the
        Tune trial's id and its position (a re-run keeps its old id)."""
        remaining = len(self._reruns) + len(self._queue)
        fixed = None if self.configs_per_trial == AUTO else int(self.configs_per_trial)
        members: list[tuple[Placement, dict[str, Any]]] = []
        for position in range(pack_size(remaining, self.slots, fixed)):
            taken = self._next_rerun()
            if taken is None:
                index = self._queue.pop(0)
                taken = (Placement(f"{trial_id}-{position}", index, self._source),
                         dict(self._configs[index]))
            members.append(taken)
        if not members:
            # A pack still running may hand members back (``requeue``): finish after it.
            return None if self._live else Searcher.FINISHED
        self._packs[trial_id] = members
        self._live.add(trial_id)
        return {PACK_KEY: [config for _, config in members]}

    def requeue(self, members: list[tuple[Placement, dict[str, Any]]]) -> None:
        """Members a failed pack never ran: first in line again, under their ids (Tune calls
        ``on_trial_complete`` on the pack before its callbacks hand them back, and asks for the
        next suggestion after both)."""
        self._reruns[:0] = [(placement, dict(config), None) for placement, config in members]

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        self._live.discard(trial_id)

    def get_state(self) -> dict[str, Any]:
        return {"configs": self._configs, "queue": self._queue}

    def set_state(self, state: dict[str, Any]) -> None:
        self._configs = state["configs"]
        self._queue = state["queue"]

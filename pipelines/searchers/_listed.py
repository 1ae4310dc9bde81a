"""Grid and random search: a Searcher that hands out a precomputed list of configs in order.

The list comes from the Space (``Space.grid()`` or ``Space.sample()``), so both algorithms share
one Ray Tune path with the model-based searcher: the same concurrency cap, the same resume.
"""

from __future__ import annotations

from typing import Any

from ray.tune.search import Searcher

from pipelines.searchers._resume import TrialOrder
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
    """

    def __init__(self, space: Space, configs: list[dict[str, Any]], metric: str | None = None,
                 mode: str | None = None, source: str = "listed"):
        super().__init__(metric=metric, mode=mode)
        self._init_order()
        self.space = space
        self._source = source
        self._configs = [space.finalize(c) for c in configs]
        # Indices still to suggest, in order (a resume removes those the journal holds).
        self._queue = list(range(len(self._configs)))

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
        rerun = self._take_rerun(trial_id)
        if rerun is not None:
            return rerun
        if not self._queue:
            return Searcher.FINISHED
        index = self._queue.pop(0)
        self._place(trial_id, index, self._source)
        return dict(self._configs[index])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        pass

    def get_state(self) -> dict[str, Any]:
        return {"configs": self._configs, "queue": self._queue}

    def set_state(self, state: dict[str, Any]) -> None:
        self._configs = state["configs"]
        self._queue = state["queue"]

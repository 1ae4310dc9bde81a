"""Grid and random search: a Searcher that hands out a precomputed list of configs in order.

The list comes from the Space (``Space.grid()`` or ``Space.sample()``), so both algorithms share
one Ray Tune path with the model-based searcher: the same concurrency cap, the same resume.
"""

from __future__ import annotations

from typing import Any

from ray.tune.search import Searcher

from pipelines.searchers._state import PickledState
from search_spaces.space import Space


class ListedSearcher(PickledState, Searcher):
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
                 mode: str | None = None):
        super().__init__(metric=metric, mode=mode)
        self._configs = [space.finalize(c) for c in configs]
        self._next = 0
        self._given: dict[str, int] = {}

    @property
    def total(self) -> int:
        return len(self._configs)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self._next >= len(self._configs):
            return Searcher.FINISHED
        index = self._next
        self._next += 1
        self._given[trial_id] = index
        return dict(self._configs[index])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        self._given.pop(trial_id, None)

    def get_state(self) -> dict[str, Any]:
        return {"configs": self._configs, "next": self._next}

    def set_state(self, state: dict[str, Any]) -> None:
        self._configs = state["configs"]
        self._next = state["next"]

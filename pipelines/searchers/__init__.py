"""One searcher per algorithm behind Ray Tune's Searcher contract.

``make_searcher`` is the one place that turns a Space into what each algorithm needs:
grid -> every valid combination once; random -> seeded samples; bayesopt -> the project's
Searcher on bayesian-optimization 3.x.
"""

from __future__ import annotations

from typing import Any

from search_spaces.space import Space

ALGORITHMS = ("grid", "random", "bayesopt")


def make_searcher(algo: str, space: Space, *, metric: str, mode: str, seed: int | None,
                  num_samples: int, bo_init: int | None = None,
                  warm_start: list[dict[str, Any]] | None = None,
                  fidelity_key: str = "training_iteration", max_fidelity: float | None = None,
                  select: str = "last", configs_per_trial: int | str = 1):
    """Build the Searcher for ``algo``; returns ``(searcher, number_of_trials)``.

    ``configs_per_trial`` packs grid and random configs into Tune trials (``pipelines.packs``);
    bayesopt always suggests one config per trial.

    Raises SpaceError (via the space) when the space cannot serve the algorithm.
    """
    # Imported here: Ray Tune's searcher module takes seconds to import, and bad input must
    # be rejected before that.
    from pipelines.searchers._listed import ListedSearcher

    if algo == "grid":
        configs = space.grid()
        return (ListedSearcher(space, configs, metric=metric, mode=mode, source="grid",
                               configs_per_trial=configs_per_trial), len(configs))
    if algo == "random":
        configs = space.sample(num_samples, seed=seed)
        return (ListedSearcher(space, configs, metric=metric, mode=mode, source="random",
                               configs_per_trial=configs_per_trial), len(configs))
    if algo == "bayesopt":
        from pipelines.searchers._bayesopt import BayesOptSearcher

        searcher = BayesOptSearcher(space, metric=metric, mode=mode, seed=seed,
                                    n_init=bo_init, warm_start=warm_start,
                                    fidelity_key=fidelity_key, max_fidelity=max_fidelity,
                                    select=select)
        return searcher, num_samples
    raise ValueError(f"unknown algorithm {algo!r}; choose from {', '.join(ALGORITHMS)}")

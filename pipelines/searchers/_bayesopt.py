"""Bayesian optimization: a Ray Tune Searcher on bayesian-optimization 3.x.

Ray's own ``BayesOptSearch`` breaks on bayes_opt 3.x, searches log ranges linearly and takes
neither ints nor categoricals. This one maps a ``Space`` onto bayes_opt's typed bounds:

- ``LogFloat`` / ``Float(log=True)``: modeled as log10(value) on [log10(low), log10(high)];
- ``Int``: bayes_opt's int parameter ``(low, high, int)``; a log ``Int`` is modeled as a float
  in log10 space, widened by half a step on each side, and rounded after ``10**x`` (bayes_opt's
  int type has no log scale, and a linear int over decades wastes the budget on the top one);
- ``Categorical``: bayes_opt's categorical parameter over the choice *indices* (the choices
  themselves may be unhashable or compare equal across types, as ``1`` and ``True`` do);
  a one-choice categorical is a constant;
- ``Fixed``: not modeled; ``Space.finalize`` adds it;
- conditional params are modeled always and follow their parent: ``Space.finalize`` drops
  them when the parent makes them inactive.

The model is rebuilt from the stored observations at every suggestion, with a random state
derived from ``(seed, number of suggestions so far)``. That makes the searcher a pure function of
its observations and counters: the same seed gives the same suggestions, and a restored
searcher continues exactly where the saved one would have.

Trials still running are registered with a constant lie (the worst score seen, by default) on
that fresh model, so parallel suggestions spread out instead of piling onto one point.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from bayes_opt import BayesianOptimization, acquisition
from ray.tune.search import Searcher

from pipelines.searchers._bayesopt_box import (
    BayesOptBox,
    _finite,
    _plain,
    default_n_init,
    warm_start_from_parquet,
)
from pipelines.searchers._resume import RESUME_KEY, TrialOrder
from pipelines.searchers._state import PickledState
from search_spaces.space import Space, SpaceError

__all__ = ["BayesOptSearcher", "default_n_init", "warm_start_from_parquet"]

logger = logging.getLogger(__name__)

LIARS = ("worst", "mean", "best")
ACQUISITIONS = ("ucb", "ei")
# bayes_opt's GP on a single point has nothing to fit a length scale to.
MIN_OBSERVATIONS_FOR_MODEL = 2
_STATE_VERSION = 1


class BayesOptSearcher(TrialOrder, PickledState, Searcher):
    """Gaussian-process Bayesian optimization over a Space, for Ray Tune.

    Parameters
    ----------
    space : Space
        What to search. Fixed params are passed through, conditional params follow their parent.
    metric : str, optional
        The reported metric to optimize; may also come from ``set_search_properties``.
    mode : {"max", "min"}, optional
        Whether higher or lower ``metric`` is better.
    seed : int, optional
        Seeds the random init points and the model. None draws a seed once (kept in the state).
    n_init : int, optional
        Random points (drawn by ``space.sample_one`` with the seed, so log scales and conditions
        hold) before the model takes over; warm-start observations count toward them. None means
        ``default_n_init(number of modeled params)``.
    warm_start : list of dict, optional
        Earlier results, each ``{"config": {...}, "score": float}``, registered before the first
        suggestion. Rows that are not valid configs of the space or have no finite score are
        skipped.
    liar : {"worst", "mean", "best"}
        The value a still-running trial is assumed to score when the next point is chosen.
    acquisition : {"ucb", "ei"}
        bayes_opt's upper confidence bound (kappa 2.576) or expected improvement (xi 0.01).

    Raises
    ------
    SpaceError
        If the space is malformed or has nothing to optimize.
    ValueError
        If another argument is out of range.
    """

    def __init__(self, space: Space, metric: str | None = None, mode: str | None = None,
                 seed: int | None = None, n_init: int | None = None,
                 warm_start: Sequence[Mapping[str, Any]] | None = None, *,
                 liar: str = "worst", acquisition: str = "ucb"):
        _check_mode(mode)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                                 or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        if n_init is not None and (isinstance(n_init, bool) or not isinstance(n_init, (int, np.integer))
                                   or n_init < 0):
            raise ValueError(f"n_init must be a non-negative integer or None, got {n_init!r}")
        if liar not in LIARS:
            raise ValueError(f"liar must be one of {', '.join(LIARS)}, got {liar!r}")
        if acquisition not in ACQUISITIONS:
            raise ValueError(
                f"acquisition must be one of {', '.join(ACQUISITIONS)}, got {acquisition!r}"
            )
        super().__init__(metric=metric, mode=mode)
        self._init_order()
        space.validate()
        self._space = space
        self._box = BayesOptBox(space)
        self._liar = liar
        self._acquisition = acquisition
        # A drawn seed is stored so that a restored searcher keeps the same stream.
        self._seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else int(seed)
        self._n_init = default_n_init(self._box.n_dims) if n_init is None else int(n_init)
        # Same stream as ``space.sample(n, seed)``: the init points are random search's first.
        self._rng = np.random.default_rng(self._seed)
        # Observations are (config, bayes_opt point, score on the metric's own scale), so a
        # later change of mode only flips the sign when the model is built.
        self._observations: list[tuple[dict[str, Any], dict[str, Any], float]] = []
        self._pending: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._n_suggested = 0
        self._next_index = 0
        self._n_warm = 0
        self._n_skipped = 0
        if warm_start:
            self.add_warm_start(warm_start)

    # --- what the pipeline and tests read -------------------------------------------------
    @property
    def n_init(self) -> int:
        return self._n_init

    @property
    def pbounds(self) -> dict[str, Any]:
        """The bounds handed to bayes_opt (log params in log10 space)."""
        return dict(self._box.pbounds)

    @property
    def n_observations(self) -> int:
        return len(self._observations)

    @property
    def n_warm_started(self) -> int:
        return self._n_warm

    @property
    def n_skipped(self) -> int:
        """Completed trials not used by the model (errors, missing or non-finite metric)."""
        return self._n_skipped

    @property
    def observations(self) -> list[tuple[dict[str, Any], float]]:
        """``(config, score)`` pairs the model is fitted on, warm start included."""
        return [(dict(c), s) for c, _, s in self._observations]

    # --- Ray Tune's Searcher contract --------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        """Take metric and mode from the Tuner; the search space always comes from ``space``.

        Returns
        -------
        bool
            True: the properties were accepted.
        """
        _check_mode(mode)
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """Return the next config: random during the init phase, then the model's choice.

        Parameters
        ----------
        trial_id : str
            Tune's id for the trial; its result comes back through ``on_trial_complete``.

        Returns
        -------
        dict
            A finalized config of the space.
        """
        if not self._metric or not self._mode:
            raise RuntimeError(
                "BayesOptSearcher needs metric and mode: pass them to its constructor (Tune "
                "forwards TuneConfig's metric and mode only when param_space is not empty)"
            )
        rerun = self._take_rerun(trial_id)
        if rerun is not None:
            config = {k: v for k, v in rerun.items() if k != RESUME_KEY}
            self._pending[trial_id] = (config, self._box.encode(config))
            return rerun
        in_init = self._n_warm + self._n_suggested < self._n_init
        if in_init or len(self._observations) < MIN_OBSERVATIONS_FOR_MODEL:
            config = self._space.sample_one(self._rng)
            config = self._space.finalize({**self._box.constants, **config})
            x = self._box.encode(config)
            source = "random"
        else:
            x = self._model_suggestion()
            config = self._box.decode(x)
            source = "model"
        self._n_suggested += 1
        self._place(trial_id, self._next_index, source)
        self._next_index += 1
        self._pending[trial_id] = (config, x)
        return dict(config)

    @property
    def space(self) -> Space:
        return self._space

    def resume(self, log: Any, checkpoint_exists=None) -> int:
        """Rebuild the search from a journal's trials (``--resume``); returns the re-run count.

        Observations are the ended trials' scores (errors skipped, as live); the random stream
        of the init phase advances once per journaled random suggestion, so the points after a
        resume are the ones an unbroken run would have drawn next; trials that never ended are
        suggested again first, under their old index.
        """
        trials = sorted(log.trials.values(), key=lambda t: t["trial_index"])
        for trial in trials:
            if trial.get("source") == "random":
                self._space.sample_one(self._rng)
        self._n_suggested = len(trials)
        self._next_index = max((t["trial_index"] for t in trials), default=-1) + 1
        for trial in log.ended():
            if trial.get("status") == "error":
                self._n_skipped += 1
                continue
            reports = log.epoch_reports(trial["trial_id"])
            score = _finite(reports[-1]["metrics"].get(self._metric)) if reports else None
            config = _valid_config(self._space, trial["config"])
            if score is None or config is None:
                self._n_skipped += 1
                continue
            self._observations.append((config, self._box.encode(config), score))
        return len(self._queue_reruns(log, checkpoint_exists))

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        """Register a finished trial's score; skip errors and missing or non-finite metrics."""
        pending = self._pending.pop(trial_id, None)
        if pending is None:
            return
        score = None if (error or not result) else _finite(result.get(self._metric))
        if score is None:
            self._n_skipped += 1
            logger.debug("trial %s not registered: error or no finite %r", trial_id, self._metric)
            return
        config, x = pending
        self._observations.append((config, x, score))

    def add_evaluated_point(self, parameters: dict, value: float, error: bool = False,
                            pruned: bool = False, intermediate_values: list | None = None) -> None:
        """Register one config evaluated outside this searcher (Ray's warm-start hook)."""
        if error or pruned:
            return
        self.add_warm_start([{"config": parameters, "score": value}])

    def add_warm_start(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Register earlier results; they count toward the init phase.

        Parameters
        ----------
        rows : sequence of dict
            Each ``{"config": {...}, "score": float}``.

        Returns
        -------
        int
            How many rows were registered (the rest were invalid and skipped).
        """
        added = 0
        for row in rows:
            config = _valid_config(self._space, row.get("config") if isinstance(row, Mapping)
                                   else None)
            score = _finite(row.get("score")) if isinstance(row, Mapping) else None
            if config is None or score is None:
                continue
            self._observations.append((config, self._box.encode(config), score))
            added += 1
        self._n_warm += added
        if added < len(rows):
            logger.warning("warm start: %d of %d rows skipped (not valid for space '%s' or no "
                           "finite score)", len(rows) - added, len(rows), self._space.name)
        return added

    # --- state -------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "space": self._space.to_dict(),
            "metric": self._metric,
            "mode": self._mode,
            "seed": self._seed,
            "n_init": self._n_init,
            "liar": self._liar,
            "acquisition": self._acquisition,
            "rng": self._rng.bit_generator.state,
            "observations": [(dict(c), dict(x), s) for c, x, s in self._observations],
            "pending": {k: (dict(c), dict(x)) for k, (c, x) in self._pending.items()},
            "n_suggested": self._n_suggested,
            "n_warm": self._n_warm,
            "n_skipped": self._n_skipped,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"searcher state version {state.get('version')!r} is not "
                             f"{_STATE_VERSION}; it was saved by another version")
        if state["space"] != self._space.to_dict():
            raise SpaceError(f"saved searcher state belongs to another space than "
                             f"'{self._space.name}'")
        self._metric, self._mode = state["metric"], state["mode"]
        self._seed, self._n_init = state["seed"], state["n_init"]
        self._liar, self._acquisition = state["liar"], state["acquisition"]
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["rng"]
        self._observations = [(dict(c), dict(x), s) for c, x, s in state["observations"]]
        self._pending = {k: (dict(c), dict(x)) for k, (c, x) in state["pending"].items()}
        self._n_suggested = state["n_suggested"]
        self._n_warm = state["n_warm"]
        self._n_skipped = state["n_skipped"]

    # --- the model -----------------------------------------------------------------------------
    def _model_suggestion(self) -> dict[str, Any]:
        """Fit a fresh optimizer on observations plus lies for pending trials; ask it."""
        sign = 1.0 if self._mode == "max" else -1.0  # bayes_opt maximizes
        targets = [sign * s for _, _, s in self._observations]
        lie = {"worst": min, "best": max, "mean": lambda t: float(np.mean(t))}[self._liar](targets)
        seed = int(np.random.SeedSequence([self._seed, self._n_suggested]).generate_state(1)[0])
        acq = _UCB(kappa=2.576) if self._acquisition == "ucb" else _EI(xi=0.01)
        points = [x for _, x, _ in self._observations] + [x for _, x in self._pending.values()]
        values = targets + [lie] * len(self._pending)
        # Repeats of one point (common with discrete params) become one observation with the
        # mean target: a GP with near-zero noise fits two targets at one point badly, and
        # bayes_opt prints a line to stdout for every duplicate it is given.
        merged: dict[tuple, tuple[dict[str, Any], list[float]]] = {}
        for x, value in zip(points, values, strict=True):
            key = tuple(x[name] for name in self._box.pbounds)
            merged.setdefault(key, (x, []))[1].append(value)
        # bayes_opt warns that non-float params are experimental; they are what it is here for.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimizer = BayesianOptimization(f=None, pbounds=self._box.pbounds,
                                             acquisition_function=acq, random_state=seed,
                                             verbose=0, allow_duplicate_points=True)
            for x, group in merged.values():
                optimizer.register(params=x, target=float(np.mean(group)))
            return {k: _plain(v) for k, v in optimizer.suggest().items()}


class _CheapAcquisitionSearch:
    """Maximize the acquisition with vectorized random candidates and at most one refinement.

    bayes_opt's default (10,000 random candidates, then 10 L-BFGS-B starts, or a non-vectorized
    differential evolution when any parameter is discrete) evaluates the GP one point at a time:
    0.5 to 2 seconds per suggestion with a few dozen observations, longer than a trial of the
    SVM space takes. The random candidates (one-hot categoricals and ints drawn exactly) find the
    maximum well enough on a handful of dimensions; an all-continuous space also polishes the best
    candidate with one L-BFGS-B run. Set ``N_REFINE`` to bayes_opt's 10 to get its default back.
    """

    N_REFINE = 1

    def suggest(self, gp, target_space, n_random=10_000, n_smart=10, fit_gp=True,
                random_state=None):
        n_smart = self.N_REFINE if all(target_space.continuous_dimensions) else 0
        return super().suggest(gp, target_space, n_random=n_random, n_smart=n_smart,
                               fit_gp=fit_gp, random_state=random_state)


class _UCB(_CheapAcquisitionSearch, acquisition.UpperConfidenceBound):
    """Upper confidence bound, kappa 2.576 (bayes_opt's default)."""


class _EI(_CheapAcquisitionSearch, acquisition.ExpectedImprovement):
    """Expected improvement, xi 0.01 (bayes_opt's default for constrained problems)."""


def _check_mode(mode: str | None) -> None:
    if mode is not None and mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")


def _valid_config(space: Space, config: Any) -> dict[str, Any] | None:
    if not isinstance(config, Mapping):
        return None
    try:
        return space.check_config(config)
    except (SpaceError, TypeError, ValueError):
        return None

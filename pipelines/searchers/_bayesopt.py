"""Bayesian optimization: a Ray Tune Searcher on bayesian-optimization 3.x.

Ray's own ``BayesOptSearch`` breaks on bayes_opt 3.x, searches log ranges linearly and takes
neither ints nor categoricals. This one works in the project's one unit box
(``search_spaces.transform.UnitTransform``: log params in log space, ints with their rounding,
categoricals one-hot, inactive params at 0.5) and uses bayes_opt's pieces there:

- the GP is bayes_opt's (scikit-learn's ``GaussianProcessRegressor``) with an ARD Matern-5/2
  kernel, a fitted noise term and standardized targets (``gp_params``), instead of the default
  single length scale on the raw bounds, which ignores narrow parameters;
- the acquisition is bayes_opt's expected improvement on a log scale (or its UCB), maximized
  over valid configs: random draws and a Sobol set of the space, and small steps from the best
  observed point, then L-BFGS-B on the continuous columns with the discrete ones held fixed
  (``_MixedSpaceSearch``).

The model is rebuilt from the stored observations at every suggestion, with a random state
derived from ``(seed, number of suggestions so far)``. That makes the searcher a pure function of
its observations and counters: the same seed gives the same suggestions, and a searcher rebuilt
from the journal (``resume``) continues where the first one was.

Trials still running are registered at the model's own prediction for them (the kriging
believer; measured against the constant liar in benchmarks/search_quality.py with 4 trials in
flight), with the hyperparameters fitted on the observations alone (``_fit_model``), so parallel
suggestions spread out instead of piling onto one point.

Under ASHA (once a trial has been cut) the GP is one model over (config, fidelity): every score
a trial reported, at its level (epoch, rung) as an extra column, and the acquisition asks it about
the full budget only (``_joint_suggestion``). BOHB's recipe, a GP on the highest rung with more
trials than parameters, modeled epoch-1 scores for most of a fine-tuning run (15 params: 16
trials at a rung), and those rank configs poorly (docs/measurements.md, "Search quality on the
fine-tuning task"). Without cut trials the model is the one above, unchanged.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from bayes_opt import acquisition
from bayes_opt.target_space import TargetSpace
from ray.tune.search import Searcher
from sklearn.gaussian_process import GaussianProcessRegressor
from threadpoolctl import threadpool_limits

from pipelines.searchers._bayesopt_box import (
    _finite,
    default_n_init,
    warm_start_from_parquet,
)
from pipelines.searchers._resume import RESUME_KEY, Placement, TrialOrder
from pipelines.searchers._state import PickledState
from search_spaces.space import (
    Categorical,
    Fixed,
    Int,
    Space,
    SpaceError,
    choice_from_text,
    is_one_of,
)
from search_spaces.transform import UnitTransform

__all__ = ["BayesOptSearcher", "default_n_init", "warm_start_from_parquet"]

# Draws a random init config that repeats a tried one is replaced by, at most.
_REPEAT_DRAWS = 64

logger = logging.getLogger(__name__)

LIARS = ("worst", "mean", "best", "believer")
ACQUISITIONS = ("ucb", "ei")
# bayes_opt's GP on a single point has nothing to fit a length scale to.
MIN_OBSERVATIONS_FOR_MODEL = 2
_STATE_VERSION = 2


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
    liar : {"worst", "mean", "best", "believer"}
        The value a still-running trial is assumed to score when the next point is chosen: a
        constant (the worst, mean or best score seen), or the model's prediction at its point
        (kriging believer).
    acquisition : {"ei", "ucb"}
        Expected improvement on a log scale (bayes_opt's EI, see ``_LogEI``), or bayes_opt's
        upper confidence bound (kappa 2.576).
    fidelity_key, max_fidelity : str, float or None
        The result key that counts a trial's budget, and the full budget under ASHA (None: every
        completed trial is final).
    select : {"last", "best"}
        A trial's score: its last report, or its best one (fine-tuning's selected epoch).

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
                 liar: str = "believer", acquisition: str = "ei",
                 fidelity_key: str = "training_iteration", max_fidelity: float | None = None,
                 select: str = "last"):
        _check_mode(mode)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                                 or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        if n_init is not None and (isinstance(n_init, bool) or not isinstance(n_init, (int, np.integer))
                                   or n_init < 0):
            raise ValueError(f"n_init must be a non-negative integer or None, got {n_init!r}")
        if liar not in LIARS:
            raise ValueError(f"liar must be one of {', '.join(LIARS)}, got {liar!r}")
        if select not in ("last", "best"):
            raise ValueError(f"select must be 'last' or 'best', got {select!r}")
        if acquisition not in ACQUISITIONS:
            raise ValueError(
                f"acquisition must be one of {', '.join(ACQUISITIONS)}, got {acquisition!r}"
            )
        super().__init__(metric=metric, mode=mode)
        self._init_order()
        space.validate()
        self._space = space
        self._box = UnitTransform(space)
        self._liar = liar
        self._acquisition = acquisition
        # A drawn seed is stored so that a restored searcher keeps the same stream.
        self._seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else int(seed)
        self._n_init = default_n_init(len(self._box.blocks)) if n_init is None else int(n_init)
        # Multi-fidelity (ASHA): each trial's score per fidelity level; a trial the scheduler cut
        # before ``max_fidelity`` is never registered as final (see ``_training_set``).
        self._fidelity_key = fidelity_key
        self._max_fidelity = max_fidelity
        self._select = select
        self._histories: dict[str, dict[float, float]] = {}
        # Trials a --resume runs again (from their checkpoints): what the journal already holds
        # of each, by journal id (its per-level history and its last report), so the re-run's
        # registration sees the whole trial, not just the epochs after its checkpoint.
        self._journaled: dict[str, tuple[dict[float, float], dict[str, Any]]] = {}
        self._rerun_last: dict[str, dict[str, Any]] = {}
        self._rerun_fresh: set[str] = set()
        # Points of configs whose trials failed: never learned from (an error is not a score),
        # and never suggested again by the model while another config is left.
        self._failed: list[np.ndarray] = []
        # Indexes a journal skipped, to suggest first after --resume (``resume``).
        self._gaps: list[tuple[int, dict[str, Any] | None]] = []
        self._final_histories: list[dict[float, float]] = []
        self._cut: list[tuple[dict[str, Any], np.ndarray, dict[float, float]]] = []
        # Same stream as ``space.sample(n, seed)``: the init points are random search's first.
        self._rng = np.random.default_rng(self._seed)
        # Observations are (config, bayes_opt point, score on the metric's own scale), so a
        # later change of mode only flips the sign when the model is built.
        self._observations: list[tuple[dict[str, Any], np.ndarray, float]] = []
        self._pending: dict[str, tuple[dict[str, Any], np.ndarray]] = {}
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
    def transform(self) -> UnitTransform:
        """The unit box the model works in (``search_spaces.transform``)."""
        return self._box

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
            journaled = self._journaled.pop(self._placements[trial_id].trial_id, None)
            if journaled is not None:
                self._histories[trial_id] = dict(journaled[0])
                self._rerun_last[trial_id] = dict(journaled[1])
                self._rerun_fresh.add(trial_id)
            return rerun
        index, config = self._gaps.pop(0) if self._gaps else (self._next_index, None)
        in_init = self._n_warm + self._n_suggested < self._n_init
        if config is not None:  # a journal gap's own init draw (``resume``)
            config, x = self._unseen_random(index, config)
            source = "random"
        elif in_init or len(self._observations) + len(self._cut) < MIN_OBSERVATIONS_FOR_MODEL:
            config = self._space.sample_one(self._rng)
            config, x = self._unseen_random(
                index, self._space.finalize({**self._box.constants, **config}))
            source = "random"
        else:
            x = self._model_suggestion()
            config = self._box.decode(x)
            source = "model"
        self._n_suggested += 1
        self._place(trial_id, index, source)
        if index == self._next_index:
            self._next_index += 1
        self._pending[trial_id] = (config, x)
        return dict(config)

    def _unseen_random(self, index: int, config: dict[str, Any]
                       ) -> tuple[dict[str, Any], np.ndarray]:
        """A random config the search has not tried yet, where the space has one left.

        In a space of a few discrete configs random draws repeat (6 configs, 5 draws: more
        often than not), and a repeat spends a trial on a known score. The seeded stream's
        draw is kept where it is new, which it always is in a space with a continuous
        parameter, and the stream advances once per random suggestion as before (``resume``
        replays it so); a repeat is replaced by draws from a stream of its own, seeded by the
        search's seed and the trial's index.
        """
        x = self._box.encode(config)
        known = [u for _, u, _ in self._observations] + [u for _, u in self._pending.values()] \
            + list(self._failed) + [u for _, u, _ in self._cut]
        if not known:
            return config, x
        known_points = np.array(known)
        if not _seen(x[None], known_points)[0]:
            return config, x
        rng = np.random.default_rng([self._seed % 2**63, int(index), 0x5EED])
        for _ in range(_REPEAT_DRAWS):
            other = self._space.finalize({**self._box.constants, **self._space.sample_one(rng)})
            u = self._box.encode(other)
            if not _seen(u[None], known_points)[0]:
                return other, u
        return config, x  # every config is tried, or nearly: a repeat it is

    @property
    def space(self) -> Space:
        return self._space

    def resume(self, log: Any, checkpoint_exists=None) -> int:
        """Rebuild the search from a journal's trials (``--resume``); returns the re-run count.

        Observations are the ended trials' scores (errors skipped, as live); the random stream
        of the init phase advances once per journaled random suggestion, so the points after a
        resume are the ones an unbroken run would have drawn next; trials that never ended are
        suggested again first, under their old index. An index the journal skips (trials in
        flight start in any order, and the driver died between two starts) is suggested next,
        under that index: in the init phase with the random draw it had, so the search neither
        loses that draw nor repeats the next one.
        """
        trials = sorted(log.trials.values(), key=lambda t: t["trial_index"])
        by_index = {t["trial_index"]: t for t in trials}
        self._gaps = []
        for index in range(max(by_index, default=-1) + 1):
            trial = by_index.get(index)
            if trial is not None:
                if trial.get("source") == "random":
                    self._space.sample_one(self._rng)
            elif self._n_warm + index < self._n_init:
                config = self._space.sample_one(self._rng)
                self._gaps.append((index, self._space.finalize({**self._box.constants, **config})))
            else:
                self._gaps.append((index, None))
        self._n_suggested = len(trials)
        self._next_index = max(by_index, default=-1) + 1
        for trial in log.ended():
            config = _valid_config(self._space, trial["config"])
            reports = log.epoch_reports(trial["trial_id"])
            if trial.get("status") == "error" or config is None or not reports:
                self._n_skipped += 1
                if trial.get("status") == "error" and config is not None:
                    self._failed.append(self._box.encode(config))
                continue
            history, last = self._replayed(reports)
            if log.stopped_by(trial["trial_id"]) == "scheduler":  # cut below the full budget
                last["stopped_by"] = "scheduler"
                last.pop("early_stopped", None)
            if _finite(last.get(self._metric)) is None:
                self._n_skipped += 1
                continue
            self._register(config, self._box.encode(config), last, history)
        for trial in log.unfinished():
            reports = log.epoch_reports(trial["trial_id"])
            if reports:
                self._journaled[trial["trial_id"]] = self._replayed(reports)
        return len(self._queue_reruns(log, checkpoint_exists))

    def _replayed(self, reports: list[dict[str, Any]]) -> tuple[dict[float, float], dict[str, Any]]:
        """A journaled trial's per-level history, and its last report as a result."""
        history: dict[float, float] = {}
        for report in reports:
            self._record_level(history, {self._fidelity_key: report["iteration"],
                                         **report["metrics"]})
        return history, {self._fidelity_key: reports[-1]["iteration"], **reports[-1]["metrics"]}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Record an intermediate score at its fidelity level (epoch, rung)."""
        if trial_id in self._pending:
            history = self._histories.setdefault(trial_id, {})
            if trial_id in self._rerun_fresh:
                # A re-run picks up after its checkpoint: from its first report on, what it
                # reports replaces the dead run's levels (as the journal's rows do).
                self._rerun_fresh.discard(trial_id)
                level = _finite(result.get(self._fidelity_key))
                for old in [k for k in history if level is not None and k >= level]:
                    del history[old]
            self._record_level(history, result)

    def _record_level(self, history: dict[float, float], result: Mapping[str, Any]) -> None:
        level = _finite(result.get(self._fidelity_key))
        score = _finite(result.get(self._metric))
        if level is None or score is None:
            return
        if self._select == "best" and history:
            # The trial's selected score so far: its best report up to this level.
            earlier = history[max(history)]
            better = max if self._mode == "max" else min
            score = better(score, earlier)
        history[level] = score

    def _is_final(self, result: Mapping[str, Any]) -> bool:
        """Whether a completed trial's score is final, not a scheduler's early cut."""
        if self._max_fidelity is None:
            return True
        level = _finite(result.get(self._fidelity_key))
        stopped_itself = result.get("stopped_by") == "patience" or bool(result.get("early_stopped"))
        return stopped_itself or (level is not None and level >= self._max_fidelity)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        """Register a finished trial's score; skip errors and missing or non-finite metrics.

        A trial cut early by ASHA is kept with its per-level scores, never as a final score.
        With ``select="best"`` (fine-tuning) the registered score is the trial's best report.
        """
        pending = self._pending.pop(trial_id, None)
        history = self._histories.pop(trial_id, {})
        journaled_last = self._rerun_last.pop(trial_id, None)
        self._rerun_fresh.discard(trial_id)
        if pending is None:
            return
        if error:
            self._failed.append(np.asarray(pending[1], dtype=float))
        if not error and journaled_last is not None and \
                _finite((result or {}).get(self._metric)) is None:
            # A re-run that had nothing left to report (its checkpoint was its last epoch):
            # the trial's last report is the one the journal holds.
            result = {**(result or {}), **journaled_last}
        if not error and result:
            self._record_level(history, result)
        score = None if (error or not result) else _finite(result.get(self._metric))
        if score is None:
            self._n_skipped += 1
            logger.debug("trial %s not registered: error or no finite %r", trial_id, self._metric)
            return
        config, u = pending
        self._register(config, u, result, history)

    def _register(self, config, u, result, history) -> None:
        if not self._is_final(result):
            self._cut.append((config, u, dict(history)))
            return
        score = history[max(history)] if (self._select == "best" and history) else \
            _finite(result.get(self._metric))
        self._observations.append((config, u, score))
        self._final_histories.append(dict(history))

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
            self._final_histories.append({})
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
            "observations": [(dict(c), list(u), s) for c, u, s in self._observations],
            "pending": {k: (dict(c), list(u)) for k, (c, u) in self._pending.items()},
            "n_suggested": self._n_suggested,
            "final_histories": [dict(h) for h in self._final_histories],
            "cut": [(dict(c), list(u), dict(h)) for c, u, h in self._cut],
            "n_warm": self._n_warm,
            "n_skipped": self._n_skipped,
            "failed": [list(u) for u in self._failed],
            # Where the next suggestion goes in the search's order, and live trials' places
            # and per-level scores: a restored searcher numbers on, never from 0 again.
            "next_index": self._next_index,
            "gaps": [(i, None if c is None else dict(c)) for i, c in self._gaps],
            "placements": {k: (p.trial_id, p.index, p.source)
                           for k, p in self._placements.items()},
            "histories": {k: dict(h) for k, h in self._histories.items()},
            # After a resume: the trials still to re-run first, and what their journal held.
            "reruns": [((p.trial_id, p.index, p.source), dict(c), ck)
                       for p, c, ck in self._reruns],
            "journaled": {k: (dict(h), dict(last)) for k, (h, last) in self._journaled.items()},
            "rerun_last": {k: dict(v) for k, v in self._rerun_last.items()},
            "rerun_fresh": sorted(self._rerun_fresh),
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
        self._observations = [(dict(c), np.asarray(u, dtype=float), s)
                              for c, u, s in state["observations"]]
        self._pending = {k: (dict(c), np.asarray(u, dtype=float))
                         for k, (c, u) in state["pending"].items()}
        self._n_suggested = state["n_suggested"]
        self._final_histories = [dict(h) for h in state["final_histories"]]
        self._cut = [(dict(c), np.asarray(u, dtype=float), dict(h)) for c, u, h in state["cut"]]
        self._n_warm = state["n_warm"]
        self._n_skipped = state["n_skipped"]
        self._failed = [np.asarray(u, dtype=float) for u in state.get("failed", [])]
        # State saved before the numbering was kept: every suggestion took the next index.
        self._next_index = state.get("next_index", state["n_suggested"])
        self._gaps = [(i, None if c is None else dict(c)) for i, c in state.get("gaps", [])]
        # A re-run after --resume keeps its journal id, not the Tune id it runs under.
        self._placements = {tune_id: Placement(journal_id, index, source) for tune_id,
                            (journal_id, index, source) in state.get("placements", {}).items()}
        self._histories = {k: dict(h) for k, h in state.get("histories", {}).items()}
        self._reruns = [(Placement(*place), dict(c), ck) for place, c, ck in state.get("reruns", [])]
        self._journaled = {k: (dict(h), dict(last))
                           for k, (h, last) in state.get("journaled", {}).items()}
        self._rerun_last = {k: dict(v) for k, v in state.get("rerun_last", {}).items()}
        self._rerun_fresh = set(state.get("rerun_fresh", []))

    # --- the model -----------------------------------------------------------------------------
    def _model_suggestion(self) -> np.ndarray:
        """Fit the GP on observations and lies for pending trials; maximize the acquisition.

        Returns the chosen point of the unit box (already snapped to a valid config).
        """
        sign = 1.0 if self._mode == "max" else -1.0  # bayes_opt maximizes
        observed, scores, levels = self._training_set()
        targets = _model_targets(scores, sign)
        if levels is not None:
            return self._joint_suggestion(observed, targets, levels)
        seed = self._model_seed()
        merged, gp = self._fit_model(observed, targets, [u for _, u in self._pending.values()],
                                     seed)
        return self._maximize(merged, gp, seed=seed)

    def _joint_suggestion(self, observed: list[np.ndarray], targets: list[float],
                          levels: list[float]) -> np.ndarray:
        """Under ASHA: one GP over (config, fidelity), its acquisition taken at the full budget.

        Every (config, level, score) of every trial is a row, the fidelity an extra column
        (``_fidelity_column``), so epoch-1 scores inform the model without standing in for
        final ones: the fitted length scale along the fidelity says how far they carry. The
        acquisition sees ``_AtFullBudget``, the joint model with the fidelity fixed at 1, over
        the config box alone. Its incumbent (EI's ``y_max``, and the starts of the local search)
        is the best predicted full-budget mean among the configs tried: most of them never
        reach the full budget under ASHA, so the best real full-budget score would rest on the
        few that did and would compare a noisy score with the model's smoothed means.
        """
        seed = self._model_seed()
        rows = _with_fidelity(observed, levels)
        running = [u for _, u in self._pending.values()]
        pending = _with_fidelity(running, [1.0] * len(running))
        _, gp = self._fit_model(rows, targets, pending, seed)
        model = _AtFullBudget(gp)
        configs = _merge_repeats([x[:-1] for x in rows + pending], [0.0] * len(rows + pending))
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore")
            tried = np.array([u for u, _ in configs])
            means = model.predict(tried)
        return self._maximize(zip(tried, map(float, means), strict=True), model, seed=seed)

    def _fit_model(self, points: list[np.ndarray], targets: list[float],
                   pending: list[np.ndarray], seed: int
                   ) -> tuple[list[tuple[np.ndarray, float]], _PriorGP]:
        """The GP the acquisition sees, fitted, and its rows: observed points and running
        trials at their lie, the targets warped (``_warp_targets``), repeats of one point merged
        into one row.

        Kriging believer (the default): the GP's hyperparameters are fitted on the observations
        alone; each running trial is then added at that GP's prediction for it, and the GP is
        conditioned on the lies with the same hyperparameters, not fitted again (as a fantasy
        model keeps its hyperparameters). A lie agrees with the model by construction, so a
        second fit on it only tells the fit that the function is smoother or less noisy than
        the data say. Measured with 4 trials in flight against fitting again on the lies
        (benchmarks/search_quality.py): docs/measurements.md, "Trials in flight: the believer
        keeps its hyperparameters". A constant liar (``liar`` "worst", "mean", "best") is
        fitted with its lies, as it always was.
        """
        n_dims = len(points[0])
        if self._liar == "believer":
            values = _warp_targets(np.array(targets), np.array(targets))
            observed = _merge_repeats(points, values)
            gp = _fit_gp(observed, n_dims, seed)
            if not pending:
                return observed, gp
            lies = self._believed(gp, pending)
            # Repeats of one point (common with discrete params) become one observation with
            # the mean target: the GP's noise term then carries the spread, and bayes_opt prints
            # a line to stdout for every duplicate it is given.
            merged = _merge_repeats(points + pending, list(values) + list(lies))
            return merged, _fit_gp(merged, n_dims, seed, kernel=gp.kernel_)
        lies = [self._constant_lie(targets)] * len(pending)
        values = _warp_targets(np.array(targets), np.array(targets + lies))
        merged = _merge_repeats(points + pending, values)
        return merged, _fit_gp(merged, n_dims, seed)

    def _maximize(self, registered, gp, *, seed: int) -> np.ndarray:
        """bayes_opt's acquisition over the config box, with ``gp`` already fitted, on
        ``registered`` ``(point, target)`` pairs; the chosen point, snapped.

        ``registered`` gives the acquisition its incumbent (EI's best target, the local
        searches' starts) and the points it must not suggest again."""
        keys = [f"u{i:03d}" for i in range(self._box.n_dims)]
        acq = self._new_acquisition()
        # One BLAS thread: the matrices are small (observations x observations), and a
        # multi-threaded BLAS on a busy machine (trials running beside the driver) is many
        # times slower than one thread.
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore")
            # bayes_opt's TargetSpace and acquisition, with the GP handed in directly: the
            # optimizer's own GP wraps every kernel call in a per-parameter transform, which
            # on an all-float box does nothing but costs a third of the time.
            space = TargetSpace(None, {k: (0.0, 1.0) for k in keys}, allow_duplicate_points=True)
            for u, value in registered:
                space.register(u, value)
            u = acq.suggest(gp=gp, target_space=space, fit_gp=False,
                            random_state=np.random.RandomState(seed % 2**32))
        return self._box.snap(np.asarray(u, dtype=float))

    def _full_budget_model(self) -> _AtFullBudget | None:
        """The joint model of ``_joint_suggestion`` on the recorded scores alone (no pending
        trials), as a model of the config at the full budget; None without cut trials."""
        observed, scores, levels = self._training_set()
        if levels is None:
            return None
        sign = 1.0 if self._mode == "max" else -1.0
        targets = _model_targets(scores, sign)
        _, gp = self._fit_model(_with_fidelity(observed, levels), targets, [],
                                self._model_seed())
        return _AtFullBudget(gp)

    def _model_seed(self) -> int:
        return int(np.random.SeedSequence([self._seed, self._n_suggested]).generate_state(1)[0])

    def _constant_lie(self, targets: list[float]) -> float:
        return {"worst": min, "best": max, "mean": lambda t: float(np.mean(t)),
                "believer": min}[self._liar](targets)

    def _new_acquisition(self) -> _MixedSpaceSearch:
        acq = (_UCB(kappa=2.576) if self._acquisition == "ucb" else _LogEI(xi=0.0))
        acq.transform = self._box
        acq.avoid = np.array(self._failed) if self._failed else None
        return acq

    def _believed(self, gp: _PriorGP, pending: list[np.ndarray]) -> np.ndarray:
        """The kriging believer's lies: the fitted GP's mean for each running trial."""
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore")
            return gp.predict(np.array(pending))

    def _fidelity_column(self, level: float) -> float:
        """A fidelity level (epoch, rung) as the joint model's extra column: log(level) over
        log(full budget), clipped to [0, 1]. Log scale: ASHA's rungs are geometric (1, 3, 9),
        and learning curves move most in their first epochs."""
        if self._max_fidelity is None or self._max_fidelity <= 1:
            return 1.0
        return float(np.clip(np.log(max(level, 1.0)) / np.log(self._max_fidelity), 0.0, 1.0))

    def _training_set(self) -> tuple[list[np.ndarray], list[float], list[float] | None]:
        """Points, scores and fidelity columns the model is fitted on.

        Without trials cut early (FIFO, or ASHA before its first cut), every final score and no
        fidelity column (None). Otherwise every score each trial recorded, at its level: a cut
        trial's at the levels it reached (never as a final one), a finished trial's at its
        levels with its final (selected) score at the full budget, also when it stopped itself
        (patience) below it; a warm-start row at the full budget.
        """
        if not self._cut:
            return ([u for _, u, _ in self._observations], [s for _, _, s in self._observations],
                    None)
        points, scores, levels = [], [], []
        for (_, u, final), history in zip(self._observations, self._final_histories, strict=True):
            last = max(history, default=None)
            for level, score in history.items():
                if level != last:
                    points.append(u)
                    scores.append(score)
                    levels.append(self._fidelity_column(level))
            points.append(u)
            scores.append(final)
            levels.append(1.0)
        for _, u, history in self._cut:
            for level, score in history.items():
                points.append(u)
                scores.append(score)
                levels.append(self._fidelity_column(level))
        return points, scores, levels


def _with_fidelity(points: Sequence[np.ndarray], levels: Sequence[float]) -> list[np.ndarray]:
    """Each point with its fidelity column appended (the joint model's rows)."""
    return [np.append(u, f) for u, f in zip(points, levels, strict=True)]


def _merge_repeats(points: Sequence[np.ndarray], values: Sequence[float]
                   ) -> list[tuple[np.ndarray, float]]:
    """Repeats of one point as one row with their mean value."""
    merged: dict[tuple, tuple[np.ndarray, list[float]]] = {}
    for u, value in zip(points, values, strict=True):
        merged.setdefault(tuple(np.round(u, 12)), (np.asarray(u, dtype=float), []))[1].append(value)
    return [(u, float(np.mean(group))) for u, group in merged.values()]


def _fit_gp(rows: Sequence[tuple[np.ndarray, float]], n_dims: int, seed: int,
            kernel: Any = None) -> _PriorGP:
    """``gp_params``' GP fitted on ``rows``; with ``kernel`` (an already fitted one) only
    conditioned on them, its hyperparameters kept."""
    params = gp_params(n_dims, seed, len(rows))
    if kernel is not None:
        params.update(kernel=kernel, optimizer=None)
    gp = _PriorGP(**params)
    with warnings.catch_warnings(), threadpool_limits(1):  # one BLAS thread: see _maximize
        warnings.simplefilter("ignore")
        return gp.fit(np.array([x for x, _ in rows]), np.array([v for _, v in rows]))


class _AtFullBudget:
    """The joint (config, fidelity) GP seen as a model of the config alone at the full budget:
    what the acquisition and its maximizer get (bayes_opt reads ``X_train_`` for the width of
    a point and calls ``predict``)."""

    def __init__(self, gp: GaussianProcessRegressor):
        self.gp = gp
        self.X_train_ = gp.X_train_[:, :-1]

    def predict(self, X: np.ndarray, return_std: bool = False):
        X = np.atleast_2d(np.asarray(X, dtype=float))
        return self.gp.predict(np.hstack([X, np.ones((len(X), 1))]), return_std=return_std)


def gp_params(n_dims: int, seed: int, n_points: int = 0) -> dict[str, Any]:
    """The GP for hyperparameter search (``_PriorGP``'s arguments).

    - an ARD Matern-5/2: one length scale per column of the unit box, so a narrow parameter
      (beta1 over 0.19) counts as much as a wide one (lr over four decades);
    - a constant amplitude and a white-noise term: CV scores are noisy, and an interpolating GP
      chases that noise;
    - standardized targets (``normalize_y``);
    - all of them fitted by maximum a posteriori, not maximum likelihood (see ``_PriorGP``).
    """
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    kernel = (ConstantKernel(1.0, (1e-2, 1e2))
              * Matern(length_scale=np.ones(n_dims), length_scale_bounds=(1e-2, 1e2), nu=2.5)
              + WhiteKernel(1e-2, (1e-6, 1e-1)))
    # A second start of the fit guards against a poor local optimum while data are few; past 50
    # points the fit dominates a suggestion's time and one start does.
    restarts = 1 if n_points < 50 else 0
    return {"kernel": kernel, "alpha": 1e-8, "normalize_y": True, "n_restarts_optimizer": restarts,
            "random_state": seed}


class _PriorGP(GaussianProcessRegressor):
    """scikit-learn's GP with weak priors on its kernel's hyperparameters (a MAP fit).

    scikit-learn fits the amplitude, length scales and noise by marginal likelihood alone. With
    20 to 40 points in 6 dimensions that fit often picks very short length scales (the model
    then explains every point by a bump and has no opinion between them) or a noise level that
    swallows the signal; both make the search wander or stall near a local optimum. The priors
    follow the shape Optuna's GPSampler uses on the unit box with standardized targets: a penalty
    on inverse squared length scales far from 1 in either direction, Gamma(2, 1) on the amplitude
    and Gamma(1.1, 30) on the noise variance. This class only adds the log prior and its gradient
    to ``log_marginal_likelihood``, which ``fit`` maximizes; it assumes the kernel of
    ``gp_params`` (amplitude, then one length scale per dimension, then the noise).
    """

    def log_marginal_likelihood(self, theta=None, eval_gradient=False, clone_kernel=True):
        if theta is None:  # the fitted model's own value: reported without the prior
            return super().log_marginal_likelihood(theta, eval_gradient, clone_kernel)
        theta = np.asarray(theta, dtype=float)
        if _is_gp_params_kernel(self.kernel_) and np.ndim(self.alpha) == 0:
            result = _matern52_lml(self.X_train_, self.y_train_, theta, float(self.alpha),
                                   eval_gradient)
        else:  # not gp_params' kernel: scikit-learn's general code
            result = super().log_marginal_likelihood(theta, eval_gradient, clone_kernel)
        prior, gradient = _log_prior(theta)
        if eval_gradient:
            lml, lml_gradient = result
            return lml + prior, lml_gradient + gradient
        return result + prior


_LONG, _SHORT = 0.1, 0.1


# Scores beyond this size are the same to the model: a diverged run's finite loss of 1e160
# overflowed the target warp and the GP's standardization (NaN, then a crash of the search).
_TARGET_LIMIT = 1e30


def _model_targets(scores, sign: float) -> list[float]:
    """The scores as the model maximizes them (negated for ``mode="min"``), clipped to
    +-``_TARGET_LIMIT`` (order kept, except among scores beyond it)."""
    return [float(t) for t in np.clip(sign * np.asarray(scores, dtype=float),
                                      -_TARGET_LIMIT, _TARGET_LIMIT)]


def _warp_targets(observed: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Yeo-Johnson power transform of the targets, fitted on the observed ones.

    Losses and error rates have a long tail of bad configs (a too-high learning rate scores 10x
    the best). Standardized as they are, that tail sets the scale, every good config sits in
    a sliver near the bottom and the model cannot tell them apart. A monotone power transform
    fitted to make the observed targets look Gaussian (as HEBO does) keeps the order, so the
    incumbent and EI's improvement are the same points, and spreads the good end out.
    ``values`` (observed plus lies) are mapped with the transform fitted on ``observed``.
    """
    from sklearn.preprocessing import PowerTransformer

    if len(observed) < 3 or np.ptp(observed) == 0:
        return values
    # Fitted on the negated targets: the long tail is on the bad side, which is low here
    # (bayes_opt maximizes), and Yeo-Johnson's two branches are not mirror images.
    transform = PowerTransformer(method="yeo-johnson", standardize=True)
    with np.errstate(all="ignore"):
        transform.fit(-observed[:, None])
        warped = -transform.transform(-values[:, None])[:, 0]
    # An extreme spread can overflow the fitted power: the targets as they are, then.
    return warped if np.isfinite(warped).all() else values


def _is_gp_params_kernel(kernel) -> bool:
    """Whether ``kernel`` is ``gp_params``' amplitude x ARD Matern-5/2 + white noise, the one
    ``_matern52_lml`` computes."""
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, Product, Sum, WhiteKernel

    return (isinstance(kernel, Sum) and isinstance(kernel.k2, WhiteKernel)
            and isinstance(kernel.k1, Product) and isinstance(kernel.k1.k1, ConstantKernel)
            and isinstance(kernel.k1.k2, Matern) and kernel.k1.k2.nu == 2.5
            and not any(h.fixed for h in kernel.hyperparameters))


def _matern52_lml(X: np.ndarray, y: np.ndarray, theta: np.ndarray, jitter: float,
                  eval_gradient: bool):
    """Log marginal likelihood (and its gradient in ``theta``) of ``gp_params``' kernel,
    amplitude x ARD Matern-5/2 + white noise, with ``jitter`` on the diagonal: the value
    scikit-learn's ``GaussianProcessRegressor.log_marginal_likelihood`` computes, faster.

    scikit-learn builds the kernel's gradient as an (n, n, dims) array and contracts it with an
    einsum: most of a fit's time past a hundred points. For a length scale l_d the contraction
    is sum_ij M_ij (z_id - z_jd)^2 with z = x / l, which is 2 (z_d^2 . M 1 - z_d . M z_d): two
    matrix products, no third axis. A suggestion with 300 observations fits about 3x faster.
    """
    from scipy.linalg import cho_solve, cholesky
    from scipy.linalg.lapack import dpotri
    from scipy.spatial.distance import cdist

    amplitude, noise = np.exp(theta[0]), np.exp(theta[-1])
    z = X / np.exp(theta[1:-1])
    sq = cdist(z, z, "sqeuclidean")
    root5r = np.sqrt(5.0 * sq)
    decay = np.exp(-root5r)
    matern = (1.0 + root5r + (5.0 / 3.0) * sq) * decay
    K = amplitude * matern
    K[np.diag_indices_from(K)] += noise + jitter
    try:
        L = cholesky(K, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return (-np.inf, np.zeros_like(theta)) if eval_gradient else -np.inf
    y = y.reshape(len(y), -1)
    alpha = cho_solve((L, True), y, check_finite=False)
    value = float(-0.5 * np.einsum("ik,ik->", y, alpha)
                  - y.shape[1] * (np.log(np.diag(L)).sum() + len(y) / 2 * np.log(2 * np.pi)))
    if not eval_gradient:
        return value
    # d lml / d theta_k = 1/2 tr(W dK/dtheta_k), W = alpha alpha^T - K^-1 (summed over y's
    # columns, as scikit-learn does).
    inverse, info = dpotri(L, lower=1)  # K^-1 from the Cholesky factor: its lower triangle
    if info != 0:
        return value, np.zeros_like(theta)
    inverse = np.tril(inverse) + np.tril(inverse, -1).T
    W = alpha @ alpha.T - y.shape[1] * inverse
    M = W * (amplitude * (5.0 / 3.0) * (1.0 + root5r) * decay)
    scales = (z * z).T @ M.sum(axis=1) - np.einsum("id,id->d", z, M @ z)
    gradient = np.concatenate([[0.5 * np.sum(W * K) - 0.5 * (noise + jitter) * np.trace(W)],
                               scales,
                               [0.5 * noise * np.trace(W)]])
    return value, gradient


def _log_prior(theta: np.ndarray) -> tuple[float, np.ndarray]:
    """Log prior (up to a constant) of ``gp_params``'s kernel and its gradient, in log space.

    ``theta`` is scikit-learn's ``[log amplitude, log length scales..., log noise]``.
    """
    amp, scales, noise = theta[0], theta[1:-1], theta[-1]
    # Length scale l: -0.1 (l^2 + l^-2); Gamma(2, 1) on the amplitude; Gamma(1.1, 30) on noise.
    sq, inv_sq = np.exp(2 * scales), np.exp(-2 * scales)
    value = (-float(np.sum(_LONG * sq + _SHORT * inv_sq))
             + (amp - np.exp(amp))
             + (0.1 * noise - 30.0 * np.exp(noise)))
    gradient = np.concatenate([[1.0 - np.exp(amp)], -2 * (_LONG * sq - _SHORT * inv_sq),
                               [0.1 - 30.0 * np.exp(noise)]])
    return value, gradient


class _MixedSpaceSearch:
    """Maximize the acquisition over the unit box of a mixed space.

    bayes_opt's own search draws 10,000 uniform points of the box and polishes them with
    L-BFGS-B on every column, which on one-hot and int columns lands between valid configs; with
    discrete columns it falls back to a slow differential evolution. Here the candidates are valid
    configs (random draws of the space, as random search draws them, a scrambled Sobol set
    snapped to valid configs, and small steps from the best observed point, ``_near``). The
    best few, and the best observed points, are then refined by L-BFGS-B on the continuous
    columns with the discrete ones held fixed, alternated with one-parameter discrete moves
    (another choice, a nearby integer), as Optuna's mixed-space optimizer does.
    """

    transform: Any = None  # a search_spaces.transform.UnitTransform, set before suggest()
    avoid: np.ndarray | None = None  # points of failed configs, never suggested again
    N_CANDIDATES = 1024
    N_LOCAL = 3
    N_INCUMBENT = 2
    N_DISCRETE_ROUNDS = 3
    # Candidates drawn around the best observed point, and their step (see ``_near``).
    N_NEAR = 256
    NEAR_SIGMA = 0.02

    def _acq_min(self, acq, space, random_state, n_random=0, n_smart=0):
        from scipy.stats import qmc

        box = self.transform
        rng = np.random.default_rng(random_state.randint(2**31 - 1))
        sobol = qmc.Sobol(box.n_dims, scramble=True, seed=rng).random(self.N_CANDIDATES // 2)
        # Local searches start from the best candidates and from the best observed points (as
        # Optuna's GPSampler warm-starts from its incumbent): once the model is sure of the
        # region, the next improvement is a small step from the incumbent, which random and
        # Sobol candidates in 6 or more dimensions rarely land close enough to find.
        incumbents = space.params[np.argsort(-space.target)[:self.N_INCUMBENT]]
        parts = [box.sample(self.N_CANDIDATES // 2, rng), box.snap_many(sobol)]
        if self.N_NEAR:  # bayes_opt never asks with no observations: an incumbent exists
            parts.append(self._near(incumbents[0], rng))
        candidates = np.vstack(parts)
        values = acq(candidates)
        order = np.argsort(values)
        starts = box.snap_many(np.vstack([candidates[order[:self.N_LOCAL]], incumbents]))
        points, point_values = self._polish(acq, starts)
        found = np.vstack([points, candidates])
        found_values = np.concatenate([point_values, values])
        # A config the model already has (observed, or running) is never suggested again while
        # another is left: it would spend a trial on a known score. It happens where the model
        # keeps some variance at a point it has seen, typically a corner of the box that the
        # local searches run into (seen on a 2-parameter SVM: one config suggested 10 times in
        # 40 trials). Only an exhausted discrete space gets a repeat.
        # The same for a config whose trial failed (a C of -1, an out-of-memory batch size).
        known = space.params if self.avoid is None else np.vstack([space.params, self.avoid])
        fresh = ~_seen(found, known)
        if not fresh.any() and self.avoid is not None:
            # Every config has been tried: repeat one that worked, never one that failed (the
            # failed one, never observed, has the model's largest variance and would win).
            fresh = ~_seen(found, self.avoid)
        if fresh.any():
            found, found_values = found[fresh], found_values[fresh]
        return found[int(np.argmin(found_values))]

    def _near(self, centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``N_NEAR`` valid configs around ``centre`` (the best observed point): every
        non-categorical column (floats, ints) moved by a Gaussian step of ``NEAR_SIGMA`` of the
        unit box, categoricals kept, snapped.

        Late in a search the next improvement is a small step from the incumbent in several
        parameters at once. The L-BFGS-B run from the incumbent finds it when the acquisition
        has a slope to follow there, but in 6 or more dimensions random and Sobol candidates
        almost never land close enough to start the other local searches in that basin, and an
        int column is not moved by L-BFGS-B at all. Measured with benchmarks/search_quality.py
        (docs/measurements.md, "Search quality now: candidates near the incumbent"): 40 seeds
        of the synthetic suite, 40 trials, median regret 0.0045 to 0.0029 sequential and 0.053
        to 0.030 with 4 in flight.
        """
        box = self.transform
        near = np.repeat(np.asarray(centre, dtype=float)[None, :], self.N_NEAR, axis=0)
        numeric = np.ones(box.n_dims, dtype=bool)
        for name, start, width in box.blocks:
            if isinstance(box.space.params[name], Categorical):
                numeric[start:start + width] = False
        near[:, numeric] += rng.normal(0.0, self.NEAR_SIGMA, (self.N_NEAR, int(numeric.sum())))
        return box.snap_many(np.clip(near, 0.0, 1.0))

    def _polish(self, acq, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Refine each row of ``points``: L-BFGS-B on the continuous columns (discrete ones
        fixed), then greedy one-parameter discrete moves (``UnitTransform.neighbours``) while one
        improves, then L-BFGS-B again from where the moves ended."""
        points, values = self._continuous_search(acq, points)
        moved = np.zeros(len(points), dtype=bool)
        for _ in range(self.N_DISCRETE_ROUNDS):
            moves = [self.transform.neighbours(u) for u in points]
            sizes = [len(m) for m in moves]
            if not sum(sizes):
                break
            # One batched GP prediction for every start's moves.
            move_values = np.split(acq(np.vstack(moves)), np.cumsum(sizes)[:-1])
            improved = False
            for i, (m, v) in enumerate(zip(moves, move_values, strict=True)):
                if len(m) and v.min() < values[i]:
                    points[i], values[i], moved[i], improved = m[v.argmin()], v.min(), True, True
            if not improved:
                break
        if moved.any():
            points[moved], values[moved] = self._continuous_search(acq, points[moved])
        return points, values

    def _continuous_search(self, acq, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """L-BFGS-B on the continuous columns from each start (discrete columns fixed); each
        start keeps its result only if it improved on the start.

        One L-BFGS-B run per start: minimizing the sum over all starts at once (BoTorch's way)
        takes a fraction of the time but couples their line searches, and measured on
        Hartmann-6 it left the search ten times further from the optimum.
        """
        from scipy.optimize import minimize

        box = self.transform
        points = np.array(starts, dtype=float)
        values = acq(points)
        free = np.flatnonzero(box.continuous)
        if not free.size:
            return points, values
        step = 1e-4
        for i, start in enumerate(starts):
            fixed = np.array(start, dtype=float)

            def value_and_gradient(x, fixed=fixed):
                # Central differences in one batched GP prediction (2k + 1 points).
                batch = np.repeat(fixed[None, :], 2 * free.size + 1, axis=0)
                batch[:, free] = x
                for j, col in enumerate(free):
                    batch[1 + 2 * j, col] += step
                    batch[2 + 2 * j, col] -= step
                out = acq(batch)
                return float(out[0]), (out[1::2] - out[2::2]) / (2 * step)

            result = minimize(value_and_gradient, fixed[free], jac=True, method="L-BFGS-B",
                              bounds=[(0.0, 1.0)] * free.size, options={"maxiter": 30})
            point = fixed.copy()
            point[free] = np.clip(result.x, 0.0, 1.0)
            point = box.snap(point)
            value = float(acq(point[None, :])[0])
            if value < values[i]:
                points[i], values[i] = point, value
        return points, values


def _seen(points: np.ndarray, known: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """Per row of ``points``: whether it equals (within ``tol`` on every column of the unit box)
    a row of ``known``."""
    from scipy.spatial.distance import cdist

    if not len(known):
        return np.zeros(len(points), dtype=bool)
    # Chebyshev distance: the largest difference over the columns, all pairs in one C loop.
    return cdist(points, known, "chebyshev").min(axis=1) <= tol


class _LogEI(_MixedSpaceSearch, acquisition.ExpectedImprovement):
    """Expected improvement on a log scale (Ament et al., 2023): the same maximizer as EI, but
    its value does not underflow to a flat zero far from the incumbent, so the candidate search
    still has a slope to follow once the model is confident."""

    def base_acq(self, mean, std):
        from scipy.special import erfcx, log_ndtr

        std = np.maximum(std, 1e-12)
        z = (mean - self.y_max - self.xi) / std
        log_h = np.empty_like(z)
        # h(z) = phi(z) + z Phi(z); for z << 0 both terms cancel, so use erfcx there.
        low = z < -1.0
        zl = z[low]
        log_h[low] = (-0.5 * zl**2 - 0.5 * np.log(2 * np.pi)
                      + np.log1p(zl * np.sqrt(np.pi / 2) * erfcx(-zl / np.sqrt(2))))
        zh = z[~low]
        log_h[~low] = np.log(np.exp(-0.5 * zh**2) / np.sqrt(2 * np.pi)
                             + zh * np.exp(log_ndtr(zh)))
        return np.log(std) + log_h


class _UCB(_MixedSpaceSearch, acquisition.UpperConfidenceBound):
    """Upper confidence bound, kappa 2.576 (bayes_opt's default)."""


def _check_mode(mode: str | None) -> None:
    if mode is not None and mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")


def _valid_config(space: Space, config: Any) -> dict[str, Any] | None:
    """``config`` checked against the space, or None. Stricter than ``check_config`` (which
    makes a config of what it is given) where a stored row meets another space: a value that
    differs from a Fixed parameter's, or a non-integer for an Int, is another config, and its
    score must not be learned as this one's."""
    if not isinstance(config, Mapping):
        return None
    try:
        final = space.check_config(config)
    except (SpaceError, TypeError, ValueError):
        return None
    for name in final:  # the active parameters only: an inactive one is dropped anyway
        param, value = space.params[name], config.get(name)
        # A Fixed number read back from an earlier space's string column ("0.001") is that number.
        if isinstance(param, Fixed) and name in config and \
                not is_one_of(choice_from_text(value, [param.value]), [param.value]):
            return None
        if isinstance(param, Int) and (isinstance(value, (bool, np.bool_)) or not (
                isinstance(value, (int, np.integer)) or
                isinstance(value, (float, np.floating)) and float(value).is_integer())):
            return None
    return final

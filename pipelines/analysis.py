"""Read finished (or running) experiments back as pandas, and the numbers behind the report.

Everything here is pandas, pyarrow, numpy and scikit-learn on the files an experiment leaves
(``trials.parquet``, ``epochs.parquet``, ``experiment.json``): nothing imports Ray, so a
notebook or a laptop without the cluster's packages running can use it.

- ``load_experiment`` / ``load_experiments``: one folder or URI (``results/NAME``,
  ``s3://bucket/prefix/NAME``) per experiment, read through ``pipelines.storage``;
- ``trials_frame``, ``epochs_frame``, ``settings_frame``: several experiments as one table each;
- ``best_trial``, ``ranked_trials``: the project's one selection rule
  (``pipelines.results.ranked_rows``), so the analysis names the same best trial as the run;
- ``best_so_far``: the best score by trial order or by wall time;
- ``compute_spent``: trial-seconds and reports (epochs or fidelity rungs);
- ``param_importance``: permutation importance of a random forest fitted on the configs;
- ``learning_curves``, ``stop_points``: per-report scores and where each trial stopped.

Example::

    from pipelines.analysis import best_trial, load_experiment, param_importance

    exp = load_experiment("results/svm-random-20260101-120000")
    best_trial(exp)["param_C"]
    param_importance(exp).importances
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.results import (
    EPOCHS_FILE,
    EXPERIMENT_FILE,
    TRIALS_FILE,
    MetricColumns,
    SchemaVersionError,
    check_schema_version,
    parquet_schema_version,
    part_files,
    ranked_rows,
)
from pipelines.storage import Storage, StorageError
from search_spaces.space import choice_from_text

__all__ = [
    "AnalysisError",
    "Experiment",
    "Importance",
    "INACTIVE",
    "best_so_far",
    "best_trial",
    "compute_spent",
    "encode_params",
    "epochs_frame",
    "experiment_labels",
    "load_experiment",
    "load_experiments",
    "learning_curves",
    "param_importance",
    "ranked_trials",
    "settings_frame",
    "stop_points",
    "test_result",
    "trials_frame",
]

# Where an inactive conditional parameter sits in the encoded configs: below every active value
# (active values are in [0, 1]), so one split of a tree separates "off" from "on".
INACTIVE = -1.0

# Fewer trials than this give a forest too little to tell a parameter's effect from noise.
MIN_TRIALS_FOR_IMPORTANCE = 8


class AnalysisError(ValueError):
    """An experiment that cannot be read; the message is one line naming what is wrong."""

    def __init__(self, message: object = ""):
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class Experiment:
    """One experiment's files as pandas.

    Parameters
    ----------
    name : str
        The experiment's name (``experiment.json``'s ``name``, else its folder name).
    location : str
        The folder or URI it was read from.
    info : dict
        ``experiment.json`` as written by the run.
    trials : pandas.DataFrame
        ``trials.parquet``, sorted by ``trial_index``.
    epochs : pandas.DataFrame
        ``epochs.parquet``, sorted by ``trial_index`` and ``iteration``.
    """

    name: str
    location: str
    info: dict = field(repr=False)
    trials: pd.DataFrame = field(repr=False)
    epochs: pd.DataFrame = field(repr=False)

    @property
    def metrics(self) -> MetricColumns:
        """The searched metric, its mode, step column and selection rule."""
        return MetricColumns.from_dict(self.info["metrics"])

    @property
    def score_column(self) -> str:
        """The ``trials.parquet`` column trials are ranked by."""
        return self.metrics.score_column

    @property
    def param_specs(self) -> dict[str, dict[str, Any]]:
        """The space's parameters as ``experiment.json`` holds them (``Space.to_dict``)."""
        return dict((self.info.get("space") or {}).get("params") or {})


# --- loading ----------------------------------------------------------------------------------
def load_experiment(location: str | os.PathLike) -> Experiment:
    """Read one experiment folder.

    Parameters
    ----------
    location : str or path-like
        The experiment's folder (``results/NAME``) or its URI on an object store
        (``s3://bucket/prefix/NAME``; credentials and endpoint as ``pipelines.storage`` reads
        them).

    Returns
    -------
    Experiment

    Raises
    ------
    AnalysisError
        The location does not exist, holds no ``experiment.json`` (it is not an experiment
        folder), a file cannot be read or parsed, or it was written with a newer results
        schema version than this code reads. The message is one line.

    Notes
    -----
    A running experiment is read from its parts and its last compaction together (see
    ``pipelines.results``): every trial ended so far once, with its reports.
    """
    location = os.fspath(location)
    try:
        storage = Storage(location)
        kind = storage.fs.get_file_info(storage.root).type
    except (StorageError, OSError) as exc:
        raise AnalysisError(f"cannot open '{location}': {exc}") from None
    if storage.is_local and kind == pafs.FileType.NotFound:
        raise AnalysisError(f"'{location}' does not exist")
    if kind == pafs.FileType.File:
        raise AnalysisError(f"'{location}' is a file, not an experiment folder")
    if not storage.exists(EXPERIMENT_FILE):
        raise AnalysisError(f"'{location}' is not an experiment folder: it holds no "
                            f"{EXPERIMENT_FILE}")
    info = _read_json(storage, location)
    try:
        check_schema_version(info.get("schema_version"), _join(location, EXPERIMENT_FILE))
    except SchemaVersionError as exc:
        raise AnalysisError(str(exc)) from None
    for attempt in range(3):
        try:
            trials, epochs = _read_results(storage, location)
            break
        except _PartGone:
            if attempt == 2:
                raise AnalysisError(f"'{location}' kept changing while it was read (a run "
                                    "compacting its parts); read it again") from None
    for frame, name, needed in ((trials, TRIALS_FILE, ("trial_id", "trial_index", "status")),
                                (epochs, EPOCHS_FILE, ("trial_id", "trial_index", "iteration"))):
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise AnalysisError(f"{_join(location, name)} has no column {missing[0]!r}; "
                                "it was not written by this project")
    trials = trials.sort_values("trial_index", kind="stable").reset_index(drop=True)
    epochs = epochs.sort_values(["trial_index", "iteration"], kind="stable").reset_index(drop=True)
    name = str(info.get("name") or os.path.basename(storage.root.rstrip("/")))
    return Experiment(name=name, location=location, info=info, trials=trials, epochs=epochs)


def load_experiments(locations: Iterable[str | os.PathLike]) -> list[Experiment]:
    """Read several experiment folders (see ``load_experiment``), in the order given."""
    experiments = [load_experiment(loc) for loc in locations]
    if not experiments:
        raise AnalysisError("no experiment given")
    return experiments


def _join(location: str, name: str) -> str:
    return location.rstrip("/") + "/" + name


def _read_json(storage: Storage, location: str) -> dict[str, Any]:
    try:
        info = json.loads(storage.read_bytes(EXPERIMENT_FILE))
    except (OSError, ValueError) as exc:
        raise AnalysisError(f"cannot read {_join(location, EXPERIMENT_FILE)}: {exc}") from None
    if not isinstance(info, dict):
        raise AnalysisError(f"{_join(location, EXPERIMENT_FILE)} is not a JSON object")
    metrics = info.get("metrics")
    if not isinstance(metrics, dict) or not {"metric", "mode", "step", "columns"} <= set(metrics):
        raise AnalysisError(f"{_join(location, EXPERIMENT_FILE)} names no metric; it was not "
                            "written by this project's pipelines")
    try:
        MetricColumns.from_dict(metrics)
    except (KeyError, TypeError, ValueError) as exc:
        raise AnalysisError(f"{_join(location, EXPERIMENT_FILE)}: unreadable metrics: "
                            f"{exc}") from None
    return info


class _PartGone(Exception):
    """A part was deleted between listing and reading it (a compaction ran meanwhile)."""


def _read_results(storage: Storage, location: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """trials.parquet and epochs.parquet, with the parts a running experiment has written.

    The order is the one ``pipelines.results`` writes against: the trials (compacted file,
    then parts) before the epochs (parts, then compacted file), so each trial read has its
    reports. A trial in two places (a compaction or a resume in progress) is kept once.
    """
    trials: list[pa.Table] = []
    epochs: list[pa.Table] = []
    if storage.exists(TRIALS_FILE):
        trials.append(_read_parquet(storage, location, TRIALS_FILE))
    trials += [_read_part(storage, location, p) for p in part_files(storage, "", "trials")]
    epochs += [_read_part(storage, location, p) for p in part_files(storage, "", "epochs")]
    if storage.exists(EPOCHS_FILE):
        epochs.append(_read_parquet(storage, location, EPOCHS_FILE))
    for name, tables in ((TRIALS_FILE, trials), (EPOCHS_FILE, epochs)):
        if not tables:
            raise AnalysisError(f"'{location}' holds no {name} yet (no trial has ended; "
                                "after a hard kill, python -m pipelines.results rebuild "
                                "rewrites it from the journal)")
    if len(trials) == 1 and len(epochs) == 1:
        return trials[0].to_pandas(), epochs[0].to_pandas()
    try:
        trials_frame = pa.concat_tables(trials, promote_options="default").to_pandas()
        epochs_frame = pa.concat_tables(epochs, promote_options="default").to_pandas()
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise AnalysisError(f"the result files of '{location}' disagree on their columns: "
                            f"{exc}") from None
    if "trial_id" not in trials_frame or not {"trial_id", "iteration"} <= set(epochs_frame):
        return trials_frame, epochs_frame  # not this project's files: the caller says so
    trials_frame = trials_frame.drop_duplicates("trial_id").reset_index(drop=True)
    # A part's epochs land just before its trials: keep the reports of the trials read.
    epochs_frame = epochs_frame[epochs_frame["trial_id"].isin(trials_frame["trial_id"])]
    epochs_frame = epochs_frame.drop_duplicates(["trial_id", "iteration"]).reset_index(drop=True)
    return trials_frame, epochs_frame


def _read_part(storage: Storage, location: str, path: str) -> pa.Table:
    try:
        data = storage.read_bytes(path)
    except OSError as exc:
        if not storage.exists(path):
            raise _PartGone(path) from None
        raise AnalysisError(f"cannot read {_join(location, path)}: {exc}") from None
    return _parquet_table(data, location, path)


def _read_parquet(storage: Storage, location: str, name: str) -> pa.Table:
    try:
        data = storage.read_bytes(name)
    except OSError as exc:
        raise AnalysisError(f"cannot read {_join(location, name)}: {exc}") from None
    return _parquet_table(data, location, name)


def _parquet_table(data: bytes, location: str, name: str) -> pa.Table:
    """A result file's bytes as a table; a newer schema version is refused."""
    try:
        table = pq.read_table(io.BytesIO(data))
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise AnalysisError(f"cannot read {_join(location, name)}: {exc}") from None
    try:
        check_schema_version(parquet_schema_version(table.schema.metadata),
                             _join(location, name))
    except SchemaVersionError as exc:
        raise AnalysisError(str(exc)) from None
    return table


def experiment_labels(experiments: Sequence[Experiment]) -> list[str]:
    """One distinct label per experiment: its name, with its location where names repeat."""
    names = [e.name for e in experiments]
    return [e.name if names.count(e.name) == 1 else f"{e.name} ({e.location})"
            for e in experiments]


def trials_frame(experiments: Sequence[Experiment]) -> pd.DataFrame:
    """Every experiment's trials in one table; the ``experiment`` column tells them apart.

    That column holds ``experiment_labels``: the name, with the location where two
    experiments share a name (``runs/random-fifo-s0`` of two comparisons), as
    ``settings_frame``'s index does, so the two join. Parameter columns that one space lacks
    are null for its rows.
    """
    return _labelled([e.trials for e in experiments], experiments)


def epochs_frame(experiments: Sequence[Experiment]) -> pd.DataFrame:
    """Every experiment's reports in one table, labelled as in ``trials_frame``."""
    return _labelled([e.epochs for e in experiments], experiments)


def _labelled(frames: list[pd.DataFrame], experiments: Sequence[Experiment]) -> pd.DataFrame:
    labels = experiment_labels(experiments)
    # Always the label: a copied folder's rows may name the copy while its record names the
    # original, and the rows must join settings_frame's index either way.
    frames = [frame.assign(experiment=label)
              for frame, label in zip(frames, labels, strict=True)]
    return pd.concat(frames, ignore_index=True, sort=False)


def settings_frame(experiments: Sequence[Experiment]) -> pd.DataFrame:
    """One row per experiment: what was run (``experiment.json``) and how it ended.

    Returns
    -------
    pandas.DataFrame
        Indexed by label (``experiment_labels``) with columns ``task``, ``status``,
        ``algorithm``, ``scheduler``, ``seed``, ``metric``, ``mode``, ``trials``, ``started``,
        ``wall_time_s``, ``best_trial_id``, ``best_score`` and every ``test*`` value of the
        held-out evaluation.
    """
    rows = []
    for exp in experiments:
        info, best = exp.info, best_trial(exp)
        row = {key: info.get(key) for key in ("task", "status", "algorithm", "scheduler", "seed")}
        row.update({
            "metric": exp.metrics.metric,
            "mode": exp.metrics.mode,
            "trials": len(exp.trials),
            "started": info.get("started"),
            "wall_time_s": info.get("wall_time_s"),
            "best_trial_id": None if best is None else best["trial_id"],
            "best_score": None if best is None else float(best[exp.score_column]),
        })
        row.update({k: v for k, v in test_result(exp).items() if k.startswith("test")})
        rows.append(row)
    return pd.DataFrame(rows, index=pd.Index(experiment_labels(experiments), name="experiment"))


# --- the selection rule -----------------------------------------------------------------------
def _records(trials: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with missing values as None, as ``pipelines.results`` expects them."""
    return trials.astype(object).where(trials.notna(), None).to_dict("records")


def ranked_trials(exp: Experiment) -> pd.DataFrame:
    """The trials whose scores can be compared, best first, by the run's own rule.

    Failed trials and trials without a finite score are left out; for tasks ranked by their
    last report (``select = "last"``, the SVMs) so are trials below the highest fidelity any
    trial reached. Ties keep the earliest trial (``pipelines.results.ranked_rows``).
    """
    order = [r["trial_id"] for r in ranked_rows(_records(exp.trials), exp.metrics)]
    return exp.trials.set_index("trial_id", drop=False).loc[order].reset_index(drop=True)


def best_trial(exp: Experiment) -> pd.Series | None:
    """The best trial's row of ``trials.parquet``, or None when no trial has a score.

    It is the trial the run itself chose and scored on the test split.
    """
    ranked = ranked_trials(exp)
    return None if ranked.empty else ranked.iloc[0]


def _comparable_scores(exp: Experiment) -> pd.Series:
    """Each trial's score where it can be ranked (``ranked_trials``), else NaN."""
    kept = set(ranked_trials(exp)["trial_id"])
    scores = pd.to_numeric(exp.trials[exp.score_column], errors="coerce").astype(float)
    return scores.where(exp.trials["trial_id"].isin(kept))


def best_so_far(exp: Experiment, by: str = "trial") -> pd.DataFrame:
    """The best score found so far, trial after trial or second after second.

    Parameters
    ----------
    exp : Experiment
    by : {"trial", "time"}
        ``trial``: in the searcher's order (``trial_index``); ``time``: in the order trials
        ended, on the wall clock from the first trial's start.

    Returns
    -------
    pandas.DataFrame
        One row per trial with ``trial_id``, ``trial_index``, ``trial`` (``trial_index + 1``)
        or ``elapsed_s`` (seconds from the first start to the trial's end), ``score`` (NaN for
        a trial that cannot be ranked) and ``best_so_far`` (NaN until the first ranked trial).
        Its last ``best_so_far`` is the best trial's score.
    """
    if by not in ("trial", "time"):
        raise ValueError(f"by must be 'trial' or 'time', got {by!r}")
    trials = exp.trials
    out = pd.DataFrame({"trial_id": trials["trial_id"], "trial_index": trials["trial_index"],
                        "score": _comparable_scores(exp)})
    if by == "trial":
        out.insert(2, "trial", trials["trial_index"] + 1)
        out = out.sort_values("trial_index", kind="stable")
    else:
        start = trials["start_time"].min()
        out.insert(2, "elapsed_s", (trials["end_time"] - start).dt.total_seconds())
        out = out.sort_values(["elapsed_s", "trial_index"], kind="stable")
    signed = out["score"] if exp.metrics.mode == "max" else -out["score"]
    best = signed.cummax().ffill()  # an unranked trial keeps the best before it
    out["best_so_far"] = best if exp.metrics.mode == "max" else -best
    return out.reset_index(drop=True)


def compute_spent(exp: Experiment) -> pd.Series:
    """What the experiment cost.

    Returns
    -------
    pandas.Series
        ``trials``, ``finished``, ``stopped_early``, ``errors`` (counts); ``trial_seconds``
        (the trials' run times added up: the compute they held; a trial continued after a
        ``--resume`` counts its attempts, not the time between them); ``epochs`` (reports
        made: epochs for fine-tuning, fidelity rungs for SVMs); ``wall_time_s`` and
        ``tune_time_s`` (the last run and its tuning part, from ``experiment.json``; NaN while
        it runs); ``runs`` (1 plus the experiment's resumes).
    """
    status = exp.trials["status"]
    return pd.Series({
        "trials": len(exp.trials),
        "finished": int((status == "finished").sum()),
        "stopped_early": int((status == "stopped_early").sum()),
        "errors": int((status == "error").sum()),
        "trial_seconds": float(exp.trials["wall_time_s"].fillna(0.0).sum()),
        "epochs": len(exp.epochs),
        "wall_time_s": number_or_nan(exp.info.get("wall_time_s")),
        "tune_time_s": number_or_nan(exp.info.get("tune_time_s")),
        "runs": 1 + int(exp.info.get("resumes") or 0),
    }, dtype=object)


def number_or_nan(value: Any) -> float:
    """``float(value)``, or nan for None and anything that is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def test_result(exp: Experiment) -> dict[str, Any]:
    """The held-out evaluation of the best trial, as ``experiment.json`` records it.

    Returns
    -------
    dict
        ``experiment.json``'s ``best`` without its config: ``trial_id``, the searched metric,
        and what the task's evaluation returned (``test_accuracy``, for fine-tuning also
        ``svm_test_accuracy``...); ``evaluation_error`` when the evaluation failed; empty
        while the run has not finished.
    """
    best = exp.info.get("best")
    best = {k: v for k, v in best.items() if k != "config"} if isinstance(best, Mapping) else {}
    if exp.info.get("evaluation_error"):
        best["evaluation_error"] = exp.info["evaluation_error"]
    return best


test_result.__test__ = False  # a function named test_* is not a pytest test


# --- hyperparameters --------------------------------------------------------------------------
def encode_params(exp: Experiment, trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """The configs on one [0, 1] scale per parameter, as the space defines it.

    Numbers map linearly from the space's ``[low, high]`` (``log10`` first for log-scaled
    parameters, as the searchers model them); categoricals map to the position of their choice,
    evenly spread over [0, 1] in the space's order. Fixed parameters are left out; inactive
    conditional parameters (and values outside the space) are NaN.

    Parameters
    ----------
    exp : Experiment
    trials : pandas.DataFrame, optional
        Rows of ``exp.trials`` to encode (default: all).

    Returns
    -------
    pandas.DataFrame
        One column per searched parameter, the rows' index kept.
    """
    trials = exp.trials if trials is None else trials
    columns = {}
    for name, spec in exp.param_specs.items():
        column = f"param_{name}"
        kind = spec.get("type")
        if kind == "fixed" or column not in trials.columns:
            continue
        values = trials[column]
        if kind in ("float", "int"):
            lo, hi = float(spec["low"]), float(spec["high"])
            x = pd.to_numeric(values, errors="coerce").astype(float)
            if spec.get("log"):
                with np.errstate(divide="ignore", invalid="ignore"):
                    x, lo, hi = np.log10(x.where(x > 0)), math.log10(lo), math.log10(hi)
            unit = (x - lo) / (hi - lo) if hi > lo else x * 0.0 + 0.5
            columns[name] = unit.where((unit >= -1e-9) & (unit <= 1 + 1e-9)).clip(0.0, 1.0)
        elif kind == "categorical":
            choices = list(spec["choices"])
            step = 1.0 / (len(choices) - 1) if len(choices) > 1 else 0.0
            position = {_key(c): (i * step if len(choices) > 1 else 0.5)
                        for i, c in enumerate(choices)}
            # A null is the choice None where the param was active (``Space.from_record``).
            chose_none = _chose_none(exp, trials, name) if None in choices else None
            columns[name] = pd.Series(
                # choice_from_text: a mixed categorical's "0.001" is its choice 0.001.
                [position.get(_key(choice_from_text(v, choices)), math.nan) if _present(v) else
                 position[None] if chose_none is not None and chose_none[i] else math.nan
                 for i, v in enumerate(values)], index=trials.index, dtype=float)
    return pd.DataFrame(columns, index=trials.index)


def _chose_none(exp: Experiment, trials: pd.DataFrame, name: str) -> list[bool]:
    """Per row, whether ``name``'s null is its choice None (active), not an inactive param."""
    from search_spaces.space import Space

    space = Space.from_dict(exp.info["space"])
    columns = [n for n in space.params if f"param_{n}" in trials.columns]
    out = []
    for record in trials[[f"param_{n}" for n in columns]].to_dict("records"):
        present = space.present_values({n: record[f"param_{n}"] for n in columns})
        out.append(name in present and present[name] is None)
    return out


def _present(value: Any) -> bool:
    """Whether a cell holds a value (not None, NaN, NaT or pd.NA)."""
    return not pd.isna(value)


def _key(value: Any) -> Any:
    """Choice lookup that survives Parquet's types: 3.0 (an int column with nulls) is 3."""
    if isinstance(value, (bool, np.bool_)):
        return ("bool", bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    return value


@dataclass(frozen=True)
class Importance:
    """Permutation importance of each hyperparameter for the score.

    Attributes
    ----------
    importances : pandas.Series
        Mean drop of the forest's R^2 when the parameter's column is shuffled, highest first;
        empty when there was too little to fit (see ``reason``).
    std : pandas.Series
        Standard deviation of that drop over the shuffles, in the same order.
    n_trials : int
        Trials the forest was fitted on.
    reason : str or None
        Why ``importances`` is empty; None when it is not.
    """

    importances: pd.Series
    std: pd.Series
    n_trials: int
    reason: str | None = None


def param_importance(exp: Experiment, *, min_trials: int = MIN_TRIALS_FOR_IMPORTANCE,
                     n_repeats: int = 10, n_trees: int = 100, seed: int = 0) -> Importance:
    """Which hyperparameters the score depends on.

    A random forest regressor is fitted on the ranked trials (``ranked_trials``: the ones the
    selection rule compares) from their encoded configs (``encode_params``; inactive
    parameters at ``INACTIVE``) to their scores, and each parameter's importance is the mean
    drop of its R^2 over ``n_repeats`` shuffles of that parameter's column
    (``sklearn.inspection.permutation_importance``), on the same trials: it says what the
    forest uses to explain the scores seen, not how well it predicts new ones.

    Parameters
    ----------
    exp : Experiment
    min_trials : int
        Below this many ranked trials the result is empty, with a reason, rather than noise.
    n_repeats : int
        Shuffles per parameter.
    n_trees : int
        Trees in the forest. Its cost is ``n_trees * n_repeats`` predictions per parameter
        (about half a second for four parameters at the defaults), paid at the end of every
        run that writes its report.
    seed : int
        Seed of the forest and the shuffles: the same experiment gives the same numbers.

    Returns
    -------
    Importance
    """
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.inspection import permutation_importance

    ranked = ranked_trials(exp)
    n = len(ranked)

    def empty(reason: str) -> Importance:
        return Importance(pd.Series(dtype=float, name="importance"),
                          pd.Series(dtype=float, name="std"), n, reason)

    if n < min_trials:
        return empty(f"{n} trial{'s' if n != 1 else ''} with a comparable score; importance "
                     f"needs at least {min_trials}")
    X = encode_params(exp, ranked)
    if X.shape[1] == 0:
        return empty("the space has no searched parameters")
    y = ranked[exp.score_column].astype(float).to_numpy()
    if np.ptp(y) == 0:
        return empty(f"every ranked trial scored the same ({y[0]:.6g}): nothing to explain")
    X = X.fillna(INACTIVE)
    forest = RandomForestRegressor(n_estimators=n_trees, random_state=seed, n_jobs=1)
    forest.fit(X.to_numpy(), y)
    result = permutation_importance(forest, X.to_numpy(), y, n_repeats=n_repeats,
                                    random_state=seed, n_jobs=1)
    importances = pd.Series(result.importances_mean, index=X.columns, name="importance")
    # Highest first; equal values keep the space's order, so the output is deterministic.
    order = importances.sort_values(ascending=False, kind="stable").index
    std = pd.Series(result.importances_std, index=X.columns, name="std")
    return Importance(importances.loc[order], std.loc[order], n)


# --- learning curves --------------------------------------------------------------------------
def _step_column(exp: Experiment) -> str:
    """The column that counts a trial's progress: the task's step (epoch, fidelity) if the
    reports carry it, else the report number."""
    step = exp.metrics.step
    if step in exp.epochs.columns and exp.epochs[step].notna().any():
        return step
    return "iteration"


def learning_curves(exp: Experiment) -> pd.DataFrame:
    """Every trial's searched metric at each report.

    Returns
    -------
    pandas.DataFrame
        ``trial_id``, ``trial_index``, ``iteration`` (1-based report), ``step`` (the task's
        step at that report: epoch, or the fraction of rows for an SVM under ASHA) and
        ``value`` (the searched metric), sorted by trial and report; ``attrs["step"]`` names
        the step column and ``attrs["metric"]`` the metric.
    """
    step, metric = _step_column(exp), exp.metrics.metric
    epochs = exp.epochs
    values = epochs[metric] if metric in epochs.columns else pd.Series(math.nan, index=epochs.index)
    out = pd.DataFrame({"trial_id": epochs["trial_id"], "trial_index": epochs["trial_index"],
                        "iteration": epochs["iteration"],
                        "step": pd.to_numeric(epochs[step], errors="coerce").astype(float),
                        "value": pd.to_numeric(values, errors="coerce").astype(float)})
    out.attrs.update(step=step, metric=metric)
    return out


def stop_points(exp: Experiment) -> pd.DataFrame:
    """Where each trial's curve ends, and why.

    Returns
    -------
    pandas.DataFrame
        One row per trial that reported at least once: ``trial_id``, ``trial_index``,
        ``status``, ``stopped_by`` (``scheduler`` for an ASHA cut, ``patience`` for early
        stopping, else None) and the last report's ``iteration``, ``step`` and ``value``.
    """
    curves = learning_curves(exp)
    last = curves.groupby("trial_id", sort=False).tail(1).set_index("trial_id")
    trials = exp.trials.set_index("trial_id")
    trials = trials.loc[[t for t in trials.index if t in last.index]]
    stopped_by = trials.get("stopped_by", pd.Series(None, index=trials.index, dtype=object))
    out = pd.DataFrame({
        "trial_id": trials.index,
        "trial_index": trials["trial_index"].to_numpy(),
        "status": trials["status"].to_numpy(),
        # object, not pandas' string dtype: "not stopped" stays None, as documented
        "stopped_by": pd.Series([str(v) if _present(v) else None for v in stopped_by],
                                index=trials.index, dtype=object),
        "iteration": last.loc[trials.index, "iteration"].to_numpy(),
        "step": last.loc[trials.index, "step"].to_numpy(),
        "value": last.loc[trials.index, "value"].to_numpy(),
    })
    return out.reset_index(drop=True)

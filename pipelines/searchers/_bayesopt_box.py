"""The pure part of Bayesian optimization: the init budget and reading a warm start.

No Ray and no bayes_opt import here, so the pipeline can read a ``--warm-start`` file before
Ray starts (the space's unit box is ``search_spaces.transform``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.journal import finite_number as _finite
from search_spaces.space import Space, SpaceError, is_missing

MAX_DEFAULT_N_INIT = 20


def default_n_init(n_dims: int) -> int:
    """Random points before the model takes over: ``max(5, 2 * n_dims)``, at most 20."""
    return min(max(5, 2 * n_dims), MAX_DEFAULT_N_INIT)

def warm_start_from_parquet(path: str, space: Space, metric: str,
                            select: str = "last", legacy: bool = False) -> list[dict[str, Any]]:
    """Read an earlier experiment's ``trials.parquet`` into warm-start rows.

    The rows are the scores the live searcher would have learned from those trials: no failed
    trial, no trial a scheduler cut, and, where the task ranks a trial by its best report
    (``select="best"``, fine-tuning), that best report.

    Parameters
    ----------
    path : str
        A Parquet file with one row per trial, config columns named ``param_<name>`` (null where
        the param was inactive) and a column named ``metric``.
    space : Space
        Only this space's params are read; other ``param_`` columns are ignored.
    metric : str
        The score column.
    select : {"last", "best"}
        With "best", the score is ``best_<metric>`` where the file has that column.
    legacy : bool
        The rows as versions before 2026-12-07 read them (every ``stopped_early`` row left out,
        errors kept, the last report's score): resuming an experiment they started, whose
        experiment.json does not keep its rows, rebuilds the searcher it ran with.

    Returns
    -------
    list of dict
        ``{"config": {...}, "score": float}`` for each row with a finite score whose ``status``
        (when the file has one) is not ``error``, and not ``stopped_early`` by a scheduler (a
        ``stopped_by`` of ``patience`` is kept: the trial stopped itself and its score is
        final; without a ``stopped_by`` column every early stop is left out). Configs are not
        checked against the space here; ``BayesOptSearcher`` skips the invalid ones.

    Raises
    ------
    SpaceError
        If the file has none of the space's params or no ``metric`` column.
    SchemaVersionError
        A ValueError: the file was written with a newer results schema version.
    """
    import pandas as pd

    from pipelines.results import check_parquet_file

    check_parquet_file(path)
    frame = pd.read_parquet(path)
    columns = {name: f"param_{name}" for name in space.params if f"param_{name}" in frame.columns}
    if not columns:
        expected = ", ".join(f"param_{n}" for n in space.params)
        raise SpaceError(f"warm start file '{path}' has none of the space's params "
                         f"(expected columns {expected})")
    if metric not in frame.columns:
        raise SpaceError(f"warm start file '{path}' has no metric column '{metric}'")
    score_column = f"best_{metric}" if select == "best" and f"best_{metric}" in frame.columns \
        and not legacy else metric
    if legacy and "status" in frame.columns:
        frame = frame[frame["status"] != "stopped_early"]
    elif "status" in frame.columns:
        status = frame["status"].astype("string").fillna("").to_numpy(dtype=object)
        by = frame["stopped_by"].astype("string").fillna("").to_numpy(dtype=object) \
            if "stopped_by" in frame.columns else np.full(len(frame), "", dtype=object)
        # A failed trial's last score (a network that diverged at epoch 3, say) is not what its
        # config is worth; the live searcher never learns from errors either. A trial ASHA cut
        # was scored on a fraction of its budget: that score would teach the model that a
        # config is worse than it is. A patience stop is the trial's own end, and final.
        cut = (status == "stopped_early") & (by != "patience")
        frame = frame[(status != "error") & ~cut]
    rows = []
    for record in frame.to_dict("records"):
        score = _finite(record[score_column])
        if score is None:
            continue
        values = {name: _plain(record[col]) for name, col in columns.items()}
        # A null is also a categorical's choice None (versions before 2026-12-07 lost it).
        config = {k: v for k, v in values.items() if not is_missing(v)} if legacy else \
            space.present_values(values)
        rows.append({"config": config, "score": score})
    return rows

def _plain(value: Any) -> Any:
    """numpy scalars to Python ones, so configs pickle and print cleanly."""
    return value.item() if isinstance(value, np.generic) else value

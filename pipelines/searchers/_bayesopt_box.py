"""The pure part of Bayesian optimization: how a Space maps onto bayes_opt's typed box.

No Ray and no bayes_opt import here, so the pipeline can check a space for ``--algo bayesopt``
and read a ``--warm-start`` file before Ray starts (and while it starts, import the rest).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from search_spaces.space import Categorical, Fixed, Float, Int, Space, SpaceError

MAX_DEFAULT_N_INIT = 20


def default_n_init(n_dims: int) -> int:
    """Random points before the model takes over: ``max(5, 2 * n_dims)``, at most 20."""
    return min(max(5, 2 * n_dims), MAX_DEFAULT_N_INIT)

class BayesOptBox:
    """The translation of a Space into bayes_opt's typed bounds, and back.

    Parameters
    ----------
    space : Space
        A validated space.

    Raises
    ------
    SpaceError
        If no parameter is left to model.
    """

    def __init__(self, space: Space):
        self.space = space
        self.pbounds: dict[str, Any] = {}
        self.constants: dict[str, Any] = {}
        for name in space.searchable():
            param = space.params[name]
            if isinstance(param, Categorical):
                if len(param.choices) == 1:
                    self.constants[name] = param.choices[0]
                else:
                    self.pbounds[name] = list(range(len(param.choices)))
            elif isinstance(param, Int) and param.log:
                lo, hi = param.low - 0.4999, param.high + 0.4999
                self.pbounds[name] = (math.log10(max(lo, 1e-12)), math.log10(hi))
            elif isinstance(param, Int):
                self.pbounds[name] = (int(param.low), int(param.high), int)
            elif isinstance(param, Float) and param.log:
                self.pbounds[name] = (math.log10(param.low), math.log10(param.high))
            elif isinstance(param, Float):
                self.pbounds[name] = (float(param.low), float(param.high))
        if not self.pbounds:
            fixed = [n for n, p in space.params.items() if isinstance(p, Fixed)]
            raise SpaceError(
                f"space '{space.name}' has nothing to optimize for bayesopt: every parameter is "
                f"fixed or has one choice ({', '.join(fixed + list(self.constants)) or 'none'})"
            )

    @property
    def n_dims(self) -> int:
        return len(self.pbounds)

    def decode(self, x: Mapping[str, Any]) -> dict[str, Any]:
        """Map a bayes_opt point to a finalized config of the space."""
        raw: dict[str, Any] = dict(self.constants)
        for name, value in x.items():
            param = self.space.params[name]
            if isinstance(param, Categorical):
                raw[name] = param.choices[int(value)]
            elif isinstance(param, Int):
                v = 10.0 ** float(value) if param.log else float(value)
                raw[name] = int(min(max(round(v), param.low), param.high))
            else:
                v = 10.0 ** float(value) if param.log else float(value)  # type: ignore[union-attr]
                raw[name] = float(min(max(v, param.low), param.high))  # type: ignore[union-attr]
        return self.space.finalize(raw)

    def encode(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Map a config to a bayes_opt point; inactive params sit at the middle of their range.

        Any point that decodes to the same config would do for an inactive param; the middle is
        the convention ``Space.to_unit`` uses too.
        """
        x: dict[str, Any] = {}
        for name, bounds in self.pbounds.items():
            param = self.space.params[name]
            if isinstance(param, Categorical):
                x[name] = _choice_index(param, config[name]) if name in config else 0
                continue
            lo, hi = float(bounds[0]), float(bounds[1])
            if name not in config:
                v = (lo + hi) / 2.0
            else:
                v = math.log10(config[name]) if param.log else float(config[name])  # type: ignore[union-attr]
            v = min(max(v, lo), hi)
            x[name] = int(round(v)) if len(bounds) == 3 else v
        return x

def warm_start_from_parquet(path: str, space: Space, metric: str) -> list[dict[str, Any]]:
    """Read an earlier experiment's ``trials.parquet`` into warm-start rows.

    Parameters
    ----------
    path : str
        A Parquet file with one row per trial, config columns named ``param_<name>`` (null where
        the param was inactive) and a column named ``metric``.
    space : Space
        Only this space's params are read; other ``param_`` columns are ignored.
    metric : str
        The score column.

    Returns
    -------
    list of dict
        ``{"config": {...}, "score": float}`` for each row with a finite score that was not
        stopped early by a scheduler (``status`` column, when present). Configs are not
        checked against the space here; ``BayesOptSearcher`` skips the invalid ones.

    Raises
    ------
    SpaceError
        If the file has none of the space's params or no ``metric`` column.
    """
    import pandas as pd

    frame = pd.read_parquet(path)
    columns = {name: f"param_{name}" for name in space.params if f"param_{name}" in frame.columns}
    if not columns:
        expected = ", ".join(f"param_{n}" for n in space.params)
        raise SpaceError(f"warm start file '{path}' has none of the space's params "
                         f"(expected columns {expected})")
    if metric not in frame.columns:
        raise SpaceError(f"warm start file '{path}' has no metric column '{metric}'")
    if "status" in frame.columns:
        # A trial ASHA cut was scored on a fraction of its budget; that score would teach the
        # model that a config is worse than it is.
        frame = frame[frame["status"] != "stopped_early"]
    rows = []
    for record in frame.to_dict("records"):
        score = _finite(record[metric])
        if score is None:
            continue
        config = {name: _plain(record[col]) for name, col in columns.items()
                  if not _is_missing(record[col])}
        rows.append({"config": config, "score": score})
    return rows

def _finite(value: Any) -> float | None:
    """``value`` as a float if it is a finite real number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _is_missing(value: Any) -> bool:
    try:
        return value is None or bool(value != value)  # NaN and pandas' NA
    except TypeError:  # pd.NA refuses bool()
        return True


def _choice_index(param: Categorical, value: Any) -> int:
    # ``list.index`` would map True onto a choice 1 listed before it (True == 1).
    for i, choice in enumerate(param.choices):
        if type(choice) is type(value) and choice == value:
            return i
    return param.index(value)

def _plain(value: Any) -> Any:
    """numpy scalars to Python ones, so configs pickle and print cleanly."""
    return value.item() if isinstance(value, np.generic) else value

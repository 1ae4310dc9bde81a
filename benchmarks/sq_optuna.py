"""One adapter from a project ``Space`` to Optuna, so both sides search exactly the same space.

``distributions(space)`` turns every searchable parameter into an Optuna distribution
(``Float`` -> ``FloatDistribution(log=...)``, ``Int`` -> ``IntDistribution(log=...)``,
``Categorical`` -> ``CategoricalDistribution``). ``ask_config(trial, space)`` builds one config
define-by-run: parameters in the space's order (parents first), a child only when
``Space.is_active`` says its parent's value activates it, fixed values passed through, the
result finalized by the space as a project searcher's config is.

Optuna is a benchmark extra (``pip install -e .[bench]``); this module is imported only by
``search_quality.py`` when an Optuna method is asked for.
"""

from __future__ import annotations

from typing import Any

from search_spaces.space import Categorical, Fixed, Float, Int, Space


def distributions(space: Space) -> dict[str, Any]:
    """Optuna distributions of ``space``'s searchable parameters, in the space's order."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    for name in space.searchable():
        param = space.params[name]
        if isinstance(param, Categorical):
            out[name] = CategoricalDistribution(list(param.choices))
        elif isinstance(param, Int):
            if param.log and param.low < 1:
                raise ValueError(f"parameter '{name}': Optuna's log IntDistribution needs low >= 1")
            out[name] = IntDistribution(int(param.low), int(param.high), log=param.log)
        elif isinstance(param, Float):
            out[name] = FloatDistribution(float(param.low), float(param.high), log=param.log)
        else:  # pragma: no cover - the space's own types are all handled above
            raise TypeError(f"parameter '{name}': no Optuna distribution for {param!r}")
    return out


def ask_config(trial: Any, space: Space, dists: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sample one config of ``space`` from an Optuna ``trial`` (conditions honoured)."""
    dists = distributions(space) if dists is None else dists
    config: dict[str, Any] = {}
    for name in space.order:
        if not space.is_active(name, config):
            continue
        param = space.params[name]
        if isinstance(param, Fixed):
            config[name] = param.value
            continue
        dist = dists[name]
        if isinstance(param, Categorical):
            config[name] = trial.suggest_categorical(name, dist.choices)
        elif isinstance(param, Int):
            config[name] = trial.suggest_int(name, dist.low, dist.high, log=dist.log)
        else:
            config[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    return space.finalize(config)


def make_sampler(method: str, seed: int, in_flight: int) -> Any:
    """``tpe``: TPESampler (constant liar when trials run in parallel); ``gp``: GPSampler."""
    import optuna

    if method == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=in_flight > 1)
    if method == "gp":
        # Conditional children fall outside GPSampler's intersection search space and are drawn
        # by its independent (random) sampler; the warning says so once per trial.
        return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)
    raise ValueError(f"unknown Optuna method {method!r}")


def new_study(method: str, seed: int, in_flight: int) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="minimize",
                               sampler=make_sampler(method, seed, in_flight))

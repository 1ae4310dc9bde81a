"""Turn a trainable's plain generator of metrics into a Ray Tune function trainable."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ray import tune


def report_each(trial_fn: Callable[..., Iterator[dict[str, Any]]]) -> Callable[..., None]:
    """Wrap ``trial_fn(config, **params)`` so every metrics dict it yields is reported to Tune.

    The Ray node's id goes with each report, so trials.parquet can say where a trial ran
    (Tune adds hostname and IP, which several nodes on one host share).
    """

    def trainable(config: dict[str, Any], **params: Any) -> None:
        where = node_info()
        for metrics in trial_fn(config, **params):
            tune.report({**metrics, **where})

    trainable.__name__ = getattr(trial_fn, "__name__", "trainable")
    trainable.__qualname__ = trainable.__name__
    return trainable


def node_info() -> dict[str, str]:
    """The Ray node this process runs on, for the trials.parquet ``node_id`` column."""
    import ray

    return {"node_id": ray.get_runtime_context().get_node_id()}

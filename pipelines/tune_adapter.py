"""Turn a trainable's plain generator of metrics into a Ray Tune function trainable.

(A ``tune.Trainable`` class whose ``step()`` marks the last step done was tried for the
sub-second SVM trials: with actor reuse it ran the classic grid 5x slower than this.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from ray import tune

from pipelines.packs import PACK_KEY, is_pack, run_members


def node_info() -> dict[str, str]:
    """The Ray node this process runs on, for the trials.parquet ``node_id`` column.

    Tune adds hostname and IP to each result, which several nodes on one host share.
    """
    import ray

    return {"node_id": ray.get_runtime_context().get_node_id()}


def report_each(trial_fn: Callable[..., Iterator[dict[str, Any]]]) -> Callable[..., None]:
    """A function trainable: every metrics dict ``trial_fn(config, **params)`` yields is reported.

    A config that is a pack (``pipelines.packs``) runs its member configs one after another, each
    report tagged with the member's position.
    """

    def trainable(config: dict[str, Any], **params: Any) -> None:
        where = node_info()
        if is_pack(config):
            _continue_once_taken()
            run_members(config[PACK_KEY], lambda member: _finite(trial_fn(member, **params)),
                        lambda metrics: tune.report({**metrics, **where}))
            return
        for metrics in _finite(trial_fn(config, **params)):
            tune.report({**metrics, **where})

    trainable.__name__ = getattr(trial_fn, "__name__", "trainable")
    trainable.__qualname__ = trainable.__name__
    return trainable


def _continue_once_taken() -> None:
    """Let this trial's function go on as soon as Tune has taken each result.

    Ray Tune's function trainable holds the function at every report until the driver has
    handled the result and asked for the next one (Ray's ``synchronous_result_reporting``, on
    for function trainables): a round trip of about 6 ms on a 2-core machine, more with object
    storage, which a pack paid between every two configs. A pack's configs need no decision from
    the driver between them (packs run only under FIFO, with no stopper), so it lets the next
    config start once the result is on its way, as Ray Train's workers do. The config that
    starts then is the one running if the process dies, so a dead pack's error row still goes
    to the config that was running (``pipelines.callbacks``), with one window left: between
    Ray taking the result and the reply leaving the process (about a millisecond, a few while
    the new config holds the GIL), a death loses that result, and the finished config gets the
    error row while the one just started runs again. With Tune's default the window was the
    other way round (a death while the driver handled a result blamed the next config, which
    had not started). Were a stopper ever added for packs, a stop would land one config later,
    and with actor reuse a config longer than Tune's 2 s wait in ``reset_config`` would fail
    the next trial (Tune's ``_AbortTrialExecution``: its first config an error row).

    Only ever switched off, at the start of the function: Ray reads the flag once per result,
    before and after taking it, and either order is consistent when it goes from on to off.
    A Ray internal; tests/test_packs.py fails if it stops taking effect.
    """
    try:
        from ray.train._internal.session import get_session
    except ImportError:
        return
    session = get_session()
    if session is not None and hasattr(session, "synchronous_result_reporting"):
        session.synchronous_result_reporting = False


def _finite(reports: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for metrics in reports:
        for name, value in metrics.items():
            if isinstance(value, float) and not math.isfinite(value):
                # An error row with its reason; searchers never learn a NaN as a score.
                raise FloatingPointError(f"trial reported {name} = {value}")
        yield metrics

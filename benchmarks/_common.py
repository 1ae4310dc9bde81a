"""Helpers shared by the benchmark scripts: drive a Searcher in-process, print a table.

Benchmarks run the searchers without Ray Tune: suggest, evaluate, report, one trial at a time,
which is what a Tune run with ``max_concurrent_trials=1`` does, minus the cluster overhead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

# Run as ``python benchmarks/x.py`` from the repository root: make the project importable.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


def run_sequential(searcher: Any, objective: Callable[[dict[str, Any]], float], n_trials: int,
                   metric: str) -> list[tuple[dict[str, Any], float]]:
    """Suggest, evaluate and report ``n_trials`` configs one after another.

    Parameters
    ----------
    searcher : ray.tune.search.Searcher
        Already given its metric and mode.
    objective : callable
        Config -> score.
    n_trials : int
        How many trials.
    metric : str
        The key the score is reported under.

    Returns
    -------
    list of (config, score)
        In the order they ran.
    """
    history = []
    for i in range(n_trials):
        trial_id = f"t{i}"
        config = searcher.suggest(trial_id)
        score = objective(config)
        searcher.on_trial_complete(trial_id, {metric: score})
        history.append((config, score))
    return history


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print ``rows`` under ``headers`` in aligned columns (floats with 4 decimals)."""
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for row in cells:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))

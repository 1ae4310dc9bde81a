"""Log-space vs linear-scale Bayesian optimization of a learning rate.

The synthetic objective peaks at lr = 1e-4 inside [1e-6, 1] (and at dropout = 0.2):

    score = -(log10(lr) + 4)**2 - 10 * (dropout - 0.2)**2

The same searcher (``BayesOptSearcher``) runs on ``LogFloat(1e-6, 1)`` and on
``Float(1e-6, 1)``. A seed succeeds when its best lr is within a factor of 2 of 1e-4. On a
linear scale 1e-4 sits in the first 0.01 % of the range, so neither the random init nor the GP
ever gets near it; in log space it sits at one third of the range.

Usage::

    python benchmarks/bo_log_vs_linear.py [--seeds 10] [--trials 25]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

from _common import print_table, run_sequential

from pipelines.searchers._bayesopt import BayesOptSearcher
from search_spaces.space import Float, LogFloat, Space

OPTIMUM_LR = 1e-4
TOLERANCE = 2.0  # success: best lr within this factor of the optimum


def objective(config: dict) -> float:
    return -(math.log10(config["lr"]) + 4) ** 2 - 10 * (config["dropout"] - 0.2) ** 2


def best_lr(searcher: BayesOptSearcher, trials: int) -> float:
    history = run_sequential(searcher, objective, trials, metric="score")
    return max(history, key=lambda h: h[1])[0]["lr"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="number of seeds (0..N-1)")
    parser.add_argument("--trials", type=int, default=25, help="trials per search")
    args = parser.parse_args(argv)

    spaces = {
        "log": Space(name="lr_log", lr=LogFloat(1e-6, 1.0), dropout=Float(0.0, 0.5)),
        "linear": Space(name="lr_linear", lr=Float(1e-6, 1.0), dropout=Float(0.0, 0.5)),
    }
    start = time.perf_counter()
    rows, hits = [], {"log": 0, "linear": 0}
    for seed in range(args.seeds):
        row: list = [seed]
        for kind, space in spaces.items():
            searcher = BayesOptSearcher(space, metric="score", mode="max", seed=seed)
            lr = best_lr(searcher, args.trials)
            ok = abs(math.log10(lr / OPTIMUM_LR)) <= math.log10(TOLERANCE)
            hits[kind] += ok
            row += [f"{lr:.3g}", "yes" if ok else "no"]
        rows.append(row)

    print(f"best lr after {args.trials} trials (optimum {OPTIMUM_LR:g}; success = within a "
          f"factor of {TOLERANCE:g})")
    print_table(["seed", "log-space lr", "ok", "linear lr", "ok"], rows)
    print()
    n = args.seeds
    print(f"log-space BO:    {hits['log']}/{n} seeds within x{TOLERANCE:g} of {OPTIMUM_LR:g}")
    print(f"linear-scale BO: {hits['linear']}/{n} seeds within x{TOLERANCE:g} of {OPTIMUM_LR:g}")
    ratio = hits["log"] / hits["linear"] if hits["linear"] else math.inf
    print(f"ratio log/linear successes: {ratio:.1f}")
    median_log = statistics.median(abs(math.log10(float(r[1]) / OPTIMUM_LR)) for r in rows)
    median_lin = statistics.median(abs(math.log10(float(r[3]) / OPTIMUM_LR)) for r in rows)
    print(f"median distance of best lr from optimum (decades): log {median_log:.3f}, "
          f"linear {median_lin:.3f}")
    print(f"wall time {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()

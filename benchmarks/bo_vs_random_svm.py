"""Bayesian optimization vs random search on the SVM space, scikit-learn digits.

Each search runs ``--trials`` configs of ``search_spaces.svm`` per seed. A config scores the mean
3-fold StratifiedKFold CV accuracy of ``Pipeline(StandardScaler, SVC(**config))`` on the train
part of a stratified 80/20 split (random_state=0), as the SVM pipeline does. Random search is
``SPACE.sample(trials, seed)``; Bayesian optimization is ``BayesOptSearcher(seed=seed)``, whose
random init draws the same first configs, so the two differ only after the init phase.

Usage::

    python benchmarks/bo_vs_random_svm.py [--seeds 5] [--trials 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import cache

from _common import print_table, run_sequential

from pipelines.searchers._bayesopt import BayesOptSearcher
from search_spaces.svm import SPACE


@cache
def _data():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, _, y_train, _ = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    return X_train, y_train


@cache
def _cv_accuracy(items: tuple) -> float:
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    X, y = _data()
    model = Pipeline([("scale", StandardScaler()), ("svc", SVC(**dict(items)))])
    # Rounded so that configs with the same fold accuracies tie exactly, whatever the order
    # of the floating-point sum.
    return round(float(cross_val_score(model, X, y, cv=StratifiedKFold(n_splits=3)).mean()), 10)


def cv_accuracy(config: dict) -> float:
    """Mean 3-fold CV accuracy; repeated configs are computed once."""
    return _cv_accuracy(tuple(sorted(config.items())))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0..N-1)")
    parser.add_argument("--trials", type=int, default=30, help="trials per search")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    rows, best_random, best_bo = [], [], []
    for seed in range(args.seeds):
        random_best = max(cv_accuracy(c) for c in SPACE.sample(args.trials, seed=seed))
        searcher = BayesOptSearcher(SPACE, metric="accuracy", mode="max", seed=seed)
        history = run_sequential(searcher, cv_accuracy, args.trials, metric="accuracy")
        bo_best_config, bo_best = max(history, key=lambda h: h[1])
        best_random.append(random_best)
        best_bo.append(bo_best)
        kernel = bo_best_config["kernel"]
        rows.append([seed, random_best, bo_best, f"{bo_best - random_best:+.5f}", kernel])

    print(f"best 3-fold CV accuracy after {args.trials} trials, SVM on digits "
          f"(bayesopt n_init={searcher.n_init})")
    print_table(["seed", "random", "bayesopt", "bo-random", "bo kernel"], rows)
    med_random, med_bo = statistics.median(best_random), statistics.median(best_bo)
    wins = sum(b > r for b, r in zip(best_bo, best_random, strict=True))
    ties = sum(b == r for b, r in zip(best_bo, best_random, strict=True))
    print()
    print(f"median best accuracy: random {med_random:.4f}, bayesopt {med_bo:.4f}")
    print(f"ratio bayesopt/random median: {med_bo / med_random:.4f}")
    print(f"median error rate: random {1 - med_random:.4f}, bayesopt {1 - med_bo:.4f} "
          f"(ratio {(1 - med_bo) / (1 - med_random):.2f})")
    print(f"bayesopt better on {wins}/{args.seeds} seeds, tied on {ties}")
    print(f"target (bayesopt median >= random median): {'met' if med_bo >= med_random else 'MISSED'}")
    print(f"wall time {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()

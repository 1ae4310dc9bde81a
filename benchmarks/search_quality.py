"""Search quality: the project's searchers against Optuna's samplers, in the same run.

Methods: ``random`` and ``bayesopt`` are the project's own searchers, built by
``pipelines.searchers.make_searcher`` and driven through Ray Tune's Searcher contract
(``suggest`` / ``on_trial_complete``) in a plain loop, without Ray; ``tpe`` and ``gp`` are
Optuna's ``TPESampler`` and ``GPSampler`` through ask/tell, on distributions built from the same
``Space`` (``sq_optuna.py``), conditions included. With ``--parallel 4`` four trials are in
flight: four suggestions are asked for, the oldest completes, the next is asked for, and so on,
so each method sees three pending trials at every suggestion (the project's bayesopt registers
them at its model's prediction, the kriging believer; TPE runs with ``constant_liar=True``;
Optuna 5's GPSampler sees the running trials too, through its batch acquisition, qLogEI).
Each method starts with its own default number of random trials: bayesopt ``max(5, 2 x
parameters)`` suggested (5 on the 2-parameter SVM tasks, 12 on hpo6), Optuna's samplers 10
finished (13 asked with 4 in flight). TPE runs with Optuna 5's defaults (multivariate, not
``group=True``, which its docs suggest for conditional spaces such as ``cond``).

Problems (``sq_problems.py``): synthetic functions behind typed HPO-like spaces with a known
minimum (branin, hartmann3, hartmann6, hpo6, cond) and scikit-learn tasks in Bayesmark's style
(svm, mlp, rf on digits, wine, breast_cancer; 3-fold CV log-loss).

Regret after B trials is the best value found in the first B minus the optimum, normalized:

- synthetic: by (median value of 1,000 random draws of the space - the known optimum);
- real: the optimum is the best value any method found on the task in this run, and the scale is
  (median over seeds of random search's first-trial value - that best).

0 is the optimum; 1 is as good as a typical single random draw. Each run goes to the largest
budget once; the result at a smaller budget B is its first B trials. That is exactly a run with
budget B, since no method here changes what it suggests with the budget and trials complete
oldest first.

Output: per problem, mode and budget the median normalized regret over seeds of each method with
its rank among the methods (1 = lowest median, ties share); overall, per group of problems, the
median over problems of those ranks and regrets; seed by seed, how often bayesopt's regret is
below, equal to and above each other method's over the (problem, seed) pairs of a group, with a
sign test; one JSON line per (problem, budget, parallel, method) and per such pair of methods;
the time of one bayesopt suggestion with 100 observations on the 6-dim mixed space; and the
targets, met or MISSED.

Usage (from the repository root; Optuna and matplotlib come with ``pip install -e .[bench]``)::

    python benchmarks/search_quality.py --quick                 # a ~2-minute smoke run
    python benchmarks/search_quality.py --jobs 2 --plot regret.png   # budgets 20/40/80, 10 seeds
    python benchmarks/search_quality.py --problems synthetic --methods bayesopt,gp --parallel 1
    python benchmarks/search_quality.py --scaling 100,300,600,1000 --methods bayesopt,gp
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

# One BLAS/OpenMP thread per process, set before numpy loads: on a busy machine two threads per
# tiny matrix product made some MLP configs 6x slower, and GPSampler's torch would time the
# contention rather than the sampler. Use --jobs for parallelism.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from _common import print_table  # noqa: E402
from sq_problems import Problem, all_problems, synthetic_problems  # noqa: E402

METHODS = {"random": "project random (Space.sample)",
           "bayesopt": "project bayesopt (BayesOptSearcher: ARD GP, log-EI, kriging believer)",
           "bo-cl": "project bayesopt with a constant liar (worst score) for trials in flight",
           "bo-no-near": "project bayesopt without the candidates near the incumbent",
           "tpe": "Optuna TPESampler (constant_liar when parallel)",
           "gp": "Optuna GPSampler"}
PROJECT_METHODS = ("random", "bayesopt", "bo-cl", "bo-no-near")
# The project's BO with one part left out, to measure what the part is worth.
ABLATIONS = ("bo-cl", "bo-no-near")
GROUPS = ("synthetic", "real")
# Covers a log int and a categorical (hpo6), a conditional space (cond), a real task with a fixed
# parameter (svm-wine), an int-heavy real task (rf-wine), both modes, every method.
QUICK = {"budgets": [10, 20], "seeds": 3,
         "problems": ["hpo6", "cond", "svm-wine", "rf-wine"],
         "parallel": [1, 4], "timing_repeats": 1}
SYNTHETIC_REFERENCE_DRAWS = 1000
SUGGEST_TIME_TARGET_S = 0.3


# Two regrets closer than this (a thousandth of the way from the optimum to a typical random
# draw) are a tie in the seed-by-seed counts: near the optimum of branin or hartmann3 every
# method ends at 1e-6 to 1e-3, and which is lower there says how far the last step was
# polished, not how well the space was searched.
TIE_REGRET = 1e-3


# --- one search ----------------------------------------------------------------------------------


def drive(ask: Callable[[int], Any], tell: Callable[[Any, float], None],
          evaluate: Callable[[dict], float], budget: int, in_flight: int
          ) -> tuple[list[float], float]:
    """Run ``budget`` trials with ``in_flight`` outstanding; complete them oldest first.

    ``ask(i)`` returns ``(handle, config)`` or None when the method has nothing more to suggest.
    Returns the values in completion order and the seconds spent inside ``ask`` and ``tell``.
    """
    pending: deque = deque()
    values: list[float] = []
    asked, searcher_s = 0, 0.0
    while len(values) < budget:
        while len(pending) < in_flight and asked < budget:
            start = time.perf_counter()
            item = ask(asked)
            searcher_s += time.perf_counter() - start
            if item is None:
                asked = budget
                break
            pending.append(item)
            asked += 1
        if not pending:
            break
        handle, config = pending.popleft()
        value = evaluate(config)
        start = time.perf_counter()
        tell(handle, value)
        searcher_s += time.perf_counter() - start
        values.append(value)
    return values, searcher_s


def run_method(method: str, problem: Problem, seed: int, budget: int, in_flight: int
               ) -> tuple[list[float], float]:
    def evaluate(config: dict) -> float:
        return problem(problem.space.check_config(config))  # a config outside the space fails

    if method in PROJECT_METHODS:
        from pipelines.searchers import make_searcher

        searcher, _ = make_searcher("bayesopt" if method in ABLATIONS else method, problem.space,
                                    metric="score", mode="min", seed=seed, num_samples=budget)
        if method == "bo-cl":
            searcher._liar = "worst"
        if method == "bo-no-near":
            searcher._new_acquisition = _without_near(searcher._new_acquisition)

        def ask(i: int):
            config = searcher.suggest(f"t{i}")
            if config is None or isinstance(config, str):  # Searcher.FINISHED
                return None
            return f"t{i}", config

        def tell(trial_id: str, value: float) -> None:
            searcher.on_trial_complete(trial_id, {"score": value})
    else:
        from sq_optuna import ask_config, distributions, new_study

        study = new_study(method, seed, in_flight)
        dists = distributions(problem.space)

        def ask(i: int):
            trial = study.ask()
            return trial, ask_config(trial, problem.space, dists)

        def tell(trial: Any, value: float) -> None:
            study.tell(trial, value)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's experimental-feature notes, bayes_opt's
        return drive(ask, tell, evaluate, budget, in_flight)


def _without_near(new_acquisition: Callable[[], Any]) -> Callable[[], Any]:
    """The searcher's acquisition factory, its search given no candidates near the incumbent."""
    def factory():
        acq = new_acquisition()
        acq.N_NEAR = 0
        return acq
    return factory


def run_unit(unit: tuple[str, int, list[str], list[int], int]) -> dict[str, Any]:
    """All methods and modes of one (problem, seed): they share the problem's evaluation cache
    (bayesopt's random init draws random search's first configs)."""
    name, seed, methods, modes, budget = unit
    problem = _PROBLEMS[name]
    out: dict[str, Any] = {"problem": name, "seed": seed, "runs": {}}
    for in_flight in modes:
        for method in methods:
            start = time.perf_counter()
            values, searcher_s = run_method(method, problem, seed, budget, in_flight)
            wall_s = time.perf_counter() - start
            out["runs"][(method, in_flight)] = {"values": values, "searcher_s": searcher_s,
                                                "eval_s": wall_s - searcher_s}
    out["first_random"] = problem(problem.space.sample(1, seed=seed)[0])
    return out


_PROBLEMS: dict[str, Problem] = {}  # per process, so evaluation caches live across units


def _worker_init() -> None:
    _PROBLEMS.update(all_problems())


# --- scoring -------------------------------------------------------------------------------------

def normalizers(problem: Problem, units: list[dict]) -> tuple[float, float, str]:
    """(optimum, scale, how) for the problem's normalized regret."""
    if problem.kind == "synthetic":
        draws = problem.space.sample(SYNTHETIC_REFERENCE_DRAWS, seed=2**20)
        ref = statistics.median(problem.fn(c) for c in draws)
        how = (f"(best - known optimum) / (median of {SYNTHETIC_REFERENCE_DRAWS} random draws "
               "- optimum)")
        return problem.optimum, ref - problem.optimum, how
    best = min(v for u in units for run in u["runs"].values() for v in run["values"])
    ref = statistics.median(u["first_random"] for u in units)
    how = ("(best - best any method found in this run) / (median random first-trial value "
           "- that best)")
    return best, max(ref - best, 1e-12), how


def regret_curve(values: list[float], optimum: float, scale: float, length: int) -> list[float]:
    curve, best = [], math.inf
    for i in range(length):
        if i < len(values):
            best = min(best, values[i])
        curve.append(max(best - optimum, 0.0) / scale)
    return curve


def average_ranks(values: list[float]) -> list[float]:
    """Rank 1 = smallest; ties share the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def mode_name(in_flight: int) -> str:
    return "seq" if in_flight == 1 else f"x{in_flight}"


# --- timing --------------------------------------------------------------------------------------

def time_suggestions(methods: list[str], repeats: int, n_obs: int = 100) -> dict[str, float]:
    """Median seconds of one suggestion with ``n_obs`` observations on hpo6 (6-dim mixed)."""
    problem = synthetic_problems()["hpo6"]
    configs = problem.space.sample(n_obs, seed=12345)
    rows = [{"config": c, "score": problem(c)} for c in configs]
    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "bayesopt" in methods:
            from pipelines.searchers import make_searcher

            times = []
            for r in range(repeats + 1):  # the first one warms imports and caches up, untimed
                searcher, _ = make_searcher("bayesopt", problem.space, metric="score", mode="min",
                                            seed=r, num_samples=n_obs + 1, warm_start=rows)
                start = time.perf_counter()
                searcher.suggest("timed")
                times.append(time.perf_counter() - start)
            out["bayesopt"] = statistics.median(times[1:])
        for method in ("gp", "tpe"):
            if method not in methods:
                continue
            import optuna
            from sq_optuna import ask_config, distributions, new_study

            dists = distributions(problem.space)
            times = []
            for r in range(repeats + 1):
                study = new_study(method, r, 1)
                study.add_trials([optuna.trial.create_trial(
                    params=row["config"], distributions={k: dists[k] for k in row["config"]},
                    value=row["score"]) for row in rows])
                start = time.perf_counter()
                ask_config(study.ask(), problem.space, dists)
                times.append(time.perf_counter() - start)
            out[method] = statistics.median(times[1:])
    return out


def scaling(methods: list[str], counts: list[int], repeats: int, versions: str) -> int:
    """``--scaling``: one suggestion's seconds against the number of observations, per method.

    An exact GP costs O(n^3) per fit; this shows where a long search starts to pay for it.
    """
    timed = [m for m in methods if m in ("bayesopt", "gp", "tpe")]
    if not timed:
        raise SystemExit("--scaling times bayesopt, gp or tpe: name one of them in --methods")
    print(f"one suggestion on hpo6 (6-dim mixed), median of {repeats}, seconds ({versions})")
    rows = []
    for n in counts:
        seconds = time_suggestions(timed, repeats, n_obs=n)
        rows.append([str(n)] + [f"{seconds[m]:.3f}" for m in timed])
        print(json.dumps({"record": "suggestion_seconds", "observations": n,
                          **{m: round(seconds[m], 4) for m in timed}}), flush=True)
    print()
    print_table(["observations", *timed], rows)
    return 0


# --- report --------------------------------------------------------------------------------------

def group_problems(problems: list[str], kinds: dict[str, str], group: str) -> list[str]:
    """The problems of ``group`` ("all": every one)."""
    return [p for p in problems if group == "all" or kinds[p] == group]


def group_summary(cells: dict, problems: list[str], kinds: dict[str, str], methods: list[str],
                  group: str, in_flight: int, budget: int) -> dict[str, tuple[float, float]]:
    """method -> (median rank, median regret) over the group's problems."""
    names = group_problems(problems, kinds, group)
    out = {}
    for m in methods:
        got = [cells[(p, in_flight, budget, m)] for p in names if (p, in_flight, budget, m) in cells]
        if got:
            out[m] = (statistics.median(g["rank"] for g in got),
                      statistics.median(g["median_regret"] for g in got))
    return out


def paired(cells: dict, problems: list[str], kinds: dict[str, str], group: str, in_flight: int,
           budget: int, a: str, b: str) -> tuple[int, int, int, float] | None:
    """Seed by seed, ``a`` against ``b`` over the group's problems: how many (problem, seed)
    pairs ``a`` ended lower, tied (within 1e-9) and higher, and the two-sided sign test's p-value
    (ties left out) of "neither is lower more often". None where a cell is missing.

    A median over 10 seeds moves when one seed lands in another basin; these counts say whether
    a gap between two medians is a pattern over seeds or a few of them.
    """
    from scipy.stats import binomtest

    names = group_problems(problems, kinds, group)
    if not names:
        return None
    better = tied = worse = 0
    for p in names:
        ca, cb = cells.get((p, in_flight, budget, a)), cells.get((p, in_flight, budget, b))
        if ca is None or cb is None:
            return None
        for ra, rb in zip(ca["regrets"], cb["regrets"], strict=True):
            if abs(ra - rb) <= TIE_REGRET:
                tied += 1
            elif ra < rb:
                better += 1
            else:
                worse += 1
    p_value = binomtest(better, better + worse, 0.5).pvalue if better + worse else 1.0
    return better, tied, worse, float(p_value)


def paired_text(counts: tuple[int, int, int, float]) -> str:
    better, tied, worse, p_value = counts
    return f"{better} lower, {tied} tied, {worse} higher (sign test p={p_value:.2g})"


def targets(cells, problems, kinds, methods, modes, budgets, suggest_times) -> list[str]:
    """The issue's reading: each target met or MISSED (n/a where the run lacks its data)."""
    def at(budget: int) -> tuple[int, str]:
        if budget in budgets:
            return budget, f"@{budget}"
        near = min(budgets, key=lambda b: abs(b - budget))
        return near, f"@{near} ({budget} not run)"

    lines = []
    for a, b, group, budget, in_flight, strict in [
        ("bayesopt", "gp", "synthetic", 40, 1, False),
        ("bayesopt", "tpe", "synthetic", 40, 1, False),
        ("bayesopt", "gp", "real", 40, 1, False),
        ("bayesopt", "tpe", "real", 40, 1, False),
        ("bayesopt", "tpe", "synthetic", 40, 4, False),
        ("bayesopt", "gp", "synthetic", 40, 4, False),
        ("bayesopt", "random", "all", 20, 1, True),
    ]:
        b_at, label = at(budget)
        what = (f"bayesopt {'<' if strict else '<='} {b} on {group} {label} "
                f"{'sequential' if in_flight == 1 else f'{in_flight} in flight'}")
        summary = (group_summary(cells, problems, kinds, methods, group, in_flight, b_at)
                   if in_flight in modes else {})
        if a not in summary or b not in summary:
            lines.append(f"{what}: n/a (not in this run)")
            continue
        ra, rb = summary[a][1], summary[b][1]
        ok = ra < rb if strict else ra <= rb
        counts = paired(cells, problems, kinds, group, in_flight, b_at, a, b)
        lines.append(f"{what}: {'met' if ok else 'MISSED'} "
                     f"(median regret {ra:.4g} vs {rb:.4g}; median rank {summary[a][0]:g} vs "
                     f"{summary[b][0]:g}" +
                     (f"; seed by seed {paired_text(counts)}" if counts else "") + ")")
    if "bayesopt" in suggest_times:
        t = suggest_times["bayesopt"]
        lines.append(f"bayesopt suggestion, 100 observations, 6-dim mixed <= "
                     f"{SUGGEST_TIME_TARGET_S} s: {'met' if t <= SUGGEST_TIME_TARGET_S else 'MISSED'}"
                     f" ({t:.3f} s)")
    return lines


def plot(path: str, curves: dict, problems: list[str], methods: list[str], modes: list[int],
         max_budget: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = min(4, len(problems))
    nrows = math.ceil(len(problems) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.2 * nrows), squeeze=False)
    colors = dict(zip(METHODS, ("tab:gray", "tab:blue", "tab:purple", "tab:brown", "tab:orange",
                                "tab:green"), strict=True))
    styles = {1: "-", 4: "--"}
    x = list(range(1, max_budget + 1))
    for ax, p in zip(axes.flat, problems, strict=False):
        for m in methods:
            for f in modes:
                curve = curves.get((p, f, m))
                if curve:
                    ax.plot(x, [max(v, 1e-4) for v in curve], color=colors[m],
                            linestyle=styles.get(f, ":"), alpha=0.85,
                            label=f"{m} {mode_name(f)}")
        ax.set_yscale("log")
        ax.set_title(p)
        ax.set_xlabel("trials")
        ax.set_ylabel("median normalized regret")
    for ax in list(axes.flat)[len(problems):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main ----------------------------------------------------------------------------------------

def _csv(kind: Callable[[str], Any]) -> Callable[[str], list]:
    return lambda text: [kind(t) for t in text.split(",") if t.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=_csv(int), default=None,
                        help="comma-separated trial budgets (default 20,40,80)")
    parser.add_argument("--seeds", type=int, default=None, help="N seeds (default 10)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds FIRST..FIRST+N-1: check a figure on seeds it was not "
                             "chosen on")
    parser.add_argument("--problems", type=_csv(str), default=None,
                        help="comma-separated names, or synthetic, real, all (default all)")
    parser.add_argument("--methods", type=_csv(str), default=None,
                        help=f"comma-separated, from {','.join(METHODS)} (default all)")
    parser.add_argument("--parallel", type=_csv(int), default=None,
                        help="comma-separated trials in flight; 1 is sequential (default 1,4)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: budgets {QUICK['budgets']}, {QUICK['seeds']} seeds, "
                             f"problems {','.join(QUICK['problems'])} (flags still override)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes over (problem, seed) units (default 1)")
    parser.add_argument("--plot", metavar="PATH.png", help="write regret against trials here")
    parser.add_argument("--timing-repeats", type=int, default=None,
                        help="suggestions timed for the 100-observation figure (default 5)")
    parser.add_argument("--scaling", type=_csv(int), default=None, metavar="N1,N2,...",
                        help="only time one suggestion of each model-based method with N1, N2, "
                             "... observations on hpo6, and print how it grows (no searches)")
    args = parser.parse_args(argv)
    if args.scaling and any(n < 1 for n in args.scaling):
        parser.error("--scaling: observation counts must be positive")
    quick = QUICK if args.quick else {}
    args.budgets = sorted(set(args.budgets or quick.get("budgets") or [20, 40, 80]))
    args.seeds = args.seeds or quick.get("seeds") or 10
    args.parallel = sorted(set(args.parallel or quick.get("parallel") or [1, 4]))
    args.methods = args.methods or list(METHODS)
    args.timing_repeats = args.timing_repeats or quick.get("timing_repeats") or 5
    names = list(all_problems())
    kinds = {n: p.kind for n, p in all_problems().items()}
    wanted = args.problems or quick.get("problems") or ["all"]
    problems: list[str] = []
    for w in wanted:
        picked = names if w == "all" else [n for n in names if kinds[n] == w or n == w]
        if not picked:
            parser.error(f"--problems: unknown {w!r}; choose from {', '.join(names)}, "
                         "synthetic, real, all")
        problems += [p for p in picked if p not in problems]
    args.problems = problems
    for m in args.methods:
        if m not in METHODS:
            parser.error(f"--methods: unknown {m!r}; choose from {', '.join(METHODS)}")
    if any(b < 1 for b in args.budgets) or any(f < 1 for f in args.parallel) or args.seeds < 1:
        parser.error("budgets, --parallel and --seeds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    problems, methods, modes, budgets = args.problems, args.methods, args.parallel, args.budgets
    max_budget = max(budgets)
    kinds = {n: p.kind for n, p in all_problems().items()}

    import bayes_opt
    import sklearn
    versions = f"bayesian-optimization {bayes_opt.__version__}, scikit-learn {sklearn.__version__}"
    if any(m not in PROJECT_METHODS for m in methods):
        import optuna
        versions += f", optuna {optuna.__version__}"
    if args.scaling:
        return scaling(methods, args.scaling, args.timing_repeats, versions)
    print(f"search quality: {len(problems)} problems x {len(methods)} methods x "
          f"{args.seeds} seeds x modes {','.join(mode_name(f) for f in modes)}, budgets "
          f"{','.join(map(str, budgets))} ({versions})")
    for m in methods:
        print(f"  {m:9s} {METHODS[m]}")
    sys.stdout.flush()

    units = [(p, s, methods, modes, max_budget) for p in problems
             for s in range(args.first_seed, args.first_seed + args.seeds)]
    done: list[dict] = []

    def progress(unit: dict) -> dict:
        done.append(unit)
        elapsed = time.perf_counter() - start
        left = elapsed / len(done) * (len(units) - len(done))
        print(f"[{elapsed:7.0f}s] {len(done)}/{len(units)} (problem, seed) done, last "
              f"{unit['problem']} seed {unit['seed']}; about {left:.0f}s left", file=sys.stderr,
              flush=True)
        return unit

    if args.jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(args.jobs, _worker_init) as pool:
            for unit in pool.imap_unordered(run_unit, units):
                progress(unit)
    else:
        _worker_init()
        for unit in units:
            progress(run_unit(unit))
    search_wall = time.perf_counter() - start

    by_problem: dict[str, list[dict]] = defaultdict(list)
    for u in done:
        by_problem[u["problem"]].append(u)
    cells: dict[tuple, dict] = {}
    curves: dict[tuple, list[float]] = {}
    how: dict[str, str] = {}
    searcher_s: dict[str, list[float]] = defaultdict(list)
    eval_s: dict[str, float] = defaultdict(float)
    n_trials: dict[str, int] = defaultdict(int)
    for p in problems:
        units_p = sorted(by_problem[p], key=lambda u: u["seed"])
        optimum, scale, how[kinds[p]] = normalizers(all_problems()[p], units_p)
        for f in modes:
            for m in methods:
                runs = [u["runs"][(m, f)] for u in units_p]
                per_seed = [regret_curve(r["values"], optimum, scale, max_budget) for r in runs]
                curves[(p, f, m)] = [statistics.median(c[i] for c in per_seed)
                                     for i in range(max_budget)]
                for r in runs:
                    searcher_s[m].append(r["searcher_s"] / max(len(r["values"]), 1))
                    eval_s[p] += r["eval_s"]
                    n_trials[p] += len(r["values"])
                for b in budgets:
                    regrets = [c[b - 1] for c in per_seed]
                    cells[(p, f, b, m)] = {"median_regret": statistics.median(regrets),
                                           "regrets": regrets}
            for b in budgets:
                medians = [cells[(p, f, b, m)]["median_regret"] for m in methods]
                for m, rank in zip(methods, average_ranks(medians), strict=True):
                    cells[(p, f, b, m)]["rank"] = rank

    print()
    print("median normalized regret over seeds (rank among methods; 1 = best)")
    for kind in GROUPS:
        if kind in how:
            print(f"  {kind}: regret = {how[kind]}")
    rows = [[p, mode_name(f), b] + [f"{cells[(p, f, b, m)]['median_regret']:.4f} "
                                    f"({cells[(p, f, b, m)]['rank']:g})" for m in methods]
            for p in problems for f in modes for b in budgets]
    print_table(["problem", "mode", "budget", *methods], rows)

    print()
    print("overall: median over problems of each method's rank / of its median regret")
    groups = [g for g in GROUPS if g in how] + (["all"] if len(how) > 1 else [])
    cases = [(group, f, b) for group in groups for f in modes for b in budgets]
    rows = []
    for group, f, b in cases:
        s = group_summary(cells, problems, kinds, methods, group, f, b)
        rows.append([group, mode_name(f), b] + [f"{s[m][0]:g} / {s[m][1]:.4f}" for m in methods])
    print_table(["group", "mode", "budget", *methods], rows)

    records: list[dict] = []  # the paired counts' JSON lines, printed with the others
    if "bayesopt" in methods and len(methods) > 1:
        print()
        print("seed by seed: bayesopt's regret against each method's, over (problem, seed) pairs")
        rows = []
        for group, f, b in cases:
            row = [group, mode_name(f), b]
            for m in methods:
                counts = (paired(cells, problems, kinds, group, f, b, "bayesopt", m)
                          if m != "bayesopt" else None)
                row.append(f"{counts[0]}/{counts[1]}/{counts[2]} p={counts[3]:.2g}"
                           if counts else "-")
                if counts:
                    records.append({"record": "paired", "group": group, "budget": b,
                                    "parallel": f, "method": "bayesopt", "against": m,
                                    "lower": counts[0], "tied": counts[1], "higher": counts[2],
                                    "sign_test_p": round(counts[3], 6)})
            rows.append(row)
        print("(lower / tied / higher: pairs where bayesopt's regret is below, equal to, above the "
              "method's; p: two-sided sign test, ties left out)")
        print_table(["group", "mode", "budget", *methods], rows)

    print()
    print("searcher seconds per trial (suggest + report, mean over runs): " +
          ", ".join(f"{m} {statistics.mean(searcher_s[m]):.3f}" for m in methods))
    print("evaluation seconds per trial (cache hits included): " +
          ", ".join(f"{p} {eval_s[p] / max(n_trials[p], 1):.3f}" for p in problems))
    suggest_times = time_suggestions(methods, args.timing_repeats)
    for m, t in suggest_times.items():
        print(f"one {m} suggestion with 100 observations on hpo6 (6-dim mixed), median of "
              f"{args.timing_repeats}: {t:.3f} s" +
              (f" (target <= {SUGGEST_TIME_TARGET_S} s)" if m == "bayesopt" else ""))

    print()
    print("targets:")
    for line in targets(cells, problems, kinds, methods, modes, budgets, suggest_times):
        print(f"  {line}")

    print()
    for p in problems:
        for b in budgets:
            for f in modes:
                for m in methods:
                    c = cells[(p, f, b, m)]
                    print(json.dumps({
                        "record": "search_quality", "problem": p, "kind": kinds[p], "budget": b,
                        "parallel": f, "method": m, "median_regret": round(c["median_regret"], 6),
                        "rank": c["rank"], "seeds": args.seeds, "first_seed": args.first_seed,
                        "regrets": [round(r, 6) for r in c["regrets"]],
                        "normalization": how[kinds[p]]}))
    for record in records:
        print(json.dumps(record))

    if args.plot:
        plot(args.plot, curves, problems, methods, modes, max_budget)
        print(f"\nwrote {args.plot}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s (searches {search_wall:.0f} s, "
          f"{args.jobs} job{'s' if args.jobs > 1 else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

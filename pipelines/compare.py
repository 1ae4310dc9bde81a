"""``python -m pipelines.compare --task svm|finetune``: grid, random and bayesopt, each with FIFO
and with ASHA, at one compute budget, on your own task.

Each strategy is a real run of the task's pipeline (``python -m pipelines.<task>`` with the same
interpreter, a fresh local Ray each, ``--no-report``), once per seed. Runs are read back from
their own files and compared by the compute they spent:

- fine-tuning: epochs trained (rows of ``epochs.parquet``);
- SVMs: rows fitted (``fit_samples`` summed over every report), the unit ASHA's SVM fidelity is
  defined in and the same for both schedulers on every machine. Not trial-seconds: an SVM trial
  fits in tens of milliseconds, so its wall time is mostly Ray's per-trial work (the first
  trials on each actor also carry its seconds-long start) and the load of the machine; ASHA
  runs twice the trials, so seconds would charge it for Ray's bookkeeping, not for fitting.
  Rows fitted leave out each fit's fixed cost, so a small rung costs less in rows than in
  seconds: on small data they favour ASHA somewhat (README gives the measured size).

Compute is counted in the order it was spent: reports sorted by their timestamp (whole
seconds), then by the trial's start plus its own clock, then by trial and report. The score at
each point is the searched metric of the best config so far under the run's own selection rule
(``pipelines.results.ranked_rows``): for SVMs only full-fidelity reports count (a score on 1/9
of the rows is not comparable), for fine-tuning every epoch does; failed trials never count.
Its last value is the run's own best (``experiment.json``).

Budget: ``--budget`` in the task's unit (default: 40 full trials: 40 x ``--epochs`` epochs, or
40 cross-validated fits on all train rows). Random and bayesopt get as many trials as should
spend it, planned from what a trial of the strategy cost so far (a first guess before any run);
a run that ends short of the budget is run again with more trials (``-try2``; the short run
stays in ``runs/``). Grid runs its grid, whatever its cost, and the chart shows where it ends.
Curves are cut at the budget, so no strategy is credited with compute beyond it; the table
keeps each run's own best and held-out test score as well.

Output (``--output``, default ``results/compare-<task>-<UTC time>``): ``runs/`` with every
experiment (and its pipeline's output in ``<name>.log``), ``compare.csv`` (one row per strategy
and seed), ``summary.csv`` (medians over seeds, also printed) and ``compare.png`` (the best
score so far against compute: per strategy the median over seeds, shaded from the lowest to
the highest seed). Bad input prints one ``error:`` line and exits with code 2 before any run.

    python -m pipelines.compare --task svm --seeds 3
    python -m pipelines.compare --task finetune --budget 150 --train-fraction 0.1 --val-fraction 0.4
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from pipelines import analysis, cli
from pipelines.analysis import Experiment
from pipelines.searchers import ALGORITHMS

TASKS = ("svm", "finetune")
STRATEGIES = tuple(f"{algo}-{scheduler}" for algo in ALGORITHMS for scheduler in cli.SCHEDULERS)
# "Reached the best": within 1 % of the best score any run found within the budget.
REACH = 0.99
# The default budget, in full trials (a trial at the task's full fidelity or epochs).
DEFAULT_FULL_TRIALS = 40
# What one trial costs, as a share of a full trial, before a run of the strategy was measured.
# SVMs under FIFO fit once on all rows (exact); fine-tuning under FIFO stops early on patience;
# ASHA's share was 0.3 to 0.6 on this project's tasks (benchmarks/asha_vs_fifo.py).
FIRST_GUESS = {("svm", "fifo"): 1.0, ("svm", "asha"): 0.5,
               ("finetune", "fifo"): 0.9, ("finetune", "asha"): 0.4}
# Trials beyond the plan where a trial's cost varies (patience under FIFO; under ASHA, cuts
# that depend on timing and ties: 0.43 to 0.54 of a full SVM trial over 3 seeds of digits).
MARGIN = {"fifo": 1.1, "asha": 1.25}
# Runs of one strategy and seed at most (the first and its reruns with more trials).
MAX_ATTEMPTS = 3

FIGSIZE = (9.6, 4.8)
DPI = 100


@dataclass(frozen=True)
class ComputeUnit:
    """How a task's compute is counted.

    Parameters
    ----------
    label : str
        What one unit is, for tables and axes (``epochs``, ``rows fitted``).
    column : str or None
        The ``epochs.parquet`` column that holds each report's cost; None when every report
        is one unit (an epoch).
    """

    label: str
    column: str | None = None


UNITS = {"finetune": ComputeUnit("epochs"), "svm": ComputeUnit("rows fitted", "fit_samples")}


# --- the numbers ------------------------------------------------------------------------------
def _signed(values, mode: str):
    """Scores turned so that larger is better."""
    return values if mode == "max" else -values


def compute_curve(exp: Experiment, unit: ComputeUnit) -> pd.DataFrame:
    """The best score so far, report after report, in the order compute was spent.

    Parameters
    ----------
    exp : Experiment
    unit : ComputeUnit
        How a report's cost is counted.

    Returns
    -------
    pandas.DataFrame
        One row per report in the order it was trained: ``trial_id``, ``trial_index``,
        ``iteration``, ``cost`` (this report's compute), ``compute`` (compute spent up to and
        including it), ``score`` (the searched metric where the run's selection rule counts
        this report, else NaN) and ``best_so_far`` (NaN until the first counted report).
        Its last ``best_so_far`` is the run's best trial's score.

    Notes
    -----
    Reports are ordered by their ``timestamp`` (whole seconds), then by their trial's start
    plus the trial's own clock (``time_total_s``), then by ``trial_index`` and ``iteration``.
    A report counts when its trial is ranked by ``analysis.ranked_trials`` and, for tasks
    ranked by their last report (SVMs), when it is that trial's last report (the full
    fidelity); for tasks ranked by their best report (fine-tuning), every report counts.
    """
    epochs, trials, metrics = exp.epochs, exp.trials, exp.metrics
    out = epochs[["trial_id", "trial_index", "iteration"]].copy()
    if unit.column is None:
        cost = pd.Series(1.0, index=epochs.index)
    elif unit.column in epochs.columns:
        cost = pd.to_numeric(epochs[unit.column], errors="coerce").astype(float).fillna(0.0)
    else:
        raise analysis.AnalysisError(f"{exp.location}: epochs.parquet has no column "
                                     f"{unit.column!r} to count {unit.label} with")
    out["cost"] = cost
    start = trials.set_index("trial_id")["start_time"] if "start_time" in trials.columns else None
    if start is not None and "time_total_s" in epochs.columns:
        begun = epochs["trial_id"].map(start)
        clock = (begun - pd.Timestamp(0, tz="UTC")).dt.total_seconds() \
            + pd.to_numeric(epochs["time_total_s"], errors="coerce")
    else:
        clock = pd.Series(math.nan, index=epochs.index)
    stamp = epochs["timestamp"] if "timestamp" in epochs.columns else pd.Series(pd.NaT, index=epochs.index)
    order = pd.DataFrame({"stamp": stamp, "clock": clock.astype(float),
                          "trial_index": epochs["trial_index"], "iteration": epochs["iteration"]})
    order = order.sort_values(["stamp", "clock", "trial_index", "iteration"], kind="stable",
                              na_position="last")
    out = out.loc[order.index]

    ranked = set(analysis.ranked_trials(exp)["trial_id"])
    counts = out["trial_id"].isin(ranked)
    if metrics.select == "last":
        last = epochs.groupby("trial_id")["iteration"].max()
        counts &= out["iteration"].to_numpy() == out["trial_id"].map(last).to_numpy()
    metric = metrics.metric
    values = epochs.loc[out.index, metric] if metric in epochs.columns else math.nan
    out["score"] = pd.to_numeric(pd.Series(values, index=out.index), errors="coerce") \
        .astype(float).where(counts)
    out["compute"] = out["cost"].cumsum()
    best = _signed(out["score"], metrics.mode).cummax().ffill()  # an uncounted report keeps it
    out["best_so_far"] = _signed(best, metrics.mode)
    return out.reset_index(drop=True)[["trial_id", "trial_index", "iteration", "cost", "compute",
                                       "score", "best_so_far"]]


def best_at(curve: pd.DataFrame, compute: float | Sequence[float]) -> Any:
    """The best score so far once ``compute`` was spent (NaN before the first counted report).

    Parameters
    ----------
    curve : pandas.DataFrame
        ``compute_curve``'s result.
    compute : float or sequence of float

    Returns
    -------
    float or numpy.ndarray
        One value per ``compute`` given.
    """
    xs = np.atleast_1d(np.asarray(compute, dtype=float))
    done = np.searchsorted(curve["compute"].to_numpy(), xs, side="right") - 1
    best = curve["best_so_far"].to_numpy(dtype=float)
    values = np.where(done >= 0, best[np.clip(done, 0, None)] if len(best) else math.nan, math.nan)
    return float(values[0]) if np.ndim(compute) == 0 else values


def compute_to_reach(curve: pd.DataFrame, target: float, mode: str,
                     limit: float = math.inf) -> float:
    """Compute spent when the best so far first reached ``target`` (NaN: not within ``limit``)."""
    reached = _signed(curve["best_so_far"], mode) >= _signed(target, mode)
    reached &= curve["compute"] <= limit
    return float(curve.loc[reached, "compute"].iloc[0]) if reached.any() else math.nan


def reach_target(best: float, mode: str, fraction: float = REACH) -> float:
    """The score within ``1 - fraction`` of ``best``: ``0.99 * best`` for a positive maximum."""
    slack = (1.0 - fraction) * abs(best)
    return best - slack if mode == "max" else best + slack


def plan_trials(budget: float, cost_per_trial: float, margin: float = 1.0) -> int:
    """Trials that should spend ``budget`` when each costs ``cost_per_trial`` (at least 1)."""
    return max(1, math.ceil(budget * margin / cost_per_trial - 1e-9))


def full_trial_cost(task: str, task_args: argparse.Namespace) -> float:
    """Compute of one trial at the full budget, in the task's unit.

    Fine-tuning: ``--epochs``. SVMs: the rows of every CV fold's train part (one fit on all
    rows per fold), from the data the pipeline's own check loaded or vouched for
    (``pipelines.svm.task_data``).
    """
    if task == "finetune":
        return float(task_args.epochs)
    from pipelines.svm import task_data

    return float(sum(len(train) for train, _ in task_data(task_args).folds))


def run_row(exp: Experiment, unit: ComputeUnit, budget: float) -> dict[str, Any]:
    """One run's line of ``compare.csv``, less its strategy, seed and reach columns."""
    curve = compute_curve(exp, unit)
    spent = float(curve["compute"].iloc[-1]) if len(curve) else 0.0
    result = analysis.test_result(exp)
    metric = exp.metrics.metric
    best = analysis.number_or_nan(result.get(metric))
    test_key = "test_accuracy" if "test_accuracy" in result else next(
        (k for k in result if k.startswith("test") and isinstance(result[k], (int, float))), None)
    return {
        "trials": len(exp.trials),
        "compute": spent,
        "budget": float(budget),
        "best_at_budget": best_at(curve, budget),
        "best": best,
        "test": analysis.number_or_nan(result.get(test_key)) if test_key else math.nan,
        "best_found_at": compute_to_reach(curve, best, exp.metrics.mode) if best == best else math.nan,
        "wall_s": analysis.number_or_nan(exp.info.get("wall_time_s")),
    }



def add_reach(rows: pd.DataFrame, curves: Mapping[tuple[str, int], pd.DataFrame], mode: str,
              budget: float) -> float:
    """Add ``compute_to_99pct_best`` to ``rows`` (in place); returns the target score.

    The best is the best score any run reached within the budget.
    """
    overall = _signed(rows["best_at_budget"], mode).max()
    target = reach_target(_signed(overall, mode), mode) if overall == overall else math.nan
    rows["compute_to_99pct_best"] = [
        compute_to_reach(curves[(r.strategy, r.seed)], target, mode, limit=budget)
        if target == target else math.nan for r in rows.itertuples()]
    return target


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Medians over seeds, one row per strategy in the order of ``rows``.

    ``compute_to_99pct_best`` counts a run that never reached the target as infinite (the
    median is then ``inf`` when half or more never did); ``reached`` says how many did.
    """
    out = []
    for strategy, part in rows.groupby("strategy", sort=False):
        reach = part["compute_to_99pct_best"].astype(float).fillna(math.inf)
        out.append({
            "strategy": strategy, "runs": len(part), "trials": part["trials"].median(),
            "compute": part["compute"].median(), "best_at_budget": part["best_at_budget"].median(),
            "best": part["best"].median(), "test": part["test"].median(),
            "compute_to_99pct_best": float(np.median(reach)),
            "reached": f"{int(np.isfinite(reach).sum())}/{len(part)}",
            "wall_s": part["wall_s"].median(),
        })
    return pd.DataFrame(out)


def median_band(curves: Sequence[pd.DataFrame], budget: float) -> pd.DataFrame:
    """The median, lowest and highest best-so-far over seeds, as step functions of compute.

    Drawn up to the budget, or to where the shortest run ended if one ended before it (a
    grid smaller than the budget). Where a seed has no counted score yet, all three are NaN.

    Returns
    -------
    pandas.DataFrame
        ``compute`` (every point where some seed's best changes, from 0 to the end, and the end
        itself), ``median``, ``low``, ``high``; ``attrs["end"]`` is the end.
    """
    end = min([budget] + [float(c["compute"].iloc[-1]) if len(c) else 0.0 for c in curves])
    points = {0.0, end}
    for curve in curves:
        best = curve["best_so_far"]
        changes = curve["compute"][best.notna() & best.ne(best.shift())]
        points.update(float(x) for x in changes if x <= end)
    xs = np.array(sorted(points))
    values = np.vstack([best_at(c, xs) for c in curves])
    complete = ~np.isnan(values).any(axis=0)
    med, low, high = (np.full(len(xs), math.nan) for _ in range(3))
    if complete.any():
        med[complete] = np.median(values[:, complete], axis=0)
        low[complete] = values[:, complete].min(axis=0)
        high[complete] = values[:, complete].max(axis=0)
    band = pd.DataFrame({"compute": xs, "median": med, "low": low, "high": high})
    band.attrs["end"] = end
    return band


# --- the chart --------------------------------------------------------------------------------
def compare_figure(rows: pd.DataFrame, curves: Mapping[tuple[str, int], pd.DataFrame], *,
                   budget: float, unit: ComputeUnit, metric: str, mode: str, best: float,
                   title: str, path: str) -> None:
    """Write the chart: per strategy, the median best-so-far over seeds and its range.

    One line per strategy (color: algorithm; solid: FIFO, dashed: ASHA), shaded from the lowest
    to the highest seed; a dot where a strategy's runs ended before the budget; a dotted line
    at the budget and a dash-dotted one at ``REACH`` of ``best``. The y axis starts about 5 %
    below ``best`` (lower where a strategy ends lower): the climb from a first random config
    matters less than who gets to the top.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = {algo: f"C{i}" for i, algo in enumerate(ALGORITHMS)}
    worst, ends = [], []
    for strategy, part in rows.groupby("strategy", sort=False):
        algo, scheduler = strategy.rsplit("-", 1)
        band = median_band([curves[(strategy, s)] for s in part["seed"]], budget)
        drawn = band.dropna()
        if drawn.empty:
            continue
        color, style = colors.get(algo, "C9"), "-" if scheduler == "fifo" else "--"
        end = band.attrs["end"]
        label = strategy if end >= budget else f"{strategy} (ends at {end:,.0f})"
        ax.plot(drawn["compute"], drawn["median"], drawstyle="steps-post", color=color,
                linestyle=style, linewidth=2, label=label)
        ax.fill_between(drawn["compute"], drawn["low"], drawn["high"], step="post", color=color,
                        alpha=0.1, linewidth=0)
        if end < budget:
            ax.plot([drawn["compute"].iloc[-1]], [drawn["median"].iloc[-1]], marker="o",
                    color=color, markersize=7)
        # The worse edge of the band: its low side when larger is better, its high side when
        # smaller is (a loss).
        worst.append(float(_signed(drawn["low" if mode == "max" else "high"], mode).min()))
        ends.append(float(_signed(drawn["median"], mode).iloc[-1]))
    ax.axvline(budget, color="gray", linestyle=":", linewidth=1)
    if best == best:
        target = reach_target(best, mode)
        ax.axhline(target, color="gray", linestyle="-.", linewidth=0.8,
                   label=f"{REACH:.0%} of the best ({target:.4f})")
        # In "larger is better" terms: from the worst drawn (but at most 5 % below the best)
        # to the best, always showing the target line and where every strategy ends up, with
        # a little room on both sides.
        top = _signed(best, mode)
        bottom = min(max(min(worst, default=-math.inf), top - 5 * abs(best - target)),
                     _signed(target, mode), *ends)
        pad = 0.08 * (top - bottom) or 0.01
        ax.set_ylim(*sorted((_signed(bottom - pad, mode), _signed(top + pad, mode))))
    ax.set_xlim(0, budget * 1.01)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.set_xlabel(f"compute spent ({unit.label}; budget {budget:,.0f})")
    ax.set_ylabel(f"best {metric} so far")
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.savefig(path, dpi=DPI, format="png")


# --- the command ------------------------------------------------------------------------------
# Flags passed on to every run: flag -> (tasks it applies to, strategies it applies to, help).
PASSED = {
    "--space": (TASKS, None, "search-space module or file.py (default: the task's own)"),
    "--dataset": (TASKS, None, "dataset name or path (default: the task's own)"),
    "--split-seed": (TASKS, None, "seed of the held-out test split (default: 0)"),
    "--num-cpus": (TASKS, None, "CPUs of each run's local Ray (default: all)"),
    "--max-concurrent": (TASKS, None, "cap on trials running at once (default: what the CPUs hold)"),
    "--grace-period": (TASKS, "asha", "ASHA: reports before a trial can be stopped (default: 1)"),
    "--reduction-factor": (TASKS, "asha", "ASHA: keep the top 1/factor at each rung (default: 3)"),
    "--bo-init": (TASKS, "bayesopt", "bayesopt: random points before the model (default: by dimension)"),
    "--target": (("svm",), None, "svm: label column of a CSV/Parquet --dataset"),
    "--cv": (("svm",), None, "svm: CV folds on the train split (default: 3)"),
    "--test-size": (("svm",), None, "svm: held-out test fraction (default: 0.2)"),
    "--epochs": (("finetune",), None, "finetune: epochs per trial (default: 6)"),
    "--train-fraction": (("finetune",), None, "finetune: share of the training rows kept (default: all)"),
    "--val-fraction": (("finetune",), None, "finetune: validation share (default: the dataset's)"),
    "--model": (("finetune",), None, "finetune: small_cnn or a torchvision model"),
    "--weights": (("finetune",), None, "finetune: pretrained weights (file, 'pretrained' or 'none')"),
    "--data-root": (("finetune",), None, "finetune: where torchvision datasets live"),
}


def _strategies(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in names if s not in STRATEGIES]
    if unknown or not names:
        what = f"unknown strategy {unknown[0]!r}" if unknown else "no strategy given"
        raise argparse.ArgumentTypeError(f"{what}; choose from {','.join(STRATEGIES)}")
    if len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(f"a strategy is named twice in {text!r}")
    return names


def build_parser() -> cli.OneLineParser:
    parser = cli.OneLineParser(prog="python -m pipelines.compare",
                               description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--task", choices=TASKS, required=True, help="the pipeline to compare on")
    parser.add_argument("--strategies", type=_strategies, default=STRATEGIES,
                        help=f"comma-separated, from {','.join(STRATEGIES)} (default: all six)")
    parser.add_argument("--budget", type=cli.positive_float, default=None,
                        help="compute each run spends, in the task's unit: epochs (finetune) or "
                             f"rows fitted (svm) (default: {DEFAULT_FULL_TRIALS} full trials)")
    parser.add_argument("--seeds", type=cli.positive_int, default=3,
                        help="runs of each strategy, with --seed 0..N-1 (default: 3)")
    parser.add_argument("--output", default=None,
                        help="a new local folder (default: results/compare-<task>-<UTC time>)")
    passed = parser.add_argument_group("passed on to every run (validated by the task's pipeline)")
    for flag, (*_, text) in PASSED.items():
        passed.add_argument(flag, default=None, help=text)
    return parser


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def validate(args: argparse.Namespace) -> argparse.Namespace:
    """Check everything before any run: the flags here, then each strategy's flags as its
    pipeline checks them (space, dataset, algorithm, scheduler). Returns the task's own
    parsed flags (with its loaded data for an SVM). Bad input: one line, exit 2."""
    import importlib

    from pipelines.runner import prepare

    algos = {s.rsplit("-", 1)[0] for s in args.strategies}
    schedulers = {s.rsplit("-", 1)[1] for s in args.strategies}
    for flag, (tasks, applies, _) in PASSED.items():
        if getattr(args, _dest(flag)) is None:
            continue
        if args.task not in tasks:
            cli.fail(f"{flag} applies only to --task {tasks[0]}")
        if applies is not None and applies not in algos | schedulers:
            cli.fail(f"{flag} applies only to {applies} strategies, and --strategies names none")
    if args.output is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        args.output = os.path.join("results", f"compare-{args.task}-{stamp}")
    if "://" in args.output:
        cli.fail(f"--output must be a local folder, got '{args.output}'")
    args.output = os.path.abspath(args.output)
    if os.path.exists(args.output) and (not os.path.isdir(args.output) or os.listdir(args.output)):
        cli.fail(f"--output '{args.output}' already exists; choose a new folder")
    module = importlib.import_module(f"pipelines.{args.task}")
    first = None
    for strategy in args.strategies:
        argv = run_argv(args, strategy, seed=0, trials=1, name="compare-check")[3:]
        task_args = cli.finish_args(module.build_parser().parse_args(argv), args.task)
        if args.task == "svm":  # the SVM pipeline's own checks outside its parser
            if task_args.cv < 2:
                cli.fail(f"--cv must be at least 2, got {task_args.cv}")
            if not 0 < task_args.test_size < 1:
                cli.fail(f"--test-size must be between 0 and 1, got {task_args.test_size}")
        prepare(module.TASK, task_args)
        first = first or task_args
    return first


def run_argv(args: argparse.Namespace, strategy: str, *, seed: int, trials: int,
             name: str) -> list[str]:
    """The command line of one run: ``python -m pipelines.<task> ...``."""
    algo, scheduler = strategy.rsplit("-", 1)
    argv = [sys.executable, "-m", f"pipelines.{args.task}", "--algo", algo,
            "--scheduler", scheduler, "--seed", str(seed), "--no-report",
            "--output", os.path.join(args.output, "runs"), "--name", name]
    if algo != "grid":
        argv += ["--num-samples", str(trials)]
    if args.task == "finetune":
        argv.append("--no-baseline")  # the SVM side by side is not part of the comparison
    for flag, (_, applies, _) in PASSED.items():
        value = getattr(args, _dest(flag))
        if value is not None and applies in (None, algo, scheduler):
            argv += [flag, value]
    return argv


class Interrupted(Exception):
    """compare was stopped (Ctrl-C, SIGTERM, SIGHUP) while a run was in progress; ``killed``:
    the run did not stop by itself (a second Ctrl-C, or not within ``STOP_GRACE_S``)."""

    def __init__(self, signum: int, name: str, log: str, killed: bool = False):
        super().__init__(name)
        self.signum, self.name, self.log, self.killed = signum, name, log, killed


def _signalled(signum: int, frame: Any) -> None:
    raise Interrupted(signum, "", "")


# How long a stopped run may take to write its files and end (it stops its trials, writes its
# Parquet files and shuts Ray down) before it is killed.
STOP_GRACE_S = 120.0

# Signals compare answers by stopping the run in progress: a closed terminal (SIGHUP) too, which
# no longer reaches the run itself in its own session.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _wait_for_run(argv: list[str], out: Any, env: Mapping[str, str], name: str,
                  log: str) -> int:
    """Run one pipeline and return its exit code.

    The run has a session of its own, so a terminal's Ctrl-C reaches compare alone, which
    passes it on once: the run then stops as it would on its own Ctrl-C (its trials stopped,
    its files written, status "interrupted") instead of being killed a quarter of a second
    later, as ``subprocess.run`` does, with its Ray processes left behind. SIGTERM and SIGHUP
    are passed on as SIGTERM, unless compare ignores them (``nohup`` ignores SIGHUP: a closed
    terminal then stops neither). A second Ctrl-C while it stops kills it and its Ray.
    """
    previous = {s: signal.getsignal(s) for s in _STOP_SIGNALS}
    proc = None
    try:
        for signum, handler in previous.items():
            if handler is not signal.SIG_IGN:
                signal.signal(signum, _signalled)
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
            return proc.wait()
        except (KeyboardInterrupt, Interrupted) as exc:
            signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        try:
            killed = _stop(proc, signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
        except (KeyboardInterrupt, Interrupted):  # another signal while it stopped
            _kill(proc)
            killed = True
        raise Interrupted(signum, name, log, killed=killed)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _stop(proc: subprocess.Popen | None, signum: int) -> bool:
    """Ask a run to stop and wait for it; kill its whole session if it does not end in time or
    another Ctrl-C comes. Returns whether it was killed."""
    if proc is None:
        return False
    try:
        proc.send_signal(signum)
        proc.wait(timeout=STOP_GRACE_S)
        return False
    except (subprocess.TimeoutExpired, KeyboardInterrupt, Interrupted):
        _kill(proc)
        return True


def _kill(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
    except ProcessLookupError:
        pass
    proc.wait()


def _run(args: argparse.Namespace, strategy: str, seed: int, trials: int,
         name: str) -> Experiment:
    """One real run of the pipeline, its output in ``runs/<name>.log``; exits 1 if it fails."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("RAY_ADDRESS", None)  # a fresh local Ray for every run
    log = os.path.join(args.output, "runs", f"{name}.log")
    with open(log, "w") as out:
        code = _wait_for_run(run_argv(args, strategy, seed=seed, trials=trials, name=name),
                             out, env, name, log)
    folder = os.path.join(args.output, "runs", name)
    exp = analysis.load_experiment(folder) if code == 0 else None
    if code != 0 or exp.info.get("status") != "finished":
        with open(log) as f:
            lines = [line.strip() for line in f if line.strip()]
        # The run's own error line, else its summary's "no trial produced a score (...)"
        # line, which says why, else its last line.
        reason = next((line for line in reversed(lines) if line.startswith("error:")), None) \
            or next((line for line in reversed(lines) if line.startswith("best ")
                     and "none" in line.split("(")[0]), None) \
            or (lines[-1] if lines else "no output")
        print(f"error: {name} failed (exit {code}): {reason[:300]} (its output: {log})",
              file=sys.stderr)
        raise SystemExit(1)
    return exp


def _spend(args: argparse.Namespace, strategy: str, seed: int, budget: float, unit: ComputeUnit,
           full: float, rate: dict[str, float]) -> tuple[Experiment, pd.DataFrame, str, int]:
    """Run a strategy for one seed with trials enough to spend the budget.

    The trials are planned from ``rate`` (the strategy's compute per trial in its latest run,
    updated here), else from ``FIRST_GUESS``; a run that ends short of the budget is run again
    with more, at most ``MAX_ATTEMPTS`` times in all. Grid runs once. Returns the run kept,
    its compute curve, its name and the attempt it was.
    """
    algo, scheduler = strategy.rsplit("-", 1)
    exact = (args.task, scheduler) == ("svm", "fifo")
    per_trial = rate.get(strategy, FIRST_GUESS[(args.task, scheduler)] * full)
    trials = plan_trials(budget, per_trial, 1.0 if exact else MARGIN[scheduler])
    for attempt in range(1, MAX_ATTEMPTS + 1):
        name = f"{strategy}-s{seed}" + (f"-try{attempt}" if attempt > 1 else "")
        exp = _run(args, strategy, seed, trials, name)
        curve = compute_curve(exp, unit)
        cost = float(curve["compute"].iloc[-1]) if len(curve) else 0.0
        if cost > 0:
            rate[strategy] = cost / len(exp.trials)
        if algo == "grid" or cost >= budget or cost == 0 or attempt == MAX_ATTEMPTS:
            break
        # A trial's cost under ASHA falls as rungs fill up: plan from this run alone.
        more = max(trials + 1, plan_trials(budget, rate[strategy], MARGIN[scheduler]))
        print(f"{strategy:<14} seed {seed}: {trials} trials spent {cost:,.0f} of the "
              f"{budget:,.0f} {unit.label}; again with {more} trials", file=sys.stderr, flush=True)
        trials = more
    return exp, curve, name, attempt


def main(argv: Sequence[str] | None = None) -> int:
    started = time.time()
    args = build_parser().parse_args(argv)
    task_args = validate(args)
    unit = UNITS[args.task]
    full = full_trial_cost(args.task, task_args)
    budget = args.budget or DEFAULT_FULL_TRIALS * full
    os.makedirs(os.path.join(args.output, "runs"), exist_ok=True)
    print(f"compare      {args.task}: {len(args.strategies)} strategies x {args.seeds} seeds, "
          f"budget {budget:,.0f} {unit.label} ({budget / full:.3g} full trials); "
          f"results in {args.output}", file=sys.stderr, flush=True)

    rate: dict[str, float] = {}  # strategy -> compute per trial in its latest run
    rows, curves = [], {}
    for seed in range(args.seeds):
        for strategy in args.strategies:
            algo, scheduler = strategy.rsplit("-", 1)
            try:
                exp, curve, name, attempt = _spend(args, strategy, seed, budget, unit, full,
                                                   rate)
            except Interrupted as stop:
                how = "Ctrl-C" if stop.signum == signal.SIGINT else \
                    signal.Signals(stop.signum).name
                what = ("was killed (it had not stopped); its journal keeps what it wrote"
                        if stop.killed else "stopped and kept what it had written")
                print(f"interrupted  ({how}) during {stop.name}, which {what} (its output: "
                      f"{stop.log}); compare has no --resume: run it again with a new --output",
                      file=sys.stderr, flush=True)
                return 130
            row = {"strategy": strategy, "algorithm": algo, "scheduler": scheduler, "seed": seed,
                   **run_row(exp, unit, budget), "attempts": attempt,
                   "experiment": os.path.join("runs", name)}
            rows.append(row)
            curves[(strategy, seed)] = curve
            print(f"{strategy:<14} seed {seed}: {row['trials']} trials, {row['compute']:,.0f} "
                  f"{unit.label}, best {row['best_at_budget']:.4f} at the budget "
                  f"({row['best']:.4f} in all), test {row['test']:.4f}, {row['wall_s']:.0f} s",
                  file=sys.stderr, flush=True)

    frame = pd.DataFrame(rows)
    mode, metric = exp.metrics.mode, exp.metrics.metric
    target = add_reach(frame, curves, mode, budget)
    columns = ["strategy", "algorithm", "scheduler", "seed", "trials", "compute", "budget",
               "best_at_budget", "best", "test", "best_found_at", "compute_to_99pct_best",
               "wall_s", "attempts", "experiment"]
    frame[columns].to_csv(os.path.join(args.output, "compare.csv"), index=False)
    summary = summarize(frame)
    summary.to_csv(os.path.join(args.output, "summary.csv"), index=False)
    best = _signed(_signed(frame["best_at_budget"], mode).max(), mode)
    compare_figure(frame, curves, budget=budget, unit=unit, metric=metric, mode=mode, best=best,
                   title=f"{args.task}: best {metric} so far, median of {args.seeds} seed"
                         f"{'s' if args.seeds > 1 else ''} (band: lowest to highest)",
                   path=os.path.join(args.output, "compare.png"))

    print(f"{args.task}: medians over {args.seeds} seed{'s' if args.seeds > 1 else ''}; budget "
          f"{budget:,.0f} {unit.label}; best at the budget: {metric} of the best config found "
          f"within it; test: held-out score of each run's own best")
    print(format_summary(summary, unit))
    print(f"best         {best:.4f} (any run, within the budget); {REACH:.0%} of it: "
          f"{target:.4f}")
    print(f"results      {args.output}/ (compare.csv, summary.csv, compare.png, runs/) in "
          f"{(time.time() - started) / 60:.1f} min")
    return 0


def format_summary(summary: pd.DataFrame, unit: ComputeUnit) -> str:
    """The summary as aligned text: compute with thousands separators, scores to 4 places."""
    shown = summary.copy()
    for column in ("trials", "compute", "compute_to_99pct_best", "wall_s"):
        shown[column] = [("never" if math.isinf(v) else f"{v:,.0f}") if v == v else "-"
                         for v in shown[column]]
    for column in ("best_at_budget", "best", "test"):
        shown[column] = [f"{v:.4f}" if v == v else "-" for v in shown[column]]
    shown = shown.rename(columns={"compute": f"compute ({unit.label})",
                                  "compute_to_99pct_best": f"to {REACH:.0%} of best"})
    return shown.to_string(index=False)


if __name__ == "__main__":
    sys.exit(cli.call_main(main, interrupted="finished runs are kept under OUTPUT/runs; "
                                                "compare has no --resume: run it again with a "
                                                "new --output"))

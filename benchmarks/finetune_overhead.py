"""Per-trial overhead of fine-tuning trials on Ray Tune: one worker (N=1) vs Ray Train DDP (N=2).

Overhead is what a trial costs beyond its own work: from Tune starting the trial to Tune seeing
it complete, minus the time spent inside ``train_loop`` (data loading, model build, epochs),
plus the scheduling gap before the next trial. Trials run one at a time, so nothing overlaps.

    python benchmarks/finetune_overhead.py            # 3 trials at N=1, 2 trials at N=2
    python benchmarks/finetune_overhead.py --trials 5 --epochs 2
    python benchmarks/finetune_overhead.py --ddp-only --ddp-trials 5   # N=2 and its phases
    python benchmarks/finetune_overhead.py --ddp-only --ddp-trials 6 --reuse-ddp --repeats 5

Prints one table and the ratio of each overhead to its target (N=1: 3 s; N=2: 10 s), with
``--repeats`` one row per run (each on a fresh local Ray) and the median over runs, then
where an N=2 trial's time goes: each phase's median over the trials, stamped by ``PhaseStamps``,
a Ray Train callback this script installs through ``RAY_TRAIN_CALLBACKS`` (no project code
changes for it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_SECONDS = {1: 3.0, 2: 10.0}
PHASES_FILE_ENV = "FINETUNE_OVERHEAD_PHASES_FILE"

try:  # Ray Train's callback bases, for the phase stamps (absent without ray[train])
    from ray.train.v2._internal.execution.callback import (
        ControllerCallback,
        TrainContextCallback,
        WorkerCallback,
        WorkerGroupCallback,
    )
except ImportError:  # pragma: no cover
    ControllerCallback = TrainContextCallback = WorkerCallback = WorkerGroupCallback = object


def _train_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("RAY_TRAIN_")}


class PhaseStamps(ControllerCallback, WorkerGroupCallback, WorkerCallback, TrainContextCallback):
    """Wall-clock stamps of a Ray Train run's phases, appended as JSON lines to one file.

    Built in the trial's process when ``TorchTrainer.fit`` starts (Train reads
    ``RAY_TRAIN_CALLBACKS``), then pickled to the controller and the workers, which stamp
    their own hooks. ``time.time()`` so stamps from different processes compare.
    """

    def __init__(self):
        import ray.tune

        self.path = os.environ[PHASES_FILE_ENV]
        self.trial = ray.tune.get_context().get_trial_id()
        self._stamp("fit")

    def _stamp(self, name, **extra):
        line = json.dumps({"trial": self.trial, "name": name, "t": time.time(), **extra})
        with open(self.path, "a") as f:
            f.write(line + "\n")

    @staticmethod
    def _process_start() -> float:
        """When this process started (Linux: /proc), as a time.time() value."""
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")

    # controller
    def after_controller_start(self, train_run_context):
        self._stamp("controller_process", t=self._process_start())
        self._stamp("controller_up", env=_train_env(), cpu=time.process_time(),
                    torch="torch" in sys.modules)

    def before_worker_group_start(self, worker_group_context):
        self._stamp("group_start")

    def after_worker_group_start(self, worker_group):
        self._stamp("workers_up")

    def after_worker_group_training_start(self, worker_group):
        self._stamp("training_launched")

    # each worker
    @contextlib.contextmanager
    def on_report(self):
        self._stamp("report")  # the worker's own time, not when the controller polls it
        yield

    def before_worker_group_shutdown(self, worker_group):
        self._stamp("shutdown_begin")

    def after_worker_group_shutdown(self, worker_group_context):
        self._stamp("shutdown_end")

    def after_controller_finish(self, result):
        self._stamp("controller_finish")

    def after_init_train_context(self):
        self._stamp("worker_process", t=self._process_start())
        self._stamp("worker_context", env=_train_env(), cpu=time.process_time())


def run_study(workers: int, trials: int, epochs: int, reuse_actors: bool, storage: str):
    from ray import tune

    from pipelines.finetune_trial import make_trial
    from trainables.image_data import resolve_dataset
    from trainables.image_models import resolve_model

    data = resolve_dataset("digits-transfer")
    # Random init: the pretraining cache is a one-off per machine, not a per-trial cost.
    model = resolve_model("small_cnn", "none", data)
    trainable, resources = make_trial(data, model, epochs, workers_per_trial=workers)

    stamps: dict[str, dict[str, float]] = {}

    class Stamps(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            stamps.setdefault(trial.trial_id, {})["start"] = time.time()

        def on_trial_complete(self, iteration, trials, trial, **info):
            stamps.setdefault(trial.trial_id, {})["end"] = time.time()

    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space={
            "lr": tune.grid_search([1e-3 * (k + 1) for k in range(trials)]),
            "batch_size": 64,
            "patience": 0,
        },
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=reuse_actors),
        run_config=tune.RunConfig(
            storage_path=storage,
            name=f"overhead_n{workers}_{int(reuse_actors)}",
            callbacks=[Stamps()],
            verbose=0,
        ),
    )
    began = time.time()
    grid = tuner.fit()
    wall = time.time() - began
    if grid.errors:
        raise RuntimeError(f"N={workers}: {grid.errors[0]}")

    rows = []
    for result in grid:
        history = result.metrics_dataframe
        loop = float(history["setup_seconds"].iloc[-1] + history["epoch_seconds"].sum())
        stamp = stamps[result.metrics["trial_id"]]
        rows.append(
            {
                "trial": result.metrics["trial_id"],
                "start": stamp["start"],
                "end": stamp["end"],
                "loop": loop,
                "setup": float(history["setup_seconds"].iloc[-1]),
            }
        )
    rows.sort(key=lambda r: r["start"])
    span = rows[-1]["end"] - rows[0]["start"]
    loop_mean = statistics.mean(r["loop"] for r in rows)
    in_trial = [r["end"] - r["start"] - r["loop"] for r in rows]
    return {
        "workers": workers,
        "reuse": reuse_actors,
        "trials": trials,
        "loop": loop_mean,
        "setup": statistics.mean(r["setup"] for r in rows),
        "trial_wall": statistics.mean(r["end"] - r["start"] for r in rows),
        "in_trial": statistics.mean(in_trial),
        "first": in_trial[0],
        "per_trial": span / trials - loop_mean,  # includes the gaps between trials
        "fixed": wall - span,
        "rows": rows,
    }


# (label, from stamp, to stamp): consecutive spans of one N=2 trial, from Tune starting it to
# Tune seeing it complete. "tune_start"/"tune_end" are the Tune callback's stamps; "loop_start"
# and "loop_end" are derived from the reports (the last report's time minus the loop's own
# epoch and setup seconds).
DDP_PHASES = [
    ("trial process start, imports, TorchTrainer built", "tune_start", "fit"),
    ("controller actor start", "fit", "controller_up"),
    ("controller: first loop step to worker group start", "controller_up", "group_start"),
    ("placement group + worker processes + train context", "group_start", "workers_up"),
    ("backend setup (gloo process group), launch train fn", "workers_up", "training_launched"),
    ("train fn start to train_loop start", "training_launched", "loop_start"),
    ("train_loop (data, model, epochs): not overhead", "loop_start", "loop_end"),
    ("last report to worker group shutdown (poll)", "loop_end", "shutdown_begin"),
    ("worker group shutdown", "shutdown_begin", "shutdown_end"),
    ("controller finish", "shutdown_end", "controller_finish"),
    ("fit returns, Tune sees the trial complete", "controller_finish", "tune_end"),
]


def ddp_phases(path: str, rows: list[dict]) -> list[dict[str, float]]:
    """Per trial, the seconds of each DDP_PHASES span (and the worker process start lag)."""
    by_trial: dict[str, dict[str, list[float]]] = {}
    with open(path) as f:
        for line in f:
            stamp = json.loads(line)
            by_trial.setdefault(stamp["trial"], {}).setdefault(stamp["name"], []).append(
                stamp["t"]
            )
    out = []
    for row in rows:
        seen = by_trial.get(row["trial"])
        if not seen:
            continue
        first = {name: min(ts) for name, ts in seen.items()}
        last = {name: max(ts) for name, ts in seen.items()}
        marks = dict(first)
        marks.update(tune_start=row["start"], tune_end=row["end"])
        marks["loop_end"] = last["report"]
        marks["loop_start"] = last["report"] - row["loop"]
        phases = {label: marks[b] - marks[a] for label, a, b in DDP_PHASES}
        phases["(of which: controller process spawned after fit)"] = (
            marks["controller_process"] - marks["fit"]
        )
        phases["(of which: last worker process spawned after group start)"] = (
            max(seen["worker_process"]) - marks["group_start"]
        )
        phases["(of which: last worker context after group start)"] = (
            max(seen["worker_context"]) - marks["group_start"]
        )
        out.append(phases)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3, help="trials at N=1 (N=2 runs 2)")
    parser.add_argument("--ddp-trials", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--cpus", type=int, default=2, help="logical CPUs for ray.init")
    parser.add_argument("--no-reuse", action="store_true", help="skip the reuse_actors=True row")
    parser.add_argument("--ddp-only", action="store_true", help="only the N=2 row and its phases")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="set in every Ray process (e.g. a RAY_TRAIN_* setting to compare)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="whole runs, each on a fresh local Ray; prints their median")
    parser.add_argument("--reuse-ddp", action="store_true", help="N=2 trials with reuse_actors")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    for item in args.env:
        name, _, value = item.partition("=")
        os.environ[name] = value

    # The legacy reporter at verbose=0 prints nothing, so stdout holds just the table.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Stamp the N=2 trials' phases: every Ray process inherits this environment on a local
    # cluster, and the trial's process builds the callback from RAY_TRAIN_CALLBACKS.
    phases_file = tempfile.NamedTemporaryFile(prefix="finetune-phases-", suffix=".jsonl",
                                              delete=False)
    phases_file.close()
    os.environ[PHASES_FILE_ENV] = phases_file.name
    os.environ["RAY_TRAIN_CALLBACKS"] = f"{Path(__file__).stem}.PhaseStamps"
    import ray

    runs, init_seconds = [], []
    for repeat in range(args.repeats):
        began = time.perf_counter()
        # address="local": a new cluster even where `ray start` left one running here.
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=True,
                 log_to_driver=False)
        init_seconds.append(time.perf_counter() - began)
        rows = []
        try:
            with tempfile.TemporaryDirectory(prefix="finetune-overhead-") as storage:
                if not args.ddp_only:
                    rows.append(run_study(1, args.trials, args.epochs, False, storage))
                if not (args.no_reuse or args.ddp_only):
                    rows.append(run_study(1, args.trials, args.epochs, True, storage))
                rows.append(run_study(2, args.ddp_trials, args.epochs, args.reuse_ddp, storage))
        finally:
            ray.shutdown()
        runs.append(rows)
        if args.repeats > 1:
            print(f"[repeat {repeat + 1}/{args.repeats}] overhead per trial: "
                  + ", ".join(f"N={r['workers']} reuse={r['reuse']} {r['per_trial']:.2f} s"
                              for r in rows), flush=True)

    print(
        f"\nray.init (with dashboard): {statistics.median(init_seconds):.1f} s"
        f"{' (median)' if args.repeats > 1 else ''}; {args.epochs} epoch(s) of "
        f"digits-transfer per trial, trials run one at a time, {args.cpus} CPUs\n"
    )
    header = (
        f"{'run':>3} {'N':>2} {'reuse':>5} {'trials':>6} {'in-loop s':>9} {'(setup)':>8} "
        f"{'trial wall':>10} {'overhead/trial':>14} {'(first)':>8} {'incl. gaps':>10} "
        f"{'tuner fixed':>11} {'target':>6} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for repeat, rows in enumerate(runs, 1):
        for r in rows:
            target = TARGET_SECONDS[r["workers"]]
            print(
                f"{repeat:>3} {r['workers']:>2} {str(r['reuse']):>5} {r['trials']:>6} "
                f"{r['loop']:>9.2f} {r['setup']:>8.2f} {r['trial_wall']:>10.2f} "
                f"{r['in_trial']:>14.2f} {r['first']:>8.2f} {r['per_trial']:>10.2f} "
                f"{r['fixed']:>11.2f} {target:>6.1f} {r['per_trial'] / target:>6.2f}"
            )
    if args.repeats > 1:
        print(f"\nmedian over {args.repeats} runs of the overhead per trial (gaps included):")
        for i, r in enumerate(runs[0]):
            values = [rows[i]["per_trial"] for rows in runs]
            target = TARGET_SECONDS[r["workers"]]
            median = statistics.median(values)
            print(f"  N={r['workers']} reuse={r['reuse']}: {median:.2f} s "
                  f"[{' '.join(f'{v:.2f}' for v in values)}], target {target:.0f} s, ratio "
                  f"{median / target:.2f}: {'met' if median <= target else 'missed'}; "
                  f"{sum(v <= target for v in values)} of {len(values)} runs within it")
    rows = [r for rows in runs for r in rows]
    ddp_runs = [r for r in rows if r["workers"] == 2]
    base = [r for r in rows if r["workers"] == 1 and not r["reuse"]]
    if base:
        ratios = [d["per_trial"] / max(b["per_trial"], 1e-9) for d, b in zip(ddp_runs, base, strict=True)]
        print(f"\nratio N=2 / N=1 overhead per trial: {statistics.median(ratios):.1f}x")
    phases = ddp_phases(phases_file.name, [t for d in ddp_runs for t in d["rows"]])
    if phases:
        print(f"\nN=2 trial phases, median of {len(phases)} trials (s):")
        for label in phases[0]:
            values = [p[label] for p in phases]
            print(f"  {statistics.median(values):6.2f}  {label}  "
                  f"[{' '.join(f'{v:.2f}' for v in values)}]")
        env, cpu, torch_seen = {}, {"controller_up": [], "worker_context": []}, set()
        with open(phases_file.name) as f:
            for line in f:
                stamp = json.loads(line)
                env.update(stamp.get("env") or {})
                if "cpu" in stamp:
                    cpu[stamp["name"]].append(stamp["cpu"])
                if "torch" in stamp:
                    torch_seen.add(stamp["torch"])
        print(f"RAY_TRAIN_* seen by the controller and workers: {env}")
        print(f"CPU seconds a process had used when up (median): controller "
              f"{statistics.median(cpu['controller_up']):.2f}, worker "
              f"{statistics.median(cpu['worker_context']):.2f}; torch imported in the "
              f"controller: {sorted(torch_seen)}")
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    os.unlink(phases_file.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

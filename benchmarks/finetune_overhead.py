"""Per-trial overhead of fine-tuning trials on Ray Tune: one worker (N=1) vs Ray Train DDP (N=2).

Overhead is what a trial costs beyond its own work: from Tune starting the trial to Tune seeing
it complete, minus the time spent inside ``train_loop`` (data loading, model build, epochs),
plus the scheduling gap before the next trial. Trials run one at a time, so nothing overlaps.

    python benchmarks/finetune_overhead.py            # 3 trials at N=1, 2 trials at N=2
    python benchmarks/finetune_overhead.py --trials 5 --epochs 2

Prints one table and the ratio of each overhead to its target (N=1: 3 s; N=2: 20 s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_SECONDS = {1: 3.0, 2: 20.0}


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
            stamps.setdefault(trial.trial_id, {})["start"] = time.perf_counter()

        def on_trial_complete(self, iteration, trials, trial, **info):
            stamps.setdefault(trial.trial_id, {})["end"] = time.perf_counter()

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
    began = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - began
    if grid.errors:
        raise RuntimeError(f"N={workers}: {grid.errors[0]}")

    rows = []
    for result in grid:
        history = result.metrics_dataframe
        loop = float(history["setup_seconds"].iloc[-1] + history["epoch_seconds"].sum())
        stamp = stamps[result.metrics["trial_id"]]
        rows.append(
            {
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
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3, help="trials at N=1 (N=2 runs 2)")
    parser.add_argument("--ddp-trials", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--cpus", type=int, default=2, help="logical CPUs for ray.init")
    parser.add_argument("--no-reuse", action="store_true", help="skip the reuse_actors=True row")
    args = parser.parse_args(argv)

    # The legacy reporter at verbose=0 prints nothing, so stdout holds just the table.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    began = time.perf_counter()
    # address="local": a new cluster even where `ray start` left one running on this machine.
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=True, log_to_driver=False)
    init_seconds = time.perf_counter() - began
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="finetune-overhead-") as storage:
            rows.append(run_study(1, args.trials, args.epochs, False, storage))
            if not args.no_reuse:
                rows.append(run_study(1, args.trials, args.epochs, True, storage))
            rows.append(run_study(2, args.ddp_trials, args.epochs, False, storage))
    finally:
        ray.shutdown()

    print(
        f"\nray.init (with dashboard): {init_seconds:.1f} s; {args.epochs} epoch(s) of "
        f"digits-transfer per trial, trials run one at a time, {args.cpus} CPUs\n"
    )
    header = (
        f"{'N':>2} {'reuse':>5} {'trials':>6} {'in-loop s':>9} {'(setup)':>8} "
        f"{'trial wall':>10} {'overhead/trial':>14} {'(first)':>8} {'incl. gaps':>10} "
        f"{'tuner fixed':>11} {'target':>6} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        target = TARGET_SECONDS[r["workers"]]
        print(
            f"{r['workers']:>2} {str(r['reuse']):>5} {r['trials']:>6} {r['loop']:>9.2f} "
            f"{r['setup']:>8.2f} {r['trial_wall']:>10.2f} {r['in_trial']:>14.2f} "
            f"{r['first']:>8.2f} {r['per_trial']:>10.2f} {r['fixed']:>11.2f} {target:>6.1f} "
            f"{r['per_trial'] / target:>6.2f}"
        )
    base = next(r for r in rows if r["workers"] == 1 and not r["reuse"])
    ddp = next(r for r in rows if r["workers"] == 2)
    print(
        f"\nratio N=2 / N=1 overhead per trial: {ddp['per_trial'] / max(base['per_trial'], 1e-9):.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

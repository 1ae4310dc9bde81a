"""Search quality on the offline fine-tuning task, in a regime where configs differ.

With every training row of ``digits-transfer`` almost every config reaches 0.99 and many tie on
a 179-image validation split, so no search method can show anything. Here the fine-tuning task
has few labels (``--train-fraction 0.1``: 36 training images of the five target classes) and a
validation split big enough to rank configs (``--val-fraction 0.4``: 358 images). Random configs
then spread over tens of accuracy points (printed: ``random spread``).

Each method is a real run of the main job (``python -m pipelines.finetune``, fresh local Ray),
seeded, one per seed:

- ``random-fifo``: random search, every trial trains all ``--epochs`` (patience still stops);
- ``bayesopt-fifo``: the project's BO, same budget of trials;
- ``random-asha``: random search under ASHA, with twice the trials, since a cut trial costs one
  or three epochs, not all of them (what ASHA alone brings);
- ``bayesopt-asha``: the project's BO under ASHA (model-based multi-fidelity: one GP over
  config and epoch, asked about the full budget; a cut trial's score is never final), also
  twice the trials.

The BO's first ``--bo-init`` trials are the same seeded random draws as random search's (the
pipeline's default is 2 per parameter, at most 20: all of a 16-trial budget on this 15-parameter
space), so give budgets well above it.

With ``--methods`` also Optuna 5's samplers on the same space and task (``optuna-tpe``,
``optuna-gp``, and each with ``HyperbandPruner`` and twice the trials: ``optuna-*-hyperband``),
run in-process through the trainables' own loop (Optuna is a benchmark extra; the device
machines and Optuna have no Ray in between), one trial at a time; their test accuracy is not
scored.

Read from each run's Parquet files: its best validation accuracy (the one selection rule), the
test accuracy of that config (held out from every trial), the epochs it trained (rows of
``epochs.parquet``) and, for every method, the epochs it had spent when one of its epochs first
reached random-fifo's best of the same seed.

Target (issue 10): bayesopt-asha reaches random-fifo's best with at most 1/4 of random-fifo's
epochs. Prints per-seed JSON lines, then medians over seeds.

    python benchmarks/finetune_search.py [--seeds 5] [--first-seed 0] [--num-samples 40]
        [--epochs 6] [--bo-init N]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (REPO, os.path.join(REPO, "benchmarks")):  # the project, and sq_optuna beside us
    if _path not in sys.path:
        sys.path.insert(0, _path)
METHODS = {
    "random-fifo": (["--algo", "random", "--scheduler", "fifo"], 1),
    "bayesopt-fifo": (["--algo", "bayesopt", "--scheduler", "fifo"], 1),
    "random-asha": (["--algo", "random", "--scheduler", "asha"], 2),
    "bayesopt-asha": (["--algo", "bayesopt", "--scheduler", "asha"], 2),
}


def run(method: str, seed: int, args: argparse.Namespace, out: str) -> dict:
    """One real run of the main job; returns what its Parquet files say."""
    flags, trial_factor = METHODS[method]
    name = f"{method}-{seed}"
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("RAY_ADDRESS", None)
    for attempt in (1, 2):
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pipelines.finetune", *flags,
             "--num-samples", str(args.num_samples * trial_factor), "--seed", str(seed),
             "--epochs", str(args.epochs), "--train-fraction", str(args.train_fraction),
             "--val-fraction", str(args.val_fraction), "--no-baseline", "--no-report",
             *(["--bo-init", str(args.bo_init)] if args.bo_init and "bayesopt" in method else []),
             *(["--grace-period", str(args.grace_period)] if "asha" in method else []),
             "--output", out, "--name", f"{name}-try{attempt}"],
            env=env, capture_output=True, text=True, cwd=REPO)
        # One retry, from scratch: on a loaded machine Ray's own start can time out.
        if proc.returncode == 0 or attempt == 2:
            break
        print(f"{name} failed (exit {proc.returncode}), retrying once: "
              f"{proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr, flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    name = f"{name}-try{attempt}"
    folder = os.path.join(out, name)
    trials = pd.read_parquet(os.path.join(folder, "trials.parquet"))
    epochs = pd.read_parquet(os.path.join(folder, "epochs.parquet"))
    with open(os.path.join(folder, "experiment.json")) as f:
        info = json.load(f)
    # The order epochs were trained in: their timestamps (trials run two at a time here), ties
    # broken by trial and epoch.
    epochs = epochs.sort_values(["timestamp", "trial_index", "epoch"]).reset_index(drop=True)
    return {
        "best": float(info["best"]["val_accuracy"]),
        "test": float(info["best"]["test_accuracy"]),
        "epochs": len(epochs),
        "curve": epochs["val_accuracy"].cummax().tolist(),
        "trial_scores": trials["val_accuracy"].dropna().tolist(),
        "wall_s": round(time.perf_counter() - start, 1),
    }


OPTUNA = {  # method -> (sampler, pruned with HyperbandPruner, trial factor)
    "optuna-tpe": ("tpe", False, 1),
    "optuna-gp": ("gp", False, 1),
    "optuna-tpe-hyperband": ("tpe", True, 2),
    "optuna-gp-hyperband": ("gp", True, 2),
}


def run_optuna(method: str, seed: int, args: argparse.Namespace) -> dict:
    """Optuna's sampler (and HyperbandPruner) on the same task: the trainables' own loop
    in-process (no Ray, one trial at a time), every epoch reported to the trial.

    The objective is a trial's selected score (its best val accuracy, the pipeline's one
    selection rule). Trial training is seeded exactly as the pipeline's (the config's default
    seed), so a config trains to the same scores here and there; the test split is not scored.
    """
    import optuna
    from sq_optuna import ask_config, distributions, make_sampler

    from search_spaces.loader import load_space
    from trainables.finetune import train_loop
    from trainables.image_data import resolve_dataset
    from trainables.image_models import resolve_model
    from trainables.session import LocalSession

    sampler_name, pruned, trial_factor = OPTUNA[method]
    space = load_space("adam_finetune")
    dists = distributions(space)
    data_spec = resolve_dataset("digits-transfer", train_fraction=args.train_fraction,
                                val_fraction=args.val_fraction)
    model_spec = resolve_model("small_cnn", None, data_spec)
    curve_values: list[float] = []

    class Reporting(LocalSession):
        """Each epoch to Optuna (pruning) and to the curve; no checkpoints kept."""

        def __init__(self, trial):
            super().__init__(num_threads=1)
            self.trial, self.best = trial, 0.0

        def report(self, metrics, checkpoint_dir=None):
            self.metrics.append(dict(metrics))
            curve_values.append(float(metrics["val_accuracy"]))
            self.best = max(self.best, float(metrics["val_accuracy"]))
            self.trial.report(self.best, int(metrics["epoch"]))
            if pruned and self.trial.should_prune():
                raise optuna.TrialPruned()

    def objective(trial):
        config = ask_config(trial, space, dists)
        with Reporting(trial) as session:
            train_loop(config, data_spec, model_spec, args.epochs, session)
            return session.best

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (optuna.pruners.HyperbandPruner(min_resource=args.grace_period,
                                             max_resource=args.epochs,
                                             reduction_factor=3)
              if pruned else optuna.pruners.NopPruner())
    study = optuna.create_study(direction="maximize", pruner=pruner,
                                sampler=make_sampler(sampler_name, seed, 1))
    start = time.perf_counter()
    study.optimize(objective, n_trials=args.num_samples * trial_factor)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    curve = list(itertools.accumulate(curve_values, max))
    return {
        "best": float(study.best_value) if done else float("nan"),
        "test": float("nan"),
        "epochs": len(curve_values),
        "curve": curve,
        "trial_scores": [t.value for t in done],
        "wall_s": round(time.perf_counter() - start, 1),
    }


def epochs_to_reach(curve: list[float], target: float) -> int | None:
    """Epochs trained when the best-so-far first reached ``target`` (None: never)."""
    for i, best in enumerate(curve):
        if best >= target - 1e-12:
            return i + 1
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="start at this seed instead: seeds FIRST..FIRST+N-1 (default 0)")
    parser.add_argument("--num-samples", type=int, default=40,
                        help="trials of the FIFO runs; ASHA runs get twice (default 40)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per trial (default 6)")
    parser.add_argument("--train-fraction", type=float, default=0.1)
    parser.add_argument("--val-fraction", type=float, default=0.4)
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"from {', '.join([*METHODS, *OPTUNA])} (default: the project's)")
    parser.add_argument("--bo-init", type=int, default=None,
                        help="random trials before BO's model (default: the pipeline's)")
    from pipelines.cli import positive_int
    from pipelines.finetune import build_parser as pipeline_parser

    parser.add_argument("--grace-period", type=positive_int,
                        default=pipeline_parser().get_default("grace_period"),
                        help="epochs before ASHA's first rung (Hyperband's min_resource for "
                             "Optuna's pruned runs); default: the pipeline's")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS and m not in OPTUNA]
    if unknown:
        parser.error(f"unknown methods: {', '.join(unknown)}")
    if "random-fifo" not in methods:
        parser.error("random-fifo is the reference: keep it in --methods")
    out = tempfile.mkdtemp(prefix="bench-ft-search-")
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        runs = {m: run_optuna(m, seed, args) if m in OPTUNA else run(m, seed, args, out)
                for m in methods}
        reference = runs["random-fifo"]
        scores = sorted(reference["trial_scores"])
        for m, r in runs.items():
            reach = epochs_to_reach(r["curve"], reference["best"])
            rows.append({
                "seed": seed, "method": m, "best_val": round(r["best"], 4),
                "test": round(r["test"], 4), "epochs": r["epochs"],
                "epochs_to_reference": reach,
                "fraction_of_reference_epochs": (None if reach is None
                                                 else round(reach / reference["epochs"], 3)),
                "random_spread_pts": round(100 * (scores[-1] - scores[0]), 1),
                "wall_s": r["wall_s"],
            })
            print(json.dumps(rows[-1]), flush=True)
    frame = pd.DataFrame(rows)
    print()
    print(f"{args.seeds} seeds, {args.num_samples} trials x {args.epochs} epochs "
          f"(ASHA runs: {2 * args.num_samples} trials, grace period {args.grace_period}, bo-init "
          f"{args.bo_init or 'default'}), train fraction "
          f"{args.train_fraction}, val fraction {args.val_fraction}; medians over seeds:")
    summary = []
    for m in methods:
        part = frame[frame["method"] == m]
        reached = part["fraction_of_reference_epochs"].dropna()
        summary.append({
            "method": m, "best_val": round(part["best_val"].median(), 4),
            "test": round(part["test"].median(), 4), "epochs": part["epochs"].median(),
            "reached_reference": f"{len(reached)}/{len(part)}",
            "epochs_to_reference_fraction": (round(statistics.median(
                [x if x == x else float("inf") for x in part["fraction_of_reference_epochs"]
                 .astype(float)]), 3) if len(part) else None),
        })
    print(pd.DataFrame(summary).to_string(index=False))
    spread = frame[frame["method"] == "random-fifo"]["random_spread_pts"]
    print(f"random spread (best - worst trial of random-fifo, accuracy points): median "
          f"{spread.median():.1f}, min {spread.min():.1f}")
    if "bayesopt-asha" in methods:
        fractions = frame[frame["method"] == "bayesopt-asha"]["fraction_of_reference_epochs"]
        values = [x if x == x else float("inf") for x in fractions.astype(float)]
        median = statistics.median(values)
        print(f"target: bayesopt-asha reaches random-fifo's best with <= 1/4 of its epochs: "
              f"{'met' if median <= 0.25 else 'MISSED'} (median fraction "
              f"{'never' if median == float('inf') else f'{median:.3f}'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""ASHA against FIFO on the same trials: total work and best score.

Runs ``python -m pipelines.<task> --algo random --num-samples N --seed S`` twice per seed, once
with ``--scheduler fifo`` and once with ``--scheduler asha`` (the same N configs, since random
search is seeded), and compares from the Parquet files:

- work: ``--task svm``: rows fitted (``fit_samples`` summed over every report of every trial),
  the SVM counterpart of epochs (FIFO fits every trial on all rows once, ASHA climbs 1/27, 1/9,
  1/3, 1); ``--task finetune``: epochs trained (rows of epochs.parquet);
- best: the best searched metric each run found (SVM: full-fidelity CV accuracy; fine-tuning:
  best val accuracy), and the test accuracy of that best.

Targets: work ratio (FIFO / ASHA) >= 3, best score within 0.5 accuracy points.

    python benchmarks/asha_vs_fifo.py [--task svm|finetune] [--num-samples 60] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(task: str, scheduler: str, n: int, seed: int, out: str, epochs: int,
        reduction_factor: float | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("RAY_ADDRESS", None)
    name = f"{scheduler}-{seed}"
    extra = ["--epochs", str(epochs), "--no-baseline"] if task == "finetune" else []
    if reduction_factor is not None:
        extra += ["--reduction-factor", str(reduction_factor)]
    proc = subprocess.run([sys.executable, "-m", f"pipelines.{task}", "--algo", "random",
                           "--num-samples", str(n), "--seed", str(seed), "--scheduler", scheduler,
                           "--output", out, "--name", name, *extra],
                          env=env, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stdout}\n{proc.stderr}")
    trials = pd.read_parquet(os.path.join(out, name, "trials.parquet"))
    epochs = pd.read_parquet(os.path.join(out, name, "epochs.parquet"))
    info = json.load(open(os.path.join(out, name, "experiment.json")))
    svm = task == "svm"
    return {
        "work": int(epochs["fit_samples"].sum()) if svm else len(epochs),
        "fit_seconds": float(epochs["fit_seconds" if svm else "epoch_seconds"].sum()),
        "best": float(info["best"]["cv_accuracy" if svm else "val_accuracy"]),
        "test": float(info["best"]["test_accuracy"]),
        "stopped": int((trials["status"] == "stopped_early").sum()),
        "wall": float(info["wall_time_s"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("svm", "finetune"), default="svm")
    parser.add_argument("--num-samples", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=9, help="finetune: epochs per trial")
    parser.add_argument("--reduction-factor", type=float, default=None,
                        help="ASHA's reduction factor (default: the pipeline's, 3)")
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    out = tempfile.mkdtemp(prefix="bench-asha-")
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        fifo = run(args.task, "fifo", args.num_samples, seed, out, args.epochs)
        asha = run(args.task, "asha", args.num_samples, seed, out, args.epochs, args.reduction_factor)
        rows.append({
            "task": args.task, "seed": seed, "trials": args.num_samples,
            "fifo_work": fifo["work"], "asha_work": asha["work"],
            "work_ratio": round(fifo["work"] / asha["work"], 2),
            "fit_s_ratio": round(fifo["fit_seconds"] / asha["fit_seconds"], 2),
            "fifo_best": round(fifo["best"], 4), "asha_best": round(asha["best"], 4),
            "best_gap_pts": round(100 * (fifo["best"] - asha["best"]), 2),
            "fifo_test": round(fifo["test"], 4), "asha_test": round(asha["test"], 4),
            "asha_stopped": asha["stopped"],
            "fifo_wall_s": round(fifo["wall"], 1), "asha_wall_s": round(asha["wall"], 1),
        })
        print(json.dumps(rows[-1]), flush=True)
    print()
    print(pd.DataFrame(rows).to_string(index=False))
    print("\nwork = SVM rows fitted / fine-tuning epochs, summed over all reports; "
          "targets: work_ratio >= 3, best_gap_pts <= 0.5")


if __name__ == "__main__":
    main()

"""Whole-process time of ``python -m pipelines.svm --algo grid`` against plain GridSearchCV.

Both run in this one invocation, one after the other, on the same grid, data split and folds:

- baseline: a fresh ``python`` process that loads digits, holds out the same stratified test
  split, and runs ``GridSearchCV(Pipeline(StandardScaler, SVC), same candidates, cv=3,
  n_jobs=-1)`` then refits the best (what a scikit-learn user would run);
- ours: ``python -m pipelines.svm --algo grid --space S`` (local Ray started and stopped inside).

Cases: (a) the classic grid (``--space svm``, 36 trials), (b) a finer grid (``svm_fine``, 300).
It prints each wall time, the ratio, whether the best config and CV score agree, and splits our
time into the fixed start-up/shut-down cost and the per-trial overhead.

    python benchmarks/svm_vs_sklearn.py [--cases svm,svm_fine] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SKLEARN_SCRIPT = r"""
import json, sys, time
start = time.time()
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from trainables.svm import load_data
from search_spaces import load_space
data = load_data("digits", cv=3, seed=0)
# The same candidates in the same order, so ties break the same way.
grid = [{f"svc__{k}": [v] for k, v in c.items()} for c in load_space(sys.argv[1]).grid()]
search = GridSearchCV(make_pipeline(StandardScaler(), SVC()), grid, cv=3, n_jobs=-1)
search.fit(data.X_train, data.y_train)
test = search.score(data.X_test, data.y_test)
best = {k[5:]: v for k, v in search.best_params_.items()}
print(json.dumps({"best": best, "cv": search.best_score_, "test": test,
                  "seconds": time.time() - start}))
"""


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("RAY_ADDRESS", None)
    return env


def run_sklearn(space: str) -> dict:
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", SKLEARN_SCRIPT, space], env=_env(),
                          capture_output=True, text=True, check=True, cwd=REPO)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall"] = time.time() - start
    return result


def run_ours(space: str, out: str, name: str) -> dict:
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "pipelines.svm", "--algo", "grid", "--space", space,
                           "--output", out, "--name", name], env=_env(), capture_output=True,
                          text=True, cwd=REPO)
    wall = time.time() - start
    if proc.returncode != 0:
        raise SystemExit(f"pipelines.svm failed:\n{proc.stdout}\n{proc.stderr}")
    info = json.load(open(os.path.join(out, name, "experiment.json")))
    trials = pd.read_parquet(os.path.join(out, name, "trials.parquet"))
    epochs = pd.read_parquet(os.path.join(out, name, "epochs.parquet"))
    in_trial = epochs.groupby("trial_id")["time_total_s"].max().sum()
    return {"wall": wall, "best": info["best"]["config"], "cv": info["best"]["cv_accuracy"],
            "test": info["best"]["test_accuracy"], "tune": info["tune_time_s"],
            "trials": len(trials), "in_trial": float(in_trial)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="svm,svm_fine")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    out = tempfile.mkdtemp(prefix="bench-svm-")
    rows = []
    for space in args.cases.split(","):
        for r in range(args.repeats):
            base = run_sklearn(space)
            ours = run_ours(space, out, f"{space}-{r}")
            same_cfg = all(
                abs(float(ours["best"][k]) - float(v)) < 1e-12 if isinstance(v, float) else ours["best"][k] == v
                for k, v in base["best"].items()
            ) and set(ours["best"]) == set(base["best"])
            fixed = ours["wall"] - ours["tune"]
            # Tune time not spent inside trials, spread over trials (cores run trials in parallel).
            per_trial = (ours["tune"] * cores - ours["in_trial"]) / ours["trials"]
            rows.append({
                "case": space, "trials": ours["trials"],
                "sklearn_s": round(base["wall"], 1), "ours_s": round(ours["wall"], 1),
                "ratio": round(ours["wall"] / base["wall"], 2),
                "same_best": same_cfg, "same_cv": abs(ours["cv"] - base["cv"]) < 1e-12,
                "cv": round(ours["cv"], 4), "test": round(ours["test"], 4),
                "fixed_s": round(fixed, 1), "tune_s": round(ours["tune"], 1),
                "per_trial_overhead_ms": round(1000 * per_trial),
            })
            print(json.dumps(rows[-1]), flush=True)
    print()
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    if args.repeats > 1:
        print("\nmedians over repeats:")
        print(table.groupby("case", sort=False)[["sklearn_s", "ours_s", "ratio", "fixed_s",
                                                "per_trial_overhead_ms"]].median().to_string())
    print("\nratio = our whole process / GridSearchCV's whole process (targets: svm <= 1.6, "
          "svm_fine <= 1.2); fixed_s = imports, Ray start/stop, data, refit; "
          f"per_trial_overhead_ms = (tune_s x {cores} cores - time inside trials) / trials")


if __name__ == "__main__":
    main()

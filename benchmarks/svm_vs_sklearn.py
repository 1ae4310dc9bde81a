"""Whole-process time of ``python -m pipelines.svm --algo grid`` against plain GridSearchCV.

Both run in this one invocation, in turn, on the same grid, data split and folds:

- baseline: a fresh ``python`` process that loads digits, holds out the same stratified test
  split, and runs ``GridSearchCV(Pipeline(StandardScaler, SVC), same candidates, cv=3,
  n_jobs=-1)`` then refits the best (what a scikit-learn user would run);
- ours, on a fresh local Ray: ``python -m pipelines.svm --algo grid --space S --no-report``
  (Ray started and stopped inside the process);
- ours, on a running Ray (``--ray running``): the same command with ``--address`` of a local
  head this script starts once (``ray start --head``, token auth on, its own ports and temp
  dir) and stops at the end, as a user who runs ``ray start --head`` once and then
  ``--address auto`` for every run.

``--no-report``: GridSearchCV writes no report; ``--report`` times ours with it (1-4 s more).
Cases: (a) the classic grid (``--space svm``, 36 trials), (b) a finer grid (``svm_fine``, 300).
It prints each wall time, the ratio, whether the best config and CV score agree, and splits our
time into the fixed start-up/shut-down cost and the per-trial overhead; with ``--repeats`` > 1,
the medians.

    python benchmarks/svm_vs_sklearn.py [--cases svm,svm_fine] [--ray fresh,running] [--repeats 3]
        [--configs-per-trial auto,1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

import pandas as pd
from _common import running_ray

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


def run_ours(space: str, out: str, name: str, report: bool = False, address: str | None = None,
             env: dict | None = None, configs_per_trial: str = "auto") -> dict:
    cmd = [sys.executable, "-m", "pipelines.svm", "--algo", "grid", "--space", space,
           "--output", out, "--name", name, "--configs-per-trial", configs_per_trial]
    cmd += [] if report else ["--no-report"]
    cmd += ["--address", address] if address else []
    start = time.time()
    proc = subprocess.run(cmd, env=env or _env(), capture_output=True, text=True, cwd=REPO)
    wall = time.time() - start
    if proc.returncode != 0:
        raise SystemExit(f"pipelines.svm failed:\n{proc.stdout}\n{proc.stderr}")
    info = json.load(open(os.path.join(out, name, "experiment.json")))
    trials = pd.read_parquet(os.path.join(out, name, "trials.parquet"))
    epochs = pd.read_parquet(os.path.join(out, name, "epochs.parquet"))
    # Each config's own time (a config in a pack reports its own time_total_s).
    in_trial = epochs.groupby("trial_id")["time_total_s"].max().sum()
    return {"wall": wall, "best": info["best"]["config"], "cv": info["best"]["cv_accuracy"],
            "test": info["best"]["test_accuracy"], "tune": info["tune_time_s"],
            "trials": len(trials), "in_trial": float(in_trial)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="svm,svm_fine")
    parser.add_argument("--ray", default="fresh,running",
                        help="fresh (a local Ray per run), running (one head for all runs), or both")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--report", action="store_true",
                        help="let our runs write report.html (GridSearchCV writes none)")
    parser.add_argument("--configs-per-trial", default="auto",
                        help="ours with each of these comma-separated --configs-per-trial values, "
                             "in turn (default: auto, the pipeline's default; 'auto,1' also "
                             "times one config per Tune trial)")
    args = parser.parse_args()
    packings = args.configs_per_trial.split(",")
    modes = args.ray.split(",")
    if not set(modes) <= {"fresh", "running"}:
        parser.error(f"--ray takes fresh and/or running, got {args.ray!r}")
    cores = os.cpu_count() or 1
    out = tempfile.mkdtemp(prefix="bench-svm-")
    rows = []
    with contextlib.ExitStack() as stack:
        head = stack.enter_context(running_ray(cores, _env())) if "running" in modes else None
        for space in args.cases.split(","):
            for r in range(args.repeats):
                for mode in modes:
                    # Every other round in the opposite order: a run just after another (a
                    # running head still reaping the last job's workers, say) runs slower.
                    for packing in packings if r % 2 == 0 else packings[::-1]:
                        base = run_sklearn(space)
                        address, env = head if mode == "running" else (None, None)
                        ours = run_ours(space, out, f"{space}-{mode}-{packing}-{r}", args.report,
                                        address, env, packing)
                        rows.append(_row(space, mode, base, ours, cores, packing))
                        print(json.dumps(rows[-1]), flush=True)
    print()
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    if args.repeats > 1:
        print(f"\nmedians over {args.repeats} repeats:")
        print(table.groupby(["case", "ray", "configs_per_trial"], sort=False)[
            ["sklearn_s", "ours_s", "ratio", "fixed_s", "per_trial_overhead_ms"]].median().to_string())
    print("\nratio = our whole process / GridSearchCV's whole process (targets: svm <= 1.6 on a "
          "fresh Ray and <= 1.0 on a running one, svm_fine <= 1.1); ours "
          + ("writes its report" if args.report else "with --no-report")
          + "; fixed_s = imports, Ray start/stop or connect, data, refit; "
          f"per_trial_overhead_ms = (tune_s x {cores} cores - time inside trials) / trials")


def _row(space: str, mode: str, base: dict, ours: dict, cores: int, packing: str) -> dict:
    same_cfg = all(
        abs(float(ours["best"][k]) - float(v)) < 1e-12 if isinstance(v, float) else ours["best"][k] == v
        for k, v in base["best"].items()
    ) and set(ours["best"]) == set(base["best"])
    fixed = ours["wall"] - ours["tune"]
    # Tune time not spent inside trials, spread over trials (cores run trials in parallel).
    per_trial = (ours["tune"] * cores - ours["in_trial"]) / ours["trials"]
    return {
        "case": space, "ray": mode, "configs_per_trial": packing, "trials": ours["trials"],
        "sklearn_s": round(base["wall"], 1), "ours_s": round(ours["wall"], 1),
        "ratio": round(ours["wall"] / base["wall"], 2),
        "same_best": same_cfg, "same_cv": abs(ours["cv"] - base["cv"]) < 1e-12,
        "cv": round(ours["cv"], 4), "test": round(ours["test"], 4),
        "fixed_s": round(fixed, 1), "tune_s": round(ours["tune"], 1),
        "per_trial_overhead_ms": round(1000 * per_trial),
    }


if __name__ == "__main__":
    main()

"""Where a short run's time goes: the phases of one ``python -m pipelines.<task>`` process.

Runs the pipeline ``--repeats`` times as a user would (a new process each time, a fresh local
Ray, or with ``--ray running`` joining one head this script starts once, as a user who runs
``ray start --head`` and then ``--address auto``) and prints the median seconds of each phase:

- ``imports``: process launch to the start of ``runner.run`` (the interpreter, the pipeline's
  imports);
- ``prepare``: the checks before Ray (flags, space, storage, the data's split for the SVM task);
- ``ray_start``: ``ray.init`` (data loading runs beside it; ``data_load`` and ``wait_for_load``
  show whether it finished first);
- ``tuner_build``, ``first_trial_start`` (``Tuner.fit`` to the first trial's start);
- ``tune``: all trials; ``per_trial_overhead``: the part of it no trial was running for,
  divided by the trial count (tune span x concurrency - the trials' own wall time) / trials;
- ``evaluation``: the final test of the best config; ``report``: writing report.html (0 with
  ``--no-report``); ``shutdown``: the part of ``ray.shutdown`` not hidden behind the final
  writes it runs beside;
- ``after``: writing experiment.json's last state and the process exit.

The phases come from the ``phases_s`` field each run writes to experiment.json; ``imports`` and
``after`` from the launch and exit times seen here.

``--env NAME=VALUE`` (repeatable; fresh Ray only) adds runs with those variables exported, and
``--against DIR`` runs from another checkout (a git worktree of another commit), each taking
turns with the plain runs: an A/B of a setting or a change on the same machine at the same time.
Each run's ``ray_start`` and total are then printed too.

    python benchmarks/phases.py [--task svm] [--repeats 3] [--ray fresh|running|both]
                                [--address auto] [--env NAME=VALUE ...] [--against DIR]
                                [-- extra flags]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime

import pandas as pd
from _common import running_ray

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORDER = ("imports", "prepare", "ray_start", "data_load", "wait_for_load", "tuner_build",
         "first_trial_start", "tune", "per_trial_overhead", "evaluation", "report", "shutdown",
         "after")


def one_run(task: str, extra: list[str], address: str | None, out: str, name: str,
            env: dict | None = None, repo: str = REPO) -> dict:
    env = dict(env or os.environ, PYTHONPATH=repo)
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", f"pipelines.{task}", "--output", out, "--name", name, *extra]
    if address:
        cmd += ["--address", address]
    launched = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=repo)
    ended = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    folder = os.path.join(out, name)
    with open(os.path.join(folder, "experiment.json")) as f:
        info = json.load(f)
    phases = dict(info["phases_s"])
    started = datetime.fromisoformat(info["started"]).timestamp()
    finished = datetime.fromisoformat(info["finished"]).timestamp()
    phases["imports"] = started - launched
    # experiment.json's "finished" is stamped before the shutdown is joined: leave it out here.
    phases["after"] = ended - finished - phases.get("shutdown", 0.0) - phases.get("report", 0.0)
    trials = pd.read_parquet(os.path.join(folder, "trials.parquet"))
    span = (pd.to_datetime(trials["end_time"]).max()
            - pd.to_datetime(trials["start_time"]).min()).total_seconds()
    concurrency = int(info.get("flags", {}).get("max_concurrent") or 0) or _concurrency(trials)
    busy = float(trials["wall_time_s"].sum())
    phases["per_trial_overhead"] = max(0.0, span * concurrency - busy) / max(len(trials), 1)
    phases["total"] = ended - launched
    phases["trials"] = len(trials)
    return phases


def _concurrency(trials: pd.DataFrame) -> int:
    """The most trials that overlapped in time."""
    events = sorted([(t, 1) for t in pd.to_datetime(trials["start_time"])]
                    + [(t, -1) for t in pd.to_datetime(trials["end_time"])])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return max(most, 1)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("svm", "finetune"), default="svm")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--address", default=None, help="a running Ray (e.g. auto)")
    parser.add_argument("--ray", default="fresh", choices=("fresh", "running", "both"),
                        help="fresh: a new local Ray per run; running: one head this script "
                             "starts (ray start --head) and every run joins; both: in turn")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="also run each mode with these exported, taking turns (A/B)")
    parser.add_argument("--against", default=None, metavar="DIR",
                        help="also run each mode from this checkout (another commit, e.g. a "
                             "git worktree), taking turns (A/B)")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.env):
        parser.error("--env takes NAME=VALUE")
    if args.env and (args.ray != "fresh" or args.address):
        # A driver joining a running Ray does not pass its environment to the raylet or workers.
        parser.error("--env applies to runs on a fresh Ray (--ray fresh, no --address): a "
                     "running Ray keeps the settings it was started with")
    exported = dict(item.split("=", 1) for item in args.env)
    extra = extra or ["--algo", "grid", "--no-report"]
    out = tempfile.mkdtemp(prefix="bench-phases-")
    rays = ["fresh", "running"] if args.ray == "both" else [args.ray]
    # Variants: (suffix, exported variables, checkout); each runs every mode.
    variants = [("", {}, REPO)]
    if exported:
        variants.append(("+env", exported, REPO))
    if args.against:
        variants.append(("@against", {}, os.path.abspath(args.against)))
    modes = [ray + suffix for suffix, _, _ in variants for ray in rays]
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    with contextlib.ExitStack() as stack:
        head = (stack.enter_context(running_ray(os.cpu_count() or 1, dict(os.environ)))
                if "running" in rays else None)
        for i in range(args.repeats):
            # The variants go in reverse order every other repeat, so none always goes first.
            for suffix, env_vars, repo in (variants if i % 2 == 0 else variants[::-1]):
                for ray in rays:
                    mode = ray + suffix
                    address, env = head if ray == "running" else (args.address, None)
                    if env_vars:
                        env = {**(env or os.environ), **env_vars}
                    name = f"{ray}{i}{suffix.replace('+', '-').replace('@', '-')}"
                    runs[mode].append(one_run(args.task, extra, address, out, name, env, repo))
                    print(f"{mode} run {i + 1}/{args.repeats}: {runs[mode][-1]['total']:.1f} s, "
                          f"{runs[mode][-1]['trials']} trials", flush=True)
    print(f"\npipelines.{args.task} {' '.join(extra)}; median of {args.repeats} runs, seconds "
          f"(load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}):")
    print(f"  {'phase':<20} " + " ".join(f"{m:>14}" for m in modes))
    for key in (*ORDER, "total"):
        cells = []
        for mode in modes:
            values = [r[key] for r in runs[mode] if key in r]
            cells.append(f"{statistics.median(values):14.3f}" if values else f"{'-':>14}")
        print(f"  {key:<20} " + " ".join(cells))
    if len(variants) > 1:
        if exported:
            print("\n+env: " + " ".join(f"{k}={v}" for k, v in exported.items()))
        if args.against:
            print(f"\n@against: {os.path.abspath(args.against)}")
        print("each run:")
        for mode in modes:
            print(f"  {mode:<16} ray_start " + " ".join(f"{r['ray_start']:.2f}" for r in runs[mode])
                  + " | total " + " ".join(f"{r['total']:.1f}" for r in runs[mode]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

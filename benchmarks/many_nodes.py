"""A simulated many-node run: does the driver keep up, and do trials spread over the nodes?

``ray.cluster_utils.Cluster`` starts a head with no CPUs (as in cluster.yaml) and ``--nodes``
worker nodes of one CPU each, every one its own raylet, on this machine, with token
authentication on. The project's own runner (``pipelines.runner.run``: ListedSearcher, Tuner,
ResultsCallback, ResultsWriter) joins it with ``--address`` and runs trivial trials, so what is
measured is scheduling and the driver's per-trial cost, not training. (The Parquet
writing at scale has its own benchmark: benchmarks/parquet_scale.py.)

Prints one table per part. The ratio to read: trials per second the driver completes, and its
CPU milliseconds per trial (driver CPU / trials).

Two runs share the cluster: a spread run (4 trials per node, each sleeping 3 s, so every node
is busy and node_id must show all of them; with shorter trials on an overloaded machine the
first actors to boot take every trial through actor reuse) and an overhead run (200 trials that return at once,
so the driver's own cost per trial is all there is to measure).

Usage::

    python benchmarks/many_nodes.py [--nodes 8] [--trials N] [--trial-seconds 3] [--overhead-trials 200]
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import shutil
import sys
import tempfile
import time

import pyarrow as pa
from _common import print_table

from pipelines.results import MetricColumns

# Ray is imported only after main() has set up token authentication: Ray reads RAY_AUTH_MODE
# once per process, and pipelines.runner imports Ray.

METRICS = MetricColumns(metric="score", mode="max",
                        columns={"score": pa.float64(), "step": pa.int64()}, step="step")


def trivial_trial(config, seconds: float = 0.0):
    """What one trial does here: optionally sleep, then report once."""
    if seconds:
        time.sleep(seconds)
    yield {"score": float(config["x"]), "step": 1}


def make_task(trial_seconds: float):
    from pipelines.runner import Task

    def trainable(args, data):
        from ray import tune

        from pipelines.tune_adapter import report_each

        return tune.with_parameters(report_each(trivial_trial), seconds=trial_seconds), {"CPU": 1}

    return Task(
        name="bench", metrics=METRICS, check=lambda args: None, load=lambda args: None,
        trainable=trainable, max_t=lambda args: 1, evaluate=lambda args, data, best, config: {},
        # As the SVM pipeline: cheap trials keep their actor instead of paying a start each.
        reuse_actors=lambda args: True,
    )


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def enable_token_auth(workdir: str) -> None:
    """Token authentication on, as on a real cluster (cluster.yaml), with a private token."""
    if "ray" in sys.modules:
        raise RuntimeError("set RAY_AUTH_MODE before Ray is imported")
    token = os.path.join(workdir, "auth_token")
    with open(token, "w") as f:
        f.write(secrets.token_hex(32))
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=token,
                      RAY_USAGE_STATS_ENABLED="0")


def run_phase(address: str, name: str, trials: int, trial_seconds: float, workdir: str) -> dict:
    """One experiment through the project's runner, joined to the cluster at ``address``."""
    import pandas as pd

    from pipelines import cli
    from pipelines.runner import run

    space_file = os.path.join(workdir, "space.py")
    with open(space_file, "w") as f:
        f.write("from search_spaces.space import Float, Space\nSPACE = Space(x=Float(0.0, 1.0))\n")
    parser = cli.base_parser("many_nodes", "benchmark", default_space=space_file)
    args = cli.finish_args(parser.parse_args([
        "--address", address, "--space", space_file, "--algo", "random",
        "--num-samples", str(trials), "--storage", os.path.join(workdir, "results"),
        "--name", name,
    ]), "bench")
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    code = run(make_task(trial_seconds), args)
    cpu, wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
    if code != 0:
        raise SystemExit(f"the run failed with exit code {code}")
    exp = os.path.join(workdir, "results", name)
    rows = pd.read_parquet(os.path.join(exp, "trials.parquet"))
    tune_s = float(pd.read_json(os.path.join(exp, "experiment.json"), typ="series")["tune_time_s"])
    per_node = rows["node_id"].value_counts()
    state = [f for f in os.listdir(exp) if f.startswith("experiment_state-")]
    return {
        "trial_s": trial_seconds, "trials": len(rows),
        "finished": int((rows["status"] == "finished").sum()),
        "node_ids": int(rows["node_id"].nunique()),
        "per_node": f"{per_node.min()}-{per_node.max()}",
        "tune_s": tune_s, "run_s": wall, "trials_per_s": len(rows) / tune_s,
        "driver_cpu_s": cpu, "cpu_ms_per_trial": 1000 * cpu / len(rows),
        # Tune's own experiment snapshot, rewritten (and uploaded, on S3) periodically.
        "state_kib": sum(os.path.getsize(os.path.join(exp, f)) for f in state) / 1024,
    }


def run_on_cluster(nodes: int, spread_trials: int, trial_seconds: float, overhead_trials: int,
                   workdir: str) -> tuple[float, list[dict]]:
    """Start the simulated cluster once and run both experiments on it."""
    from ray.cluster_utils import Cluster

    started = time.perf_counter()
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        boot_s = time.perf_counter() - started
        phases = [run_phase(cluster.address, "spread", spread_trials, trial_seconds, workdir)]
        if overhead_trials:
            phases.append(run_phase(cluster.address, "overhead", overhead_trials, 0.0, workdir))
    finally:
        import ray

        ray.shutdown()  # a failed run leaves its driver connected, and the head then stays up
        cluster.shutdown()
    return boot_s, phases


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8, help="one-CPU worker nodes (default: 8)")
    parser.add_argument("--trials", type=int, default=None,
                        help="trials of the spread run (default: 4 per node)")
    parser.add_argument("--trial-seconds", type=float, default=3.0,
                        help="sleep inside each spread-run trial (default: 3)")
    parser.add_argument("--overhead-trials", type=int, default=200,
                        help="trials of the 0-second run that measures the driver (default: 200)")
    args = parser.parse_args(argv)
    spread = args.trials or 4 * args.nodes
    # A short path: Ray's Unix sockets live under it and are capped at 107 bytes.
    workdir = tempfile.mkdtemp(prefix="mnb-", dir="/tmp")
    enable_token_auth(workdir)
    try:
        boot_s, phases = run_on_cluster(args.nodes, spread, args.trial_seconds,
                                        args.overhead_trials, workdir)
        print(f"\nsimulated cluster: head (0 CPU) + {args.nodes} one-CPU nodes, each its own "
              f"raylet, on one machine with {os.cpu_count()} cores; token auth on; "
              f"started in {boot_s:.1f} s")
        rows = []
        for p in phases:
            ideal = p["trials"] * p["trial_s"] / args.nodes
            rows.append([p["trial_s"], p["trials"], p["finished"], p["node_ids"], p["per_node"],
                         p["tune_s"], ideal, p["trials_per_s"], p["driver_cpu_s"],
                         p["cpu_ms_per_trial"], f"{100 * p['driver_cpu_s'] / p['run_s']:.0f}%",
                         f"{p['state_kib']:.0f}"])
        print_table(["trial_s", "trials", "finished", "node_ids", "per_node", "tune_s",
                     "ideal_s", "trials/s", "driver_cpu_s", "cpu_ms/trial", "driver_core",
                     "tune_state_KiB"], rows)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

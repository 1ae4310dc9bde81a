"""Helpers shared by the benchmark scripts: drive a Searcher in-process, print a table.

Benchmarks run the searchers without Ray Tune: suggest, evaluate, report, one trial at a time,
which is what a Tune run with ``max_concurrent_trials=1`` does, minus the cluster overhead.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

# Run as ``python benchmarks/x.py`` from the repository root: make the project importable.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


def run_sequential(searcher: Any, objective: Callable[[dict[str, Any]], float], n_trials: int,
                   metric: str) -> list[tuple[dict[str, Any], float]]:
    """Suggest, evaluate and report ``n_trials`` configs one after another.

    Parameters
    ----------
    searcher : ray.tune.search.Searcher
        Already given its metric and mode.
    objective : callable
        Config -> score.
    n_trials : int
        How many trials.
    metric : str
        The key the score is reported under.

    Returns
    -------
    list of (config, score)
        In the order they ran.
    """
    history = []
    for i in range(n_trials):
        trial_id = f"t{i}"
        config = searcher.suggest(trial_id)
        score = objective(config)
        searcher.on_trial_complete(trial_id, {metric: score})
        history.append((config, score))
    return history


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print ``rows`` under ``headers`` in aligned columns (floats with 4 decimals)."""
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for row in cells:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_ray(cpus: int, base_env: dict):
    """A local head node (``ray start --head``, token auth on, its own ports and temp dir) for
    the duration, as a user who runs ``ray start --head`` once; yields (address, env), the
    environment a driver needs to join it.

    Stops only what it started (never ``ray stop``, which stops every Ray on the machine): its
    ``ray start --block`` process, then anything still running from its temp dir.
    """
    from tests.helpers import pids_mentioning

    temp_dir = tempfile.mkdtemp(prefix="bsv", dir="/tmp")  # short: Ray's socket paths are capped
    token = os.path.join(temp_dir, "auth_token")
    with open(token, "w") as f:
        f.write(secrets.token_hex(32))
    env = {**base_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token,
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_ADDRESS", None)
    address = f"127.0.0.1:{_free_port()}"
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    ports = [f"--{name}={_free_port()}" for name in (
        "node-manager-port", "object-manager-port", "metrics-export-port",
        "runtime-env-agent-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
        "ray-client-server-port")]
    log = open(os.path.join(temp_dir, "head.log"), "w")
    head = subprocess.Popen(
        [ray_cli, "start", "--block", "--head", f"--port={address.split(':')[1]}",
         "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--num-gpus=0",
         "--include-dashboard=false", f"--temp-dir={temp_dir}", *ports],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        probe = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
                 "print(ray.cluster_resources().get('CPU'))")
        for _ in range(60):
            if head.poll() is not None:
                raise RuntimeError(f"ray start exited ({head.returncode}); see {log.name}")
            if subprocess.run([sys.executable, "-c", probe, address], env=env,
                              capture_output=True).returncode == 0:
                break
            time.sleep(1)
        else:
            raise RuntimeError(f"the head at {address} did not come up in 60 s")
        yield address, env
    finally:
        head.terminate()
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        for pid in pids_mentioning(temp_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)

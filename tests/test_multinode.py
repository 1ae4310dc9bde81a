"""A real two-node Ray cluster on this machine, token authentication on, shared S3 storage.

Each node is its own `ray start` (as cluster.yaml's start commands run them), with one CPU, so
two concurrent trials can only run on two different nodes. The pipelines join it with
--address as a subprocess, the way a job on the cluster head does, and write to the S3 server
on 127.0.0.1, which every node reaches the same way. trials.parquet's node_id column then says
where each trial ran.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pandas as pd
import pytest

from tests.helpers import REPO, pids_mentioning, run_module, tiny_svm_space
from tests.s3_server import free_port

# The `ray` of the Python running the tests, whether or not its venv is activated.
RAY_CLI = os.path.join(os.path.dirname(sys.executable), "ray")
if not os.path.exists(RAY_CLI):
    RAY_CLI = shutil.which("ray") or "ray"

pytestmark = pytest.mark.ray

_NODES_UP = """
import json, sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + float(sys.argv[3])
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= int(sys.argv[2]) or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(json.dumps(sorted(n["NodeID"] for n in alive)))
"""


class LocalRayCluster:
    """A head and ``workers`` more nodes, each a ``ray start --block`` of its own.

    Every port is picked free, and the session lives in a private temp dir, so a cluster that
    another test (or person) runs on this machine is neither joined nor disturbed.
    """

    def __init__(self, env: dict[str, str], workers: int = 1, cpus_per_node: int = 1):
        # A short root: Ray's Unix sockets live under it and paths are capped at 107 bytes.
        self.temp_dir = tempfile.mkdtemp(prefix="rmn", dir="/tmp")
        token_path = os.path.join(self.temp_dir, "auth_token")
        with open(token_path, "w") as f:
            f.write(secrets.token_hex(32))
        # Token auth on, as cluster.yaml sets it on every node; clients find the same token.
        self.env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_path,
                    "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)
        self.env.pop("RAY_AUTH_TOKEN", None)
        self.address = f"127.0.0.1:{free_port()}"
        self._procs: list[subprocess.Popen] = []
        try:
            self._start("--head", f"--port={self.address.split(':')[1]}",
                        f"--temp-dir={self.temp_dir}", "--include-dashboard=false",
                        f"--ray-client-server-port={free_port()}", cpus=cpus_per_node)
            for _ in range(workers):
                self._start(f"--address={self.address}", cpus=cpus_per_node)
            self.node_ids = self._wait_for_nodes(1 + workers, timeout=180)
        except BaseException:
            self.shutdown()
            raise

    def _start(self, *args: str, cpus: int) -> None:
        ports = [f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
                 f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
                 f"--dashboard-agent-listen-port={free_port()}",
                 f"--dashboard-agent-grpc-port={free_port()}"]
        self.node_manager_ports = getattr(self, "node_manager_ports", [])
        self.node_manager_ports.append(ports[0].split("=")[1])
        log = open(os.path.join(self.temp_dir, f"node{len(self._procs)}.log"), "w")
        self._procs.append(subprocess.Popen(
            [RAY_CLI, "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
             "--num-gpus=0", *ports, *args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        ))
        log.close()

    def _wait_for_nodes(self, count: int, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            for proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a ray start exited ({proc.returncode}):\n{self.logs()}")
            left = deadline - time.monotonic()
            probe = subprocess.run([sys.executable, "-c", _NODES_UP, self.address, str(count),
                                    str(max(left, 1))], env=self.env, capture_output=True,
                                   text=True, timeout=max(left, 1) + 60)
            if probe.returncode == 0:
                ids = json.loads(probe.stdout.strip().splitlines()[-1])
                if len(ids) >= count:
                    return ids
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} nodes not up in {timeout:.0f} s: "
                                   f"{probe.stdout}{probe.stderr[-2000:]}\n{self.logs()}")
            time.sleep(1)

    def kill_node(self, k: int) -> None:
        """Lose node ``k`` as a machine is lost: SIGKILL its ``ray start`` and its raylet
        (whose workers die with it)."""
        proc = self._procs[k]
        port = self.node_manager_ports[k]
        for pid in pids_mentioning(f"node_manager_port={port}") + \
                pids_mentioning(f"node-manager-port={port}"):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(30)

    def logs(self) -> str:
        out = []
        for name in sorted(os.listdir(self.temp_dir)):
            if name.endswith(".log"):
                with open(os.path.join(self.temp_dir, name), errors="replace") as f:
                    out.append(f"--- {name}\n{f.read()[-3000:]}")
        return "\n".join(out)

    def shutdown(self) -> None:
        """Stop what this cluster started, and only that: its ray start processes, then any
        process still running from its private session directory."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self._procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in pids_mentioning(self.temp_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(s3_server):
    # The nodes get the S3 settings as cluster nodes get them from their instance profile:
    # trials on any node write checkpoints to the same bucket.
    c = LocalRayCluster(s3_server.env(PYTHONPATH=REPO), workers=1, cpus_per_node=1)
    yield c
    c.shutdown()


def test_cluster_really_uses_token_auth(cluster):
    # A client without the token is refused: the cluster is not open to anyone who can reach it.
    env = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN"] = "0" * 64
    proc = subprocess.run(
        [sys.executable, "-c", "import ray, sys; ray.init(address=sys.argv[1]); print('joined')",
         cluster.address], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "joined" not in proc.stdout
    assert len(cluster.node_ids) == 2


def test_svm_trials_run_on_both_nodes_and_land_in_shared_storage(cluster, s3_server, tmp_path):
    bucket = s3_server.create_bucket("multinode")
    space = tiny_svm_space(tmp_path / "space.py", grid=(0.01, 0.03, 0.1, 1.0, 10.0, 100.0))
    uri = f"s3://{bucket}/runs"
    monitor = [pid for pid in pids_mentioning(cluster.temp_dir)
               if pid in pids_mentioning("autoscaler/_private/monitor.py")]
    assert len(monitor) == 1  # the head's autoscaler monitor
    proc = run_module("pipelines.svm", "--address", cluster.address, "--space", space,
                      "--dataset", "iris", "--storage", uri, "--name", "mn", env=cluster.env,
                      cwd=str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"on {cluster.address}" in proc.stderr
    # A run that joined a cluster leaves its processes alone: only a local Ray the run started
    # has its monitor stopped at the end (runner.stop_autoscaler_monitor).
    assert monitor[0] in pids_mentioning("autoscaler/_private/monitor.py")

    trials = s3_server.read_parquet(bucket, "runs/mn/trials.parquet")
    assert len(trials) == 6 and (trials["status"] == "finished").all()
    # Two one-CPU nodes and two trials at a time: both nodes must have run trials, and no
    # trial ran anywhere but on this cluster's nodes.
    assert set(trials["node_id"]) == set(cluster.node_ids), (trials["node_id"], cluster.node_ids)
    keys = s3_server.keys(bucket, "runs/mn/")
    assert "runs/mn/tuner.pkl" in keys and "runs/mn/epochs.parquet" in keys
    assert not (tmp_path / "results").exists()


def test_finetune_checkpoints_from_both_nodes_land_in_shared_storage(cluster, s3_server, tmp_path):
    bucket = s3_server.create_bucket("multinode-ft")
    uri = f"s3://{bucket}/ft"
    proc = run_module("pipelines.finetune", "--address", cluster.address, "--storage", uri,
                      "--name", "ft", "--algo", "random", "--num-samples", "2", "--epochs", "1",
                      "--no-baseline", env=cluster.env, cwd=str(tmp_path), timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    trials = s3_server.read_parquet(bucket, "ft/ft/trials.parquet")
    assert len(trials) == 2 and (trials["status"] == "finished").all()
    # Fine-tuning trials do not report node_id (yet); they ran on both nodes all the same: each
    # holds one CPU-trial at a time, and the two trials' lifetimes overlap.
    first, second = trials.sort_values("start_time").to_dict("records")
    assert second["start_time"] < first["end_time"], trials[["start_time", "end_time"]]
    keys = s3_server.keys(bucket, "ft/ft/")
    # Each trial's checkpoint was uploaded from its own node into the experiment's prefix.
    for trial_id in trials["trial_id"]:
        assert any(k.startswith(f"ft/ft/{trial_id}/checkpoint_") for k in keys), (trial_id, keys)
    # The checkpoint column names the object-store URI, which the driver opened to score the
    # best trial (best_model.pt below).
    assert trials["checkpoint"].str.startswith(f"s3://{bucket}/ft/ft/").all(), trials["checkpoint"]
    assert "ft/ft/best_model.pt" in keys


def test_losing_a_worker_node_mid_trial_retries_its_trial_and_loses_nothing(tmp_path):
    # A cluster of its own: this test kills a node. Storage on this machine's disk is shared by
    # both "nodes" here, as an object store or NFS would be on a real cluster.
    lossy = LocalRayCluster(dict(os.environ, PYTHONPATH=REPO), workers=1, cpus_per_node=1)
    try:
        # Trials long enough to be mid-run when the node goes: no patience stop, 40 epochs.
        (tmp_path / "space.py").write_text(
            "from search_spaces.space import Fixed, LogFloat, Space\n"
            "SPACE = Space(lr=LogFloat(1e-3, 1e-2), patience=Fixed(0), batch_size=Fixed(32))\n")
        args = ["--address", lossy.address, "--output", str(tmp_path / "results"), "--name", "nl",
                "--space", "space.py", "--algo", "random", "--num-samples", "2", "--epochs", "40",
                "--seed", "3", "--max-concurrent", "2", "--max-failures", "2", "--no-baseline"]
        env = dict(lossy.env, PYTHONPATH=REPO)
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.finetune", *args], cwd=str(tmp_path),
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        journal = tmp_path / "results" / "nl" / "journal.jsonl"
        head_id = None
        deadline = time.time() + 400
        victim = None
        while time.time() < deadline and proc.poll() is None and victim is None:
            events = []
            if journal.exists():
                for line in journal.read_bytes().split(b"\n")[:-1]:
                    events.append(json.loads(line))
            nodes = {e["trial_id"]: e["metrics"].get("node_id") for e in events
                     if e["event"] == "report" and e["metrics"].get("node_id")}
            if len(set(nodes.values())) == 2:
                # Both trials have reported an epoch, one on each node: lose the worker's.
                head_id = _head_node_id(lossy)
                victim = next(t for t, n in nodes.items() if n != head_id)
            time.sleep(0.2)
        assert victim is not None, "both trials never ran at once on the two nodes"
        lossy.kill_node(1)
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, out + err
        assert "Traceback" not in out
        trials = pd.read_parquet(tmp_path / "results" / "nl" / "trials.parquet")
        epochs = pd.read_parquet(tmp_path / "results" / "nl" / "epochs.parquet")
        assert sorted(trials["trial_index"]) == [0, 1] and trials["trial_id"].is_unique
        assert not epochs.duplicated(["trial_id", "iteration"]).any()
        for _, row in trials.iterrows():
            its = epochs.loc[epochs["trial_id"] == row["trial_id"], "iteration"].tolist()
            assert its == list(range(1, row["iterations"] + 1))
        lost = trials.set_index("trial_id").loc[victim]
        assert lost["status"] == "finished" and lost["iterations"] == 40, lost
        # The lost trial was retried (a second start in the journal), picked up after its last
        # checkpoint rather than from scratch, and ended on the head.
        events = [json.loads(line) for line in journal.read_bytes().split(b"\n")[:-1]]
        mine = [e for e in events if e["trial_id"] == victim]
        starts = [i for i, e in enumerate(mine) if e["event"] == "start"]
        assert len(starts) >= 2, [(e["event"], e.get("iteration")) for e in mine]
        after = [e for e in mine[starts[-1]:] if e["event"] == "report"]
        assert after and after[0]["iteration"] > 1
        assert lost["node_id"] == head_id
    finally:
        lossy.shutdown()


def _head_node_id(cluster: LocalRayCluster) -> str:
    probe = subprocess.run(
        [sys.executable, "-c",
         "import json, ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR');"
         "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive'] and "
         "n['NodeManagerPort'] == int(sys.argv[2])]))",
         cluster.address, cluster.node_manager_ports[0]],
        env=cluster.env, capture_output=True, text=True, timeout=120)
    return json.loads(probe.stdout.strip().splitlines()[-1])[0]

"""The local Ray a pipeline starts: no idle workers Tune never uses, and a shutdown without the
autoscaler monitor's one-second wait, with nothing left behind.

Both rely on Ray internals, which these tests pin so that a Ray upgrade that moves them fails
here: the raylet's ``prestart_worker_first_driver`` setting (read from
``RAY_prestart_worker_first_driver``), and ``ray._private.worker._global_node``,
``Node.all_processes`` and ``Node.kill_monitor``. That a Ray joined with --address keeps its
monitor is checked in tests/test_multinode.py.
"""

from __future__ import annotations

import argparse
import os
import time

import pytest
import ray
from ray._private import ray_constants

from pipelines import svm
from pipelines.runner import PRESTART_ENV, start_ray, stop_autoscaler_monitor

pytestmark = pytest.mark.ray


def _started_workers() -> int:
    """Worker processes the raylet of this process's Ray has started, by its log."""
    logs = ray._private.worker._global_node.get_logs_dir_path()
    with open(os.path.join(logs, "raylet.out"), errors="replace") as f:
        return f.read().count("Started worker process")


def test_a_local_ray_starts_workers_only_as_tune_actors_need_them():
    exported = os.environ.pop(PRESTART_ENV, None)
    try:
        start_ray(argparse.Namespace(address=None, num_cpus=2, verbose=False), svm.TASK)
        try:
            assert os.environ[PRESTART_ENV] == "0"
            time.sleep(3)  # the raylet prestarts right after the driver connects
            assert _started_workers() == 0
            # An actor with a runtime_env, as Tune makes every trial actor, gets a worker of
            # its own: the log check sees it (so the 0 above is not a log that moved).
            actor = ray.remote(num_cpus=1, runtime_env={"env_vars": {"PL_DISABLE_FORK": "1"}})(
                type("Probe", (), {"pid": lambda self: os.getpid()}))
            pid = ray.get(actor.remote().pid.remote(), timeout=120)
            assert pid != os.getpid() and _started_workers() == 1
        finally:
            ray.shutdown()
    finally:
        os.environ.pop(PRESTART_ENV, None)
        if exported is not None:
            os.environ[PRESTART_ENV] = exported


def test_a_local_rays_monitor_stops_at_once_and_shutdown_leaves_no_process():
    assert stop_autoscaler_monitor() is False  # no Ray in this process: nothing to do
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    try:
        node = ray._private.worker._global_node
        processes = [info.process for infos in node.all_processes.values() for info in infos]
        monitor = node.all_processes[ray_constants.PROCESS_TYPE_MONITOR][0].process
        assert monitor.poll() is None
        assert stop_autoscaler_monitor() is True
        # Killed and reaped (no zombie), while the rest of Ray still serves this driver.
        assert monitor.poll() is not None
        assert ray_constants.PROCESS_TYPE_MONITOR not in node.all_processes
        assert ray.get(ray.remote(lambda: 41 + 1).remote(), timeout=120) == 42
        assert stop_autoscaler_monitor() is False  # already stopped
    finally:
        ray.shutdown()
    assert [p.pid for p in processes if p.poll() is None] == []

"""Stopping a local Ray without the autoscaler monitor's one-second wait, and nothing left behind.

``pipelines.runner.stop_autoscaler_monitor`` kills the monitor of a Ray this process started
before ``ray.shutdown()`` stops the rest (the monitor otherwise holds every shutdown for a
second). It relies on Ray internals (``ray._private.worker._global_node``, ``Node.all_processes``
and ``Node.kill_monitor``): this test fails if a Ray upgrade moves them. That a Ray joined with
--address keeps its monitor is checked in tests/test_multinode.py.
"""

from __future__ import annotations

import pytest
import ray
from ray._private import ray_constants

from pipelines.runner import stop_autoscaler_monitor

pytestmark = pytest.mark.ray


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

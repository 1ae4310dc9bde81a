"""The local Ray a pipeline starts: no idle workers Tune never uses, no one-second retry when
the raylet reaches its object store first, no one-second poll for the raylet's registration,
the dashboard started beside the raylet, Ray's check for the dashboard's packages answered
without importing them, no log or autoscaler monitor nobody reads, and a shutdown without the
autoscaler monitor's one-second wait, with nothing left behind.

These rely on Ray internals, which these tests pin so that a Ray upgrade that moves them fails
here: the raylet's ``prestart_worker_first_driver`` setting (read from
``RAY_prestart_worker_first_driver``), the ``raylet_client_connect_timeout_milliseconds`` and
``raylet_client_num_connect_attempts`` settings (read by every Ray process from ``RAY_`` + their
names), ``ray._private.services.get_node`` with the GCS node table's ``NodeID`` and ``Alive``
fields, and ``ray._private.worker._global_node``, ``Node.all_processes``, ``Node.kill_monitor``,
``Node.start_api_server``, ``Node.start_ray_processes``, ``Node.start_log_monitor`` and
``Node.start_monitor``. That a Ray joined with --address keeps its monitor is checked in
tests/test_multinode.py.

Each Ray runs in a child process, as a pipeline's does, which prints what it saw as JSON: the
test process itself starts no Ray (several Ray sessions started and stopped in one process are
not what Ray is built for).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipelines.runner import CONNECT_RETRY, CONNECT_TRIES_ENV, CONNECT_WAIT_ENV, PRESTART_ENV
from tests.helpers import REPO

pytestmark = pytest.mark.ray

_COMMON = """
import argparse, json, os, sys, time
import ray
from ray._private import ray_constants
from pipelines import svm
from pipelines.runner import (DASHBOARD_START, DEPS_CHECK, NODE_WAIT, PRESTART_ENV,
                              SKIPPED_MONITORS, start_ray, stop_autoscaler_monitor)

def started_workers():
    # Worker processes this Ray's raylet has started, by its log.
    logs = ray._private.worker._global_node.get_logs_dir_path()
    with open(os.path.join(logs, "raylet.out"), errors="replace") as f:
        return f.read().count("Started worker process")

class Probe:
    def pid(self):
        print("a line from the trial's worker", flush=True)
        return os.getpid()

    def connect_retry(self):
        # The settings in effect in a worker the raylet started (Ray's own config object).
        from ray._raylet import Config
        return [Config.raylet_client_connect_timeout_milliseconds(),
                Config.raylet_client_num_connect_attempts()]
"""

_PRESTART = _COMMON + """
import dataclasses
verbose = os.environ.get("PROBE_VERBOSE") == "1"
task = svm.TASK
if os.environ.get("PROBE_DASHBOARD") == "1":  # a task that runs Ray Train, as fine-tuning's DDP
    task = dataclasses.replace(task, needs_dashboard=lambda args: True)
start_ray(argparse.Namespace(address=None, num_cpus=2, verbose=verbose), task)
seen = {"env": os.environ.get(PRESTART_ENV), "node_wait": dict(NODE_WAIT)}
seen["skipped_monitors"] = list(SKIPPED_MONITORS)
seen["monitors_running"] = sorted(
    kind for kind in (ray_constants.PROCESS_TYPE_MONITOR, ray_constants.PROCESS_TYPE_LOG_MONITOR)
    if kind in ray._private.worker._global_node.all_processes)
from ray._private import services
seen["get_node_restored"] = services.get_node.__module__ == "ray._private.services"
from ray._private.node import Node
seen["dashboard_start"] = dict(DASHBOARD_START)
seen["node_restored"] = [getattr(Node, name).__qualname__ for name in (
    "start_api_server", "start_ray_processes", "start_log_monitor", "start_monitor")]
dashboard = ray._private.worker._global_node.all_processes.get(
    ray_constants.PROCESS_TYPE_DASHBOARD, [])
seen["dashboard_alive"] = [info.process.poll() is None for info in dashboard]
seen["dashboard_address"] = ray.experimental.internal_kv._internal_kv_get(
    ray_constants.DASHBOARD_ADDRESS, namespace=ray_constants.KV_NAMESPACE_DASHBOARD) is not None
# Ray's check for the dashboard's packages was answered without importing them here, and the
# agent the raylet started (the process Ray told whether the install is minimal) is up.
import ray._private.utils
seen["deps_check"] = dict(DEPS_CHECK)
seen["deps_imported"] = "ray.dashboard.optional_deps" in sys.modules
seen["deps_check_restored"] = ray._private.utils.get_dashboard_dependency_error.__module__
time.sleep(3)  # the raylet prestarts right after the driver connects
seen["workers_before"] = started_workers()
# An actor with a runtime_env, as Tune makes every trial actor, gets a worker of its own.
actor = ray.remote(num_cpus=1, runtime_env={"env_vars": {"PL_DISABLE_FORK": "1"}})(Probe)
probe = actor.remote()
seen["actor_pid"] = ray.get(probe.pid.remote(), timeout=120)
seen["connect_retry"] = ray.get(probe.connect_retry.remote(), timeout=120)
seen["workers_after"] = started_workers()
seen["driver_pid"] = os.getpid()
time.sleep(1)  # the log monitor, where it runs, publishes new lines about every 0.1 s

def agent_log():
    with open(os.path.join(ray._private.worker._global_node.get_logs_dir_path(),
                           "dashboard_agent.log"), errors="replace") as f:
        return f.read()

# The raylet's dashboard agent started in full mode (its HTTP server runs only without
# --minimal), as Ray's own check of the packages tells it to here...
seen["agent_http"] = "Dashboard agent http address" in agent_log()
# ...and found the dashboard's address: its event module asks every second until it does,
# logging an error each time (once, perhaps, before the dashboard beside the raylet has
# written it; forever without a dashboard process). No new one 2.5 s later.
failed = "Get dashboard http address failed"
before = agent_log().count(failed)
time.sleep(2.5)
seen["agent_lost_dashboard"] = agent_log().count(failed) - before
ray.shutdown()
print(json.dumps(seen))
"""

_USAGE_RACE = _COMMON + """
import threading
from ray._common.usage import usage_lib
from pipelines.runner import USAGE_HOOK
# Usage records made before ray.init, as the pipeline's imports beside it make them; enough
# that ray.init's hook copying them to the GCS takes a while.
with usage_lib._recorded_extra_usage_tags_lock:
    for i in range(3000):
        usage_lib._recorded_extra_usage_tags[f"probe_{i}"] = "1"
stop = threading.Event()
def record():  # a thread that keeps recording new tags the way Ray's record_extra_usage_tag does
    i = 0
    while not stop.is_set():
        with usage_lib._recorded_extra_usage_tags_lock:
            usage_lib._recorded_extra_usage_tags[f"late_{i}"] = "1"
        i += 1
        time.sleep(0.0005)
recorder = threading.Thread(target=record, daemon=True)
recorder.start()
start_ray(argparse.Namespace(address=None, num_cpus=1, verbose=False), svm.TASK)
stop.set()
seen = {"hook_locked": USAGE_HOOK.get("locked"),
        "hook_restored": all(h.__name__ != "locked_hook"
                             for h in ray._private.worker._post_init_hooks),
        "ray_answers": ray.get(ray.remote(lambda: 41 + 1).remote(), timeout=120)}
ray.shutdown()
print(json.dumps(seen))
"""

_MONITOR = _COMMON + """
seen = {"stopped_without_ray": stop_autoscaler_monitor()}
ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR",
         log_to_driver=False)
node = ray._private.worker._global_node
processes = [info.process for infos in node.all_processes.values() for info in infos]
monitor = node.all_processes[ray_constants.PROCESS_TYPE_MONITOR][0].process
seen["monitor_alive_before"] = monitor.poll() is None
seen["stopped"] = stop_autoscaler_monitor()
seen["monitor_reaped"] = monitor.poll() is not None
seen["monitor_listed"] = ray_constants.PROCESS_TYPE_MONITOR in node.all_processes
seen["ray_answers"] = ray.get(ray.remote(lambda: 41 + 1).remote(), timeout=120)
seen["stopped_again"] = stop_autoscaler_monitor()
ray.shutdown()
seen["left_running"] = [p.pid for p in processes if p.poll() is None]
print(json.dumps(seen))
"""


def _run(script: str, **env: str) -> dict:
    child_env = {k: v for k, v in os.environ.items()
                 if k not in (PRESTART_ENV, CONNECT_WAIT_ENV, CONNECT_TRIES_ENV, "RAY_ADDRESS")}
    child_env["PYTHONPATH"] = REPO + os.pathsep + child_env.get("PYTHONPATH", "")
    child_env["RAY_USAGE_STATS_ENABLED"] = "0"  # as the pipeline sets it (quiet_ray)
    child_env.update(env)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=child_env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    seen["output"] = proc.stdout + proc.stderr
    return seen


def test_a_local_ray_starts_workers_only_as_tune_actors_need_them():
    seen = _run(_PRESTART)
    assert seen["env"] == "0"
    assert seen["workers_before"] == 0
    # The actor's worker shows in the same log, so the 0 above is not a log that moved.
    assert seen["actor_pid"] != seen["driver_pid"] and seen["workers_after"] == 1
    # ray.init still asks for the new node through the function prompt_node_wait wraps, the
    # poll saw the node in the GCS's table (so the table still has the fields it reads), and
    # Ray's own function is back in place afterwards.
    assert seen["node_wait"]["seen"] is True and seen["node_wait"]["polls"] >= 1
    assert seen["get_node_restored"]
    # The dashboard started on its own thread beside the raylet, had started (its process up,
    # its address in the GCS) by the time ray.init returned, and Ray's methods are back.
    assert seen["dashboard_start"] == {"threaded": True}
    assert seen["dashboard_alive"] == [True] and seen["dashboard_address"]
    assert seen["node_restored"] == ["Node.start_api_server", "Node.start_ray_processes",
                                     "Node.start_log_monitor", "Node.start_monitor"]
    # Without --verbose neither monitor starts (Ray still runs the actor above), and the
    # worker's print stays in its log file.
    assert seen["skipped_monitors"] == ["monitor", "log_monitor"]
    assert seen["monitors_running"] == []
    assert "a line from the trial's worker" not in seen["output"]
    # Ray's check for the dashboard's packages was replaced and is back, nothing imported them
    # in the driver, and the raylet's dashboard agent was told (as Ray's own check would, test
    # below) that this is not a minimal install.
    assert seen["deps_check"] == {"replaced": True}
    assert seen["deps_imported"] is False
    assert seen["deps_check_restored"] == "ray._private.utils"
    assert seen["agent_http"] is True and seen["agent_lost_dashboard"] == 0


def test_a_task_that_runs_ray_train_keeps_the_autoscaler_monitor():
    seen = _run(_PRESTART, PROBE_DASHBOARD="1")
    # The full dashboard, started beside the raylet as for every task, and the autoscaler
    # monitor with it (Ray Train's scaling code has an autoscaler client).
    assert seen["dashboard_start"] == {"threaded": True}
    assert seen["dashboard_alive"] == [True] and seen["dashboard_address"]
    assert seen["skipped_monitors"] == ["log_monitor"]
    assert seen["monitors_running"] == ["monitor"]
    assert seen["node_restored"] == ["Node.start_api_server", "Node.start_ray_processes",
                                     "Node.start_log_monitor", "Node.start_monitor"]
    assert seen["actor_pid"] != seen["driver_pid"]


def test_the_dashboard_package_check_agrees_with_rays_own():
    """The check answered by finding packages gives Ray's answer here (every package of
    ``ray[default]`` installed, from the lock), and names a package that is missing."""
    import ray._private.utils

    from pipelines import runner

    assert ray._private.utils.get_dashboard_dependency_error() is None
    assert runner.dashboard_dependency_error() is None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "DASHBOARD_DEPENDENCIES",
                      runner.DASHBOARD_DEPENDENCIES + ("no_such_package_here.sub",))
        error = runner.dashboard_dependency_error()
    assert isinstance(error, ImportError) and "no_such_package_here" in str(error)


def test_with_verbose_the_log_monitor_brings_workers_lines_to_the_driver():
    seen = _run(_PRESTART, PROBE_VERBOSE="1")
    assert seen["skipped_monitors"] == ["monitor"]
    assert seen["monitors_running"] == ["log_monitor"]
    assert "a line from the trial's worker" in seen["output"]
    # Ray reads the retry settings: a worker of this Ray retries every 20 ms, 500 times.
    assert seen["connect_retry"] == [int(CONNECT_RETRY[CONNECT_WAIT_ENV]),
                                     int(CONNECT_RETRY[CONNECT_TRIES_ENV])] == [20, 500]


def test_exported_prestart_and_connect_settings_win():
    seen = _run(_PRESTART, **{PRESTART_ENV: "1", CONNECT_TRIES_ENV: "30"})
    assert seen["env"] == "1"
    assert seen["workers_before"] == 2  # one per CPU: Ray still reads the variable
    # The user's tries with Ray's own wait: one exported setting leaves both to the user.
    assert seen["connect_retry"] == [1000, 30]


def test_a_local_rays_monitor_stops_at_once_and_shutdown_leaves_no_process():
    seen = _run(_MONITOR)
    assert seen["stopped_without_ray"] is False  # no Ray yet: nothing to do
    assert seen["monitor_alive_before"] and seen["stopped"] is True
    # Killed and reaped (no zombie), while the rest of Ray still serves the driver.
    assert seen["monitor_reaped"] and not seen["monitor_listed"]
    assert seen["ray_answers"] == 42
    assert seen["stopped_again"] is False  # already stopped
    assert seen["left_running"] == []


def test_usage_records_made_beside_ray_init_do_not_break_it():
    """The pipeline imports Ray Tune beside ray.init; records those imports make while ray.init's
    hook copies the earlier ones must wait for it, not fail ray.init (Ray iterates over them
    without their lock: "dictionary changed size during iteration")."""
    seen = _run(_USAGE_RACE)
    assert seen["hook_locked"] is True and seen["hook_restored"]
    assert seen["ray_answers"] == 42

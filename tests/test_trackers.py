"""--mlflow and --tensorboard: real runs read back with the trackers' own readers, the
missing-package and bad-store errors (one line, exit 2, before Ray, nothing written), and what
--resume does with them."""

from __future__ import annotations

import argparse
import glob
import math
import os
import struct

import pandas as pd
import pytest

from pipelines import trackers
from pipelines.runner import adopt_experiment_settings
from tests.helpers import REPO, run_module, tiny_svm_space

NAME = "trk"
INSTALL = "pip install -c requirements.lock -e '.[trackers]'"


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """One SVM run with both trackers: 3 linear configs under ASHA, so trials report up to 4
    fidelity rungs each (a per-report history).

    Returns ``(experiment folder, MLflow tracking URI, finished process)``.
    """
    root = tmp_path_factory.mktemp("trackers")
    space = tiny_svm_space(root / "space.py")
    uri = f"sqlite:///{root}/mlflow.db"
    proc = run_module("pipelines.svm", "--space", space, "--scheduler", "asha",
                      "--output", str(root / "out"), "--name", NAME, "--num-cpus", "2",
                      "--no-report", "--mlflow", uri, "--tensorboard")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root / "out" / NAME, uri, proc


def _same(logged: str, value) -> bool:
    """An MLflow param (always a string) against the typed trials.parquet value."""
    if isinstance(value, float):
        return math.isclose(float(logged), value)
    return logged == str(value)


@pytest.mark.ray
def test_mlflow_has_one_run_per_trial_with_its_params_history_and_status(tracked_run):
    from mlflow.tracking import MlflowClient

    exp, uri, proc = tracked_run
    trials = pd.read_parquet(exp / "trials.parquet")
    epochs = pd.read_parquet(exp / "epochs.parquet")
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(NAME)  # the pipeline's experiment name
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == len(trials) == 3
    for row in trials.to_dict("records"):
        [run] = [r for r in runs if r.info.run_name.endswith(row["trial_id"])]
        active = {k[len("param_"):]: v for k, v in row.items()
                  if k.startswith("param_") and v is not None and not pd.isna(v)}
        assert set(run.data.params) == set(active), (run.data.params, active)
        assert all(_same(run.data.params[k], v) for k, v in active.items())
        # ASHA's cut is not a failure: Tune ends the trial normally.
        assert run.info.status == "FINISHED"
        assert run.data.tags["task"] == "svm" and run.data.tags["results"] == str(exp)
        history = sorted((m.step, m.value) for m in
                         client.get_metric_history(run.info.run_id, "cv_accuracy"))
        mine = epochs[epochs["trial_id"] == row["trial_id"]].sort_values("iteration")
        assert [s for s, _ in history] == mine["iteration"].tolist()
        assert [v for _, v in history] == pytest.approx(mine["cv_accuracy"].tolist())
    assert epochs.groupby("trial_id").size().max() == 4  # a history, not a single value
    assert f"mlflow       experiment '{NAME}' at {uri}" in proc.stdout


def _scalars(path: str) -> list[tuple[str, int, float]]:
    """(tag, step, value) of every scalar in a TensorBoard event file, read with tensorboardX's
    own protobuf classes. The file is TFRecord: per record a little-endian uint64 length, its
    CRC, the serialized Event, the Event's CRC."""
    from tensorboardX.proto import event_pb2

    found = []
    with open(path, "rb") as f:
        data = f.read()
    at = 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at:at + 8])
        event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
        at += 12 + length + 4
        for value in event.summary.value:
            if value.HasField("simple_value"):
                found.append((value.tag, event.step, value.simple_value))
    return found


@pytest.mark.ray
def test_tensorboard_event_files_hold_each_trials_metric_per_report(tracked_run):
    exp, _, proc = tracked_run
    trials = pd.read_parquet(exp / "trials.parquet")
    epochs = pd.read_parquet(exp / "epochs.parquet")
    for trial_id in trials["trial_id"]:
        files = glob.glob(str(exp / trial_id / "events.out.tfevents.*"))
        assert len(files) == 1, sorted(os.listdir(exp))
        logged = sorted((step, value) for tag, step, value in _scalars(files[0])
                        if tag == "ray/tune/cv_accuracy")
        mine = epochs[epochs["trial_id"] == trial_id].sort_values("iteration")
        assert [s for s, _ in logged] == mine["iteration"].tolist()
        # TensorBoard stores scalars as float32.
        assert [v for _, v in logged] == pytest.approx(mine["cv_accuracy"].tolist(), rel=1e-6)
    assert f"tensorboard --logdir {exp}" in proc.stdout


# A meta path finder that makes the named top-level packages unimportable, as in an environment
# installed without the trackers extra.
_BLOCKER = """\
import os
import sys

_BLOCKED = set(os.environ.get("TEST_BLOCK_IMPORTS", "").split(","))


class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _Block())
"""


def _one_error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and proc.stdout == "", proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Ray" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize("flag, package", [("--mlflow", "mlflow"),
                                           ("--tensorboard", "tensorboardX")])
def test_missing_package_is_one_line_exit_2_before_ray(tmp_path, flag, package):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(_BLOCKER)
    db = tmp_path / "mlflow.db"
    extra = ["--mlflow", f"sqlite:///{db}"] if flag == "--mlflow" else [flag]
    out = tmp_path / "out"
    proc = run_module("pipelines.svm", "--output", str(out), *extra, timeout=120,
                      env={"PYTHONPATH": f"{hide}{os.pathsep}{REPO}",
                           "TEST_BLOCK_IMPORTS": package})
    assert _one_error_line(proc) == f"error: {flag} needs {package}: {INSTALL}"
    assert not out.exists() and not db.exists()  # nothing written


def test_a_store_mlflow_refuses_is_one_line_exit_2_before_ray(tmp_path):
    out, store = tmp_path / "out", tmp_path / "mlruns"
    proc = run_module("pipelines.svm", "--output", str(out), "--mlflow", str(store), timeout=120,
                      env={"MLFLOW_ALLOW_FILE_STORE": "false"})
    line = _one_error_line(proc)
    assert line.startswith(f"error: --mlflow {store}: ") and "MLFLOW_ALLOW_FILE_STORE=true" in line
    assert not out.exists() and not store.exists()


def test_resume_takes_the_trackers_from_its_own_command_line():
    """A tracker is a view of the run that writes to it: a resume turns it on or off as its own
    command line says, never from the stored experiment, and never as a contradiction."""
    stored = {"task": "svm", "flags": {"algo": "grid", "tensorboard": True,
                                       "mlflow": "sqlite:///a.db"}}
    task = argparse.Namespace(name="svm")
    off = argparse.Namespace(algo="grid", tensorboard=False, mlflow=None, name="x",
                             _given={"resume", "name"})
    adopt_experiment_settings(task, off, stored)
    assert off.tensorboard is False and off.mlflow is None
    other = argparse.Namespace(algo="grid", tensorboard=False, mlflow="sqlite:///b.db", name="x",
                               _given={"resume", "name", "mlflow"})
    adopt_experiment_settings(task, other, stored)
    assert other.mlflow == "sqlite:///b.db" and other.tensorboard is False


def test_no_tracker_asked_for_adds_nothing():
    args = argparse.Namespace(tensorboard=False, mlflow=None, verbose=False, name="x")
    trackers.check(args)
    assert trackers.callbacks(args, "svm", "/r/x") == []
    assert trackers.summary_lines(args, "/r/x") == []


@pytest.mark.ray
def test_resume_with_tensorboard_points_at_event_files_only_where_some_exist(tracked_run, tmp_path):
    # A finished experiment resumed with --tensorboard runs no trial: where it ran with
    # --tensorboard the event files are there to point at; where it ran without, there are none.
    exp, _, _ = tracked_run
    again = run_module("pipelines.svm", "--resume", "--output", str(exp.parent), "--name", NAME,
                       "--tensorboard", "--no-report")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"tensorboard --logdir {exp}" in again.stdout
    space = tiny_svm_space(tmp_path / "space.py")
    plain = run_module("pipelines.svm", "--space", space, "--output", str(tmp_path / "out"),
                       "--name", "plain", "--num-cpus", "2", "--no-report")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    later = run_module("pipelines.svm", "--resume", "--output", str(tmp_path / "out"),
                       "--name", "plain", "--tensorboard", "--no-report")
    assert later.returncode == 0, later.stdout + later.stderr
    assert "--logdir" not in later.stdout
    assert "tensorboard  no event files" in later.stdout


@pytest.mark.ray
def test_a_trial_resume_continues_is_one_mlflow_run_and_one_event_folder_under_its_id(tmp_path):
    # The driver is SIGKILLed mid-trial; --resume continues that trial from its checkpoint under
    # a new Tune id. The trackers must show the journal's trials: one FINISHED run and one event
    # folder per trials.parquet row, each with every epoch once, stepped by epoch.
    from mlflow.tracking import MlflowClient

    from tests.test_reliability import _events, _sigkill_driver, _start, _wait

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["--algo", "random", "--num-samples", "2", "--epochs", "4", "--seed", "1",
            "--max-concurrent", "1", "--no-baseline", "--num-cpus", "2", "--no-report",
            "--name", "ft", "--mlflow", uri, "--tensorboard"]
    journal = tmp_path / "results" / "ft" / "journal.jsonl"

    def second_trial_mid_way() -> bool:
        events = _events(journal)
        started = [e["trial_id"] for e in events if e["event"] == "start"]
        return len(started) == 2 and sum(e["event"] == "checkpoint" and
                                         e["trial_id"] == started[1] for e in events) >= 2

    proc = _start("pipelines.finetune", args, tmp_path)
    _wait(second_trial_mid_way, proc, timeout=400)
    _sigkill_driver(proc)
    resumed = run_module("pipelines.finetune", "--resume", "--name", "ft", "--mlflow", uri,
                         "--tensorboard", "--no-report", cwd=str(tmp_path))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    exp = tmp_path / "results" / "ft"
    trials = pd.read_parquet(exp / "trials.parquet")
    epochs = pd.read_parquet(exp / "epochs.parquet")
    assert len(trials) == 2 and sorted(epochs.groupby("trial_id").size()) == [4, 4]
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("ft").experiment_id])
    assert sorted(r.info.run_name.rsplit("_", 1)[1] for r in runs) == sorted(trials["trial_id"])
    for run in runs:
        trial_id = run.info.run_name.rsplit("_", 1)[1]
        assert run.info.status == "FINISHED", run.info
        history = sorted((m.step, m.value) for m in
                         client.get_metric_history(run.info.run_id, "val_accuracy"))
        mine = epochs[epochs["trial_id"] == trial_id].sort_values("iteration")
        assert [s for s, _ in history] == [1, 2, 3, 4]
        assert [v for _, v in history] == pytest.approx(mine["val_accuracy"].tolist())
    folders = {os.path.basename(os.path.dirname(f))
               for f in glob.glob(str(exp / "*" / "events.out.tfevents.*"))}
    assert folders == set(trials["trial_id"])
    for trial_id in trials["trial_id"]:
        steps = sorted(step for f in glob.glob(str(exp / trial_id / "events.out.tfevents.*"))
                       for tag, step, _ in _scalars(f) if tag == "ray/tune/val_accuracy")
        assert steps == [1, 2, 3, 4], (trial_id, steps)


@pytest.mark.ray
def test_event_files_of_a_run_killed_with_sigkill_are_kept(tmp_path):
    # On a local disk events are written in the experiment's folder as they come: a hard kill
    # keeps the ended trials' events, and --resume adds the rest (a re-run trial's from 1 again).
    from tests.test_reliability import _events, _sigkill_driver, _start, _wait

    args = ["--algo", "random", "--num-samples", "12", "--seed", "2", "--configs-per-trial", "1",
            "--num-cpus", "2", "--no-report", "--name", "tb", "--tensorboard",
            "--scheduler", "asha"]
    exp = tmp_path / "results" / "tb"
    proc = _start("pipelines.svm", args, tmp_path)
    _wait(lambda: sum(e["event"] == "end" for e in _events(exp / "journal.jsonl")) >= 5, proc)
    _sigkill_driver(proc)
    ended = {e["trial_id"] for e in _events(exp / "journal.jsonl") if e["event"] == "end"}
    assert ended <= {os.path.basename(os.path.dirname(f))
                     for f in glob.glob(str(exp / "*" / "events.out.tfevents.*"))}
    resumed = run_module("pipelines.svm", "--resume", "--name", "tb", "--tensorboard",
                         "--no-report", cwd=str(tmp_path))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    epochs = pd.read_parquet(exp / "epochs.parquet")
    for trial_id, mine in epochs.groupby("trial_id"):
        files = glob.glob(str(exp / trial_id / "events.out.tfevents.*"))
        steps = sorted(step for f in files for tag, step, _ in _scalars(f)
                       if tag == "ray/tune/cv_accuracy")
        assert steps == sorted(mine["iteration"]), (trial_id, steps)



def test_tensorboard_keeps_a_trials_events_when_tune_retries_it(tmp_path):
    # --max-failures: Tune starts the same trial again from its checkpoint; its earlier
    # epochs' events stay (only a trial --resume starts over loses them, being re-logged).
    from pipelines.trackers import _tensorboard_class

    class Trial:  # the attributes Ray's TBXLoggerCallback reads from a Tune trial
        trial_id, config, evaluated_params = "abc", {"lr": 0.1}, {"lr": 0.1}
        local_path = str(tmp_path / "staging" / "abc")

        def init_local_path(self):
            os.makedirs(self.local_path, exist_ok=True)

    trial = Trial()
    events = _tensorboard_class()(lambda t: t.trial_id, "epoch", str(tmp_path / "exp"))
    events.log_trial_start(trial)
    for epoch in (1, 2):
        events.log_trial_result(epoch, trial, {"epoch": epoch, "training_iteration": epoch,
                                               "val_accuracy": 0.5 + epoch / 10})
    events.log_trial_start(trial)  # the retry
    events.log_trial_result(1, trial, {"epoch": 3, "training_iteration": 1, "val_accuracy": 0.9})
    events.log_trial_end(trial)
    files = glob.glob(str(tmp_path / "exp" / "abc" / "events.out.tfevents.*"))
    steps = sorted(step for f in files for tag, step, _ in _scalars(f)
                   if tag == "ray/tune/val_accuracy")
    assert steps == [1, 2, 3]

"""Faults a user meets, with real processes and real signals: the driver SIGKILLed at several
points and continued with ``--resume --name NAME`` alone, a trial that crashes, a trial that
diverges to NaN, on local disk and on an S3 server. Every trial once, every epoch row once, and
for a deterministic search the same best as an unbroken run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.helpers import REPO, run_module

pytestmark = pytest.mark.ray

# A grid of 6 SVMs with ASHA's 4 fidelity rungs (several reports per trial), one trial at a
# time so that the unbroken run and the resumed one see the same order.
SVM_SPACE = (
    "from search_spaces.space import Categorical, LogFloat, Space\n"
    "SPACE = Space(kernel=Categorical(['linear', 'rbf']),\n"
    "              C=LogFloat(0.01, 100, grid=[0.1, 1.0, 10.0]),\n"
    "              gamma=LogFloat(1e-4, 1, grid=[0.001], when={'kernel': ['rbf']}))\n"
)


def _svm_args(space: str) -> list[str]:
    return ["--space", space, "--scheduler", "asha", "--max-concurrent", "1", "--num-cpus", "2"]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


def _start(module: str, args: list[str], cwd, **env: str) -> subprocess.Popen:
    # Its own session: the driver's Ray processes can be cleaned up after the driver is killed.
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=str(cwd), env=_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _sigkill_driver(proc: subprocess.Popen) -> None:
    """SIGKILL the driver alone, then clear what it left running (its local Ray)."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(60)
    time.sleep(0.5)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate(timeout=30)


def _events(journal) -> list[dict]:
    if not journal.exists():
        return []
    lines = journal.read_bytes().split(b"\n")[:-1]
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def _wait(predicate, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (rc {proc.returncode}) before the kill point:\n{err[-3000:]}")
        time.sleep(0.1)
    _sigkill_driver(proc)
    pytest.fail("the kill point was never reached")


def _check_complete(folder, n_trials: int) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    trials = pd.read_parquet(folder / "trials.parquet")
    epochs = pd.read_parquet(folder / "epochs.parquet")
    info = json.loads((folder / "experiment.json").read_text())
    # Every trial once, in the searcher's order.
    assert sorted(trials["trial_index"]) == list(range(n_trials)), trials["trial_index"].tolist()
    assert trials["trial_id"].is_unique
    # Every epoch row once: no duplicate, no gap, as many as the trial says it ran.
    assert not epochs.duplicated(["trial_id", "iteration"]).any()
    for _, row in trials.iterrows():
        its = epochs.loc[epochs["trial_id"] == row["trial_id"], "iteration"].tolist()
        assert its == list(range(1, row["iterations"] + 1)), (row["trial_id"], its)
    assert info["status"] == "finished" and info["counts"]["trials"] == n_trials
    return trials, epochs, info


@pytest.fixture(scope="module")
def unbroken_svm(tmp_path_factory):
    work = tmp_path_factory.mktemp("unbroken")
    (work / "space.py").write_text(SVM_SPACE)
    proc = run_module("pipelines.svm", *_svm_args("space.py"), "--name", "base", cwd=str(work))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trials, epochs, info = _check_complete(work / "results" / "base", 6)
    return trials, epochs, info, work


def test_grid_resume_refuses_num_samples_as_a_fresh_grid_does(unbroken_svm):
    # A grid runs each combination once (Ray Tune would repeat it --num-samples times): the
    # flag is refused on a fresh grid, and on --resume of one the same way, not judged as a
    # contradiction of a number the grid never used.
    work = unbroken_svm[3]
    for argv in (["--resume", "--name", "base"], ["--name", "other", "--space", "space.py"]):
        bad = run_module("pipelines.svm", *argv, "--num-samples", "3", cwd=str(work))
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode == 2 and len(lines) == 1, bad.stderr
        assert lines[0] == ("error: --num-samples applies only to --algo random and bayesopt; "
                            "--algo grid runs every combination of the space once")
    assert not (work / "results" / "other").exists()


def _comparable(trials: pd.DataFrame) -> list[tuple]:
    cols = ["trial_index", "param_kernel", "param_C", "status", "cv_accuracy", "iterations"]
    return [tuple(r) for r in trials.sort_values("trial_index")[cols].itertuples(index=False)]


# "cut": right after the report ASHA cut a trial on was journaled, before the trial's end: the
# resumed run used to continue that trial past its rung (and the searcher to learn its later
# score), as if it had never been cut.
@pytest.mark.parametrize("point", ["before_any_trial_ends", "flush", "evaluate", "cut"])
def test_svm_driver_sigkill_then_resume_with_the_name_alone(point, unbroken_svm, tmp_path):
    (tmp_path / "space.py").write_text(SVM_SPACE)
    folder = tmp_path / "results" / "exp"
    journal = folder / "journal.jsonl"
    marker = tmp_path / "paused"
    env = {}
    if point in ("flush", "evaluate", "cut"):
        env = {"TUNE_PIPELINE_PAUSE_AT": point, "TUNE_PIPELINE_PAUSE_FILE": str(marker)}
    proc = _start("pipelines.svm", [*_svm_args("space.py"), "--name", "exp"], tmp_path, **env)
    if point == "before_any_trial_ends":
        _wait(lambda: any(e["event"] == "start" for e in _events(journal)), proc)
    else:
        _wait(marker.exists, proc)
    _sigkill_driver(proc)
    if point == "cut":
        events = _events(journal)
        cut = [e for e in events if e["event"] == "report"][-1]
        assert cut["metrics"]["stopped_by"] == "scheduler"
        assert not any(e["event"] == "end" and e["trial_id"] == cut["trial_id"] for e in events)
    if point == "evaluate":
        # The user edits or moves the space file before resuming: the test score must still
        # belong to the run's own space (the one experiment.json keeps), not to the file.
        (tmp_path / "space.py").unlink()

    resumed = run_module("pipelines.svm", "--resume", "--name", "exp", cwd=str(tmp_path))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Traceback" not in resumed.stderr + resumed.stdout
    trials, epochs, info = _check_complete(folder, 6)
    base_trials, base_epochs, base_info, _ = unbroken_svm
    # The same search as the unbroken run: the same trials, scores, ASHA cuts and best.
    assert _comparable(trials) == _comparable(base_trials)
    assert len(epochs) == len(base_epochs)
    assert info["best"]["config"] == base_info["best"]["config"]
    assert info["best"]["test_accuracy"] == pytest.approx(base_info["best"]["test_accuracy"])
    # The experiment's own settings, not today's defaults, labelled the rows.
    assert set(trials["scheduler"]) == {"asha"} and set(trials["algorithm"]) == {"grid"}
    assert info["resumes"] == 1
    # The command that made the first trials stays; the resume's is in the history.
    assert "--resume" not in info["argv"] and "space.py" in info["argv"]
    assert [h["argv"] for h in info["resume_history"]] == [["--resume", "--name", "exp"]]
    assert info["resume_history"][0]["packages_changed"] == {}


def test_finetune_sigkill_mid_trial_keeps_every_epoch_and_the_same_best(tmp_path):
    args = ["--algo", "random", "--num-samples", "3", "--epochs", "4", "--seed", "1",
            "--max-concurrent", "1", "--no-baseline", "--num-cpus", "2"]
    base = run_module("pipelines.finetune", *args, "--name", "base", cwd=str(tmp_path))
    assert base.returncode == 0, base.stdout + base.stderr
    base_trials, _, base_info = _check_complete(tmp_path / "results" / "base", 3)

    folder = tmp_path / "results" / "exp"
    journal = folder / "journal.jsonl"

    def mid_trial() -> bool:
        # A trial has reported and checkpointed two epochs and has not ended.
        events = _events(journal)
        ended = {e["trial_id"] for e in events if e["event"] == "end"}
        reports: dict[str, int] = {}
        for e in events:
            if e["event"] == "checkpoint" and e["trial_id"] not in ended:
                reports[e["trial_id"]] = reports.get(e["trial_id"], 0) + 1
        return any(n >= 2 for n in reports.values())

    proc = _start("pipelines.finetune", [*args, "--name", "exp"], tmp_path)
    _wait(mid_trial, proc, timeout=400)
    _sigkill_driver(proc)
    running = {e["trial_id"] for e in _events(journal) if e["event"] == "start"} - \
        {e["trial_id"] for e in _events(journal) if e["event"] == "end"}

    ended = {e["trial_id"] for e in _events(journal) if e["event"] == "end"}

    resumed = run_module("pipelines.finetune", "--resume", "--name", "exp", cwd=str(tmp_path))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Traceback" not in resumed.stderr + resumed.stdout
    assert (f"resuming: {len(ended)} ended trials kept, {len(running)} to continue, "
            f"{3 - len(ended) - len(running)} not started yet") in resumed.stderr
    trials, epochs, info = _check_complete(folder, 3)
    # The running trial continued from its checkpoint (its first reports kept, not re-run) ...
    restarted = [e for e in _events(journal) if e["event"] == "start" and e["trial_id"] in running]
    assert len(restarted) == 2 * len(running)
    # ... and the search came out as the unbroken one did.
    cols = ["trial_index", "param_lr", "best_val_accuracy", "best_iteration", "iterations"]
    got = trials.sort_values("trial_index")[cols].reset_index(drop=True)
    want = base_trials.sort_values("trial_index")[cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-6)
    assert info["best"]["config"] == base_info["best"]["config"]
    assert info["best"]["test_accuracy"] == pytest.approx(base_info["best"]["test_accuracy"])
    assert (folder / "best_model.pt").exists()


def test_s3_driver_sigkill_then_resume(s3_server, tmp_path):
    bucket = s3_server.create_bucket("faults")
    uri = f"s3://{bucket}/runs"
    (tmp_path / "space.py").write_text(SVM_SPACE)
    proc = _start("pipelines.svm", [*_svm_args("space.py"), "--storage", uri, "--name", "exp"],
                  tmp_path, **s3_server.env())

    def some_ended() -> bool:
        keys = s3_server.keys(bucket, "runs/exp/journal/")
        return sum(b'"event":"end"' in s3_server.read_bytes(bucket, k) for k in keys) >= 2

    _wait(some_ended, proc)
    _sigkill_driver(proc)
    resumed = run_module("pipelines.svm", "--resume", "--name", "exp", "--storage", uri,
                         cwd=str(tmp_path), env=s3_server.env())
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Traceback" not in resumed.stderr + resumed.stdout
    assert re.search(r"resuming: [2-6] ended trials kept", resumed.stderr), resumed.stderr
    trials = s3_server.read_parquet(bucket, "runs/exp/trials.parquet")
    epochs = s3_server.read_parquet(bucket, "runs/exp/epochs.parquet")
    assert sorted(trials["trial_index"]) == list(range(6))
    assert not epochs.duplicated(["trial_id", "iteration"]).any()
    assert len(epochs) == trials["iterations"].sum()


def test_a_crashing_trial_and_a_diverging_trial_are_error_rows(tmp_path):
    # C = -1 makes scikit-learn raise inside the trial; the experiment goes on.
    (tmp_path / "svm.py").write_text(
        "from search_spaces.space import Categorical, Float, Space\n"
        "SPACE = Space(kernel=Categorical(['linear']), C=Float(-1, 10, grid=[-1.0, 1.0]))\n")
    proc = run_module("pipelines.svm", "--space", "svm.py", "--name", "crash", "--num-cpus", "2",
                      cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trials = pd.read_parquet(tmp_path / "results" / "crash" / "trials.parquet")
    bad = trials.loc[trials["param_C"] == -1.0].iloc[0]
    good = trials.loc[trials["param_C"] == 1.0].iloc[0]
    assert bad["status"] == "error" and "C" in bad["error"] and "\n" not in bad["error"]
    assert good["status"] == "finished" and good["cv_accuracy"] > 0.9
    info = json.loads((tmp_path / "results" / "crash" / "experiment.json").read_text())
    assert info["best"]["config"]["C"] == 1.0 and info["counts"]["errors"] == 1

    # lr = 1e8 sends the loss to NaN in the first epoch: an error row with the reason, never a
    # score; the sane trial is the best.
    (tmp_path / "ft.py").write_text(
        "from search_spaces.space import Fixed, LogFloat, Space\n"
        "SPACE = Space(lr=LogFloat(1e-4, 1e9, grid=[1e8, 3e-3]), clip_norm=Fixed(0.0),\n"
        "              freeze_epochs=Fixed(0), backbone_lr_mult=Fixed(1.0))\n")
    proc = run_module("pipelines.finetune", "--space", "ft.py", "--epochs", "2", "--name", "nan",
                      "--no-baseline", "--max-failures", "0", "--num-cpus", "2", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trials = pd.read_parquet(tmp_path / "results" / "nan" / "trials.parquet")
    diverged = trials.loc[trials["param_lr"] == 1e8].iloc[0]
    assert diverged["status"] == "error" and "nan" in diverged["error"].lower()
    assert pd.isna(diverged["best_val_accuracy"])
    info = json.loads((tmp_path / "results" / "nan" / "experiment.json").read_text())
    assert info["best"]["config"]["lr"] == 3e-3
    # The failure is reported once, in the pipeline's own words; Tune's tracebacks of it are
    # for --verbose.
    assert "Traceback" not in proc.stderr and "Trial task failed" not in proc.stderr
    assert "warning      1 trials failed; first error: FloatingPointError" in proc.stderr


def test_resume_refuses_flags_that_contradict_the_experiment(tmp_path):
    (tmp_path / "space.py").write_text(SVM_SPACE)
    proc = run_module("pipelines.svm", "--space", "space.py", "--algo", "random",
                      "--num-samples", "2", "--seed", "4", "--name", "exp", "--num-cpus", "2",
                      cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for flag in (["--algo", "grid"], ["--seed", "5"], ["--num-samples", "3"],
                 ["--scheduler", "asha"]):
        bad = run_module("pipelines.svm", "--resume", "--name", "exp", *flag, cwd=str(tmp_path))
        assert bad.returncode == 2, bad.stderr
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --resume: ") and flag[0] in lines[0]
    # The same values as the experiment's are not a contradiction; a finished experiment
    # resumes to its summary without running a trial again.
    same = run_module("pipelines.svm", "--resume", "--name", "exp", "--algo", "random",
                      "--seed", "4", "--dataset", "digits", cwd=str(tmp_path))
    assert same.returncode == 0, same.stdout + same.stderr
    assert "resuming: 2 ended trials kept, 0 to continue, 0 not started yet" in same.stderr
    assert len(pd.read_parquet(tmp_path / "results" / "exp" / "trials.parquet")) == 2
    # The same space named by its full path is the same space.
    same = run_module("pipelines.svm", "--resume", "--name", "exp", "--space",
                      str(tmp_path / "space.py"), cwd=str(tmp_path))
    assert same.returncode == 0, same.stdout + same.stderr
    # Flags judged against the experiment's settings, not today's defaults: a value where the
    # experiment ran on the default says so.
    for flag, message in ((["--max-t", "4"], "--max-t 4 contradicts the experiment's default"),
                          (["--bo-init", "3"], "--bo-init 3 contradicts the experiment's default")):
        bad = run_module("pipelines.svm", "--resume", "--name", "exp", *flag, cwd=str(tmp_path))
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr


def test_ctrl_c_while_ray_starts_is_one_line_exit_130_and_writes_nothing(tmp_path):
    (tmp_path / "space.py").write_text(SVM_SPACE)
    marker = tmp_path / "paused"
    proc = _start("pipelines.svm", [*_svm_args("space.py"), "--name", "exp"], tmp_path,
                  TUNE_PIPELINE_PAUSE_AT="ray_start", TUNE_PIPELINE_PAUSE_FILE=str(marker))
    _wait(marker.exists, proc)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == \
        "interrupted  while Ray was starting; nothing was written"
    assert not (tmp_path / "results" / "exp").exists()


def test_ctrl_c_before_any_trial_ends_says_how_to_continue(tmp_path):
    # One long trial, interrupted after its first epoch: no trial has ended, and the run
    # still says it was interrupted and how to continue (not "no trial produced a score").
    folder = tmp_path / "results" / "exp"
    journal = folder / "journal.jsonl"
    proc = _start("pipelines.finetune", ["--algo", "random", "--num-samples", "1", "--epochs",
                                         "40", "--seed", "1", "--no-baseline", "--num-cpus", "2",
                                         "--name", "exp"], tmp_path)
    _wait(lambda: any(e["event"] == "report" for e in _events(journal)), proc, timeout=400)
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err
    assert "interrupted  0 of 1 trials ended; continue with --resume --name exp" in err
    assert "best         none yet: interrupted before a trial ended" in out
    assert json.loads((folder / "experiment.json").read_text())["status"] == "interrupted"


def _catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for ``signum`` below Python (``/proc``'s SigCgt)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(caught >> (signum - 1) & 1)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_final_evaluation_is_an_interrupted_run_that_resumes(signum, tmp_path):
    # Ray's shutdown (on a thread, beside the evaluation) set SIGTERM back to "terminate" below
    # Python, and Tune's SIGINT handler outlived the run, so the first Ctrl-C did nothing.
    (tmp_path / "space.py").write_text(SVM_SPACE)
    folder = tmp_path / "results" / "exp"
    marker = tmp_path / "paused"
    proc = _start("pipelines.svm", [*_svm_args("space.py"), "--name", "exp", "--no-report"],
                  tmp_path, TUNE_PIPELINE_PAUSE_AT="evaluate", TUNE_PIPELINE_PAUSE_FILE=str(marker))
    _wait(marker.exists, proc)
    time.sleep(5)  # Ray's shutdown, begun just before the pause, has ended
    _wait(lambda: _catches(proc.pid, signum), proc, timeout=30)
    os.kill(proc.pid, signum)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        _sigkill_driver(proc)
        pytest.fail(f"signal {signum} during the evaluation did not stop the run")
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err
    assert "interrupted  during the final evaluation (every trial ended); --resume --name exp " \
        "runs it" in err
    info = json.loads((folder / "experiment.json").read_text())
    assert info["status"] == "interrupted" and "test_accuracy" not in (info["best"] or {})
    resumed = run_module("pipelines.svm", "--resume", "--name", "exp", cwd=str(tmp_path))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    _, _, info = _check_complete(folder, 6)
    assert 0.0 < info["best"]["test_accuracy"] <= 1.0

def test_sigterm_mid_run_is_an_interrupted_run_that_resumes(tmp_path):
    # timeout, Slurm, Kubernetes and systemd stop a job with SIGTERM: it ends as Ctrl-C does,
    # status interrupted with the line that says how to continue, and --resume finishes it.
    folder = tmp_path / "results" / "exp"
    journal = folder / "journal.jsonl"
    args = ["--algo", "random", "--num-samples", "120", "--seed", "3", "--configs-per-trial", "1",
            "--num-cpus", "2", "--no-report", "--name", "exp"]
    proc = _start("pipelines.svm", args, tmp_path)
    _wait(lambda: sum(e["event"] == "end" for e in _events(journal)) >= 5, proc)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "SIGTERM received" not in err and "Traceback" not in err
    assert "trials ended; continue with --resume --name exp" in err
    assert json.loads((folder / "experiment.json").read_text())["status"] == "interrupted"
    resumed = run_module("pipelines.svm", "--resume", "--name", "exp", cwd=str(tmp_path))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    trials = pd.read_parquet(folder / "trials.parquet")
    assert sorted(trials["trial_index"]) == list(range(120)) and trials["trial_id"].is_unique


def test_the_line_that_says_how_to_continue_names_a_storage_that_is_not_the_default():
    # Copied as printed, it must find the experiment (ray job submit ... --storage s3://...).
    import argparse

    from pipelines.runner import resume_flags

    assert resume_flags(argparse.Namespace(name="exp", output="results")) == "--resume --name exp"
    assert resume_flags(argparse.Namespace(name="job2", output="s3://audit/jobs")) == \
        "--resume --name job2 --output s3://audit/jobs"
    assert resume_flags(argparse.Namespace(name="a b", output="/tmp/my runs")) == \
        "--resume --name 'a b' --output '/tmp/my runs'"


def test_resume_refuses_data_edited_since_the_experiment_began(tmp_path):
    # The trials so far scored the CSV as it was; resumed on an edited file, the rest scored
    # other rows and ranked beside them as one search. The data's digest is kept in
    # experiment.json and compared before any trial runs.
    from sklearn.datasets import load_iris

    frame = load_iris(as_frame=True).frame
    data = tmp_path / "iris.csv"
    frame.to_csv(data, index=False)
    (tmp_path / "space.py").write_text(SVM_SPACE)
    folder = tmp_path / "results" / "exp"
    marker = tmp_path / "paused"
    proc = _start("pipelines.svm", [*_svm_args("space.py"), "--name", "exp", "--no-report",
                                    "--dataset", str(data), "--target", "target"],
                  tmp_path, TUNE_PIPELINE_PAUSE_AT="flush", TUNE_PIPELINE_PAUSE_FILE=str(marker))
    _wait(marker.exists, proc)
    _sigkill_driver(proc)
    stored = json.loads((folder / "experiment.json").read_text())
    assert len(stored["data_fingerprint"]) == 16
    journal = (folder / "journal.jsonl").read_bytes()

    frame.iloc[:-15].to_csv(data, index=False)  # the user drops some rows, then resumes
    refused = run_module("pipelines.svm", "--resume", "--name", "exp", cwd=str(tmp_path))
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert lines[-1].startswith("error: ") and "is not the data experiment 'exp' began with" \
        in lines[-1] and "Traceback" not in refused.stderr
    assert (folder / "journal.jsonl").read_bytes() == journal  # nothing written
    assert json.loads((folder / "experiment.json").read_text()) == stored

    frame.to_csv(data, index=False)  # the original back: the experiment goes on
    resumed = run_module("pipelines.svm", "--resume", "--name", "exp", cwd=str(tmp_path))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    _, _, info = _check_complete(folder, 6)
    assert info["data_fingerprint"] == stored["data_fingerprint"]

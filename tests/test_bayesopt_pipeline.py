"""--algo bayesopt through the real CLI: a run, a warm start, a resume, and a space BO can't use."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.helpers import REPO, run_module

pytestmark = pytest.mark.ray


def test_bayesopt_run_then_warm_start(tmp_path):
    proc = run_module("pipelines.svm", "--algo", "bayesopt", "--num-samples", "6", "--bo-init", "3",
                      "--seed", "1", "--output", str(tmp_path), "--name", "bo", "--num-cpus", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first = pd.read_parquet(tmp_path / "bo" / "trials.parquet")
    assert len(first) == 6 and (first["algorithm"] == "bayesopt").all()
    assert (first["status"] == "finished").all()
    # The first --bo-init trials are the space's own seeded random draws.
    from search_spaces import load_space

    init = load_space("svm").sample(3, seed=1)
    got = first.sort_values("trial_index").head(3)["param_kernel"].tolist()
    assert got == [c["kernel"] for c in init]

    proc = run_module("pipelines.svm", "--algo", "bayesopt", "--num-samples", "3", "--bo-init", "3",
                      "--warm-start", str(tmp_path / "bo" / "trials.parquet"), "--seed", "1",
                      "--output", str(tmp_path), "--name", "warm", "--num-cpus", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    warm = pd.read_parquet(tmp_path / "warm" / "trials.parquet")
    assert len(warm) == 3
    # Warm-started rows count toward the init phase, so nothing is re-drawn at random.
    assert not any(abs(c - d["C"]) < 1e-12 for c in warm["param_C"] for d in init)
    # The rows it started from are kept with the experiment: --resume needs no file.
    info = json.loads((tmp_path / "warm" / "experiment.json").read_text())
    assert len(info["warm_start_rows"]) == 6
    os.rename(tmp_path / "bo" / "trials.parquet", tmp_path / "moved.parquet")
    again = run_module("pipelines.svm", "--resume", "--output", str(tmp_path), "--name", "warm")
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads((tmp_path / "warm" / "experiment.json").read_text())["warm_start_rows"] == \
        info["warm_start_rows"]


def test_space_with_nothing_to_optimize_fails_before_ray(tmp_path):
    space = tmp_path / "fixed.py"
    space.write_text("from search_spaces.space import Space, Fixed\nSPACE = Space(kernel=Fixed('rbf'))\n")
    proc = run_module("pipelines.svm", "--algo", "bayesopt", "--space", str(space),
                      "--output", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "nothing to optimize" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_interrupted_experiment_resumes_and_keeps_finished_trials(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("RAY_ADDRESS", None)
    args = [sys.executable, "-m", "pipelines.svm", "--algo", "bayesopt", "--num-samples", "10",
            "--bo-init", "3", "--seed", "2", "--output", str(tmp_path), "--name", "r",
            "--num-cpus", "2", "--max-concurrent", "1"]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    journal = tmp_path / "r" / "journal.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_text().count('"event":"end"') >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=180)
    before = pd.read_parquet(tmp_path / "r" / "trials.parquet")
    assert 3 <= len(before) < 10  # the finished trials were written, and the run did stop early
    info = json.loads((tmp_path / "r" / "experiment.json").read_text())
    assert info["status"] == "interrupted"

    resumed = run_module("pipelines.svm", *args[3:], "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = pd.read_parquet(tmp_path / "r" / "trials.parquet")
    assert len(after) == 10
    assert after["trial_id"].is_unique
    # Trials finished before the interrupt are kept as they were, not re-run.
    kept = after.set_index("trial_id").loc[before["trial_id"], "cv_accuracy"]
    assert kept.tolist() == before["cv_accuracy"].tolist()


def test_bayesopt_with_asha_is_multi_fidelity_search(tmp_path):
    # ASHA cuts most trials at the first rung; the model must keep suggesting from the rungs
    # (not crash on, or learn, cut scores as final), and every suggestion is journaled with
    # where it came from.
    proc = run_module("pipelines.svm", "--algo", "bayesopt", "--scheduler", "asha",
                      "--num-samples", "12", "--bo-init", "4", "--seed", "2", "--max-concurrent",
                      "1", "--output", str(tmp_path), "--name", "boasha", "--num-cpus", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trials = pd.read_parquet(tmp_path / "boasha" / "trials.parquet")
    assert len(trials) == 12 and sorted(trials["trial_index"]) == list(range(12))
    assert (trials["status"] == "stopped_early").any() and (trials["fidelity"] == 1.0).any()
    events = [json.loads(line) for line in
              (tmp_path / "boasha" / "journal.jsonl").read_text().splitlines()]
    sources = [e["source"] for e in sorted((e for e in events if e["event"] == "start"),
                                           key=lambda e: e["trial_index"])]
    assert sources[:4] == ["random"] * 4 and sources[4:] == ["model"] * 8

"""``python -m pipelines.compare``: compute arithmetic, best-so-far curves, bad input, one real run."""

import argparse
import json
import math
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipelines import analysis, compare
from pipelines.results import MetricColumns
from tests.experiment_files import BEST_EPOCH, write_experiment
from tests.helpers import run_module, tiny_svm_space

# An SVM-like task: ranked by the last report among full-fidelity trials, costed in rows fitted.
ROWS = MetricColumns("score", "max", {"score": pa.float64(), "fidelity": pa.float64(),
                                      "fit_samples": pa.int64()}, "fidelity", select="last")


def _report(trial: int, iteration: int, stamp: float, clock: float | None = None, **metrics):
    return {"trial_id": f"t{trial:02d}", "iteration": iteration, "timestamp": stamp,
            "time_total_s": clock, **metrics}


def test_finetune_curve_counts_epochs_in_the_order_trained_and_skips_failed_trials(tmp_path):
    # Two trials in flight: within one timestamp second the trial's start plus its own clock
    # orders the epochs (t01's first epoch ended before t00's second).
    trials = [
        {"score": 0.8, "best_score": 0.8, "start": 100.0, "end": 104.5, "iterations": 3},
        {"score": 0.65, "best_score": 0.7, "start": 100.5, "end": 102.5, "iterations": 2},
        {"score": 0.99, "status": "error", "start": 103.0, "end": 103.5},
    ]
    epochs = [
        _report(0, 1, 101, 0.6, epoch=1, score=0.5), _report(0, 2, 101, 0.9, epoch=2, score=0.6),
        _report(0, 3, 104, 4.0, epoch=3, score=0.8), _report(1, 1, 101, 0.2, epoch=1, score=0.7),
        _report(1, 2, 102, 1.6, epoch=2, score=0.65), _report(2, 1, 103, 0.4, epoch=1, score=0.99),
    ]
    exp = analysis.load_experiment(write_experiment(tmp_path, "ft", trials, epochs=epochs,
                                                    metrics=BEST_EPOCH))
    curve = compare.compute_curve(exp, compare.UNITS["finetune"])
    assert list(zip(curve["trial_id"], curve["iteration"], strict=True)) == [
        ("t00", 1), ("t01", 1), ("t00", 2), ("t01", 2), ("t02", 1), ("t00", 3)]
    assert curve["compute"].tolist() == [1, 2, 3, 4, 5, 6]
    assert curve["score"].isna().tolist() == [False] * 4 + [True, False]  # the failed trial
    assert curve["best_so_far"].tolist() == [0.5, 0.7, 0.7, 0.7, 0.7, 0.8]
    assert curve["best_so_far"].iloc[-1] == analysis.best_trial(exp)["best_score"]
    assert math.isnan(compare.best_at(curve, 0.5))
    np.testing.assert_array_equal(compare.best_at(curve, [1, 2.5, 5.99, 6, 100]),
                                  [0.5, 0.7, 0.7, 0.8, 0.8])
    assert compare.compute_to_reach(curve, 0.7, "max") == 2
    assert compare.compute_to_reach(curve, 0.8, "max") == 6
    assert math.isnan(compare.compute_to_reach(curve, 0.8, "max", limit=5))
    assert math.isnan(compare.compute_to_reach(curve, 0.81, "max"))


def test_svm_curve_costs_rows_fitted_and_counts_only_full_fidelity_scores(tmp_path):
    # t01 scored best but only on a third of the rows (ASHA cut it): not comparable, yet its
    # rows were fitted, so they count as compute.
    trials = [
        {"score": 0.8, "fidelity": 1.0, "start": 0.0, "end": 3.0, "iterations": 2},
        {"score": 0.95, "fidelity": 1 / 3, "status": "stopped_early", "stopped_by": "scheduler",
         "start": 1.0, "end": 2.0},
        {"score": 0.85, "fidelity": 1.0, "start": 3.0, "end": 5.0, "iterations": 2},
    ]
    epochs = [
        _report(0, 1, 1, None, score=0.9, fidelity=1 / 3, fit_samples=100),
        _report(1, 1, 2, None, score=0.95, fidelity=1 / 3, fit_samples=100),
        _report(0, 2, 3, None, score=0.8, fidelity=1.0, fit_samples=300),
        _report(2, 1, 4, None, score=0.5, fidelity=1 / 3, fit_samples=100),
        _report(2, 2, 5, None, score=0.85, fidelity=1.0, fit_samples=300),
    ]
    folder = write_experiment(tmp_path, "svm", trials, epochs=epochs, metrics=ROWS, info={
        "best": {"trial_id": "t02", "score": 0.85, "test_accuracy": 0.9}, "wall_time_s": 12.0})
    exp = analysis.load_experiment(folder)
    curve = compare.compute_curve(exp, compare.UNITS["svm"])
    assert curve["compute"].tolist() == [100, 200, 500, 600, 900]
    assert curve["best_so_far"].tolist()[2:] == [0.8, 0.8, 0.85]
    assert curve["best_so_far"].iloc[:2].isna().all()
    row = compare.run_row(exp, compare.UNITS["svm"], budget=550)
    assert row == {"trials": 3, "compute": 900.0, "budget": 550.0, "best_at_budget": 0.8,
                   "best": 0.85, "test": 0.9, "best_found_at": 900.0, "wall_s": 12.0}
    epochs_only = analysis.load_experiment(write_experiment(tmp_path, "ft", [{"score": 0.5}],
                                                            metrics=BEST_EPOCH))
    with pytest.raises(analysis.AnalysisError, match="no column 'fit_samples'"):
        compare.compute_curve(epochs_only, compare.UNITS["svm"])


def test_budget_arithmetic():
    from trainables.svm import load_data

    # Fine-tuning: a full trial is --epochs epochs; 150 epochs are 25 six-epoch trials.
    assert compare.full_trial_cost("finetune", argparse.Namespace(epochs=6)) == 6
    assert compare.plan_trials(150, 6) == 25
    assert compare.plan_trials(151, 6) == 26
    # ASHA's first guess (0.4 of a full trial) and its margin: 150 * 1.25 / 2.4 = 78.1.
    assert compare.plan_trials(150, 0.4 * 6, compare.MARGIN["asha"]) == 79
    assert compare.plan_trials(10, 1000) == 1
    # SVMs: one full trial fits every fold's train part once; digits has 1,437 train rows and
    # each row is in the train part of 2 of the 3 folds.
    data = load_data("digits", None, test_size=0.2, cv=3, seed=0)
    assert compare.full_trial_cost("svm", argparse.Namespace(_data=data)) == 2 * 1437
    assert compare.plan_trials(compare.DEFAULT_FULL_TRIALS * 2874, 2874) == 40
    assert compare.reach_target(0.98, "max") == pytest.approx(0.9702)
    assert compare.reach_target(2.0, "min") == pytest.approx(2.02)


def _curve(compute, best):
    return pd.DataFrame({"compute": compute, "best_so_far": best})


def test_median_band_over_seeds_ends_where_the_shortest_run_ends():
    curves = [_curve([1, 2, 3, 4], [0.5, 0.5, 0.7, 0.7]),
              _curve([1, 2, 3], [math.nan, 0.6, 0.6]),  # ended at 3, short of the budget
              _curve([2, 4, 6], [0.4, 0.8, 0.9])]
    band = compare.median_band(curves, budget=5)
    assert band.attrs["end"] == 3
    assert band["compute"].tolist() == [0, 1, 2, 3]
    # No median until every seed has a score.
    assert band.iloc[:2][["median", "low", "high"]].isna().all().all()
    assert band.iloc[2][["median", "low", "high"]].tolist() == [0.5, 0.4, 0.6]
    assert band.iloc[3][["median", "low", "high"]].tolist() == [0.6, 0.4, 0.7]
    assert compare.median_band(curves[:1], budget=2.5).attrs["end"] == 2.5


def test_reach_and_summary_medians_count_a_run_that_never_reached_as_infinite():
    curves = {("random-fifo", 0): _curve([10, 20, 30], [0.5, 0.9, 1.0]),
              ("random-fifo", 1): _curve([10, 20, 30], [0.5, 0.6, 0.7]),
              ("random-asha", 0): _curve([5, 10, 15, 40], [0.95, 0.991, 0.991, 0.999])}
    rows = pd.DataFrame([
        {"strategy": s, "seed": seed, "trials": 3, "compute": float(c["compute"].iloc[-1]),
         "best_at_budget": compare.best_at(c, 30), "best": float(c["best_so_far"].iloc[-1]),
         "test": 0.5, "wall_s": 1.0} for (s, seed), c in curves.items()])
    target = compare.add_reach(rows, curves, "max", budget=30)
    assert target == pytest.approx(0.99)  # the best within the budget is 1.0, not 0.999 at 40
    assert rows["compute_to_99pct_best"].tolist()[0] == 30
    assert math.isnan(rows["compute_to_99pct_best"].tolist()[1])
    assert rows["compute_to_99pct_best"].tolist()[2] == 10
    summary = compare.summarize(rows).set_index("strategy")
    assert list(summary.index) == ["random-fifo", "random-asha"]
    assert summary.loc["random-fifo", "compute_to_99pct_best"] == math.inf
    assert summary.loc["random-fifo", "reached"] == "1/2"
    assert summary.loc["random-fifo", "best_at_budget"] == pytest.approx(0.85)
    assert "never" in compare.format_summary(compare.summarize(rows), compare.UNITS["svm"])


BAD_INPUT = {
    "no task": ([], "the following arguments are required: --task"),
    "unknown task": (["--task", "xgboost"], "argument --task: invalid choice: 'xgboost'"),
    "zero budget": (["--task", "svm", "--budget", "0"], "argument --budget: must be a number above 0"),
    "text budget": (["--task", "svm", "--budget", "lots"], "argument --budget: expected a number"),
    "zero seeds": (["--task", "svm", "--seeds", "0"], "argument --seeds: must be at least 1"),
    "unknown strategy": (["--task", "svm", "--strategies", "random-lifo"],
                         "unknown strategy 'random-lifo'; choose from grid-fifo,"),
    "strategy twice": (["--task", "svm", "--strategies", "grid-fifo,grid-fifo"], "named twice"),
    "finetune flag on svm": (["--task", "svm", "--epochs", "3"],
                             "--epochs applies only to --task finetune"),
    "svm flag on finetune": (["--task", "finetune", "--cv", "5"], "--cv applies only to --task svm"),
    "bo-init without bayesopt": (["--task", "svm", "--strategies", "random-fifo,random-asha",
                                  "--bo-init", "3"],
                                 "--bo-init applies only to bayesopt strategies"),
    "asha flag without asha": (["--task", "svm", "--strategies", "grid-fifo",
                                "--grace-period", "2"], "--grace-period applies only to asha"),
    "bad epochs": (["--task", "finetune", "--epochs", "0"], "argument --epochs: must be at least 1"),
    "unknown space": (["--task", "svm", "--space", "no_such_space"], "unknown space 'no_such_space'"),
    "unknown dataset": (["--task", "svm", "--dataset", "mnist-ish"], "unknown dataset 'mnist-ish'"),
    "bad cv": (["--task", "svm", "--cv", "1"], "--cv must be at least 2"),
    "grace beyond the rungs": (["--task", "svm", "--strategies", "grid-asha", "--grace-period", "9"],
                               "--grace-period (9) exceeds --max-t (4)"),
    "object store": (["--task", "svm", "--output", "s3://bucket/x"], "must be a local folder"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_line_exit_2_before_any_run(tmp_path, monkeypatch, capsys, case):
    args, expected = BAD_INPUT[case]
    out = tmp_path / "out"
    argv = args if "--output" in args else args + ["--output", str(out)]
    monkeypatch.setattr(compare, "_run", lambda *a, **k: pytest.fail("a run started"))
    with pytest.raises(SystemExit) as exit_info:
        compare.main(argv)
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert expected in lines[0]
    assert not out.exists()


def test_an_output_folder_with_files_is_refused_and_left_alone(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "compare.csv").write_text("keep me\n")
    proc = run_module("pipelines.compare", "--task", "svm", "--output", str(tmp_path / "old"),
                      timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --output '{tmp_path / 'old'}' already exists; choose a new folder"]
    assert (tmp_path / "old" / "compare.csv").read_text() == "keep me\n"


def test_real_comparison_on_the_svm_task_agrees_with_each_runs_own_files(tmp_path):
    """grid-fifo (3 configs, short of the budget) and random-asha (enough trials to spend it),
    one seed, on iris with a 3-value linear space: two real pipeline runs."""
    space = tiny_svm_space(tmp_path / "tiny.py")
    out = tmp_path / "cmp"
    budget = 4 * 240  # iris: 120 train rows, 3 folds of 80 train rows each: 240 rows a trial
    proc = run_module("pipelines.compare", "--task", "svm", "--strategies", "grid-fifo,random-asha",
                      "--seeds", "1", "--budget", str(budget), "--space", space, "--dataset", "iris",
                      "--num-cpus", "2", "--output", str(out), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    progress = [line for line in proc.stderr.splitlines() if " seed 0: " in line]
    assert [line.split()[0] for line in progress if "trials," in line] == ["grid-fifo", "random-asha"]
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = pd.read_csv(out / "compare.csv").set_index("strategy")
    assert list(rows.index) == ["grid-fifo", "random-asha"]
    for strategy, row in rows.iterrows():
        folder = out / row["experiment"]
        info = json.loads((folder / "experiment.json").read_text())
        epochs = pd.read_parquet(folder / "epochs.parquet")
        trials = pd.read_parquet(folder / "trials.parquet")
        assert info["status"] == "finished" and info["scheduler"] == strategy.split("-")[1]
        assert row["best"] == pytest.approx(info["best"]["cv_accuracy"], abs=1e-12)
        assert row["test"] == pytest.approx(info["best"]["test_accuracy"], abs=1e-12)
        assert row["compute"] == epochs["fit_samples"].sum()
        assert row["trials"] == len(trials)
        assert row["best_at_budget"] <= row["best"]
        assert 0 < row["compute_to_99pct_best"] <= budget
    # The grid ends short of the budget, at its 3 full fits; random under ASHA spends it.
    assert rows.loc["grid-fifo", "trials"] == 3
    assert rows.loc["grid-fifo", "compute"] == 3 * 240
    assert rows.loc["grid-fifo", "best_at_budget"] == rows.loc["grid-fifo", "best"]
    assert (rows.loc["random-asha", "compute"] >= budget
            or rows.loc["random-asha", "attempts"] == compare.MAX_ATTEMPTS)
    assert (rows.loc["random-asha", "scheduler"], rows.loc["random-asha", "seed"]) == ("asha", 0)
    summary = pd.read_csv(out / "summary.csv")
    assert summary["strategy"].tolist() == ["grid-fifo", "random-asha"]
    assert "random-asha" in proc.stdout and f"results      {out}/" in proc.stdout
    assert os.path.isdir(out / "runs" / "grid-fifo-s0")


def _default_signals() -> None:
    """As from a terminal: a test run itself under nohup or in the background of a script
    inherits SIGHUP or SIGINT ignored, which compare rightly keeps ignoring."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.mark.parametrize("signame", ["SIGINT", "SIGHUP", "SIGHUP under nohup"])
def test_ctrl_c_stops_the_run_in_progress_cleanly_and_says_what_is_kept(signame, tmp_path):
    # subprocess.run killed the run 0.25 s after compare's KeyboardInterrupt: its
    # experiment.json stayed "running", its Ray processes were left behind, and the line said
    # "--resume --name NAME", which compare does not take. A closed terminal (SIGHUP) must
    # stop the run too, now that the run has a session of its own.
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import REPO

    space = tiny_svm_space(tmp_path / "tiny.py")
    out = tmp_path / "cmp"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RAY_ADDRESS", None)
    nohup = ["nohup"] if signame.endswith("nohup") else []
    proc = subprocess.Popen(
        [*nohup, sys.executable, "-m", "pipelines.compare", "--task", "svm", "--strategies", "random-fifo",
         "--seeds", "1", "--budget", str(3000 * 240), "--space", space, "--dataset", "iris",
         "--num-cpus", "2", "--output", str(out)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=_default_signals)

    def ended() -> int:
        return sum(path.read_text().count('"event":"end"')
                   for path in out.glob("runs/*/journal.jsonl"))

    try:
        deadline = time.time() + 240
        while ended() < 3 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None and ended() >= 3, proc.communicate()
        if nohup:
            # A closed terminal under nohup stops nothing, as before the run had its own
            # session; Ctrl-C still does.
            os.kill(proc.pid, signal.SIGHUP)
            time.sleep(3)
            assert proc.poll() is None and ended() >= 3
            signame = "SIGINT"
        os.kill(proc.pid, getattr(signal, signame))  # compare alone, as the terminal's now do
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1 and "random-fifo-s0" in lines[0] and "new --output" in lines[0], err
    assert ("(Ctrl-C)" if signame == "SIGINT" else "(SIGHUP)") in lines[0]
    assert "--resume --name" not in lines[0] and "Traceback" not in err
    (folder,) = [p.parent for p in out.glob("runs/*/experiment.json")]
    info = json.loads((folder / "experiment.json").read_text())
    assert info["status"] == "interrupted"  # it stopped itself, its files written
    trials = pd.read_parquet(folder / "trials.parquet")
    assert len(trials) >= 3 and trials["trial_id"].is_unique
    # Nothing of the run is left: no process still names its output folder.
    time.sleep(1)
    left = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout
    assert left.strip() == ""


def test_a_run_with_no_score_names_why_it_stopped_the_comparison(tmp_path):
    (tmp_path / "fail.py").write_text(
        "from search_spaces.space import Categorical, Fixed, Space\n"
        "SPACE = Space(name='fail', kernel=Categorical(['linear']), C=Fixed(-1.0))\n")
    out = tmp_path / "cmp"
    proc = run_module("pipelines.compare", "--task", "svm", "--strategies", "random-fifo",
                      "--seeds", "1", "--budget", str(2 * 240), "--space", str(tmp_path / "fail.py"),
                      "--dataset", "iris", "--num-cpus", "2", "--output", str(out), timeout=300)
    assert proc.returncode == 1
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    # Before: the run's last line ("results   FOLDER"), which says nothing of why.
    assert "random-fifo-s0 failed" in line and "no trial produced a score" in line, line
    assert "first error" in line and "'C'" in line, line

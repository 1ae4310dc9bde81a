"""The live progress view: counts, best so far, ETA; in place on a terminal, lines in a log."""

from __future__ import annotations

import io
import os
import pty
import types

from pipelines.callbacks import ProgressCallback, _duration


def _trial(trial_id: str, status: str = "RUNNING", config=None, last_result=None):
    return types.SimpleNamespace(trial_id=trial_id, status=status, config=config or {},
                                 last_result=last_result or {})


def _journaled(tmp_path, total=4, select="best", mode="max", name="exp"):
    """A progress line and the ResultsCallback it reads from, on a real journal, as in a run
    (``both(event, ...)`` feeds the two in the run's order: the journal first)."""
    import pyarrow as pa

    from pipelines.callbacks import ResultsCallback
    from pipelines.results import MetricColumns, ResultsWriter
    from pipelines.storage import Storage
    from search_spaces import load_space

    metrics = MetricColumns("score", mode, {"score": pa.float64(), "fidelity": pa.float64()},
                            "fidelity", select=select)
    writer = ResultsWriter(Storage(str(tmp_path)), name, load_space("svm"), metrics, {}, {})
    journal = ResultsCallback(writer)
    progress = ProgressCallback(total, "score", mode, stream=io.StringIO(), log_every_s=0.0,
                                select=select, step="fidelity")
    progress.writer = writer

    def both(event, trials, trial, *args):
        getattr(journal, event)(0, trials, trial, *args)
        getattr(progress, event)(0, trials, trial, *args)

    return progress, writer, metrics, both


def test_log_lines_count_trials_track_the_best_and_give_an_eta(tmp_path):
    progress, _, _, both = _journaled(tmp_path)
    stream = progress.stream  # not a terminal: plain lines
    # Tune's statuses lag its callbacks: PENDING inside on_trial_start, RUNNING inside
    # on_trial_complete and on_trial_error. The line counts what the callbacks said.
    a = _trial("a", status="PENDING", config={"kernel": "linear", "C": 1.0})
    b = _trial("b", status="PENDING", config={"kernel": "linear", "C": 2.0})
    both("on_trial_start", [a], a)
    assert "ETA" not in stream.getvalue()  # no trial has ended: no rate yet
    assert "0/4 done, 1 running" in stream.getvalue().splitlines()[0]
    a.status = "RUNNING"
    both("on_trial_start", [a, b], b)
    b.status = "RUNNING"
    both("on_trial_result", [a, b], a, {"score": 0.5, "training_iteration": 1})
    both("on_trial_result", [a, b], b, {"score": 0.7, "training_iteration": 1})
    both("on_trial_result", [a, b], a, {"score": float("nan"), "training_iteration": 2})
    progress.started -= 30.0  # 30 s in, one trial of four ended: 90 s left
    both("on_trial_complete", [a, b], a)
    a.status = "TERMINATED"
    both("on_trial_error", [a, b], b)
    b.status = "ERROR"
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 and not any("\r" in line for line in lines)
    assert "0/4 done, 2 running" in lines[1]
    assert "1/4 done, 1 running" in lines[2]
    assert "best score 0.7000 ({'kernel': 'linear', 'C': 2.0})" in lines[2]
    assert "ETA 1m30s" in lines[2]
    assert "2/4 done, 0 running, 1 errors" in lines[3] and "ETA 3" in lines[3]  # 2 left at 15 s
    # b failed: a failed trial is no run's best, so the line falls back to a's 0.5.
    assert "best score 0.5000 ({'kernel': 'linear', 'C': 1.0})" in lines[3]


def test_resumed_trials_do_not_count_toward_the_rate():
    progress = ProgressCallback(10, "score", "min", stream=io.StringIO())
    progress.done = progress.done_before = 6  # ended before the resume
    assert progress.eta_s(100.0) is None
    progress.done = 7
    assert progress.eta_s(100.0) == 300.0  # one trial in 100 s, three left
    progress.done = 10
    assert progress.eta_s(100.0) is None


def _read_until_newline(fd: int, timeout: float = 10.0) -> str:
    """What the terminal got, up to the final newline: the pty hands written bytes to its reader
    asynchronously, so one read on a busy machine can return only the first of them."""
    import select
    import time

    out, deadline = b"", time.monotonic() + timeout
    while not out.endswith(b"\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            out += os.read(fd, 4096)
    return out.decode()


def test_terminal_redraws_one_line_in_place():
    leader, follower = pty.openpty()
    stream = os.fdopen(follower, "w")
    try:
        progress = ProgressCallback(2, "score", "min", stream=stream)
        assert progress.tty
        t = _trial("t")
        progress.on_trial_start(0, [t], t)
        t.status = "TERMINATED"
        progress.on_trial_complete(0, [t], t)
        progress.on_experiment_end([t])
        out = _read_until_newline(leader)
    finally:
        stream.close()
        os.close(leader)
    assert out.count("\r") >= 3 and out.count("\n") == 1 and out.endswith("\n")
    assert "1/2 done" in out


def test_durations_read_naturally():
    assert [_duration(s) for s in (4.4, 59.6, 61, 3599, 3600, 7325)] == \
        ["4s", "1m00s", "1m01s", "59m59s", "1h00m", "2h02m"]


# --- the best so far names what the run will report -------------------------------------------
def _live_best(writer, metrics):
    """The run's rule (``results.best_row``) over every trial the journal holds, running ones
    included: what the line must show after each event."""
    from pipelines.results import best_row

    return best_row([writer._row(t) for t in writer.log.trials.values()], metrics)


def test_the_line_follows_the_runs_rule_after_every_event(tmp_path):
    """Random runs (ties, reports with no score, fidelities, restarts that replace reports,
    errors, both rules and directions): after every event the line's best is the run's best
    by its one selection rule (``results.ranked_rows``) over the journal, never another."""
    import math
    import random

    checked = 0
    for run in range(48):
        select, mode = ("best", "last")[run % 2], ("max", "min")[run // 2 % 2]
        progress, writer, metrics, both = _journaled(
            tmp_path / str(run), total=6, select=select, mode=mode)
        rng = random.Random(run)
        trials = [_trial(f"t{i}", config={"kernel": "linear", "C": float(i + 1)})
                  for i in range(6)]
        started: list = []
        iteration: dict[str, int] = {}
        for _ in range(40):
            trial = rng.choice(trials)
            if trial.status != "RUNNING":
                continue
            if trial not in started or rng.random() < 0.08:  # a start, or a restart
                if trial not in started:
                    started.append(trial)
                iteration[trial.trial_id] = rng.randint(0, iteration.get(trial.trial_id, 0))
                both("on_trial_start", started, trial)
            elif rng.random() < 0.1:
                trial.status = rng.choice(["TERMINATED", "ERROR"])
                both("on_trial_complete" if trial.status == "TERMINATED" else "on_trial_error",
                     started, trial)
            else:
                iteration[trial.trial_id] += 1
                fidelity = (1 / 9, 1 / 3, 1.0)[min(iteration[trial.trial_id] - 1, 2)]
                score = rng.choice([0.5, 0.7, 0.7, 0.9, math.nan])
                both("on_trial_result", started, trial,
                     {"score": score, "fidelity": fidelity,
                      "training_iteration": iteration[trial.trial_id]})
            best = _live_best(writer, metrics)
            if best is None:
                assert progress.best is None, run
            else:
                checked += 1
                assert progress.best == best[metrics.score_column], run
                assert progress.best_config["C"] == best["param_C"], run
    assert checked > 500  # most events leave a best to compare: not vacuous


def _two_started(both):
    """Trials a (C=1) and b (C=2), started in that order (trial_index 0 and 1)."""
    a = _trial("a", config={"kernel": "linear", "C": 1.0})
    b = _trial("b", config={"kernel": "linear", "C": 2.0})
    both("on_trial_start", [a], a)
    both("on_trial_start", [a, b], b)
    return a, b


def test_ties_go_to_the_earlier_trial(tmp_path):
    progress, _, _, both = _journaled(tmp_path, total=2)
    a, b = _two_started(both)
    both("on_trial_result", [a, b], b, {"score": 0.9, "training_iteration": 1})
    both("on_trial_result", [a, b], a, {"score": 0.9, "training_iteration": 1})
    assert progress.best_config["C"] == 1.0  # same score, earlier trial: as GridSearchCV


def test_last_rule_ranks_only_the_highest_fidelity_reached(tmp_path):
    progress, _, _, both = _journaled(tmp_path, total=2, select="last")
    a, b = _two_started(both)
    both("on_trial_result", [a, b], a, {"score": 0.99, "fidelity": 1 / 9, "training_iteration": 1})
    assert progress.best == 0.99
    both("on_trial_result", [a, b], b, {"score": 0.8, "fidelity": 1 / 3, "training_iteration": 1})
    assert progress.best == 0.8  # 0.99 was on 1/9 of the rows: not comparable
    both("on_trial_result", [a, b], a, {"score": 0.85, "fidelity": 1 / 3, "training_iteration": 2})
    assert progress.best == 0.85 and progress.best_config["C"] == 1.0


def test_a_resumed_line_starts_from_the_journal(tmp_path):
    _, writer, metrics, both = _journaled(tmp_path, total=3)
    a, b = _two_started(both)
    both("on_trial_result", [a, b], a, {"score": 0.9, "training_iteration": 1})
    both("on_trial_result", [a, b], a, {"score": 0.5, "training_iteration": 2})
    both("on_trial_result", [a, b], b, {"score": 0.7, "training_iteration": 1})
    both("on_trial_complete", [a, b], b)
    # The driver dies with a running; --resume: a new writer reads the journal back.
    resumed, writer2, _, _ = _journaled(tmp_path, total=3)
    writer2.load_journal()
    resumed.refresh_all()
    assert resumed.best == 0.9 and resumed.best_config["C"] == 1.0  # a's epoch 1 counts


def test_a_resumed_line_counts_the_early_stops_and_errors_it_kept(tmp_path):
    _, _, _, both = _journaled(tmp_path, total=4)
    a, b = _two_started(both)
    c = _trial("c", config={"kernel": "linear", "C": 3.0})
    both("on_trial_start", [a, b, c], c)
    both("on_trial_result", [a, b, c], a, {"score": 0.9, "training_iteration": 1})
    both("on_trial_complete", [a, b, c], a)
    both("on_trial_result", [a, b, c], b,
         {"score": 0.5, "training_iteration": 1, "stopped_by": "patience"})
    both("on_trial_complete", [a, b, c], b)
    both("on_trial_error", [a, b, c], c)
    resumed, writer2, _, _ = _journaled(tmp_path, total=4)
    writer2.load_journal()
    resumed.refresh_all()
    assert (resumed.done, resumed.done_before, resumed.stopped, resumed.errors) == (3, 3, 1, 1)
    line = resumed._line(0)
    assert "1 stopped early" in line and "1 errors" in line

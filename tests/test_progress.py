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


def test_log_lines_count_trials_track_the_best_and_give_an_eta():
    stream = io.StringIO()  # not a terminal: plain lines
    progress = ProgressCallback(4, "score", "max", stream=stream, log_every_s=0.0)
    a, b = _trial("a", config={"x": 1}), _trial("b", config={"x": 2})
    progress.on_trial_start(0, [a, b], a)
    assert "ETA" not in stream.getvalue()  # no trial has ended: no rate yet
    progress.on_trial_result(0, [a, b], a, {"score": 0.5})
    progress.on_trial_result(0, [a, b], b, {"score": 0.7})
    progress.on_trial_result(0, [a, b], a, {"score": float("nan")})  # never the best
    a.status = "TERMINATED"
    progress.started -= 30.0  # 30 s in, one trial of four ended: 90 s left
    progress.on_trial_complete(0, [a, b], a)
    b.status = "ERROR"
    progress.on_trial_error(0, [a, b], b)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and not any("\r" in line for line in lines)
    assert "1/4 done, 1 running" in lines[1] and "best score 0.7000 ({'x': 2})" in lines[1]
    assert "ETA 1m30s" in lines[1]
    assert "2/4 done, 0 running, 1 errors" in lines[2] and "ETA 3" in lines[2]  # 2 left at 15 s


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
def _run_both(tmp_path, select: str, seed: int):
    """Feed one random run to the journal (ResultsCallback) and to the progress line."""
    import math
    import random

    import pyarrow as pa

    from pipelines.callbacks import ResultsCallback
    from pipelines.results import MetricColumns, ResultsWriter, best_row
    from pipelines.storage import Storage
    from search_spaces import load_space

    metrics = MetricColumns("score", "max", {"score": pa.float64(), "fidelity": pa.float64()},
                            "fidelity", select=select)
    writer = ResultsWriter(Storage(str(tmp_path / f"{select}-{seed}")), "exp", load_space("svm"),
                           metrics, {}, {})
    journal = ResultsCallback(writer)
    progress = ProgressCallback(8, "score", "max", stream=io.StringIO(), select=select,
                                step="fidelity")
    rng = random.Random(seed)
    trials = [_trial(f"t{i}", config={"kernel": "linear", "C": float(i + 1)}) for i in range(8)]
    # Each trial reports at some of the fidelities, in order; scores from a small set, so ties
    # are common; some reports have no score.
    plans = {t.trial_id: [(f, rng.choice([0.5, 0.7, 0.7, 0.9, math.nan]))
                          for f in (1 / 9, 1 / 3, 1.0) if rng.random() < 0.7] for t in trials}
    started: list = []
    reported: dict[str, int] = {}
    events = [t for t in trials for _ in range(len(plans[t.trial_id]) + 1)]
    rng.shuffle(events)
    for trial in events:  # a trial's first event starts it, the rest are its reports in order
        if trial not in started:
            started.append(trial)
            journal.on_trial_start(0, started, trial)
            progress.on_trial_start(0, started, trial)
            continue
        step, score = plans[trial.trial_id].pop(0)
        reported[trial.trial_id] = reported.get(trial.trial_id, 0) + 1
        result = {"score": score, "fidelity": step,
                  "training_iteration": reported[trial.trial_id]}
        journal.on_trial_result(0, started, trial, result)
        progress.on_trial_result(0, started, trial, result)
    for trial in trials:
        if rng.random() < 0.2:
            trial.status = "ERROR"
            journal.on_trial_error(0, started, trial)
            progress.on_trial_error(0, started, trial)
        else:
            trial.status = "TERMINATED"
            journal.on_trial_complete(0, started, trial)
            progress.on_trial_complete(0, started, trial)
    return progress, best_row(writer.finished_rows(), metrics), metrics


def test_the_line_names_the_trial_the_run_reports_as_best(tmp_path):
    """Over many random runs (ties, reports with no score, errors, fidelities), the live best
    is the run's best by its one selection rule (``results.ranked_rows``), never another."""
    checked = 0
    for select in ("best", "last"):
        for seed in range(40):
            progress, best, metrics = _run_both(tmp_path, select, seed)
            if best is None:
                assert progress.best is None, (select, seed)
                continue
            checked += 1
            assert progress.best == best[metrics.score_column], (select, seed)
            assert progress.best_config["C"] == best["param_C"], (select, seed)
    assert checked >= 60  # most runs have a best: the comparison is not vacuous


def test_ties_go_to_the_earlier_trial_and_errors_leave_the_line():
    progress = ProgressCallback(3, "score", "max", stream=io.StringIO())
    a, b, c = (_trial(n, config={"x": n}) for n in "abc")
    trials = [a, b, c]
    progress.on_trial_result(0, trials, b, {"score": 0.9})
    progress.on_trial_result(0, trials, a, {"score": 0.9})  # same score, earlier trial
    assert progress.best_config == {"x": "a"}
    progress.on_trial_result(0, trials, c, {"score": 0.8})
    progress.on_trial_error(0, trials, a)
    assert progress.best == 0.9 and progress.best_config == {"x": "b"}
    progress.on_trial_error(0, trials, b)
    assert progress.best == 0.8 and progress.best_config == {"x": "c"}


def test_last_rule_ranks_only_the_highest_fidelity_reached():
    progress = ProgressCallback(2, "score", "max", stream=io.StringIO(), select="last",
                                step="fidelity")
    a, b = _trial("a", config={"x": "a"}), _trial("b", config={"x": "b"})
    progress.on_trial_result(0, [a, b], a, {"score": 0.99, "fidelity": 1 / 9})
    assert progress.best == 0.99
    progress.on_trial_result(0, [a, b], b, {"score": 0.8, "fidelity": 1 / 3})
    assert progress.best == 0.8 and progress.best_config == {"x": "b"}  # 0.99 was on 1/9
    progress.on_trial_result(0, [a, b], a, {"score": 0.85, "fidelity": 1 / 3})
    assert progress.best == 0.85 and progress.best_config == {"x": "a"}
    progress.on_trial_result(0, [a, b], a, {"score": 0.7, "fidelity": 1 / 3})  # its last counts
    assert progress.best == 0.8 and progress.best_config == {"x": "b"}


def test_a_resumed_line_starts_from_the_kept_trials():
    progress = ProgressCallback(4, "score", "min", stream=io.StringIO())
    progress.seed([("k1", 0, 0.3, 1, {"x": 1}), ("k2", 1, 0.2, 1, {"x": 2})])
    assert progress.best == 0.2 and progress.best_config == {"x": 2}
    t = _trial("t", config={"x": 3, "_resume_checkpoint": "/ckpt"})
    progress.on_trial_result(0, [t], t, {"score": 0.1})
    assert progress.best_config == {"x": 3}  # the resume key is not part of the config

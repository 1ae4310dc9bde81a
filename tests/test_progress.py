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

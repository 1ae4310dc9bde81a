"""Several configs in one Tune trial (``pipelines.packs``): each config keeps its own trial in
the results, its own error, and its place after a SIGKILL of the driver and ``--resume``."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from pipelines.journal import TrialLog, end_event, report_event, start_event
from pipelines.packs import (
    MEMBER,
    MEMBER_CLOSING,
    MEMBER_END,
    MEMBER_ERROR,
    MEMBER_START,
    MEMBER_TIME,
    MOST,
    PACK_KEY,
    pack_size,
    run_members,
)
from search_spaces.space import Categorical, LogFloat, Space
from tests.helpers import run_code, run_module

# --- pack sizes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n, slots", [(36, 2), (300, 2), (7, 4), (1000, 8), (1, 1)])
def test_guided_pack_sizes_cover_every_config_and_shrink_to_one(n, slots):
    sizes, left = [], n
    while left:
        sizes.append(pack_size(left, slots))
        left -= sizes[-1]
    assert sum(sizes) == n
    assert sizes == sorted(sizes, reverse=True)  # large first, small at the end
    assert sizes[-1] == 1 and max(sizes) <= MOST
    # Far fewer Tune trials than configs once there are many configs per slot.
    if n >= 100 * slots:
        assert len(sizes) < n / 4


def test_fixed_pack_sizes():
    assert [pack_size(left, 2, fixed=4) for left in (10, 6, 2)] == [4, 4, 2]
    assert pack_size(0, 2) == 0


# --- the trainable side -------------------------------------------------------------------------

def _trial(config):
    if config["kind"] == "raises_first":
        raise ValueError("bad C\nsecond line")
    if config["kind"] == "empty":
        return
    for step in range(config["steps"]):
        if config["kind"] == "raises_later" and step == 1:
            raise RuntimeError("diverged")
        yield {"score": step / 10}


def test_members_report_in_order_and_a_failing_member_does_not_stop_the_pack():
    reports = []
    run_members([{"kind": "ok", "steps": 3}, {"kind": "raises_first"},
                 {"kind": "raises_later", "steps": 3}, {"kind": "empty"}, {"kind": "ok", "steps": 1}],
                _trial, reports.append)
    by_member = {}
    for r in reports:
        by_member.setdefault(r[MEMBER], []).append(r)
    assert sorted(by_member) == [0, 1, 2, 3, 4]
    # Every report carries the member's start and time; only a member's last carries its end.
    assert all(MEMBER_START in r and r[MEMBER_TIME] >= 0 for r in reports)
    assert [MEMBER_END in r for r in by_member[0]] == [False, False, True]
    assert [r["score"] for r in by_member[0]] == [0.0, 0.1, 0.2]
    # Raising before any report: one closing report with the error on one line.
    (closing,) = by_member[1]
    assert closing[MEMBER_CLOSING] and closing[MEMBER_ERROR] == "ValueError: bad C second line"
    # Raising after a report: that report (not marked as the end), then the closing one.
    assert [MEMBER_END in r for r in by_member[2]] == [False, True]
    assert by_member[2][1][MEMBER_ERROR] == "RuntimeError: diverged"
    # Nothing reported: still closed, with no error.
    (empty,) = by_member[3]
    assert empty[MEMBER_CLOSING] and MEMBER_ERROR not in empty and MEMBER_END in empty
    assert by_member[4][-1][MEMBER_END] >= by_member[4][-1][MEMBER_START]


def test_a_non_finite_metric_is_that_members_error():
    pytest.importorskip("ray.tune")
    from pipelines.tune_adapter import _finite

    reports = []
    run_members([{"v": math.nan}, {"v": 0.5}],
                lambda config: _finite(iter([{"score": config["v"]}])), reports.append)
    assert reports[0][MEMBER_ERROR] == "FloatingPointError: trial reported score = nan"
    assert reports[1]["score"] == 0.5 and MEMBER_END in reports[1]



# A real Tune run of one pack of three configs, whose driver takes 0.5 s over every result.
_SLOW_DRIVER = r"""
import json, sys, time
import ray
from ray import tune
from pipelines.packs import MEMBER, MEMBER_START, PACK_KEY
from pipelines.tune_adapter import report_each

def trial(config):
    yield {"score": float(config["i"])}

handled = {}

class SlowDriver(tune.Callback):
    def on_trial_result(self, iteration, trials, trial, result, **info):
        time.sleep(0.5)
        handled[result[MEMBER]] = {"start": result[MEMBER_START], "handled": time.time()}

ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR",
         log_to_driver=False)
tune.Tuner(report_each(trial), param_space={PACK_KEY: [{"i": i} for i in range(3)]},
           run_config=tune.RunConfig(storage_path=sys.argv[1], callbacks=[SlowDriver()],
                                     verbose=0)).fit()
ray.shutdown()
print(json.dumps(handled))
"""


@pytest.mark.ray
def test_a_packs_next_config_starts_once_tune_has_the_result_not_after_the_driver(tmp_path):
    # Ray Tune holds a function trainable at each report until the driver has handled the
    # result; a pack lets its next config start as soon as the result is taken
    # (tune_adapter._continue_once_taken, a Ray internal this pins).
    pytest.importorskip("ray.tune")
    proc = run_code(_SLOW_DRIVER, str(tmp_path / "tune"), cwd=str(tmp_path),
                    env={"RAY_USAGE_STATS_ENABLED": "0"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    handled = {int(k): v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}
    assert sorted(handled) == [0, 1, 2]
    # Each next config started while the driver still spent its 0.5 s on the one before.
    for member in (0, 1):
        assert handled[member + 1]["start"] < handled[member]["handled"] - 0.2
    # But never two ahead: config 2 starts only once Tune has taken config 1's result, which
    # it asks for after the driver is done with config 0.
    assert handled[2]["start"] > handled[0]["handled"]

# --- the searcher side --------------------------------------------------------------------------

SPACE = Space(kernel=Categorical(["linear", "rbf"]),
              C=LogFloat(0.01, 100, grid=[0.1, 1.0, 10.0]),
              gamma=LogFloat(1e-4, 1, grid=[0.001], when={"kernel": ["rbf"]}))


def _listed(configs_per_trial):
    from pipelines.searchers import make_searcher

    searcher, n = make_searcher("grid", SPACE, metric="score", mode="max", seed=0,
                                num_samples=0, configs_per_trial=configs_per_trial)
    searcher.slots = 1
    return searcher, n


def _drain(searcher, prefix="t"):
    from ray.tune.search import Searcher

    packs = []
    for i in range(100):
        suggestion = searcher.suggest(f"{prefix}{i}")
        if suggestion is None:
            # Nothing left to hand out while packs run (one may hand members back): Tune asks
            # again after they end.
            assert packs and searcher.packs
            for tune_id, _ in packs:
                searcher.on_trial_complete(tune_id)
            continue
        if suggestion == Searcher.FINISHED:
            return packs
        packs.append((f"{prefix}{i}", suggestion))
    raise AssertionError("the searcher never finished")


def test_members_a_failed_pack_hands_back_run_next_under_their_ids():
    searcher, n = _listed(4)
    first = searcher.suggest("a")
    second = searcher.suggest("b")
    assert searcher.suggest("c") is None  # all handed out, two packs running
    # Pack "a" failed on its second member: Tune tells the searcher, then the callback hands
    # back the two members after it.
    searcher.on_trial_complete("a", error=True)
    searcher.requeue(searcher.members("a")[2:])
    again = searcher.suggest("d")
    assert again[PACK_KEY] == first[PACK_KEY][2:]
    assert [p.trial_id for p, _ in searcher.members("d")] == ["a-2", "a-3"]
    assert searcher.suggest("e") is None  # "b" and "d" still run
    for tune_id in ("b", "d"):
        searcher.on_trial_complete(tune_id)
    from ray.tune.search import Searcher

    assert searcher.suggest("f") == Searcher.FINISHED
    assert len(second[PACK_KEY]) == n - 4


def test_packs_hand_out_every_config_once_in_order():
    plain, n = _listed(1)
    expected = [config for _, config in _drain(plain)]
    searcher, _ = _listed(4)
    packs = _drain(searcher)
    assert [len(p[PACK_KEY]) for _, p in packs] == [4, 2]
    members = [m for tune_id, _ in packs for m in searcher.members(tune_id)]
    assert [placement.index for placement, _ in members] == list(range(n))
    assert [config for _, config in members] == expected
    assert [config for _, p in packs for config in p[PACK_KEY]] == expected
    ids = [placement.trial_id for placement, _ in members]
    assert len(set(ids)) == n and ids[:2] == ["t0-0", "t0-1"]
    assert searcher.members("unknown") is None and plain.members("t0") is None


def test_a_resumed_search_reruns_unfinished_members_first_under_their_ids():
    searcher, n = _listed(4)
    packs = _drain(searcher)
    members = [m for tune_id, _ in packs for m in searcher.members(tune_id)]
    log = TrialLog("score", "max", {"score": None})
    # Member 0 ended, member 1 started and was cut off by the crash; 2.. never started.
    for placement, config in members[:2]:
        log.apply(start_event(placement.trial_id, placement.index, config, source="grid"))
    log.apply(report_event(members[0][0].trial_id, 1, {"score": 0.9}))
    log.apply(end_event(members[0][0].trial_id, "finished"))

    resumed, _ = _listed("auto")
    assert resumed.resume(log) == n - 1
    again = _drain(resumed, prefix="r")
    got = [m for tune_id, _ in again for m in resumed.members(tune_id)]
    assert got[0][0].trial_id == members[1][0].trial_id  # the old id, re-run first
    assert sorted(p.index for p, _ in got) == list(range(1, n))
    assert len({p.trial_id for p, _ in got}) == n - 1


# --- real runs ----------------------------------------------------------------------------------

# Eight configs, one of which scikit-learn rejects (C = -1).
PACK_SPACE = (
    "from search_spaces.space import Categorical, Float, Space\n"
    "SPACE = Space(kernel=Categorical(['linear', 'rbf']),\n"
    "              C=Float(-1, 100, grid=[-1.0, 0.1, 1.0, 10.0]))\n"
)


def _run_svm(tmp_path, name, *extra, env=None):
    proc = run_module("pipelines.svm", "--space", "space.py", "--name", name, "--num-cpus", "2",
                      "--no-report", *extra, cwd=str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folder = tmp_path / "results" / name
    return (pd.read_parquet(folder / "trials.parquet"), pd.read_parquet(folder / "epochs.parquet"),
            json.loads((folder / "experiment.json").read_text()), proc)


def _rows(trials):
    cols = ["trial_index", "param_kernel", "param_C", "status", "cv_accuracy", "iterations"]
    frame = trials.sort_values("trial_index")[cols].astype(object)
    return [tuple(r) for r in frame.where(frame.notna(), None).itertuples(index=False)]


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """The same search with one config per Tune trial (Ray Tune's usual)."""
    work = tmp_path_factory.mktemp("plain")
    (work / "space.py").write_text(PACK_SPACE)
    return _run_svm(work, "plain", "--configs-per-trial", "1")


@pytest.mark.ray
def test_a_packed_run_writes_the_rows_of_an_unpacked_one(tmp_path, plain_run):
    (tmp_path / "space.py").write_text(PACK_SPACE)
    packed, packed_epochs, info, proc = _run_svm(tmp_path, "packed", "--configs-per-trial", "3")
    plain, plain_epochs, plain_info, _ = plain_run
    assert _rows(packed) == _rows(plain)
    assert len(packed) == 8 and packed["trial_id"].is_unique
    # Three Tune trials of 3, 3 and 2 configs; a member's id is its Tune trial's and its place.
    tune_ids = packed.sort_values("trial_index")["trial_id"].str.rsplit("-", n=1).str[0]
    assert list(tune_ids.groupby(tune_ids, sort=False).size()) == [3, 3, 2]
    assert plain["trial_id"].str.contains("-").sum() == 0
    # Each config's own error, time and epoch row.
    bad = packed.loc[packed["param_C"] == -1.0]
    assert set(bad["status"]) == {"error"} and bad["error"].str.contains("C").all()
    assert (packed["wall_time_s"] > 0).all()
    assert (packed["end_time"] >= packed["start_time"]).all()
    assert len(packed_epochs) == len(plain_epochs) == (packed["status"] == "finished").sum()
    assert set(packed_epochs["iteration"]) == {1}
    assert info["best"]["config"] == plain_info["best"]["config"]
    assert info["counts"] == plain_info["counts"] and info["counts"]["errors"] == 2
    assert info["flags"]["configs_per_trial"] == 3
    # The live line counts configs, not Tune trials.
    assert any("8/8 done, 0 running, 2 errors" in line for line in proc.stderr.splitlines())


@pytest.mark.ray
def test_packs_are_refused_where_they_would_change_the_search(tmp_path):
    (tmp_path / "space.py").write_text(PACK_SPACE)
    for extra in (["--scheduler", "asha"], ["--algo", "bayesopt"]):
        proc = run_module("pipelines.svm", "--space", "space.py", "--configs-per-trial", "4",
                          *extra, cwd=str(tmp_path))
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines()[-1] == (
            "error: --configs-per-trial applies only to --algo grid or random with "
            "--scheduler fifo")
        assert not (tmp_path / "results").exists()


@pytest.mark.ray
def test_sigkill_in_the_middle_of_a_pack_then_resume(tmp_path, plain_run):
    from tests.test_reliability import _check_complete, _sigkill_driver, _start, _wait

    (tmp_path / "space.py").write_text(PACK_SPACE)
    plain, _, plain_info, _ = plain_run
    marker = tmp_path / "paused"
    # One pack of all eight, one at a time; the driver stops right after journaling the first
    # member's end, while the pack's process goes on with the next members.
    proc = _start("pipelines.svm", ["--space", "space.py", "--name", "exp", "--num-cpus", "2",
                                    "--no-report", "--configs-per-trial", "8",
                                    "--max-concurrent", "1"], tmp_path,
                  TUNE_PIPELINE_PAUSE_AT="member_end", TUNE_PIPELINE_PAUSE_FILE=str(marker))
    _wait(marker.exists, proc)
    _sigkill_driver(proc)
    journal = (tmp_path / "results" / "exp" / "journal.jsonl").read_text().splitlines()
    ended = [e for e in map(json.loads, journal) if e["event"] == "end"]
    assert len(ended) == 1

    resumed = run_module("pipelines.svm", "--resume", "--name", "exp", cwd=str(tmp_path))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Traceback" not in resumed.stderr + resumed.stdout
    trials, epochs, info = _check_complete(tmp_path / "results" / "exp", 8)
    assert _rows(trials) == _rows(plain)
    assert info["best"]["config"] == plain_info["best"]["config"]
    # The member that ended before the kill kept its id and its row; the others ran again.
    first = trials.loc[trials["trial_id"] == ended[0]["trial_id"]]
    assert len(first) == 1 and first["end_time"].iloc[0].timestamp() == pytest.approx(
        ended[0]["time"], abs=1e-3)


@pytest.mark.ray
def test_a_pack_whose_process_is_killed_loses_only_the_running_config(tmp_path, plain_run):
    from tests.test_reliability import _check_complete

    (tmp_path / "space.py").write_text(PACK_SPACE)
    # One pack of all eight; its process SIGKILLs itself before the third config (position 2),
    # once, as the OOM killer would.
    trials, _, info, proc = _run_svm(
        tmp_path, "crash", "--configs-per-trial", "8", "--max-concurrent", "1",
        env={"TUNE_PIPELINE_CRASH_MEMBER": "2",
             "TUNE_PIPELINE_CRASH_FILE": str(tmp_path / "crashed")})
    assert (tmp_path / "crashed").exists()
    folder = tmp_path / "results" / "crash"
    assert info["status"] == "finished" and info["counts"]["trials"] == 8
    rows = {r[0]: r for r in _rows(trials)}
    plain = {r[0]: r for r in _rows(plain_run[0])}
    # The config that was running is an error row, as an unpacked trial would be; the two
    # before it kept their rows; the five after it ran in the same run, under their first ids.
    assert rows[2][3] == "error"
    crashed = trials.loc[trials["trial_index"] == 2].iloc[0]
    assert crashed["error"] and "\n" not in crashed["error"]
    assert {i: r for i, r in rows.items() if i != 2} == {i: r for i, r in plain.items() if i != 2}
    first_pack = trials.loc[trials["trial_index"] < 2, "trial_id"].str.rsplit("-", n=1).str[0]
    later = trials.loc[trials["trial_index"] > 2, "trial_id"]
    assert later.str.startswith(first_pack.iloc[0] + "-").all()  # their ids from the first pack
    _check_complete(folder, 8)
    # The plain run's errors (C = -1), plus this one unless it was one of them.
    assert info["counts"]["errors"] == plain_run[2]["counts"]["errors"] + (plain[2][3] != "error")
    assert any("8/8 done, 0 running" in line for line in proc.stderr.splitlines())


@pytest.mark.ray
def test_resume_refuses_packs_for_an_asha_experiment(tmp_path):
    (tmp_path / "space.py").write_text(PACK_SPACE)
    proc = run_module("pipelines.svm", "--space", "space.py", "--scheduler", "asha", "--name",
                      "exp", "--num-cpus", "2", "--no-report", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_module("pipelines.svm", "--resume", "--name", "exp", "--configs-per-trial", "4",
                      cwd=str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --configs-per-trial applies only to --algo grid or random with --scheduler fifo")

"""The results writer: typed columns, the journal that survives a crash, the best-trial rule."""

import json
import math

import pandas as pd
import pyarrow as pa
import pytest

from pipelines.results import MetricColumns, ResultsWriter, main, write_experiment_json
from pipelines.storage import Storage
from search_spaces import load_space

METRICS = MetricColumns("score", "max", {"score": pa.float64(), "fidelity": pa.float64()}, "fidelity")


def _writer(tmp_path, **kw):
    space = load_space("svm")
    return ResultsWriter(Storage(str(tmp_path)), "exp", space, METRICS,
                         {"algorithm": "grid", "scheduler": "fifo", "seed": 0}, {}, **kw)


def test_finished_trial_survives_a_crash_before_the_parquet_flush(tmp_path):
    writer = _writer(tmp_path, flush_every_s=3600)
    writer.flush()  # the empty files at start
    writer.start_trial("a", 0, {"kernel": "linear", "C": 1.0})
    writer.add_result("a", {"score": 0.9, "fidelity": 1.0, "training_iteration": 1})
    writer.end_trial("a", "finished")
    # The process dies here: the Parquet file is stale, the journal is not.
    assert len(pd.read_parquet(tmp_path / "exp" / "trials.parquet")) == 0
    write_experiment_json(Storage(str(tmp_path)), "exp",
                          {"name": "exp", "space": load_space("svm").to_dict(), "metrics": METRICS.to_dict()})
    assert main(["rebuild", str(tmp_path / "exp")]) == 0
    trials = pd.read_parquet(tmp_path / "exp" / "trials.parquet")
    assert trials["trial_id"].tolist() == ["a"] and trials["score"].tolist() == [0.9]
    assert len(pd.read_parquet(tmp_path / "exp" / "epochs.parquet")) == 1


def test_journal_reload_keeps_finished_trials(tmp_path):
    writer = _writer(tmp_path)
    for i, score in enumerate([0.5, 0.7]):
        writer.start_trial(f"t{i}", i, {"kernel": "rbf", "C": 1.0, "gamma": 0.1})
        writer.add_result(f"t{i}", {"score": score, "fidelity": 1.0})
        writer.end_trial(f"t{i}", "finished")
    again = _writer(tmp_path)
    assert again.load_journal() == 2
    assert again.best()["trial_id"] == "t1"


def test_best_prefers_full_fidelity_then_score_then_earliest(tmp_path):
    writer = _writer(tmp_path)
    rows = [("low_fid_high_score", 0.99, 0.25), ("full_a", 0.9, 1.0), ("full_b", 0.9, 1.0), ("nan", math.nan, 1.0)]
    for i, (tid, score, fid) in enumerate(rows):
        writer.start_trial(tid, i, {"kernel": "linear", "C": 1.0})
        writer.add_result(tid, {"score": score, "fidelity": fid})
        writer.end_trial(tid, "finished" if fid == 1.0 else "stopped_early")
    assert writer.best()["trial_id"] == "full_a"
    writer.flush()
    trials = pd.read_parquet(tmp_path / "exp" / "trials.parquet")
    assert trials.loc[trials["trial_id"] == "low_fid_high_score", "status"].item() == "stopped_early"
    assert trials["param_gamma"].isna().all()
    first = json.loads((tmp_path / "exp" / "journal.jsonl").read_text().splitlines()[0])
    assert first["event"] == "start" and first["trial_id"] == "low_fid_high_score"


# --- the journal: the one record ---------------------------------------------------------------
def _epochs(writer, tid):
    return [(r["iteration"], r["metrics"]["score"]) for r in writer.log.epoch_reports(tid)]


def test_every_report_is_durable_before_the_trial_ends(tmp_path):
    writer = _writer(tmp_path, flush_every_s=3600)
    writer.start_trial("a", 0, {"kernel": "linear", "C": 1.0})
    for it in (1, 2, 3):
        writer.add_result("a", {"score": 0.1 * it, "fidelity": 1.0, "training_iteration": it})
    # A new process (the resumed driver) sees the running trial and each of its reports.
    again = _writer(tmp_path)
    assert again.load_journal() == 0
    assert [t["trial_id"] for t in again.log.unfinished()] == ["a"]
    assert _epochs(again, "a") == [(1, 0.1), (2, 0.2), (3, pytest.approx(0.3))]


def test_a_restart_keeps_earlier_epochs_and_replaces_the_repeated_ones(tmp_path):
    writer = _writer(tmp_path)
    writer.start_trial("a", 0, {"kernel": "linear", "C": 1.0})
    for it in (1, 2, 3):
        writer.add_result("a", {"score": it / 10, "fidelity": 1.0, "training_iteration": it})
    writer.add_checkpoint("a", "/ckpt/2")
    # The driver died after epoch 3; the checkpoint it resumes from holds epoch 2.
    writer.start_trial("a", 0, {"kernel": "linear", "C": 1.0})
    for it in (3, 4):
        writer.add_result("a", {"score": it / 100, "fidelity": 1.0, "training_iteration": it})
    writer.end_trial("a", "finished")
    assert _epochs(writer, "a") == [(1, 0.1), (2, 0.2), (3, 0.03), (4, 0.04)]
    writer.flush()
    epochs = pd.read_parquet(tmp_path / "exp" / "epochs.parquet")
    assert epochs["iteration"].tolist() == [1, 2, 3, 4]  # no gap, no duplicate
    row = pd.read_parquet(tmp_path / "exp" / "trials.parquet").iloc[0]
    assert row["best_score"] == 0.2 and row["best_iteration"] == 2 and row["iterations"] == 4
    # The replay from disk gives the same rows as the live view.
    again = _writer(tmp_path)
    again.load_journal()
    assert again.finished_rows() == writer.finished_rows()


def test_an_ended_trial_is_never_reopened_or_blanked(tmp_path):
    writer = _writer(tmp_path)
    writer.start_trial("a", 0, {"kernel": "linear", "C": 1.0})
    writer.add_result("a", {"score": 0.9, "fidelity": 1.0, "training_iteration": 1})
    writer.end_trial("a", "finished")
    writer.start_trial("a", 0, {"kernel": "linear", "C": 1.0})  # a late restart of it
    writer.add_result("a", {"score": 0.1, "fidelity": 1.0, "training_iteration": 1})
    writer.end_trial("a", "error", error="boom")
    row = writer.finished_rows()[0]
    assert row["status"] == "finished" and row["score"] == 0.9 and row["error"] is None


def test_a_torn_last_line_is_dropped_and_never_swallows_the_next_entry(tmp_path):
    writer = _writer(tmp_path)
    writer.start_trial("a", 0, {"kernel": "linear", "C": 1.0})
    writer.add_result("a", {"score": 0.5, "fidelity": 1.0, "training_iteration": 1})
    path = tmp_path / "exp" / "journal.jsonl"
    whole = path.read_bytes()
    # A kill in the middle of writing the end event leaves half a line without a newline.
    path.write_bytes(whole + b'{"event":"end","trial_id":"a","sta')
    resumed = _writer(tmp_path)
    assert resumed.load_journal() == 0  # the torn end is not an end
    resumed.start_trial("b", 1, {"kernel": "linear", "C": 10.0})
    resumed.add_result("b", {"score": 0.7, "fidelity": 1.0, "training_iteration": 1})
    resumed.end_trial("b", "finished")
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])
    third = _writer(tmp_path)
    assert third.load_journal() == 1
    assert [r["trial_id"] for r in third.finished_rows()] == ["b"]
    assert [t["trial_id"] for t in third.log.unfinished()] == ["a"]


def test_patience_stops_are_stopped_early(tmp_path):
    metrics = MetricColumns("score", "max", {"score": pa.float64()}, "epoch", select="best")
    writer = ResultsWriter(Storage(str(tmp_path)), "exp", load_space("svm"), metrics, {}, {})
    writer.start_trial("a", 0, {"kernel": "linear", "C": 1.0})
    writer.add_result("a", {"score": 0.5, "training_iteration": 1, "early_stopped": False})
    writer.add_result("a", {"score": 0.4, "training_iteration": 2, "early_stopped": True})
    writer.end_trial("a", "finished")
    row = writer.finished_rows()[0]
    assert row["status"] == "stopped_early" and row["stopped_by"] == "patience"
    assert row["best_score"] == 0.5 and row["best_iteration"] == 1

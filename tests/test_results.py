"""The results writer: typed columns, the journal that survives a crash, the best-trial rule."""

import json
import math

import pandas as pd
import pyarrow as pa

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
    assert json.loads((tmp_path / "exp" / "trials.journal.jsonl").read_text().splitlines()[0])["trial"]["trial_id"] == "low_fid_high_score"

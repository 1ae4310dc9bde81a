"""The results writer: typed columns, the journal that survives a crash, the best-trial rule."""

import json
import math
import re

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


def test_a_rebuild_in_a_copied_folder_names_one_experiment_in_rows_and_metadata(tmp_path):
    import shutil

    import pyarrow.parquet as pq

    writer = _writer(tmp_path)
    writer.start_trial("a", 0, {"kernel": "linear", "C": 1.0})
    writer.add_result("a", {"score": 0.9, "fidelity": 1.0, "training_iteration": 1})
    writer.end_trial("a", "finished")
    write_experiment_json(Storage(str(tmp_path)), "exp",
                          {"name": "exp", "space": load_space("svm").to_dict(), "metrics": METRICS.to_dict()})
    shutil.copytree(tmp_path / "exp", tmp_path / "copy")
    assert main(["rebuild", str(tmp_path / "copy")]) == 0
    for name in ("trials.parquet", "epochs.parquet"):
        table = pq.read_table(tmp_path / "copy" / name)
        meta = json.loads(table.schema.metadata[b"tune_pipeline"])
        assert table["experiment"].to_pylist() == ["copy"] and meta["experiment"] == "copy"


def test_a_rebuild_never_writes_over_good_files_from_no_journal_or_a_bad_record(tmp_path, capsys):
    writer = _writer(tmp_path)
    writer.start_trial("a", 0, {"kernel": "linear", "C": 1.0})
    writer.add_result("a", {"score": 0.9, "fidelity": 1.0, "training_iteration": 1})
    writer.end_trial("a", "finished")
    writer.flush()
    record = {"name": "exp", "space": load_space("svm").to_dict(), "metrics": METRICS.to_dict()}
    write_experiment_json(Storage(str(tmp_path)), "exp", record)
    trials = tmp_path / "exp" / "trials.parquet"
    good = trials.read_bytes()
    (tmp_path / "exp" / "journal.jsonl").rename(tmp_path / "journal.jsonl")
    capsys.readouterr()
    # Before: "rebuilt ... with 0 trials", exit 0, and an empty trials.parquet.
    assert main(["rebuild", str(tmp_path / "exp")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "holds no journal" in err and err.count("\n") == 1
    assert trials.read_bytes() == good
    (tmp_path / "journal.jsonl").rename(tmp_path / "exp" / "journal.jsonl")
    for broken in ('{"bad', json.dumps({k: v for k, v in record.items() if k != "space"})):
        (tmp_path / "exp" / "experiment.json").write_text(broken)
        assert main(["rebuild", str(tmp_path / "exp")]) == 2  # a traceback before
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "not a readable experiment record" in err, err
        assert err.count("\n") == 1 and trials.read_bytes() == good
    with pytest.raises(SystemExit) as exit_info:
        main(["rebuild"])  # argparse's usage and error took two lines
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1


def test_a_journal_in_both_layouts_puts_an_end_after_the_report_of_the_same_time(tmp_path):
    # Ran on a bucket (an object per event), resumed on a disk (a file): the resume's end of a
    # trial ASHA had cut is written at the cut report's time. Sorted by time alone, the end
    # came first and the trial lost its report.
    from pipelines.journal import Journal

    objects = tmp_path / "exp" / "journal"
    objects.mkdir(parents=True)
    events = [{"event": "start", "trial_id": "a", "trial_index": 0, "config": {}, "time": 1.0},
              {"event": "report", "trial_id": "a", "iteration": 1, "metrics": {"score": 0.5},
               "time": 2.0}]
    for seq, event in enumerate(events, 1):
        (objects / f"a000001-{seq:09d}.json").write_text(json.dumps(event))
    (tmp_path / "exp" / "journal.jsonl").write_text(json.dumps(
        {"event": "end", "trial_id": "a", "status": "stopped_early", "stopped_by": "scheduler",
         "time": 2.0}) + "\n")
    assert [e["event"] for e in Journal(Storage(str(tmp_path)), "exp").read()] == \
        ["start", "report", "end"]
    writer = _writer(tmp_path)
    assert writer.load_journal() == 1
    assert [r["iteration"] for r in writer.log.epoch_reports("a")] == [1]


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


# --- Parquet in parts, compacted at the end ----------------------------------------------------
class _CountingStorage(Storage):
    """A local Storage that records every file it writes (path, bytes)."""

    def __init__(self, root):
        super().__init__(root)
        self.writes = []

    def write_bytes(self, relpath, data):
        self.writes.append((relpath, len(data)))
        super().write_bytes(relpath, data)


def _trial(writer, index, *, epochs=3, status="finished", score=None, tid=None):
    tid = tid or f"t{index:03d}"
    writer.start_trial(tid, index, {"kernel": "rbf", "C": 10.0 ** (index % 5 - 2), "gamma": 0.1})
    for it in range(1, epochs + 1):
        value = score if score is not None else 0.5 + index / 1000 + it / 100
        writer.add_result(tid, {"score": value, "fidelity": it / epochs, "training_iteration": it,
                                "hostname": f"host{it}", "time_total_s": 0.1 * it,
                                "timestamp": 1_700_000_000 + it})
    writer.end_trial(tid, status, error="Traceback\nValueError: boom" if status == "error" else None)
    return tid


def test_each_flush_writes_only_the_trials_ended_since_the_last(tmp_path):
    storage = _CountingStorage(str(tmp_path))
    writer = ResultsWriter(storage, "exp", load_space("svm"), METRICS,
                           {"algorithm": "grid", "scheduler": "fifo", "seed": 0}, {},
                           flush_every_s=3600)
    per_flush = []
    for i in range(240):
        before = len(storage.writes)
        _trial(writer, i, epochs=4)
        writer.write_part()  # what end_trial does once flush_every_s has passed
        per_flush.append(storage.writes[before:])
    # Two small files per flush (the trial's reports, then the trial), under one attempt, in
    # order; never a rewrite of what earlier flushes wrote.
    for seq, written in enumerate(per_flush, start=1):
        assert [path for path, _ in written] == [f"exp/parts/epochs/a000001/{seq:09d}.parquet",
                                                 f"exp/parts/trials/a000001/{seq:09d}.parquet"]
    sizes = [sum(size for _, size in written) for written in per_flush]
    assert max(sizes[-20:]) <= 1.2 * max(sizes[:20]), (sizes[:20], sizes[-20:])
    assert not (tmp_path / "exp" / "trials.parquet").exists()
    # The folder of parts is the run's view so far: plain pandas reads it, a write in
    # progress (a dot file) and all.
    (tmp_path / "exp" / "parts" / "trials" / "a000001" / ".000000241.parquet.x.tmp").write_bytes(b"PAR1")
    trials = pd.read_parquet(tmp_path / "exp" / "parts" / "trials")
    assert sorted(trials["trial_index"]) == list(range(240)) and trials["trial_id"].is_unique
    assert len(pd.read_parquet(tmp_path / "exp" / "parts" / "epochs")) == 240 * 4
    # The end compacts them into the two files users read, and deletes the parts.
    writer.flush()
    assert [path for path, _ in storage.writes[-2:]] == ["exp/epochs.parquet", "exp/trials.parquet"]
    assert not (tmp_path / "exp" / "parts").exists()
    assert pd.read_parquet(tmp_path / "exp" / "trials.parquet")["trial_index"].tolist() == list(range(240))


def test_the_first_trial_to_end_writes_a_part_at_once(tmp_path):
    writer = _writer(tmp_path)
    _trial(writer, 0)
    assert (tmp_path / "exp" / "parts" / "trials" / "a000001" / "000000001.parquet").exists()
    _trial(writer, 1)  # within flush_every_s of the first: waits for the next part
    assert len(list((tmp_path / "exp" / "parts" / "trials" / "a000001").iterdir())) == 1


def _slow_table(rows, schema):
    """Rows to a table value by value, as every flush did before the results came in parts."""
    from pipelines.results import _cast

    return pa.table({f.name: [_cast(r.get(f.name), f.type) for r in rows] for f in schema},
                    schema=schema)


def _journal_view(root, experiment="exp"):
    """trials and epochs as the journal alone gives them (a fresh writer replaying it)."""
    view = ResultsWriter(Storage(str(root)), experiment, load_space("svm"), METRICS, {}, {})
    view.load_journal()
    epochs = [{"experiment": experiment, "trial_id": t["trial_id"], "trial_index": t["trial_index"],
               "iteration": r["iteration"], **{n: r["metrics"].get(n) for n in METRICS.columns},
               "time_total_s": r["metrics"].get("time_total_s"),
               "timestamp": r["metrics"].get("timestamp", r.get("time"))}
              for t in view.log.ended() for r in view.log.epoch_reports(t["trial_id"])]
    return (_slow_table(view.finished_rows(), view.trials_schema).to_pandas(),
            _slow_table(epochs, view.epochs_schema).to_pandas())


def test_compaction_equals_the_journals_view(tmp_path):
    writer = _writer(tmp_path, flush_every_s=3600)
    # Trials that end out of the searcher's order, over several parts: a failure, a NaN score,
    # a trial restarted from its checkpoint, a late restart of an ended trial.
    _trial(writer, 3)
    _trial(writer, 0, status="error", epochs=1)
    writer.write_part()
    _trial(writer, 2, score=math.nan)
    writer.start_trial("t001", 1, {"kernel": "linear", "C": 1.0})
    writer.add_result("t001", {"score": 0.8, "fidelity": 0.5, "training_iteration": 1,
                               "hostname": "a", "checkpoint_path": "/ckpt/1"})
    writer.start_trial("t001", 1, {"kernel": "linear", "C": 1.0})  # a retry from epoch 1
    writer.add_result("t001", {"score": 0.9, "fidelity": 1.0, "training_iteration": 2,
                               "hostname": "b"})
    writer.end_trial("t001", "finished")
    writer.write_part()
    _trial(writer, 0)  # ended already: ignored
    # The driver dies; a resumed one replays the journal and ends the rest.
    resumed = _writer(tmp_path, flush_every_s=3600)
    assert resumed.load_journal() == 4
    _trial(resumed, 5)
    _trial(resumed, 4, status="stopped_early", epochs=1)
    resumed.write_part()
    _trial(resumed, 6)
    resumed.flush()
    folder = tmp_path / "exp"
    assert not (folder / "parts").exists()
    trials, epochs = _journal_view(tmp_path)
    got_trials = pd.read_parquet(folder / "trials.parquet")
    got_epochs = pd.read_parquet(folder / "epochs.parquet")
    pd.testing.assert_frame_equal(got_trials, trials)
    pd.testing.assert_frame_equal(got_epochs, epochs)
    assert got_trials["trial_index"].tolist() == list(range(7))
    row = got_trials.set_index("trial_id").loc["t001"]
    assert row["node"] == "b" and row["checkpoint"] == "/ckpt/1" and row["iterations"] == 2
    # rebuild gives the same files, from the journal alone.
    write_experiment_json(Storage(str(tmp_path)), "exp", {
        "name": "exp", "space": load_space("svm").to_dict(), "metrics": METRICS.to_dict(),
        "schema_version": 1})
    (folder / "trials.parquet").unlink()
    assert main(["rebuild", str(folder)]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "trials.parquet"), trials)
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "epochs.parquet"), epochs)


def test_a_resume_writes_a_new_attempt_and_never_overwrites_a_part(tmp_path):
    from pipelines import analysis

    write_experiment_json(Storage(str(tmp_path)), "exp", {
        "name": "exp", "space": load_space("svm").to_dict(), "metrics": METRICS.to_dict(),
        "schema_version": 1})
    parts = tmp_path / "exp" / "parts"
    first = _writer(tmp_path, flush_every_s=3600)
    _trial(first, 0)  # part a000001/1
    _trial(first, 1)
    first.write_part()  # part a000001/2 ...
    # ... but the driver was killed between its two files: the epochs part has no trials part.
    (parts / "trials" / "a000001" / "000000002.parquet").unlink()
    exp = analysis.load_experiment(tmp_path / "exp")  # a reader now: what the parts hold, whole
    assert exp.trials["trial_id"].tolist() == ["t000"]
    assert exp.epochs["trial_id"].tolist() == ["t000"] * 3

    resumed = _writer(tmp_path, flush_every_s=3600)
    resumed.load_journal()
    _trial(resumed, 2)  # the resumed driver's first part: every ended trial, under a000002
    assert sorted(p.name for p in (parts / "trials").iterdir()) == ["a000002"]
    part = pd.read_parquet(parts / "trials" / "a000002" / "000000001.parquet")
    assert part["trial_id"].tolist() == ["t000", "t001", "t002"]
    exp = analysis.load_experiment(tmp_path / "exp")
    assert exp.trials["trial_id"].tolist() == ["t000", "t001", "t002"]
    assert len(exp.epochs) == 9 and not exp.epochs.duplicated(["trial_id", "iteration"]).any()


def test_a_reader_keeps_one_row_per_trial_while_a_trial_is_in_two_places(tmp_path):
    import shutil

    from pipelines import analysis

    write_experiment_json(Storage(str(tmp_path)), "exp", {
        "name": "exp", "space": load_space("svm").to_dict(), "metrics": METRICS.to_dict(),
        "schema_version": 1})
    writer = _writer(tmp_path, flush_every_s=3600)
    for i in range(3):
        _trial(writer, i)
        writer.write_part()
    parts = tmp_path / "exp" / "parts"
    # A resume caught between its first part and deleting the earlier attempt's parts.
    for kind in ("trials", "epochs"):
        shutil.copytree(parts / kind / "a000001", parts / kind / "a000002")
    exp = analysis.load_experiment(tmp_path / "exp")
    assert exp.trials["trial_id"].tolist() == ["t000", "t001", "t002"]
    assert len(exp.epochs) == 9 and not exp.epochs.duplicated(["trial_id", "iteration"]).any()
    # A compaction caught between writing the two files and deleting the parts.
    shutil.copytree(parts, tmp_path / "saved")
    writer.flush()
    shutil.copytree(tmp_path / "saved", parts)
    exp = analysis.load_experiment(tmp_path / "exp")
    assert exp.trials["trial_id"].tolist() == ["t000", "t001", "t002"]
    assert len(exp.epochs) == 9 and not exp.epochs.duplicated(["trial_id", "iteration"]).any()


def test_whole_columns_convert_exactly_as_value_by_value(tmp_path):
    # pyarrow converts a plain column in C; anything else takes _cast value by value. Either
    # way the values must be the ones the value-by-value path gives.
    import random

    import numpy as np

    from pipelines.results import _cast, _column

    rng = random.Random(0)
    pool = [None, 0, 1, -3, 2**40, 0.0, -0.0, 1.5, 3.0, 3.7, 1e300, math.nan, math.inf, True,
            False, "abc", "1.5", "5", "nan", "", np.float32(0.1), np.float64(2.5), np.int64(7),
            np.bool_(True), 1_700_000_000, 1_700_000_000.9995, 1_700_000_000.9999996,
            1_700_000_000.0004995, 1_699_999_999.123456789]
    times = [None] + [1.6e9 + rng.random() * 1e8 for _ in range(2000)] + [1.7e9 + k / 2e6
                                                                          for k in range(2000)]
    dtypes = [pa.float64(), pa.int64(), pa.bool_(), pa.string(), pa.timestamp("ms", tz="UTC")]

    def plain(array):
        return [("nan" if isinstance(v, float) and math.isnan(v) else v) for v in array.to_pylist()]

    for dtype in dtypes:
        columns = [times] if pa.types.is_timestamp(dtype) else []
        columns += [[rng.choice(pool) for _ in range(rng.randint(0, 6))] for _ in range(400)]
        columns += [[v for v in pool if not isinstance(v, str)]]
        for values in columns:
            try:
                want = pa.array([_cast(v, dtype) for v in values], type=dtype)
            except (pa.ArrowInvalid, OverflowError):
                with pytest.raises((pa.ArrowInvalid, OverflowError)):
                    _column(values, dtype)
                continue
            assert plain(_column(values, dtype)) == plain(want), (dtype, values)


# --- the schema version ---------------------------------------------------------------------
def _versioned_experiment(root, version):
    """A finished experiment whose files say they have schema ``version``."""
    import pyarrow.parquet as pq

    writer = _writer(root)
    _trial(writer, 0)
    writer.flush()
    folder = root / "exp"
    write_experiment_json(Storage(str(root)), "exp", {
        "name": "exp", "task": "svm", "space": load_space("svm").to_dict(),
        "metrics": METRICS.to_dict(), "schema_version": version})
    for name in ("trials.parquet", "epochs.parquet"):
        table = pq.read_table(folder / name)
        meta = json.loads(table.schema.metadata[b"tune_pipeline"])
        assert meta["schema_version"] == 1  # what every file says today
        meta["schema_version"] = version
        pq.write_table(table.replace_schema_metadata({b"tune_pipeline": json.dumps(meta)}),
                       folder / name)
    return folder


@pytest.mark.parametrize("version", [0, 1, None])
def test_the_current_and_older_schema_versions_are_read(tmp_path, version):
    from pipelines import analysis
    from pipelines.searchers._bayesopt_box import warm_start_from_parquet

    folder = _versioned_experiment(tmp_path, version)
    assert len(analysis.load_experiment(folder).trials) == 1
    assert len(warm_start_from_parquet(str(folder / "trials.parquet"), load_space("svm"),
                                       "score")) == 1
    assert main(["rebuild", str(folder)]) == 0


def test_a_newer_schema_version_is_refused_in_one_line(tmp_path, capsys):
    from pipelines import analysis
    from pipelines.report import main as report_main
    from pipelines.results import SchemaVersionError
    from pipelines.searchers._bayesopt_box import warm_start_from_parquet
    from tests.helpers import run_module

    folder = _versioned_experiment(tmp_path, 2)
    newer = "has results schema version 2, newer than this tune-pipeline reads (up to 1)"
    with pytest.raises(analysis.AnalysisError, match=re.escape("experiment.json " + newer)) as info:
        analysis.load_experiment(folder)
    assert "\n" not in str(info.value)
    with pytest.raises(SchemaVersionError, match=re.escape("trials.parquet' " + newer)):
        warm_start_from_parquet(str(folder / "trials.parquet"), load_space("svm"), "score")
    assert main(["rebuild", str(folder)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and newer in err[0]
    # The Parquet files alone say it too (an experiment.json of an older version beside them).
    write_experiment_json(Storage(str(tmp_path)), "exp", {
        "name": "exp", "task": "svm", "space": load_space("svm").to_dict(),
        "metrics": METRICS.to_dict(), "schema_version": 1})
    with pytest.raises(analysis.AnalysisError, match=re.escape("trials.parquet " + newer)):
        analysis.load_experiment(folder)
    # Through the CLIs: one "error:" line, exit 2 (the pipelines' before Ray starts).
    assert report_main([str(folder)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {folder}/trials.parquet {newer}; upgrade tune-pipeline to read it"]
    warm = run_module("pipelines.svm", "--algo", "bayesopt", "--warm-start",
                      str(folder / "trials.parquet"), "--output", str(tmp_path / "out"),
                      "--name", "w", timeout=300)
    assert warm.returncode == 2 and warm.stderr.splitlines() == [
        f"error: --warm-start: '{folder}/trials.parquet' {newer}; upgrade tune-pipeline to read it"]
    _versioned_experiment(tmp_path / "again", 2)
    (tmp_path / "again" / "exp" / "journal.jsonl").touch()
    info = json.loads((tmp_path / "again" / "exp" / "experiment.json").read_text())
    info["journal_version"] = 1
    (tmp_path / "again" / "exp" / "experiment.json").write_text(json.dumps(info))
    resume = run_module("pipelines.svm", "--resume", "--name", "exp",
                        "--output", str(tmp_path / "again"), timeout=300)
    assert resume.returncode == 2 and resume.stderr.splitlines() == [
        f"error: --resume: experiment 'exp' {newer}; upgrade tune-pipeline to read it"]


# --- a real run's files ----------------------------------------------------------------------
@pytest.mark.ray
def test_a_real_experiment_is_queried_by_pandas_pyarrow_and_duckdb_alone(svm_asha_run):
    folder, _ = svm_asha_run
    trials_path, epochs_path = str(folder / "trials.parquet"), str(folder / "epochs.parquet")
    assert not (folder / "parts").exists()  # compacted into the two files at the end

    # No project code from here on: the files are the API.
    import duckdb
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    frame = pd.read_parquet(trials_path)
    finished = frame[frame["status"] == "finished"]
    by_pandas = finished.sort_values(["cv_accuracy", "trial_index"],
                                     ascending=[False, True]).iloc[0]["trial_id"]

    table = pq.read_table(trials_path, filters=[("status", "=", "finished")])
    order = pc.sort_indices(table, [("cv_accuracy", "descending"), ("trial_index", "ascending")])
    by_arrow = table.take(order)["trial_id"][0].as_py()

    db = duckdb.connect()
    by_duckdb, = db.execute(f"SELECT trial_id FROM read_parquet('{trials_path}') "
                            "WHERE status = 'finished' "
                            "ORDER BY cv_accuracy DESC, trial_index LIMIT 1").fetchone()
    assert by_pandas == by_arrow == by_duckdb
    assert json.loads((folder / "experiment.json").read_text())["best"]["trial_id"] == by_pandas

    # The same rows and types in all three.
    assert len(frame) == table.num_rows + (frame["status"] != "finished").sum() == 20
    types = dict(db.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM "
                            f"read_parquet('{trials_path}'))").fetchall())
    assert types["trial_index"] == "BIGINT" and types["param_C"] == "DOUBLE"
    assert types["start_time"] == "TIMESTAMP WITH TIME ZONE" and types["status"] == "VARCHAR"
    assert str(frame["start_time"].dtype) == "datetime64[ms, UTC]"
    # A join of the two files: every trial's reports, as many as it says it made.
    joined = db.execute(f"SELECT t.trial_id, t.iterations, count(*), max(e.iteration) "
                        f"FROM read_parquet('{trials_path}') t "
                        f"JOIN read_parquet('{epochs_path}') e USING (trial_id) "
                        "GROUP BY t.trial_id, t.iterations").fetchall()
    assert len(joined) == 20 and all(n == its == last for _, its, n, last in joined)
    epochs = pd.read_parquet(epochs_path)
    assert len(epochs) == int(frame["iterations"].sum())

    # The schema version: in each file's key-value metadata (read by pyarrow and duckdb) and
    # in experiment.json.
    for path in (trials_path, epochs_path):
        meta = json.loads(pq.read_metadata(path).metadata[b"tune_pipeline"])
        assert meta["schema_version"] == 1 and meta["experiment"] == "asha"
        raw, = db.execute(f"SELECT value FROM parquet_kv_metadata('{path}') "
                          "WHERE key = 'tune_pipeline'").fetchone()
        assert json.loads(raw)["schema_version"] == 1
    assert json.loads((folder / "experiment.json").read_text())["schema_version"] == 1


@pytest.mark.ray
def test_a_real_runs_files_equal_a_rebuild_from_its_journal(svm_asha_run, tmp_path):
    import shutil

    folder, _ = svm_asha_run
    copy = tmp_path / "asha"
    shutil.copytree(folder, copy)
    for name in ("trials.parquet", "epochs.parquet"):
        (copy / name).unlink()
    assert main(["rebuild", str(copy)]) == 0
    for name in ("trials.parquet", "epochs.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(copy / name), pd.read_parquet(folder / name))


def test_a_moved_experiment_reads_its_checkpoints_from_its_own_folder(tmp_path):
    import shutil

    first = tmp_path / "first"
    writer = _writer(first)
    old = str(first / "exp")
    writer.start_trial("a", 0, {"kernel": "linear", "C": 1.0})
    writer.add_result("a", {"score": 0.9, "fidelity": 1.0, "training_iteration": 1,
                            "checkpoint_path": f"{old}/a/train_run/checkpoint_2026-12-07"})
    writer.add_checkpoint("a", f"{old}/a/checkpoint_000000")
    writer.end_trial("a", "finished", checkpoint=f"{old}/a/checkpoint_000000")
    writer.start_trial("b", 1, {"kernel": "linear", "C": 2.0})
    writer.add_checkpoint("b", f"{old}/b/checkpoint_000000")
    shutil.copytree(first / "exp", tmp_path / "second" / "exp")
    # An experiment from before 'locations' was kept, already resumed once in its new folder
    # (that resume recorded only the new folder): its checkpoints still name the first one.
    new = str(tmp_path / "second" / "exp")
    moved = _writer(tmp_path / "second")
    moved.load_journal(moved_from=[new])
    assert moved.lived_in == [new, old]
    assert moved.log.trials["a"]["checkpoint"] == f"{new}/a/checkpoint_000000"
    assert moved.log.last_checkpoint("b") == f"{new}/b/checkpoint_000000"
    assert moved.log.epoch_reports("a")[0]["metrics"]["checkpoint_path"] == \
        f"{new}/a/train_run/checkpoint_2026-12-07"
    # Where it did not move, nothing changes.
    stayed = _writer(first)
    stayed.load_journal()
    assert stayed.lived_in == [old] and stayed.log.last_checkpoint("b") == f"{old}/b/checkpoint_000000"


def test_a_part_the_store_refuses_does_not_fail_the_trial_and_lands_at_the_end(tmp_path, capsys):
    writer = _writer(tmp_path)
    # A real refusal: a file stands where the parts folder must go.
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "parts").write_text("in the way")
    writer.start_trial("a", 0, {"kernel": "linear", "C": 1.0})
    writer.add_result("a", {"score": 0.9, "fidelity": 1.0, "training_iteration": 1})
    writer.end_trial("a", "finished")  # the first end writes a part at once: refused
    assert "warning: could not write a results part" in capsys.readouterr().err
    (tmp_path / "exp" / "parts").unlink()
    writer.flush()
    trials = pd.read_parquet(tmp_path / "exp" / "trials.parquet")
    assert trials["trial_id"].tolist() == ["a"] and trials["status"].tolist() == ["finished"]


def test_a_checkpoint_the_journal_cannot_take_is_a_warning_not_a_lost_checkpoint(tmp_path, capsys):
    import types

    from ray.tune import Checkpoint

    from pipelines.callbacks import ResultsCallback

    writer = _writer(tmp_path)
    callback = ResultsCallback(writer)
    trial = types.SimpleNamespace(trial_id="a", config={"kernel": "linear", "C": 1.0})
    callback.on_trial_start(0, [trial], trial)
    # A real refusal: the journal's file is replaced by a folder.
    journal = tmp_path / "exp" / "journal.jsonl"
    journal.rename(tmp_path / "journal.bak")
    journal.mkdir()
    (tmp_path / "ckpt").mkdir()
    # Tune skips recording the checkpoint on the trial when this raises: it must not.
    callback.on_checkpoint(0, [trial], trial, Checkpoint.from_directory(str(tmp_path / "ckpt")))
    assert "warning: could not journal a checkpoint of trial a" in capsys.readouterr().err


def test_a_trial_continued_after_a_resume_counts_its_attempts_not_the_downtime():
    from pipelines.journal import TrialLog, end_event, report_event, start_event

    log = TrialLog("val_accuracy", "max", {"val_accuracy": None})
    for event in (start_event("t", 0, {}, at=100.0),
                  {**report_event("t", 1, {"val_accuracy": 0.5}), "time": 110.0},
                  # the driver dies; --resume continues the trial a day later
                  start_event("t", 0, {}, at=86_500.0),
                  {**report_event("t", 2, {"val_accuracy": 0.6}), "time": 86_512.0},
                  end_event("t", "finished", at=86_520.0)):
        log.apply(event)
    assert log.run_seconds("t") == pytest.approx(10.0 + 20.0)
    # One attempt: end minus start, as before.
    log.apply(start_event("u", 1, {}, at=5.0))
    log.apply(end_event("u", "finished", at=12.5))
    assert log.run_seconds("u") == pytest.approx(7.5)

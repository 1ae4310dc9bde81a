"""--storage s3://... against a real S3-compatible server on 127.0.0.1 (moto, its own process).

Nothing is mocked: the pipeline runs as a subprocess that finds the server through
AWS_ENDPOINT_URL, as it would find MinIO or AWS; the results are read back with boto3.
"""

import json
import pickle
import time

import pyarrow.fs as pafs
import pytest

from pipelines.storage import Storage, StorageError
from tests.helpers import run_module, tiny_svm_space
from tests.s3_server import free_port


def _use(monkeypatch, server):
    for key, value in server.env().items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)


# --- the Storage class on its own (fast) -----------------------------------------------------

def test_storage_round_trip_through_the_server(s3_server, monkeypatch):
    _use(monkeypatch, s3_server)
    bucket = s3_server.create_bucket()
    storage = Storage(f"s3://{bucket}/runs/team-a/")
    assert not storage.is_local
    assert storage.root == f"{bucket}/runs/team-a"
    assert storage.uri_of("exp", "trials.parquet") == f"s3://{bucket}/runs/team-a/exp/trials.parquet"
    storage.check_writable()
    storage.write_bytes("exp/experiment.json", b'{"a": 1}')
    assert storage.exists("exp", "experiment.json")
    assert not storage.exists("exp", "missing.json")
    assert storage.read_bytes("exp/experiment.json") == b'{"a": 1}'
    # Written where boto3 sees it; the writability probe is gone (pyarrow keeps an empty
    # "runs/team-a/" marker when it deletes the last object of a folder).
    assert set(s3_server.keys(bucket)) - {"runs/team-a/"} == {"runs/team-a/exp/experiment.json"}


def test_tune_gets_a_filesystem_that_still_finds_the_server_after_pickling(s3_server, monkeypatch):
    # Tune pickles storage_filesystem to every trial, on every node: the endpoint must travel
    # inside the object, not in the driver's environment.
    _use(monkeypatch, s3_server)
    bucket = s3_server.create_bucket()
    storage = Storage(f"s3://{bucket}/p")
    path, fs = storage.tune_storage()
    assert path == f"{bucket}/p" and isinstance(fs, pafs.S3FileSystem)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    clone = pickle.loads(pickle.dumps(fs))
    with clone.open_output_stream(f"{path}/from-a-worker") as f:
        f.write(b"checkpoint")
    assert s3_server.read_bytes(bucket, "p/from-a-worker") == b"checkpoint"


def test_s3_specific_endpoint_variable_wins(s3_server, monkeypatch):
    _use(monkeypatch, s3_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing there
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint)
    bucket = s3_server.create_bucket()
    Storage(f"s3://{bucket}/x").check_writable()


@pytest.mark.parametrize("uri, expected", [
    ("s3:///prefix", "names no bucket"),
    ("s3://bucket/prefix?region=us-east-1", "must not carry '.' options"),
    ("nosuchscheme://bucket/prefix", "cannot be opened"),
])
def test_malformed_uris_are_refused_with_one_line(uri, expected, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageError, match=expected) as info:
        Storage(uri).check_writable()
    assert "\n" not in str(info.value)


def test_results_in_parts_then_compacted_on_the_server(s3_server, monkeypatch):
    # The writer's own path on an object store, without Ray: parts as trials end, a reader
    # mid-run, a resume under a new attempt, the compaction, the parts deleted.
    import pyarrow as pa

    from pipelines import analysis
    from pipelines.results import MetricColumns, ResultsWriter, write_experiment_json
    from search_spaces import load_space

    _use(monkeypatch, s3_server)
    bucket = s3_server.create_bucket()
    storage = Storage(f"s3://{bucket}/runs")
    metrics = MetricColumns("score", "max", {"score": pa.float64()}, "epoch", select="best")
    space = load_space("svm")
    write_experiment_json(storage, "exp", {"name": "exp", "space": space.to_dict(),
                                           "metrics": metrics.to_dict(), "schema_version": 1})

    def trial(writer, i):
        writer.start_trial(f"t{i}", i, {"kernel": "linear", "C": 1.0 + i})
        for it in (1, 2):
            writer.add_result(f"t{i}", {"score": i + it / 10, "training_iteration": it})
        writer.end_trial(f"t{i}", "finished")
        writer.write_part()

    first = ResultsWriter(storage, "exp", space, metrics, {}, {}, flush_every_s=3600)
    for i in range(3):
        trial(first, i)
    parts = sorted(k for k in s3_server.keys(bucket, "runs/exp/parts/") if not k.endswith("/"))
    assert parts == [f"runs/exp/parts/{kind}/a000001/{seq:09d}.parquet"
                     for kind in ("epochs", "trials") for seq in (1, 2, 3)]
    during = analysis.load_experiment(f"s3://{bucket}/runs/exp")
    assert during.trials["trial_id"].tolist() == ["t0", "t1", "t2"] and len(during.epochs) == 6

    resumed = ResultsWriter(storage, "exp", space, metrics, {}, {}, flush_every_s=3600)
    assert resumed.load_journal() == 3
    trial(resumed, 3)
    parts = sorted(k for k in s3_server.keys(bucket, "runs/exp/parts/") if not k.endswith("/"))
    assert parts == ["runs/exp/parts/epochs/a000002/000000001.parquet",
                     "runs/exp/parts/trials/a000002/000000001.parquet"]
    resumed.flush()
    keys = s3_server.keys(bucket, "runs/exp/")
    assert not any(k.startswith("runs/exp/parts/") and not k.endswith("/") for k in keys), keys
    trials = s3_server.read_parquet(bucket, "runs/exp/trials.parquet")
    assert trials["trial_id"].tolist() == ["t0", "t1", "t2", "t3"]
    assert len(s3_server.read_parquet(bucket, "runs/exp/epochs.parquet")) == 8


def test_an_experiment_copied_between_a_disk_and_a_bucket_keeps_its_journal(s3_server,
                                                                          monkeypatch, tmp_path):
    # A local experiment journals to one file, an object-store one to an object per event. A
    # copy into the other kind of storage used to read as a journal of 0 trials: a rebuild
    # there wrote empty Parquet files over good ones, and a resume would run every trial again.
    import pyarrow as pa

    from pipelines.journal import Journal
    from pipelines.results import MetricColumns, ResultsWriter, main, write_experiment_json
    from search_spaces import load_space

    _use(monkeypatch, s3_server)
    bucket = s3_server.create_bucket()
    metrics = MetricColumns("score", "max", {"score": pa.float64()}, "epoch")
    space = load_space("svm")

    def run_trials(storage, first, count):
        writer = ResultsWriter(storage, "exp", space, metrics, {}, {}, flush_every_s=3600)
        writer.load_journal()
        for i in range(first, first + count):
            writer.start_trial(f"t{i}", i, {"kernel": "linear", "C": 1.0 + i})
            writer.add_result(f"t{i}", {"score": i / 10, "training_iteration": 1})
            writer.end_trial(f"t{i}", "finished")

    def copy(source, target):
        for rel in source.list_files("exp"):
            target.write_bytes(rel, source.read_bytes(rel))

    local = Storage(str(tmp_path / "laptop"))
    write_experiment_json(local, "exp", {"name": "exp", "space": space.to_dict(),
                                         "metrics": metrics.to_dict(), "schema_version": 1})
    run_trials(local, 0, 2)
    remote = Storage(f"s3://{bucket}/runs")
    copy(local, remote)
    assert Journal(remote, "exp").exists()
    run_trials(remote, 2, 1)  # resumed on the cluster: its events are objects after the file's
    assert [e["trial_id"] for e in Journal(remote, "exp").read() if e["event"] == "start"] == \
        ["t0", "t1", "t2"]
    assert main(["rebuild", f"s3://{bucket}/runs/exp"]) == 0
    assert s3_server.read_parquet(bucket, "runs/exp/trials.parquet")["trial_id"].tolist() == \
        ["t0", "t1", "t2"]

    back = Storage(str(tmp_path / "back"))
    copy(remote, back)  # and down again, to go on locally: the objects came first
    run_trials(back, 3, 1)
    assert [e["trial_id"] for e in Journal(back, "exp").read() if e["event"] == "start"] == \
        ["t0", "t1", "t2", "t3"]
    assert main(["rebuild", str(tmp_path / "back" / "exp")]) == 0
    import pandas as pd

    trials = pd.read_parquet(tmp_path / "back" / "exp" / "trials.parquet")
    assert trials["trial_id"].tolist() == ["t0", "t1", "t2", "t3"]


# --- the pipeline end to end ----------------------------------------------------------------

def _assert_one_line_exit_2_before_ray(proc, *fragments):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: storage "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    # The runner announces "N trials ... on a local Ray" just before starting Ray.
    assert "trials (" not in proc.stderr and proc.stdout == ""


def test_missing_bucket_fails_before_ray_starts(s3_server, tmp_path):
    space = tiny_svm_space(tmp_path / "space.py")
    started = time.monotonic()
    proc = run_module("pipelines.svm", "--space", space, "--dataset", "iris",
                      "--storage", "s3://no-such-bucket/prefix", "--name", "x",
                      env=s3_server.env(), timeout=120)
    _assert_one_line_exit_2_before_ray(proc, "s3://no-such-bucket/prefix", "not writable",
                                       "bucket does not exist")
    assert time.monotonic() - started < 60
    assert "no-such-bucket" not in [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]


def test_unreachable_endpoint_fails_before_ray_starts(s3_server, tmp_path):
    space = tiny_svm_space(tmp_path / "space.py")
    dead = f"http://127.0.0.1:{free_port()}"
    proc = run_module("pipelines.svm", "--space", space, "--dataset", "iris",
                      "--storage", "s3://bucket/prefix", "--name", "x",
                      env=s3_server.env(AWS_ENDPOINT_URL=dead), timeout=120)
    _assert_one_line_exit_2_before_ray(proc, "s3://bucket/prefix", "127.0.0.1")


def test_an_unreachable_google_store_is_one_line_in_seconds_not_a_silent_hang(tmp_path):
    # pyarrow's GCS client retried for 15 minutes: `report gs://...` printed nothing for
    # minutes, and so did a run's start. Its retries now end with TUNE_PIPELINE_STORAGE_RETRY_S.
    # The store is Google's emulator variable aimed at a closed port here: no traffic leaves.
    space = tiny_svm_space(tmp_path / "space.py")
    env = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{free_port()}",
           "TUNE_PIPELINE_STORAGE_RETRY_S": "2"}
    started = time.monotonic()
    proc = run_module("pipelines.svm", "--space", space, "--dataset", "iris",
                      "--storage", "gs://bucket/prefix", "--name", "x", env=env, timeout=120)
    _assert_one_line_exit_2_before_ray(proc, "gs://bucket/prefix", "not writable")
    report = run_module("pipelines.report", "gs://bucket/prefix/x", env=env, timeout=120)
    assert report.returncode == 2, report.stdout + report.stderr
    lines = report.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "gs://bucket/prefix/x" in lines[0]
    assert time.monotonic() - started < 60


@pytest.mark.ray
def test_svm_pipeline_writes_everything_under_the_s3_prefix(s3_server, tmp_path):
    bucket = s3_server.create_bucket("results")
    space = tiny_svm_space(tmp_path / "space.py")  # linear kernel, C in {0.1, 1, 10}
    uri = f"s3://{bucket}/team/tuning"
    proc = run_module("pipelines.svm", "--space", space, "--dataset", "iris",
                      "--storage", uri, "--name", "s3run", "--num-cpus", "2",
                      env=s3_server.env(), cwd=str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"results      {uri}/s3run/" in proc.stdout

    keys = s3_server.keys(bucket)
    prefix = "team/tuning/s3run/"
    # Everything under the prefix, apart from empty folder markers of its parents (which of them
    # pyarrow leaves is its own business).
    outside = [k for k in keys if not k.startswith(prefix)]
    assert all(k.endswith("/") and prefix.startswith(k) for k in outside), keys
    names = {k[len(prefix):] for k in keys if k.startswith(prefix)}
    # The product's files ...
    assert {"trials.parquet", "epochs.parquet", "experiment.json"} <= names
    # The journal: each event its own object, written when it happened (3 trials: at least a
    # start, a report and an end each), never one local file uploaded later.
    journal = sorted(n for n in names if n.startswith("journal/"))
    assert len(journal) >= 9 and all(n.endswith(".json") for n in journal), names
    # ... and Tune's own experiment state, under the same prefix (what --resume reads).
    assert "tuner.pkl" in names
    assert any(n.startswith("experiment_state-") and n.endswith(".json") for n in names), names
    assert not any(".write-probe-" in n for n in names)
    # Nothing was written to a local ./results beside the run.
    assert not (tmp_path / "results").exists()

    trials = s3_server.read_parquet(bucket, "team/tuning/s3run/trials.parquet")
    assert len(trials) == 3
    assert (trials["status"] == "finished").all()
    assert sorted(trials["param_C"]) == [0.1, 1.0, 10.0]
    assert trials["cv_accuracy"].between(0.5, 1.0).all()
    assert trials["node_id"].notna().all()
    epochs = s3_server.read_parquet(bucket, "team/tuning/s3run/epochs.parquet")
    assert set(epochs["trial_id"]) == set(trials["trial_id"])
    info = json.loads(s3_server.read_bytes(bucket, "team/tuning/s3run/experiment.json"))
    assert info["status"] == "finished" and info["counts"]["finished"] == 3

    # The same name again is refused before Ray starts: the check reads the object store.
    again = run_module("pipelines.svm", "--space", space, "--dataset", "iris",
                       "--storage", uri, "--name", "s3run", env=s3_server.env(), timeout=120)
    assert again.returncode == 2 and "already exists" in again.stderr, again.stderr

    # The two files lost (a kill before the end compacted them, say): `rebuild` writes them
    # again from the journal objects, on the object store itself.
    for key in ("trials.parquet", "epochs.parquet"):
        s3_server.client().delete_object(Bucket=bucket, Key=prefix + key)
    rebuilt = run_module("pipelines.results", "rebuild", f"{uri}/s3run", env=s3_server.env(),
                         timeout=120)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "rebuilt trials.parquet and epochs.parquet with 3 trials" in rebuilt.stdout
    again = s3_server.read_parquet(bucket, "team/tuning/s3run/trials.parquet")
    assert sorted(again["param_C"]) == [0.1, 1.0, 10.0]
    assert list(again.sort_values("trial_index")["cv_accuracy"]) == \
        list(trials.sort_values("trial_index")["cv_accuracy"])
    assert len(s3_server.read_parquet(bucket, "team/tuning/s3run/epochs.parquet")) == len(epochs)
    missing = run_module("pipelines.results", "rebuild", f"{uri}/nothing-here",
                         env=s3_server.env(), timeout=120)
    assert missing.returncode == 2 and "holds no experiment.json" in missing.stderr

    # --resume reads the journal back from the object store and keeps the ended trials' rows.
    resumed = run_module("pipelines.svm", "--space", space, "--dataset", "iris",
                         "--storage", uri, "--name", "s3run", "--num-cpus", "2", "--resume",
                         env=s3_server.env(), cwd=str(tmp_path), timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming: 3 ended trials kept, 0 to continue, 0 not started yet" in resumed.stderr
    after = s3_server.read_parquet(bucket, "team/tuning/s3run/trials.parquet")
    assert sorted(after["trial_id"]) == sorted(trials["trial_id"])


def _stalled(server, seconds: float | None):
    """Stop the server's process (it accepts connections and answers nothing, as a stalled or
    overloaded store does) and let it go on after ``seconds`` (None: when the caller does)."""
    import os
    import signal
    import threading

    os.kill(server._proc.pid, signal.SIGSTOP)
    go_on = lambda: os.kill(server._proc.pid, signal.SIGCONT)  # noqa: E731
    if seconds is not None:
        threading.Timer(seconds, go_on).start()
    return go_on


def test_a_write_outlasts_a_store_that_stalls_for_seconds(s3_server, monkeypatch):
    _use(monkeypatch, s3_server)
    storage = Storage(f"s3://{s3_server.create_bucket()}/runs")
    storage.write_bytes("exp/a.json", b"1")
    go_on = _stalled(s3_server, 4.0)
    try:
        storage.write_bytes("exp/b.json", b"2")  # tried again until the store answers
    finally:
        go_on()
    assert storage.read_bytes("exp/b.json") == b"2"


@pytest.mark.ray
def test_a_store_down_for_longer_than_the_retries_is_one_line_and_resume_finishes(s3_server,
                                                                                  tmp_path):
    import subprocess
    import sys

    from tests.helpers import REPO

    bucket = s3_server.create_bucket("down")
    uri = f"s3://{bucket}/runs"
    env = s3_server.env(TUNE_PIPELINE_STORAGE_RETRY_S="3", PYTHONPATH=REPO)
    args = ["--algo", "random", "--num-samples", "40", "--configs-per-trial", "1", "--seed", "1",
            "--storage", uri, "--name", "e", "--num-cpus", "2", "--no-report"]
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.svm", *args], env=env,
                            cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.time() + 240
    while len([k for k in s3_server.keys(bucket) if "/journal/" in k]) < 12:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    # Stalled until the run gives up (a write failed for longer than its 3 s of retries) or
    # for 60 s: a stall that hits a call of Ray's own instead makes the run wait for the store,
    # and it goes on once the store answers. Either way nothing is lost and no traceback shows.
    go_on = _stalled(s3_server, None)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        go_on()
        out, err = proc.communicate(timeout=300)
    finally:
        go_on()
    assert proc.returncode in (0, 1), out + err
    assert "Traceback" not in err, err
    if proc.returncode == 1:
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and f"error: writing {uri}/e/" in errors[0], err
        assert "once it answers, the experiment continues with --resume" in errors[0]
        resumed = run_module("pipelines.svm", "--resume", "--name", "e", "--storage", uri,
                             "--no-report", env=env, cwd=str(tmp_path), timeout=600)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    trials = s3_server.read_parquet(bucket, "runs/e/trials.parquet")
    assert sorted(trials["trial_index"]) == list(range(40)) and trials["trial_id"].is_unique

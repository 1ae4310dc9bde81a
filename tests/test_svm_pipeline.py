"""End to end on a real local Ray: python -m pipelines.svm, then pandas reads the results."""

import json
import os

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.helpers import REPO, run_module
from trainables.svm import cv_score, load_data, refit_and_test

pytestmark = pytest.mark.ray


# A sitecustomize that writes the driver's sys.modules at exit (the last atexit hook to run), to
# check what a run imported. Ray's worker processes inherit the environment; only the driver,
# whose argv[0] is pipelines/svm.py, writes.
_RECORD_MODULES = """
import atexit, os, sys

def _record():
    if sys.argv and sys.argv[0].endswith(os.path.join("pipelines", "svm.py")):
        with open(os.environ["RECORD_MODULES_TO"], "w") as f:
            f.write("\\n".join(sorted(sys.modules)))

atexit.register(_record)
"""


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    hook = tmp_path_factory.mktemp("hook")
    (hook / "sitecustomize.py").write_text(_RECORD_MODULES)
    env = {"PYTHONPATH": os.pathsep.join([REPO, str(hook)]),
           "RECORD_MODULES_TO": str(out / "modules.txt")}
    proc = run_module("pipelines.svm", "--algo", "random", "--num-samples", "6", "--seed", "3",
                      "--output", str(out), "--name", "rand", "--num-cpus", "2", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / "rand", proc


def test_the_svm_pipeline_imports_only_what_it_needs(random_run):
    exp, _ = random_run
    modules = set((exp.parent / "modules.txt").read_text().split())
    assert "ray.tune" in modules and "sklearn" in modules  # the record is of a real run
    assert not {m for m in modules if m == "torch" or m.startswith("torch.")}
    assert "torchvision" not in modules
    # Tune's callback telemetry would import MLflow (installed with the test extra) for a tag
    # that is never sent with usage statistics off; the runner drops it.
    assert "mlflow" not in modules


def test_phases_of_the_run_are_recorded(random_run):
    exp, _ = random_run
    info = json.loads((exp / "experiment.json").read_text())
    phases = info["phases_s"]
    for key in ("prepare", "ray_start", "wait_for_load", "tuner_build", "first_trial_start",
                "tune", "evaluation", "report", "shutdown"):
        assert phases[key] >= 0, key
    # The phases in sequence add up to no more than the run; the others are parts of them.
    # (wall_time_s is stamped before the report, which has a phase of its own.)
    in_turn = ("prepare", "ray_start", "wait_for_load", "tuner_build", "tune", "evaluation")
    assert sum(phases[k] for k in in_turn) <= info["wall_time_s"] + 1e-3
    assert phases["first_trial_start"] <= phases["tune"]
    assert (exp / "report.html").exists()  # written while Ray shut down beside it
    assert phases["report"] > 0


def test_parquet_round_trip(random_run):
    exp, _ = random_run
    trials = pd.read_parquet(exp / "trials.parquet")  # plain pandas, no project code
    assert len(trials) == 6
    assert (trials["status"] == "finished").all()
    assert trials["error"].isna().all()
    # Each config parameter is its own typed column, null where inactive.
    assert str(trials["param_C"].dtype) == "float64"
    assert str(trials["param_degree"].dtype) in ("Int64", "int64", "float64")
    assert trials.loc[trials["param_kernel"] == "linear", "param_gamma"].isna().all()
    assert trials.loc[trials["param_kernel"] != "linear", "param_gamma"].notna().all()
    assert trials.loc[trials["param_kernel"] != "poly", "param_degree"].isna().all()
    assert (trials["algorithm"] == "random").all() and (trials["seed"] == 3).all()
    assert (trials["end_time"] >= trials["start_time"]).all()
    assert (trials["wall_time_s"] > 0).all()
    assert trials["node_id"].notna().all() and trials["node"].notna().all()
    assert sorted(trials["trial_index"]) == list(range(6))
    epochs = pd.read_parquet(exp / "epochs.parquet")
    assert len(epochs) == 6 and set(epochs["trial_id"]) == set(trials["trial_id"])
    meta = json.loads(pq.read_schema(exp / "trials.parquet").metadata[b"tune_pipeline"])
    assert meta["schema_version"] == 1


def test_configs_are_the_seeded_random_sample_and_scores_are_real(random_run):
    from search_spaces import load_space

    exp, _ = random_run
    trials = pd.read_parquet(exp / "trials.parquet").sort_values("trial_index")
    expected = load_space("svm").sample(6, seed=3)
    got = [{k[6:]: v for k, v in row.items() if k.startswith("param_") and pd.notna(v)}
           for row in trials.to_dict("records")]
    for want, have in zip(expected, got, strict=True):
        assert want.keys() == have.keys()
        for key in want:
            if isinstance(want[key], float):
                assert have[key] == pytest.approx(want[key], rel=1e-12)
            else:  # kernel names and degrees: exact (pytest.approx refuses strings)
                assert have[key] == want[key], key
    data = load_data("digits", seed=0)
    first = trials.iloc[0]
    assert first["cv_accuracy"] == pytest.approx(cv_score(expected[0], data)["cv_accuracy"], abs=1e-12)


def test_best_is_refit_and_tested_once(random_run):
    exp, proc = random_run
    info = json.loads((exp / "experiment.json").read_text())
    trials = pd.read_parquet(exp / "trials.parquet")
    best = info["best"]
    assert best["cv_accuracy"] == trials["cv_accuracy"].max()
    data = load_data("digits", seed=0)
    # Same refit, another process: equal up to float rounding; one test sample is 1/360.
    assert best["test_accuracy"] == pytest.approx(
        refit_and_test(best["config"], data)["test_accuracy"], abs=1e-9)
    assert f"{best['test_accuracy']:.4f}" in proc.stdout
    assert info["status"] == "finished" and info["counts"]["finished"] == 6
    assert info["space"]["params"]["C"]["log"] is True
    assert "ray" in info["packages"] and info["flags"]["num_samples"] == 6


def test_grid_run_on_a_user_space_file(tmp_path):
    from tests.helpers import tiny_svm_space

    space = tiny_svm_space(tmp_path / "space.py")
    proc = run_module("pipelines.svm", "--space", space, "--output", str(tmp_path / "out"),
                      "--name", "g", "--dataset", "iris", "--num-cpus", "2", "--max-concurrent", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trials = pd.read_parquet(tmp_path / "out" / "g" / "trials.parquet")
    assert sorted(trials["param_C"]) == [0.1, 1.0, 10.0]
    # With one trial at a time, no two trials overlap.
    spans = trials.sort_values("start_time")[["start_time", "end_time"]].to_numpy()
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))

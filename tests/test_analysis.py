"""pipelines.analysis: the numbers behind every figure of the report.

Exact numbers come from hand-written experiment folders (tests/experiment_files.py); the real
ones from one ``python -m pipelines.svm --scheduler asha`` run (``svm_asha_run`` in conftest).
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pipelines import analysis
from pipelines.analysis import AnalysisError
from tests.experiment_files import LAST_REPORT, write_experiment
from tests.helpers import REPO

NAN = float("nan")


def _values(series) -> list:
    return [None if pd.isna(v) else round(float(v), 12) for v in series]


# --- hand-written experiments, exact numbers --------------------------------------------------
def _five_trials(tmp_path, mode="max", scores=(0.5, 0.7, None, 0.7, 0.6)):
    """Five trials: t02 failed; t01 and t03 tie; the searcher order and the end order differ."""
    from tests.experiment_files import BEST_EPOCH, MetricColumns

    metrics = MetricColumns("score", mode, dict(BEST_EPOCH.columns), "epoch", select="best")
    times = [(100, 110), (100, 104), (104, 105), (105, 120), (110, 112)]
    trials = []
    for i, (score, (start, end)) in enumerate(zip(scores, times, strict=True)):
        row = {"params": {"lr": 10.0 ** -(i + 1), "opt": "adam"}, "score": score, "epoch": 3,
               "start": start, "end": end}
        if score is None:
            row.update(status="error", error="ValueError: boom", iterations=0)
        trials.append(row)
    trials[4].update(status="stopped_early", stopped_by="patience")
    return analysis.load_experiment(write_experiment(tmp_path, f"five-{mode}", trials,
                                                     metrics=metrics))


def test_best_so_far_by_trial_and_by_wall_time(tmp_path):
    exp = _five_trials(tmp_path)
    by_trial = analysis.best_so_far(exp, by="trial")
    assert list(by_trial["trial"]) == [1, 2, 3, 4, 5]
    assert _values(by_trial["score"]) == [0.5, 0.7, None, 0.7, 0.6]  # the failed trial: no score
    assert _values(by_trial["best_so_far"]) == [0.5, 0.7, 0.7, 0.7, 0.7]
    # By wall time: in the order trials ended, seconds from the first start (100).
    by_time = analysis.best_so_far(exp, by="time")
    assert list(by_time["trial_id"]) == ["t01", "t02", "t00", "t04", "t03"]
    assert _values(by_time["elapsed_s"]) == [4.0, 5.0, 10.0, 12.0, 20.0]
    assert _values(by_time["best_so_far"]) == [0.7, 0.7, 0.7, 0.7, 0.7]
    with pytest.raises(ValueError, match="by must be"):
        analysis.best_so_far(exp, by="epoch")


def test_a_tie_goes_to_the_earliest_trial_and_min_mode_counts_down(tmp_path):
    exp = _five_trials(tmp_path)
    assert analysis.best_trial(exp)["trial_id"] == "t01"  # t03 ties at 0.7, later
    assert list(analysis.ranked_trials(exp)["trial_id"]) == ["t01", "t03", "t04", "t00"]
    low = _five_trials(tmp_path, mode="min", scores=(0.5, 0.7, None, 0.3, 0.3))
    assert _values(analysis.best_so_far(low)["best_so_far"]) == [0.5, 0.5, 0.5, 0.3, 0.3]
    assert analysis.best_trial(low)["trial_id"] == "t03"


def _fidelity_experiment(tmp_path):
    """An SVM-like ASHA run: t00 and t03 were cut at 1/3 and 1/9 of the rows."""
    third, ninth = 1 / 3, 1 / 9
    trials = [
        {"params": {"lr": 1e-2, "opt": "adam"}, "score": 0.90, "fidelity": third,
         "status": "stopped_early", "stopped_by": "scheduler", "iterations": 2},
        {"params": {"lr": 1e-3, "opt": "adam"}, "score": 0.80, "fidelity": 1.0, "iterations": 3},
        {"params": {"lr": 1e-4, "opt": "sgd", "momentum": 0.5}, "score": 0.85, "fidelity": 1.0,
         "iterations": 3},
        {"params": {"lr": 1e-5, "opt": "adam"}, "score": 0.95, "fidelity": ninth,
         "status": "stopped_early", "stopped_by": "scheduler", "iterations": 1},
    ]
    curves = {"t00": [0.70, 0.90], "t01": [0.60, 0.70, 0.80], "t02": [0.65, 0.75, 0.85],
              "t03": [0.95]}
    epochs = [{"trial_id": t, "iteration": k + 1, "fidelity": (ninth, third, 1.0)[k], "score": v}
              for t, values in curves.items() for k, v in enumerate(values)]
    return analysis.load_experiment(write_experiment(
        tmp_path, "fidelity", trials, epochs=epochs, metrics=LAST_REPORT,
        info={"best": {"trial_id": "t02", "config": {"lr": 1e-4}, "score": 0.85,
                       "test_accuracy": 0.8125}}))


def test_scores_below_the_top_fidelity_are_never_ranked(tmp_path):
    exp = _fidelity_experiment(tmp_path)
    # t03 scored 0.95 on a ninth of the rows: not comparable with a score on all of them.
    assert list(analysis.ranked_trials(exp)["trial_id"]) == ["t02", "t01"]
    assert analysis.best_trial(exp)["trial_id"] == "t02"
    assert _values(analysis.best_so_far(exp)["best_so_far"]) == [None, 0.8, 0.85, 0.85]
    assert analysis.test_result(exp) == {"trial_id": "t02", "score": 0.85, "test_accuracy": 0.8125}


def test_learning_curves_and_where_each_trial_stopped(tmp_path):
    exp = _fidelity_experiment(tmp_path)
    curves = analysis.learning_curves(exp)
    assert curves.attrs == {"step": "fidelity", "metric": "score"}
    assert _values(curves.loc[curves["trial_id"] == "t01", "value"]) == [0.6, 0.7, 0.8]
    assert _values(curves.loc[curves["trial_id"] == "t01", "step"]) == \
        [round(1 / 9, 12), round(1 / 3, 12), 1.0]
    stops = analysis.stop_points(exp).set_index("trial_id")
    assert stops["stopped_by"].to_dict() == {"t00": "scheduler", "t01": None, "t02": None,
                                             "t03": "scheduler"}
    assert stops.loc["t00", ["iteration", "value"]].tolist() == [2, 0.9]
    assert stops.loc["t03", "step"] == pytest.approx(1 / 9)
    assert (stops.loc[["t01", "t02"], "step"] == 1.0).all()
    patience = analysis.stop_points(_five_trials(tmp_path)).set_index("trial_id")
    assert patience.loc["t04", "stopped_by"] == "patience"
    assert "t02" not in patience.index  # failed before its first report: no curve to end


def test_compute_spent_adds_up_trial_seconds_and_reports(tmp_path):
    spent = analysis.compute_spent(_five_trials(tmp_path))
    assert spent["trials"] == 5 and spent["errors"] == 1 and spent["stopped_early"] == 1
    assert spent["finished"] == 3
    assert spent["trial_seconds"] == 10 + 4 + 1 + 15 + 2
    assert spent["epochs"] == 4  # one report per trial that scored
    assert math.isnan(spent["wall_time_s"])  # the hand-written experiment.json has none


def test_encode_params_uses_the_space_scale_and_leaves_inactive_params_empty(tmp_path):
    exp = _fidelity_experiment(tmp_path)
    encoded = analysis.encode_params(exp)
    assert list(encoded.columns) == ["lr", "opt", "momentum"]
    # lr is LogFloat(1e-5, 1e-1): 1e-3 is half way in log10, 1e-2 three quarters.
    assert _values(encoded["lr"]) == [0.75, 0.5, 0.25, 0.0]
    assert _values(encoded["opt"]) == [0.0, 0.0, 1.0, 0.0]
    assert _values(encoded["momentum"]) == [None, None, 0.5, None]


def _synthetic(tmp_path, n, score=None, name="synthetic"):
    """n random configs of the small space; the score depends on lr alone (peak at 1e-3)."""
    rng = np.random.default_rng(7)
    trials = []
    for _ in range(n):
        lr = 10.0 ** rng.uniform(-5, -1)
        params = {"lr": lr, "opt": str(rng.choice(["adam", "sgd"]))}
        if params["opt"] == "sgd":
            params["momentum"] = float(rng.uniform())
        value = -((math.log10(lr) + 3.0) ** 2) if score is None else score
        trials.append({"params": params, "score": value, "epoch": 1})
    return analysis.load_experiment(write_experiment(tmp_path, name, trials))


def test_importance_finds_the_one_parameter_that_matters(tmp_path):
    exp = _synthetic(tmp_path, 40)
    result = analysis.param_importance(exp)
    assert result.reason is None and result.n_trials == 40
    assert list(result.importances.index)[0] == "lr"
    assert set(result.importances.index) == {"lr", "opt", "momentum"}  # inactive: filled, kept
    assert np.isfinite(result.importances).all() and np.isfinite(result.std).all()
    assert result.importances["lr"] > 0.5
    assert result.importances["lr"] > 10 * result.importances.drop("lr").abs().max()
    assert list(result.std.index) == list(result.importances.index)
    again = analysis.param_importance(exp)
    pd.testing.assert_series_equal(result.importances, again.importances)  # seeded


def test_importance_refuses_too_few_trials_or_nothing_to_explain(tmp_path):
    few = analysis.param_importance(_synthetic(tmp_path, 7, name="few"))
    assert few.importances.empty and few.n_trials == 7
    assert few.reason == "7 trials with a comparable score; importance needs at least 8"
    flat = analysis.param_importance(_synthetic(tmp_path, 12, score=0.5, name="flat"))
    assert flat.importances.empty and "every ranked trial scored the same (0.5)" in flat.reason


def test_several_experiments_as_one_table_each(tmp_path):
    first = _five_trials(tmp_path)
    second = _fidelity_experiment(tmp_path)
    again = analysis.load_experiment(first.location)
    trials = analysis.trials_frame([first, second])
    assert len(trials) == 9 and set(trials["experiment"]) == {"five-max", "fidelity"}
    assert len(analysis.epochs_frame([first, second])) == 4 + 9
    settings = analysis.settings_frame([first, second])
    assert list(settings.index) == ["five-max", "fidelity"]
    assert settings.loc["fidelity", "best_trial_id"] == "t02"
    assert settings.loc["fidelity", "test_accuracy"] == 0.8125
    assert settings.loc["five-max", "best_score"] == 0.7
    # The same name twice is told apart by where it was read from.
    assert analysis.experiment_labels([first, again]) == [
        f"five-max ({first.location})", f"five-max ({again.location})"]


def test_two_experiments_of_one_name_stay_apart_in_the_tables_and_join_their_settings(tmp_path):
    # Every comparison has a runs/random-fifo-s0: the rows of two such runs read as one
    # experiment before, while settings_frame told them apart, so the two did not join.
    import shutil

    first = _five_trials(tmp_path)
    shutil.copytree(first.location, tmp_path / "other" / "five-max")
    second = analysis.load_experiment(tmp_path / "other" / "five-max")
    labels = analysis.experiment_labels([first, second])
    assert labels[0] != labels[1]
    trials = analysis.trials_frame([first, second])
    assert trials["experiment"].value_counts().to_dict() == {labels[0]: 5, labels[1]: 5}
    epochs = analysis.epochs_frame([first, second])
    assert epochs.groupby("experiment").size().to_dict() == {
        labels[0]: len(first.epochs), labels[1]: len(second.epochs)}
    settings = analysis.settings_frame([first, second])
    joined = trials.join(settings[["best_trial_id"]], on="experiment")
    assert joined["best_trial_id"].notna().all()
    assert first.trials["experiment"].unique().tolist() == ["five-max"]  # the loaded tables stay
    assert analysis.trials_frame([first])["experiment"].unique().tolist() == ["five-max"]


# --- bad input --------------------------------------------------------------------------------
def test_what_is_not_an_experiment_is_one_clear_error(tmp_path):
    good = _five_trials(tmp_path).location
    with pytest.raises(AnalysisError, match="does not exist"):
        analysis.load_experiment(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(AnalysisError, match="is not an experiment folder: it holds no "
                                            "experiment.json"):
        analysis.load_experiment(tmp_path / "plain")
    with pytest.raises(AnalysisError, match="is a file, not an experiment folder"):
        analysis.load_experiment(os.path.join(good, "trials.parquet"))
    with pytest.raises(AnalysisError, match="no experiment given"):
        analysis.load_experiments([])


@pytest.mark.parametrize("damage, message", [
    ("trials.parquet:junk", "cannot read .*trials.parquet"),
    ("epochs.parquet:", "cannot read .*epochs.parquet"),
    ("experiment.json:{not json", "cannot read .*experiment.json"),
    ('experiment.json:{"name": "x"}', "experiment.json names no metric"),
    ("experiment.json:[1, 2]", "experiment.json is not a JSON object"),
    ("trials.parquet", "holds no trials.parquet yet"),
])
def test_unreadable_files_are_named(tmp_path, damage, message):
    folder = _five_trials(tmp_path).location
    name, _, text = damage.partition(":")
    path = os.path.join(folder, name)
    if ":" in damage:
        with open(path, "w") as f:
            f.write(text)
    else:
        os.remove(path)
    with pytest.raises(AnalysisError, match=message) as info:
        analysis.load_experiment(folder)
    assert "\n" not in str(info.value)


def test_parquet_from_elsewhere_is_refused(tmp_path):
    folder = _five_trials(tmp_path).location
    pd.DataFrame({"a": [1]}).to_parquet(os.path.join(folder, "epochs.parquet"))
    with pytest.raises(AnalysisError, match="epochs.parquet has no column 'trial_id'"):
        analysis.load_experiment(folder)


def test_analysis_never_imports_ray(tmp_path):
    folder = _synthetic(tmp_path, 10).location
    code = ("import sys\n"
            "import pipelines.analysis as a\n"
            "e = a.load_experiment(sys.argv[1])\n"
            "a.param_importance(e); a.best_so_far(e, by='time'); a.stop_points(e)\n"
            "loaded = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
            "assert not loaded, loaded\n")
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-c", code, folder], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_an_experiment_on_an_object_store_reads_like_a_local_one(tmp_path, s3_server,
                                                                 monkeypatch):
    for key, value in s3_server.env().items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    bucket = s3_server.create_bucket()
    local = _five_trials(tmp_path)
    for name in ("trials.parquet", "epochs.parquet", "experiment.json"):
        with open(os.path.join(local.location, name), "rb") as f:
            s3_server.client().put_object(Bucket=bucket, Key=f"runs/five-max/{name}",
                                          Body=f.read())
    remote = analysis.load_experiment(f"s3://{bucket}/runs/five-max")
    pd.testing.assert_frame_equal(remote.trials, local.trials)
    pd.testing.assert_frame_equal(remote.epochs, local.epochs)
    assert analysis.best_trial(remote)["trial_id"] == "t01"
    with pytest.raises(AnalysisError, match="holds no experiment.json"):
        analysis.load_experiment(f"s3://{bucket}/runs/nothing-here")


# --- a real run -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real(svm_asha_run):
    folder, _ = svm_asha_run
    exp = analysis.load_experiment(folder)
    info = json.loads((folder / "experiment.json").read_text())
    return exp, info


@pytest.mark.ray
def test_the_best_trial_is_the_one_the_run_scored_on_the_test_split(real):
    exp, info = real
    best = analysis.best_trial(exp)
    assert best["trial_id"] == info["best"]["trial_id"]
    assert best["cv_accuracy"] == info["best"]["cv_accuracy"]
    assert analysis.test_result(exp)["test_accuracy"] == info["best"]["test_accuracy"]


@pytest.mark.ray
def test_real_ranking_best_so_far_and_cost_agree_with_the_raw_files(real):
    exp, info = real
    trials = exp.trials
    ranked = analysis.ranked_trials(exp)
    # ASHA cut some trials below the full fidelity; only full-fidelity scores are ranked.
    cut = trials.loc[trials["status"] == "stopped_early"]
    assert len(cut) > 0 and (cut["stopped_by"] == "scheduler").all()
    assert set(ranked["trial_id"]) == set(trials.loc[trials["fidelity"] == 1.0, "trial_id"])
    keys = list(zip(-ranked["cv_accuracy"], ranked["trial_index"], strict=True))
    assert keys == sorted(keys)
    # Best so far, recomputed by brute force from trials.parquet.
    full = trials.loc[trials["fidelity"] == 1.0]
    expected = [full.loc[full["trial_index"] <= k, "cv_accuracy"].max()
                for k in trials["trial_index"]]
    got = analysis.best_so_far(exp)["best_so_far"]
    assert _values(got) == _values(expected)
    assert got.iloc[-1] == info["best"]["cv_accuracy"]
    by_time = analysis.best_so_far(exp, by="time")
    assert by_time["elapsed_s"].is_monotonic_increasing and by_time["elapsed_s"].iloc[0] > 0
    assert by_time["best_so_far"].iloc[-1] == info["best"]["cv_accuracy"]
    spent = analysis.compute_spent(exp)
    assert spent["trial_seconds"] == pytest.approx(trials["wall_time_s"].sum())
    assert spent["epochs"] == len(exp.epochs) == trials["iterations"].sum()
    assert {k: spent[k] for k in ("trials", "finished", "stopped_early", "errors")} == \
        info["counts"]
    assert spent["wall_time_s"] == info["wall_time_s"]


@pytest.mark.ray
def test_real_curves_end_where_asha_cut_them(real):
    exp, _ = real
    curves = analysis.learning_curves(exp)
    assert curves.attrs["step"] == "fidelity"
    merged = curves.merge(exp.epochs, on=["trial_id", "iteration"])
    assert (merged["value"] == merged["cv_accuracy"]).all() and len(merged) == len(exp.epochs)
    stops = analysis.stop_points(exp).set_index("trial_id")
    trials = exp.trials.set_index("trial_id")
    assert (stops["stopped_by"] == "scheduler").to_dict() == \
        (trials["status"] == "stopped_early").to_dict()
    assert (stops.loc[stops["stopped_by"] == "scheduler", "step"] < 1.0).all()
    assert (stops.loc[stops["stopped_by"].isna(), "step"] == 1.0).all()
    assert (stops["iteration"] == trials.loc[stops.index, "iterations"]).all()


@pytest.mark.ray
def test_real_importance_covers_every_searched_parameter(real):
    exp, _ = real
    n = len(analysis.ranked_trials(exp))
    result = analysis.param_importance(exp)
    if n < analysis.MIN_TRIALS_FOR_IMPORTANCE:  # depends on where ASHA cut; seed 1 gives 9
        pytest.fail(f"the fixture run ranks only {n} trials; raise --num-samples")
    assert set(result.importances.index) == {"kernel", "C", "gamma", "degree"}
    assert result.n_trials == n and np.isfinite(result.importances).all()
    encoded = analysis.encode_params(exp)
    linear = exp.trials["param_kernel"] == "linear"
    assert (encoded.loc[linear, "kernel"] == 0.0).all() and encoded.loc[linear, "gamma"].isna().all()
    c = exp.trials["param_C"]
    assert np.allclose(encoded["C"], (np.log10(c) + 2) / 5)  # LogFloat(1e-2, 1e3)


def test_a_none_choice_survives_parquet_in_the_best_config_warm_start_and_encoding(tmp_path):
    # Categorical([None, "balanced"]) (SVC's class_weight): Parquet stores None as null, as it
    # stores an inactive param. Read back, None is still a value of the config.
    from pipelines.results import ResultsWriter
    from pipelines.runner import config_from_row
    from pipelines.searchers._bayesopt import BayesOptSearcher
    from pipelines.searchers._bayesopt_box import warm_start_from_parquet
    from pipelines.storage import Storage
    from pipelines.svm import METRICS
    from search_spaces.space import Categorical, LogFloat, Space

    space = Space(name="s", C=LogFloat(1e-2, 1e3),
                  class_weight=Categorical([None, "balanced"])).validate()
    writer = ResultsWriter(Storage(str(tmp_path)), "e", space, METRICS, {}, {"experiment": "e"})
    for i, (weight, score) in enumerate([(None, 0.9), ("balanced", 0.8), (None, 0.7)]):
        writer.start_trial(f"t{i}", i, {"C": 1.0 + i, "class_weight": weight})
        writer.add_result(f"t{i}", {"training_iteration": 1, "cv_accuracy": score,
                                    "fidelity": 1.0})
        writer.end_trial(f"t{i}", "finished")
    writer.flush()
    best = config_from_row(writer.best(), space)
    assert best == {"C": 1.0, "class_weight": None} == space.check_config(best)
    rows = warm_start_from_parquet(str(tmp_path / "e" / "trials.parquet"), space, "cv_accuracy")
    assert [r["config"]["class_weight"] for r in rows] == [None, "balanced", None]
    searcher = BayesOptSearcher(space, metric="cv_accuracy", mode="max", seed=0,
                                warm_start=rows)
    assert searcher.n_warm_started == 3
    (tmp_path / "e" / "experiment.json").write_text(json.dumps(
        {"name": "e", "schema_version": 1, "metrics": METRICS.to_dict(),
         "space": space.to_dict()}))
    encoded = analysis.encode_params(analysis.load_experiment(tmp_path / "e"))
    assert encoded["class_weight"].tolist() == [0.0, 1.0, 0.0]  # None's position, not "off"


def test_a_none_choice_beside_numbers_keeps_a_numeric_column(tmp_path):
    # Categorical([None, 8, 32]) is a forest's max_depth: the column is int64 with null for None
    # (pandas reads it as a number), and the row still reads back as the config it was.
    import pyarrow.parquet as pq

    from pipelines.results import ResultsWriter
    from pipelines.runner import config_from_row
    from pipelines.storage import Storage
    from pipelines.svm import METRICS
    from search_spaces.space import Categorical, Space

    space = Space(name="s", depth=Categorical([None, 8, 32]),
                  scale=Categorical([None, 0.5, 2.0])).validate()
    writer = ResultsWriter(Storage(str(tmp_path)), "e", space, METRICS, {}, {"experiment": "e"})
    configs = [{"depth": None, "scale": 0.5}, {"depth": 8, "scale": None},
               {"depth": 32, "scale": 2.0}]
    for i, (config, score) in enumerate(zip(configs, [0.7, 0.9, 0.8], strict=True)):
        writer.start_trial(f"t{i}", i, config)
        writer.add_result(f"t{i}", {"training_iteration": 1, "cv_accuracy": score,
                                    "fidelity": 1.0})
        writer.end_trial(f"t{i}", "finished")
    writer.flush()
    table = pq.read_table(tmp_path / "e" / "trials.parquet")
    assert table.schema.field("param_depth").type == "int64"
    assert table.schema.field("param_scale").type == "double"
    assert table["param_depth"].to_pylist() == [None, 8, 32]
    assert table["param_scale"].to_pylist() == [0.5, None, 2.0]
    assert config_from_row(writer.best(), space) == {"depth": 8, "scale": None}



def test_a_categorical_mixing_text_and_numbers_encodes_every_choice(tmp_path):
    # ["scale", 0.001, 10] is a string column; "0.001" is still the choice 0.001 (position 0.5).
    from pipelines.results import ResultsWriter
    from pipelines.storage import Storage
    from pipelines.svm import METRICS
    from search_spaces.space import Categorical, Space

    space = Space(name="s", gamma=Categorical(["scale", 0.001, 10])).validate()
    writer = ResultsWriter(Storage(str(tmp_path)), "e", space, METRICS, {}, {"experiment": "e"})
    for i, gamma in enumerate(["scale", 0.001, 10]):
        writer.start_trial(f"t{i}", i, {"gamma": gamma})
        writer.add_result(f"t{i}", {"training_iteration": 1, "cv_accuracy": 0.5 + i / 10,
                                    "fidelity": 1.0})
        writer.end_trial(f"t{i}", "finished")
    writer.flush()
    (tmp_path / "e" / "experiment.json").write_text(json.dumps(
        {"name": "e", "schema_version": 1, "metrics": METRICS.to_dict(),
         "space": space.to_dict()}))
    exp = analysis.load_experiment(tmp_path / "e")
    assert exp.trials["param_gamma"].tolist() == ["scale", "0.001", "10"]
    assert analysis.encode_params(exp)["gamma"].tolist() == [0.0, 0.5, 1.0]

"""The SVM trainable without Ray: honest splits, CV equal to GridSearchCV's, refit-and-test."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.helpers import REPO
from trainables.svm import (
    BUILTIN_CLASS_COUNTS,
    BUILTIN_DATASETS,
    DatasetError,
    check_dataset,
    cv_score,
    load_data,
    refit_and_test,
    split_is_certain,
    svm_trial,
)


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", cv=3, seed=0)


def test_splits_are_stratified_and_disjoint(digits):
    assert len(digits.y_train) + len(digits.y_test) == 1797
    assert abs(len(digits.y_test) - 0.2 * 1797) <= 1
    train_share = np.bincount(digits.y_train) / len(digits.y_train)
    test_share = np.bincount(digits.y_test) / len(digits.y_test)
    assert np.max(np.abs(train_share - test_share)) < 0.01
    # No test row appears among the train rows (digits has no exact duplicates across splits).
    train_rows = {row.tobytes() for row in digits.X_train}
    assert sum(row.tobytes() in train_rows for row in digits.X_test) == 0
    assert len(digits.folds) == 3
    for train_idx, val_idx in digits.folds:
        assert set(train_idx).isdisjoint(val_idx)
        assert len(train_idx) + len(val_idx) == len(digits.y_train)


def test_cv_score_equals_gridsearchcv(digits):
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    configs = [{"kernel": "rbf", "C": 10.0, "gamma": 0.01}, {"kernel": "linear", "C": 0.1}]
    grid = [{f"svc__{k}": [v] for k, v in c.items()} for c in configs]
    search = GridSearchCV(make_pipeline(StandardScaler(), SVC()), grid, cv=3).fit(digits.X_train, digits.y_train)
    ours = [cv_score(c, digits)["cv_accuracy"] for c in configs]
    # Same folds, same fits: equal up to how each side averages; a different fold or fit moves
    # the mean by at least 1/(3 * 479).
    assert ours == pytest.approx(list(search.cv_results_["mean_test_score"]), abs=1e-9)


def test_a_space_can_cap_libsvms_iterations_as_a_gridsearchcv_user_would(digits):
    import warnings

    from pipelines.svm import TASK
    from trainables.svm import make_model

    assert {"max_iter", "cache_size"} <= TASK.config_keys()
    model = make_model({"kernel": "poly", "gamma": 10.0, "max_iter": 5})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: the cap was reached
        model.fit(digits.X_train, digits.y_train)
    assert model.named_steps["svc"].max_iter == 5 and model.named_steps["svc"].n_iter_.max() <= 5

def test_fidelity_rungs_grow_and_full_rung_matches_plain_score(digits):
    config = {"kernel": "rbf", "C": 10.0, "gamma": 0.01}
    rungs = list(svm_trial(config, digits, fidelities=(0.125, 0.5, 1.0)))
    assert [r["fidelity"] for r in rungs] == [0.125, 0.5, 1.0]
    samples = [r["fit_samples"] for r in rungs]
    assert samples[0] < samples[1] < samples[2] == sum(len(t) for t, _ in digits.folds)
    assert rungs[-1]["cv_accuracy"] == cv_score(config, digits)["cv_accuracy"]
    assert rungs[0]["cv_accuracy"] < rungs[-1]["cv_accuracy"]


def test_refit_scores_once_on_held_out_test(digits):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    config = {"kernel": "rbf", "C": 10.0, "gamma": 0.01}
    expected = make_pipeline(StandardScaler(), SVC(**config)).fit(digits.X_train, digits.y_train)
    result = refit_and_test(config, digits)
    # Up to float rounding (sklearn promises the accuracy, not its last bit); one sample is 1/360.
    assert result["test_accuracy"] == pytest.approx(expected.score(digits.X_test, digits.y_test),
                                                    abs=1e-9)
    assert result["test_accuracy"] > 0.95


def test_builtin_and_file_datasets(tmp_path):
    iris = load_data("iris")
    assert iris.n_classes == 3 and iris.X_train.shape[1] == 4
    rng = np.random.default_rng(0)
    n = 60
    import pandas as pd

    frame = pd.DataFrame({"a": rng.normal(size=n), "color": rng.choice(["red", "blue"], size=n),
                          "label": np.repeat(["x", "y", "z"], n // 3)})
    path = tmp_path / "d.parquet"
    frame.to_parquet(path)
    data = load_data(str(path), "label")
    # "color" became two one-hot columns beside "a".
    assert data.X_train.shape[1] == 3
    assert set(data.y_train) == {"x", "y", "z"}
    csv = tmp_path / "d.csv"
    frame.to_csv(csv, index=False)
    assert load_data(str(csv), "label").X_train.shape == data.X_train.shape


def test_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset"):
        check_dataset("imagenet", None)
    with pytest.raises(DatasetError, match="does not exist"):
        check_dataset(str(tmp_path / "x.csv"), "y")
    path = tmp_path / "one_class.csv"
    path.write_text("a,y\n" + "".join(f"{i},0\n" for i in range(20)))
    with pytest.raises(DatasetError, match="fewer than two classes"):
        load_data(str(path), "y")
    with pytest.raises(DatasetError, match="is a folder, not a .csv or .parquet file"):
        check_dataset(str(tmp_path), "y")
    rows = "".join(f"{i},{i % 2}\n" for i in range(40))
    # Unlabelled rows are refused, not dropped: the splits would be of other rows than the file's.
    (tmp_path / "gaps.csv").write_text("a,y\n" + rows + "7,\n8,\n")
    with pytest.raises(DatasetError, match="'y' has 2 missing values; drop the unlabelled rows"):
        load_data(str(tmp_path / "gaps.csv"), "y")
    # A date as a feature would be nanoseconds since 1970.
    import pandas as pd

    dated = pd.DataFrame({"a": range(40), "when": pd.date_range("2026-01-01", periods=40),
                          "y": [i % 2 for i in range(40)]})
    dated.to_parquet(tmp_path / "dated.parquet")
    with pytest.raises(DatasetError, match="feature column 'when' holds dates or durations"):
        load_data(str(tmp_path / "dated.parquet"), "y")
    # An upper-case extension is the same file type.
    (tmp_path / "UPPER.CSV").write_text("a,y\n" + rows)
    check_dataset(str(tmp_path / "UPPER.CSV"), "y")
    assert load_data(str(tmp_path / "UPPER.CSV"), "y").describe()["n_features"] == 1


def test_text_columns_one_hot_encoding_would_garble_are_refused_and_an_index_is_a_column(tmp_path):
    import pandas as pd

    n = 40
    base = pd.DataFrame({"a": np.arange(n, dtype=float), "y": [i % 2 for i in range(n)]})
    # Dates in a CSV are text: one indicator per day, unless refused.
    base.assign(when=[f"2026-01-{1 + i % 28:02d}" for i in range(n)]).to_csv(tmp_path / "d.csv",
                                                                            index=False)
    with pytest.raises(DatasetError, match="feature column 'when' holds dates as text"):
        load_data(str(tmp_path / "d.csv"), "y")
    # Numbers with a stray '?': 40 indicators instead of one number.
    base.assign(b=[str(i) if i % 10 else "?" for i in range(n)]).to_csv(tmp_path / "q.csv",
                                                                        index=False)
    with pytest.raises(DatasetError, match="feature column 'b' is numbers with some text \\('\\?'\\)"):
        load_data(str(tmp_path / "q.csv"), "y")
    # A list per cell.
    base.assign(v=[[i, i + 1] for i in range(n)]).to_parquet(tmp_path / "l.parquet")
    with pytest.raises(DatasetError, match="feature column 'v' holds lists or arrays"):
        load_data(str(tmp_path / "l.parquet"), "y")
    # Codes that are all digits, kept as text on purpose (zip codes), are labels too.
    base.assign(zip=["02134", "10001"] * 20).to_parquet(tmp_path / "z.parquet")
    assert load_data(str(tmp_path / "z.parquet"), "y").feature_names == ["a", "zip_02134",
                                                                       "zip_10001"]
    # Labels and words stay one-hot columns.
    words = base.assign(color=["red", "blue", "green", "red"] * 10, size=["S1", "M2"] * 20)
    words.to_csv(tmp_path / "w.csv", index=False)
    assert load_data(str(tmp_path / "w.csv"), "y").feature_names == \
        ["a", "color_blue", "color_green", "color_red", "size_M2", "size_S1"]
    # A frame saved with a named index: the index is a column of the file (the label, a feature).
    base.assign(c=np.arange(n) * 2.0).set_index("y").to_parquet(tmp_path / "i.parquet")
    assert load_data(str(tmp_path / "i.parquet"), "y").feature_names == ["a", "c"]
    base.assign(c=np.arange(n) * 2.0).set_index("a").to_parquet(tmp_path / "f.parquet")
    assert sorted(load_data(str(tmp_path / "f.parquet"), "y").feature_names) == ["a", "c"]

def test_builtin_class_counts_are_the_datasets_scikit_learn_ships():
    from sklearn import datasets

    assert sorted(BUILTIN_CLASS_COUNTS) == sorted(BUILTIN_DATASETS)
    for name, counts in BUILTIN_CLASS_COUNTS.items():
        y = getattr(datasets, f"load_{name}")().target
        assert tuple(np.unique(y, return_counts=True)[1]) == counts, name


@pytest.mark.filterwarnings("ignore:The least populated class")  # more folds than a class
@pytest.mark.parametrize("name", BUILTIN_DATASETS)
def test_a_split_called_certain_always_loads(name):
    """Over test sizes from a thousandth to 0.99 and folds from 2 to 300: wherever
    split_is_certain vouches for a split, load_data makes it without an error; and it vouches
    for the defaults and for most everyday settings, or the pipeline gains nothing."""
    test_sizes = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7,
                  0.8, 0.9, 0.95, 0.97, 0.98, 0.99]
    folds = [2, 3, 4, 5, 7, 10, 16, 20, 25, 30, 49, 50, 60, 100, 170, 174, 175, 300]
    certain = 0
    for test_size in test_sizes:
        for cv in folds:
            if split_is_certain(name, test_size, cv):
                certain += 1
                data = load_data(name, test_size=test_size, cv=cv, seed=3)
                assert len(data.folds) == cv
    assert split_is_certain(name, 0.2, 3) and split_is_certain(name, 0.25, 5)
    assert certain >= 40
    assert not split_is_certain(name, 0.2, 10**6)
    assert not split_is_certain("a_file.csv", 0.2, 3)


def test_the_default_check_vouches_without_importing_scikit_learn(tmp_path):
    """The SVM pipeline's check before a local Ray starts leaves the built-in data to load beside
    that start: scikit-learn is not imported until then, and the data loaded later is the same
    split."""
    code = textwrap.dedent(f"""
        import sys
        from pipelines import cli, runner, svm
        from trainables.svm import load_data
        args = cli.finish_args(svm.build_parser().parse_args(
            ["--output", {str(tmp_path)!r}, "--name", "e"]), "svm")
        runner.prepare(svm.TASK, args)
        assert "sklearn" not in sys.modules, "scikit-learn imported before Ray starts"
        assert args._data is None
        data = svm.task_data(args)
        assert "sklearn" in sys.modules and svm.task_data(args) is data
        same = load_data("digits", test_size=0.2, cv=3, seed=args.split_seed)
        assert (data.y_train == same.y_train).all() and len(data.folds) == 3
        # Joining a running Ray leaves nothing to hide the import behind: loaded in the check.
        # (A listening socket stands where the Ray head would be: prepare() probes the address.)
        import socket
        head = socket.create_server(("127.0.0.1", 0))
        address = "127.0.0.1:%d" % head.getsockname()[1]
        joining = cli.finish_args(svm.build_parser().parse_args(
            ["--output", {str(tmp_path)!r}, "--name", "f", "--address", address]), "svm")
        runner.prepare(svm.TASK, joining)
        assert joining._data is not None
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_data_fingerprint_follows_values_not_the_dtypes_they_were_read_as(digits):
    # --resume compares it: the same rows read as int32 fold indices (Windows, numpy < 2),
    # labels as objects (an older pandas' nullable ints) or float32 features give the same
    # digest; one changed value, one row less or another split does not.
    import dataclasses

    base = digits.fingerprint()
    retyped = dataclasses.replace(
        digits, X_train=digits.X_train.astype(np.float32).astype(np.float64),
        y_train=digits.y_train.astype(object), y_test=digits.y_test.astype(np.int32),
        folds=[(a.astype(np.int32), b.astype(np.int32)) for a, b in digits.folds])
    assert retyped.fingerprint() == base
    edited = digits.X_train.copy()
    edited[0, 0] += 1.0
    assert dataclasses.replace(digits, X_train=edited).fingerprint() != base
    assert dataclasses.replace(digits, X_test=digits.X_test[1:],
                               y_test=digits.y_test[1:]).fingerprint() != base
    swapped = [(b, a) for a, b in digits.folds]
    assert dataclasses.replace(digits, folds=swapped).fingerprint() != base

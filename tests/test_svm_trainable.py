"""The SVM trainable without Ray: honest splits, CV equal to GridSearchCV's, refit-and-test."""

import numpy as np
import pytest

from trainables.svm import (
    DatasetError,
    check_dataset,
    cv_score,
    load_data,
    refit_and_test,
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

"""scikit-learn SVM baselines: data with honest splits, a trial's CV score, and the final refit.

A trial sees only the train split. Its score is k-fold cross-validation accuracy there
(stratified folds fixed once per experiment, as GridSearchCV makes them). At the end the best
config is refit on the whole train split and scored once on the held-out test split.

For early stopping a trial can climb fidelity rungs: each fold's model is fit on a growing,
stratified fraction of that fold's training rows (``pipelines.svm.fidelities``: 1/27, 1/9, 1/3
and all with ASHA's default reduction factor 3), as scikit-learn's HalvingGridSearchCV grows
``n_samples``.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BUILTIN_DATASETS = ("digits", "iris", "wine", "breast_cancer")


class DatasetError(ValueError):
    """A dataset that cannot be used; the message is one line naming the problem."""


@dataclass
class TabularData:
    """Features and labels with a fixed held-out test split and fixed CV folds."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    feature_names: list[str] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        return int(len(np.unique(self.y_train)))

    def fingerprint(self) -> str:
        """A digest of every row and fold a trial scores (``--resume`` compares it).

        Each part in one canonical form, so the same values give the same digest whatever
        dtype a platform or a pandas version reads them as: features as float64, labels as
        their classes' text plus codes, fold indices as int64.
        """
        digest = hashlib.sha256()

        def add(array: np.ndarray) -> None:
            digest.update(f"{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())

        labels = np.concatenate([np.asarray(self.y_train, dtype=object),
                                 np.asarray(self.y_test, dtype=object)])
        classes, codes = np.unique(np.asarray([str(v) for v in labels]), return_inverse=True)
        digest.update("\x1f".join(classes.tolist()).encode())
        add(codes.astype(np.int64))
        for features in (self.X_train, self.X_test):
            add(np.asarray(features, dtype=np.float64))
        for fold in self.folds:
            for index in fold:
                add(np.asarray(index, dtype=np.int64))
        return digest.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_train": int(len(self.y_train)),
            "n_test": int(len(self.y_test)),
            "n_features": int(self.X_train.shape[1]),
            "n_classes": self.n_classes,
            "cv_folds": len(self.folds),
        }


def check_dataset(dataset: str | None, target: str | None) -> None:
    """Cheap validation before Ray starts: the name is known, or the file and column exist.

    Raises
    ------
    DatasetError
    """
    if dataset is None or dataset in BUILTIN_DATASETS:
        if target is not None:
            raise DatasetError(f"--target applies only to a CSV or Parquet file, not to '{dataset or 'digits'}'")
        return
    if not (_is_csv(dataset) or _is_parquet(dataset) or os.path.sep in dataset):
        raise DatasetError(
            f"unknown dataset '{dataset}': use one of {', '.join(BUILTIN_DATASETS)} "
            "or a path to a .csv or .parquet file"
        )
    if os.path.isdir(dataset):
        raise DatasetError(f"dataset '{dataset}' is a folder, not a .csv or .parquet file")
    if not os.path.isfile(dataset):
        raise DatasetError(f"dataset file '{dataset}' does not exist")
    if not (_is_csv(dataset) or _is_parquet(dataset)):
        raise DatasetError(f"dataset file '{dataset}' must end in .csv or .parquet")
    if target is None:
        raise DatasetError(f"dataset file '{dataset}' needs --target COLUMN naming the label column")
    columns = _file_columns(dataset)
    if target not in columns:
        raise DatasetError(f"--target column '{target}' is not in '{dataset}' (columns: {', '.join(columns[:20])})")


def _is_csv(path: str) -> bool:
    return path.lower().endswith(".csv")  # DATA.CSV too


def _is_parquet(path: str) -> bool:
    return path.lower().endswith((".parquet", ".pq"))


def _file_columns(path: str) -> list[str]:
    try:
        if _is_csv(path):
            import pandas as pd

            return list(pd.read_csv(path, nrows=0).columns)
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    except Exception as exc:
        raise DatasetError(f"dataset file '{path}' cannot be read: {type(exc).__name__}: {exc}") from None


# Class sizes of scikit-learn's built-in datasets: fixed data the package ships
# (tests/test_svm_trainable.py checks them against its loaders). They let ``split_is_certain``
# vouch for a split without importing scikit-learn, which takes most of a second.
BUILTIN_CLASS_COUNTS = {
    "digits": (178, 182, 177, 183, 181, 182, 181, 179, 174, 180),
    "iris": (50, 50, 50),
    "wine": (59, 71, 48),
    "breast_cancer": (212, 357),
}


def split_is_certain(dataset: str | None, test_size: float, cv: int) -> bool:
    """Whether ``load_data(dataset, test_size=test_size, cv=cv)`` of a built-in dataset is sure
    to succeed, known from its class sizes alone (no import of scikit-learn, no data read).

    True only when every check ``load_data`` and scikit-learn make passes with a margin of one
    row either way (the test split's rounding, the stratified split's allocation per class):
    each class has ``cv + 1`` rows, the train and test splits each hold at least one row per
    class, and some class keeps at least ``cv`` train rows for ``StratifiedKFold``. False
    means "load it to find out": the caller then loads the data before Ray starts, and
    ``load_data`` names the problem, if there is one.
    """
    counts = BUILTIN_CLASS_COUNTS.get(dataset or "digits")
    if counts is None or not (0 < test_size < 1) or cv < 2:
        return False
    n, n_classes = sum(counts), len(counts)
    n_test = math.ceil(test_size * n)  # as scikit-learn's _validate_shuffle_split rounds it
    n_train_low = n - (n_test + 1)
    return (min(counts) >= cv + 1 and n_test - 1 >= n_classes
            and n_train_low >= max(n_classes, cv)
            # The stratified split gives class c at least floor(c x n_train / n) train rows.
            and any(c * n_train_low // n >= cv for c in counts))


def _load_xy(dataset: str | None, target: str | None) -> tuple[str, np.ndarray, np.ndarray, list[str]]:
    if dataset is None or dataset in BUILTIN_DATASETS:
        from sklearn import datasets

        name = dataset or "digits"
        bunch = getattr(datasets, f"load_{name}")()
        names = list(getattr(bunch, "feature_names", [f"x{i}" for i in range(bunch.data.shape[1])]))
        return name, np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target), names
    import pandas as pd

    frame = pd.read_csv(dataset) if _is_csv(dataset) else pd.read_parquet(dataset)
    # A DataFrame saved with a named index (df.set_index("label").to_parquet) comes back with
    # it as the index: it is a column of the file, as the schema check saw it.
    named = [n for n in frame.index.names if n is not None]
    if named:
        frame = frame.reset_index(level=named)
    unlabelled = int(frame[target].isna().sum())
    if unlabelled:  # dropping them quietly would train and test on other rows than the file's
        raise DatasetError(f"dataset '{dataset}': --target column '{target}' has {unlabelled} "
                           "missing values; drop the unlabelled rows first")
    y = frame.pop(target).to_numpy()
    missing = [c for c in frame.columns if frame[c].isna().any()]
    if missing:
        raise DatasetError(f"dataset '{dataset}': feature column '{missing[0]}' has missing values")
    if frame.shape[1] == 0:
        raise DatasetError(f"dataset '{dataset}' has no feature columns besides '{target}'")
    dated = [c for c in frame.columns if pd.api.types.is_datetime64_any_dtype(frame[c])
             or pd.api.types.is_timedelta64_dtype(frame[c])]
    if dated:  # as a number it would be nanoseconds since 1970: convert it knowingly
        raise DatasetError(f"dataset '{dataset}': feature column '{dated[0]}' holds dates or "
                           "durations; convert it to numbers (or drop it) first")
    _check_text_columns(dataset, frame)
    # Text columns become one-hot indicators, as a user of pandas would expect.
    frame = pd.get_dummies(frame, dtype=np.float64)
    X = frame.to_numpy(dtype=np.float64)
    infinite = ~np.isfinite(X).all(axis=0)
    if infinite.any():  # every SVC fit would fail on it, trial after trial
        raise DatasetError(f"dataset '{dataset}': feature column '{frame.columns[infinite.argmax()]}' "
                           "has infinite values")
    return os.path.basename(dataset), X, y, list(frame.columns)


_DATE_TEXT = (r"\s*(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4})"
              r"([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?\s*(Z|[+-]\d{2}:?\d{2})?\s*")


def _check_text_columns(dataset: str, frame) -> None:
    """Refuse text columns that one-hot encoding would turn into nonsense: cells holding lists
    or arrays, numbers with a few stray strings ("?", "n/a": one indicator per number), and
    dates read as text (a CSV's dates are strings: one indicator per day)."""
    import warnings

    import pandas as pd

    for column in frame.columns:
        values = frame[column]
        if values.dtype != object and not pd.api.types.is_string_dtype(values):
            continue
        if any(isinstance(v, (list, tuple, dict, set, np.ndarray)) for v in values):
            raise DatasetError(f"dataset '{dataset}': feature column '{column}' holds lists or "
                               "arrays; one number or label per cell (expand it first)")
        text = values.astype(str)
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.isna().any() and numbers.notna().mean() >= 0.5:
            stray = sorted(set(text[numbers.isna()]))[:3]
            raise DatasetError(
                f"dataset '{dataset}': feature column '{column}' is numbers with some text "
                f"({', '.join(repr(v) for v in stray)}); as text it would become one indicator "
                "column per value: clean or convert it first")
        # A date: year-month-day or day/month/year with a 4-digit year, maybe a time (a
        # version string "1.2.3" or a code "A1" is no date).
        if text.str.fullmatch(_DATE_TEXT).mean() >= 0.9:
            sample = text.drop_duplicates().head(200)  # "mixed" parses value by value
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dates = pd.to_datetime(sample, errors="coerce", format="mixed")
            if dates.notna().mean() >= 0.9:
                raise DatasetError(f"dataset '{dataset}': feature column '{column}' holds dates "
                                   "as text; convert it to numbers (or drop it) first")


def load_data(dataset: str | None = None, target: str | None = None, *, test_size: float = 0.2,
              cv: int = 3, seed: int = 0) -> TabularData:
    """Load a dataset, hold out a stratified test split, and fix the CV folds.

    Parameters
    ----------
    dataset : str, optional
        ``digits`` (default), ``iris``, ``wine``, ``breast_cancer``, or a CSV/Parquet path.
    target : str, optional
        The label column of a file.
    test_size : float
        Fraction held out for the one final test score.
    cv : int
        Number of stratified folds on the train split (unshuffled, as GridSearchCV's ``cv=k``).
    seed : int
        Seed of the train/test split.

    Returns
    -------
    TabularData
    """
    from sklearn.model_selection import StratifiedKFold, train_test_split

    check_dataset(dataset, target)
    name, X, y, names = _load_xy(dataset, target)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise DatasetError(f"dataset '{name}' has fewer than two classes in its target")
    if counts.min() < cv + 1:
        raise DatasetError(
            f"dataset '{name}': class {_plain(classes[counts.argmin()])!r} has {counts.min()} rows, "
            f"too few for a test split and {cv}-fold CV"
        )
    try:
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=test_size, stratify=y, random_state=seed
        )
        folds = list(StratifiedKFold(n_splits=cv).split(X_train, y_train))
    except ValueError as exc:
        # scikit-learn's own reason (a test split smaller than the class count, more folds than
        # a class has rows), on one line.
        reason = " ".join(str(exc).split())
        raise DatasetError(f"dataset '{name}' cannot be split with test size {test_size} and "
                           f"{cv}-fold CV: {reason}") from None
    return TabularData(name, X_train, y_train, X_test, y_test, folds, names)


# The SVC arguments a config may set; a space with any other param is refused before Ray starts.
# SVC's own parameters a space may set; max_iter (libsvm's iteration cap, -1: none) bounds a
# poly kernel with a large gamma, whose fit can take minutes, as a GridSearchCV user would.
SVC_PARAMS = frozenset({"kernel", "C", "gamma", "degree", "coef0", "class_weight", "shrinking",
                        "tol", "max_iter", "cache_size", "break_ties", "decision_function_shape"})


def make_model(config: dict[str, Any]):
    """A scaled SVC for one config; features are standardized inside each fit (no leakage)."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    params = {k: config[k] for k in SVC_PARAMS if k in config}
    return make_pipeline(StandardScaler(), SVC(**params))


def _subsample(train_idx: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified subset of ``train_idx``, nested across growing fractions."""
    if fraction >= 1.0:
        return train_idx
    rng = np.random.default_rng(seed)
    keep = []
    for cls in np.unique(y[train_idx]):
        members = train_idx[y[train_idx] == cls]
        # One permutation per class and fold: the 1/27 subset is inside the 1/9 one, and so on.
        members = members[rng.permutation(len(members))]
        keep.append(members[: max(1, int(round(fraction * len(members))))])
    return np.sort(np.concatenate(keep))


def cv_score(config: dict[str, Any], data: TabularData, fraction: float = 1.0) -> dict[str, float]:
    """Mean and spread of fold accuracies for one config at one fidelity."""
    scores, fit_seconds, n_fit = [], 0.0, 0
    for k, (train_idx, val_idx) in enumerate(data.folds):
        idx = _subsample(train_idx, data.y_train, fraction, seed=k)
        model = make_model(config)
        start = time.perf_counter()
        model.fit(data.X_train[idx], data.y_train[idx])
        fit_seconds += time.perf_counter() - start
        n_fit += len(idx)
        scores.append(float(model.score(data.X_train[val_idx], data.y_train[val_idx])))
    return {
        "cv_accuracy": float(np.mean(scores)),
        "cv_accuracy_std": float(np.std(scores)),
        "fit_seconds": fit_seconds,
        "fit_samples": n_fit,
    }


def svm_trial(config: dict[str, Any], data: TabularData,
              fidelities: Sequence[float] = (1.0,)) -> Iterator[dict[str, float]]:
    """Yield one metrics dict per fidelity rung (a plain generator; no Ray needed).

    Each dict has ``cv_accuracy``, ``cv_accuracy_std``, ``fit_seconds``, ``fit_samples`` (rows
    fitted at this rung, all folds) and ``fidelity`` (the fraction of each fold's train rows).
    """
    for fraction in fidelities:
        yield {**cv_score(config, data, fraction), "fidelity": float(fraction)}


def refit_and_test(config: dict[str, Any], data: TabularData) -> dict[str, float]:
    """Refit ``config`` on the whole train split and score it once on the test split."""
    model = make_model(config)
    start = time.perf_counter()
    model.fit(data.X_train, data.y_train)
    return {
        "test_accuracy": float(model.score(data.X_test, data.y_test)),
        "refit_seconds": time.perf_counter() - start,
    }


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (messages show 4.3, not np.float64(4.3))."""
    return value.item() if isinstance(value, np.generic) else value

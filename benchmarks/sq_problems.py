"""The problems of ``search_quality.py``: synthetic functions behind typed spaces, and real tasks.

Synthetic problems (``kind == "synthetic"``) have a known global minimum (``optimum``), so regret
is exact. Each one reads its function through a typed ``Space`` (log floats, log ints,
categoricals, a conditional branch), the way an HPO space reads a trainer:

- ``branin``: Branin; ``x2`` is searched as ``x2p = x2 + 1`` on a log scale (a monotone
  reparametrization, so the minimum is unchanged);
- ``hartmann3``, ``hartmann6``: Hartmann on [0, 1]^3 and [0, 1]^6;
- ``hpo6``: six HPO-like parameters (lr and weight_decay log floats, dropout a linear float,
  width a log int, momentum a float, optimizer a 3-way categorical) mapped onto Hartmann-6's unit
  cube: a float goes to its (log-)position in its range, width to a monotone piecewise-linear map
  of its log position that sends width=64 exactly to the optimum's coordinate, the sixth
  coordinate stays at the optimum's value, and the optimizer adds a per-choice offset (adam 0);
- ``cond``: a categorical parent ``model`` picks Hartmann-3 over its own three children (one of
  them a log float) or a rescaled Branin (``branin / 50 - 3.5``) over two others. The Branin
  branch looks better on random draws, the Hartmann branch holds the minimum.

Real problems (``kind == "real"``) are scikit-learn tasks in Bayesmark's style: an RBF SVM, an
MLP trained with Adam and a random forest on digits (450 stratified rows), wine and
breast_cancer; the score is the mean log-loss under stratified 3-fold CV (minimize). Every model
is seeded, so a config always scores the same and evaluations are cached by config. The MLP
trains 20 epochs with batches of 32 to 256 rows: smaller batches cost seconds per config in
scikit-learn's per-step Python overhead.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from search_spaces.space import Categorical, Fixed, Float, Int, LogFloat, Space


@dataclass
class Problem:
    """One objective to minimize over ``space``."""

    name: str
    kind: str  # "synthetic" or "real"
    space: Space
    fn: Callable[[dict[str, Any]], float]
    optimum: float | None = None  # known global minimum (synthetic only)
    _cache: dict[tuple, float] = field(default_factory=dict, repr=False)

    def __call__(self, config: dict[str, Any]) -> float:
        key = tuple(sorted((k, repr(v)) for k, v in config.items()))
        if key not in self._cache:
            self._cache[key] = float(self.fn(config))
        return self._cache[key]


# --- synthetic functions -------------------------------------------------------------------------

def branin(x1: float, x2: float) -> float:
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


BRANIN_MIN = 5 / (4 * math.pi)  # 0.397887..., at (-pi, 12.275), (pi, 2.275), (9.42478, 2.475)

_H3_A = np.array([[3.0, 10, 30], [0.1, 10, 35], [3.0, 10, 30], [0.1, 10, 35]])
_H3_P = 1e-4 * np.array([[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547],
                         [381, 5743, 8828]])
_H6_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                  [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_H6_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886],
                         [2329, 4135, 8307, 3736, 1004, 9991],
                         [2348, 1451, 3522, 2883, 3047, 6650],
                         [4047, 8828, 8732, 5743, 1091, 381]])
_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
H3_ARGMIN = (0.114614, 0.555649, 0.852547)
H6_ARGMIN = (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)


def hartmann(x: Any, A: np.ndarray, P: np.ndarray) -> float:
    x = np.asarray(x, dtype=float)
    return float(-np.sum(_H_ALPHA * np.exp(-np.sum(A * (x - P) ** 2, axis=1))))


def hartmann3(x: Any) -> float:
    return hartmann(x, _H3_A, _H3_P)


def hartmann6(x: Any) -> float:
    return hartmann(x, _H6_A, _H6_P)


@cache
def _polished_min(which: str) -> float:
    """The minimum, polished from the published argmin (the published values have 5 digits)."""
    from scipy.optimize import minimize

    if which == "hartmann3":
        f, x0 = hartmann3, H3_ARGMIN
    elif which == "hartmann6":
        f, x0 = hartmann6, H6_ARGMIN
    else:  # hpo6: coordinates 4 (width=64) and 6 are pinned at the argmin's values
        def f(z):
            return hartmann6([z[0], z[1], z[2], H6_ARGMIN[3], z[3], H6_ARGMIN[5]])
        x0 = [H6_ARGMIN[i] for i in (0, 1, 2, 4)]
    res = minimize(f, x0, method="L-BFGS-B", bounds=[(0, 1)] * len(x0), tol=1e-14)
    return float(min(res.fun, f(x0)))


def _log_pos(value: float, low: float, high: float) -> float:
    return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))


def _pos(value: float, low: float, high: float) -> float:
    return (value - low) / (high - low)


HPO6_WIDTH = (8, 512, 64)  # low, high, the width that lands on the argmin's coordinate
HPO6_OFFSET = {"sgd": 0.6, "adam": 0.0, "rmsprop": 0.3}


def _hpo6(c: dict[str, Any]) -> float:
    lo, hi, best = HPO6_WIDTH
    u, u_best, x_best = _log_pos(c["width"], lo, hi), _log_pos(best, lo, hi), H6_ARGMIN[3]
    x4 = (x_best * u / u_best if u <= u_best
          else x_best + (1 - x_best) * (u - u_best) / (1 - u_best))
    x = [_log_pos(c["lr"], 1e-5, 1e-1), _log_pos(c["weight_decay"], 1e-6, 1e-2),
         _pos(c["dropout"], 0.0, 0.5), x4, _pos(c["momentum"], 0.8, 0.99), H6_ARGMIN[5]]
    return hartmann6(x) + HPO6_OFFSET[c["optimizer"]]


def _cond(c: dict[str, Any]) -> float:
    if c["model"] == "hartmann":
        return hartmann3([c["h_x1"], _log_pos(c["h_x2"], 1e-3, 1.0), c["h_x3"]])
    return branin(c["b_x1"], c["b_x2"]) / 50 - 3.5


def synthetic_problems() -> dict[str, Problem]:
    return {
        "branin": Problem("branin", "synthetic",
                          Space(name="branin", x1=Float(-5, 10), x2p=LogFloat(1, 16)),
                          lambda c: branin(c["x1"], c["x2p"] - 1), BRANIN_MIN),
        "hartmann3": Problem("hartmann3", "synthetic",
                             Space({f"x{i}": Float(0, 1) for i in range(1, 4)}, name="hartmann3"),
                             lambda c: hartmann3([c[f"x{i}"] for i in range(1, 4)]),
                             _polished_min("hartmann3")),
        "hartmann6": Problem("hartmann6", "synthetic",
                             Space({f"x{i}": Float(0, 1) for i in range(1, 7)}, name="hartmann6"),
                             lambda c: hartmann6([c[f"x{i}"] for i in range(1, 7)]),
                             _polished_min("hartmann6")),
        "hpo6": Problem("hpo6", "synthetic", Space(
            name="hpo6",
            lr=LogFloat(1e-5, 1e-1),
            weight_decay=LogFloat(1e-6, 1e-2),
            dropout=Float(0.0, 0.5),
            width=Int(HPO6_WIDTH[0], HPO6_WIDTH[1], log=True),
            momentum=Float(0.8, 0.99),
            optimizer=Categorical(list(HPO6_OFFSET)),
        ), _hpo6, _polished_min("hpo6") + min(HPO6_OFFSET.values())),
        "cond": Problem("cond", "synthetic", Space(
            name="cond",
            model=Categorical(["branin", "hartmann"]),
            h_x1=Float(0, 1, when={"model": ["hartmann"]}),
            h_x2=LogFloat(1e-3, 1.0, when={"model": ["hartmann"]}),
            h_x3=Float(0, 1, when={"model": ["hartmann"]}),
            b_x1=Float(-5, 10, when={"model": ["branin"]}),
            b_x2=Float(0, 15, when={"model": ["branin"]}),
        ), _cond, _polished_min("hartmann3")),
    }


# --- real tasks ----------------------------------------------------------------------------------

DATASETS = ("digits", "wine", "breast_cancer")
DIGITS_ROWS = 450
MLP_EPOCHS = 20


@cache
def dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    if name == "digits":  # subsampled so that one evaluation stays well under a second
        X, _, y, _ = train_test_split(X, y, train_size=DIGITS_ROWS, stratify=y, random_state=0)
    return X, y


def _model(model: str, c: dict[str, Any]):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if model == "svm":
        # Temperature scaling on 3 inner folds: SVC(probability=True) is deprecated in 1.9 and
        # one-vs-rest sigmoid calibration takes 0.3-0.8 s per config even on wine.
        svc = SVC(kernel=c["kernel"], C=c["C"], gamma=c["gamma"])
        return make_pipeline(StandardScaler(), CalibratedClassifierCV(svc, method="temperature", cv=3,
                                                                      ensemble=False))
    if model == "mlp":
        return make_pipeline(StandardScaler(), MLPClassifier(
            hidden_layer_sizes=(c["hidden"],), alpha=c["alpha"],
            learning_rate_init=c["learning_rate_init"], batch_size=c["batch_size"],
            solver="adam", max_iter=MLP_EPOCHS, random_state=0))
    return RandomForestClassifier(n_estimators=c["n_estimators"], max_depth=c["max_depth"],
                                  max_features=c["max_features"],
                                  min_samples_leaf=c["min_samples_leaf"], random_state=0, n_jobs=1)


def cv_log_loss(model: str, data: str, config: dict[str, Any]) -> float:
    """Mean log-loss of ``model`` with ``config`` under stratified 3-fold CV on ``data``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    X, y = dataset(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)  # batch_size clipped to wine's small folds
        scores = cross_val_score(_model(model, config), X, y, scoring="neg_log_loss",
                                 cv=StratifiedKFold(3, shuffle=True, random_state=0))
    value = -float(np.mean(scores))
    return value if math.isfinite(value) else 50.0  # a diverged MLP: as bad as it gets


REAL_SPACES = {
    "svm": Space(name="svm_rbf", kernel=Fixed("rbf"), C=LogFloat(1e-2, 1e3),
                 gamma=LogFloat(1e-5, 1e1)),
    "mlp": Space(name="mlp_adam", hidden=Int(8, 256, log=True), alpha=LogFloat(1e-6, 1e-1),
                 learning_rate_init=LogFloat(1e-4, 1e-1),
                 batch_size=Categorical([32, 64, 128, 256])),
    "rf": Space(name="random_forest", n_estimators=Int(10, 80), max_depth=Int(1, 12),
                max_features=Float(0.05, 1.0), min_samples_leaf=Int(1, 20)),
}


def real_problems() -> dict[str, Problem]:
    out = {}
    for model, space in REAL_SPACES.items():
        for data in DATASETS:
            name = f"{model}-{data}"
            out[name] = Problem(name, "real", space,
                                lambda c, m=model, d=data: cv_log_loss(m, d, c))
    return out


def all_problems() -> dict[str, Problem]:
    return {**synthetic_problems(), **real_problems()}

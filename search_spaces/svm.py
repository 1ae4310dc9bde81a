"""SVM on scaled features: the classic kernel / C / gamma grid, with ranges for random search.

The grid is the textbook one: 4 (linear) + 16 (poly) + 16 (rbf) = 36 configs. ``gamma`` and
``degree`` are conditional, so they never multiply the linear kernel's trials. The ranges span
several decades on a log scale for random search and Bayesian optimization.
"""

from search_spaces.space import Categorical, Int, LogFloat, Space

SPACE = Space(
    name="svm",
    kernel=Categorical(["linear", "poly", "rbf"]),
    C=LogFloat(1e-2, 1e3, grid=[0.1, 1, 10, 100]),
    gamma=LogFloat(1e-5, 1e2, grid=[0.1, 1, 10, 100], when={"kernel": ["poly", "rbf"]}),
    degree=Int(2, 5, grid=[3], when={"kernel": ["poly"]}),
)

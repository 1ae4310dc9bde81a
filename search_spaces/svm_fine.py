"""A finer RBF grid for SVMs: 12 values each of C and gamma (144 configs) plus 12 linear C's.

Used by ``benchmarks/svm_vs_sklearn.py`` as the "about 300 trials" case together with
``svm_fine_poly``; also a sensible dense grid for a user who already knows RBF wins.
"""

import numpy as np

from search_spaces.space import Categorical, Int, LogFloat, Space

C_GRID = [float(c) for c in np.logspace(-2, 3, 12)]
GAMMA_GRID = [float(g) for g in np.logspace(-5, 0, 12)]

SPACE = Space(
    name="svm_fine",
    kernel=Categorical(["linear", "poly", "rbf"]),
    C=LogFloat(1e-2, 1e3, grid=C_GRID),
    gamma=LogFloat(1e-5, 1e2, grid=GAMMA_GRID, when={"kernel": ["poly", "rbf"]}),
    degree=Int(2, 5, grid=[3], when={"kernel": ["poly"]}),
)

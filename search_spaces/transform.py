"""The one transform from a Space to a unit box, shared by every model-based searcher.

Like Optuna's ``_SearchSpaceTransform``: each searchable parameter becomes one or more columns
of a vector in [0, 1]^D, and a vector decodes back to a valid config.

- ``Float``: linear in [low, high], or in log space for ``log=True``;
- ``Int``: each integer owns an equal slice (``[low - 0.5, high + 0.5]``, in log space for log
  ints), so decoding rounds, and every integer is as likely under a uniform draw;
- ``Categorical`` with k > 1 choices: k one-hot columns, decoded by argmax (an index column would
  invent an order between choices); a one-choice categorical is a constant, like ``Fixed``;
- a parameter that is inactive in a config (its ``when`` does not hold) has every column at 0.5,
  one fixed convention, so the model sees one point for all configs that differ only there.

Pure numpy: no Ray, no model library.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from search_spaces.space import Categorical, Fixed, Float, Space, SpaceError

INACTIVE = 0.5


class UnitTransform:
    """Encode configs of ``space`` as vectors in [0, 1]^D and decode them back.

    Parameters
    ----------
    space : Space
        A space (validated here).

    Attributes
    ----------
    n_dims : int
        D, the number of columns.
    continuous : ndarray of bool
        Which columns are continuous (``Float`` params); the others (ints, one-hot columns) take
        only the values a decode-encode round trip gives.
    constants : dict
        Parameters with a single value (``Fixed``, one-choice categoricals).

    Raises
    ------
    SpaceError
        If the space has nothing to search (every parameter fixed).
    """

    def __init__(self, space: Space):
        self.space = space.validate()
        self.constants: dict[str, Any] = {}
        # (name, first column, number of columns)
        self.blocks: list[tuple[str, int, int]] = []
        continuous: list[bool] = []
        for name in space.searchable():
            param = space.params[name]
            if isinstance(param, Categorical):
                if len(param.choices) == 1:
                    self.constants[name] = param.choices[0]
                    continue
                width = len(param.choices)
            else:
                width = 1
            self.blocks.append((name, len(continuous), width))
            is_float = isinstance(param, Float) and not param.is_discrete
            continuous += [is_float] * width
        for name, param in space.params.items():
            if isinstance(param, Fixed):
                self.constants[name] = param.value
        if not self.blocks:
            raise SpaceError(
                f"space '{space.name}' has nothing to optimize: every parameter is fixed or has "
                f"one choice ({', '.join(self.constants) or 'none'})")
        self.n_dims = len(continuous)
        self.continuous = np.array(continuous, dtype=bool)

    @property
    def names(self) -> list[str]:
        """The searched parameters, in column order."""
        return [name for name, _, _ in self.blocks]

    def column_names(self) -> list[str]:
        out = []
        for name, _, _ in self.blocks:
            param = self.space.params[name]
            if isinstance(param, Categorical):
                out += [f"{name}={choice!r}" for choice in param.choices]
            else:
                out.append(name)
        return out

    # --- the two directions --------------------------------------------------------------------
    def encode(self, config: Mapping[str, Any]) -> np.ndarray:
        """A config (active params only, as ``Space.finalize`` gives) as a vector."""
        u = np.full(self.n_dims, INACTIVE)
        for name, start, width in self.blocks:
            if name not in config:
                continue
            param = self.space.params[name]
            if isinstance(param, Categorical):
                u[start:start + width] = 0.0
                u[start + _choice_index(param, config[name])] = 1.0
            else:
                u[start] = min(max(param.to_unit(config[name]), 0.0), 1.0)
        return u

    def decode(self, u: np.ndarray) -> dict[str, Any]:
        """A vector (any point of the box) as a finalized config of the space."""
        raw: dict[str, Any] = dict(self.constants)
        for name, start, width in self.blocks:
            param = self.space.params[name]
            if isinstance(param, Categorical):
                raw[name] = param.choices[int(np.argmax(u[start:start + width]))]
            else:
                raw[name] = param.from_unit(float(u[start]))
        return self.space.finalize(raw)

    def snap(self, u: np.ndarray) -> np.ndarray:
        """The vector of the config ``u`` decodes to: discrete columns at their exact values,
        inactive params at the convention."""
        return self.encode(self.decode(u))

    def snap_many(self, points: np.ndarray) -> np.ndarray:
        """``snap`` of every row of ``points`` (shape ``(n, n_dims)``).

        Vectorized when no parameter is conditional (a candidate set of a thousand points in a
        few milliseconds); row by row otherwise, since activity depends on each row's parents.
        Equal to ``snap`` up to float rounding in the continuous columns.
        """
        points = np.asarray(points, dtype=float).reshape(-1, self.n_dims)
        if any(self.space.params[name].when for name, _, _ in self.blocks):
            return np.array([self.snap(u) for u in points]).reshape(points.shape)
        out = np.clip(points, 0.0, 1.0)
        for name, start, width in self.blocks:
            param = self.space.params[name]
            if isinstance(param, Categorical):
                block = np.zeros((len(out), width))
                block[np.arange(len(out)), np.argmax(points[:, start:start + width], axis=1)] = 1
                out[:, start:start + width] = block
            elif not self.continuous[start]:  # an int: decode, round, encode
                lo, hi = param._bounds()
                v = lo + out[:, start] * (hi - lo)
                v = np.clip(np.round(np.exp(v) if param.log else v), param.low, param.high)
                v = np.log(v) if param.log else v
                out[:, start] = np.clip((v - lo) / (hi - lo), 0.0, 1.0)
        return out

    def neighbours(self, u: np.ndarray) -> np.ndarray:
        """Valid vectors that differ from the config ``u`` decodes to in one discrete parameter.

        Each other choice of an active categorical (children it switches on start at the middle
        of their ranges); for an active int, the integers one step either side and those a
        twentieth and a sixth of its (log) range away. Continuous columns are left as they are.
        Returns an array of shape ``(k, n_dims)``, possibly with ``k == 0``.
        """
        base = self.snap(np.asarray(u, dtype=float))
        config = self.decode(base)
        out: list[np.ndarray] = []
        seen = {tuple(base)}
        for name, start, width in self.blocks:
            if name not in config:
                continue
            param = self.space.params[name]
            if isinstance(param, Categorical):
                moves = []
                for j in range(width):
                    v = base.copy()
                    v[start:start + width] = 0.0
                    v[start + j] = 1.0
                    moves.append(v)
            elif not self.continuous[start]:
                value = config[name]
                targets = {value - 1, value + 1}
                targets |= {param.from_unit(base[start] + d) for d in (-1 / 6, -1 / 20, 1 / 20, 1 / 6)}
                moves = []
                for target in sorted(targets):
                    if param.low <= target <= param.high and target != value:
                        v = base.copy()
                        v[start] = param.to_unit(target)
                        moves.append(v)
            else:
                continue
            for v in moves:
                v = self.snap(v)
                if tuple(v) not in seen:
                    seen.add(tuple(v))
                    out.append(v)
        return np.array(out).reshape(len(out), self.n_dims)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` valid configs drawn as random search draws them (log scales, conditions), encoded."""
        return np.array([self.encode(self.space.finalize({**self.constants,
                                                          **self.space.sample_one(rng)}))
                         for _ in range(n)]).reshape(n, self.n_dims)


def _choice_index(param: Categorical, value: Any) -> int:
    # ``list.index`` would map True onto a choice 1 listed before it (True == 1).
    for i, choice in enumerate(param.choices):
        if type(choice) is type(value) and choice == value:
            return i
    return param.index(value)

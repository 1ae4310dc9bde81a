"""The declarative search-space language.

A space is data: typed parameters, optional explicit grid values, and conditions that make a
parameter active only when another (discrete) parameter takes given values. Reading a space
module never starts Ray, touches a GPU or loads a dataset.

One ``Space`` object serves every search algorithm:

- ``Space.grid()``: every valid combination once; an inactive conditional parameter does not
  multiply the grid (the classic SVM grid is 4 + 16 + 16 = 36 configs, not 48);
- ``Space.sample(n, seed)``: seeded random configs that honor log scale and conditions;
- ``Space.to_unit(config)`` / ``Space.from_unit(vector)``: the one unit box (log params in log
  space, ints with their rounding, categoricals one-hot) that model-based searchers share
  (``search_spaces.transform``).

Example::

    SPACE = Space(
        kernel=Categorical(["linear", "rbf"]),
        C=LogFloat(1e-2, 1e3, grid=[0.1, 1, 10]),
        gamma=LogFloat(1e-4, 1e2, grid=[0.01, 0.1], when={"kernel": ["rbf"]}),
    )
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "Categorical",
    "Fixed",
    "Float",
    "Int",
    "LogFloat",
    "Param",
    "Space",
    "SpaceError",
]

# Integers with at most this many values enumerate their whole range when no grid is given.
MAX_IMPLICIT_INT_GRID = 32

# A number this many units in the last place (ulps) or fewer from a limit *is* that limit:
# numpy's logspace/geomspace, decimal round trips and powers land a few ulps off the value they
# aim at (np.logspace(-5, 0, 12)[0] is 9.999999999999999e-06 on numpy 2.4). Such values snap to
# the limit; anything further off is a real violation and is rejected as before.
SNAP_ULPS = 4


class SpaceError(ValueError):
    """A malformed space or config. The message names the parameter and what is wrong.

    The message is always one line: line breaks in a user's text become spaces.
    """

    def __init__(self, message: object = ""):
        super().__init__(" ".join(str(message).split()))


def is_one_of(value: Any, values: Sequence[Any]) -> bool:
    """``value in values``, but True and 1 (False and 0) are not the same choice: Python's
    ``==`` says they are, and a space can list both (``Categorical([True, 1, 0, False])``)."""
    flag = isinstance(value, (bool, np.bool_))
    return any(isinstance(v, (bool, np.bool_)) == flag and v == value for v in values)


def choice_from_text(value: Any, choices: Sequence[Any]) -> Any:
    """The choice a cell read back from Parquet stands for: choices mixing text and numbers
    (``["scale", 0.001]``) are a string column in trials.parquet, so ``"0.001"`` is the choice
    0.001, when exactly one choice reads so; and pandas reads an int column with nulls (an
    int categorical inactive in some rows) as float64, so 3.0 is the choice 3. Anything else
    comes back unchanged."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not isinstance(value, bool):
        if any(isinstance(c, float) and c == value for c in choices):
            return value
        same = [c for c in choices if isinstance(c, int) and not isinstance(c, bool)
                and c == value]
        return same[0] if len(same) == 1 else value
    if not isinstance(value, str) or value in choices:
        return value
    same = [c for c in choices if c is not None and str(c) == value]
    return same[0] if len(same) == 1 else value


def is_missing(value: Any) -> bool:
    """None, NaN or pandas' NA: a null cell read back from Parquet."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except TypeError:  # pd.NA refuses bool()
        return True


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _near(value: float, limit: float) -> bool:
    """Whether ``value`` differs from ``limit`` by float rounding only (``SNAP_ULPS`` ulps)."""
    return abs(value - limit) <= SNAP_ULPS * math.ulp(limit)


# Arrow's int64, the type of an integer column in trials.parquet.
_INT64 = (-(2**63), 2**63 - 1)


def _native(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (``np.int64(3)`` as 3, ``np.True_`` as
    True); anything else unchanged. A space written with numpy values (``np.arange(2, 5)``,
    ``np.logspace(...)``) then types its columns, and reads back from experiment.json, as the
    same space written with Python numbers."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_scalar(param: Param, value: Any, what: str) -> None:
    """A categorical's choice or a fixed value must be a value trials.parquet stores in a typed
    column and the journal reads back as itself: a dict's int keys come back from JSON as text
    and a tuple as a list, so those would run as something else after a resume."""
    if value is None or isinstance(value, (str, bool, float)):
        return
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise param.error(f"{what} {value!r} does not fit a 64-bit integer")
        return
    raise param.error(f"{what} {value!r} is a {type(value).__name__}; choices and fixed values "
                      "must be strings, numbers, booleans or None")


def _snap_integer(value: Any) -> Any:
    """``value`` as an int when it is an integer up to float rounding; otherwise unchanged."""
    if _is_number(value) and math.isfinite(value):
        nearest = round(float(value))
        if _near(float(value), float(nearest)):
            return int(nearest)
    return value


class Param:
    """Base of all parameter types.

    Parameters
    ----------
    grid : sequence, optional
        Explicit values for ``--algo grid``.
    when : mapping of str to sequence, optional
        ``{"parent": [values...]}``: the parameter is active only when every named parent is
        active and takes one of the listed values. Inactive parameters are left out of a config.
    """

    kind = "param"
    # Read back from an experiment's record (``Space.from_dict``), not from a space module: an
    # experiment written before choices had to be scalars (a list Fixed value, say) still
    # resumes and rebuilds as it did.
    stored = False

    def __init__(self, *, grid: Sequence[Any] | None = None, when: Mapping[str, Any] | None = None):
        self.name = "?"  # set by Space
        self.grid_values = None if grid is None else [_native(v) for v in grid]
        self.when: dict[str, list[Any]] = {}
        for parent, values in (when or {}).items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
                values = [values]
            self.when[parent] = [_native(v) for v in values]

    # --- contract used by Space -------------------------------------------------------------
    def check(self) -> None:
        """Raise SpaceError if the definition itself is malformed."""
        if self.grid_values is not None:
            if not self.grid_values:
                raise self.error("grid is empty")
            for value in self.grid_values:
                self.check_value(value, what="grid value")

    def check_value(self, value: Any, what: str = "value") -> None:
        raise NotImplementedError

    def grid(self) -> list[Any]:
        raise NotImplementedError

    def sample(self, rng: np.random.Generator) -> Any:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind}
        out.update(self._fields())
        if self.grid_values is not None:
            out["grid"] = list(self.grid_values)
        if self.when:
            out["when"] = {k: list(v) for k, v in self.when.items()}
        return out

    def _fields(self) -> dict[str, Any]:
        return {}

    @property
    def is_discrete(self) -> bool:
        return False

    def error(self, message: str) -> SpaceError:
        return SpaceError(f"parameter '{self.name}': {message}")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "type")
        return f"{type(self).__name__}({fields})"


class Float(Param):
    """A real number in [low, high]; ``log=True`` samples and models it on a log scale."""

    kind = "float"

    def __init__(self, low: float, high: float, *, log: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.low, self.high, self.log = _native(low), _native(high), bool(log)

    def _fields(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "log": self.log}

    def check(self) -> None:
        if not (_is_number(self.low) and _is_number(self.high)):
            raise self.error(f"low and high must be numbers, got {self.low!r} and {self.high!r}")
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise self.error("low and high must be finite")
        if self.low >= self.high:
            raise self.error(f"low ({self.low}) must be less than high ({self.high})")
        if self.log and self.low <= 0:
            raise self.error(f"a log range must be above zero, got low={self.low}")
        super().check()

    def snap(self, value: Any) -> Any:
        """``value``, or the limit it differs from by float rounding only."""
        if _is_number(value):
            for limit in (self.low, self.high):
                if _near(float(value), float(limit)):
                    return limit
        return value

    def check_value(self, value: Any, what: str = "value") -> None:
        if not _is_number(value):
            raise self.error(f"{what} {value!r} is not a number")
        if not (self.low <= self.snap(value) <= self.high):
            raise self.error(f"{what} {value!r} is outside [{self.low}, {self.high}]")

    def grid(self) -> list[Any]:
        if self.grid_values is None:
            raise self.error("has no grid values; give grid=[...] to use it with --algo grid")
        return [float(self.snap(v)) for v in self.grid_values]

    def sample(self, rng: np.random.Generator) -> float:
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    # The shared continuous box: [0, 1] maps linearly onto [low, high], in log space for log.
    def to_unit(self, value: float) -> float:
        lo, hi = self._bounds()
        v = float(value)
        if self.log:
            v = math.log(v)
        return (v - lo) / (hi - lo)

    def from_unit(self, u: float) -> float:
        lo, hi = self._bounds()
        v = lo + min(max(float(u), 0.0), 1.0) * (hi - lo)
        v = math.exp(v) if self.log else v
        return min(max(v, self.low), self.high)

    def _bounds(self) -> tuple[float, float]:
        if self.log:
            return math.log(self.low), math.log(self.high)
        return float(self.low), float(self.high)


class LogFloat(Float):
    """Shorthand for ``Float(low, high, log=True)``."""

    def __init__(self, low: float, high: float, **kwargs: Any):
        super().__init__(low, high, log=True, **kwargs)


class Int(Float):
    """An integer in [low, high] (both inclusive); ``log=True`` for scale-like integers."""

    kind = "int"

    def check(self) -> None:
        # Bounds computed in floats (2 ** 0.5 ** 2, say) that are integers up to rounding count.
        self.low, self.high = _snap_integer(self.low), _snap_integer(self.high)
        for bound in (self.low, self.high):
            if not (_is_number(bound) and float(bound).is_integer()):
                raise self.error(f"low and high must be integers, got {self.low!r} and {self.high!r}")
            if not _INT64[0] <= bound <= _INT64[1]:
                raise self.error(f"{bound!r} does not fit a 64-bit integer")
        super().check()

    def snap(self, value: Any) -> Any:
        return super().snap(_snap_integer(value))

    def check_value(self, value: Any, what: str = "value") -> None:
        super().check_value(value, what)
        if not float(self.snap(value)).is_integer():
            raise self.error(f"{what} {value!r} is not an integer")

    @property
    def is_discrete(self) -> bool:
        return True

    def grid(self) -> list[Any]:
        if self.grid_values is not None:
            return [int(self.snap(v)) for v in self.grid_values]
        size = int(self.high) - int(self.low) + 1
        if size > MAX_IMPLICIT_INT_GRID:
            raise self.error(
                f"has {size} values and no grid; give grid=[...] to use it with --algo grid"
            )
        return list(range(int(self.low), int(self.high) + 1))

    def sample(self, rng: np.random.Generator) -> int:
        return self.from_unit(rng.uniform(0.0, 1.0))

    def _bounds(self) -> tuple[float, float]:
        # Widen by half a step so each integer owns an equal share of the box (in log space
        # for log ints), and rounding after the decode never leaves [low, high].
        lo, hi = self.low - 0.4999, self.high + 0.4999
        if self.log:
            return math.log(max(lo, 1e-12)), math.log(hi)
        return float(lo), float(hi)

    def from_unit(self, u: float) -> int:
        lo, hi = self._bounds()
        v = lo + min(max(float(u), 0.0), 1.0) * (hi - lo)
        v = math.exp(v) if self.log else v
        return int(min(max(round(v), self.low), self.high))


class Categorical(Param):
    """One of a list of choices (strings, numbers, booleans or None)."""

    kind = "categorical"

    def __init__(self, choices: Sequence[Any], **kwargs: Any):
        super().__init__(**kwargs)
        # A string is one value, not a list of its letters (as in ``when=``).
        self.choices = [_native(c) for c in choices] \
            if isinstance(choices, Iterable) and not isinstance(choices, (str, bytes)) else choices

    def _fields(self) -> dict[str, Any]:
        return {"choices": list(self.choices)}

    @property
    def is_discrete(self) -> bool:
        return True

    def check(self) -> None:
        if isinstance(self.choices, (str, bytes)):
            raise self.error(f"choices must be a list, not the string {self.choices!r} (write "
                             f"Categorical([{self.choices!r}]) or Fixed({self.choices!r}))")
        if not isinstance(self.choices, list) or not self.choices:
            raise self.error("choices must be a non-empty list")
        if not self.stored:
            for choice in self.choices:
                _check_scalar(self, choice, "choice")
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise self.error(f"choices {self.choices!r} contain duplicates")
        super().check()

    def check_value(self, value: Any, what: str = "value") -> None:
        if not is_one_of(value, self.choices):
            raise self.error(f"{what} {value!r} is not one of {self.choices!r}")

    def grid(self) -> list[Any]:
        return list(self.grid_values if self.grid_values is not None else self.choices)

    def sample(self, rng: np.random.Generator) -> Any:
        return self.choices[int(rng.integers(len(self.choices)))]

    def index(self, value: Any) -> int:
        return self.choices.index(value)


class Fixed(Param):
    """A constant passed to every trial; searched by no algorithm."""

    kind = "fixed"

    def __init__(self, value: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.value = _native(value)

    def _fields(self) -> dict[str, Any]:
        return {"value": self.value}

    @property
    def is_discrete(self) -> bool:
        return True

    def check(self) -> None:
        if self.grid_values is not None:
            raise self.error("a fixed parameter takes no grid")
        if not self.stored:
            _check_scalar(self, self.value, "value")

    def check_value(self, value: Any, what: str = "value") -> None:
        if value != self.value:
            raise self.error(f"{what} {value!r} differs from the fixed value {self.value!r}")

    def grid(self) -> list[Any]:
        return [self.value]

    def sample(self, rng: np.random.Generator) -> Any:
        return self.value


class Space:
    """An ordered set of named parameters.

    Parameters
    ----------
    params : mapping of str to Param, optional
        The parameters, in order; keyword arguments add more.
    name : str
        A short name for logs and ``experiment.json``.
    """

    def __init__(self, params: Mapping[str, Param] | None = None, *, name: str = "space",
                 **kwargs: Param):
        self.name = name
        self.params: dict[str, Param] = {}
        for key, param in list((params or {}).items()) + list(kwargs.items()):
            if not isinstance(param, Param):
                raise SpaceError(
                    f"parameter '{key}': expected Float, LogFloat, Int, Categorical or Fixed, "
                    f"got {type(param).__name__}"
                )
            param.name = key
            self.params[key] = param
        self._order: list[str] | None = None

    # --- validation ------------------------------------------------------------------------
    def validate(self) -> Space:
        """Check every parameter and condition; raise SpaceError naming the first problem."""
        if not self.params:
            raise SpaceError("the space has no parameters")
        for name, param in self.params.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise SpaceError(f"parameter name {name!r} must be a Python identifier")
            try:
                param.check()
            except SpaceError:
                raise
            except (ArithmeticError, TypeError, ValueError) as exc:
                # Values no check foresaw (an int beyond float range, a numpy array): still one
                # line that names the parameter.
                raise param.error(f"invalid definition ({type(exc).__name__}: {exc})") from None
        for name, param in self.params.items():
            for parent, values in param.when.items():
                if parent not in self.params:
                    raise param.error(f"condition on unknown parameter '{parent}'")
                if parent == name:
                    raise param.error("a condition cannot refer to the parameter itself")
                parent_param = self.params[parent]
                if not parent_param.is_discrete:
                    raise param.error(
                        f"condition on '{parent}', which is continuous; conditions need a "
                        "categorical, int or fixed parent"
                    )
                if not values:
                    raise param.error(f"condition on '{parent}' lists no values")
                for value in values:
                    try:
                        parent_param.check_value(value)
                    except (SpaceError, ArithmeticError, TypeError, ValueError):
                        raise param.error(
                            f"condition value {value!r} for '{parent}' is not one of its values"
                        ) from None
        self._order = self._topological_order()
        return self

    def _topological_order(self) -> list[str]:
        order: list[str] = []
        state: dict[str, int] = {}  # 1 = visiting, 2 = done

        def visit(name: str) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                raise self.params[name].error("conditions form a cycle")
            state[name] = 1
            for parent in self.params[name].when:
                visit(parent)
            state[name] = 2
            order.append(name)

        for name in self.params:
            visit(name)
        return order

    @property
    def order(self) -> list[str]:
        """Parameter names with every parent before its children."""
        if self._order is None:
            self.validate()
        assert self._order is not None
        return self._order

    # --- conditions -------------------------------------------------------------------------
    def is_active(self, name: str, config: Mapping[str, Any]) -> bool:
        """Whether ``name`` is active given the (parent) values in ``config``."""
        for parent, values in self.params[name].when.items():
            if parent not in config or not self.is_active(parent, config):
                return False
            if not is_one_of(config[parent], values):
                return False
        return True

    def finalize(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Drop inactive parameters, add fixed ones, and cast to each parameter's type."""
        out: dict[str, Any] = {}
        for name in self.order:
            if not self.is_active(name, out):
                continue
            param = self.params[name]
            if isinstance(param, Fixed):
                out[name] = param.value
            elif name in config:
                value = config[name]
                if isinstance(param, Int):
                    value = int(round(value))
                elif isinstance(param, Float):
                    value = float(param.snap(value))
                out[name] = value
        return out

    def from_record(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The config of a stored row (``trials.parquet``'s ``param_`` values by name), where a
        missing value (None, NaN) is an inactive parameter, or the choice None of an active
        categorical that has it (``Categorical([None, "balanced"])``): Parquet stores both as
        null, and only the space's conditions tell them apart."""
        return self.finalize(self.present_values(values))

    def present_values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``from_record`` before ``finalize``: the non-missing values of the space's params,
        and None for each missing one that is an active categorical's choice None."""
        present = {k: v for k, v in values.items() if k in self.params and not is_missing(v)}
        for name, value in present.items():
            if isinstance(self.params[name], Categorical):
                present[name] = choice_from_text(value, self.params[name].choices)
        for name in self.order:  # parents first: a child's condition may be on a None choice
            param = self.params[name]
            if name in values and name not in present and isinstance(param, Categorical) and \
                    None in param.choices and self.is_active(name, present):
                present[name] = None
        return present

    def check_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Validate a full config against the space; return it finalized."""
        for key in config:
            if key not in self.params:
                raise SpaceError(f"parameter '{key}' is not in the space")
        final = self.finalize(config)
        for name, value in final.items():
            self.params[name].check_value(value)
        for name in self.order:
            if self.is_active(name, final) and name not in final:
                raise SpaceError(f"parameter '{name}': missing from the config")
        return final

    # --- algorithms -------------------------------------------------------------------------
    def grid(self) -> list[dict[str, Any]]:
        """Every valid combination of grid values once, in declaration order.

        A conditional parameter branches only where it is active, so inactive parameters
        never duplicate trials.
        """
        grids = {name: self.params[name].grid() for name in self.order}
        configs: list[dict[str, Any]] = [{}]
        # Expand in declaration order so the first parameter varies slowest (as in
        # scikit-learn's ParameterGrid for a single dict) while parents still precede children.
        for name in self._declaration_order_respecting_parents():
            expanded = []
            for partial in configs:
                if self.is_active(name, partial):
                    expanded.extend({**partial, name: value} for value in grids[name])
                else:
                    expanded.append(partial)
            configs = expanded
        return configs

    def grid_size(self) -> int:
        return len(self.grid())

    def _declaration_order_respecting_parents(self) -> list[str]:
        done: list[str] = []
        remaining = list(self.params)
        while remaining:
            for name in remaining:
                if all(parent in done for parent in self.params[name].when):
                    done.append(name)
                    remaining.remove(name)
                    break
        return done

    def sample(self, n: int, seed: int | None = None) -> list[dict[str, Any]]:
        """``n`` random configs; the same seed gives the same configs."""
        rng = np.random.default_rng(seed)
        return [self.sample_one(rng) for _ in range(n)]

    def sample_one(self, rng: np.random.Generator) -> dict[str, Any]:
        config: dict[str, Any] = {}
        # Draw every parameter, active or not, so one config's conditions never shift the
        # random stream of the next: changing one branch of a space keeps the others' draws.
        for name in self.order:
            value = self.params[name].sample(rng)
            if self.is_active(name, config):
                config[name] = value
        return config

    # --- the shared continuous box -------------------------------------------------------
    def searchable(self) -> list[str]:
        """Names of the parameters a model-based searcher varies (all but fixed ones)."""
        return [n for n in self.order if not isinstance(self.params[n], Fixed)]

    @property
    def transform(self):
        """The one unit box of this space (``search_spaces.transform.UnitTransform``)."""
        if getattr(self, "_transform", None) is None:
            from search_spaces.transform import UnitTransform

            self._transform = UnitTransform(self)
        return self._transform

    def to_unit(self, config: Mapping[str, Any]) -> np.ndarray:
        """A config as a point of the unit box (see ``search_spaces.transform``)."""
        return self.transform.encode(config)

    def from_unit(self, unit: Sequence[float]) -> dict[str, Any]:
        """Inverse of ``to_unit``: decode any point of the box to a finalized config."""
        return self.transform.decode(np.asarray(unit, dtype=float))

    # --- description ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": {n: p.to_dict() for n, p in self.params.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Space:
        """Rebuild a space from ``to_dict()`` output (as stored in ``experiment.json``)."""
        kinds = {"float": Float, "int": Int, "categorical": Categorical, "fixed": Fixed}
        params: dict[str, Param] = {}
        for name, spec in data["params"].items():
            spec = dict(spec)
            kind = spec.pop("type")
            if kind not in kinds:
                raise SpaceError(f"parameter '{name}': unknown type {kind!r}")
            if kind in ("float", "int"):
                params[name] = kinds[kind](spec.pop("low"), spec.pop("high"), **spec)
            elif kind == "categorical":
                params[name] = Categorical(spec.pop("choices"), **spec)
            else:
                params[name] = Fixed(spec.pop("value"), **spec)
            params[name].stored = True
        return cls(params, name=data.get("name", "space")).validate()

    def describe(self) -> str:
        return ", ".join(f"{n}={p!r}" for n, p in self.params.items())

    def __repr__(self) -> str:
        return f"Space(name={self.name!r}, {self.describe()})"

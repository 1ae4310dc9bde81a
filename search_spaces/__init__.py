"""Declarative search spaces: the language (``space``), one module per task, and the loader."""

from search_spaces.loader import load_space
from search_spaces.space import Categorical, Fixed, Float, Int, LogFloat, Param, Space, SpaceError

__all__ = [
    "Categorical",
    "Fixed",
    "Float",
    "Int",
    "LogFloat",
    "Param",
    "Space",
    "SpaceError",
    "load_space",
]

"""Saving a searcher with the experiment: one pickle of ``get_state()``, as Tune asks for."""

from __future__ import annotations

import pickle
from typing import Any


class PickledState:
    """Mixin for Searchers that define ``get_state()`` and ``set_state(state)``.

    Tune calls ``save`` with its experiment checkpoint, and ``restore`` on ``Tuner.restore``:
    a searcher restored that way continues as it was, numbering included. The pipeline's own
    ``--resume`` does not go through it: it rebuilds the searcher from the journal (``resume``).
    """

    def get_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def set_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))

"""Find a space by module name (``svm``) or by file path (``path/to/space.py``)."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

from search_spaces.space import Space, SpaceError


def load_space(spec: str) -> Space:
    """Load and validate the ``SPACE`` object of a space module.

    Parameters
    ----------
    spec : str
        A module name under ``search_spaces`` (``svm``), a dotted module path
        (``mypkg.spaces.svm``), or a path to a ``.py`` file.

    Returns
    -------
    Space
        The validated space.

    Raises
    ------
    SpaceError
        With one line naming the module or the parameter that is wrong.
    """
    if spec.endswith(".py") or "/" in spec or "\\" in spec:
        path = Path(spec)
        if not path.is_file():
            raise SpaceError(f"space file '{spec}' does not exist")
        module_name = "_space_" + re.sub(r"\W", "_", str(path.resolve()))
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise SpaceError(f"space file '{spec}' cannot be loaded as Python")
        module = importlib.util.module_from_spec(loader_spec)
        try:
            loader_spec.loader.exec_module(module)
        except SpaceError as exc:
            raise SpaceError(f"space '{spec}': {exc}") from None
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a user's file (sys.exit included): report, don't trace back
            raise SpaceError(f"space file '{spec}' failed to import: {_one_line(exc)}") from None
    else:
        if not re.fullmatch(r"[A-Za-z_][\w.]*", spec):
            raise SpaceError(f"space '{spec}' is not a module name or a .py file")
        candidates = [spec] if "." in spec else [f"search_spaces.{spec}"]
        module = None
        for name in candidates:
            try:
                module = importlib.import_module(name)
                break
            except ModuleNotFoundError as exc:
                if exc.name is not None and not name.startswith(exc.name):
                    raise SpaceError(f"space '{spec}' failed to import: {exc}") from None
            except SpaceError as exc:
                raise SpaceError(f"space '{spec}': {exc}") from None
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                raise SpaceError(f"space '{spec}' failed to import: {_one_line(exc)}") from None
        if module is None:
            raise SpaceError(f"unknown space '{spec}': no module search_spaces.{spec} and no such file")
    space = getattr(module, "SPACE", None)
    if not isinstance(space, Space):
        raise SpaceError(f"space '{spec}' defines no SPACE = Space(...)")
    try:
        return space.validate()
    except SpaceError as exc:
        raise SpaceError(f"space '{spec}': {exc}") from None
    except Exception as exc:  # a value the checks did not foresee (an array, a huge int)
        raise SpaceError(f"space '{spec}' is not valid: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    """``Type: message`` (SpaceError puts it on one line)."""
    return f"{type(exc).__name__}: {exc}" if str(exc).strip() else type(exc).__name__

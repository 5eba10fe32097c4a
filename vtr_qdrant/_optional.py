"""Lazy imports of optional dependencies, with an error that names the pip extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

__all__ = ["require"]


def require(module: str, extra: str, *, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``pip install 'vtr-qdrant[extra]'``.

    Heavy dependencies (torch, ray, ffmpeg bindings, qdrant-edge) are imported only inside the
    functions that need them, through this helper, so ``import vtr_qdrant`` stays light.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        what = f" for {purpose}" if purpose else ""
        raise MissingDependencyError(
            f"the optional dependency {module!r} is needed{what} but is not installed; "
            f"install it with: pip install 'vtr-qdrant[{extra}]'"
        ) from e

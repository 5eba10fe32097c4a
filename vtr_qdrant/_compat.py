"""Import paths of the flat layout (``vtr_qdrant.storage``, ``vtr_qdrant.xpool``...), kept working.

The library moved into stage packages (``model/``, ``video/``, ``store/``, ``search/``, ``eval/``;
see docs/ARCHITECTURE.md). Importing an old module path still works: it gives a module whose names
resolve from their new homes, and warns once (``DeprecationWarning``) naming the new path. Nothing
here imports a library module until one of its names is used.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Sequence

#: old module -> the modules its public names live in now (searched in order)
MOVED: dict[str, tuple[str, ...]] = {
    "vtr_qdrant.manifest": ("vtr_qdrant.model.manifest",),
    "vtr_qdrant.bundle": ("vtr_qdrant.model.bundle",),
    "vtr_qdrant.runtime": ("vtr_qdrant.model.runtime",),
    "vtr_qdrant.preprocess": ("vtr_qdrant.model.preprocess",),
    "vtr_qdrant.tokenizer": ("vtr_qdrant.model.tokenizer", "vtr_qdrant.model.bpe"),
    "vtr_qdrant.encoders": ("vtr_qdrant.model.encoders",),
    "vtr_qdrant.testing": ("vtr_qdrant.model.testing",),
    "vtr_qdrant.config": ("vtr_qdrant.video.sampling",),
    "vtr_qdrant.ffmpeg_bin": ("vtr_qdrant.video.ffmpeg_bin",),
    "vtr_qdrant.points": ("vtr_qdrant.store.points",),
    "vtr_qdrant.storage": ("vtr_qdrant.store.qdrant", "vtr_qdrant.store.backend", "vtr_qdrant.store.plan"),
    "vtr_qdrant.edge": ("vtr_qdrant.store.edge",),
    "vtr_qdrant.aggregation": ("vtr_qdrant.search.aggregation", "vtr_qdrant.search.resolve"),
    "vtr_qdrant.xpool": ("vtr_qdrant.search.xpool", "vtr_qdrant.search.xpool_factorised", "vtr_qdrant.search.xpool_io"),
    "vtr_qdrant.hits": ("vtr_qdrant.search.hits",),
    "vtr_qdrant.evaluation": (
        "vtr_qdrant.eval.evaluation",
        "vtr_qdrant.eval.corpus",
        "vtr_qdrant.eval.queries",
        "vtr_qdrant.eval.metrics",
        "vtr_qdrant.search.resolve",
    ),
    "vtr_qdrant.demo": ("vtr_qdrant.cli.demo",),
}


class _MovedModule(types.ModuleType):
    """Stands in for an old module path: attribute lookups go to the new modules."""

    __targets__: Sequence[str] = ()

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        for target in self.__targets__:
            module = importlib.import_module(target)
            if hasattr(module, name):
                value = getattr(module, name)
                setattr(self, name, value)
                return value
        raise AttributeError(f"module {self.__name__!r} (moved to {', '.join(self.__targets__)}) has no attribute {name!r}")


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _MovedModule(spec.name)
        module.__targets__ = MOVED[spec.name]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        warnings.warn(
            f"{module.__name__} moved to {' / '.join(MOVED[module.__name__])}: import from there "
            "(the old path keeps working for now)",
            DeprecationWarning,
            stacklevel=2,
        )


def install() -> None:
    """Serve the old module paths (idempotent)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())

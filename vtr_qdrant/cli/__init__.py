"""The ``vtr-qdrant`` command line: one module per command, assembled by :mod:`.main`.

This package is the only part of ``vtr_qdrant`` that reaches ``ray_jobs`` and ``onnx_export``
(lazily, inside commands that need their extras).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (the ``vtr-qdrant`` console script)."""
    from .main import main as _main

    return _main(argv)


def __getattr__(name: str) -> Any:
    # the 0.1 module vtr_qdrant.cli exposed these two helpers
    if name == "build_parser":
        from .main import build_parser

        return build_parser
    if name == "open_client":
        from .common import open_client

        return open_client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

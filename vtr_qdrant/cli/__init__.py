"""The ``vtr-qdrant`` command line: one module per command, assembled by :mod:`.main`.

This package is the only part of ``vtr_qdrant`` that reaches ``ray_jobs`` and ``onnx_export``
(lazily, inside commands that need their extras).
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (the ``vtr-qdrant`` console script)."""
    from .main import main as _main

    return _main(argv)

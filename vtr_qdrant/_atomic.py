"""Atomic file replacement: write a temporary file beside the target, fsync it, rename it over."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_file", "atomic_write_text"]


@contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file in ``path``'s folder; on success it replaces ``path`` atomically.

    The data is flushed and fsynced before ``os.replace``, so readers see the old file or the
    whole new one, never a part. On any exception the temporary file is removed and ``path`` is
    left as it was. ``mode`` is ``"w"`` (UTF-8 text) or ``"wb"``.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically; see :func:`atomic_file`."""
    with atomic_file(path) as f:
        f.write(text)

"""Writing a bundle folder atomically: a hidden temporary sibling, renamed into place when complete."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from vtr_qdrant.errors import ConfigError

__all__ = ["STALE_PARTIAL_SECONDS", "prepare_target", "publish"]

log = logging.getLogger("onnx_export.clip")

STALE_PARTIAL_SECONDS = 6 * 3600


def remove_stale_partials(out_dir: Path) -> None:
    if not out_dir.parent.is_dir():
        return
    now = time.time()
    for p in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
        try:
            if p.is_dir() and now - p.stat().st_mtime > STALE_PARTIAL_SECONDS:
                log.info("removing %s, left by an interrupted export", p)
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            continue


def prepare_target(out_dir: Path, overwrite: bool) -> None:
    remove_stale_partials(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ConfigError(f"{out_dir} exists and is not a folder")
        if any(out_dir.iterdir()) and not overwrite:
            raise ConfigError(f"{out_dir} exists and is not empty; choose another folder or pass overwrite=True")
    out_dir.parent.mkdir(parents=True, exist_ok=True)


def publish(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Move the finished temporary folder to ``out_dir`` with renames only (same filesystem)."""
    if out_dir.exists():
        if out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        elif overwrite:
            old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
            os.replace(out_dir, old / "bundle")
            try:
                os.replace(tmp, out_dir)
            except BaseException:
                os.replace(old / "bundle", out_dir)
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
            return
        else:
            raise ConfigError(f"{out_dir} appeared while exporting and is not empty; not replacing it")
    os.replace(tmp, out_dir)



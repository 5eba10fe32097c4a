"""An on-disk copy of the points' frame matrices for stage 2: float32 rows, memory-mapped.

Reading candidates' frames back from Qdrant is the largest cost of a search (the engine returns
nested lists of floats that must become NumPy arrays: ~30 ms per 100 candidates of 12 x 512 on
this project's 2-core machine), while the stage-2 math takes ~1 ms. A :class:`FrameStore` keeps
each point's (F, D) frames as float32 rows of one memory-mapped file (bit-equal to what Qdrant
returns, so scores do not depend on where frames came from), and gathering 100 candidates is a
few slices: ~24 KB a 12 x 512 point, the size of Qdrant's own copy.

It is a cache, never the source of truth: an entry is keyed by point id AND the point's frames
version (:func:`frames_version`, the frames digest stored in its payload), so a point whose
frames changed (a re-ingest) is a miss and is read from Qdrant again, then stored anew. It fills
itself as searches read frames from Qdrant, and :class:`~vtr_qdrant.store.videos.VideoStore`
fills it on every write, so freshly ingested videos are never cold. Files:

- ``frames.f32``: float32 rows (N, D), appended;
- ``index.bin``: fixed-size records (point id, frames version hash, first row, frame count),
  appended after the rows they describe; a torn last record (a crash) is ignored on load.

Several processes may read and append (appends are serialised with an ``fcntl`` lock; readers
pick up new records on their next call). Deleted points leave dead rows behind; :meth:`clear`
empties the store (it refills as searches run). Embedded and server targets alike: for a server
the store is a client-side cache in a folder you choose.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .points import Key

__all__ = ["FrameStore", "frames_version"]

log = logging.getLogger(__name__)

_RECORD = np.dtype([("id", "V16"), ("version", "V16"), ("row", "<i8"), ("n", "<i4"), ("pad", "<i4")])
FRAMES_FILE = "frames.f32"
INDEX_FILE = "index.bin"
LOCK_FILE = ".lock"


def frames_version(payload: Mapping[str, Any]) -> str:
    """What changes when a point's frames change: its stored frames digest (ingestion time for
    points written before digests existed)."""
    return str(payload.get(Key.FRAMES_DIGEST) or payload.get(Key.INGESTED_AT, ""))


def _id_bytes(point_id: str) -> bytes:
    try:
        return uuid.UUID(str(point_id)).bytes
    except ValueError:  # not a UUID (an integer id): hashed into the same 16 bytes
        return hashlib.blake2b(str(point_id).encode(), digest_size=16).digest()


def _version_bytes(version: str) -> bytes:
    return hashlib.blake2b(version.encode(), digest_size=16).digest()


class FrameStore:
    """Float32 frame matrices of points, keyed by (point id, frames version), in one folder.

    Args:
        path: the folder (created if missing).
        dim: embedding dimension D (a store written with another D is refused).

    Raises:
        ConfigError: ``path`` is not a usable folder, or holds frames of another dimension.
    """

    def __init__(self, path: str | os.PathLike[str], dim: int) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"frame store folder {str(self.path)!r} cannot be created: {e}") from e
        self.dim = int(dim)
        meta = self.path / "dim"
        if meta.exists() and int(meta.read_text() or 0) != self.dim:
            raise ConfigError(f"frame store {str(self.path)!r} holds {meta.read_text()}-d frames, not {self.dim}-d; "
                              "use another folder (or delete this one: it is only a cache)")
        if not meta.exists():
            meta.write_text(str(self.dim))
        self._frames_file = self.path / FRAMES_FILE
        self._index_file = self.path / INDEX_FILE
        self._frames_file.touch(exist_ok=True)
        self._index_file.touch(exist_ok=True)
        self._index: dict[bytes, tuple[bytes, int, int]] = {}
        self._index_read = 0  # bytes of index.bin already loaded
        self._map: np.memmap | None = None
        self._ident: tuple[int, int] | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ reading

    def _refresh(self) -> None:
        st = self._index_file.stat()
        size, ident = st.st_size, (st.st_dev, st.st_ino)
        usable = size - size % _RECORD.itemsize
        if usable < self._index_read or ident != self._ident:  # cleared, or another folder behind an alias
            self._index.clear()
            self._index_read, self._map, self._ident = 0, None, ident
        if usable > self._index_read:
            with open(self._index_file, "rb") as f:
                f.seek(self._index_read)
                recs = np.frombuffer(f.read(usable - self._index_read), dtype=_RECORD)
            for r in recs:
                self._index[bytes(r["id"])] = (bytes(r["version"]), int(r["row"]), int(r["n"]))
            self._index_read = usable

    def _rows(self, need: int) -> np.memmap:
        if self._map is None or self._map.shape[0] < need:
            rows = self._frames_file.stat().st_size // (4 * self.dim)
            self._map = np.memmap(self._frames_file, dtype=np.float32, mode="r", shape=(rows, self.dim)) if rows else None
        if self._map is None or self._map.shape[0] < need:
            raise OSError("frame store rows missing (file truncated?)")
        return self._map

    def get_many(self, keys: Sequence[tuple[str, str]]) -> dict[str, np.ndarray]:
        """Frames of the (point id, frames version) pairs that are stored with that version.

        Returns:
            ``{point id: (F, D) float32}`` for the hits; misses (absent, or another version) are left out.
        """
        out: dict[str, np.ndarray] = {}
        if not keys:
            return out
        with self._lock:
            try:
                self._refresh()
            except OSError:  # the folder went away (its collection was dropped): all misses
                return out
            found = []
            for pid, version in keys:
                e = self._index.get(_id_bytes(pid))
                if e is not None and e[0] == _version_bytes(version):
                    found.append((pid, e[1], e[2]))
            if not found:
                return out
            try:
                rows = self._rows(max(r + n for _, r, n in found))
            except OSError:
                return out
            for pid, r, n in found:
                out[pid] = np.array(rows[r : r + n])  # a private copy: the map may be replaced
        return out

    def __len__(self) -> int:
        with self._lock:
            self._refresh()
            return len(self._index)

    # ------------------------------------------------------------------ writing

    def put_many(self, items: Sequence[tuple[str, str, np.ndarray]]) -> None:
        """Store (point id, frames version, (F, D) frames) triples; a later entry for an id wins."""
        items = [(pid, v, f) for pid, v, f in items if f is not None and len(f)]
        if not items:
            return
        block = np.concatenate([np.asarray(f, dtype=np.float32).reshape(-1, self.dim) for _, _, f in items])
        try:
            self._append(items, block)
        except OSError as e:  # a cache: a full disk or a dropped folder must not fail a search or a write
            log.warning("frame store %s not written: %s", self.path, e)

    def _append(self, items: Sequence[tuple[str, str, np.ndarray]], block: np.ndarray) -> None:
        with self._lock, open(self.path / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with open(self._frames_file, "ab") as f:
                    start = f.tell() // (4 * self.dim)
                    f.write(block.tobytes())
                recs = np.zeros(len(items), dtype=_RECORD)
                row = start
                for i, (pid, version, frames) in enumerate(items):
                    recs[i] = (_id_bytes(pid), _version_bytes(version), row, len(frames), 0)
                    row += len(frames)
                with open(self._index_file, "ab") as f:  # after the rows: a record never points at missing rows
                    size = f.tell()
                    if size % _RECORD.itemsize:  # a torn record from a crash: cut it off first
                        f.truncate(size - size % _RECORD.itemsize)
                    f.write(recs.tobytes())
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def clear(self) -> None:
        """Drop every entry (and the dead rows of deleted points); the store refills as searches run."""
        with self._lock, open(self.path / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._map = None
                for name in (INDEX_FILE, FRAMES_FILE):
                    with open(self.path / name, "wb"):
                        pass
                self._index.clear()
                self._index_read = 0
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

"""The folder side of the Qdrant Edge back end: one Edge shard per collection, metadata, aliases.

Layout under the root folder (see :mod:`vtr_qdrant.store.edge`)::

    root/
      <collection_name>/
        collection.json   # vtr-qdrant's collection metadata (schema, fingerprint, sampling), atomic
        shard/            # the Edge shard (segments, WAL, edge_config.json)
      <alias> -> <collection_name>   # relative symbolic link, swapped atomically
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import weakref
from pathlib import Path
from typing import Any

from .._atomic import atomic_write_text
from ..errors import ConfigError, StorageError
from .edge_filters import edge_module
from .filters import COLLECTION_NAME_RE, check_collection_name
from .points import VECTOR_FRAMES, VECTOR_POOLED, VECTOR_SCENES

__all__ = ["EdgeShardFolder", "METADATA_FILE", "SHARD_DIR"]

log = logging.getLogger(__name__)

METADATA_FILE = "collection.json"
SHARD_DIR = "shard"
_FORMAT_VERSION = 1
# Qdrant's default: segments whose vectors take less than this many KB are scanned, not indexed.
_FULL_SCAN_THRESHOLD_KB = 10_000


def _close_all(shards: dict[str, Any]) -> None:
    """Flush and close every open shard (also runs at interpreter exit)."""
    for name, shard in list(shards.items()):
        try:
            shard.flush()
            shard.close()
        except Exception:  # noqa: BLE001 - best effort at shutdown; one bad shard must not block others
            log.exception("closing Qdrant Edge shard %r failed", name)
    shards.clear()



class EdgeShardFolder:
    """Collections as Edge shards under a root folder: create, open, follow aliases, close.

    :class:`~vtr_qdrant.store.edge.EdgeBackend` adds the point and query operations; its docstring
    lists the constructor arguments.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        hnsw_ef: int | None = 512,
        hnsw_m: int = 16,
        hnsw_ef_construct: int = 100,
        sync_writes: bool = False,
        max_search_threads: int | None = None,
    ) -> None:
        self._e = edge_module()
        self.path = Path(path).expanduser().absolute()
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"EdgeBackend path {str(self.path)!r} exists and is not a folder")
        for label, value in (("hnsw_m", hnsw_m), ("hnsw_ef_construct", hnsw_ef_construct)):
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{label} must be an int >= 0, got {value!r}")
        if hnsw_ef is not None and (not isinstance(hnsw_ef, int) or hnsw_ef < 1):
            raise ConfigError(f"hnsw_ef must be an int >= 1 or None, got {hnsw_ef!r}")
        self.path.mkdir(parents=True, exist_ok=True)
        self.hnsw_ef = hnsw_ef
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construct = hnsw_ef_construct
        self.sync_writes = sync_writes
        self.max_search_threads = max_search_threads
        self._shards: dict[str, Any] = {}
        self._followed: dict[str, str] = {}  # alias -> the collection it pointed at on its last use
        self._lock = threading.RLock()
        self._finalizer = weakref.finalize(self, _close_all, self._shards)

    def __repr__(self) -> str:
        return f"EdgeBackend({str(self.path)!r}, open={sorted(self._shards)})"

    def __enter__(self) -> EdgeShardFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ files

    def _dir(self, name: str) -> Path:
        return self.path / check_collection_name(name)

    def frame_store_dir(self, name: str) -> str | None:
        """``<root>/<collection>/frame_store``: inside the collection's folder (through an alias's
        symlink, so after a rebuild's swap the store of the new collection is read), and dropped
        with it."""
        return str(self._dir(name) / "frame_store")

    def _read_meta(self, name: str) -> dict[str, Any]:
        file = self._dir(name) / METADATA_FILE
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ConfigError(f"collection {name!r} does not exist under {str(self.path)!r}") from e
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"collection {name!r}: cannot read {str(file)!r} ({e}); the file is damaged"
            ) from e
        if not isinstance(data, dict) or data.get("format") != _FORMAT_VERSION:
            raise ConfigError(
                f"collection {name!r}: {str(file)!r} has format {data.get('format') if isinstance(data, dict) else None!r}, "
                f"this vtr-qdrant reads format {_FORMAT_VERSION}"
            )
        return data

    @staticmethod
    def _write_json_atomic(file: Path, data: dict[str, Any]) -> None:
        atomic_write_text(file, json.dumps(data, indent=2, sort_keys=True))
        EdgeShardFolder._fsync_dir(file.parent)  # make the rename itself durable

    @staticmethod
    def _fsync_dir(folder: Path) -> None:
        try:
            dfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            log.debug("could not fsync folder %s", folder)

    def _config(self, dim: int, *, m: int | None = None, ef_construct: int | None = None, frames_m: int = 0,
                scenes: bool = False) -> Any:
        e = self._e
        m = self.hnsw_m if m is None else m
        ef_construct = self.hnsw_ef_construct if ef_construct is None else ef_construct
        extra = {VECTOR_SCENES: e.EdgeVectorParams(
            size=dim, distance=e.Distance.Cosine, multivector_config=e.MultiVectorConfig(e.MultiVectorComparator.MaxSim),
            hnsw_config=e.HnswIndexConfig(m=m, ef_construct=ef_construct, full_scan_threshold=_FULL_SCAN_THRESHOLD_KB),
        )} if scenes else {}
        return e.EdgeConfig(
            vectors={
                **extra,
                VECTOR_FRAMES: e.EdgeVectorParams(
                    size=dim,
                    distance=e.Distance.Cosine,
                    multivector_config=e.MultiVectorConfig(e.MultiVectorComparator.MaxSim),
                    # frames_m=0: only rescored and fetched, never searched: no graph
                    hnsw_config=e.HnswIndexConfig(
                        m=frames_m, ef_construct=ef_construct, full_scan_threshold=_FULL_SCAN_THRESHOLD_KB
                    ),
                ),
                VECTOR_POOLED: e.EdgeVectorParams(
                    size=dim,
                    distance=e.Distance.Cosine,
                    hnsw_config=e.HnswIndexConfig(
                        m=m, ef_construct=ef_construct, full_scan_threshold=_FULL_SCAN_THRESHOLD_KB
                    ),
                ),
            },
            max_search_threads=self.max_search_threads,
        )

    def _resolve(self, name: str) -> str:
        """The collection an alias points at (``name`` itself when it is not an alias)."""
        d = self._dir(name)
        if not d.is_symlink():
            return name
        return Path(os.readlink(d)).name

    def _shard(self, name: str) -> Any:
        with self._lock:
            alias, name = name, self._resolve(name)
            if alias != name:
                left = self._followed.get(alias)
                if left is not None and left != name:
                    # the alias moved (a rebuild swapped it): drop this handle on the old version,
                    # which releases its lock once in-flight calls return, so it can be deleted
                    self._shards.pop(left, None)
                self._followed[alias] = name
            shard = self._shards.get(name)
            if shard is not None:
                return shard
            meta = self._read_meta(name)  # raises a clear error for a missing collection
            folder = self._dir(name) / SHARD_DIR
            # the full stored config: Edge checks the shard against it (and applies max_search_threads)
            hnsw = meta.get("hnsw") or {}
            config = self._config(
                int(meta["vectors"][VECTOR_POOLED]["size"]),
                m=hnsw.get("m"),
                ef_construct=hnsw.get("ef_construct"),
                frames_m=int(hnsw.get("frames_m", 0)),
                scenes=VECTOR_SCENES in meta["vectors"],
            )
            try:
                shard = self._e.EdgeShard.load(str(folder), config)
            except Exception as err:  # the binding raises a bare Exception for engine errors
                if "WouldBlock" in str(err):
                    raise StorageError(
                        f"collection {name!r} at {str(folder)!r} is already open in another EdgeBackend or "
                        "process (Qdrant Edge allows one handle per shard); close that one first"
                    ) from err
                raise StorageError(
                    f"cannot open the Qdrant Edge shard of collection {name!r} at {str(folder)!r}: {err}"
                ) from err
            self._shards[name] = shard
            log.debug("opened Qdrant Edge shard %s", folder)
            return shard

    # ------------------------------------------------------------------ lifecycle

    def flush(self, name: str | None = None) -> None:
        """Write the open shards' segments to disk (one collection, or all when ``name`` is None)."""
        with self._lock:
            targets = [name] if name is not None else list(self._shards)
            for n in targets:
                self._shard(n).flush()

    def close(self, name: str | None = None) -> None:
        """Flush and close every open shard (or only collection ``name``'s, releasing it to other
        processes); the back end re-opens them on next use."""
        with self._lock:
            if name is None:
                _close_all(self._shards)
                return
            real = self._resolve(name)
            if real in self._shards:
                _close_all({real: self._shards.pop(real)})

    def optimize(self, name: str) -> bool:
        """Run Edge's optimizers on a collection: build the HNSW index of the pooled vector, merge
        segments, vacuum deleted points. Blocks until done (tens of seconds for 10k x 512-d points
        on 2 cores); until it runs, searches are exact scans.

        Returns:
            True if anything was optimised, False if the shard was already optimal.
        """
        shard = self._shard(name)
        changed = bool(shard.optimize())
        shard.flush()
        info = shard.info()
        log.info(
            "optimised collection %r: %d points in %d segments, %d indexed vectors",
            name,
            info.points_count,
            info.segments_count,
            info.indexed_vectors_count,
        )
        return changed

    def delete_collection(self, name: str) -> bool:
        """Delete a collection's folder. Returns False if it did not exist."""
        with self._lock:
            folder = self._dir(name)
            if folder.is_symlink():
                raise ConfigError(
                    f"{name!r} is an alias of collection {self._resolve(name)!r}: delete the alias with "
                    "delete_alias(), or delete the collection by its own name"
                )
            shard = self._shards.pop(name, None)
            if shard is not None:
                shard.close()
            if not folder.exists():
                return False
            # metadata first: a half-deleted folder then reads as "no collection"
            (folder / METADATA_FILE).unlink(missing_ok=True)
            shutil.rmtree(folder)
            for alias, target in self.aliases().items():  # like Qdrant: its aliases go with it
                if target == name:
                    self.delete_alias(alias)
            return True

    # ------------------------------------------------------------------ aliases

    def list_collections(self) -> list[str]:
        """Names of the collections under the root folder (aliases not included), sorted."""
        return sorted(
            p.name for p in self.path.iterdir() if not p.is_symlink() and (p / METADATA_FILE).is_file()
        )

    def aliases(self) -> dict[str, str]:
        """Every alias under the root folder: ``{alias: collection}``."""
        return {p.name: Path(os.readlink(p)).name for p in self.path.iterdir() if p.is_symlink() and COLLECTION_NAME_RE.match(p.name)}

    def set_alias(self, alias: str, collection: str) -> None:
        """Point ``alias`` at ``collection`` in one atomic step (created or swapped).

        Readers using the alias see either the old or the new collection, never neither. A reader
        in another process can only open the new collection once no other handle holds it: close
        it here first (:meth:`close` with its name) when another process will search it.

        Raises:
            ConfigError: ``collection`` does not exist or is itself an alias, or ``alias`` is the
                name of a collection.
        """
        with self._lock:
            link, target = self._dir(alias), self._dir(collection)
            if target.is_symlink() or not self.collection_exists(collection):
                raise ConfigError(
                    f"cannot point alias {alias!r} at {collection!r}: no collection of that name under {str(self.path)!r}"
                )
            if link.exists() and not link.is_symlink():
                raise ConfigError(
                    f"{alias!r} is a collection, not an alias: an alias cannot take its name (delete it or choose another name)"
                )
            tmp = self.path / f".{alias}.{os.getpid()}.{threading.get_ident()}.link"
            tmp.unlink(missing_ok=True)
            os.symlink(collection, tmp)  # relative: the root folder can be moved
            try:
                os.replace(tmp, link)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            self._fsync_dir(self.path)
            log.info("Qdrant Edge alias %s -> %s", alias, collection)

    def delete_alias(self, alias: str) -> bool:
        """Remove an alias (never its collection). Returns False if there was no such alias."""
        with self._lock:
            link = self._dir(alias)
            if not link.is_symlink():
                return False
            link.unlink()
            self._followed.pop(alias, None)
            self._fsync_dir(self.path)
            return True

    def _after_write(self, shard: Any) -> None:
        if self.sync_writes:
            shard.flush()

    def collection_exists(self, name: str) -> bool:
        return (self._dir(name) / METADATA_FILE).is_file()

    def create_collection(
        self, name: str, *, dim: int, metadata: dict[str, Any], index_frames: bool = False, index_scenes: bool = False
    ) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"dim must be an int >= 1, got {dim!r}")
        with self._lock:
            folder = self._dir(name)
            if folder.is_symlink():
                raise ConfigError(f"{name!r} is an alias (of {self._resolve(name)!r}): choose another collection name")
            if self.collection_exists(name):
                raise ConfigError(f"collection {name!r} already exists under {str(self.path)!r}")
            shard_dir = folder / SHARD_DIR
            if shard_dir.exists():
                # no metadata file: an earlier create_collection died before finishing
                log.warning(
                    "removing the unfinished Qdrant Edge shard %s (no %s beside it)", shard_dir, METADATA_FILE
                )
                shutil.rmtree(shard_dir)
            folder.mkdir(parents=True, exist_ok=True)
            try:
                frames_m = self.hnsw_m if index_frames else 0
                shard = self._e.EdgeShard.create(str(shard_dir), self._config(dim, frames_m=frames_m, scenes=index_scenes))
                shard.flush()
            except Exception as err:
                raise ConfigError(
                    f"cannot create the Qdrant Edge shard for {name!r} at {str(shard_dir)!r}: {err}"
                ) from err
            data = {
                "format": _FORMAT_VERSION,
                "name": name,
                "metadata": metadata,
                "vectors": {
                    VECTOR_FRAMES: {"size": dim, "multivector": True, "distance": "cosine"},
                    VECTOR_POOLED: {"size": dim, "multivector": False, "distance": "cosine"},
                    **({VECTOR_SCENES: {"size": dim, "multivector": True, "distance": "cosine"}} if index_scenes else {}),
                },
                "hnsw": {"m": self.hnsw_m, "ef_construct": self.hnsw_ef_construct, "frames_m": frames_m},
            }
            try:
                self._write_json_atomic(folder / METADATA_FILE, data)
            except BaseException:
                shard.close()
                raise
            self._shards[name] = shard
            log.info("created Qdrant Edge collection %r (dim %d) at %s", name, dim, folder)

    def collection_schema(self, name: str) -> dict[str, Any]:
        data = self._read_meta(name)
        vectors = {
            k: {"size": int(v["size"]), "multivector": bool(v["multivector"])}
            for k, v in data["vectors"].items()
        }
        return {"metadata": dict(data.get("metadata") or {}), "vectors": vectors}

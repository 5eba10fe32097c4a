"""A :class:`~vtr_qdrant.store.qdrant.StorageBackend` over Qdrant Edge: the real engine, in-process.

Qdrant Edge (``pip install 'vtr-qdrant[edge]'``, module ``qdrant_edge``) runs Qdrant's storage and
search code inside the Python process: payload filters, prefetch + MaxSim rescoring on
multivectors, payload indexes and HNSW, with millisecond latency and sub-second re-opening. It
has no collections, so this back end keeps one Edge *shard* per collection under a root folder::

    root/
      <collection_name>/
        collection.json   # vtr-qdrant's collection metadata (schema, fingerprint, sampling), atomic
        shard/            # the Edge shard (segments, WAL, edge_config.json)

``collection.json`` is written last when a collection is created, so a collection exists exactly
when its ``collection.json`` does.

Aliases (Edge has none of its own) are relative symbolic links beside the collections,
``root/<alias> -> <collection>``, replaced atomically (``rename(2)`` of a new link over the old
one) by :meth:`EdgeBackend.set_alias`. Every call resolves the alias, so a searcher that keeps an
``EdgeBackend`` open follows a swap made by another process on its next call, and releases its
handle on the version the alias left (so the writer can delete that version later).

Things to know about Edge (qdrant-edge-py 0.9):

- It never builds HNSW on its own. Until :meth:`EdgeBackend.optimize` runs, every search is an
  exact scan (a few ms per query at 10k points x 512-d on 2 cores). ``optimize`` builds the index
  (~31 s for 10k points x 512-d here; segments under ~10 MB of vectors stay scanned); afterwards
  ``hnsw_ef`` matters: on random 512-d vectors recall@10 was 0.57 at the engine default, 0.64 at
  ``hnsw_ef=128`` and 0.95 at 512 (``benchmarks/bench_backends.py``). Real CLIP embeddings are far
  easier than random ones.
- Writes go to a write-ahead log before returning, so they survive a crash of the process;
  segments are flushed on :meth:`EdgeBackend.close`, :meth:`~EdgeBackend.flush`, at interpreter
  exit, or after every write with ``sync_writes=True``.
- One open handle per shard: a second :class:`EdgeBackend` (or process) on the same folder is
  refused until the first one is closed.
- A boolean ``MatchValue``/``MatchAny`` never matches (the binding turns ``True`` into ``1``), so
  filters with boolean values are refused with :class:`~vtr_qdrant.errors.ConfigError`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import weakref
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from qdrant_client import models

from .._atomic import atomic_write_text
from .._optional import require
from ..errors import ConfigError, StorageError
from .points import VECTOR_FRAMES, VECTOR_POOLED, PointData
from .qdrant import Candidate, StageOneQuery, StorageBackend, _frames_of

__all__ = ["EdgeBackend", "translate_filter", "METADATA_FILE", "SHARD_DIR"]

log = logging.getLogger(__name__)

METADATA_FILE = "collection.json"
SHARD_DIR = "shard"
_FORMAT_VERSION = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}$")
# Qdrant's default: segments whose vectors take less than this many KB are scanned, not indexed.
_FULL_SCAN_THRESHOLD_KB = 10_000
_SCROLL_PAGE = 256
_PAYLOAD_SCHEMAS = ("keyword", "integer", "float", "geo", "text", "bool", "datetime", "uuid")


def _edge() -> ModuleType:
    return require("qdrant_edge", "edge", purpose="the Qdrant Edge storage back end")


# ---------------------------------------------------------------------------------------- filters


def _as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    return list(x) if isinstance(x, list) else [x]


def _check_not_bool(values: Sequence[Any], key: str) -> None:
    if any(isinstance(v, bool) for v in values):
        raise ConfigError(
            f"filter on {key!r} matches a boolean value: qdrant-edge-py turns Python bools into integers, "
            "so such a condition never matches on Qdrant Edge. Store the flag as a keyword ('true'/'false') "
            "or an integer (0/1) and match that instead"
        )


def _iso(x: datetime | date | str | None) -> str | None:
    if x is None or isinstance(x, str):
        return x
    return x.isoformat()


def _geo_point(e: ModuleType, p: models.GeoPoint) -> Any:
    return e.GeoPoint(lon=float(p.lon), lat=float(p.lat))


def _match(e: ModuleType, key: str, m: Any) -> Any:
    if isinstance(m, models.MatchValue):
        _check_not_bool([m.value], key)
        return e.MatchValue(m.value)
    if isinstance(m, models.MatchAny):
        _check_not_bool(m.any, key)
        return e.MatchAny(list(m.any))
    if isinstance(m, models.MatchExcept):
        _check_not_bool(m.except_, key)
        return e.MatchExcept(list(m.except_))
    if isinstance(m, models.MatchText):
        return e.MatchText(m.text)
    if isinstance(m, models.MatchTextAny):
        return e.MatchTextAny(m.text_any)
    if isinstance(m, models.MatchPhrase):
        return e.MatchPhrase(m.phrase)
    if isinstance(m, models.MatchPrefix):
        return e.MatchPrefix(m.prefix)
    if isinstance(m, models.MatchSubstring):
        return e.MatchSubstring(m.substring)
    raise ConfigError(
        f"filter on {key!r}: match type {type(m).__name__} is not supported by the Qdrant Edge back end"
    )


def _field_condition(e: ModuleType, c: models.FieldCondition) -> Any:
    kwargs: dict[str, Any] = {}
    if c.match is not None:
        kwargs["match"] = _match(e, c.key, c.match)
    if c.range is not None:
        r = c.range
        if isinstance(r, models.DatetimeRange):
            kwargs["range"] = e.RangeDateTime(gte=_iso(r.gte), gt=_iso(r.gt), lte=_iso(r.lte), lt=_iso(r.lt))
        elif isinstance(r, models.Range):
            kwargs["range"] = e.RangeFloat(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt)
        else:
            raise ConfigError(f"filter on {c.key!r}: range type {type(r).__name__} is not supported")
    if c.geo_bounding_box is not None:
        b = c.geo_bounding_box
        kwargs["geo_bounding_box"] = e.GeoBoundingBox(
            _geo_point(e, b.top_left), _geo_point(e, b.bottom_right)
        )
    if c.geo_radius is not None:
        kwargs["geo_radius"] = e.GeoRadius(_geo_point(e, c.geo_radius.center), float(c.geo_radius.radius))
    if c.geo_polygon is not None:
        poly = c.geo_polygon
        interiors = (
            [[_geo_point(e, p) for p in ring.points] for ring in poly.interiors] if poly.interiors else None
        )
        kwargs["geo_polygon"] = e.GeoPolygon([_geo_point(e, p) for p in poly.exterior.points], interiors)
    if c.values_count is not None:
        v = c.values_count
        kwargs["values_count"] = e.ValuesCount(lt=v.lt, gt=v.gt, lte=v.lte, gte=v.gte)
    if c.is_empty is not None:
        kwargs["is_empty"] = c.is_empty
    if c.is_null is not None:
        kwargs["is_null"] = c.is_null
    if not kwargs:
        raise ConfigError(
            f"FieldCondition on {c.key!r} has no condition (match, range, geo, values_count...)"
        )
    return e.FieldCondition(c.key, **kwargs)


def _point_ids(ids: Sequence[Any]) -> set[Any]:
    out: set[Any] = set()
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, (int, str)) and not hasattr(i, "hex"):
            raise ConfigError(f"HasIdCondition: point ids must be unsigned ints or UUIDs, got {i!r}")
        out.add(i if isinstance(i, int) else str(i))
    return out


def _condition(e: ModuleType, c: Any) -> Any:
    if isinstance(c, models.Filter):
        return _filter(e, c)
    if isinstance(c, models.FieldCondition):
        return _field_condition(e, c)
    if isinstance(c, models.HasIdCondition):
        try:
            return e.HasIdCondition(_point_ids(c.has_id))
        except ValueError as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"HasIdCondition: {err}; point ids are unsigned ints or UUID strings") from err
    if isinstance(c, models.IsEmptyCondition):
        return e.IsEmptyCondition(c.is_empty.key)
    if isinstance(c, models.IsNullCondition):
        return e.IsNullCondition(c.is_null.key)
    if isinstance(c, models.HasVectorCondition):
        return e.HasVectorCondition(c.has_vector)
    if isinstance(c, models.NestedCondition):
        return e.NestedCondition(c.nested.key, _filter(e, c.nested.filter))
    slice_cls = getattr(models, "SliceCondition", None)
    if slice_cls is not None and isinstance(c, slice_cls):
        return e.SliceCondition(c.slice.total, c.slice.index)
    raise ConfigError(
        f"filter condition {type(c).__name__} is not supported by the Qdrant Edge back end; supported: Filter, "
        "FieldCondition (match/range/geo/values_count/is_empty/is_null), HasIdCondition, IsEmptyCondition, "
        "IsNullCondition, HasVectorCondition, NestedCondition, SliceCondition"
    )


def _filter(e: ModuleType, f: models.Filter) -> Any:
    min_should = None
    if f.min_should is not None:
        min_should = e.MinShould(
            [_condition(e, c) for c in f.min_should.conditions], int(f.min_should.min_count)
        )
    must = [_condition(e, c) for c in _as_list(f.must)]
    should = [_condition(e, c) for c in _as_list(f.should)]
    must_not = [_condition(e, c) for c in _as_list(f.must_not)]
    return e.Filter(
        must=must or None, should=should or None, must_not=must_not or None, min_should=min_should
    )


def translate_filter(query_filter: models.Filter | None) -> Any:
    """Translate a ``qdrant_client.models.Filter`` into the equivalent ``qdrant_edge.Filter``.

    Supports must/should/must_not/min_should at any depth, ``FieldCondition`` with every match
    (value, any, except, text, text_any, phrase, prefix, substring), ``Range``/``DatetimeRange``,
    geo (bounding box, radius, polygon), ``values_count``, ``is_empty``/``is_null``, and the
    ``HasId``, ``IsEmpty``, ``IsNull``, ``HasVector``, ``Nested`` and ``Slice`` conditions.

    Args:
        query_filter: the filter, or None.

    Returns:
        A ``qdrant_edge.Filter``, or None when ``query_filter`` is None.

    Raises:
        ConfigError: the filter is not a ``models.Filter``, or uses something Edge cannot evaluate
            (an unknown condition type, a boolean match value).
    """
    if query_filter is None:
        return None
    if not isinstance(query_filter, models.Filter):
        raise ConfigError(
            f"query_filter must be a qdrant_client.models.Filter, got {type(query_filter).__name__}"
        )
    return _filter(_edge(), query_filter)


# ---------------------------------------------------------------------------------------- back end


def _close_all(shards: dict[str, Any]) -> None:
    """Flush and close every open shard (also runs at interpreter exit)."""
    for name, shard in list(shards.items()):
        try:
            shard.flush()
            shard.close()
        except Exception:  # noqa: BLE001 - best effort at shutdown; one bad shard must not block others
            log.exception("closing Qdrant Edge shard %r failed", name)
    shards.clear()


class EdgeBackend(StorageBackend):
    """:class:`~vtr_qdrant.store.qdrant.StorageBackend` over Qdrant Edge shards in a local folder.

    Example:
        >>> backend = EdgeBackend("/data/videos")                      # doctest: +SKIP
        >>> col = VideoCollection(backend, "clips", "synthetic-world/v1")  # doctest: +SKIP
        >>> backend.optimize("clips")  # build HNSW once the corpus is loaded  # doctest: +SKIP

    Args:
        path: root folder; one sub-folder per collection (created if missing).
        hnsw_ef: HNSW beam width for queries that do not set one (``StageOneQuery.hnsw_ef``).
            None keeps the engine default, which is fast but low-recall on high-dimensional data.
        hnsw_m: HNSW graph degree of the pooled vector, fixed when a collection is created.
        hnsw_ef_construct: HNSW build beam width of the pooled vector, fixed at creation.
        sync_writes: flush segments to disk after every upsert/delete (slower). Without it writes
            are in the write-ahead log when a call returns (they survive a process crash) and
            segments are flushed on :meth:`close`, :meth:`flush` and at interpreter exit.
        max_search_threads: threads per shard for searching (None: derived from the CPU count).

    Raises:
        ConfigError: ``path`` exists and is not a folder, or an argument is out of range.
        MissingDependencyError: ``qdrant-edge-py`` is not installed.
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
        self._e = _edge()
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

    def __enter__(self) -> EdgeBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ files

    def _dir(self, name: str) -> Path:
        if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
            raise ConfigError(
                f"collection name {name!r} cannot be used as a folder name: use letters, digits, '_', '-' "
                "and '.' (not starting with '.' or '-'), at most 255 characters"
            )
        return self.path / name

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
        EdgeBackend._fsync_dir(file.parent)  # make the rename itself durable

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

    def _config(self, dim: int, *, m: int | None = None, ef_construct: int | None = None, frames_m: int = 0) -> Any:
        e = self._e
        m = self.hnsw_m if m is None else m
        ef_construct = self.hnsw_ef_construct if ef_construct is None else ef_construct
        return e.EdgeConfig(
            vectors={
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
        return {p.name: Path(os.readlink(p)).name for p in self.path.iterdir() if p.is_symlink() and _NAME_RE.match(p.name)}

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

    # ------------------------------------------------------------------ StorageBackend

    def collection_exists(self, name: str) -> bool:
        return (self._dir(name) / METADATA_FILE).is_file()

    def create_collection(self, name: str, *, dim: int, metadata: dict[str, Any], index_frames: bool = False) -> None:
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
                shard = self._e.EdgeShard.create(str(shard_dir), self._config(dim, frames_m=frames_m))
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

    def create_payload_index(self, name: str, field: str, schema: str) -> None:
        if schema not in _PAYLOAD_SCHEMAS:
            raise ConfigError(
                f"payload index schema {schema!r} for field {field!r} is not one of {list(_PAYLOAD_SCHEMAS)}"
            )
        e = self._e
        shard = self._shard(name)
        if field in shard.info().payload_schema:
            return
        shard.update(
            e.UpdateOperation.create_field_index(field, getattr(e.PayloadSchemaType, schema.capitalize()))
        )
        self._after_write(shard)

    def upsert(self, name: str, points: Sequence[PointData]) -> None:
        if not points:
            return
        e = self._e
        shard = self._shard(name)
        structs = [
            e.Point(
                p.id,
                {
                    VECTOR_FRAMES: np.ascontiguousarray(p.frames, np.float32),
                    VECTOR_POOLED: np.ascontiguousarray(p.pooled, np.float32),
                },
                p.payload,
            )
            for p in points
        ]
        shard.update(e.UpdateOperation.upsert_points(structs))
        self._after_write(shard)

    def _request(self, q: StageOneQuery) -> Any:
        e = self._e
        hnsw_ef = q.hnsw_ef if q.hnsw_ef is not None else self.hnsw_ef
        params = e.SearchParams(hnsw_ef=hnsw_ef, exact=bool(q.exact)) if (hnsw_ef or q.exact) else None
        with_vector: bool | list[str] = [VECTOR_FRAMES] if q.with_frames else False
        vec = np.ascontiguousarray(q.vector, dtype=np.float32)
        flt = translate_filter(q.query_filter)
        if q.hybrid:
            n_frames = q.limit // 2
            prefetches = [
                e.Prefetch(limit=q.limit, query=e.Query.Nearest(vec, using=VECTOR_POOLED), filter=flt, params=params)
            ]
            if n_frames:
                # the frames graph needs a wider beam than the pooled one (StageOneQuery.frames_hnsw_ef)
                f_ef = max(q.frames_hnsw_ef or 0, hnsw_ef or 0) or None
                f_params = e.SearchParams(hnsw_ef=f_ef, exact=bool(q.exact)) if (f_ef or q.exact) else None
                prefetches.append(
                    e.Prefetch(limit=n_frames, query=e.Query.Nearest(vec[None, :], using=VECTOR_FRAMES), filter=flt, params=f_params)
                )
            return e.QueryRequest(
                limit=q.limit,
                prefetches=prefetches,
                query=e.Query.Nearest(vec[None, :], using=VECTOR_FRAMES) if q.rescore else e.Fusion.Rrf(k=2),
                with_payload=True,
                with_vector=with_vector,
                score_threshold=q.score_threshold,
            )
        if q.rescore:
            return e.QueryRequest(
                limit=q.limit,
                prefetches=[
                    e.Prefetch(
                        limit=q.limit * q.rescore_factor,
                        query=e.Query.Nearest(vec, using=VECTOR_POOLED),
                        filter=flt,
                        params=params,
                    )
                ],
                # a one-vector multivector query: MaxSim = the best frame's cosine
                query=e.Query.Nearest(vec[None, :], using=VECTOR_FRAMES),
                with_payload=True,
                with_vector=with_vector,
                score_threshold=q.score_threshold,
            )
        return e.QueryRequest(
            limit=q.limit,
            query=e.Query.Nearest(vec, using=VECTOR_POOLED),
            filter=flt,
            params=params,
            with_payload=True,
            with_vector=with_vector,
            score_threshold=q.score_threshold,
        )

    def query(self, name: str, queries: Sequence[StageOneQuery]) -> list[list[Candidate]]:
        if not queries:
            return []
        shard = self._shard(name)
        requests = [self._request(q) for q in queries]
        if len(requests) == 1:
            results = [shard.query(requests[0])]
        else:
            results = shard.query_batch(self._e.QueryBatchRequest(requests))
        return [
            [
                Candidate(str(p.id), float(p.score), dict(p.payload or {}), _frames_of(p.vector))
                for p in points
            ]
            for points in results
        ]

    def scroll(
        self, name: str, query_filter: models.Filter | None, *, with_frames: bool, limit: int = 10_000
    ) -> list[Candidate]:
        e = self._e
        shard = self._shard(name)
        flt = translate_filter(query_filter)
        out: list[Candidate] = []
        offset = None
        while len(out) < limit:
            records, offset = shard.scroll(
                e.ScrollRequest(
                    offset=offset,
                    limit=min(limit - len(out), _SCROLL_PAGE),
                    filter=flt,
                    with_payload=True,
                    with_vector=[VECTOR_FRAMES] if with_frames else False,
                )
            )
            out.extend(
                Candidate(str(r.id), 0.0, dict(r.payload or {}), _frames_of(r.vector)) for r in records
            )
            if offset is None:
                break
        return out

    def delete(self, name: str, query_filter: models.Filter) -> None:
        flt = translate_filter(query_filter)
        if flt is None:
            raise ConfigError("delete needs a filter (refusing to delete every point of the collection)")
        shard = self._shard(name)
        shard.update(self._e.UpdateOperation.delete_points_by_filter(flt))
        self._after_write(shard)

    def count(self, name: str, query_filter: models.Filter | None = None) -> int:
        shard = self._shard(name)
        return int(shard.count(self._e.CountRequest(exact=True, filter=translate_filter(query_filter))))

"""A :class:`~vtr_qdrant.store.backend.StorageBackend` over Qdrant Edge: the real engine, in-process.

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

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from qdrant_client import models

from ..errors import ConfigError
from .backend import Candidate, StorageBackend, candidate_of
from .edge_filters import translate_filter
from .edge_shards import METADATA_FILE, SHARD_DIR, EdgeShardFolder
from .plan import RRF_K, AnnSearch, StageOneQuery, plan_stage_one
from .points import MULTIVECTORS, VECTOR_FRAMES, VECTOR_POOLED, VECTOR_SCENES, PointData

__all__ = ["EdgeBackend", "translate_filter", "METADATA_FILE", "SHARD_DIR"]

log = logging.getLogger(__name__)

_SCROLL_PAGE = 256
_PAYLOAD_SCHEMAS = ("keyword", "integer", "float", "geo", "text", "bool", "datetime", "uuid")


class EdgeBackend(EdgeShardFolder, StorageBackend):
    """:class:`~vtr_qdrant.store.qdrant.StorageBackend` over Qdrant Edge shards in a local folder.

    Example:
        >>> backend = EdgeBackend("/data/videos")                      # doctest: +SKIP
        >>> col = VideoCollection(backend, "clips", "synthetic-world/v3")  # doctest: +SKIP
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
                    **({VECTOR_SCENES: np.ascontiguousarray(p.scenes, np.float32)} if p.scenes is not None else {}),
                },
                p.payload,
            )
            for p in points
        ]
        shard.update(e.UpdateOperation.upsert_points(structs))
        self._after_write(shard)

    def _search(self, s: AnnSearch, vec: np.ndarray) -> Any:
        e = self._e
        return e.Query.Nearest(vec[None, :] if s.using in MULTIVECTORS else vec, using=s.using)

    def _params(self, s: AnnSearch) -> Any:
        return self._e.SearchParams(hnsw_ef=s.hnsw_ef, exact=s.exact) if (s.hnsw_ef or s.exact) else None

    def _request(self, q: StageOneQuery) -> Any:
        """The plan (:func:`~vtr_qdrant.store.plan.plan_stage_one`) as one Edge request."""
        e = self._e
        plan = plan_stage_one(q, default_hnsw_ef=self.hnsw_ef)
        flt = translate_filter(plan.query_filter)
        prefetches = [
            e.Prefetch(limit=s.limit, query=self._search(s, plan.vector), filter=flt, params=self._params(s))
            for s in plan.prefetch
        ]
        main = plan.main
        extra: dict[str, Any] = {}
        if not prefetches:  # one search over the collection: the filter and beam go on it
            extra = {"filter": flt, "params": self._params(main)} if main != "rrf" else {}
        return e.QueryRequest(
            limit=plan.limit,
            prefetches=prefetches or None,
            query=e.Fusion.Rrf(k=RRF_K) if main == "rrf" else self._search(main, plan.vector),
            with_payload=True,
            with_vector=[VECTOR_FRAMES] if plan.with_frames else False,
            score_threshold=plan.score_threshold,
            **extra,
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
        return [[candidate_of(p) for p in points] for points in results]

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
                candidate_of(r) for r in records
            )
            if offset is None:
                break
        return out

    def set_payload(self, name: str, payload: dict[str, Any], ids: Sequence[str]) -> None:
        shard = self._shard(name)
        shard.update(self._e.UpdateOperation.set_payload(list(ids), payload))
        self._after_write(shard)

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

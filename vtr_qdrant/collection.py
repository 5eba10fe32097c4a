"""``VideoCollection``: a Qdrant collection of videos searchable by text.

Search is two-stage (see DESIGN.md): stage 1 is one ``query_points`` call in Qdrant (payload filter
inside the ANN search on the pooled vector, optionally rescored by MaxSim over the frames) that also
returns the candidates' frame matrices; stage 2 scores all candidates at once on the client with a
text-conditioned aggregation, and reports the moment each hit matched.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from .errors import CollectionMismatchError, ConfigError, InvalidInputError
from .ingest import IngestReport
from .model.bundle import ModelBundle, resolve_bundle
from .model.runtime import Device
from .search.aggregation import Aggregator, get_aggregator
from .search.hits import VideoHit, moment_from_weights
from .search.xpool import XPoolHead, XPoolVideoCache
from .store.points import (
    METADATA_KEY,
    SCHEMA_VERSION,
    VECTOR_FRAMES,
    VECTOR_POOLED,
    Key,
    PointData,
    make_points,
    validate_frames,
)
from .store.qdrant import FRAMES_HNSW_EF, Candidate, StageOneQuery, StorageBackend, as_backend
from .video.sampling import SamplingConfig

__all__ = ["VideoCollection", "EmbeddedVideo", "StoredVideo", "DEFAULT_CANDIDATES"]

log = logging.getLogger(__name__)

DEFAULT_CANDIDATES = 100
DEFAULT_XPOOL_CACHE = 4096
DEFAULT_FRAMES_CACHE = 2048
_UPSERT_BATCH_POINTS = 64


@dataclass
class EmbeddedVideo:
    """One video's frame embeddings, ready to store.

    Attributes:
        video_id: unique id of the video in the collection.
        frames: (F, D) float array of frame embeddings (normalised on write).
        timestamps: (F,) float seconds of each frame.
        metadata: user payload fields (top-level keys; reserved names are refused).
        uri, duration, content_hash: stored in the payload.
    """

    video_id: str
    frames: np.ndarray
    timestamps: np.ndarray
    metadata: Mapping[str, Any] | None = None
    uri: str | None = None
    duration: float | None = None
    content_hash: str | None = None


@dataclass
class StoredVideo:
    """A video as stored: all segments concatenated in time order.

    Attributes:
        video_id: its id.
        frames: (F, D) float32 L2-normalised frame embeddings.
        timestamps: (F,) float64 seconds.
        payload: the first segment's payload (shared fields: uri, duration, metadata...).
        point_ids: ids of its points, one per segment.
    """

    video_id: str
    frames: np.ndarray
    timestamps: np.ndarray
    payload: dict[str, Any]
    point_ids: list[str] = field(default_factory=list)


def _video_filter(video_id: str) -> models.Filter:
    return models.Filter(must=[models.FieldCondition(key=Key.VIDEO_ID, match=models.MatchValue(value=video_id))])


class VideoCollection:
    """A collection of videos in Qdrant, searchable by text.

    Args:
        client: an existing ``QdrantClient`` (``":memory:"``, ``path=...`` or ``url=...``) or a
            :class:`~vtr_qdrant.store.qdrant.StorageBackend`. Never creates a hidden client.
        collection_name: the Qdrant collection.
        bundle: the model bundle (name, ``local-dir:`` path, folder or :class:`ModelBundle`).
            Needed for text search and video ingestion; embedding-level calls work without one
            when ``dim`` is given or the collection exists.
        dim: embedding dimension, only when there is no bundle.
        sampling: frame sampling settings, recorded in the collection (default: 12 frames, exact).
        indexed_fields: user payload fields to index, ``{"category": "keyword", "year": "integer"}``.
        create: create the collection if it does not exist (otherwise a missing collection is an error).
        aggregation: default stage-2 aggregation: ``"softmax"`` (parameter-free text-conditioned
            pooling), ``"mean"``, ``"max"``, ``"topk"``, ``"xpool"``, or an :class:`Aggregator`.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` for the encoders.
        hnsw_ef: HNSW beam width for stage 1 (None: server default).
        frames_hnsw_ef: HNSW beam width of the frame-aware stage 1's frames-MaxSim prefetch (the
            larger of this and ``hnsw_ef`` is used; None: ``hnsw_ef`` or the server default). The
            frames graph is built with multivector MaxSim but searched with one query vector, so it
            needs a wide beam: on 30k synthetic videos its stage-1 recall ceiling at K=100 was 0.983
            at 512, 0.990 at 2048 and 0.993 at the default 4096 (``benchmarks/bench_recall.py --edge``).
        exact: brute-force stage 1 (small collections).
        xpool_cache_size: how many candidates' X-Pool tensors to keep in memory (LRU). The
            text-independent part of the head (k projection, folded v/out/linear projections) costs
            ~0.2-0.4 ms per candidate; with the cache, a candidate seen before costs O(F*D).
            About 53 KB per 12-frame 512-d candidate. 0 disables it.
        frames_cache_size: how many candidates' frame matrices to keep in memory (LRU, keyed by
            point id and the frames digest stored in the payload, so a re-ingested video is never
            served stale frames). With the cache, stage 1 returns ids and payloads only and the
            frames of the candidates not in the cache are read in a second call; reading frame
            lists back from Qdrant (~0.2 ms per 12x512 candidate) is the largest cost of stage 2,
            so repeated candidates become nearly free. About 25 KB per 12-frame 512-d candidate
            (2048: ~50 MB). 0 disables it: stage 1 then returns the frames in one round trip.
        index_frames: when creating the collection, build an HNSW index on the frame multivectors
            and make stage 1 frame-aware (half the candidates by pooled cosine, half by the best
            frame), so a query describing a short moment still reaches stage 2. Two-stage recall@10 vs
            exhaustive at K=100 (benchmarks/bench_recall.py): 0.96 pooled-only vs 1.00 frame-aware
            on 100k synthetic videos with exact stage 1; 0.949 vs 0.992 on the same 100k through
            Qdrant Edge HNSW. Costs index memory/build time for F x N vectors (Edge, 2 cores: ~170 s per 10k
            12-frame videos) and about twice the stage-1 latency. An existing collection keeps what it was created with.

    Raises:
        CollectionMismatchError: the existing collection was made with another model, dimension,
            schema version or sampling.
    """

    def __init__(
        self,
        client: QdrantClient | StorageBackend,
        collection_name: str,
        bundle: str | os.PathLike[str] | ModelBundle | None = None,
        *,
        dim: int | None = None,
        sampling: SamplingConfig | None = None,
        indexed_fields: Mapping[str, str] | None = None,
        create: bool = True,
        aggregation: str | Aggregator = "softmax",
        device: Device = "cpu",
        hnsw_ef: int | None = None,
        frames_hnsw_ef: int | None = FRAMES_HNSW_EF,
        exact: bool = False,
        xpool_cache_size: int = DEFAULT_XPOOL_CACHE,
        index_frames: bool = True,
        frames_cache_size: int = DEFAULT_FRAMES_CACHE,
    ) -> None:
        if not isinstance(collection_name, str) or not collection_name:
            raise ConfigError(f"collection_name must be a non-empty str, got {collection_name!r}")
        self.backend = as_backend(client)
        self.collection_name = collection_name
        self.bundle = resolve_bundle(bundle) if bundle is not None else None
        self.device: Device = device
        self.hnsw_ef = hnsw_ef
        self.frames_hnsw_ef = frames_hnsw_ef
        self.exact = exact
        self.dim: int = 0
        self._text_encoder: Any = None
        self._stored_fingerprint: str | None = None
        self.xpool_cache_size = int(xpool_cache_size)
        self._xpool_cache: OrderedDict[tuple[int, str, str], XPoolVideoCache] = OrderedDict()
        if isinstance(frames_cache_size, bool) or not isinstance(frames_cache_size, int) or frames_cache_size < 0:
            raise ConfigError(f"frames_cache_size must be an int >= 0, got {frames_cache_size!r}")
        self.frames_cache_size = frames_cache_size
        self._frames_cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._frame_encoder: Any = None
        if self.bundle is not None and dim is not None and dim != self.bundle.embed_dim:
            raise ConfigError(f"dim={dim} contradicts the bundle's embed_dim={self.bundle.embed_dim}; drop dim")

        if self.backend.collection_exists(collection_name):
            self._open_existing(dim, sampling)
        elif not create:
            raise ConfigError(f"collection {collection_name!r} does not exist (pass create=True to create it)")
        else:
            new_dim = self.bundle.embed_dim if self.bundle is not None else dim
            if new_dim is None:
                raise ConfigError("creating a collection needs a model bundle (bundle=...) or an embedding dimension (dim=...)")
            self.dim = int(new_dim)
            self.sampling = sampling or SamplingConfig()
            self.frames_indexed = bool(index_frames)
            self.backend.create_collection(
                collection_name, dim=self.dim, metadata={METADATA_KEY: self._metadata()}, index_frames=self.frames_indexed
            )
            self.backend.create_payload_index(collection_name, Key.VIDEO_ID, "keyword")
            self.backend.create_payload_index(collection_name, Key.CONTENT_HASH, "keyword")
            self.backend.create_payload_index(collection_name, Key.SEGMENT_INDEX, "integer")
        for name, schema in (indexed_fields or {}).items():
            self.backend.create_payload_index(collection_name, name, schema)
        self.aggregation = self._resolve_aggregation(aggregation)

    # ------------------------------------------------------------------ schema

    @property
    def fingerprint(self) -> str | None:
        """Fingerprint of the model the collection's vectors come from (None: embeddings-only)."""
        return self.bundle.towers_fingerprint if self.bundle is not None else self._stored_fingerprint

    def _metadata(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "model_fingerprint": self.bundle.towers_fingerprint if self.bundle else None,
            "model_name": self.bundle.name if self.bundle else None,
            "dim": self.dim,
            "sampling": self.sampling.model_dump(),
            "frames_indexed": self.frames_indexed,
        }

    def _open_existing(self, dim: int | None, sampling: SamplingConfig | None) -> None:
        schema = self.backend.collection_schema(self.collection_name)
        meta = schema["metadata"].get(METADATA_KEY)
        name = self.collection_name
        if not isinstance(meta, dict):
            raise CollectionMismatchError(
                f"collection {name!r} exists but was not created by vtr-qdrant (no {METADATA_KEY!r} metadata); "
                "use another collection_name"
            )
        problems = []
        if meta.get("schema_version") != SCHEMA_VERSION:
            problems.append(f"schema version {meta.get('schema_version')} (this vtr-qdrant writes {SCHEMA_VERSION})")
        stored_dim = meta.get("dim")
        vectors = schema["vectors"]
        if set(vectors) != {VECTOR_FRAMES, VECTOR_POOLED} or any(v["size"] != stored_dim for v in vectors.values()):
            problems.append(f"vectors {vectors} (expected {VECTOR_FRAMES!r} and {VECTOR_POOLED!r} of size {stored_dim})")
        want_dim = self.bundle.embed_dim if self.bundle is not None else dim
        if want_dim is not None and want_dim != stored_dim:
            problems.append(f"dimension {stored_dim} (you asked for {want_dim})")
        stored_fp = meta.get("model_fingerprint")
        if self.bundle is not None and stored_fp != self.bundle.towers_fingerprint:
            problems.append(
                f"model {meta.get('model_name')!r} fingerprint {stored_fp} "
                f"(your bundle {self.bundle.name!r} has {self.bundle.towers_fingerprint})"
            )
        stored_sampling = SamplingConfig.model_validate(meta.get("sampling") or {})
        if sampling is not None and sampling != stored_sampling:
            problems.append(f"sampling {stored_sampling.model_dump()} (you asked for {sampling.model_dump()})")
        if problems:
            raise CollectionMismatchError(
                f"collection {name!r} does not match: it has " + "; ".join(problems)
                + ". Open it with the model and settings it was built with, or use a new collection_name."
            )
        self.dim = int(stored_dim)  # type: ignore[arg-type]
        self.sampling = stored_sampling
        self._stored_fingerprint = stored_fp
        self.frames_indexed = bool(meta.get("frames_indexed", False))

    def _resolve_aggregation(self, aggregation: str | Aggregator) -> Aggregator:
        if isinstance(aggregation, Aggregator):
            return aggregation
        if aggregation == "xpool":
            head = self._bundle_head()
            if head is None:
                raise ConfigError(
                    "aggregation='xpool' needs a trained X-Pool head: this collection's bundle ships none. "
                    "Pass an XPoolHead instance (e.g. XPoolHead.identity(dim) for the parameter-free "
                    "initialisation) or use aggregation='softmax'"
                )
            return head
        return get_aggregator(aggregation)

    def _bundle_head(self) -> Aggregator | None:
        if self.bundle is None or self.bundle.manifest.xpool is None:
            return None
        from .search.xpool import XPoolHead

        spec = self.bundle.manifest.xpool
        return XPoolHead.load(self.bundle.file(spec.file))

    # ------------------------------------------------------------------ encoders

    def _require_bundle(self, what: str) -> ModelBundle:
        if self.bundle is None:
            raise ConfigError(f"{what} needs a model bundle: open the collection with bundle=... (e.g. 'synthetic-world/v1')")
        return self.bundle

    def encode_text(self, texts: str | Sequence[str]) -> np.ndarray:
        """Embed query texts with the collection's bundle: (N, D) float32, L2-normalised."""
        if self._text_encoder is None:
            self._text_encoder = self._require_bundle("text search").text_encoder(device=self.device)
        return self._text_encoder.encode(texts)  # type: ignore[no-any-return]

    @property
    def frame_encoder(self) -> Any:
        """The bundle's :class:`~vtr_qdrant.model.encoders.FrameEncoder` (created on first use)."""
        if self._frame_encoder is None:
            self._frame_encoder = self._require_bundle("encoding frames").frame_encoder(device=self.device)
        return self._frame_encoder

    # ------------------------------------------------------------------ writes

    def _points_for(self, video: EmbeddedVideo) -> list[PointData]:
        frames, ts = validate_frames(video.video_id, video.frames, video.timestamps, self.dim)
        return make_points(
            video.video_id,
            frames,
            ts,
            model_fingerprint=self.fingerprint or "",
            metadata=video.metadata,
            uri=video.uri,
            duration=video.duration,
            content_hash=video.content_hash,
            segment_seconds=self.sampling.segment_seconds,
        )

    def upsert_embeddings(
        self,
        video_id: str,
        frames: np.ndarray,
        timestamps: np.ndarray,
        *,
        metadata: Mapping[str, Any] | None = None,
        uri: str | None = None,
        duration: float | None = None,
        content_hash: str | None = None,
    ) -> list[str]:
        """Store one video's frame embeddings (idempotent: re-upserting replaces the video).

        Args:
            video_id: unique id of the video.
            frames: (F, D) float array, F >= 1; normalised on write.
            timestamps: (F,) float seconds, non-decreasing.
            metadata: user payload fields (filterable; declare them in ``indexed_fields``).
            uri, duration, content_hash: stored in the payload.

        Returns:
            The point ids written (one per segment).

        Raises:
            InvalidInputError: bad shapes, dtypes, NaNs or reserved metadata keys; nothing is written.
        """
        return self.upsert_embeddings_batch(
            [EmbeddedVideo(video_id, frames, timestamps, metadata, uri, duration, content_hash)]
        )[video_id]

    def upsert_embeddings_batch(self, videos: Iterable[EmbeddedVideo]) -> dict[str, list[str]]:
        """Store many videos; every video is validated before anything is written.

        Returns:
            ``{video_id: [point ids]}``.
        """
        per_video: dict[str, list[PointData]] = {}
        for v in videos:
            if v.video_id in per_video:
                raise InvalidInputError(f"video_id {v.video_id!r} appears twice in one batch")
            per_video[v.video_id] = self._points_for(v)
        flat = [p for pts in per_video.values() for p in pts]
        for i in range(0, len(flat), _UPSERT_BATCH_POINTS):
            self.backend.upsert(self.collection_name, flat[i : i + _UPSERT_BATCH_POINTS])
        # A re-ingested video may have fewer segments than before: drop the stale ones, after the
        # new points are durable, so a crash in between never loses the video. One scroll per batch
        # (not a count per video: a filtered count is a full scan in local mode).
        self._delete_stale_segments(per_video)
        return {vid: [p.id for p in pts] for vid, pts in per_video.items()}

    def _delete_stale_segments(self, per_video: Mapping[str, list[PointData]]) -> None:
        keep = {p.id for pts in per_video.values() for p in pts}
        vids = list(per_video)
        stale: list[str] = []
        for i in range(0, len(vids), 256):
            f = models.Filter(must=[models.FieldCondition(key=Key.VIDEO_ID, match=models.MatchAny(any=vids[i : i + 256]))])
            stale += [c.id for c in self.backend.scroll(self.collection_name, f, with_frames=False) if c.id not in keep]
        if stale:
            self.backend.delete(self.collection_name, models.Filter(must=[models.HasIdCondition(has_id=stale)]))  # type: ignore[list-item]

    def optimize(self) -> bool:
        """Let the storage engine build its ANN index now (needed for Qdrant Edge after bulk writes;
        a Qdrant server optimises on its own). Returns True if anything was done."""
        return self.backend.optimize(self.collection_name)

    def delete(self, video_id: str) -> int:
        """Delete a video (all its segments). Returns how many points were removed."""
        f = _video_filter(video_id)
        n = self.backend.count(self.collection_name, f)
        if n:
            self.backend.delete(self.collection_name, f)
        return n

    def add_videos(
        self,
        uris: Sequence[str | os.PathLike[str]],
        *,
        video_ids: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
        force: bool = False,
        batch_frames: int = 64,
        decode_workers: int = 2,
        timeout: float = 120.0,
        progress: bool = True,
        **sample_options: Any,
    ) -> IngestReport:
        """Decode video files, encode their frames and store them (needs the ``video`` extra).

        Frames are sampled with the collection's :class:`SamplingConfig` at the bundle's image size.
        A file whose content hash and model fingerprint are already stored is skipped unless
        ``force``. A video that fails (missing, unreadable, undecodable, unsafe, timed out...) is
        reported and the others go on; nothing already ingested is touched.

        Args:
            uris: video file paths (see :func:`vtr_qdrant.ingest.expand_sources` for folders/globs).
            video_ids: ids to store them under (default: the absolute path).
            metadata: one dict for all videos, or one per video (user payload fields).
            force: re-ingest unchanged files.
            batch_frames: frames per encoder batch (across videos).
            decode_workers: concurrent ffmpeg decodes.
            timeout: per-video decode timeout in seconds (the ffmpeg process is killed after it).
            progress: show a progress bar.
            **sample_options: passed to :func:`vtr_qdrant.video.sample_frames` (e.g. ``allow_playlists``).

        Returns:
            :class:`IngestReport` with ingested, skipped and failed videos and stage timings.
        """
        from .ingest import ingest_videos

        return ingest_videos(
            self, uris, video_ids=video_ids, metadata=metadata, force=force, batch_frames=batch_frames,
            decode_workers=decode_workers, timeout=timeout, progress=progress, **sample_options,
        )

    # ------------------------------------------------------------------ reads

    def get(self, video_id: str, *, with_frames: bool = True) -> StoredVideo | None:
        """A stored video (segments concatenated in time order), or None if absent."""
        recs = self.backend.scroll(self.collection_name, _video_filter(video_id), with_frames=with_frames)
        if not recs:
            return None
        recs.sort(key=lambda r: r.payload.get(Key.SEGMENT_INDEX, 0))
        frames = (
            np.concatenate([r.frames for r in recs if r.frames is not None])
            if with_frames
            else np.zeros((0, self.dim), np.float32)
        )
        ts = np.concatenate([np.asarray(r.payload.get(Key.TIMESTAMPS, []), dtype=np.float64) for r in recs])
        return StoredVideo(video_id, frames, ts, recs[0].payload, [r.id for r in recs])

    def count(self, query_filter: models.Filter | None = None) -> int:
        """Number of videos (not points) matching an optional filter."""
        first = models.FieldCondition(key=Key.SEGMENT_INDEX, match=models.MatchValue(value=0))
        f = models.Filter(must=[first, *([query_filter] if query_filter is not None else [])])
        return self.backend.count(self.collection_name, f)

    def count_points(self) -> int:
        """Number of points (segments) in the collection."""
        return self.backend.count(self.collection_name)

    def info(self) -> dict[str, Any]:
        """Collection facts: model, dimension, sampling, counts."""
        return {
            "collection_name": self.collection_name,
            "model_name": self.bundle.name if self.bundle else None,
            "model_fingerprint": self.fingerprint,
            "dim": self.dim,
            "sampling": self.sampling.model_dump(),
            "videos": self.count(),
            "points": self.count_points(),
            "aggregation": repr(self.aggregation),
            "frames_indexed": self.frames_indexed,
        }

    # ------------------------------------------------------------------ search

    def _query_vectors(self, queries: Sequence[str | np.ndarray]) -> np.ndarray:
        if isinstance(queries, (str, np.ndarray)):
            raise InvalidInputError("search_batch takes a list of queries")
        if not queries:
            raise InvalidInputError("no queries given")
        texts = [(i, q) for i, q in enumerate(queries) if isinstance(q, str)]
        out = np.empty((len(queries), self.dim), dtype=np.float32)
        if texts:
            out[[i for i, _ in texts]] = self.encode_text([q for _, q in texts])
        for i, q in enumerate(queries):
            if isinstance(q, str):
                continue
            if not isinstance(q, (np.ndarray, list, tuple)):
                raise InvalidInputError(f"query #{i} must be a str or a ({self.dim},) vector, got {type(q).__name__}")
            v = np.asarray(q, dtype=np.float64)
            if v.shape != (self.dim,):
                raise InvalidInputError(f"query vector #{i} must have shape ({self.dim},), got {v.shape}")
            n = np.linalg.norm(v)
            if not np.isfinite(v).all() or n == 0:
                raise InvalidInputError(f"query vector #{i} must be finite and non-zero")
            out[i] = v / n
        return out

    def search(
        self,
        query: str | np.ndarray,
        limit: int = 10,
        query_filter: models.Filter | None = None,
        *,
        candidates: int | None = None,
        aggregation: str | Aggregator | None = None,
        rescore: bool = False,
        hybrid: bool | None = None,
        score_threshold: float | None = None,
        with_payload: bool = True,
    ) -> list[VideoHit]:
        """Find the videos that best match a text (or a query vector).

        Args:
            query: a non-empty text, or a (D,) float query embedding.
            limit: how many videos to return (>= 1).
            query_filter: a ``qdrant_client.models.Filter`` on payload fields, applied inside stage 1.
            candidates: K, how many points stage 1 hands to stage 2 (default max(100, limit)).
            aggregation: stage-2 aggregation for this call (default: the collection's).
            rescore: rescore stage 1 by MaxSim over the frames (prefetch 4K on the pooled vector).
            hybrid: frame-aware stage 1 (half the candidates by pooled cosine, half by best frame);
                default: on when the collection was created with ``index_frames``.
            score_threshold: drop hits whose stage-2 score is below this.
            with_payload: include payloads in the hits.

        Returns:
            Up to ``limit`` :class:`VideoHit`, best first, one per video.
        """
        return self.search_batch(
            [query],
            limit=limit,
            query_filter=query_filter,
            candidates=candidates,
            aggregation=aggregation,
            rescore=rescore,
            hybrid=hybrid,
            score_threshold=score_threshold,
            with_payload=with_payload,
        )[0]

    def search_batch(
        self,
        queries: Sequence[str | np.ndarray],
        limit: int = 10,
        query_filter: models.Filter | None = None,
        *,
        candidates: int | None = None,
        aggregation: str | Aggregator | None = None,
        rescore: bool = False,
        hybrid: bool | None = None,
        score_threshold: float | None = None,
        with_payload: bool = True,
    ) -> list[list[VideoHit]]:
        """Run many searches with one stage-1 round trip; arguments as :meth:`search`.

        Returns:
            One ranked hit list per query, in order.
        """
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise InvalidInputError(f"limit must be an int >= 1, got {limit!r}")
        k = DEFAULT_CANDIDATES if candidates is None else candidates
        if not isinstance(k, int) or k < 1:
            raise InvalidInputError(f"candidates must be an int >= 1, got {candidates!r}")
        k = max(k, limit)
        agg = self.aggregation if aggregation is None else self._resolve_aggregation(aggregation)
        vectors = self._query_vectors(queries)
        stage1 = [
            StageOneQuery(
                vector=v,
                limit=k,
                query_filter=query_filter,
                rescore=rescore,
                hybrid=self.frames_indexed if hybrid is None else hybrid,
                hnsw_ef=self.hnsw_ef,
                frames_hnsw_ef=self.frames_hnsw_ef,
                exact=self.exact,
                with_frames=self.frames_cache_size == 0,
            )
            for v in vectors
        ]
        results = self.backend.query(self.collection_name, stage1)
        if self.frames_cache_size:
            self._attach_frames([c for cands in results for c in cands])
        return [
            self._stage_two(v, cands, agg, limit, score_threshold, with_payload) for v, cands in zip(vectors, results)
        ]

    @staticmethod
    def _version(c: Candidate) -> str:
        """What changes when a point's frames change: the stored digest (ingestion time for older points)."""
        return str(c.payload.get(Key.FRAMES_DIGEST) or c.payload.get(Key.INGESTED_AT, ""))

    def _attach_frames(self, cands: list[Candidate]) -> None:
        """Give every candidate its frames: from the LRU when its version is cached, else read in one call.

        Candidates whose point vanished between the two calls keep ``frames=None`` (stage 2 drops them).
        """
        store = self._frames_cache
        keys = [(c.id, self._version(c)) for c in cands]
        missing = sorted({k[0] for k in keys if k not in store})
        fetched = self.backend.fetch_frames(self.collection_name, missing) if missing else {}
        for c, k in zip(cands, keys):
            f = store.get(k)
            if f is None:
                f = fetched.get(c.id)
                if f is None:
                    continue
                f.setflags(write=False)  # shared by the cache and every hit that uses it
                store[k] = f
            else:
                store.move_to_end(k)
            c.frames = f
        while len(store) > self.frames_cache_size:
            store.popitem(last=False)

    def _xpool_caches(self, head: XPoolHead, cands: list[Candidate]) -> XPoolVideoCache:
        """Per-candidate X-Pool tensors from the LRU cache, computing the missing ones in one batch."""
        store = self._xpool_cache
        keys = [(id(head), c.id, self._version(c)) for c in cands]
        missing = [i for i, k in enumerate(keys) if k not in store]
        if missing:
            fresh = head.precompute(*self._padded([cands[i] for i in missing]))
            for j, i in enumerate(missing):
                store[keys[i]] = fresh[j]
        out = []
        for k in keys:
            store.move_to_end(k)
            out.append(store[k])
        while len(store) > self.xpool_cache_size:
            store.popitem(last=False)
        return XPoolVideoCache.stack(out)

    def _padded(self, cands: list[Candidate]) -> tuple[np.ndarray, np.ndarray]:
        """Candidates' frame matrices as (V, F_max, D) float32 zero-padded, and the (V, F_max) bool mask."""
        lengths = np.array([len(c.frames) for c in cands])  # type: ignore[arg-type]
        frames = np.zeros((len(cands), int(lengths.max()), self.dim), dtype=np.float32)
        for i, c in enumerate(cands):
            frames[i, : lengths[i]] = c.frames
        return frames, np.arange(frames.shape[1])[None, :] < lengths[:, None]

    def _stage_two(
        self,
        vector: np.ndarray,
        cands: list[Candidate],
        agg: Aggregator,
        limit: int,
        score_threshold: float | None,
        with_payload: bool,
    ) -> list[VideoHit]:
        cands = [c for c in cands if c.frames is not None and len(c.frames)]
        if not cands:
            return []
        lengths = np.array([len(c.frames) for c in cands])  # type: ignore[arg-type]
        if isinstance(agg, XPoolHead) and self.xpool_cache_size > 0:
            # cached candidates need no padded copy of their frames
            res = agg.aggregate_cached(vector[None, :], self._xpool_caches(agg, cands))
        else:
            res = agg.aggregate(vector[None, :], *self._padded(cands))
        scores, weights = res.scores[0], res.weights[0]
        best: dict[str, int] = {}
        for i, c in enumerate(cands):
            vid = str(c.payload.get(Key.VIDEO_ID, c.id))
            j = best.get(vid)
            if j is None or scores[i] > scores[j]:
                best[vid] = i
        order = sorted(best.items(), key=lambda kv: -float(scores[kv[1]]))
        hits: list[VideoHit] = []
        for vid, i in order:
            s = float(scores[i])
            if score_threshold is not None and s < score_threshold:
                break
            c = cands[i]
            ts = np.asarray(c.payload.get(Key.TIMESTAMPS) or np.arange(lengths[i], dtype=np.float64))[: lengths[i]]
            moment = moment_from_weights(
                weights[i, : lengths[i]], ts, seg_start=c.payload.get(Key.SEGMENT_START), seg_end=c.payload.get(Key.SEGMENT_END)
            )
            hits.append(
                VideoHit(
                    video_id=vid,
                    score=s,
                    payload=c.payload if with_payload else {},
                    moment=moment,
                    segment_index=int(c.payload.get(Key.SEGMENT_INDEX, 0)),
                    point_id=c.id,
                    stage1_score=c.score,
                )
            )
            if len(hits) == limit:
                break
        return hits

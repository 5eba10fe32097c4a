"""``VideoCollection``: a Qdrant collection of videos searchable by text — the façade.

It wires the stages together and owns none of their logic (docs/ARCHITECTURE.md): the schema guard
and :class:`~vtr_qdrant.store.videos.VideoStore` (writes, reads) from :mod:`vtr_qdrant.store`, the
encoders from :mod:`vtr_qdrant.model`, file ingestion from :mod:`vtr_qdrant.ingest`. Search is
two-stage (DESIGN.md): stage 1 is one query in Qdrant planned by :mod:`vtr_qdrant.store.plan`
(payload filter inside the ANN search; frame-aware by default); stage 2
(:class:`~vtr_qdrant.search.stage_two.StageTwo`) attaches the candidates' frames, scores them all at
once with the aggregation :mod:`vtr_qdrant.search.resolve` resolved, and reports each hit's moment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from qdrant_client import QdrantClient, models

from .errors import ConfigError, InvalidInputError
from .model.bundle import ModelBundle, resolve_bundle
from .model.runtime import Device
from .search.aggregation import Aggregator
from .search.hits import VideoHit
from .search.pipeline import SearchOptions, StageOneSettings, run_search, single_query
from .search.query import DEFAULT_CANDIDATES, query_vectors
from .search.resolve import default_aggregation, resolve_aggregation
from .search.stage_two import StageTwo
from .store.backend import StorageBackend
from .store.filters import check_collection_name
from .store.frame_store import FrameStore
from .store.plan import FRAMES_HNSW_EF, SCENES_HNSW_EF
from .store.qdrant import as_backend
from .store.schema import ensure_collection
from .store.videos import EmbeddedVideo, StoredVideo, VideoStore
from .video.sampling import SamplingConfig

if TYPE_CHECKING:
    from .ingest import IngestReport
    from .model.encoders import FrameEncoder, TextEncoder

__all__ = ["VideoCollection", "EmbeddedVideo", "StoredVideo", "DEFAULT_CANDIDATES"]

log = logging.getLogger(__name__)

DEFAULT_XPOOL_CACHE = 4096
DEFAULT_FRAMES_CACHE = 2048


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
        aggregation: default stage-2 aggregation. None (default): the bundle's trained X-Pool head
            when it ships one (``synthetic-world/v3`` does: a query-adaptive head), else ``"softmax"``
            (parameter-free text-conditioned pooling). Or a name (``"mean"``, ``"max"``, ``"topk"``,
            ``"softmax"``, ``"xpool"``, ``"xpool-identity"``) or an :class:`Aggregator`.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` for the encoders.
        hnsw_ef: HNSW beam width for stage 1 (None: server default).
        frames_hnsw_ef: HNSW beam width of the frame-aware stage 1's scenes- or frames-MaxSim prefetch
            (None: ``hnsw_ef`` or the server default; ``"auto"``: 128 for scene vectors, 4096 for a
            frames graph). The
            frames graph is searched with one query vector, so it needs a wide beam: measured
            recall in :class:`~vtr_qdrant.store.plan.StageOneQuery`.
        exact: brute-force stage 1 (small collections).
        xpool_cache_size: how many candidates' X-Pool tensors to keep in memory (LRU; ~53 KB per
            12-frame 512-d candidate; 0 disables it). A cached candidate costs O(F*D) per query.
        frames_cache_size: how many candidates' frame matrices to keep in memory (LRU keyed by point
            id and frames digest; ~25 KB per 12-frame 512-d candidate). With it, stage 1 returns ids
            and payloads only and missing frames are read in a second call; 0: stage 1 returns the
            frames in one round trip (:mod:`vtr_qdrant.search.stage_two`).
        index_frames: when creating the collection, build an HNSW index on the frame multivectors
            and make stage 1 frame-aware (half the candidates by pooled cosine, half by the best
            frame), so a query describing a short moment still reaches stage 2. Two-stage recall@10
            vs exhaustive at K=100 on 100k videos through Qdrant Edge: 0.949 pooled-only, 0.992
            frame-aware (README). Costs index build time and about twice the stage-1 latency. An
            existing collection keeps what it was created with.
        frame_store: an on-disk copy of the frames that stage 2 reads instead of Qdrant
            (:class:`~vtr_qdrant.store.frame_store.FrameStore`; a cache keyed by point id and frames
            digest, filled on writes and on reads). ``"auto"``: beside the data on Qdrant Edge, none
            elsewhere; a folder (a client-side cache, e.g. for a server); or None.

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
        aggregation: str | Aggregator | None = None,
        device: Device = "cpu",
        hnsw_ef: int | None = None,
        frames_hnsw_ef: int | None | Literal["auto"] = "auto",
        exact: bool = False,
        xpool_cache_size: int = DEFAULT_XPOOL_CACHE,
        index_frames: bool = True,
        frames_cache_size: int = DEFAULT_FRAMES_CACHE,
        frame_store: FrameStore | str | os.PathLike[str] | None = "auto",
    ) -> None:
        check_collection_name(collection_name)  # the same rule on every back end
        self.backend = as_backend(client)
        self.collection_name = collection_name
        self.bundle = resolve_bundle(bundle) if bundle is not None else None
        self.device: Device = device
        self.hnsw_ef = hnsw_ef
        self.frames_hnsw_ef: int | None = None if frames_hnsw_ef == "auto" else frames_hnsw_ef
        self.exact = exact
        self._text_encoder: TextEncoder | None = None
        self._frame_encoder: FrameEncoder | None = None
        if self.bundle is not None and dim is not None and dim != self.bundle.embed_dim:
            raise ConfigError(f"dim={dim} contradicts the bundle's embed_dim={self.bundle.embed_dim}; drop dim")
        b = self.bundle
        schema = ensure_collection(
            self.backend, collection_name, fingerprint=b.towers_fingerprint if b else None, model_name=b.name if b else None,
            dim=b.embed_dim if b else dim, sampling=sampling, create=create, index_frames=index_frames,
        )
        self.schema = schema
        self.dim: int = schema.dim
        self.sampling: SamplingConfig = schema.sampling
        self.frames_indexed: bool = schema.frames_indexed
        for name, field_schema in (indexed_fields or {}).items():
            self.backend.create_payload_index(collection_name, name, field_schema)
        self.store = VideoStore(
            self.backend,
            collection_name,
            dim=self.dim,
            fingerprint=self.fingerprint,
            segment_seconds=self.sampling.segment_seconds,
            frame_store=(fs := self._frame_store(frame_store)),
            scenes=schema.scenes_indexed,
        )
        if frames_hnsw_ef == "auto":  # each graph's measured beam (store/scenes.py, store/plan.py)
            self.frames_hnsw_ef = SCENES_HNSW_EF if schema.scenes_indexed else FRAMES_HNSW_EF
        self.stage_two = StageTwo(self.dim, frames_cache_size=frames_cache_size, precompute_cache_size=xpool_cache_size,
                                  frame_store=fs)
        self.aggregation = self._resolve_aggregation(aggregation)

    # ------------------------------------------------------------------ schema

    def _frame_store(self, spec: FrameStore | str | os.PathLike[str] | None) -> FrameStore | None:
        if isinstance(spec, str) and spec == "auto":
            spec = self.backend.frame_store_dir(self.collection_name)
        return spec if spec is None or isinstance(spec, FrameStore) else FrameStore(spec, self.dim)

    @property
    def fingerprint(self) -> str | None:
        """Fingerprint of the model the collection's vectors come from (None: embeddings-only)."""
        return self.bundle.towers_fingerprint if self.bundle is not None else self.schema.model_fingerprint

    @property
    def frames_cache_size(self) -> int:
        """Candidates' frame matrices kept in memory (0: stage 1 returns the frames)."""
        return self.stage_two.frames_cache_size

    @property
    def xpool_cache_size(self) -> int:
        """Candidates' precomputed X-Pool tensors kept in memory."""
        return self.stage_two.precompute_cache_size

    def _resolve_aggregation(self, aggregation: str | Aggregator | None) -> Aggregator:
        if aggregation is None:
            return default_aggregation(self.bundle, dim=self.dim)
        return resolve_aggregation(aggregation, dim=self.dim, bundle=self.bundle)

    # ------------------------------------------------------------------ encoders

    def _require_bundle(self, what: str) -> ModelBundle:
        if self.bundle is None:
            raise ConfigError(f"{what} needs a model bundle: open the collection with bundle=... (e.g. 'synthetic-world/v3')")
        return self.bundle

    def encode_text(self, texts: str | Sequence[str]) -> np.ndarray:
        """Embed query texts with the collection's bundle: (N, D) float32, L2-normalised."""
        if self._text_encoder is None:
            self._text_encoder = self._require_bundle("text search").text_encoder(device=self.device)
        return self._text_encoder.encode(texts)

    @property
    def frame_encoder(self) -> FrameEncoder:
        """The bundle's :class:`~vtr_qdrant.model.encoders.FrameEncoder` (created on first use)."""
        if self._frame_encoder is None:
            self._frame_encoder = self._require_bundle("encoding frames").frame_encoder(device=self.device)
        return self._frame_encoder

    # ------------------------------------------------------------------ writes

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
        return self.store.upsert([EmbeddedVideo(video_id, frames, timestamps, metadata, uri, duration, content_hash)])[video_id]

    add_embeddings = upsert_embeddings  # the name RAG stacks use for "store these vectors"

    def upsert_embeddings_batch(self, videos: Iterable[EmbeddedVideo]) -> dict[str, list[str]]:
        """Store many videos; every video is validated before anything is written.

        Returns:
            ``{video_id: [point ids]}``.
        """
        return self.store.upsert(videos)

    def optimize(self) -> bool:
        """Let the storage engine build its ANN index now (needed for Qdrant Edge after bulk writes;
        a Qdrant server optimises on its own). Returns True if anything was done."""
        return self.backend.optimize(self.collection_name)

    def delete(self, video_id: str) -> int:
        """Delete a video (all its segments). Returns how many points were removed."""
        return self.store.delete(video_id)

    def add_videos(
        self,
        uris: Sequence[str | os.PathLike[str]],
        *,
        video_ids: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
        **options: Any,
    ) -> IngestReport:
        """Decode video files, encode their frames and store them (needs the ``video`` extra).

        Frames are sampled with the collection's :class:`SamplingConfig` at the bundle's image size.
        A file whose content hash and model fingerprint are already stored is skipped unless
        ``force``. A video that fails (missing, unreadable, undecodable, unsafe, timed out...) is
        reported and the others go on; nothing already ingested is touched.

        Args:
            uris: video file paths (see :func:`vtr_qdrant.video.source.expand_sources` for folders/globs).
            video_ids: ids to store them under (default: the absolute path).
            metadata: one dict for all videos, or one per video (user payload fields).
            **options: fields of :class:`~vtr_qdrant.ingest.IngestOptions`: ``force`` (re-ingest
                unchanged files), ``batch_frames``, ``decode_workers``, ``timeout`` (per-video decode
                timeout, seconds), ``progress``, and the decoder's ``allow_playlists``, ``ffmpeg``,
                ``max_frames``, ``allowed_schemes``, ``engine``. An unknown name is an error.

        Returns:
            :class:`~vtr_qdrant.ingest.IngestReport` with ingested, skipped and failed videos and stage timings.

        Raises:
            InvalidInputError: an unknown or invalid option, or ``video_ids``/``metadata`` that do
                not match ``uris``; nothing is ingested.
        """
        from .ingest import IngestOptions, ingest_videos

        opts = IngestOptions.of(options, where="add_videos")
        return ingest_videos(
            self.store, self.frame_encoder, self.sampling, uris, video_ids=video_ids, metadata=metadata, options=opts
        )

    # ------------------------------------------------------------------ reads

    def get(self, video_id: str, *, with_frames: bool = True) -> StoredVideo | None:
        """A stored video (segments concatenated in time order), or None if absent."""
        return self.store.get(video_id, with_frames=with_frames)

    def count(self, query_filter: models.Filter | None = None, *, count_filter: models.Filter | None = None) -> int:
        """Number of videos (not points) matching an optional filter (``count_filter``: qdrant-client's name)."""
        if query_filter is not None and count_filter is not None:
            raise InvalidInputError("give query_filter or count_filter (the same thing), not both")
        return self.store.count(query_filter if count_filter is None else count_filter)

    def count_points(self) -> int:
        """Number of points (segments) in the collection."""
        return self.store.count_points()

    def info(self) -> dict[str, Any]:
        """Collection facts: model, dimension, sampling, counts."""
        return {
            "collection_name": self.collection_name, "model_name": self.bundle.name if self.bundle else None,
            "model_fingerprint": self.fingerprint, "dim": self.dim, "sampling": self.sampling.model_dump(),
            "videos": self.count(), "points": self.count_points(), "aggregation": repr(self.aggregation),
            "frames_indexed": self.frames_indexed, "scenes_indexed": self.schema.scenes_indexed,
        }

    # ------------------------------------------------------------------ search

    def search(
        self,
        query: str | np.ndarray | None = None,
        limit: int = 10,
        query_filter: models.Filter | None = None,
        *,
        image: np.ndarray | None = None,
        like: str | None = None,
        candidates: int | None = None,
        aggregation: str | Aggregator | None = None,
        rescore: bool = False,
        hybrid: bool | None = None,
        score_threshold: float | None = None,
        with_payload: bool | Sequence[str] = True,
        offset: int = 0,
        search_params: models.SearchParams | None = None,
        timeout: int | None = None,
        consistency: models.ReadConsistency | None = None,
    ) -> list[VideoHit]:
        """Find the videos that best match a text, a query vector, an image or a stored video.

        Args:
            query: a non-empty text, or a (D,) float query embedding.
            limit: how many videos to return (>= 1).
            query_filter: a ``models.Filter`` (or its dict form) on payload fields, inside stage 1.
            image: instead of ``query``: (H, W, 3) or (N, H, W, 3) uint8 RGB, via the visual tower.
            like: instead of ``query``: a stored video's id (its frames' mean; itself left out).
            candidates: K, how many points stage 1 hands to stage 2 (default max(100, limit + offset)).
            aggregation: stage-2 aggregation for this call (default: the collection's).
            rescore: rescore stage 1 by MaxSim over the frames (prefetch 4K on the pooled vector).
            hybrid: frame-aware stage 1 (half the candidates by best scene); default: ``index_frames``.
            score_threshold: drop hits whose stage-2 score is below this.
            with_payload: include payloads in the hits: True, False, or a list of field names.
            offset: skip this many hits (paging, as in qdrant-client).
            search_params: ``models.SearchParams`` for this call's stage 1 (``hnsw_ef``, ``exact``).
            timeout, consistency: qdrant-client's per-request server timeout (s) and read consistency.

        Returns:
            Up to ``limit`` :class:`VideoHit`, best first, one per video.

        Raises:
            InvalidInputError: a bad argument, or not exactly one of query / image / like.
        """
        query, query_filter = single_query(
            query, image, like, query_filter, encode_frames=lambda x: self.frame_encoder.encode(x),
            stored_frames=lambda vid: (v.frames if (v := self.get(vid)) is not None else None),
        )
        return self.search_batch(
            [query], limit, query_filter, candidates=candidates, aggregation=aggregation, rescore=rescore,  # type: ignore[list-item]
            hybrid=hybrid, score_threshold=score_threshold, with_payload=with_payload, offset=offset,
            search_params=search_params, timeout=timeout, consistency=consistency,
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
        with_payload: bool | Sequence[str] = True,
        offset: int = 0,
        search_params: models.SearchParams | None = None,
        timeout: int | None = None,
        consistency: models.ReadConsistency | None = None,
    ) -> list[list[VideoHit]]:
        """Run many searches with one stage-1 round trip; arguments as :meth:`search`.

        Returns:
            One ranked hit list per query, in order.
        """
        options = SearchOptions(limit, offset, query_filter, candidates, rescore, hybrid, score_threshold, with_payload,
                                search_params, timeout, consistency)
        k, checked = options.checked()  # every argument refused before the text tower runs
        agg = self.aggregation if aggregation is None else self._resolve_aggregation(aggregation)
        settings = StageOneSettings(self.frames_indexed, self.schema.scenes_indexed, self.hnsw_ef, self.frames_hnsw_ef, self.exact)
        vectors = query_vectors(queries, self.dim, self.encode_text)
        return run_search(self.backend, self.collection_name, settings, self.stage_two, vectors, agg, k, checked)

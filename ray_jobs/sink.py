"""Write stage: encoded rows -> Qdrant points, from parallel Ray tasks or from the driver.

Both paths share :class:`VideoWriter`, which stores videos through the collection's
:class:`~vtr_qdrant.store.videos.VideoStore` (validation, deterministic UUIDv5 point ids,
segmenting, stale-segment clean-up) over a :class:`~ray_jobs.retry.RetryingBackend` (transient
errors retried with backoff, upserts split under ``write.max_request_bytes``).

* Server targets: :class:`QdrantDatasink` (``Dataset.write_datasink``) writes from Ray tasks.
* Embedded targets (a local folder; Qdrant Edge) admit one process: the driver writes what
  ``Dataset.iter_batches`` yields (:func:`write_from_driver`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray.data import Datasink

from vtr_qdrant.collection import VideoCollection
from vtr_qdrant.errors import InvalidInputError
from vtr_qdrant.ingest import VideoFailure
from vtr_qdrant.store.backend import StorageBackend
from vtr_qdrant.store.qdrant import QdrantClientBackend
from vtr_qdrant.store.videos import EmbeddedVideo

from .config import QdrantTarget, WriteConfig
from .retry import RetryingBackend, RetryPolicy
from .rows import Col, batch_rows, has_error, row_failure, row_source, scalar_str, set_error

__all__ = [
    "WriteStats",
    "VideoWriter",
    "ServerClientFactory",
    "QdrantDatasink",
]

log = logging.getLogger(__name__)

class WriteStats(dict):  # type: ignore[type-arg]
    """What one writer did (a plain dict so Ray ships it cheaply): ``ingested`` ids, ``failed``
    failure dicts, ``frames``, ``points``, ``retries`` and summed stage seconds."""

    @classmethod
    def empty(cls) -> WriteStats:
        return cls(ingested=[], failed=[], frames=0, points=0, retries=0, decode_s=0.0, encode_s=0.0, write_s=0.0)

    @classmethod
    def combine(cls, parts: Iterable[dict[str, Any]]) -> WriteStats:
        out = cls.empty()
        for p in parts:
            for k, v in p.items():
                out[k] = out[k] + v
        return out


def _embedded(row: dict[str, Any]) -> EmbeddedVideo:
    duration = float(row[Col.DURATION])
    meta = json.loads(scalar_str(row[Col.METADATA]) or "{}")
    return EmbeddedVideo(
        video_id=scalar_str(row[Col.VIDEO_ID]),
        frames=np.asarray(row[Col.FRAMES], dtype=np.float32),
        timestamps=np.asarray(row[Col.TIMESTAMPS], dtype=np.float64),
        metadata=meta,
        uri=row_source(row),
        duration=duration if math.isfinite(duration) else None,
        content_hash=scalar_str(row[Col.CONTENT_HASH]) or None,
    )


class VideoWriter:
    """Stores encoded rows in a collection; failed rows and rejected videos become failures.

    Args:
        vc: the collection (over a :class:`RetryingBackend` for fault tolerance).
        batch_videos: videos per ``upsert_embeddings_batch`` call.
    """

    def __init__(self, vc: VideoCollection, *, batch_videos: int = 16) -> None:
        self.vc = vc
        self.batch_videos = batch_videos
        self.stats = WriteStats.empty()

    def _fail(self, row: dict[str, Any], stage: str, e: BaseException) -> None:
        self.stats["failed"].append(row_failure(set_error(row, stage, e)).model_dump())

    def write_rows(self, rows: Sequence[dict[str, Any]]) -> WriteStats:
        """Write rows (one per video); returns the cumulative stats.

        Raises:
            WriteError: the target kept failing with transient errors (the job must stop).
        """
        good: list[tuple[dict[str, Any], EmbeddedVideo]] = []
        for row in rows:
            self.stats["decode_s"] += float(row.get(Col.DECODE_S, 0.0))
            self.stats["encode_s"] += float(row.get(Col.ENCODE_S, 0.0))
            if has_error(row):
                self.stats["failed"].append(row_failure(row).model_dump())
                continue
            try:
                good.append((row, _embedded(row)))
            except Exception as e:
                self._fail(row, "upsert", e)
        t0 = time.perf_counter()
        for i in range(0, len(good), self.batch_videos):
            self._write_batch(good[i : i + self.batch_videos])
        self.stats["write_s"] += time.perf_counter() - t0
        return self.stats

    def _write_batch(self, batch: list[tuple[dict[str, Any], EmbeddedVideo]]) -> None:
        try:
            written = self.vc.store.upsert([v for _, v in batch])
        except InvalidInputError:
            # one video is malformed (shape, NaN, reserved metadata key): find it, keep the others
            for row, v in batch:
                try:
                    self._record({v.video_id: self.vc.store.upsert([v])[v.video_id]}, [v])
                except InvalidInputError as e:
                    self._fail(row, "upsert", e)
            return
        self._record(written, [v for _, v in batch])

    def _record(self, written: dict[str, list[str]], videos: list[EmbeddedVideo]) -> None:
        for v in videos:
            self.stats["ingested"].append(v.video_id)
            self.stats["frames"] += len(v.frames)
            self.stats["points"] += len(written[v.video_id])


@dataclass
class ServerClientFactory:
    """Builds a ``QdrantClient`` for a server target inside a Ray worker.

    The API key is read from ``target.api_key_env`` on the driver and travels with the task (it is
    not printed by ``repr``); set the variable on the driver, or on the workers' environment.
    """

    target: QdrantTarget
    api_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_target(cls, target: QdrantTarget) -> ServerClientFactory:
        return cls(target, os.environ.get(target.api_key_env))

    def __call__(self) -> Any:
        from qdrant_client import QdrantClient

        key = self.api_key or os.environ.get(self.target.api_key_env)
        return QdrantClient(url=self.target.url, api_key=key, prefer_grpc=self.target.prefer_grpc, timeout=self.target.timeout)


def open_writer_collection(client: Any, collection_name: str, cfg: WriteConfig, *, policy: RetryPolicy | None = None) -> VideoCollection:
    """The existing collection over a retrying, size-splitting back end (model facts come from
    the collection's recorded metadata: no bundle is needed to write embeddings)."""
    backend = RetryingBackend(
        client if isinstance(client, StorageBackend) else QdrantClientBackend(client),
        policy or RetryPolicy.from_config(cfg),
        max_request_bytes=cfg.max_request_bytes,
    )
    return VideoCollection(backend, collection_name, create=False)


class QdrantDatasink(Datasink):  # type: ignore[misc]
    """Ray ``Datasink`` writing encoded rows to a Qdrant server from parallel write tasks.

    Each write task opens its own client (``client_factory()``) and a :class:`VideoWriter` over
    a :class:`RetryingBackend`. Once ``Dataset.write_datasink`` returns, :attr:`result` holds the
    combined :class:`WriteStats` of every task.

    Args:
        client_factory: picklable callable returning a ``QdrantClient`` (or a StorageBackend)
            inside the write task, e.g. :class:`ServerClientFactory`.
        collection_name: the concrete collection (not an alias), created by the driver.
        cfg: write settings.
        retry_seed: jitter seed (tests); each task uses ``retry_seed + task index``.
    """

    def __init__(
        self, client_factory: Callable[[], Any], collection_name: str, cfg: WriteConfig, *, retry_seed: int | None = None
    ) -> None:
        self.client_factory = client_factory
        self.collection_name = collection_name
        self.cfg = cfg
        self.retry_seed = retry_seed
        self.result: WriteStats = WriteStats.empty()

    def get_name(self) -> str:
        return "QdrantWrite"

    def write(self, blocks: Iterable[Any], ctx: Any) -> dict[str, Any]:
        from ray.data.block import BlockAccessor

        seed = None if self.retry_seed is None else self.retry_seed + int(getattr(ctx, "task_idx", 0))
        policy = RetryPolicy.from_config(self.cfg, seed=seed)
        client = self.client_factory()
        try:
            vc = open_writer_collection(client, self.collection_name, self.cfg, policy=policy)
            writer = VideoWriter(vc, batch_videos=self.cfg.batch_videos)
            for block in blocks:
                columns: dict[str, np.ndarray] = BlockAccessor.for_block(block).to_numpy()  # type: ignore[assignment]
                writer.write_rows(batch_rows(columns))
            writer.stats["retries"] = policy.retries
            return dict(writer.stats)
        finally:
            close = getattr(client, "close", None)
            if callable(close):
                close()

    def on_write_complete(self, write_result: Any) -> None:
        self.result = WriteStats.combine(write_result.write_returns)


def write_from_driver(
    batches: Iterable[dict[str, np.ndarray]],
    vc: VideoCollection,
    cfg: WriteConfig,
    *,
    on_batch: Callable[[WriteStats], None] | None = None,
    retry_seed: int | None = None,
) -> WriteStats:
    """Write batches yielded by ``Dataset.iter_batches`` from this process (embedded targets).

    Args:
        batches: numpy batches of encoded rows.
        vc: the collection (its back end is wrapped for retries and size splitting here).
        cfg: write settings.
        on_batch: called with the cumulative stats after each batch (progress, tests).
        retry_seed: backoff jitter seed (tests).
    """
    policy = RetryPolicy.from_config(cfg, seed=retry_seed)
    writer_vc = open_writer_collection(vc.backend, vc.collection_name, cfg, policy=policy)
    writer = VideoWriter(writer_vc, batch_videos=cfg.batch_videos)
    for batch in batches:
        writer.write_rows(batch_rows(batch))
        log.info("wrote %d videos (%d failed so far)", len(writer.stats["ingested"]), len(writer.stats["failed"]))
        if on_batch is not None:
            on_batch(writer.stats)
    writer.stats["retries"] = policy.retries
    return writer.stats


def failures_of(stats: WriteStats) -> list[VideoFailure]:
    """The stats' failure dicts as :class:`VideoFailure` objects."""
    return [VideoFailure.model_validate(f) for f in stats["failed"]]

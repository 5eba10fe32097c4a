"""Write stage: encoded rows -> Qdrant points, from parallel Ray tasks or from the driver.

Both paths share :class:`VideoWriter`, which stores videos with
:meth:`VideoCollection.upsert_embeddings_batch` (validation, deterministic UUIDv5 point ids,
segmenting, stale-segment clean-up) over a :class:`RetryingBackend`: every storage call retries
transient errors (timeouts, HTTP 408/429/5xx, gRPC UNAVAILABLE / RESOURCE_EXHAUSTED /
DEADLINE_EXCEEDED) with exponential backoff and full jitter, and every upsert is split so its
request body stays under ``write.max_request_bytes``. Upserts wait for the server
(``wait=True``), and ids are deterministic, so a retried or repeated write never duplicates a video.

* Server targets: :class:`QdrantDatasink` (``Dataset.write_datasink``) writes from Ray tasks.
* Embedded targets (a local folder; Qdrant Edge) admit one process: the driver writes what
  ``Dataset.iter_batches`` yields (:func:`write_from_driver`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qdrant_client import models
from ray.data import Datasink

from vtr_qdrant.collection import VideoCollection
from vtr_qdrant.errors import InvalidInputError, VtrError
from vtr_qdrant.ingest import VideoFailure
from vtr_qdrant.store.backend import Candidate, StorageBackend
from vtr_qdrant.store.plan import StageOneQuery
from vtr_qdrant.store.points import PointData
from vtr_qdrant.store.qdrant import QdrantClientBackend
from vtr_qdrant.store.videos import EmbeddedVideo

from .config import QdrantTarget, WriteConfig
from .rows import Col, batch_rows, has_error, row_failure, scalar_str, set_error

__all__ = [
    "WriteError",
    "is_transient",
    "RetryPolicy",
    "RetryingBackend",
    "split_by_size",
    "estimate_request_bytes",
    "WriteStats",
    "VideoWriter",
    "ServerClientFactory",
    "QdrantDatasink",
]

log = logging.getLogger(__name__)

_TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
_TRANSIENT_GRPC = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "ABORTED"})


class WriteError(VtrError, ConnectionError):
    """Qdrant kept failing with transient errors after every retry: the job stops (re-run to resume)."""


def is_transient(e: BaseException) -> bool:
    """Whether retrying the same request may succeed (timeouts, overload, unavailable server)."""
    if isinstance(e, (TimeoutError, ConnectionError)) and not isinstance(e, WriteError):
        return True
    try:
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
    except ImportError:  # pragma: no cover - qdrant-client is a core dependency
        return False
    if isinstance(e, UnexpectedResponse):
        return e.status_code in _TRANSIENT_HTTP
    if isinstance(e, ResponseHandlingException):  # httpx transport errors: timeouts, resets
        return True
    try:
        import httpx

        if isinstance(e, (httpx.TimeoutException, httpx.TransportError)):
            return True
    except ImportError:  # pragma: no cover
        pass
    code = getattr(e, "code", None)
    if callable(code) and type(e).__module__.startswith("grpc"):
        try:
            return getattr(code(), "name", "") in _TRANSIENT_GRPC
        except Exception:
            return False
    return False


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter: sleep ~ U(0, min(max, base * 2**attempt)).

    Attributes:
        max_retries: retries after the first attempt.
        base, max_delay: seconds.
        seed: jitter seed (None: random).
        sleep: the sleep function (tests replace it).
    """

    max_retries: int = 8
    base: float = 0.5
    max_delay: float = 30.0
    seed: int | None = None
    sleep: Callable[[float], None] = time.sleep
    retries: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    @classmethod
    def from_config(cls, cfg: WriteConfig, *, seed: int | None = None) -> RetryPolicy:
        return cls(max_retries=cfg.max_retries, base=cfg.backoff_base, max_delay=cfg.backoff_max, seed=seed)

    def call(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn``, retrying transient errors; raise :class:`WriteError` when they persist."""
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as e:
                if not is_transient(e):
                    raise
                if attempt >= self.max_retries:
                    raise WriteError(
                        f"Qdrant {what} still failing after {self.max_retries} retries: {type(e).__name__}: {e}. "
                        "Check that the server is up and not overloaded (lower write.concurrency or "
                        "write.batch_videos), then re-run the job: finished videos are skipped"
                    ) from e
                delay = self._rng.uniform(0, min(self.max_delay, self.base * 2**attempt))
                log.info("transient error on %s (%s: %s); retry %d in %.2f s", what, type(e).__name__, e, attempt + 1, delay)
                self.retries += 1
                attempt += 1
                self.sleep(delay)


def estimate_request_bytes(p: PointData) -> int:
    """Upper estimate of a point's share of a JSON upsert body: a float32 printed as a Python float
    takes up to ~21 characters plus a separator."""
    floats = int(p.frames.size) + int(p.pooled.size)
    return 24 * floats + len(json.dumps(p.payload, default=str)) + 128


def split_by_size(points: Sequence[PointData], max_bytes: int) -> list[list[PointData]]:
    """Consecutive chunks whose estimated request size stays under ``max_bytes`` (a lone larger
    point gets a chunk of its own: it cannot be split)."""
    chunks: list[list[PointData]] = []
    cur: list[PointData] = []
    size = 0
    for p in points:
        b = estimate_request_bytes(p)
        if cur and size + b > max_bytes:
            chunks.append(cur)
            cur, size = [], 0
        cur.append(p)
        size += b
    if cur:
        chunks.append(cur)
    return chunks


class RetryingBackend(StorageBackend):
    """A :class:`StorageBackend` that retries transient errors and splits upserts by request size."""

    def __init__(self, inner: StorageBackend, policy: RetryPolicy, *, max_request_bytes: int = 16 << 20) -> None:
        self.inner = inner
        self.policy = policy
        self.max_request_bytes = max_request_bytes
        self.requests = 0

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        self.requests += 1
        return self.policy.call(what, fn)

    def collection_exists(self, name: str) -> bool:
        return bool(self._call("collection_exists", lambda: self.inner.collection_exists(name)))

    def create_collection(self, name: str, *, dim: int, metadata: dict[str, Any], index_frames: bool = False) -> None:
        self.inner.create_collection(name, dim=dim, metadata=metadata, index_frames=index_frames)  # not idempotent: no retry

    def collection_schema(self, name: str) -> dict[str, Any]:
        return self._call("get_collection", lambda: self.inner.collection_schema(name))  # type: ignore[no-any-return]

    def create_payload_index(self, name: str, field: str, schema: str) -> None:
        self._call("create_payload_index", lambda: self.inner.create_payload_index(name, field, schema))

    def upsert(self, name: str, points: Sequence[PointData]) -> None:
        for chunk in split_by_size(points, self.max_request_bytes):
            self._call(f"upsert of {len(chunk)} points", lambda c=chunk: self.inner.upsert(name, c))  # type: ignore[misc]

    def query(self, name: str, queries: Sequence[StageOneQuery]) -> list[list[Candidate]]:
        return self._call("query", lambda: self.inner.query(name, queries))  # type: ignore[no-any-return]

    def scroll(self, name: str, query_filter: models.Filter | None, *, with_frames: bool, limit: int = 10_000) -> list[Candidate]:
        return self._call("scroll", lambda: self.inner.scroll(name, query_filter, with_frames=with_frames, limit=limit))  # type: ignore[no-any-return]

    def delete(self, name: str, query_filter: models.Filter) -> None:
        self._call("delete", lambda: self.inner.delete(name, query_filter))

    def count(self, name: str, query_filter: models.Filter | None = None) -> int:
        return int(self._call("count", lambda: self.inner.count(name, query_filter)))

    def optimize(self, name: str) -> bool:
        return bool(self._call("optimize", lambda: self.inner.optimize(name)))


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
        uri=scalar_str(row[Col.URI]),
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

"""Retries for storage calls: which errors are transient, the backoff policy, and a retrying back end.

:class:`RetryingBackend` wraps any :class:`~vtr_qdrant.store.backend.StorageBackend`: every call
retries transient errors (timeouts, HTTP 408/429/5xx honouring Retry-After, gRPC UNAVAILABLE / RESOURCE_EXHAUSTED /
DEADLINE_EXCEEDED) with exponential backoff and full jitter, and every upsert is split so its
request body stays under a byte budget. Upserts wait for the server and point ids are
deterministic, so a retried write never duplicates a video.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qdrant_client import models

from vtr_qdrant.errors import VtrError
from vtr_qdrant.store.backend import Candidate, StorageBackend
from vtr_qdrant.store.plan import StageOneQuery
from vtr_qdrant.store.points import PointData

from .config import WriteConfig

__all__ = ["WriteError", "is_transient", "retry_after", "RetryPolicy", "RetryingBackend", "split_by_size", "estimate_request_bytes"]

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
        from qdrant_client.common.client_exceptions import QdrantException, ResourceExhaustedResponse
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
    except ImportError:  # pragma: no cover - qdrant-client is a core dependency
        return False
    if isinstance(e, ResourceExhaustedResponse):  # HTTP 429 with Retry-After (rate limited)
        return True
    if type(e) is QdrantException and str(e).startswith("Retry-After"):  # 429 whose Retry-After is not seconds
        return True
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


def retry_after(e: BaseException) -> float | None:
    """Seconds the server asked us to wait (Retry-After on a 429 or 503), or None."""
    seconds = getattr(e, "retry_after_s", None)  # qdrant-client's ResourceExhaustedResponse
    if seconds is None:
        headers = getattr(e, "headers", None)  # UnexpectedResponse keeps the response headers
        value = headers.get("retry-after") if headers is not None and hasattr(headers, "get") else None
        try:
            seconds = float(value) if value is not None else None
        except ValueError:  # an HTTP date: fall back to our own backoff
            seconds = None
    if seconds is None or not math.isfinite(float(seconds)) or float(seconds) < 0:
        return None
    return float(seconds)


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter: sleep ~ U(0, min(max, base * 2**attempt)), and never
    less than the server's Retry-After (capped at ``max_delay``) when it sends one.

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
                asked = retry_after(e)
                if asked is not None:  # the server knows when it will take requests again
                    delay = max(delay, min(asked, self.max_delay))
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

    def create_collection(
        self, name: str, *, dim: int, metadata: dict[str, Any], index_frames: bool = False, index_scenes: bool = False
    ) -> None:  # not idempotent: no retry
        self.inner.create_collection(name, dim=dim, metadata=metadata, index_frames=index_frames, index_scenes=index_scenes)

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

    def set_payload(self, name: str, payload: dict[str, Any], ids: Sequence[str]) -> None:
        self._call("set_payload", lambda: self.inner.set_payload(name, payload, ids))

    def delete(self, name: str, query_filter: models.Filter) -> None:
        self._call("delete", lambda: self.inner.delete(name, query_filter))

    def count(self, name: str, query_filter: models.Filter | None = None) -> int:
        return int(self._call("count", lambda: self.inner.count(name, query_filter)))

    def optimize(self, name: str) -> bool:
        return bool(self._call("optimize", lambda: self.inner.optimize(name)))

"""HTTP 429 / 503 / slow answers from a loopback server that speaks Qdrant's REST API, through the
real qdrant-client (``QdrantClient(url=...)``) wrapped in the Ray job's :class:`RetryingBackend`.

The server plays a script of answers, one per request: ``("429", seconds)`` is Qdrant's rate-limit
answer (status JSON + ``Retry-After``), ``("503", None)`` an unavailable node, ``("slow", s)``
answers after ``s`` seconds (longer than the client's timeout), ``("ok", None)`` answers the request.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

pytest.importorskip("ray")
from ray_jobs.retry import RetryingBackend, RetryPolicy, WriteError, is_transient, retry_after  # noqa: E402
from vtr_qdrant.store.points import PointData  # noqa: E402
from vtr_qdrant.store.qdrant import QdrantClientBackend  # noqa: E402


class FakeQdrant(ThreadingHTTPServer):
    """The answers of a Qdrant node for ``count`` and ``upsert``, preceded by scripted faults."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[tuple[str, float | None]] = []
        self.requests: list[tuple[str, str, float]] = []  # (method, path, monotonic time)
        self.upserted: list[Any] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeQdrant

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _answer(self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.requests.append((self.command, self.path, time.monotonic()))
            step = self.server.script.pop(0) if self.server.script else ("ok", None)
        kind, arg = step
        if kind == "429":
            self._answer(429, {"status": {"error": "Too many requests: rate limit exceeded"}, "time": 0.0},
                         {"Retry-After": str(int(arg or 0))})
            return
        if kind == "503":
            self._answer(503, {"status": {"error": "Service Unavailable: node is starting"}, "time": 0.0})
            return
        if kind == "slow":
            time.sleep(float(arg or 0))
        if self.path.split("?")[0].endswith("/points/count"):
            self._answer(200, {"result": {"count": 7}, "status": "ok", "time": 0.001})
        elif self.command == "PUT" and self.path.split("?")[0].endswith("/points"):
            with self.server.lock:
                self.server.upserted.append(json.loads(body))
            self._answer(200, {"result": {"operation_id": 1, "status": "completed"}, "status": "ok", "time": 0.001})
        else:
            self._answer(404, {"status": {"error": f"Not found: {self.path}"}, "time": 0.0})

    do_GET = do_POST = do_PUT = _handle


@pytest.fixture
def server() -> Iterator[FakeQdrant]:
    srv = FakeQdrant()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _backend(srv: FakeQdrant, *, max_retries: int = 4, max_delay: float = 5.0, timeout: int = 1) -> tuple[RetryingBackend, list[float]]:
    slept: list[float] = []

    def sleep(s: float) -> None:  # record the waits and wait a little for real (the server sees the gap)
        slept.append(s)
        time.sleep(min(s, 0.05))

    client = QdrantClient(url=srv.url, timeout=timeout, check_compatibility=False)
    policy = RetryPolicy(max_retries=max_retries, base=0.01, max_delay=max_delay, seed=0, sleep=sleep)
    return RetryingBackend(QdrantClientBackend(client), policy), slept


def test_429_is_retried_after_the_servers_retry_after(server: FakeQdrant) -> None:
    server.script = [("429", 2), ("429", 3)]
    backend, slept = _backend(server)
    assert backend.count("videos") == 7
    assert len(server.requests) == 3 and backend.policy.retries == 2
    assert slept[0] >= 2.0 and slept[1] >= 3.0  # never sooner than asked (our own backoff is ~0.01 s)


def test_retry_after_is_capped(server: FakeQdrant) -> None:
    server.script = [("429", 3600)]
    backend, slept = _backend(server, max_delay=5.0)
    assert backend.count("videos") == 7
    assert slept == [5.0]  # an hour asked, our cap honoured


def test_503_and_slow_answers_are_retried_then_the_write_lands_once(server: FakeQdrant) -> None:
    server.script = [("503", None), ("slow", 2.0), ("429", 1)]
    backend, slept = _backend(server, timeout=1)
    rng = np.random.default_rng(0)
    pts = [PointData(id=f"00000000-0000-0000-0000-00000000000{i}", frames=rng.standard_normal((3, 4)).astype(np.float32),
                     pooled=rng.standard_normal(4).astype(np.float32), payload={"video_id": f"v{i}"}) for i in range(2)]
    backend.upsert("videos", pts)
    assert len(server.requests) == 4 and backend.policy.retries == 3
    assert slept[2] >= 1.0
    # the slow request may also have been applied server-side before the timeout fired: an upsert
    # with deterministic ids is idempotent, so every landed body carries the same two ids
    assert server.upserted and all(sorted(p["id"] for p in body["points"]) == sorted(p.id for p in pts) for body in server.upserted)


def test_persistent_rate_limit_ends_in_a_clear_write_error(server: FakeQdrant) -> None:
    server.script = [("429", 1)] * 10
    backend, slept = _backend(server, max_retries=2)
    with pytest.raises(WriteError, match="still failing after 2 retries.*rate limit"):
        backend.count("videos")
    assert len(server.requests) == 3 and len(slept) == 2


def test_a_bad_request_is_not_retried(server: FakeQdrant) -> None:
    backend, slept = _backend(server)
    with pytest.raises(Exception) as err:
        backend.collection_schema("videos")  # our fake answers 404
    assert not is_transient(err.value) and slept == [] and len(server.requests) == 1


def test_retry_after_parsing() -> None:
    import httpx
    from qdrant_client.common.client_exceptions import QdrantException, ResourceExhaustedResponse
    from qdrant_client.http.exceptions import UnexpectedResponse

    assert retry_after(ResourceExhaustedResponse("slow down", 7)) == 7.0
    assert retry_after(UnexpectedResponse(503, "", b"", httpx.Headers({"Retry-After": "4"}))) == 4.0
    assert retry_after(UnexpectedResponse(503, "", b"", httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}))) is None
    assert retry_after(UnexpectedResponse(503, "", b"", httpx.Headers())) is None
    assert retry_after(TimeoutError()) is None
    assert is_transient(ResourceExhaustedResponse("slow down", 1))
    assert is_transient(QdrantException("Retry-After header value is not a valid integer: tomorrow"))
    assert not is_transient(QdrantException("something else"))

"""One ASGI middleware in front of every route: request ids, the API key, body limits, the
structured access log and the Prometheus metrics.

- **request id**: the client's ``X-Request-ID`` when it is short and plain (``[A-Za-z0-9._-]``,
  at most 64 characters), else a new one; echoed in the response's ``X-Request-ID``, logged.
- **API key**: with :attr:`ServeConfig.api_key`, a request needs the ``api-key`` header (the name
  Qdrant uses) or the session cookie (an HMAC of the key, set by ``POST /session`` so that the
  page's ``<video>`` and ``<img>`` requests, which cannot carry headers, are authorised too).
  ``GET /`` and ``GET /health`` are open. Keys are compared in constant time.
- **bodies** are read here, before any route runs, up to :attr:`ServeConfig.max_body_bytes` (413
  past it, from ``Content-Length`` or while streaming) and within
  :attr:`ServeConfig.body_timeout_s` (408: a slow client holds only its own connection).
- **access log**: one JSON object per request on the ``vtr_qdrant.serve.access`` logger.
- **metrics** (:class:`Metrics`): requests by method, route template and status, and a latency
  histogram by method and route; ``GET /metrics`` renders them in Prometheus' text format.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .config import ServeConfig
from .problems import STATUS_TYPES, error_body

__all__ = ["Metrics", "ServeMiddleware", "session_token", "SESSION_COOKIE", "API_KEY_HEADER", "LATENCY_BUCKETS"]

access_log = logging.getLogger("vtr_qdrant.serve.access")

API_KEY_HEADER = "api-key"
SESSION_COOKIE = "vtr_session"
REQUEST_ID_HEADER = "x-request-id"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_PLAIN_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_OPEN_ROUTES = {("GET", "/"), ("HEAD", "/"), ("GET", "/health")}
_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def session_token(api_key: str) -> str:
    """The session cookie's value for ``api_key`` (not the key itself)."""
    return hmac.new(api_key.encode(), b"vtr-qdrant serve session", hashlib.sha256).hexdigest()


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Request counters and latency histograms, thread-safe, rendered in Prometheus' text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._buckets: dict[tuple[str, str], list[int]] = {}
        self._sums: dict[tuple[str, str], float] = defaultdict(float)
        self.in_flight = 0

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one finished request."""
        with self._lock:
            self._requests[(method, route, status)] += 1
            counts = self._buckets.setdefault((method, route), [0] * (len(LATENCY_BUCKETS) + 1))
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            counts[-1] += 1  # +Inf, and the count
            self._sums[(method, route)] += seconds

    def render(self) -> str:
        """The metrics in the Prometheus text exposition format (version 0.0.4)."""
        lines = [
            "# HELP vtr_http_requests_total HTTP requests answered, by method, route template and status.",
            "# TYPE vtr_http_requests_total counter",
        ]
        with self._lock:
            for (method, route, status), n in sorted(self._requests.items()):
                lines.append(f'vtr_http_requests_total{{method="{_label(method)}",route="{_label(route)}",status="{status}"}} {n}')
            lines += [
                "# HELP vtr_http_request_duration_seconds Time from the request's arrival to the end of its response.",
                "# TYPE vtr_http_request_duration_seconds histogram",
            ]
            for (method, route), counts in sorted(self._buckets.items()):
                labels = f'method="{_label(method)}",route="{_label(route)}"'
                for bound, c in zip((*(f"{b:g}" for b in LATENCY_BUCKETS), "+Inf"), counts):
                    lines.append(f'vtr_http_request_duration_seconds_bucket{{{labels},le="{bound}"}} {c}')
                lines.append(f"vtr_http_request_duration_seconds_sum{{{labels}}} {self._sums[(method, route)]:.6f}")
                lines.append(f"vtr_http_request_duration_seconds_count{{{labels}}} {counts[-1]}")
            lines += [
                "# HELP vtr_http_requests_in_flight Requests being answered now.",
                "# TYPE vtr_http_requests_in_flight gauge",
                f"vtr_http_requests_in_flight {self.in_flight}",
            ]
        return "\n".join(lines) + "\n"


class _Refused(Exception):
    def __init__(self, status: int, type: str, message: str) -> None:
        self.status, self.type, self.message = status, type, message


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return None


class ServeMiddleware:
    """The middleware described in the module docstring.

    Args:
        app: the ASGI app behind it.
        config: limits and the API key.
        metrics: where finished requests are counted.
    """

    def __init__(self, app: ASGIApp, config: ServeConfig, metrics: Metrics) -> None:
        self.app = app
        self.config = config
        self.metrics = metrics
        self._token = session_token(config.api_key) if config.api_key else None

    def _authorised(self, method: str, path: str, headers: dict[str, str]) -> bool:
        if self.config.api_key is None or (method, path) in _OPEN_ROUTES:
            return True
        key = headers.get(API_KEY_HEADER)
        if key is not None and hmac.compare_digest(key.encode(), self.config.api_key.encode()):
            return True
        cookie = _cookie(headers.get("cookie", ""), SESSION_COOKIE)
        return cookie is not None and self._token is not None and hmac.compare_digest(cookie.encode(), self._token.encode())

    async def _read_body(self, receive: Receive, headers: dict[str, str]) -> bytes:
        limit = self.config.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise _Refused(413, "payload_too_large", f"the request body may hold at most {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.config.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise _Refused(408, "request_timeout", f"the request body did not arrive within {self.config.body_timeout_s:g} s") from None
            if message["type"] == "http.disconnect":
                raise _Refused(400, "bad_request", "the client disconnected while sending the body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _Refused(413, "payload_too_large", f"the request body may hold at most {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        given = headers.get(REQUEST_ID_HEADER, "")
        request_id = given if _PLAIN_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        sent = {"status": 500, "bytes": 0, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent["status"], sent["started"] = message["status"], True
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER.encode(), request_id.encode())]
            elif message["type"] == "http.response.body":
                sent["bytes"] = int(sent["bytes"]) + len(message.get("body", b""))
            await send(message)

        self.metrics.in_flight += 1
        try:
            await self._dispatch(scope, receive, send_with_id, headers)
        finally:
            self.metrics.in_flight -= 1
            self._finish(scope, request_id, start, sent, headers)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        method, path = scope["method"], scope["path"]
        try:
            if not self._authorised(method, path, headers):
                raise _Refused(401, "unauthorized", f"this server needs an API key: send it in the {API_KEY_HEADER!r} header")
            if method in _BODY_METHODS:
                body = await self._read_body(receive, headers)
                replayed = False

                async def replay() -> Message:
                    nonlocal replayed
                    if not replayed:
                        replayed = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                await self.app(scope, replay, send)
            else:
                await self.app(scope, receive, send)
        except _Refused as r:
            await _send_json(send, r.status, error_body(r.type or STATUS_TYPES[r.status], r.message))

    def _finish(self, scope: Scope, request_id: str, start: float, sent: dict[str, Any], headers: dict[str, str]) -> None:
        seconds = time.perf_counter() - start
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        self.metrics.observe(scope["method"], route, int(sent["status"]), seconds)
        client = scope.get("client")
        access_log.info(json.dumps({
            "request_id": request_id, "method": scope["method"], "path": scope["path"], "route": route,
            "status": sent["status"], "bytes": sent["bytes"], "duration_ms": round(seconds * 1000, 3),
            "client": client[0] if client else None, "user_agent": headers.get("user-agent", "")[:200],
        }))


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})

"""The service under a real uvicorn server on loopback: slow clients hold only their own connection."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from served_world import ServedWorld, edge_app, live_server, served  # noqa: F401


@pytest.fixture
def live(served: ServedWorld) -> Iterator[str]:
    """The app under a real uvicorn server on a loopback port (body timeout 1 s)."""
    with live_server(edge_app(served, body_timeout_s=1.0)) as url:
        yield url


@pytest.mark.timeout(60)
def test_slow_clients_do_not_stall_others(live: str, served: ServedWorld) -> None:
    host, port = live.removeprefix("http://").split(":")
    slow = []
    for i in range(8):  # half a request line, headers without their end, a body that never completes
        s = socket.create_connection((host, int(port)))
        part = [b"GET /health HTTP/1.1\r\nHost: x\r\n", b"GET /hea",
                b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"query\""][i % 3]
        s.sendall(part)
        slow.append(s)
    try:
        with httpx.Client(base_url=live, timeout=10) as client:
            for _ in range(5):
                t0 = time.perf_counter()
                r = client.post("/search", json={"query": served.world.videos[0].caption, "limit": 3})
                assert r.status_code == 200 and (time.perf_counter() - t0) < 2.0
            assert client.get(f"/videos/{served.ids[0]}/media", headers={"Range": "bytes=0-99"}).status_code == 206
        # the client stuck in its body is answered 408 once the body timeout passes
        stuck = slow[2]
        stuck.settimeout(10)
        reply = b""
        while not reply.endswith(b"}}"):
            chunk = stuck.recv(4096)
            if not chunk:
                break
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in reply
    finally:
        for s in slow:
            s.close()

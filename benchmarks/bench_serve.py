"""Load on loopback: ``vtr-qdrant serve`` on the embedded Qdrant Edge back end under 1, 8 and 32
concurrent clients (20 s each by default), reporting throughput, p50/p99 latency, errors and the
server's resident memory before and after each level.

    python benchmarks/bench_serve.py                 # the full run (~70 s + set-up)
    python benchmarks/bench_serve.py --seconds 2     # a smoke run

The collection is the demo's world (``examples/demo_collection.py``: the held-out synthetic world
encoded with ``synthetic-world/v3``, 40 videos) written into a Qdrant Edge folder; the server is
the real command line in its own process, on 127.0.0.1; the clients are httpx on one asyncio loop
in this process, sending ``POST /search`` with the world's scene captions in turn. Every loop is
bounded in time and count and stops by itself. Client and server share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from _common import print_table  # noqa: E402

LEVELS = (1, 8, 32)
MAX_REQUESTS_PER_LEVEL = 200_000


def build_collection(folder: Path, n_videos: int) -> list[str]:
    """The demo world in a Qdrant Edge folder; returns the queries (its scene captions)."""
    from demo_collection import BUNDLE, COLLECTION, demo_world, embedded_videos

    from vtr_qdrant import VideoCollection
    from vtr_qdrant.store.edge import EdgeBackend

    backend = EdgeBackend(str(folder))
    try:
        vc = VideoCollection(backend, COLLECTION, BUNDLE, indexed_fields={"n_scenes": "integer"})
        world = demo_world(n_videos)
        vc.upsert_embeddings_batch(embedded_videos(world, vc.sampling.num_frames))
    finally:
        backend.close()
    return sorted({sc.caption for v in world.videos for sc in v.scenes})


def rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def level(url: str, clients: int, seconds: float, queries: list[str]) -> dict[str, Any]:
    """``clients`` loops sending searches for ``seconds``; latencies in ms and the error count."""
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def loop(k: int) -> None:
            nonlocal errors
            i = k
            while time.monotonic() < stop and len(latencies) + errors < MAX_REQUESTS_PER_LEVEL:
                t0 = time.perf_counter()
                try:
                    r = await client.post("/search", json={"query": queries[i % len(queries)], "limit": 10})
                    ok = r.status_code == 200 and len(r.json()["hits"]) == 10
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - t0) * 1000)
                else:
                    errors += 1
                i += clients

        t0 = time.perf_counter()
        await asyncio.gather(*(loop(k) for k in range(clients)))
        wall = time.perf_counter() - t0
    lat = sorted(latencies)
    return {
        "requests": len(lat), "rps": len(lat) / wall, "errors": errors,
        "p50": statistics.median(lat) if lat else float("nan"),
        "p99": lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan"),
    }


def start_server(edge: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "vtr_qdrant.cli.main", "serve", "--collection", "demo", "--edge-path", str(edge), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # the access log: one line per request
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the server did not start within 120 s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0, help="duration of each level (default 20)")
    p.add_argument("--videos", type=int, default=40)
    p.add_argument("--port", type=int, default=8765)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        queries = build_collection(Path(tmp) / "edge", args.videos)
        proc = start_server(Path(tmp) / "edge", args.port)
        url = f"http://127.0.0.1:{args.port}"
        try:
            asyncio.run(level(url, 4, min(2.0, args.seconds), queries))  # warm-up: sessions, caches
            rows = []
            for clients in LEVELS:
                before = rss_mib(proc.pid)
                r = asyncio.run(level(url, clients, args.seconds, queries))
                after = rss_mib(proc.pid)
                rows.append([clients, r["requests"], f"{r['rps']:.1f}", f"{r['p50']:.1f}", f"{r['p99']:.1f}", r["errors"],
                             f"{before:.0f} -> {after:.0f}"])
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
    print(f"\nvtr-qdrant serve, Qdrant Edge, {args.videos} videos, POST /search limit 10, {args.seconds:g} s per level, "
          f"{os.cpu_count()} CPUs shared by client and server")
    print_table(["clients", "requests", "req/s", "p50 ms", "p99 ms", "errors", "server RSS MiB"], rows)


if __name__ == "__main__":
    main()

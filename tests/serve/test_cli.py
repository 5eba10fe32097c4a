"""``vtr-qdrant serve`` exactly as the interface names it: a real process on a loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from served_world import ServedWorld, free_port, served  # noqa: F401

from vtr_qdrant.cli.main import build_parser, main


def test_the_flags_of_the_interface() -> None:
    args = build_parser().parse_args([
        "serve", "--collection", "demo", "--url", "http://localhost:6333", "--bundle", "synthetic-world/v3", "--host", "0.0.0.0",
        "--port", "9000", "--media-root", "a", "b", "--media-root", "c", "--api-key", "k", "--workers", "2",
    ])
    assert (args.collection, args.qdrant_url, args.bundle, args.host, args.port) == ("demo", "http://localhost:6333", "synthetic-world/v3", "0.0.0.0", 9000)
    assert args.media_root == ["a", "b", "c"] and args.api_key == "k" and args.workers == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--collection", "demo", "--edge-path", "x", "--url", "http://h"])


def test_workers_need_a_server(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--collection", "demo", "--edge-path", str(tmp_path), "--workers", "2"]) == 2
    assert "--workers > 1 needs a Qdrant server (--url)" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_serve_runs_and_stops(served: ServedWorld) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "vtr_qdrant.cli.main", "serve", "--collection", "demo", "--edge-path", str(served.edge),
           "--port", str(port), "--media-root", str(served.root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline, health = time.monotonic() + 60, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health is not None and health.json() == {"status": "ok", "collection": "demo", "videos": len(served.ids) + len(served.hostile)}
        hits = httpx.get(f"http://127.0.0.1:{port}/search", params={"q": served.world.videos[0].caption}).json()["hits"]
        assert hits and hits[0]["moment"]["end"] > hits[0]["moment"]["start"]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    log = err.decode()
    assert '"route": "/health"' in log and '"status": 200' in log  # the structured access log, one JSON per request


def test_a_missing_collection_stops_an_embedded_server(tmp_path) -> None:
    port = free_port()
    out = subprocess.run([sys.executable, "-m", "vtr_qdrant.cli.main", "serve", "--collection", "nope", "--edge-path", str(tmp_path),
                          "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "cannot serve collection 'nope'" in out.stderr


def test_worker_processes_build_their_app_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--workers N`` (a server only): each uvicorn worker rebuilds the app from ENV_VAR."""
    import json

    from fastapi.testclient import TestClient

    from vtr_qdrant.serve.runner import ENV_VAR, app_from_env

    url = f"http://127.0.0.1:{free_port()}"  # no server there: the worker starts and answers 503
    monkeypatch.setenv(ENV_VAR, json.dumps({"collection": "demo", "target": {"qdrant_path": None, "edge_path": None, "url": url},
                                            "bundle": None, "media_roots": [], "api_key": "k"}))
    with TestClient(app_from_env(), raise_server_exceptions=False) as client:
        assert client.get("/search?q=x").status_code == 401  # the key travelled too
        r = client.get("/health")
        assert r.status_code == 503 and r.json()["error"]["type"] == "backend_unavailable"


def test_local_mode_folder_serves_the_same_api(served: ServedWorld, tmp_path) -> None:
    """The default target (--qdrant-path, qdrant-client local mode) through the same handle."""
    import warnings

    from fastapi.testclient import TestClient
    from qdrant_client import QdrantClient

    from vtr_qdrant import VideoCollection
    from vtr_qdrant.serve.app import create_app
    from vtr_qdrant.serve.config import ServeConfig
    from vtr_qdrant.serve.runner import ServeOptions, Target, make_handle

    ids = served.ids[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = QdrantClient(path=str(tmp_path / "q"))
    try:
        vc = VideoCollection(client, "demo", "synthetic-world/v3")
        assert not vc.add_videos([str(served.path(v)) for v in ids], video_ids=ids, progress=False).failed
        expected = [h.video_id for h in vc.search(served.world.video(ids[1]).caption, limit=2)]
    finally:
        client.close()
    options = ServeOptions("demo", Target(qdrant_path=str(tmp_path / "q")), None, [str(served.root)])
    with TestClient(create_app(make_handle(options), ServeConfig.build("demo", [served.root])), raise_server_exceptions=False) as api:
        assert api.get("/health").json() == {"status": "ok", "collection": "demo", "videos": 2}
        hits = api.post("/search", json={"query": served.world.video(ids[1]).caption, "limit": 2}).json()["hits"]
        assert [h["video_id"] for h in hits] == expected
        assert api.get(f"/videos/{ids[0]}/media", headers={"Range": "bytes=0-15"}).content == served.path(ids[0]).read_bytes()[:16]
        assert api.get("/fields").json() == {"fields": {}}  # local mode keeps no payload indexes

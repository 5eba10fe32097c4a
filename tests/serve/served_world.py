"""The world the serve tests search: synthetic mp4 files under a media root, ingested into Qdrant Edge
through the real path (ffmpeg decode -> the project's synthetic-world/v3 model), plus hostile
entries whose stored paths lead out of the root.

Test modules import the fixtures from here (a ``conftest.py`` in this folder would shadow
``tests/conftest.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("imageio_ffmpeg")
pytest.importorskip("qdrant_edge")

from fastapi.testclient import TestClient  # noqa: E402

from vtr_qdrant import VideoCollection  # noqa: E402
from vtr_qdrant.serve.app import create_app  # noqa: E402
from vtr_qdrant.serve.config import ServeConfig  # noqa: E402
from vtr_qdrant.serve.runner import ServeOptions, Target, make_handle  # noqa: E402
from vtr_qdrant.store.edge import EdgeBackend  # noqa: E402
from vtr_qdrant.synthetic.captions import heldout_seed  # noqa: E402
from vtr_qdrant.synthetic.render import make_world  # noqa: E402
from vtr_qdrant.synthetic.world import World  # noqa: E402

COLLECTION = "demo"
BUNDLE = "synthetic-world/v3"
MARKER = b"VTR-SERVE-SECRET-2f9c"  # bytes only the files outside the media root contain


@dataclass
class ServedWorld:
    """Paths and expectations of the served collection."""

    root: Path  # the --media-root
    edge: Path  # the Qdrant Edge folder
    secret: Path  # a video file outside the root (with MARKER appended)
    world: World
    ids: list[str]
    hostile: dict[str, str] = field(default_factory=dict)  # video id -> the uri stored for it
    expected: dict[str, Any] = field(default_factory=dict)  # query -> the synchronous façade's hits

    def path(self, video_id: str) -> Path:
        return Path(self.world.path(video_id))


def _build(tmp: Path) -> ServedWorld:
    root, outside = tmp / "media", tmp / "outside"
    outside.mkdir(parents=True)
    world = make_world(heldout_seed(0), 4, root / "videos")
    ids = list(world.video_ids)
    secret = outside / "secret.mp4"
    secret.write_bytes(Path(world.path(ids[0])).read_bytes() + MARKER)
    (root / "videos" / "escape.mp4").symlink_to(secret)
    (root / "videos" / "alias.mp4").symlink_to(world.path(ids[1]))
    hostile = {
        "outside": str(secret),
        "dotdot": f"{root}/videos/../../outside/secret.mp4",
        "escape-link": str(root / "videos" / "escape.mp4"),
        "file-url": "file://" + str(secret),
        "remote": "http://127.0.0.1:9/clip.mp4",
        "inside-link": str(root / "videos" / "alias.mp4"),
    }
    backend = EdgeBackend(str(tmp / "edge"))
    try:
        vc = VideoCollection(backend, COLLECTION, BUNDLE, indexed_fields={"n_scenes": "integer"})
        report = vc.add_videos(
            [world.path(v) for v in ids], video_ids=ids, progress=False,
            metadata=[{"caption": world.video(v).caption, "n_scenes": len(world.video(v).scenes)} for v in ids],
        )
        assert not report.failed, report.summary()
        rng = np.random.default_rng(0)
        for vid, uri in hostile.items():  # random frames: they rank below the real videos
            frames = rng.standard_normal((12, vc.dim)).astype(np.float32)
            vc.upsert_embeddings(vid, frames, np.linspace(0.3, 8.0, 12), uri=uri, duration=world.video(ids[0]).duration,
                                 metadata={"caption": "hostile " + vid, "n_scenes": 0})
        served = ServedWorld(root, tmp / "edge", secret, world, ids, hostile)
        for q in (world.queries("scene")[0].text, world.videos[2].caption):
            served.expected[q] = vc.search(q, limit=5)
    finally:
        backend.close()
    return served


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> ServedWorld:
    """The served world, built once per session (~2 s)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _build(tmp_path_factory.mktemp("served"))


@contextmanager
def serving(served: ServedWorld, **config: Any) -> Iterator[TestClient]:
    """A TestClient on the Edge collection (the app opens and closes the Edge folder itself)."""
    api_key = config.pop("api_key", None)
    options = ServeOptions(COLLECTION, Target(edge_path=str(served.edge)), None, [str(served.root)], api_key)
    app = create_app(make_handle(options), ServeConfig.build(COLLECTION, [served.root], api_key, **config))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def api(served: ServedWorld) -> Iterator[TestClient]:
    """The app with default settings, for one test module."""
    with serving(served) as client:
        yield client


def assert_error(response: Any, status: int, type_: str | None = None) -> dict[str, Any]:
    """``response`` is a JSON error of ``status`` with exactly ``type`` and ``message``, no trace."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    assert body["error"]["message"] and "Traceback" not in response.text and 'File "' not in response.text
    if type_ is not None:
        assert body["error"]["type"] == type_, body
    return body["error"]


@contextmanager
def live_server(app: Any) -> Iterator[str]:
    """``app`` under a real uvicorn server on a free loopback port, in a thread; yields its base URL."""
    import threading
    import time

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_keep_alive=5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def edge_app(served: ServedWorld, **config: Any) -> Any:
    """The app on the Edge collection (it opens the folder at start-up and closes it at shutdown)."""
    options = ServeOptions(COLLECTION, Target(edge_path=str(served.edge)), None, [str(served.root)])
    return create_app(make_handle(options), ServeConfig.build(COLLECTION, [served.root], **config))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


__all__ = ["served", "api", "serving", "assert_error", "free_port", "live_server", "edge_app", "ServedWorld", "MARKER", "COLLECTION"]

"""No request reads a file outside the media roots, and no slow client stalls the others.

Every path parameter is attacked with plain, encoded, double-encoded and absolute traversals and
with a URL as the video id; stored videos whose paths lead out of the root (absolute, ``..``, a
symbolic link, a ``file://`` URI, a remote URL) are refused. A spy on ``os.open`` proves the
server never opened a file outside the root while answering.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pytest
from served_world import MARKER, ServedWorld, api, assert_error, free_port, served  # noqa: F401

from vtr_qdrant.serve.app import create_app
from vtr_qdrant.serve.config import ServeConfig
from vtr_qdrant.serve.handle import CollectionHandle


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path ``os.open`` is asked for while the test runs."""
    seen: list[str] = []
    real_open = os.open

    def spy(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    return seen


def _traversals(served: ServedWorld) -> list[str]:
    secret = str(served.secret)
    ids = [
        "../../outside/secret.mp4", "..%2F..%2Foutside%2Fsecret.mp4", "%2e%2e%2f%2e%2e%2foutside%2fsecret.mp4",
        "%252e%252e%252foutside%252fsecret.mp4", "..%252F..%252Fetc%252Fpasswd", quote(secret, safe=""),
        "%2Fetc%2Fpasswd", "%252Fetc%252Fpasswd", quote("file://" + secret, safe=""), "http:%2F%2F127.0.0.1:9%2Fclip.mp4",
        quote("http://127.0.0.1:9/clip.mp4", safe=""), "%2e%2e", "....//....//etc/passwd", "%00",
    ]
    return [f"/videos/{i}{tail}" for i in ids for tail in ("", "/media", "/thumbnail?t=1")]


def test_path_traversal_in_every_path_parameter(api, served: ServedWorld, opened: list[str]) -> None:
    for url in _traversals(served):
        r = api.get(url)
        assert r.status_code in (400, 404, 422), (url, r.status_code)
        assert_error(r, r.status_code)
        assert MARKER not in r.content and b"root:" not in r.content
    outside = str(served.secret.parent)
    assert not [p for p in opened if p.startswith(outside) or p.startswith("/etc")]


@pytest.mark.parametrize("vid", ["outside", "dotdot", "escape-link", "file-url", "remote"])
def test_stored_paths_leading_out_of_the_root_are_refused(api, served: ServedWorld, opened: list[str], vid: str) -> None:
    for tail in ("/media", "/thumbnail?t=1"):
        r = api.get(f"/videos/{vid}{tail}", headers={"Range": "bytes=0-"})
        assert_error(r, 404, "media_unavailable")
        assert MARKER not in r.content and str(served.secret) not in r.text
    assert not [p for p in opened if p.startswith(str(served.secret.parent))]


def test_a_link_inside_the_root_to_a_file_inside_it_is_served(api, served: ServedWorld) -> None:
    r = api.get("/videos/inside-link/media")
    assert r.status_code == 200 and r.content == served.path(served.ids[1]).read_bytes()


def test_without_media_roots_nothing_is_served(api, served: ServedWorld) -> None:
    state = api.app.state.serve
    config, state.config = state.config, ServeConfig.build("demo", [])  # the routes read it per request
    try:
        assert_error(api.get(f"/videos/{served.ids[0]}/media"), 404, "media_unavailable")
        assert_error(api.get(f"/videos/{served.ids[0]}/thumbnail"), 404, "media_unavailable")
    finally:
        state.config = config


def test_a_media_root_that_is_not_a_folder_is_a_config_error(tmp_path: Path) -> None:
    from vtr_qdrant.errors import ConfigError

    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        ServeConfig.build("demo", [tmp_path / "f"])
    with pytest.raises(ConfigError, match="--api-key is empty"):
        ServeConfig.build("demo", [], " ")


def test_503_while_the_vector_store_is_unreachable() -> None:
    from fastapi.testclient import TestClient

    from vtr_qdrant.serve.runner import ServeOptions, Target, make_handle

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    handle = make_handle(ServeOptions("demo", Target(url=url)))
    assert isinstance(handle, CollectionHandle) and not handle.required
    app = create_app(handle, ServeConfig.build("demo"))
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/").status_code == 200  # the page still loads
        for r in (client.get("/health"), client.post("/search", json={"query": "a red circle"}),
                  client.get("/videos/x/media"), client.get("/fields")):
            error = assert_error(r, 503, "backend_unavailable")
            assert "unreachable" in error["message"] and url not in error["message"]

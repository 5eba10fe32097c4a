"""The serve package's parts on their own: ranges, the error mapping, metrics text, thumbnails' single flight."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")

from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse  # noqa: E402

from vtr_qdrant.errors import ConfigError, InvalidInputError, StorageError  # noqa: E402
from vtr_qdrant.serve import thumbs as thumbs_module  # noqa: E402
from vtr_qdrant.serve.app import page_html  # noqa: E402
from vtr_qdrant.serve.media import parse_range, servable_path  # noqa: E402
from vtr_qdrant.serve.observe import Metrics  # noqa: E402
from vtr_qdrant.serve.problems import ApiError, as_api_error  # noqa: E402


@pytest.mark.parametrize(
    "header, expected",
    [(None, None), ("", None), ("bytes=0-0", (0, 0)), ("bytes=5-", (5, 99)), ("bytes=-1", (99, 99)), ("bytes=-500", (0, 99)),
     ("bytes=90-200", (90, 99)), ("bytes=9-3", None), ("items=0-5", None), ("bytes=0-1,4-5", None), ("bytes=-", None)],
)
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=150-160", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(ApiError) as e:
        parse_range(header, 100)
    assert e.value.status == 416 and e.value.headers == {"Content-Range": "bytes */100"}


def test_relative_stored_paths_resolve_from_the_working_directory(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "a.mp4").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    roots = (str(tmp_path / "root"),)
    assert servable_path("a", {"uri": "root/a.mp4"}, roots) == str(tmp_path / "root" / "a.mp4")
    for uri in ("root/../root2/a.mp4", "rootx/a.mp4", "root", "s3://bucket/a.mp4"):
        with pytest.raises(ApiError, match="has no file this server may serve"):
            servable_path("a", {"uri": uri}, roots)


def test_failures_map_to_statuses_without_internals() -> None:
    request = httpx.Request("GET", "http://qdrant:6333/collections/demo")
    cases = [
        (ResponseHandlingException(httpx.ConnectError("refused", request=request)), 503),
        (UnexpectedResponse(502, "Bad Gateway", b"", httpx.Headers()), 503),
        (UnexpectedResponse(404, "Not Found", b"", httpx.Headers()), 500),
        (StorageError("shard locked"), 503),
        (TimeoutError(), 503),
        (InvalidInputError("query is empty"), 400),
        (ConfigError("unknown aggregation 'x'"), 400),
        (RuntimeError("/secret/path exploded"), 500),
    ]
    for exc, status in cases:
        err = as_api_error(exc, where="test")
        assert err.status == status, exc
        assert "/secret/path" not in err.message and "qdrant:6333" not in err.message


def test_metrics_escape_labels_and_count_buckets() -> None:
    m = Metrics()
    m.observe("GET", 'a"b\\c\nd', 200, 0.003)
    m.observe("GET", 'a"b\\c\nd', 500, 20.0)
    text = m.render()
    assert 'route="a\\"b\\\\c\\nd"' in text
    assert 'vtr_http_request_duration_seconds_bucket{method="GET",route="a\\"b\\\\c\\nd",le="0.005"} 1' in text
    assert 'vtr_http_request_duration_seconds_bucket{method="GET",route="a\\"b\\\\c\\nd",le="+Inf"} 2' in text


def test_concurrent_requests_for_one_frame_run_ffmpeg_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    lock = threading.Lock()

    def fake(path: str, t: float, *, width: int, timeout_s: float, fd: int | None = None) -> bytes:
        with lock:
            calls.append(t)
        time.sleep(0.2)
        return b"\xff\xd8jpeg"

    monkeypatch.setattr(thumbs_module, "extract_jpeg", fake)

    async def run() -> list[bytes]:
        t = thumbs_module.Thumbnails(width=64, cache_bytes=1 << 20, timeout_s=5)
        first = await asyncio.gather(*(t.get("/v.mp4", "id1", 1.0) for _ in range(6)))
        again = await t.get("/v.mp4", "id1", 1.04)  # the same 0.1 s slot: cached
        other = await t.get("/v.mp4", "id2", 1.0)  # the file changed: made again
        return [*first, again, other]

    out = asyncio.run(run())
    assert out == [b"\xff\xd8jpeg"] * 8 and calls == [1.0, 1.0]


def test_the_page_is_self_contained() -> None:
    page = page_html()
    assert 'id="q"' in page and 'id="player"' in page and 'id="timeline"' in page
    for external in ("http://", "https://", 'src="//', "@import"):
        assert external not in page


def test_thumbnail_reads_the_checked_open_file_not_the_path(tmp_path: Path) -> None:
    """A file swapped for a link after the check: ffmpeg still reads the descriptor that was checked."""
    import os

    pytest.importorskip("imageio_ffmpeg")
    import video_factory as vf

    from vtr_qdrant.serve.thumbs import extract_jpeg

    path = vf.color_video(tmp_path / "clip.mp4", ("red", "blue"))
    fd = os.open(path, os.O_RDONLY)
    try:
        path.unlink()
        os.symlink("/etc/hostname", path)  # what the path points at now is not a video at all
        jpeg = extract_jpeg(str(path), 0.5, width=32, timeout_s=60, fd=fd)
        assert jpeg[:2] == b"\xff\xd8"  # a JPEG of the opened video
        with pytest.raises(Exception):  # noqa: B017 - through the path: not a video (any decode error)
            extract_jpeg(str(path), 0.5, width=32, timeout_s=60)
    finally:
        os.close(fd)

"""The HTTP API on an Edge collection of real synthetic videos: search, metadata, media ranges,
thumbnails, errors, request ids, the access log and the metrics."""

from __future__ import annotations

import io
import json
import logging
import re

import numpy as np
import pytest
from served_world import COLLECTION, ServedWorld, api, assert_error, served  # noqa: F401

from vtr_qdrant.synthetic.render import render_video_frames


def _query(served: ServedWorld) -> str:
    return next(iter(served.expected))


def test_health_counts_the_stored_videos(api, served: ServedWorld) -> None:
    r = api.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "collection": COLLECTION, "videos": len(served.ids) + len(served.hostile)}


@pytest.mark.parametrize("which", [0, 1])
def test_search_returns_what_the_library_returns(api, served: ServedWorld, which: int) -> None:
    query = list(served.expected)[which]
    expected = served.expected[query]
    r = api.post("/search", json={"query": query, "limit": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"hits", "took_ms"} and body["took_ms"] > 0
    got = body["hits"]
    assert [h["video_id"] for h in got] == [h.video_id for h in expected]
    for h, e in zip(got, expected):
        assert set(h) == {"video_id", "uri", "score", "moment", "payload"}
        assert h["score"] == pytest.approx(e.score, abs=1e-5)
        assert h["moment"] == pytest.approx({"start": e.moment.start, "end": e.moment.end, "peak": e.moment.peak}, abs=1e-6)
        assert h["uri"] == e.payload["uri"]
        assert h["payload"]["caption"] == e.payload["caption"] and h["payload"]["duration"] == e.payload["duration"]
        assert "timestamps" not in h["payload"] and "frames_digest" not in h["payload"]
    # the GET form, for links, answers the same
    r2 = api.get("/search", params={"q": query, "limit": 5})
    assert [h["video_id"] for h in r2.json()["hits"]] == [h["video_id"] for h in got]


def test_search_with_a_filter_on_an_indexed_field(api, served: ServedWorld) -> None:
    three = {v for v in served.ids if len(served.world.video(v).scenes) >= 3}
    flt = {"must": [{"key": "n_scenes", "range": {"gte": 3}}]}
    r = api.post("/search", json={"query": _query(served), "limit": 50, "filter": flt})
    assert r.status_code == 200, r.text
    assert {h["video_id"] for h in r.json()["hits"]} == three
    r = api.get("/search", params={"q": _query(served), "limit": 50, "filter": json.dumps(flt)})
    assert {h["video_id"] for h in r.json()["hits"]} == three
    assert api.get("/fields").json() == {"fields": {"n_scenes": "integer"}}


@pytest.mark.parametrize(
    "body, status, type_",
    [
        ({"query": ""}, 400, "invalid_query"),
        ({"query": "   "}, 400, "invalid_query"),
        ({"query": "x", "limit": 0}, 422, "validation_error"),
        ({"query": "x", "limit": 101}, 422, "validation_error"),
        ({"query": "x", "limit": "ten"}, 422, "validation_error"),
        ({"query": 3}, 422, "validation_error"),
        ({"query": "x", "filter": "category = 1"}, 422, "validation_error"),
        ({"query": "x", "filter": {"must": [{"key": "", "match": {"value": 1}}]}}, 400, "invalid_request"),
        ({"query": "x", "filter": {"must": [{"key": "n_scenes", "match": {"value": True}}]}}, 400, "invalid_request"),
        ({"query": "x", "filter": {"must": [{"nonsense": 1}]}}, 400, "invalid_request"),
        ({"query": "x", "aggregation": "no-such-rule"}, 400, "invalid_request"),
        ({"query": "x", "limits": 3}, 422, "validation_error"),
        ({"query": "x" * 1001}, 422, "validation_error"),
    ],
)
def test_bad_searches_are_json_errors(api, body: dict, status: int, type_: str) -> None:
    assert_error(api.post("/search", json=body), status, type_)


def test_malformed_bodies_and_params(api) -> None:
    assert_error(api.post("/search", content=b"{not json", headers={"content-type": "application/json"}), 400, "invalid_json")
    assert_error(api.get("/search", params={"q": "x", "filter": "{oops"}), 400, "invalid_filter")
    assert_error(api.get("/search", params={"q": ""}), 400, "invalid_query")
    assert_error(api.get("/search"), 422, "validation_error")
    assert_error(api.get("/no/such/route"), 404, "not_found")
    assert_error(api.delete("/search"), 405, "method_not_allowed")


def test_oversized_bodies_are_refused_before_any_work(api) -> None:
    huge = json.dumps({"query": "x" * (2 << 20)}).encode()
    assert_error(api.post("/search", content=huge, headers={"content-type": "application/json"}), 413, "payload_too_large")

    def chunks():  # no Content-Length: counted while it streams
        for _ in range(200):
            yield b" " * 4096

    assert_error(api.post("/search", content=chunks(), headers={"content-type": "application/json"}), 413, "payload_too_large")


def test_video_metadata(api, served: ServedWorld) -> None:
    vid = served.ids[0]
    r = api.get(f"/videos/{vid}")
    assert r.status_code == 200
    body = r.json()
    assert body["video_id"] == vid and body["uri"] == str(served.path(vid))
    assert body["duration"] == pytest.approx(served.world.video(vid).duration)
    assert body["payload"] == {"caption": served.world.video(vid).caption, "n_scenes": len(served.world.video(vid).scenes)}
    assert body["frames"] == 12 and body["segments"] == 1
    assert_error(api.get("/videos/no-such-video"), 404, "video_not_found")


def test_media_whole_and_by_ranges(api, served: ServedWorld) -> None:
    vid = served.ids[1]
    data = served.path(vid).read_bytes()
    n = len(data)
    r = api.get(f"/videos/{vid}/media")
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == "video/mp4" and r.headers["accept-ranges"] == "bytes"
    for header, (a, b) in {"bytes=10-99": (10, 99), "bytes=100-": (100, n - 1), "bytes=-50": (n - 50, n - 1),
                           f"bytes=0-{n + 500}": (0, n - 1)}.items():
        r = api.get(f"/videos/{vid}/media", headers={"Range": header})
        assert r.status_code == 206, header
        assert r.headers["content-range"] == f"bytes {a}-{b}/{n}"
        assert r.content == data[a : b + 1] and int(r.headers["content-length"]) == b - a + 1
    bad = api.get(f"/videos/{vid}/media", headers={"Range": f"bytes={n}-"})
    assert_error(bad, 416, "range_not_satisfiable")
    assert bad.headers["content-range"] == f"bytes */{n}"
    # a range unit or form this server does not handle: the whole file (RFC 9110 allows ignoring Range)
    assert api.get(f"/videos/{vid}/media", headers={"Range": "bytes=0-1,5-9"}).content == data
    stale = api.get(f"/videos/{vid}/media", headers={"Range": "bytes=0-9", "If-Range": '"old"'})
    assert stale.status_code == 200 and stale.content == data
    head = api.head(f"/videos/{vid}/media", headers={"Range": "bytes=0-9"})
    assert head.status_code == 206 and head.content == b"" and head.headers["content-length"] == "10"


def test_thumbnail_is_the_frame_at_t_and_cached(api, served: ServedWorld) -> None:
    from PIL import Image

    vid = served.ids[0]
    video = served.world.video(vid)
    thumbs = api.app.state.serve.thumbs
    for t in (0.5, video.scenes[-1].start + 0.3):
        r = api.get(f"/videos/{vid}/thumbnail", params={"t": t})
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:3] == b"\xff\xd8\xff"
        img = Image.open(io.BytesIO(r.content)).convert("RGB")
        assert img.width == 320
        # the independent numpy renderer draws the same frame
        expected, _ = render_video_frames(video, 64, [t])
        got = np.asarray(img.resize((64, 64)), dtype=np.float32)
        assert np.abs(got - expected[0].astype(np.float32)).mean() < 25
    misses = thumbs.misses
    again = api.get(f"/videos/{vid}/thumbnail", params={"t": 0.5})
    assert again.content == api.get(f"/videos/{vid}/thumbnail", params={"t": 0.52}).content
    assert thumbs.misses == misses and thumbs.hits >= 2
    past_end = api.get(f"/videos/{vid}/thumbnail", params={"t": 9999})
    assert past_end.status_code == 200 and past_end.content[:2] == b"\xff\xd8"
    for t in ("-1", "nan", "inf", "../../etc/passwd"):
        assert_error(api.get(f"/videos/{vid}/thumbnail", params={"t": t}), 422, "validation_error")


def test_request_ids_and_the_access_log(api, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="vtr_qdrant.serve.access"):
        r = api.get("/health", headers={"X-Request-ID": "abc-123"})
        hostile = api.get("/health", headers={"X-Request-ID": "x" * 65})
    assert r.headers["x-request-id"] == "abc-123"
    assert re.fullmatch(r"[0-9a-f]{32}", hostile.headers["x-request-id"])
    records = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "vtr_qdrant.serve.access"]
    first = next(rec for rec in records if rec["request_id"] == "abc-123")
    assert first["method"] == "GET" and first["route"] == "/health" and first["status"] == 200 and first["duration_ms"] > 0
    assert any(rec["request_id"] == hostile.headers["x-request-id"] for rec in records)


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_metrics_in_prometheus_text_format(api, served: ServedWorld) -> None:
    before = _samples(api.get("/metrics").text)
    key = 'vtr_http_requests_total{method="POST",route="/search",status="200"}'
    for _ in range(3):
        api.post("/search", json={"query": _query(served), "limit": 2})
    api.get("/videos/nope")
    r = api.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = _samples(r.text)
    assert after[key] - before.get(key, 0) == 3
    assert after['vtr_http_requests_total{method="GET",route="/videos/{video_id}",status="404"}'] >= 1
    labels = 'method="POST",route="/search"'
    count = after[f"vtr_http_request_duration_seconds_count{{{labels}}}"]
    assert after[f'vtr_http_request_duration_seconds_bucket{{{labels},le="+Inf"}}'] == count >= 3
    buckets = [v for k, v in after.items() if k.startswith(f"vtr_http_request_duration_seconds_bucket{{{labels}")]
    assert buckets == sorted(buckets)  # cumulative
    assert "# TYPE vtr_http_request_duration_seconds histogram" in r.text

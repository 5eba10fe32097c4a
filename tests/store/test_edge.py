"""Qdrant Edge back end: congruence with qdrant-client local mode, filter translation, persistence.

The congruence idea comes from qdrant-client's own test suite: the same scenario runs on two back
ends (here ``QdrantClientBackend(QdrantClient(":memory:"))`` and ``EdgeBackend(tmp_path)``, both
searching exactly) and every observable result must agree.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import random_frames
from qdrant_client import QdrantClient, models

pytest.importorskip("qdrant_edge")

from vtr_qdrant.collection import VideoCollection  # noqa: E402
from vtr_qdrant.errors import CollectionMismatchError, ConfigError, StorageError  # noqa: E402
from vtr_qdrant.search.hits import VideoHit  # noqa: E402
from vtr_qdrant.store.edge import EdgeBackend, translate_filter  # noqa: E402
from vtr_qdrant.store.plan import StageOneQuery  # noqa: E402
from vtr_qdrant.store.points import Key, point_id  # noqa: E402
from vtr_qdrant.store.qdrant import QdrantClientBackend  # noqa: E402
from vtr_qdrant.video.sampling import SamplingConfig  # noqa: E402

pytestmark = [pytest.mark.edge, pytest.mark.filterwarnings("ignore:Local mode performs exact")]

REPO = Path(__file__).resolve().parents[2]
LONG = SamplingConfig(fps=1.0, segment_seconds=10)
F = models.FieldCondition


def _mv(key: str, value: Any) -> models.FieldCondition:
    return F(key=key, match=models.MatchValue(value=value))


@pytest.fixture
def local() -> Iterator[QdrantClientBackend]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = QdrantClient(":memory:")
    yield QdrantClientBackend(client)
    client.close()


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[EdgeBackend]:
    backend = EdgeBackend(tmp_path / "edge", max_search_threads=1)
    yield backend
    backend.close()


# ------------------------------------------------------------------------------------ scenario


def _meta(i: int) -> dict[str, Any]:
    return {
        "cat": "abc"[i % 3],
        "n": i,
        "x": i * 0.25,
        "tags": [[], ["red"], ["red", "blue"], ["blue"]][i % 4],
        "maybe": None if i % 5 == 0 else i,
        "when": f"2024-01-{i % 28 + 1:02d}T00:00:00Z",
        "parts": [{"k": i % 3, "w": "x"}, {"k": (i + 1) % 3, "w": "y"}],
        "loc": {"lon": 10.0 + i * 0.1, "lat": 50.0},
        "word": ["fox", "dog", "cat", "owl"][i % 4],
        **({"opt": "y"} if i % 2 else {}),
    }


def _fill(vc: VideoCollection, seed: int = 0, n: int = 24) -> dict[str, np.ndarray]:
    """Short videos (3-12 frames) and, every 4th, a long one (25-44 s at 1 fps: 3-5 segments)."""
    rng = np.random.default_rng(seed)
    videos = {}
    for i in range(n):
        if i % 4 == 3:
            nf = 25 + (i * 7) % 20
            ts = np.arange(nf) + 0.5
        else:
            nf = 3 + i % 10
            ts = np.arange(nf) * 0.75
        f = random_frames(rng, nf)
        videos[f"v{i}"] = f
        vc.upsert_embeddings(
            f"v{i}", f, ts, metadata=_meta(i), uri=f"file:///v{i}.mp4", duration=float(ts[-1] + 0.5)
        )
    return videos


def _pair(
    local: QdrantClientBackend, edge: EdgeBackend, bundle: Any, name: str = "videos", **kwargs: Any
) -> tuple[VideoCollection, VideoCollection]:
    kwargs.setdefault("indexed_fields", {"cat": "keyword", "n": "integer"})
    return (
        VideoCollection(local, name, bundle, exact=True, **kwargs),
        VideoCollection(edge, name, bundle, exact=True, **kwargs),
    )


def _strip(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != Key.INGESTED_AT}  # written per upsert call


def assert_same_hits(a: list[VideoHit], b: list[VideoHit]) -> None:
    assert [h.video_id for h in a] == [h.video_id for h in b]
    for x, y in zip(a, b):
        assert x.point_id == y.point_id and x.segment_index == y.segment_index
        assert x.score == pytest.approx(y.score, abs=1e-5)
        assert x.stage1_score == pytest.approx(y.stage1_score, abs=1e-5)
        assert (x.moment.start, x.moment.end, x.moment.peak) == pytest.approx(
            (y.moment.start, y.moment.end, y.moment.peak)
        )
        assert _strip(x.payload) == _strip(y.payload)


FILTERS: dict[str, models.Filter] = {
    "cat=a": models.Filter(must=[_mv("cat", "a")]),
    "n<10 and not cat=b": models.Filter(
        must=[F(key="n", range=models.Range(lt=10))], must_not=[_mv("cat", "b")]
    ),
    "red tag or n>=20": models.Filter(should=[_mv("tags", "red"), F(key="n", range=models.Range(gte=20))]),
}


def test_congruent_search_counts_and_reads(local, edge, test_bundle) -> None:  # type: ignore[no-untyped-def]
    lc, ec = _pair(local, edge, test_bundle, sampling=LONG)
    videos = _fill(lc)
    _fill(ec)
    assert lc.count() == ec.count() == 24
    assert lc.count_points() == ec.count_points() > 24  # long videos are segmented
    rng = np.random.default_rng(7)
    queries: list[Any] = [videos["v7"][20], videos["v2"][1], *random_frames(rng, 3), "a red circle"]
    for q in queries:
        for rescore in (False, True):
            assert_same_hits(lc.search(q, limit=10, rescore=rescore), ec.search(q, limit=10, rescore=rescore))
            for name, flt in FILTERS.items():
                a = lc.search(q, limit=24, query_filter=flt, rescore=rescore, candidates=50)
                b = ec.search(q, limit=24, query_filter=flt, rescore=rescore, candidates=50)
                assert a, name
                assert_same_hits(a, b)
    # a long video is found at the right segment on both
    hits = ec.search(videos["v7"][20], limit=3, aggregation="max")
    assert (
        hits[0].video_id == "v7"
        and hits[0].segment_index == 2
        and hits[0].score == pytest.approx(1.0, abs=1e-5)
    )
    # counts with filters (videos, not points)
    for flt in FILTERS.values():
        assert lc.count(flt) == ec.count(flt)
    # stage-1 candidates with their frame matrices, batched
    stage1 = [StageOneQuery(vector=np.asarray(q, np.float32), limit=15, exact=True) for q in queries[:4]]
    for ra, rb in zip(local.query("videos", stage1), edge.query("videos", stage1)):
        assert [c.id for c in ra] == [c.id for c in rb]
        for ca, cb in zip(ra, rb):
            assert ca.score == pytest.approx(cb.score, abs=1e-5)
            np.testing.assert_allclose(ca.frames, cb.frames, atol=1e-6)  # type: ignore[arg-type]
    # search_batch
    for a, b in zip(lc.search_batch(queries, limit=5), ec.search_batch(queries, limit=5)):
        assert_same_hits(a, b)
    # get: segments concatenated in time order
    for vid in ("v3", "v4"):
        ga, gb = lc.get(vid), ec.get(vid)
        assert ga is not None and gb is not None and ga.point_ids == gb.point_ids
        np.testing.assert_allclose(ga.frames, gb.frames, atol=1e-6)
        np.testing.assert_allclose(gb.frames, videos[vid], atol=1e-6)
        np.testing.assert_array_equal(ga.timestamps, gb.timestamps)
        assert _strip(ga.payload) == _strip(gb.payload)
    assert lc.get("nope") is None and ec.get("nope") is None


def test_congruent_writes_deletes_and_reupserts(local, edge, test_bundle) -> None:  # type: ignore[no-untyped-def]
    lc, ec = _pair(local, edge, test_bundle, sampling=LONG)
    videos = _fill(lc, n=12)
    _fill(ec, n=12)
    # idempotent re-upsert of everything
    _fill(lc, n=12)
    _fill(ec, n=12)
    assert (lc.count(), lc.count_points()) == (ec.count(), ec.count_points()) == (12, 21)
    # a long video re-ingested shorter loses its stale segments on both
    for vc in (lc, ec):
        ids = vc.upsert_embeddings("v3", videos["v3"][:12], np.arange(12) + 0.5)
        assert ids == [point_id("v3", i, vc.get("v3").payload[Key.VERSION]) for i in range(2)]  # type: ignore[union-attr]
    assert lc.count_points() == ec.count_points() == 20
    assert lc.get("v3").point_ids == ec.get("v3").point_ids  # type: ignore[union-attr]
    # deletes
    assert lc.delete("v7") == ec.delete("v7") == 4
    assert lc.delete("v7") == ec.delete("v7") == 0
    assert lc.delete("v0") == ec.delete("v0") == 1
    assert (lc.count(), lc.count_points()) == (ec.count(), ec.count_points()) == (10, 15)
    q = videos["v7"][0]
    a, b = lc.search(q, limit=12, rescore=True), ec.search(q, limit=12, rescore=True)
    assert "v7" not in {h.video_id for h in b}
    assert_same_hits(a, b)
    assert_same_hits(lc.search(q, limit=12), ec.search(q, limit=12))
    # optimising (builds HNSW where the segment is large enough) keeps exact results unchanged
    edge.optimize("videos")
    assert_same_hits(lc.search(q, limit=12), ec.search(q, limit=12))


def test_reopen_from_disk(tmp_path: Path, local, test_bundle, other_bundle) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "edge"
    first = EdgeBackend(root, max_search_threads=1)
    lc, ec = _pair(local, first, test_bundle, sampling=LONG)
    videos = _fill(lc, n=8)
    _fill(ec, n=8)
    first.close()
    again = EdgeBackend(root, max_search_threads=1)
    assert again.collection_exists("videos") and not again.collection_exists("other")
    ec2 = VideoCollection(again, "videos", test_bundle, exact=True)
    assert ec2.sampling == LONG and (ec2.count(), ec2.count_points()) == (lc.count(), lc.count_points())
    for rescore in (False, True):
        assert_same_hits(
            lc.search(videos["v5"][2], limit=8, rescore=rescore),
            ec2.search(videos["v5"][2], limit=8, rescore=rescore),
        )
    with pytest.raises(CollectionMismatchError, match="fingerprint"):
        VideoCollection(again, "videos", other_bundle)
    with pytest.raises(CollectionMismatchError, match="sampling"):
        VideoCollection(again, "videos", test_bundle, sampling=SamplingConfig())
    with pytest.raises(CollectionMismatchError, match="dimension 32"):
        VideoCollection(again, "videos", dim=64)
    # one handle per shard: a second back end on the same folder is refused with a clear error
    third = EdgeBackend(root)
    with pytest.raises(StorageError, match="already open"):
        third.count("videos")
    again.close()
    assert third.count("videos") == lc.count_points()
    third.close()
    assert (root / "videos" / "collection.json").is_file()


def test_writes_survive_a_crash_without_close(tmp_path: Path) -> None:
    """Points upserted before the process dies (no flush, no close) are there after re-opening."""
    root = tmp_path / "edge"
    code = textwrap.dedent(
        f"""
        import os, numpy as np
        from vtr_qdrant.collection import VideoCollection
        from vtr_qdrant.store.edge import EdgeBackend
        vc = VideoCollection(EdgeBackend({str(root)!r}), "crash", dim=8)
        rng = np.random.default_rng(0)
        for i in range(5):
            vc.upsert_embeddings(f"v{{i}}", rng.standard_normal((3, 8)), np.arange(3.0))
        vc.delete("v4")
        os._exit(0)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)
    backend = EdgeBackend(root)
    vc = VideoCollection(backend, "crash", dim=8, create=False)
    assert vc.count() == 4 and vc.get("v4") is None and vc.get("v1") is not None
    backend.close()


def test_import_is_lazy() -> None:
    code = (
        "import sys, vtr_qdrant, vtr_qdrant.store.edge\n"
        "assert 'qdrant_edge' not in sys.modules, 'imported eagerly'\n"
        "vtr_qdrant.store.edge.translate_filter(None)\n"
        "assert 'qdrant_edge' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


def test_backend_errors(edge: EdgeBackend) -> None:
    with pytest.raises(ConfigError, match="folder name"):
        edge.collection_exists("../escape")
    with pytest.raises(ConfigError, match="does not exist"):
        edge.count("missing")
    with pytest.raises(ConfigError, match="does not exist"):
        VideoCollection(edge, "missing", dim=8, create=False)
    vc = VideoCollection(edge, "c", dim=8)
    with pytest.raises(ConfigError, match="already exists"):
        edge.create_collection("c", dim=8, metadata={})
    with pytest.raises(ConfigError, match="payload index schema"):
        edge.create_payload_index("c", "f", "nonsense")
    with pytest.raises(ConfigError, match="needs a filter"):
        edge.delete("c", None)  # type: ignore[arg-type]
    assert vc.count_points() == 0
    assert edge.delete_collection("c") and not edge.collection_exists("c") and not edge.delete_collection("c")
    with pytest.raises(ConfigError, match="hnsw_ef"):
        EdgeBackend(edge.path, hnsw_ef=0)


# ---------------------------------------------------------------------------- filter translation

N_FILTER = 30

GEO_BOX = models.GeoBoundingBox(
    top_left=models.GeoPoint(lon=10.45, lat=50.5), bottom_right=models.GeoPoint(lon=11.05, lat=49.5)
)
GEO_POLY = models.GeoPolygon(
    exterior=models.GeoLineString(
        points=[
            models.GeoPoint(lon=lo, lat=la)
            for lo, la in [(9.9, 49), (10.95, 49), (10.95, 51), (9.9, 51), (9.9, 49)]
        ]
    ),
    interiors=[
        models.GeoLineString(
            points=[
                models.GeoPoint(lon=lo, lat=la)
                for lo, la in [(10.25, 49.5), (10.55, 49.5), (10.55, 50.5), (10.25, 50.5), (10.25, 49.5)]
            ]
        )
    ],
)


def _hav_km(lon: float, lat: float, lon0: float, lat0: float) -> float:
    p1, p2, dl = np.radians(lat), np.radians(lat0), np.radians(lon - lon0)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return float(6371.0088 * 2 * np.arcsin(np.sqrt(a)))


# (filter, predicate on the metadata of video i) — the predicate is the reference, independent of both engines
def _pid(vc: VideoCollection, video_id: str) -> str:
    got = vc.get(video_id)
    assert got is not None
    return got.point_ids[0]


FILTER_TABLE: list[tuple[str, models.Filter | Callable[[VideoCollection], models.Filter], Callable[[dict[str, Any]], bool]]] = [
    ("match keyword", models.Filter(must=[_mv("cat", "b")]), lambda m: m["cat"] == "b"),
    ("match int", models.Filter(must=[_mv("n", 7)]), lambda m: m["n"] == 7),
    ("match in array", models.Filter(must=[_mv("tags", "blue")]), lambda m: "blue" in m["tags"]),
    (
        "match any str",
        models.Filter(must=[F(key="cat", match=models.MatchAny(any=["a", "c"]))]),
        lambda m: m["cat"] in "ac",
    ),
    (
        "match any int",
        models.Filter(must=[F(key="n", match=models.MatchAny(any=[1, 2, 29, 99]))]),
        lambda m: m["n"] in (1, 2, 29),
    ),
    (
        "match except",
        models.Filter(must=[F(key="cat", match=models.MatchExcept(**{"except": ["a"]}))]),
        lambda m: m["cat"] != "a",
    ),
    (
        "match except int",
        models.Filter(must=[F(key="n", match=models.MatchExcept(**{"except": [0, 1, 2]}))]),
        lambda m: m["n"] > 2,
    ),
    (
        "match text",
        models.Filter(must=[F(key="word", match=models.MatchText(text="owl"))]),
        lambda m: m["word"] == "owl",
    ),
    (
        "range int",
        models.Filter(must=[F(key="n", range=models.Range(gt=3, lte=9))]),
        lambda m: 3 < m["n"] <= 9,
    ),
    (
        "range float",
        models.Filter(must=[F(key="x", range=models.Range(gte=1.0, lt=2.5))]),
        lambda m: 1.0 <= m["x"] < 2.5,
    ),
    (
        "datetime range",
        models.Filter(
            must=[
                F(
                    key="when",
                    range=models.DatetimeRange(gte="2024-01-05T00:00:00Z", lt="2024-01-10T00:00:00Z"),
                )
            ]
        ),
        lambda m: "2024-01-05" <= m["when"][:10] < "2024-01-10",
    ),
    (
        "values count",
        models.Filter(must=[F(key="tags", values_count=models.ValuesCount(gte=2))]),
        lambda m: len(m["tags"]) >= 2,
    ),
    (
        "is_empty",
        models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key="tags"))]),
        lambda m: not m["tags"],
    ),
    (
        "is_empty missing",
        models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key="opt"))]),
        lambda m: "opt" not in m,
    ),
    (
        "is_null",
        models.Filter(must=[models.IsNullCondition(is_null=models.PayloadField(key="maybe"))]),
        lambda m: m["maybe"] is None,
    ),
    (
        "not is_null",
        models.Filter(must_not=[models.IsNullCondition(is_null=models.PayloadField(key="maybe"))]),
        lambda m: m["maybe"] is not None,
    ),
    (
        "has_id",
        lambda vc: models.Filter(  # point ids derive from each video's version token: look them up
            must=[models.HasIdCondition(has_id=[_pid(vc, "v3"), _pid(vc, "v11"), point_id("nope")])]
        ),
        lambda m: m["n"] in (3, 11),
    ),
    (
        "must_not has_id",
        lambda vc: models.Filter(must_not=[models.HasIdCondition(has_id=[_pid(vc, "v3")])]),
        lambda m: m["n"] != 3,
    ),
    (
        "should",
        models.Filter(should=[_mv("n", 1), _mv("n", 4), _mv("cat", "c")]),
        lambda m: m["n"] in (1, 4) or m["cat"] == "c",
    ),
    (
        "min_should",
        models.Filter(
            min_should=models.MinShould(
                conditions=[_mv("cat", "a"), _mv("tags", "red"), F(key="n", range=models.Range(lt=12))],
                min_count=2,
            )
        ),
        lambda m: (m["cat"] == "a") + ("red" in m["tags"]) + (m["n"] < 12) >= 2,
    ),
    (
        "nested filters",
        models.Filter(
            must=[models.Filter(should=[_mv("cat", "a"), _mv("cat", "b")])],
            must_not=[models.Filter(must=[_mv("tags", "red"), F(key="n", range=models.Range(gt=10))])],
        ),
        lambda m: m["cat"] in "ab" and not ("red" in m["tags"] and m["n"] > 10),
    ),
    ("single condition, not a list", models.Filter(must=_mv("cat", "c")), lambda m: m["cat"] == "c"),  # type: ignore[arg-type]
    (
        "nested condition",
        models.Filter(
            must=[
                models.NestedCondition(
                    nested=models.Nested(key="parts", filter=models.Filter(must=[_mv("k", 2), _mv("w", "x")]))
                )
            ]
        ),
        lambda m: m["n"] % 3 == 2,
    ),
    (
        "array of objects path",
        models.Filter(must=[_mv("parts[].k", 0)]),
        lambda m: 0 in (m["n"] % 3, (m["n"] + 1) % 3),
    ),
    (
        "geo bbox",
        models.Filter(must=[F(key="loc", geo_bounding_box=GEO_BOX)]),
        lambda m: 10.45 <= m["loc"]["lon"] <= 11.05,
    ),
    (
        "geo radius",
        models.Filter(
            must=[
                F(
                    key="loc",
                    geo_radius=models.GeoRadius(center=models.GeoPoint(lon=11.0, lat=50.0), radius=30_000.0),
                )
            ]
        ),
        lambda m: _hav_km(m["loc"]["lon"], 50.0, 11.0, 50.0) <= 30.0,
    ),
    (
        "geo polygon with hole",
        models.Filter(must=[F(key="loc", geo_polygon=GEO_POLY)]),
        lambda m: m["loc"]["lon"] < 10.95 and not 10.25 < m["loc"]["lon"] < 10.55,
    ),
    ("has vector", models.Filter(must=[models.HasVectorCondition(has_vector="pooled")]), lambda m: True),
    ("nothing", models.Filter(must=[_mv("cat", "zzz")]), lambda m: False),
    ("empty filter", models.Filter(), lambda m: True),
]


@pytest.fixture
def filter_pair(
    local: QdrantClientBackend, edge: EdgeBackend, test_bundle: Any
) -> tuple[VideoCollection, VideoCollection]:
    pair = _pair(
        local,
        edge,
        test_bundle,
        name="filters",
        indexed_fields={"cat": "keyword", "n": "integer", "x": "float", "loc": "geo"},
    )
    for vc in pair:
        rng = np.random.default_rng(3)
        for i in range(N_FILTER):
            vc.upsert_embeddings(f"v{i}", random_frames(rng, 3), np.arange(3.0), metadata=_meta(i))
    return pair


def test_filter_translation_table(filter_pair: tuple[VideoCollection, VideoCollection]) -> None:
    lc, ec = filter_pair
    q = np.ones(32, np.float32)
    for label, table_flt, pred in FILTER_TABLE:
        flt = table_flt(lc) if callable(table_flt) else table_flt
        expected = sorted(f"v{i}" for i in range(N_FILTER) if pred(_meta(i)))
        got_local, got_edge = lc.count(flt), ec.count(flt)
        assert (got_local, got_edge) == (len(expected), len(expected)), label
        hits_edge = ec.search(q, limit=N_FILTER, query_filter=flt)
        assert sorted(h.video_id for h in hits_edge) == expected, label
        assert [h.video_id for h in hits_edge] == [
            h.video_id for h in lc.search(q, limit=N_FILTER, query_filter=flt)
        ], label
        rescored = ec.search(q, limit=N_FILTER, query_filter=flt, rescore=True, candidates=N_FILTER)
        assert sorted(h.video_id for h in rescored) == expected, label


def test_translate_filter_structure() -> None:
    import qdrant_edge as qe

    assert translate_filter(None) is None
    out = translate_filter(
        models.Filter(
            must=[_mv("cat", "a"), F(key="x", range=models.Range(gte=1.0))],
            should=[models.HasIdCondition(has_id=[point_id("v1"), 5])],
            must_not=[models.Filter(must=[models.IsNullCondition(is_null=models.PayloadField(key="maybe"))])],
        )
    )
    assert isinstance(out, qe.Filter)
    assert (
        isinstance(out.must[0], qe.FieldCondition)
        and out.must[0].key == "cat"
        and out.must[0].match.value == "a"
    )
    assert out.must[1].range.gte == 1.0 and out.must[1].range.lt is None
    assert isinstance(out.should[0], qe.HasIdCondition)
    assert {str(i) for i in out.should[0].point_ids} == {point_id("v1"), "5"}
    inner = out.must_not[0]
    assert (
        isinstance(inner, qe.Filter)
        and isinstance(inner.must[0], qe.IsNullCondition)
        and inner.must[0].key == "maybe"
    )


@pytest.mark.parametrize(
    ("flt", "match"),
    [
        (models.Filter(must=[_mv("flag", True)]), "boolean"),
        (models.Filter(must=[models.HasIdCondition(has_id=["not-a-uuid"])]), "HasIdCondition"),
        (models.Filter(must=[F(key="x")]), "has no condition"),
        ({"must": []}, "must be a qdrant_client.models.Filter"),
    ],
)
def test_unsupported_filters_raise(flt: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        translate_filter(flt)

"""The frame store: frames equal to what Qdrant stores, stale entries
detected after a re-ingest, torn writes and concurrent processes, and the search path using it."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import random_frames

from vtr_qdrant import VideoCollection
from vtr_qdrant.errors import ConfigError
from vtr_qdrant.store.frame_store import INDEX_FILE, FrameStore, frames_version

F16 = 1e-6  # float32 rows: equal to what Qdrant returns (to its own re-normalisation)


def test_put_get_versions_and_reopen(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    fs = FrameStore(tmp_path / "fs", 32)
    a, b = random_frames(rng, 5), random_frames(rng, 3)
    fs.put_many([("00000000-0000-0000-0000-000000000001", "v1", a), ("7", "v1", b)])
    got = fs.get_many([("00000000-0000-0000-0000-000000000001", "v1"), ("7", "v1"), ("7", "v2"), ("8", "v1")])
    assert set(got) == {"00000000-0000-0000-0000-000000000001", "7"}  # another version or an unknown id: misses
    np.testing.assert_allclose(got["7"], b, atol=F16)
    assert got["7"].dtype == np.float32 and got["7"].shape == (3, 32)
    fs.put_many([("7", "v2", a)])  # the point's frames changed: the newest entry wins
    assert "7" not in FrameStore(tmp_path / "fs", 32).get_many([("7", "v1")])
    np.testing.assert_allclose(FrameStore(tmp_path / "fs", 32).get_many([("7", "v2")])["7"], a, atol=F16)
    with pytest.raises(ConfigError, match="holds 32-d frames"):
        FrameStore(tmp_path / "fs", 64)


def test_torn_index_record_is_ignored_and_cut(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    fs = FrameStore(tmp_path / "fs", 32)
    fs.put_many([("1", "v", random_frames(rng, 4))])
    with open(tmp_path / "fs" / INDEX_FILE, "ab") as f:
        f.write(b"\x01\x02\x03")  # a crash in the middle of a record
    again = FrameStore(tmp_path / "fs", 32)
    assert set(again.get_many([("1", "v")])) == {"1"}
    again.put_many([("2", "v", random_frames(rng, 2))])
    assert set(FrameStore(tmp_path / "fs", 32).get_many([("1", "v"), ("2", "v")])) == {"1", "2"}


def test_other_process_appends_are_seen_and_clear_resets(tmp_path: Path) -> None:
    fs = FrameStore(tmp_path / "fs", 32)
    fs.put_many([("1", "v", np.ones((2, 32), np.float32) / np.sqrt(32))])
    assert len(fs) == 1
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[2]); from vtr_qdrant.store.frame_store import FrameStore; "
            "FrameStore(sys.argv[1], 32).put_many([(str(i), 'v', np.full((3, 32), i, np.float32)) for i in range(2, 50)])")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "fs"), str(Path(__file__).parents[2])], check=True, timeout=60)
    got = fs.get_many([(str(i), "v") for i in range(1, 50)])
    assert len(got) == 49 and float(got["49"][0, 0]) == 49.0
    FrameStore(tmp_path / "fs", 32).clear()
    assert fs.get_many([("1", "v")]) == {} and len(fs) == 0


@pytest.fixture(params=["edge", "local"])
def collection(request: pytest.FixtureRequest, tmp_path: Path) -> VideoCollection:
    if request.param == "edge":
        pytest.importorskip("qdrant_edge")
        from vtr_qdrant.store.edge import EdgeBackend

        return VideoCollection(EdgeBackend(tmp_path / "edge"), "fs", dim=32)  # frame_store="auto": beside the data
    from qdrant_client import QdrantClient

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = QdrantClient(":memory:")
    return VideoCollection(client, "fs", dim=32, frame_store=tmp_path / "client-cache")  # a client-side cache


def test_search_reads_the_store_equal_to_qdrant_and_stale_entries_miss(collection: VideoCollection) -> None:
    vc = collection
    fs = vc.stage_two.frame_store
    assert fs is not None
    rng = np.random.default_rng(2)
    vids = {f"v{i}": random_frames(rng, 6) for i in range(8)}
    for vid, f in vids.items():
        vc.upsert_embeddings(vid, f, np.arange(6.0))
    # written on ingest: every point is in the store with its current version, equal to Qdrant's frames
    cands = vc.backend.scroll("fs", None, with_frames=True)
    stored = fs.get_many([(c.id, frames_version(c.payload)) for c in cands])
    assert len(stored) == len(cands) == 8
    for c in cands:
        np.testing.assert_allclose(stored[c.id], c.frames, atol=F16)
    # a search served from the store returns what a store-less search returns
    plain = VideoCollection(vc.backend, "fs", dim=32, frame_store=None)
    q = vids["v3"][2]
    a, b = vc.search(q, limit=5), plain.search(q, limit=5)
    assert [h.video_id for h in a] == [h.video_id for h in b] and a[0].video_id == "v3"
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-6)
    # re-ingest v3 with other frames: the old entry is stale (another version), never served
    new = random_frames(np.random.default_rng(9), 6)
    vc.upsert_embeddings("v3", new, np.arange(6.0))
    vc.stage_two.clear()
    hit = vc.search(new[0], limit=1)[0]
    assert hit.video_id == "v3" and hit.score == pytest.approx(plain.search(new[0], limit=1)[0].score, abs=1e-6)
    scores = {h.video_id: h.score for h in vc.search(q, limit=8, candidates=8, aggregation="max")}
    assert scores["v3"] < 0.9  # scored on the new frames: the stale entry (old frames, max = 1.0) was not served


def test_reads_fill_a_cold_store(collection: VideoCollection) -> None:
    vc = collection
    fs = vc.stage_two.frame_store
    assert fs is not None
    rng = np.random.default_rng(3)
    for i in range(6):
        vc.upsert_embeddings(f"v{i}", random_frames(rng, 4), np.arange(4.0))
    fs.clear()
    vc.stage_two.clear()
    first = vc.search(random_frames(rng, 1)[0], limit=6, candidates=6)
    assert len(fs) == 6  # filled from Qdrant by the first search
    vc.stage_two.clear()
    again = vc.search(random_frames(np.random.default_rng(3), 1)[0], limit=6, candidates=6)
    assert len(again) == len(first) == 6

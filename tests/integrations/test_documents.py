"""The one hit -> document mapping every integration uses."""

from __future__ import annotations

import numpy as np
import pytest
from qdrant_client import QdrantClient

from vtr_qdrant import ConfigError, VideoCollection
from vtr_qdrant.integrations.documents import METADATA_KEYS, hit_documents, hit_metadata, hit_text
from vtr_qdrant.model.bundle import ModelBundle
from vtr_qdrant.store.points import RESERVED_KEYS


def _collection(test_bundle: ModelBundle) -> VideoCollection:
    vc = VideoCollection(QdrantClient(":memory:"), "videos", test_bundle)
    rng = np.random.default_rng(4)

    def random_frames(rng: np.random.Generator, n: int) -> np.ndarray:
        x = rng.standard_normal((n, 32)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    for i in range(6):
        meta = {"n": i, "lang": "en"}
        if i % 3 == 0:
            meta["caption"] = f"caption of video {i}"
        elif i % 3 == 1:
            meta["description"] = f"description of video {i}"
        vc.upsert_embeddings(f"v{i}", random_frames(rng, 6), np.arange(6) * 1.0, metadata=meta, uri=f"/videos/{i}.mp4", duration=6.0)
    return vc


def test_documents_follow_the_hits(test_bundle: ModelBundle) -> None:
    vc = _collection(test_bundle)
    hits = vc.search("a red circle", limit=6)
    docs = hit_documents(hits, content=lambda h: f"custom {h.video_id}")
    assert [d.id for d in docs] == [h.video_id for h in hits] and [d.score for d in docs] == [h.score for h in hits]
    for h, d in zip(hits, docs):
        i = h.payload["n"]
        expected = (
            f"caption of video {i}" if i % 3 == 0 else f"description of video {i}" if i % 3 == 1 else f"custom {h.video_id}"
        )
        assert d.text == expected
        m = d.metadata
        assert set(METADATA_KEYS) <= set(m) and {"n", "lang"} <= set(m)
        assert (m["video_id"], m["uri"], m["score"], m["stage1_score"]) == (h.video_id, f"/videos/{i}.mp4", h.score, h.stage1_score)
        assert (m["start"], m["end"], m["peak"], m["segment_index"], m["duration"]) == (
            h.moment.start, h.moment.end, h.moment.peak, h.segment_index, 6.0
        )
        # never the per-frame data or the bookkeeping fields
        assert not ({"timestamps", "weights", "frames_digest", "content_hash", "version", "complete"} & set(m))
        assert set(m) - set(METADATA_KEYS) <= {"n", "lang", "caption", "description"}


def test_fallback_text_names_the_video_and_the_moment(test_bundle: ModelBundle) -> None:
    vc = _collection(test_bundle)
    hit = next(h for h in vc.search("a red circle", limit=6) if h.payload["n"] % 3 == 2)
    assert hit_text(hit) == f"/videos/{hit.payload['n']}.mp4 [{hit.moment.start:.1f}–{hit.moment.end:.1f} s]"
    bare = hit.model_copy(update={"payload": {}})
    assert hit_text(bare).startswith(f"{hit.video_id} [")
    assert hit_metadata(bare)["uri"] is None and hit_metadata(bare)["duration"] is None
    with pytest.raises(ConfigError, match="must return a str"):
        hit_text(hit, content=lambda h: 3)  # type: ignore[arg-type,return-value]


def test_our_keys_win_over_user_fields_of_the_same_name(test_bundle: ModelBundle) -> None:
    vc = _collection(test_bundle)
    hit = vc.search("a red circle", limit=1)[0]
    clash = hit.model_copy(update={"payload": {**hit.payload, "score": "user", "start": "user"}})
    m = hit_metadata(clash)
    assert m["score"] == hit.score and m["start"] == hit.moment.start
    assert not (RESERVED_KEYS - {"video_id", "uri", "duration", "segment_index"}) & set(m)

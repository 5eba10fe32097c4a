"""A small synthetic world embedded into a collection, shared by the integration tests.

Frames are rendered in numpy (no ffmpeg) and encoded with the tiny test bundle's image tower; each
video stores its whole-video caption (the document text) and a category, half of them "odd".
The fixtures ``world`` and ``edge_world`` are imported by the test modules (not a conftest.py: a
second module named ``conftest`` would shadow tests/conftest.py for ``from conftest import ...``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from vtr_qdrant import VideoCollection
from vtr_qdrant.model.bundle import ModelBundle
from vtr_qdrant.synthetic.generate import generate_world
from vtr_qdrant.synthetic.render import render_video_frames, uniform_timestamps

N_VIDEOS = 10
QUERY = "a red circle moving left"


def fill_world(vc: VideoCollection, seed: int = 11) -> None:
    world = generate_world(seed, N_VIDEOS, size=32, duration_range=(3.0, 5.0))
    enc = vc.frame_encoder
    for i, v in enumerate(world.videos):
        frames, ts = render_video_frames(v, 32, uniform_timestamps(v.duration, 6))
        vc.upsert_embeddings(
            v.video_id, enc.encode(frames), ts, uri=f"/data/{v.video_id}.mp4", duration=v.duration,
            metadata={"caption": v.caption, "category": "odd" if i % 2 else "even", "n": i},
        )


def open_local(path: Path) -> QdrantClient:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return QdrantClient(path=str(path))


@pytest.fixture(scope="module")
def world(test_bundle: ModelBundle, tmp_path_factory: pytest.TempPathFactory) -> VideoCollection:
    """The world in qdrant-client local mode, in memory."""
    vc = VideoCollection(QdrantClient(":memory:"), "world", test_bundle, indexed_fields={"category": "keyword"})
    fill_world(vc)
    return vc


@pytest.fixture(scope="module")
def edge_world(test_bundle: ModelBundle, tmp_path_factory: pytest.TempPathFactory) -> VideoCollection:
    """The world on Qdrant Edge: sync and async collections can share this back end."""
    pytest.importorskip("qdrant_edge")
    from vtr_qdrant import EdgeBackend

    vc = VideoCollection(EdgeBackend(tmp_path_factory.mktemp("edge")), "world", test_bundle)
    fill_world(vc)
    return vc


def top_video(vc: VideoCollection) -> str:
    return vc.search(QUERY, limit=1)[0].video_id


def random_vector(seed: int = 0, dim: int = 32) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(dim)
    return x / np.linalg.norm(x)

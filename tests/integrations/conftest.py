"""Fixtures: the small synthetic world of rag_world.py in local mode and on Qdrant Edge."""

from __future__ import annotations

import pytest
from qdrant_client import QdrantClient
from rag_world import fill_world

from vtr_qdrant import VideoCollection
from vtr_qdrant.model.bundle import ModelBundle


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

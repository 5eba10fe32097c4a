"""Shared fixtures: a tiny torch-free model bundle and Qdrant clients of every local kind."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from vtr_qdrant.model.bundle import ModelBundle
from vtr_qdrant.model.testing import make_test_bundle


@pytest.fixture(scope="session")
def test_bundle(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    """A tiny onnx.helper bundle: D=32, image 32x32, context 16."""
    return make_test_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="session")
def other_bundle(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    """Same architecture, other weights: another fingerprint."""
    return make_test_bundle(tmp_path_factory.mktemp("bundle2"), seed=1, name="other")


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    """A local Ray cluster for one test module: 2 CPUs, no dashboard."""
    import logging

    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture(params=["memory", "path"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QdrantClient]:
    """qdrant-client local mode, in memory and on disk."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = QdrantClient(":memory:") if request.param == "memory" else QdrantClient(path=str(tmp_path / "qdrant"))
    yield c
    c.close()


def random_frames(rng: np.random.Generator, n: int, dim: int = 32) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)

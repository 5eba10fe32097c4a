"""The query path stays light: no torch, ray, open_clip or video decoder gets imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vtr_qdrant.model.bundle import ModelBundle

SCRIPT = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import numpy as np
from qdrant_client import QdrantClient
import vtr_qdrant
from vtr_qdrant import VideoCollection
vc = VideoCollection(QdrantClient(":memory:"), "v", "local-dir:" + sys.argv[1])
rng = np.random.default_rng(0)
vc.upsert_embeddings("a", rng.standard_normal((4, 32)), np.arange(4.0))
hits = vc.search("a red circle", limit=1)
import vtr_qdrant.integrations.documents  # the hit -> document mapping needs no framework
vtr_qdrant.integrations.documents.hit_documents(hits)
assert vtr_qdrant.AsyncVideoCollection.search is not None
heavy = ["torch", "ray", "open_clip", "av", "cv2", "ffmpeg", "imageio_ffmpeg", "onnx", "torchvision",
         "langchain_core", "llama_index", "haystack"]
print(json.dumps({"hit": hits[0].video_id, "loaded": [m for m in heavy if m in sys.modules]}))
"""


@pytest.mark.timeout(120)
def test_query_path_imports_nothing_heavy(test_bundle: ModelBundle) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(test_bundle.path)],
        capture_output=True, text=True, timeout=110, cwd=Path(__file__).parent.parent,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["hit"] == "a"
    assert result["loaded"] == []


LIGHT = r"""
import json, sys
import vtr_qdrant
after_package = "qdrant_client" in sys.modules
import ray_jobs.encode, vtr_qdrant.model.bundle, vtr_qdrant.model.encoders
actor = [m for m in ("qdrant_client", "ray", "av") if m in sys.modules]
import warnings
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    old = vtr_qdrant.storage.StageOneQuery.__module__  # the flat layout's path still resolves
print(json.dumps({"package": after_package, "actor": actor, "submodule": old}))
"""


@pytest.mark.timeout(120)
def test_package_and_encode_actor_import_no_qdrant_client() -> None:
    # a Ray encode actor starts in a fresh worker for every job: it must not pay for
    # qdrant-client's import (~0.7 s), which it never uses
    out = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True, timeout=110, cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"package": False, "actor": [], "submodule": "vtr_qdrant.store.plan"}


def test_lazy_names_resolve() -> None:
    import vtr_qdrant

    for name in vtr_qdrant.__all__:
        if name == "EdgeBackend":
            continue  # the edge extra
        assert getattr(vtr_qdrant, name) is not None, name
    assert "VideoCollection" in dir(vtr_qdrant)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vtr_qdrant.nope  # noqa: B018

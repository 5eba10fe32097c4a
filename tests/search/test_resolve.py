"""One resolver: every aggregation name means the same thing at every entry point.

Entry points: ``get_aggregator``, ``VideoCollection(aggregation=...)``, ``VideoCollection.search(
aggregation=...)``, ``vtr-qdrant search --aggregation`` and ``vtr-qdrant eval --aggregation``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import random_frames
from qdrant_client import QdrantClient

from vtr_qdrant import VideoCollection, get_aggregator
from vtr_qdrant.cli.main import main
from vtr_qdrant.errors import ArtifactError, ConfigError
from vtr_qdrant.model.bundle import ModelBundle
from vtr_qdrant.model.manifest import XPoolSpec, write_manifest
from vtr_qdrant.search.aggregation import AGGREGATIONS, MaxFrame, MeanPooling, SoftmaxPooling, TopKFrames
from vtr_qdrant.search.resolve import AGGREGATION_NAMES, bundle_head, load_head, resolve_aggregation
from vtr_qdrant.search.xpool import XPOOL_PARAMETER_NAMES, XPoolHead

DIM = 32


def _head(seed: int) -> XPoolHead:
    rng = np.random.default_rng(seed)
    params = {
        k: (1.0 + 0.1 * rng.standard_normal(DIM) if k.endswith("weight") else 0.1 * rng.standard_normal(DIM))
        if "layer_norm" in k
        else (np.eye(DIM) + 0.2 * rng.standard_normal((DIM, DIM)) if k.endswith("weight") else 0.1 * rng.standard_normal(DIM))
        for k in XPOOL_PARAMETER_NAMES
    }
    return XPoolHead(params)


@pytest.fixture(scope="module")
def headed(test_bundle: ModelBundle, tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelBundle, XPoolHead]:
    """The test bundle's towers plus a trained-looking head in the manifest."""
    root = tmp_path_factory.mktemp("headed")
    shutil.copytree(test_bundle.path, root, dirs_exist_ok=True)
    head = _head(5)
    head.save(root / "xpool.npz")
    write_manifest(root, test_bundle.manifest.model_copy(update={"xpool": XPoolSpec(file="xpool.npz", num_heads=1)}))
    return ModelBundle.load(root), head


def _same_head(a: object, b: XPoolHead) -> bool:
    return isinstance(a, XPoolHead) and all(
        np.array_equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values())
    )


def test_names() -> None:
    assert set(AGGREGATION_NAMES) == {*AGGREGATIONS, "xpool", "xpool-identity"}
    for name, cls in {"mean": MeanPooling, "max": MaxFrame, "topk": TopKFrames, "softmax": SoftmaxPooling}.items():
        assert type(get_aggregator(name)) is cls
    assert get_aggregator("softmax", temperature=0.5).temperature == 0.5  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="unknown aggregation 'nope'.*xpool-identity"):
        get_aggregator("nope")
    with pytest.raises(ConfigError, match="takes no options"):
        get_aggregator("xpool-identity", dim=DIM, temperature=1.0)
    with pytest.raises(ConfigError, match="needs the embedding dimension"):
        get_aggregator("xpool-identity")


def test_xpool_means_a_trained_head(headed: tuple[ModelBundle, XPoolHead], test_bundle: ModelBundle) -> None:
    bundle, head = headed
    with pytest.raises(ConfigError, match=r"needs a trained X-Pool head and no model bundle was given.*xpool-identity"):
        get_aggregator("xpool", dim=DIM)
    with pytest.raises(ConfigError, match=r"the bundle 'test-bundle' ships none"):
        get_aggregator("xpool", dim=DIM, bundle=test_bundle)
    assert _same_head(get_aggregator("xpool", bundle=bundle), head)
    given = _head(9)
    assert get_aggregator("xpool", bundle=bundle, head=given) is given  # an explicit head wins
    with pytest.raises(ConfigError, match="has dim 32, the collection 16"):
        get_aggregator("xpool", dim=16, head=given)
    identity = get_aggregator("xpool-identity", dim=DIM)
    assert _same_head(identity, XPoolHead.identity(DIM))
    assert resolve_aggregation(given) is given and resolve_aggregation(identity) is identity


def test_one_head_loader(headed: tuple[ModelBundle, XPoolHead], test_bundle: ModelBundle, tmp_path: Path) -> None:
    bundle, head = headed
    assert bundle_head(bundle) is bundle_head(bundle)  # loaded once per process
    assert bundle_head(test_bundle) is None and bundle_head(None) is None
    assert _same_head(load_head(bundle), head)
    assert _same_head(load_head(bundle.path), head) and _same_head(load_head(f"local-dir:{bundle.path}"), head)
    assert _same_head(load_head(bundle.path / "xpool.npz"), head)
    with pytest.raises(ArtifactError, match="ships no X-Pool head"):
        load_head(test_bundle.path)


def _collection(bundle: ModelBundle, tmp_path: Path, **kw: object) -> VideoCollection:
    client = QdrantClient(path=str(tmp_path / "q"))
    vc = VideoCollection(client, "videos", bundle, **kw)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    for i in range(8):
        vc.upsert_embeddings(f"v{i}", random_frames(rng, 6), np.arange(6.0))
    return vc


def test_collection_default_and_per_call(headed: tuple[ModelBundle, XPoolHead], test_bundle: ModelBundle, tmp_path: Path) -> None:
    bundle, head = headed
    with pytest.raises(ConfigError, match="needs a trained X-Pool head"):
        VideoCollection(QdrantClient(":memory:"), "c", test_bundle, aggregation="xpool")
    vc = _collection(bundle, tmp_path, aggregation="xpool")
    assert _same_head(vc.aggregation, head)
    q = np.asarray(random_frames(np.random.default_rng(1), 1)[0])
    by_name = vc.search(q, limit=8, aggregation="xpool")
    by_instance = vc.search(q, limit=8, aggregation=head)
    assert [(h.video_id, round(h.score, 6)) for h in by_name] == [(h.video_id, round(h.score, 6)) for h in by_instance]
    ident = vc.search(q, limit=8, aggregation="xpool-identity")
    ref = vc.search(q, limit=8, aggregation=XPoolHead.identity(DIM))
    assert [h.score for h in ident] == pytest.approx([h.score for h in ref])
    assert isinstance(_collection(bundle, tmp_path / "b", aggregation="max").aggregation, MaxFrame)
    plain = VideoCollection(QdrantClient(":memory:"), "p", test_bundle)
    with pytest.raises(ConfigError, match="ships none"):
        plain.search("a red circle", aggregation="xpool")


def test_cli_search_and_eval_use_the_same_names(
    headed: tuple[ModelBundle, XPoolHead], test_bundle: ModelBundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, _ = headed
    vc = _collection(bundle, tmp_path)
    vc.backend.client.close()  # type: ignore[attr-defined]
    target = ["--collection", "videos", "--qdrant-path", str(tmp_path / "q")]
    for name in ("mean", "max", "topk", "softmax", "xpool", "xpool-identity"):
        assert main(["search", "a red circle", *target, "--bundle", f"local-dir:{bundle.path}", "--aggregation", name, "--json"]) == 0
        assert len(json.loads(capsys.readouterr().out)) == 8
    # without a head, 'xpool' is the same clear error in search and eval
    assert main(["search", "a red circle", *target, "--bundle", f"local-dir:{test_bundle.path}", "--aggregation", "xpool"]) == 2
    assert "needs a trained X-Pool head" in capsys.readouterr().err
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"query": "a red circle", "video_ids": ["v1"]}) + "\n")
    common = [*target, "--queries", str(queries), "--mode", "exhaustive"]
    assert main(["eval", *common, "--bundle", f"local-dir:{test_bundle.path}", "--aggregation", "xpool"]) == 2
    assert "needs a trained X-Pool head" in capsys.readouterr().err
    assert main(["eval", *common, "--bundle", f"local-dir:{bundle.path}", "--aggregation", "xpool,xpool-identity,max", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["results"]) == {"xpool", "xpool-identity", "max"}


def test_default_is_the_bundle_head_else_the_fallback(
    headed: tuple[ModelBundle, XPoolHead], test_bundle: ModelBundle
) -> None:
    from vtr_qdrant.search.resolve import FALLBACK_AGGREGATION, default_aggregation

    bundle, head = headed
    assert _same_head(default_aggregation(bundle), head)
    assert _same_head(VideoCollection(QdrantClient(":memory:"), "d", bundle).aggregation, head)
    assert FALLBACK_AGGREGATION == "softmax"
    assert type(default_aggregation(test_bundle)) is SoftmaxPooling and type(default_aggregation(None)) is SoftmaxPooling
    assert type(VideoCollection(QdrantClient(":memory:"), "e", test_bundle).aggregation) is SoftmaxPooling
    # an explicit choice still wins over the bundle's head
    assert isinstance(VideoCollection(QdrantClient(":memory:"), "f", bundle, aggregation="mean").aggregation, MeanPooling)


def test_the_v2_bundle_has_a_query_adaptive_head() -> None:
    """v2 (still shipped; v3 is the default): v1's towers plus the adaptive head."""
    from vtr_qdrant.model.bundle import resolve_bundle
    from vtr_qdrant.search.resolve import default_aggregation

    v2 = resolve_bundle("synthetic-world/v2")
    v1 = resolve_bundle("synthetic-world/v1")
    assert v2.manifest.xpool is not None and v2.manifest.xpool.adaptive
    assert v2.towers_fingerprint == v1.towers_fingerprint  # v2 opens v1 collections
    recipe = v2.manifest.source.recipe["xpool"]
    assert recipe["train_seeds"] == [301, 302, 303] and recipe["script"] == "onnx_export.train_synthetic_head"
    head = default_aggregation(v2)
    assert isinstance(head, XPoolHead) and head.adaptive
    # whole-video captions get flatter attention than scene captions
    t = v2.text_encoder().encode(["a red circle moving left on a blue background", "red circle on blue, then green square on black"])
    s = head.attention_scale(t)
    assert s[1] < s[0]

"""Retrieval evaluation: metrics on hand-computed ranks, chunked exhaustive scoring, two-stage, CLI."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from vtr_qdrant.cli.main import main
from vtr_qdrant.collection import VideoCollection
from vtr_qdrant.errors import ArtifactError, ConfigError, InvalidInputError
from vtr_qdrant.eval.corpus import EvalCorpus, exhaustive_scores, relevance_for
from vtr_qdrant.eval.evaluation import (
    evaluate_collection,
    format_report,
    topk_agreement,
    two_stage_results,
    two_stage_scores,
)
from vtr_qdrant.eval.metrics import evaluate_retrieval
from vtr_qdrant.eval.queries import EvalQuery, read_captions, read_queries
from vtr_qdrant.search.aggregation import MaxFrame, MeanPooling, SoftmaxPooling, TopKFrames
from vtr_qdrant.search.resolve import load_head, resolve_aggregations, towers_fingerprint
from vtr_qdrant.search.xpool import XPOOL_PARAMETER_NAMES, XPoolHead
from vtr_qdrant.store.videos import EmbeddedVideo

DIM = 32


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def random_head(seed: int = 0, num_heads: int = 2) -> XPoolHead:
    rng = np.random.default_rng(seed)
    params = {}
    for k in XPOOL_PARAMETER_NAMES:
        if "layer_norm" in k:
            params[k] = (
                (1.0 + 0.2 * rng.standard_normal(DIM))
                if k.endswith("weight")
                else 0.1 * rng.standard_normal(DIM)
            )
        else:
            params[k] = (
                (np.eye(DIM) + 0.3 * rng.standard_normal((DIM, DIM)))
                if k.endswith("weight")
                else 0.1 * rng.standard_normal(DIM)
            )
    return XPoolHead(params, num_heads=num_heads)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


# ------------------------------------------------------------------------------------------ metrics


def test_two_stage_metrics_hand_computed() -> None:
    videos = ["a", "b", "c", "d", "e"]
    ranked = [
        [("a", 0.9), ("b", 0.5)],  # relevant a at rank 1
        [("c", 0.8), ("d", 0.7), ("b", 0.6)],  # relevant b at rank 3
        [("a", 0.9), ("b", 0.8)],  # relevant e never returned: worst rank, 1 + 4 irrelevant videos = 5
        [("d", 0.9), ("c", 0.8)],  # relevant {c, e}: best is c at rank 2
    ]
    scores = two_stage_scores(ranked, videos)
    assert scores[0, 2] == -np.inf and scores[1, 2] == np.float32(0.8)
    m = evaluate_retrieval(scores, [{0}, {1}, {4}, {2, 4}])
    # ranks 1, 3, 5, 2
    assert m["R@1"] == pytest.approx(0.25)
    assert m["R@5"] == pytest.approx(1.0)
    assert m["MdR"] == pytest.approx(2.5)
    assert m["MnR"] == pytest.approx(11 / 4)


def test_exhaustive_ranks_hand_computed() -> None:
    # one frame per video: max-frame score = cosine; text 0 points at video 2, text 1 between 0 and 1
    frames = np.eye(4, DIM, dtype=np.float32)[:, None, :]
    text = unit(np.array([np.eye(DIM)[2] + 0.1 * np.eye(DIM)[0], np.eye(DIM)[0] + 0.9 * np.eye(DIM)[1]]))
    scores = exhaustive_scores(MaxFrame(), text, frames)
    assert scores.shape == (2, 4)
    m = evaluate_retrieval(scores, [{2}, {1}])  # ranks 1 and 2
    assert (m["R@1"], m["MdR"], m["MnR"]) == (0.5, 1.5, 1.5)


def test_topk_agreement() -> None:
    ref = np.array([[5, 4, 3, 2, 1.0], [1, 2, 3, 4, 5.0]])
    assert topk_agreement(ref, [[0, 1], [4, 3]], k=2) == 1.0
    assert topk_agreement(ref, [[0, 4], [0, 1]], k=2) == 0.25
    assert topk_agreement(ref, [[0, 1, 2, 3, 4], [4]], k=10) == pytest.approx((5 / 5 + 1 / 5) / 2)


# ------------------------------------------------------------------------------------------ files


def test_read_queries_and_captions(tmp_path: Path) -> None:
    q = write_jsonl(
        tmp_path / "q.jsonl",
        [{"query": "a red circle", "video_ids": ["v1", "v2"]}, {"query": "x", "video_id": "v3"}],
    )
    assert read_queries(q) == [EvalQuery("a red circle", ("v1", "v2")), EvalQuery("x", ("v3",))]
    c = write_jsonl(tmp_path / "c.jsonl", [{"video_id": "v1", "caption": "hello"}])
    assert read_captions(c) == [("v1", "hello")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "a", "video_ids": []}\n')
    with pytest.raises(InvalidInputError, match=r"bad.jsonl:1: 'video_ids'"):
        read_queries(bad)
    bad.write_text('{"query": "a", "video_ids": ["v"]}\nnot json\n')
    with pytest.raises(InvalidInputError, match=r"bad.jsonl:2: not valid JSON"):
        read_queries(bad)
    with pytest.raises(ArtifactError):
        read_queries(tmp_path / "missing.jsonl")
    with pytest.raises(InvalidInputError, match="caption"):
        read_captions(q)


def test_relevance_skips_unknown_videos() -> None:
    kept, rel = relevance_for([EvalQuery("a", ("x", "v1")), EvalQuery("b", ("zz",))], ["v0", "v1"])
    assert kept == [0] and rel == [{1}]
    with pytest.raises(InvalidInputError, match="no query"):
        relevance_for([EvalQuery("b", ("zz",))], ["v0"])


# ------------------------------------------------------------------------------------------ exhaustive


def corpus_with_segments(rng: np.random.Generator) -> EvalCorpus:
    """9 points for 6 videos (videos 1 and 4 have 2 and 3 segments), variable frame counts."""
    owner = np.array([0, 1, 1, 2, 3, 4, 4, 4, 5])
    frames = unit(rng.standard_normal((len(owner), 7, DIM)))
    mask = np.arange(7)[None, :] < rng.integers(1, 8, size=len(owner))[:, None]
    frames[~mask] = 0.0
    return EvalCorpus([f"v{i}" for i in range(6)], owner, frames, mask)


@pytest.mark.parametrize(
    "agg",
    [
        MeanPooling(),
        MaxFrame(),
        TopKFrames(3),
        SoftmaxPooling(0.05),
        random_head(0, 2),
        XPoolHead.identity(DIM),
    ],
    ids=repr,
)
def test_exhaustive_chunked_equals_unchunked(agg) -> None:
    rng = np.random.default_rng(1)
    corpus = corpus_with_segments(rng)
    text = unit(rng.standard_normal((11, DIM)))
    direct = agg.aggregate(text, corpus.frames, corpus.mask).scores  # (Q, P) in one block
    want = np.stack([direct[:, corpus.point_video == v].max(axis=1) for v in range(6)], axis=1)
    whole = exhaustive_scores(agg, text, corpus, query_chunk=1000, video_chunk=1000)
    np.testing.assert_allclose(whole, want, rtol=0, atol=1e-5)
    for qc, vc in [(1, 1), (3, 2), (4, 5), (11, 3)]:
        np.testing.assert_allclose(
            exhaustive_scores(agg, text, corpus, query_chunk=qc, video_chunk=vc), whole, rtol=0, atol=1e-5
        )
    # automatic block size under a tiny budget still gives the same answer
    np.testing.assert_allclose(
        exhaustive_scores(agg, text, corpus, query_chunk=2, max_block_bytes=1), whole, rtol=0, atol=1e-5
    )


def test_per_video_concatenates_segments() -> None:
    corpus = corpus_with_segments(np.random.default_rng(2))
    frames, mask = corpus.per_video()
    assert frames.shape[0] == 6 and mask.sum() == corpus.mask.sum()
    np.testing.assert_array_equal(
        frames[4, : mask[4].sum()], np.concatenate([corpus.frames[p][corpus.mask[p]] for p in (5, 6, 7)])
    )


def test_exhaustive_rejects_bad_shapes() -> None:
    with pytest.raises(InvalidInputError):
        exhaustive_scores(MeanPooling(), np.zeros((2, 5), np.float32), np.zeros((3, 2, DIM), np.float32))


# ------------------------------------------------------------------------------------------ two-stage


@pytest.fixture()
def filled(tmp_path: Path):
    """A 40-video in-memory collection (no bundle) of clustered frames, some videos in 2 segments."""
    rng = np.random.default_rng(5)
    client = QdrantClient(":memory:")
    vc = VideoCollection(client, "eval", dim=DIM)
    centres = unit(rng.standard_normal((8, DIM)))
    videos = []
    for i in range(40):
        n = int(rng.integers(3, 9))
        f = unit(centres[rng.integers(0, 8, size=n)] + 0.4 * rng.standard_normal((n, DIM)))
        videos.append(EmbeddedVideo(f"vid{i:02d}", f, np.arange(n, dtype=np.float64)))
    vc.upsert_embeddings_batch(videos)
    queries = [EvalQuery(f"q{j}", (f"vid{j % 40:02d}", f"vid{(j * 7) % 40:02d}")) for j in range(25)]
    vectors = unit(rng.standard_normal((25, DIM)))
    yield vc, queries, vectors
    client.close()


@pytest.mark.parametrize("agg", [MeanPooling(), SoftmaxPooling(), random_head(1, 1)], ids=repr)
def test_two_stage_with_all_candidates_equals_exhaustive(filled, agg) -> None:
    vc, queries, vectors = filled
    report = evaluate_collection(vc, queries, {"a": agg}, candidates=vc.count_points(), vectors=vectors)
    ex, ts = report["results"]["a"]["exhaustive"], report["results"]["a"]["two_stage"]
    assert ts.pop("top10_recall_vs_exhaustive") == pytest.approx(1.0)
    assert ts == pytest.approx(ex)
    corpus = EvalCorpus.from_collection(vc)
    assert corpus.num_videos == 40
    ranked = two_stage_results(vc, vectors, agg, candidates=vc.count_points())
    np.testing.assert_allclose(
        two_stage_scores(ranked, corpus.video_ids), exhaustive_scores(agg, vectors, corpus), rtol=0, atol=1e-5
    )


def test_two_stage_with_few_candidates_loses_recall(filled) -> None:
    vc, queries, vectors = filled
    report = evaluate_collection(vc, queries, {"softmax": SoftmaxPooling()}, candidates=3, vectors=vectors)
    ts = report["results"]["softmax"]["two_stage"]
    assert 0.0 <= ts["top10_recall_vs_exhaustive"] < 1.0
    assert "softmax" in format_report(report)


def test_resolve_aggregations(filled, tmp_path: Path) -> None:
    vc, _, _ = filled
    aggs = resolve_aggregations(["mean", "xpool-identity"], DIM)
    assert isinstance(aggs["xpool-identity"], XPoolHead)
    with pytest.raises(ConfigError, match="needs a trained X-Pool head"):
        resolve_aggregations(["xpool"], DIM, bundle=vc.bundle)
    with pytest.raises(ConfigError, match="unknown aggregation"):
        resolve_aggregations(["nope"], DIM)
    head = random_head(2)
    head.save(tmp_path / "h.npz")
    assert resolve_aggregations(["xpool"], DIM, head=load_head(tmp_path / "h.npz"))["xpool"].num_heads == 2


# ------------------------------------------------------------------------------------------ CLI


def build_cli_collection(bundle, qdrant_path: Path) -> list[str]:
    """A collection of 12 videos with the test bundle; returns the video ids."""
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = QdrantClient(path=str(qdrant_path))
    try:
        vc = VideoCollection(client, "clips", bundle)
        ids = [f"clip{i}" for i in range(12)]
        vc.upsert_embeddings_batch(
            EmbeddedVideo(v, unit(rng.standard_normal((6, DIM))), np.arange(6, dtype=np.float64)) for v in ids
        )
    finally:
        client.close()
    return ids


def test_cli_eval_end_to_end(test_bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = build_cli_collection(test_bundle, tmp_path / "q")
    queries = write_jsonl(
        tmp_path / "queries.jsonl",
        [
            {"query": w, "video_ids": [ids[i], ids[(i + 5) % 12]]}
            for i, w in enumerate(["the red circle", "blue square", "green dog", "cat runs"])
        ]
        + [{"query": "nothing", "video_ids": ["unknown"]}],
    )
    target = [
        "--collection",
        "clips",
        "--qdrant-path",
        str(tmp_path / "q"),
        "--bundle",
        f"local-dir:{test_bundle.path}",
    ]
    out = tmp_path / "report.json"
    rc = main(
        [
            "eval",
            *target,
            "--queries",
            str(queries),
            "--aggregation",
            "mean,softmax,max",
            "--candidates",
            "5",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "4 queries (1 skipped), 12 videos" in text and "two_stage" in text
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"mean", "softmax", "max"}
    assert set(report["results"]["mean"]) == {"exhaustive", "two_stage"}
    assert 0.0 <= report["results"]["mean"]["two_stage"]["top10_recall_vs_exhaustive"] <= 1.0
    rc = main(["eval", *target, "--queries", str(queries), "--aggregation", "xpool", "--mode", "exhaustive"])
    assert rc == 2
    assert "needs a trained X-Pool head" in capsys.readouterr().err
    head = tmp_path / "head.npz"
    XPoolHead.identity(DIM).save(head)
    rc = main(
        [
            "eval",
            *target,
            "--queries",
            str(queries),
            "--aggregation",
            "xpool-identity",
            "--head",
            str(head),
            "--mode",
            "exhaustive",
            "--json",
        ]
    )
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["results"]["xpool"]["exhaustive"] == rep["results"]["xpool-identity"]["exhaustive"]


@pytest.mark.export
def test_cli_train_head_then_eval(test_bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    ids = build_cli_collection(test_bundle, tmp_path / "q")
    words = ["red circle", "blue square", "green dog", "cat runs", "the red dog", "blue cat"]
    captions = write_jsonl(
        tmp_path / "captions.jsonl", [{"video_id": v, "caption": words[i % 6]} for i, v in enumerate(ids)]
    )
    target = [
        "--collection",
        "clips",
        "--qdrant-path",
        str(tmp_path / "q"),
        "--bundle",
        f"local-dir:{test_bundle.path}",
    ]
    out = tmp_path / "bundle-with-head"
    rc = main(
        [
            "train-head",
            *target,
            "--captions",
            str(captions),
            "--out",
            str(out),
            "--max-steps",
            "4",
            "--eval-every",
            "2",
            "--batch-size",
            "4",
            "--val-fraction",
            "0.25",
            "--threads",
            "1",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert "wrote bundle 'test-bundle+xpool'" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["xpool"]["file"] == "xpool.npz"
    assert manifest["source"]["recipe"]["xpool"]["config"]["max_steps"] == 4
    queries = write_jsonl(
        tmp_path / "queries.jsonl", [{"query": w, "video_ids": [ids[i]]} for i, w in enumerate(words)]
    )
    rc = main(
        [
            "eval",
            *target,
            "--queries",
            str(queries),
            "--head",
            f"local-dir:{out}",
            "--aggregation",
            "mean",
            "--json",
        ]
    )
    assert rc == 0
    assert set(json.loads(capsys.readouterr().out)["results"]) == {"mean", "xpool"}


def test_load_head_checks_towers(test_bundle, other_bundle, tmp_path: Path) -> None:
    from vtr_qdrant.errors import CollectionMismatchError
    from vtr_qdrant.model.manifest import XPoolSpec, write_manifest

    out = tmp_path / "b"
    out.mkdir()
    m = test_bundle.manifest
    for rel in (m.visual.file, m.text.file, m.tokenizer.file):
        (out / rel).write_bytes(test_bundle.file(rel).read_bytes())
    random_head(3, 1).save(out / "xpool.npz")
    write_manifest(out, m.model_copy(update={"xpool": XPoolSpec(file="xpool.npz", num_heads=1)}))
    assert load_head(out, expected_fingerprint=test_bundle.fingerprint).num_heads == 1
    assert towers_fingerprint(test_bundle.manifest) == test_bundle.fingerprint
    with pytest.raises(CollectionMismatchError, match="trained with towers"):
        load_head(f"local-dir:{out}", expected_fingerprint=other_bundle.fingerprint)
    with pytest.raises(ArtifactError, match="ships no X-Pool head"):
        load_head(test_bundle.path)


def test_cli_train_head_without_torch(
    test_bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    captions = write_jsonl(tmp_path / "c.jsonl", [{"video_id": "a", "caption": "b"}])
    rc = main(
        [
            "train-head",
            "--collection",
            "x",
            "--qdrant-path",
            str(tmp_path / "q"),
            "--captions",
            str(captions),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2
    assert "pip install 'vtr-qdrant[export]'" in capsys.readouterr().err

"""Per-kind metrics, the balanced mix, moment IoU, and query files that carry kinds and spans."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from vtr_qdrant.cli.main import main
from vtr_qdrant.errors import InvalidInputError
from vtr_qdrant.eval.breakdown import MIXED, kind_indices, metrics_by_kind, moment_metrics, temporal_iou
from vtr_qdrant.eval.queries import EvalQuery, read_queries


def test_kind_indices_and_the_balanced_mix() -> None:
    kinds = ["scene"] * 6 + ["video"] * 2 + [None]
    idx = kind_indices(kinds)
    assert idx["scene"].tolist() == [0, 1, 2, 3, 4, 5] and idx["video"].tolist() == [6, 7]
    assert idx[MIXED].tolist() == [0, 5, 6, 7]  # two of each kind, evenly spread
    assert MIXED not in kind_indices(["scene", None])  # one kind: no mix


def test_metrics_by_kind_match_hand_counts() -> None:
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.9, 0.1], [0.3, 0.7]])
    rel = [{0}, {0}, {1}, {1}]  # query 0 right, 1 wrong (rank 2), 2 wrong, 3 right
    m = metrics_by_kind(scores, rel, ["scene", "scene", "video", "video"])
    assert m["scene"]["R@1"] == 0.5 and m["video"]["R@1"] == 0.5 and m[MIXED]["n"] == 4


def test_temporal_iou_and_moment_metrics() -> None:
    assert temporal_iou((0, 2), (1, 3)) == pytest.approx(1 / 3)
    assert temporal_iou((0, 1), (2, 3)) == 0.0
    q = EvalQuery("x", ("a", "b"), "scene", (("a", ((2.0, 4.0), (8.0, 9.0))), ("b", ((0.0, 1.0),))))
    other = EvalQuery("y", ("c",), "scene", (("c", ((0.0, 1.0),)),))
    m = moment_metrics([q, q, other], [("a", 2.0, 4.0), ("a", 8.5, 12.5), ("z", 0.0, 1.0)])
    assert m["n"] == 2  # the third query's top hit is not relevant
    assert m["iou"] == pytest.approx((1.0 + 0.5 / 4.5) / 2) and m["midpoint_in_span"] == 0.5
    assert m["length"] == pytest.approx(3.0)
    assert np.isnan(moment_metrics([q], [None])["iou"])


def test_query_files_with_kinds_and_spans(tmp_path: Path) -> None:
    f = tmp_path / "q.jsonl"
    f.write_text(
        json.dumps({"query": "a", "video_ids": ["v1"], "kind": "scene", "spans": {"v1": [[1, 2], [4, 5]]}}) + "\n"
        + json.dumps({"query": "b", "video_id": "v2", "spans": {"v2": [0, 3]}}) + "\n"
    )
    a, b = read_queries(f)
    assert a.kind == "scene" and a.spans_of("v1") == ((1.0, 2.0), (4.0, 5.0)) and a.spans_of("zz") == ()
    assert b.kind is None and b.spans_of("v2") == ((0.0, 3.0),)
    for bad in ({"kind": 3}, {"spans": {"v1": [[2, 1]]}}, {"spans": [1, 2]}, {"spans": {"v1": "x"}}):
        f.write_text(json.dumps({"query": "a", "video_ids": ["v1"], **bad}) + "\n")
        with pytest.raises(InvalidInputError, match="q.jsonl:1"):
            read_queries(f)


def test_cli_eval_reports_kinds_and_moment_iou(test_bundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vtr_qdrant import VideoCollection

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = QdrantClient(path=str(tmp_path / "q"))
    vc = VideoCollection(client, "clips", test_bundle)
    rng = np.random.default_rng(0)
    for i in range(6):
        f = rng.standard_normal((4, 32)).astype(np.float32)
        vc.upsert_embeddings(f"v{i}", f, np.arange(4) + 0.5, duration=4.0)
    client.close()
    queries = tmp_path / "q.jsonl"
    rows = [{"query": f"scene {i}", "video_ids": [f"v{i}"], "kind": "scene", "spans": {f"v{i}": [[1, 2]]}} for i in range(4)]
    rows += [{"query": f"video {i}", "video_ids": [f"v{i}"], "kind": "video", "spans": {f"v{i}": [[0, 4]]}} for i in range(2)]
    queries.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "report.json"
    target = ["--collection", "clips", "--qdrant-path", str(tmp_path / "q"), "--bundle", f"local-dir:{test_bundle.path}"]
    assert main(["eval", *target, "--queries", str(queries), "--aggregation", "mean,softmax", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "moment IoU" in text and " scene " in text and " video " in text and " mixed " in text
    m = json.loads(out.read_text())["results"]["softmax"]["two_stage"]
    assert set(m["by_kind"]) == {"scene", "video", "mixed"} and m["by_kind"]["mixed"]["n"] == 4
    assert set(m["moments"]) == {"all", "scene", "video", "mixed"}
    assert "by_kind" in json.loads(out.read_text())["results"]["mean"]["exhaustive"]

"""Text-to-video retrieval evaluation: exhaustive and two-stage, for any aggregation (torch-free).

Queries follow the MSR-VTT convention: a caption and the id(s) of the video(s) it describes, one
JSON object per line (``{"query": "...", "video_ids": ["..."]}``). Metrics are those of
:func:`vtr_qdrant.eval.metrics.evaluate_retrieval`: R@1/5/10, MdR and MnR with 1-based ranks, the rank
of a query being that of its best-ranked relevant video, ties counting against it.

Two modes:

- **exhaustive** (:func:`~vtr_qdrant.eval.corpus.exhaustive_scores`): every query against every
  video, the protocol of the papers, in blocks of bounded memory (:mod:`vtr_qdrant.eval.corpus`).
- **two-stage** (:func:`two_stage_results`): the production path, :meth:`VideoCollection.search_batch`
  with K stage-1 candidates. A relevant video that stage 1 did not return gets score -inf, i.e. the
  worst possible rank: MdR/MnR are pessimistic for misses, R@k is exact for k <= the number of
  returned videos. :func:`topk_agreement` gives the recall of the two-stage top-10 relative to the
  exhaustive top-10 (the cost of stage 1's approximation).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, InvalidInputError
from ..search.aggregation import Aggregator
from .breakdown import kind_indices, metrics_by_kind, moment_metrics
from .corpus import DEFAULT_MAX_BLOCK_BYTES, EvalCorpus, exhaustive_scores, relevance_for
from .metrics import evaluate_retrieval
from .queries import EvalQuery

if TYPE_CHECKING:
    from ..collection import VideoCollection

__all__ = ["two_stage_results", "two_stage_scores", "topk_agreement", "evaluate_collection", "format_report"]

log = logging.getLogger(__name__)


def two_stage_results(
    collection: VideoCollection,
    vectors: np.ndarray,
    aggregator: Aggregator,
    *,
    candidates: int,
    limit: int | None = None,
    query_chunk: int = 32,
    moments: list[tuple[str, float, float] | None] | None = None,
) -> list[list[tuple[str, float]]]:
    """Run the production search for every query vector: ranked ``(video_id, score)`` lists.

    Args:
        collection: the collection (stage 1 runs in its back end).
        vectors: (Q, D) float32 query embeddings.
        aggregator: stage-2 aggregation.
        candidates: K stage-1 candidates per query.
        limit: videos to keep per query (default: all candidates' videos).
        query_chunk: queries per ``search_batch`` call (bounds the frames held in memory: Q·K·F·D).
        moments: if given, filled with each query's top hit as ``(video_id, start, end)`` (None: no hit).
    """
    keep = candidates if limit is None else limit
    out: list[list[tuple[str, float]]] = []
    for lo in range(0, len(vectors), max(1, query_chunk)):
        batch = [np.asarray(v, dtype=np.float32) for v in vectors[lo : lo + query_chunk]]
        hits = collection.search_batch(
            batch, limit=keep, candidates=candidates, aggregation=aggregator, with_payload=False
        )
        out.extend([(h.video_id, h.score) for h in hs] for hs in hits)
        if moments is not None:
            moments.extend((hs[0].video_id, hs[0].moment.start, hs[0].moment.end) if hs else None for hs in hits)
    return out


def two_stage_scores(results: Sequence[Sequence[tuple[str, float]]], video_ids: Sequence[str]) -> np.ndarray:
    """(Q, V) float32 scores from ranked lists; videos a query did not return get -inf."""
    col = {v: i for i, v in enumerate(video_ids)}
    out = np.full((len(results), len(video_ids)), -np.inf, dtype=np.float32)
    for q, hits in enumerate(results):
        for vid, s in hits:
            j = col.get(vid)
            if j is not None:
                out[q, j] = s
    return out


def topk_agreement(reference: np.ndarray, ranked: Sequence[Sequence[int]], k: int = 10) -> float:
    """Recall of ranked lists' top-k relative to the top-k of a reference score matrix.

    Args:
        reference: (Q, V) scores (exhaustive); its top-k per row, ties broken by column order.
        ranked: per query, column indices in ranked order (two-stage).
        k: list length.

    Returns:
        Mean over queries of ``|top-k(ranked) ∩ top-k(reference)| / min(k, V)``.
    """
    ref = np.asarray(reference)
    if ref.shape[0] != len(ranked):
        raise InvalidInputError(f"{ref.shape[0]} reference rows but {len(ranked)} ranked lists")
    kk = min(k, ref.shape[1])
    top = np.argsort(-ref, axis=1, kind="stable")[:, :kk]
    hits = [len(set(top[q].tolist()) & set(list(ranked[q])[:kk])) for q in range(ref.shape[0])]
    return float(np.mean(hits) / kk) if hits else float("nan")


# ------------------------------------------------------------------------------------------ driver


def evaluate_collection(
    collection: VideoCollection,
    queries: Sequence[EvalQuery],
    aggregations: Mapping[str, Aggregator],
    *,
    modes: Sequence[str] = ("exhaustive", "two_stage"),
    candidates: int = 100,
    k_agreement: int = 10,
    query_chunk: int = 256,
    max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES,
    corpus: EvalCorpus | None = None,
    vectors: np.ndarray | None = None,
) -> dict[str, Any]:
    """Evaluate a collection with a query set, for each aggregation and mode.

    Args:
        collection: the collection (with a bundle to embed the query texts, unless ``vectors``).
        queries: the queries; those naming no stored video are skipped.
        aggregations: ``{name: aggregator}``.
        modes: ``exhaustive`` and/or ``two_stage``.
        candidates: K for the two-stage mode.
        k_agreement: list length of the two-stage vs exhaustive agreement (10: "recall of top-10").
        query_chunk: queries per block (exhaustive).
        max_block_bytes: bound on one exhaustive block's temporaries.
        corpus: pre-loaded frames (default: read from the collection).
        vectors: (Q, D) pre-computed query embeddings (default: the collection's text encoder).

    Returns:
        ``{"queries": n, "videos": V, "candidates": K, "results": {aggregation: {mode: metrics}}}``;
        two-stage metrics carry ``"top10_recall_vs_exhaustive"`` when both modes ran.
    """
    bad = set(modes) - {"exhaustive", "two_stage"}
    if bad or not modes:
        raise ConfigError(f"modes must be 'exhaustive' and/or 'two_stage', got {list(modes)}")
    corpus = corpus or EvalCorpus.from_collection(collection)
    kept, rel = relevance_for(queries, corpus.video_ids)
    if vectors is None:
        vectors = collection.encode_text([queries[i].text for i in kept])
    else:
        vectors = np.asarray(vectors, dtype=np.float32)[kept]
    col = {v: i for i, v in enumerate(corpus.video_ids)}
    results: dict[str, dict[str, dict[str, Any]]] = {}
    kept_queries = [queries[i] for i in kept]
    kinds = [q.kind for q in kept_queries]
    for name, agg in aggregations.items():
        per: dict[str, dict[str, Any]] = {}
        exhaustive = None
        if "exhaustive" in modes:
            exhaustive = exhaustive_scores(
                agg, vectors, corpus, query_chunk=query_chunk, max_block_bytes=max_block_bytes
            )
            per["exhaustive"] = _with_kinds(evaluate_retrieval(exhaustive, rel), exhaustive, rel, kinds)
        if "two_stage" in modes:
            tops: list[tuple[str, float, float] | None] = []
            ranked = two_stage_results(collection, vectors, agg, candidates=candidates, moments=tops)
            scores = two_stage_scores(ranked, corpus.video_ids)
            m: dict[str, Any] = _with_kinds(evaluate_retrieval(scores, rel), scores, rel, kinds)
            if exhaustive is not None:
                idx = [[col[v] for v, _ in hits if v in col] for hits in ranked]
                m[f"top{k_agreement}_recall_vs_exhaustive"] = topk_agreement(exhaustive, idx, k_agreement)
            if any(q.spans for q in kept_queries):
                m["moments"] = {"all": moment_metrics(kept_queries, tops)}
                for kind, rows in kind_indices(kinds).items():
                    m["moments"][kind] = moment_metrics([kept_queries[i] for i in rows], [tops[i] for i in rows])
            per["two_stage"] = m
        results[name] = per
        log.info("evaluated %s: %s", name, per)
    return {
        "queries": len(kept),
        "queries_skipped": len(queries) - len(kept),
        "videos": corpus.num_videos,
        "points": int(len(corpus.point_video)),
        "candidates": candidates,
        "results": results,
    }


def _with_kinds(
    m: dict[str, Any], scores: np.ndarray, rel: Sequence[set[int]], kinds: Sequence[str | None]
) -> dict[str, Any]:
    by_kind = metrics_by_kind(scores, rel, kinds)
    if by_kind:
        m["by_kind"] = by_kind
    return m


def format_report(report: Mapping[str, Any]) -> str:
    """A plain-text table of :func:`evaluate_collection` output: one row per aggregation, mode and
    query kind (``all``, then each kind and the balanced ``mixed`` set when the queries have kinds),
    with the top hit's moment IoU where the queries give spans."""
    extra = next(
        (k for per in report["results"].values() for m in per.values() for k in m if k.endswith("_vs_exhaustive")),
        None,
    )
    moments = any("moments" in m for per in report["results"].values() for m in per.values())
    head = f"{'aggregation':<18} {'mode':<10} {'queries':<8} {'n':>5} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MdR':>6} {'MnR':>8}"
    head += f" {'top10 vs exh':>12}" if extra else ""
    head += f" {'moment IoU':>10} {'mid in':>7}" if moments else ""
    lines = [head]
    for name, per in report["results"].items():
        for mode, m in per.items():
            for kind, km in [("all", m), *m.get("by_kind", {}).items()]:
                row = (
                    f"{name:<18} {mode:<10} {kind:<8} {int(km['n']):>5} {km['R@1']:>6.3f} {km['R@5']:>6.3f} "
                    f"{km['R@10']:>6.3f} {km['MdR']:>6.1f} {km['MnR']:>8.2f}"
                )
                if extra:
                    v = m.get(extra) if kind == "all" else None
                    row += f" {v:>12.3f}" if v is not None and not math.isnan(v) else f" {'':>12}"
                if moments:
                    mm = m.get("moments", {}).get(kind)
                    ok = mm is not None and mm["n"] > 0
                    row += f" {mm['iou']:>10.3f} {mm['midpoint_in_span']:>7.3f}" if ok else f" {'':>10} {'':>7}"
                lines.append(row)
    return "\n".join(lines)

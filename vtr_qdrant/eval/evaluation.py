"""Text-to-video retrieval evaluation: exhaustive and two-stage, for any aggregation (torch-free).

Queries follow the MSR-VTT convention: a caption and the id(s) of the video(s) it describes, one
JSON object per line (``{"query": "...", "video_ids": ["..."]}``). Metrics are those of
:func:`vtr_qdrant.synthetic.evaluate_retrieval`: R@1/5/10, MdR and MnR with 1-based ranks, the rank
of a query being that of its best-ranked relevant video, ties counting against it.

Two modes:

- **exhaustive** (:func:`exhaustive_scores`): every query against every video, the protocol of the
  papers. It is chunked over queries and videos so the (Q, V, F, D) tensor of a naive batched
  implementation is never formed (the official X-Pool code needs ~38 GB on MSVD this way); only the
  (Q, V) float32 score matrix and one block's temporaries (``max_block_bytes``) live at once. A
  long video stored as several segments (points) is scored per segment and takes its best segment's
  score, exactly as :meth:`VideoCollection.search` does.
- **two-stage** (:func:`two_stage_results`): the production path, :meth:`VideoCollection.search_batch`
  with K stage-1 candidates. A relevant video that stage 1 did not return gets score -inf, i.e. the
  worst possible rank: MdR/MnR are pessimistic for misses, R@k is exact for k <= the number of
  returned videos. :func:`topk_agreement` gives the recall of the two-stage top-10 relative to the
  exhaustive top-10 (the cost of stage 1's approximation).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArtifactError, ConfigError, InvalidInputError
from ..search.aggregation import Aggregator
from ..search.xpool import XPoolHead, XPoolVideoCache
from ..store.points import Key
from ..synthetic.world import evaluate_retrieval

if TYPE_CHECKING:
    from ..collection import VideoCollection

__all__ = [
    "EvalQuery",
    "EvalCorpus",
    "DEFAULT_MAX_BLOCK_BYTES",
    "read_queries",
    "read_captions",
    "relevance_for",
    "exhaustive_scores",
    "two_stage_results",
    "two_stage_scores",
    "topk_agreement",
    "evaluate_collection",
    "format_report",
]

log = logging.getLogger(__name__)

#: Upper bound of one block's temporaries in exhaustive scoring (bytes, approximate).
DEFAULT_MAX_BLOCK_BYTES = 64 << 20


# ------------------------------------------------------------------------------------------ files


@dataclass(frozen=True)
class EvalQuery:
    """One evaluation query: a caption and the ids of the videos it describes."""

    text: str
    video_ids: tuple[str, ...]


def _jsonl(path: str | os.PathLike[str]) -> list[tuple[int, dict[str, Any]]]:
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ArtifactError(f"cannot read {p}: {e}") from e
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidInputError(f"{p}:{n}: not valid JSON ({e.msg})") from e
        if not isinstance(obj, dict):
            raise InvalidInputError(f"{p}:{n}: expected a JSON object per line, got {type(obj).__name__}")
        out.append((n, obj))
    if not out:
        raise InvalidInputError(f"{p} holds no records")
    return out


def read_queries(path: str | os.PathLike[str]) -> list[EvalQuery]:
    """Read an MSR-VTT-style query file: ``{"query": str, "video_ids": [str, ...]}`` per line.

    ``"video_id": str`` is accepted for a single relevant video.

    Raises:
        InvalidInputError: a malformed line (the message names the file and line).
        ArtifactError: the file cannot be read.
    """
    out = []
    for n, obj in _jsonl(path):
        text = obj.get("query")
        ids = obj.get("video_ids", [obj["video_id"]] if "video_id" in obj else None)
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError(f"{path}:{n}: 'query' must be a non-empty string")
        if not isinstance(ids, list) or not ids or not all(isinstance(v, str) and v for v in ids):
            raise InvalidInputError(f"{path}:{n}: 'video_ids' must be a non-empty list of video id strings")
        out.append(EvalQuery(text, tuple(ids)))
    return out


def read_captions(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Read a training caption file: ``{"video_id": str, "caption": str}`` per line.

    Returns:
        ``[(video_id, caption), ...]`` in file order (a video may have many captions).
    """
    out = []
    for n, obj in _jsonl(path):
        vid, cap = obj.get("video_id"), obj.get("caption")
        if not isinstance(vid, str) or not vid or not isinstance(cap, str) or not cap.strip():
            raise InvalidInputError(f"{path}:{n}: expected {{'video_id': str, 'caption': non-empty str}}")
        out.append((vid, cap))
    return out


# ------------------------------------------------------------------------------------------ corpus


@dataclass
class EvalCorpus:
    """Every stored point's frames, grouped by video.

    P points (one per video, or per segment of a long video), V videos, F the widest point.

    Attributes:
        video_ids: (V,) the videos, in order (columns of every score matrix).
        point_video: (P,) int64 index into ``video_ids``, non-decreasing.
        frames: (P, F, D) float32 frame embeddings (zero where masked).
        mask: (P, F) bool, True where a frame exists.
        timestamps: per point, (F_p,) float64 seconds (may be empty when unknown).
    """

    video_ids: list[str]
    point_video: np.ndarray
    frames: np.ndarray
    mask: np.ndarray
    timestamps: list[np.ndarray] = field(default_factory=list)

    @property
    def num_videos(self) -> int:
        return len(self.video_ids)

    @classmethod
    def from_arrays(
        cls, video_ids: Sequence[str], frames: np.ndarray, mask: np.ndarray | None = None
    ) -> EvalCorpus:
        """One point per video from a (V, F, D) array and an optional (V, F) bool mask."""
        frames = np.asarray(frames, dtype=np.float32)
        if frames.ndim != 3 or frames.shape[0] != len(video_ids):
            raise InvalidInputError(f"frames must be (V, F, D) with V = {len(video_ids)}, got {frames.shape}")
        if len(set(video_ids)) != len(video_ids):
            raise InvalidInputError("video_ids must be unique")
        m = np.ones(frames.shape[:2], bool) if mask is None else np.asarray(mask, dtype=bool)
        if m.shape != frames.shape[:2] or (len(m) and not m.any(axis=1).all()):
            raise InvalidInputError(f"mask must be (V, F) = {frames.shape[:2]} with a frame per video")
        return cls(list(video_ids), np.arange(len(video_ids), dtype=np.int64), frames, m)

    @classmethod
    def from_collection(
        cls, collection: VideoCollection, video_ids: Sequence[str] | None = None
    ) -> EvalCorpus:
        """Read every point's frames from a collection (scroll), ordered by video then segment.

        Args:
            collection: the :class:`VideoCollection`.
            video_ids: keep only these videos, in this order (missing ones are an error).
        """
        n = collection.count_points()
        recs = collection.backend.scroll(collection.collection_name, None, with_frames=True, limit=max(n, 1))
        by_video: dict[str, list[Any]] = {}
        for r in recs:
            if r.frames is None or not len(r.frames):
                continue
            by_video.setdefault(str(r.payload.get(Key.VIDEO_ID, r.id)), []).append(r)
        if video_ids is None:
            order = sorted(by_video)
        else:
            order = list(video_ids)
            missing = [v for v in order if v not in by_video]
            if missing:
                raise InvalidInputError(
                    f"{len(missing)} video(s) are not in the collection, e.g. {missing[:3]}"
                )
        if not order:
            raise InvalidInputError(f"collection {collection.collection_name!r} holds no videos with frames")
        points = []
        owner = []
        for i, vid in enumerate(order):
            segs = sorted(by_video[vid], key=lambda r: int(r.payload.get(Key.SEGMENT_INDEX, 0)))
            points.extend(segs)
            owner.extend([i] * len(segs))
        widest = max(len(r.frames) for r in points)
        frames = np.zeros((len(points), widest, collection.dim), np.float32)
        mask = np.zeros((len(points), widest), bool)
        stamps = []
        for j, r in enumerate(points):
            frames[j, : len(r.frames)] = r.frames
            mask[j, : len(r.frames)] = True
            stamps.append(np.asarray(r.payload.get(Key.TIMESTAMPS) or [], dtype=np.float64))
        return cls(order, np.asarray(owner, dtype=np.int64), frames, mask, stamps)

    def per_video(self) -> tuple[np.ndarray, np.ndarray]:
        """Frames with a video's segments concatenated: ((V, F', D) float32, (V, F') bool)."""
        if len(self.point_video) == self.num_videos:
            return self.frames, self.mask
        lengths = np.bincount(self.point_video, weights=self.mask.sum(axis=1), minlength=self.num_videos)
        out = np.zeros((self.num_videos, int(lengths.max()), self.frames.shape[2]), np.float32)
        mask = np.zeros(out.shape[:2], bool)
        fill = np.zeros(self.num_videos, np.int64)
        for p, v in enumerate(self.point_video):
            f = self.frames[p, self.mask[p]]
            out[v, fill[v] : fill[v] + len(f)] = f
            mask[v, fill[v] : fill[v] + len(f)] = True
            fill[v] += len(f)
        return out, mask


def relevance_for(queries: Sequence[EvalQuery], video_ids: Sequence[str]) -> tuple[list[int], list[set[int]]]:
    """Column indices of each query's relevant videos; queries with none in the corpus are dropped.

    Returns:
        ``(kept query indices, relevant column sets)``; a warning is logged for dropped queries.
    """
    col = {v: i for i, v in enumerate(video_ids)}
    kept, rel = [], []
    for i, q in enumerate(queries):
        s = {col[v] for v in q.video_ids if v in col}
        if s:
            kept.append(i)
            rel.append(s)
    if len(kept) < len(queries):
        log.warning(
            "%d of %d queries name no video of the corpus; they are skipped",
            len(queries) - len(kept),
            len(queries),
        )
    if not kept:
        raise InvalidInputError("no query names a video of the corpus: check the video ids in the query file")
    return kept, rel


# ------------------------------------------------------------------------------------------ scoring


def exhaustive_scores(
    aggregator: Aggregator,
    text: np.ndarray,
    corpus: EvalCorpus | np.ndarray,
    mask: np.ndarray | None = None,
    *,
    query_chunk: int = 256,
    video_chunk: int | None = None,
    max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES,
) -> np.ndarray:
    """Score every query against every video, in blocks of bounded memory.

    Args:
        aggregator: any stage-2 :class:`Aggregator` (an :class:`XPoolHead` uses its factorised form,
            its per-video tensors computed once per video block and reused by every query block).
        text: (Q, D) float32 L2-normalised query embeddings.
        corpus: an :class:`EvalCorpus`, or a (V, F, D) float32 frame array (with ``mask``).
        mask: (V, F) bool when ``corpus`` is an array.
        query_chunk: queries per block.
        video_chunk: points per block (None: as many as fit in ``max_block_bytes``).
        max_block_bytes: approximate bound on one block's temporaries.

    Returns:
        (Q, V) float32 scores; a video with several points takes its best point's score.
    """
    if not isinstance(corpus, EvalCorpus):
        arr = np.asarray(corpus)
        corpus = EvalCorpus.from_arrays(
            [str(i) for i in range(arr.shape[0])] if arr.ndim == 3 else [], arr, mask
        )
    text = np.asarray(text, dtype=np.float32)
    if text.ndim != 2 or text.shape[1] != corpus.frames.shape[2]:
        raise InvalidInputError(f"text must be (Q, {corpus.frames.shape[2]}), got {text.shape}")
    q_n, dim = text.shape
    p_n, f_n = corpus.frames.shape[:2]
    qc = max(1, int(query_chunk))
    if video_chunk is None:
        per_video = min(qc, q_n or 1) * (dim + 4 * f_n) * 8
        video_chunk = max(1, int(max_block_bytes) // per_video)
    vc = max(1, int(video_chunk))
    out = np.full((q_n, corpus.num_videos), -np.inf, dtype=np.float32)
    head = aggregator if isinstance(aggregator, XPoolHead) else None
    for lo in range(0, p_n, vc):
        hi = min(p_n, lo + vc)
        frames, m = corpus.frames[lo:hi], corpus.mask[lo:hi]
        cache: XPoolVideoCache | None = head.precompute(frames, m) if head is not None else None
        block = np.empty((q_n, hi - lo), dtype=np.float32)
        for qlo in range(0, q_n, qc):
            qhi = min(q_n, qlo + qc)
            if head is not None and cache is not None:
                block[qlo:qhi] = head.similarity_cached(text[qlo:qhi], cache)
            else:
                block[qlo:qhi] = aggregator.aggregate(text[qlo:qhi], frames, m).scores
        owners = corpus.point_video[lo:hi]
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        best = np.maximum.reduceat(block, starts, axis=1)
        cols = owners[starts]
        out[:, cols] = np.maximum(out[:, cols], best)
    return out


def two_stage_results(
    collection: VideoCollection,
    vectors: np.ndarray,
    aggregator: Aggregator,
    *,
    candidates: int,
    limit: int | None = None,
    query_chunk: int = 32,
) -> list[list[tuple[str, float]]]:
    """Run the production search for every query vector: ranked ``(video_id, score)`` lists.

    Args:
        collection: the collection (stage 1 runs in its back end).
        vectors: (Q, D) float32 query embeddings.
        aggregator: stage-2 aggregation.
        candidates: K stage-1 candidates per query.
        limit: videos to keep per query (default: all candidates' videos).
        query_chunk: queries per ``search_batch`` call (bounds the frames held in memory: Q·K·F·D).
    """
    keep = candidates if limit is None else limit
    out: list[list[tuple[str, float]]] = []
    for lo in range(0, len(vectors), max(1, query_chunk)):
        batch = [np.asarray(v, dtype=np.float32) for v in vectors[lo : lo + query_chunk]]
        hits = collection.search_batch(
            batch, limit=keep, candidates=candidates, aggregation=aggregator, with_payload=False
        )
        out.extend([(h.video_id, h.score) for h in hs] for hs in hits)
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
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, agg in aggregations.items():
        per: dict[str, dict[str, float]] = {}
        exhaustive = None
        if "exhaustive" in modes:
            exhaustive = exhaustive_scores(
                agg, vectors, corpus, query_chunk=query_chunk, max_block_bytes=max_block_bytes
            )
            per["exhaustive"] = evaluate_retrieval(exhaustive, rel)
        if "two_stage" in modes:
            ranked = two_stage_results(collection, vectors, agg, candidates=candidates)
            m = evaluate_retrieval(two_stage_scores(ranked, corpus.video_ids), rel)
            if exhaustive is not None:
                idx = [[col[v] for v, _ in hits if v in col] for hits in ranked]
                m[f"top{k_agreement}_recall_vs_exhaustive"] = topk_agreement(exhaustive, idx, k_agreement)
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


def format_report(report: Mapping[str, Any]) -> str:
    """A plain-text table of :func:`evaluate_collection` output."""
    extra = next(
        (
            k
            for per in report["results"].values()
            for m in per.values()
            for k in m
            if k.endswith("_vs_exhaustive")
        ),
        None,
    )
    head = (
        f"{'aggregation':<15} {'mode':<10} {'n':>5} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MdR':>6} {'MnR':>8}"
    )
    lines = [head + (f" {'top10 vs exh':>12}" if extra else "")]
    for name, per in report["results"].items():
        for mode, m in per.items():
            row = (
                f"{name:<15} {mode:<10} {int(m['n']):>5} {m['R@1']:>6.3f} {m['R@5']:>6.3f} {m['R@10']:>6.3f} "
                f"{m['MdR']:>6.1f} {m['MnR']:>8.2f}"
            )
            if extra:
                v = m.get(extra)
                row += f" {v:>12.3f}" if v is not None and not math.isnan(v) else f" {'':>12}"
            lines.append(row)
    return "\n".join(lines)

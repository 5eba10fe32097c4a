"""Two-stage recall@10 vs exhaustive on 100k synthetic-embedding videos: the K / recall / latency curve.

    python benchmarks/bench_recall.py [--videos 100000] [--queries 200] [--edge] [--edge-videos N]

The corpus is random but structured like real frame embeddings (12 frames x 512, float32): there
are ``--topics`` topic directions; a video is 1-4 scenes of unequal lengths, each scene a topic plus
a scene-specific offset (its norm varying by scene), each frame that plus frame noise (so frames of a scene are close, scenes of
a topic share a direction, and a video's mean vector mixes its scenes). A query is a noisy copy of
one frame of one video (a caption naming one moment). This is the case two-stage search is weakest
at: stage 1 ranks by the *pooled* (mean) vector, where the queried scene is diluted by the others,
while stage 2 (text-conditioned) scores the video by the matching frames.

- ``exhaustive``: the stage-2 aggregation over all videos (chunked, :func:`exhaustive_scores`).
- ``ideal ANN``: stage 1 as exact numpy top-K on the pooled vectors; the two-stage top-10 is the
  exhaustive top-10 restricted to those K candidates (stage-2 scores of a video do not depend on
  the other candidates, so this equals running stage 2 on them). Latencies: stage 1 exact top-K,
  and stage 2 on K candidates for one query (gather (K, F, D) + aggregate), medians.
- ``pooled+MaxSim``: a frame-aware stage 1 (the best K/2 videos by MaxSim, i.e. their best frame's
  cosine, as HNSW on the ``frames`` multivector would give, plus the best of the pooled ranking up
  to K), exact in numpy.
- ``--edge``: real Qdrant Edge HNSW on the first ``--edge-videos`` videos through the production
  path (``VideoCollection.search``: stage 1 + frames + stage 2), one collection built as in
  production (``index_frames=True``: HNSW on the pooled vector and on the ``frames`` multivector),
  searched with the default hybrid stage 1 (RRF of a frames-MaxSim prefetch of K//2 and a pooled
  prefetch of K) and with pooled-only stage 1; hnsw_ef=max(512, K) for the pooled search, the
  frames prefetch at ``StageOneQuery.frames_hnsw_ef`` (swept with ``--edge-frames-efs``). Recall
  is relative to the exhaustive top-10 over the same videos, printed beside the numpy simulation
  of the same stage 1 on those videos.

Memory stays bounded: frames are generated and stored as float32 (2.4 GB at 100k x 12 x 512), and
the exhaustive pass never forms a (Q, V, F, D) tensor. Prints the curve, writes
``benchmarks/results/recall.json`` and the smallest K reaching ``--target`` recall.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import median_seconds, print_table, write_json  # noqa: E402

from vtr_qdrant.eval.corpus import EvalCorpus, exhaustive_scores  # noqa: E402
from vtr_qdrant.search.aggregation import Aggregator  # noqa: E402
from vtr_qdrant.search.resolve import get_aggregator  # noqa: E402

log = logging.getLogger("bench_recall")
KS = [10, 20, 50, 100, 150, 200, 300, 500, 1000, 2000]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_corpus(
    n: int,
    frames: int,
    dim: int,
    topics: int,
    seed: int,
    *,
    scene_spread: float,
    frame_noise: float,
    max_scenes: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """((n, F, D) float32 unit frames, (n, D) float32 unit pooled vectors), generated in blocks."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((topics, dim), dtype=np.float32))
    out = np.empty((n, frames, dim), np.float32)
    pooled = np.empty((n, dim), np.float32)
    block = 2000
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        m = hi - lo
        n_scenes = rng.integers(1, max_scenes + 1, size=m)
        scene_of = np.zeros((m, frames), np.int64)
        for i, s in enumerate(n_scenes):
            cuts = np.sort(rng.choice(np.arange(1, frames), size=s - 1, replace=False))
            scene_of[i] = np.searchsorted(cuts, np.arange(frames), side="right")
        topic = rng.integers(0, topics, size=(m, max_scenes))
        offset = _unit(rng.standard_normal((m, max_scenes, dim), dtype=np.float32))
        rows = np.arange(m)[:, None]
        # per-scene distance from its topic varies, so a query's neighbours form a continuum (few exact ties)
        spread = scene_spread * rng.uniform(0.5, 1.5, size=(m, max_scenes, 1)).astype(np.float32)
        base = centres[topic[rows, scene_of]] + (spread * offset)[rows, scene_of]
        noise = _unit(rng.standard_normal((m, frames, dim), dtype=np.float32))
        out[lo:hi] = _unit(base + frame_noise * noise)
        pooled[lo:hi] = _unit(out[lo:hi].mean(axis=1))
    return out, pooled


def make_queries(frames: np.ndarray, q: int, seed: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """(Q, D) unit queries near one random frame of random videos, and their source videos."""
    rng = np.random.default_rng(seed + 1)
    vids = rng.choice(len(frames), size=q, replace=False)
    f = rng.integers(0, frames.shape[1], size=q)
    n = _unit(rng.standard_normal((q, frames.shape[2]), dtype=np.float32))
    return _unit(frames[vids, f] + noise * n).astype(np.float32), vids


def topk_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) column indices of each row's k best scores, best first."""
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def recall_curve(exhaustive: np.ndarray, candidates: np.ndarray, ks: list[int]) -> dict[int, float]:
    """Recall of the two-stage top-10 (exhaustive top-10 restricted to the first K candidates)."""
    truth = topk_rows(exhaustive, 10)
    out = {}
    for k in ks:
        cand = candidates[:, :k]
        sub = np.take_along_axis(exhaustive, cand, axis=1)
        top = np.take_along_axis(cand, topk_rows(sub, min(10, k)), axis=1)
        out[k] = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth.tolist(), top.tolist())]))
    return out


def hybrid_candidates(pooled_rank: np.ndarray, maxsim_rank: np.ndarray, k: int) -> np.ndarray:
    """(Q, K): the best K/2 by MaxSim (frame-aware stage 1), then filled up to K from the pooled ranking."""
    out = np.empty((len(pooled_rank), k), np.int64)
    for q in range(len(pooled_rank)):
        seen = dict.fromkeys(maxsim_rank[q, : k // 2].tolist())
        for c in pooled_rank[q].tolist():
            if len(seen) >= k:
                break
            seen.setdefault(c)
        out[q] = list(seen)[:k]
    return out


def stage_latencies(
    agg: Aggregator, frames: np.ndarray, pooled: np.ndarray, queries: np.ndarray, ks: list[int]
) -> dict[int, dict[str, float]]:
    """Median ms per query of exact stage 1 (top-K on pooled) and stage 2 on K candidates."""
    it = iter(range(10**9))
    out = {}
    for k in ks:

        def stage1() -> np.ndarray:
            q = queries[next(it) % len(queries)]
            s = pooled @ q
            return np.argpartition(-s, k - 1)[:k]

        cands = [stage1() for _ in range(8)]

        def stage2() -> None:
            c = cands[next(it) % len(cands)]
            agg.aggregate(queries[:1], frames[np.sort(c)])

        out[k] = {
            "stage1_ms": 1e3 * median_seconds(stage1, repeats=7),
            "stage2_ms": 1e3 * median_seconds(stage2, repeats=7),
        }
    return out


EDGE_VARIANTS = {"hybrid": True, "pooled": False}


def edge_curve(
    frames: np.ndarray,
    queries: np.ndarray,
    exhaustive: dict[str, np.ndarray],
    aggs: dict[str, Aggregator],
    ks: list[int],
    ef: int,
    variants: list[str],
    latency_repeats: int = 7,
    frames_efs: list[int] | None = None,
) -> dict[str, Any]:
    """Real Qdrant Edge HNSW through the production ``VideoCollection.search``, per stage-1 variant.

    One collection is built the production way (``index_frames=True``: HNSW on the pooled vector and
    on the ``frames`` multivector) and searched with ``hybrid=True`` (the default stage 1: RRF of a
    frames-MaxSim prefetch of K//2 and a pooled prefetch of K) and ``hybrid=False`` (pooled-only
    stage 1; its pooled HNSW graph is built with the same settings as in a collection without
    ``index_frames``). recall@10 = overlap of the returned top-10 with ``exhaustive[agg]`` (Q, n)
    top-10; ``search_ms`` = median of one full ``search`` (stage 1 + frames + stage 2);
    ``stage1_ceiling`` = share of the exhaustive top-10 among the K stage-1 candidates.
    ``frames_efs``: also sweep the hybrid's frames-prefetch beam width (``frames_hnsw_ef``) at K=50/100.
    """
    from vtr_qdrant.collection import VideoCollection
    from vtr_qdrant.store.edge import EdgeBackend
    from vtr_qdrant.store.plan import StageOneQuery
    from vtr_qdrant.store.videos import EmbeddedVideo

    n, f, d = frames.shape
    ts = np.arange(f, dtype=np.float64)
    res: dict[str, Any] = {"videos": n, "hnsw_ef_min": ef, "curves": {}}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as root:
        backend = EdgeBackend(root, hnsw_ef=ef)
        first = next(iter(aggs.values()))
        vc = VideoCollection(backend, "recall", dim=d, aggregation=first, index_frames=True)
        t0 = time.perf_counter()
        for lo in range(0, n, 500):
            vc.upsert_embeddings_batch(
                EmbeddedVideo(f"{i}", frames[i], ts) for i in range(lo, min(n, lo + 500))
            )
            if lo % 20000 == 0:
                log.info("edge: ingested %d / %d (%.0f s)", lo, n, time.perf_counter() - t0)
        res["ingest_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        backend.optimize("recall")
        res["optimize_s"] = time.perf_counter() - t0
        log.info(
            "edge: ingest %.0f s, optimize (pooled + frames HNSW) %.0f s", res["ingest_s"], res["optimize_s"]
        )
        for name, agg in aggs.items():
            truth = topk_rows(exhaustive[name], 10)
            for variant in variants:
                hybrid = EDGE_VARIANTS[variant]
                curve: dict[int, dict[str, float]] = {}
                for k in ks:
                    backend.hnsw_ef = max(ef, k)
                    got = backend.query(
                        "recall",
                        [StageOneQuery(vector=q, limit=k, hybrid=hybrid, with_frames=False) for q in queries],
                    )
                    ceiling = np.mean(
                        [
                            len(set(truth[qi].tolist()) & {int(c.payload["video_id"]) for c in cs}) / 10
                            for qi, cs in enumerate(got)
                        ]
                    )
                    hits = vc.search_batch(
                        list(queries),
                        limit=10,
                        candidates=k,
                        aggregation=agg,
                        hybrid=hybrid,
                        with_payload=False,
                    )
                    rec = np.mean(
                        [
                            len(set(truth[qi].tolist()) & {int(h.video_id) for h in hs}) / 10
                            for qi, hs in enumerate(hits)
                        ]
                    )
                    it = iter(range(10**9))

                    def one() -> None:
                        vc.search(
                            queries[next(it) % len(queries)],
                            limit=10,
                            candidates=k,
                            aggregation=agg,
                            hybrid=hybrid,  # noqa: B023
                            with_payload=False,
                        )

                    ms = 1e3 * median_seconds(one, repeats=latency_repeats, warmup=1)
                    curve[k] = {
                        "recall@10": float(rec),
                        "stage1_ceiling": float(ceiling),
                        "search_ms": ms,
                        "hnsw_ef": float(backend.hnsw_ef or 0),
                    }
                    log.info(
                        "edge %s %s K=%d recall %.4f (stage 1 %.4f) search %.1f ms",
                        name,
                        variant,
                        k,
                        rec,
                        ceiling,
                        ms,
                    )
                res["curves"].setdefault(name, {})[variant] = curve
            # the hybrid stage 1's frames-prefetch beam width: stage-1 ceiling and stage-1 latency
            sweep: dict[int, dict[int, dict[str, float]]] = {}
            for k in [k for k in ks if k in (50, 100)]:
                for fef in frames_efs or []:
                    reqs = [
                        StageOneQuery(
                            vector=q, limit=k, hybrid=True, with_frames=False, hnsw_ef=ef, frames_hnsw_ef=fef
                        )
                        for q in queries
                    ]
                    t0 = time.perf_counter()
                    got = [backend.query("recall", [r])[0] for r in reqs]
                    ms = 1e3 * (time.perf_counter() - t0) / len(reqs)
                    ceiling = np.mean(
                        [
                            len(set(truth[qi].tolist()) & {int(c.payload["video_id"]) for c in cs}) / 10
                            for qi, cs in enumerate(got)
                        ]
                    )
                    sweep.setdefault(k, {})[fef] = {"stage1_ceiling": float(ceiling), "stage1_ms": ms}
                    log.info(
                        "edge %s hybrid K=%d frames_hnsw_ef=%d: stage 1 %.4f, %.1f ms",
                        name,
                        k,
                        fef,
                        ceiling,
                        ms,
                    )
            res["frames_ef_sweep"] = {name: sweep}
        backend.close()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=100_000)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument(
        "--topics", type=int, default=2000, help="topic directions (videos per topic ~ videos*2.5/topics)"
    )
    ap.add_argument("--max-scenes", type=int, default=4, help="scenes per video: 1..max (1-2: clips)")
    ap.add_argument("--scene-spread", type=float, default=0.8, help="scene offset norm relative to its topic")
    ap.add_argument("--frame-noise", type=float, default=0.4, help="frame noise norm relative to its topic")
    ap.add_argument("--query-noise", type=float, default=1.0, help="query noise norm relative to its frame")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--aggregations", default="softmax,max", help="stage-2 aggregations (comma-separated)")
    ap.add_argument("--ks", type=int, nargs="+", default=KS)
    ap.add_argument("--target", type=float, default=0.99)
    ap.add_argument("--edge", action="store_true", help="also measure real Qdrant Edge HNSW")
    ap.add_argument("--edge-videos", type=int, default=None, help="videos loaded into Edge (default all)")
    ap.add_argument("--edge-ef", type=int, default=512, help="hnsw_ef (raised to K when K is larger)")
    ap.add_argument("--edge-ks", type=int, nargs="+", default=None, help="K values for Edge (default --ks)")
    ap.add_argument(
        "--edge-frames-efs",
        type=int,
        nargs="*",
        default=[512, 1024, 2048, 4096],
        help="frames-prefetch hnsw_ef values to sweep for the hybrid stage 1 (K=50, 100)",
    )
    ap.add_argument(
        "--edge-variants",
        default="hybrid,pooled",
        help="Edge stage-1 variants: hybrid (production default, index_frames=True) and/or pooled",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="recall", help="results file name (benchmarks/results/<name>.json)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("vtr_qdrant").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    ks = sorted(k for k in args.ks if k <= args.videos)

    t0 = time.perf_counter()
    frames, pooled = make_corpus(
        args.videos,
        args.frames,
        args.dim,
        args.topics,
        args.seed,
        scene_spread=args.scene_spread,
        frame_noise=args.frame_noise,
        max_scenes=args.max_scenes,
    )
    queries, sources = make_queries(frames, args.queries, args.seed, args.query_noise)
    log.info(
        "corpus %s float32 (%.2f GB) in %.0f s", frames.shape, frames.nbytes / 2**30, time.perf_counter() - t0
    )
    corpus = EvalCorpus(
        [str(i) for i in range(args.videos)], np.arange(args.videos), frames, np.ones(frames.shape[:2], bool)
    )
    candidates = topk_rows(queries @ pooled.T, max(ks))  # ideal ANN: exact top-K on the pooled vector

    # frame-aware stage 1 (e.g. HNSW on the frames multivector, MaxSim): exact MaxSim top-K here
    maxsim_rank = topk_rows(exhaustive_scores(get_aggregator("max"), queries, corpus), max(ks))
    hybrid = {k: hybrid_candidates(candidates, maxsim_rank, k) for k in ks}
    results: dict[str, Any] = {}
    exhaustive_by_agg: dict[str, np.ndarray] = {}
    rows: list[list[Any]] = []
    for name in [a.strip() for a in args.aggregations.split(",") if a.strip()]:
        agg = get_aggregator(name)
        t0 = time.perf_counter()
        exhaustive = exhaustive_scores(agg, queries, corpus)
        ex_s = time.perf_counter() - t0
        source_top1 = float(np.mean(np.argmax(exhaustive, axis=1) == sources))
        curve = recall_curve(exhaustive, candidates, ks)
        lat = stage_latencies(agg, frames, pooled, queries, ks)
        entry: dict[str, Any] = {
            "exhaustive_s": ex_s,
            "source_video_top1": source_top1,
            "curve": {k: {"recall@10": curve[k], **lat[k]} for k in ks},
        }
        hyb = {k: recall_curve(exhaustive, hybrid[k], [k])[k] for k in ks}
        entry["hybrid_curve"] = {k: {"recall@10": hyb[k]} for k in ks}
        reach_h = [k for k in ks if hyb[k] >= args.target]
        entry["hybrid_smallest_k_reaching_target"] = reach_h[0] if reach_h else None
        reach = [k for k in ks if curve[k] >= args.target]
        entry["smallest_k_reaching_target"] = reach[0] if reach else None
        log.info("%s: exhaustive %.0f s, recall %s", name, ex_s, curve)
        for k in ks:
            rows.append([name, "ideal ANN", k, curve[k], lat[k]["stage1_ms"], lat[k]["stage2_ms"], ""])
        for k in ks:
            rows.append([name, "pooled+MaxSim", k, hyb[k], "", "", ""])
        results[name] = entry
        exhaustive_by_agg[name] = exhaustive

    if args.edge:
        n_edge = min(args.edge_videos or args.videos, args.videos)
        edge_ks = sorted(k for k in (args.edge_ks or ks) if k <= n_edge)
        aggs = {name: get_aggregator(name) for name in exhaustive_by_agg}
        subs = {name: ex[:, :n_edge] for name, ex in exhaustive_by_agg.items()}
        variants = [v.strip() for v in args.edge_variants.split(",") if v.strip()]
        unknown = [v for v in variants if v not in EDGE_VARIANTS]
        if unknown:
            raise SystemExit(f"unknown --edge-variants {unknown}: choose from {sorted(EDGE_VARIANTS)}")
        edge = edge_curve(
            frames[:n_edge],
            queries,
            subs,
            aggs,
            edge_ks,
            args.edge_ef,
            variants,
            frames_efs=args.edge_frames_efs,
        )
        # the numpy simulation of the same stage 1 on the same videos, for a like-for-like comparison
        sub_corpus = EvalCorpus(
            corpus.video_ids[:n_edge], np.arange(n_edge), frames[:n_edge], corpus.mask[:n_edge]
        )
        sub_pooled = topk_rows(queries @ pooled[:n_edge].T, max(edge_ks))
        sub_maxsim = topk_rows(exhaustive_scores(get_aggregator("max"), queries, sub_corpus), max(edge_ks))
        for name, ex in subs.items():
            sim = {
                "hybrid": {
                    k: recall_curve(ex, hybrid_candidates(sub_pooled, sub_maxsim, k), [k])[k] for k in edge_ks
                },
                "pooled": recall_curve(ex, sub_pooled, edge_ks),
            }
            edge["curves"][name]["simulation"] = sim
            for variant in variants:
                for k, v in edge["curves"][name][variant].items():
                    rows.append(
                        [
                            name,
                            f"edge {n_edge // 1000}k {variant} (sim {sim[variant][k]:.3f})",
                            k,
                            v["recall@10"],
                            "",
                            "",
                            v["search_ms"],
                        ]
                    )
        results["edge"] = edge

    print(
        f"\ntwo-stage recall@10 vs exhaustive: {args.videos} videos x {args.frames} frames x {args.dim}, "
        f"1-{args.max_scenes} scenes per video, {args.topics} topics, {args.queries} queries near one frame"
    )
    print_table(["aggregation", "stage 1", "K", "recall@10", "stage1 ms", "stage2 ms", "search ms"], rows)
    for name, e in results.items():
        if name == "edge":
            print(
                f"edge: {e['videos']} videos, ingest {e['ingest_s']:.0f} s, optimize {e['optimize_s']:.0f} s"
            )
            continue
        print(
            f"{name}: smallest K with recall@10 >= {args.target}: pooled {e['smallest_k_reaching_target']}, "
            f"pooled+MaxSim {e['hybrid_smallest_k_reaching_target']}"
        )
    path = write_json(
        args.name,
        {
            "args": vars(args),
            "note": "ideal ANN = exact top-K on the pooled vector; stage2_ms = one query, K candidates, "
            "gather + aggregate; edge search_ms = full VideoCollection.search on Qdrant Edge HNSW",
            "results": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

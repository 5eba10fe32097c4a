"""Search latency and recall at scale on Qdrant Edge: the default path beside Qdrant's own recipe.

    python benchmarks/bench_search.py --videos 20000 --json benchmarks/results/search20k.json

Builds (or reuses, from ``--cache-dir``) an Edge collection of N synthetic-embedding videos x 12
frames x 512 with 1-2 scenes per video (the corpus of ``bench_recall.py``: topic directions, scene
offsets, frame noise), runs ``--queries`` (>= 200) queries near one frame of a random video, and
times each method per query (no text encoding: the queries are vectors) after one untimed pass
of the default search over the queries (a warm, long-running searcher; ``--no-warmup`` to time a
cold start, where the first queries read pages from disk). recall@10 is measured
against the exhaustive text-conditioned search with the collection's default aggregation.

Methods (the rows):

- ``default``: ``VideoCollection.search(q, limit=10)`` with default settings (frame-aware stage 1,
  K=100, stage 2 with the frames LRU as a long-running process has it);
- ``default-cold``: the same with the frames and precompute LRUs emptied before every query;
- ``pooled-only``: ``search(q, hybrid=False)`` (pooled HNSW stage 1, K=100, stage 2);
- ``qdrant-recipe``: Qdrant's multivector recipe in one request: pooled prefetch 100 -> MaxSim on
  the frames -> top 10 (and ``qdrant-recipe-400``: prefetch 400);
- ``ann-floor``: the bare pooled HNSW query returning 100 ids + payloads, no vectors;
- ``exhaustive``: the aggregation over every video in numpy (recall 1 by definition).

``--breakdown`` adds where the default's milliseconds go: stage 1 (the ANN request), the frames
fetch with conversion to numpy (cold), stage 2 + hits.

Writes ``{"videos", "build_s", "rss_mb", "disk_mb", "rows": [{"method", "recall_at_10", "p50_ms",
"p99_ms"}], "breakdown": {...}}`` to ``--json`` and prints the same as a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import print_table  # noqa: E402
from bench_recall import make_corpus, make_queries, topk_rows  # noqa: E402

from vtr_qdrant import EdgeBackend, EmbeddedVideo, VideoCollection  # noqa: E402
from vtr_qdrant.eval.corpus import exhaustive_scores  # noqa: E402
from vtr_qdrant.store.plan import StageOneQuery  # noqa: E402
from vtr_qdrant.store.points import VECTOR_FRAMES, VECTOR_SCENES  # noqa: E402

log = logging.getLogger("bench_search")
NAME = "bench"
FRAMES, DIM, TOPICS = 12, 512, 2000


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def build(folder: Path, frames: np.ndarray, *, batch: int = 500) -> dict[str, float]:
    """Upload every video (indexing deferred by Edge until ``optimize``), then build the indexes once."""
    if folder.exists():
        shutil.rmtree(folder)
    backend = EdgeBackend(folder)
    vc = VideoCollection(backend, NAME, dim=DIM)
    ts = np.arange(FRAMES, dtype=np.float64) * 0.5
    t0 = time.perf_counter()
    for lo in range(0, len(frames), batch):
        vc.upsert_embeddings_batch(EmbeddedVideo(f"v{i}", frames[i], ts) for i in range(lo, min(len(frames), lo + batch)))
        if (lo // batch) % 10 == 0:
            log.info("uploaded %d / %d videos (%.0f s)", lo + batch, len(frames), time.perf_counter() - t0)
    upload = time.perf_counter() - t0
    vc.optimize()
    total = time.perf_counter() - t0
    backend.close()
    log.info("built %d videos: upload %.0f s, index %.0f s", len(frames), upload, total - upload)
    return {"build_s": total, "upload_s": upload, "index_s": total - upload}


def _percentiles(ts: list[float]) -> tuple[float, float]:
    a = 1e3 * np.asarray(ts)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def _timed(fn: Callable[[np.ndarray], list[int]], queries: np.ndarray) -> tuple[list[list[int]], list[float]]:
    fn(queries[0])  # warm-up
    out, times = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(fn(q))
        times.append(time.perf_counter() - t)
    return out, times


def _recall(truth: np.ndarray, got: list[list[int]]) -> float:
    return float(np.mean([len(set(t.tolist()) & set(g[:10])) / 10 for t, g in zip(truth, got)]))


def run_methods(vc: VideoCollection, queries: np.ndarray, truth: np.ndarray) -> list[dict[str, Any]]:
    """Every method of the module doc over every query: recall@10, p50, p99."""
    backend = vc.backend

    def vid(x: str) -> int:
        return int(x[1:])

    def default(q: np.ndarray) -> list[int]:
        return [vid(h.video_id) for h in vc.search(q, limit=10)]

    def cold(q: np.ndarray) -> list[int]:
        vc.stage_two.clear()
        return default(q)

    def pooled(q: np.ndarray) -> list[int]:
        return [vid(h.video_id) for h in vc.search(q, limit=10, hybrid=False)]

    def recipe(prefetch: int) -> Callable[[np.ndarray], list[int]]:
        def run(q: np.ndarray) -> list[int]:
            sq = StageOneQuery(q, limit=10, rescore=True, rescore_factor=prefetch // 10, with_frames=False, hnsw_ef=vc.hnsw_ef)
            return [vid(str(c.payload["video_id"])) for c in backend.query(NAME, [sq])[0]]
        return run

    def floor(q: np.ndarray) -> list[int]:
        sq = StageOneQuery(q, limit=100, with_frames=False, hnsw_ef=vc.hnsw_ef)
        return [vid(str(c.payload["video_id"])) for c in backend.query(NAME, [sq])[0]]

    rows = []
    for method, fn, recall in [("default", default, True), ("default-cold", cold, True), ("pooled-only", pooled, True),
                               ("qdrant-recipe", recipe(100), True), ("qdrant-recipe-400", recipe(400), True),
                               ("ann-floor", floor, False)]:
        got, times = _timed(fn, queries)
        p50, p99 = _percentiles(times)
        rows.append({"method": method, "recall_at_10": _recall(truth, got) if recall else None, "p50_ms": p50, "p99_ms": p99})
        log.info("%s: p50 %.1f ms", method, p50)
    return rows


def breakdown(vc: VideoCollection, queries: np.ndarray) -> dict[str, float]:
    """Median ms per query of each step of the default search, cold caches."""
    from vtr_qdrant.search.query import DEFAULT_CANDIDATES

    steps: dict[str, list[float]] = {"stage1_ann": [], "frames_fetch": [], "stage2_and_hits": []}
    for q in queries:
        vc.stage_two.clear()
        sq = StageOneQuery(q, limit=DEFAULT_CANDIDATES, hybrid=vc.frames_indexed, hnsw_ef=vc.hnsw_ef,
                           frames_hnsw_ef=vc.frames_hnsw_ef, with_frames=vc.stage_two.frames_with_stage_one,
                           aware_vector=VECTOR_SCENES if vc.schema.scenes_indexed else VECTOR_FRAMES)
        t0 = time.perf_counter()
        cands = vc.backend.query(NAME, [sq])[0]
        t1 = time.perf_counter()
        vc.stage_two.attach_frames(vc.backend, NAME, cands)
        t2 = time.perf_counter()
        vc.stage_two.rank(q, cands, vc.aggregation, limit=10)
        t3 = time.perf_counter()
        for k, v in zip(steps, (t1 - t0, t2 - t1, t3 - t2)):
            steps[k].append(v)
    return {f"{k}_p50_ms": 1e3 * float(np.median(v)) for k, v in steps.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--cache-dir", type=Path, default=Path(os.environ.get("VTR_BENCH_CACHE", Path.home() / ".cache" / "vtr-qdrant" / "bench_search")))
    ap.add_argument("--rebuild", action="store_true", help="build the collection even if a cached one exists")
    ap.add_argument("--breakdown", action="store_true", help="also time the default's steps")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false",
                    help="time from a cold start (the first queries page the index and frame store in from disk)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    frames, _ = make_corpus(args.videos, FRAMES, DIM, TOPICS, args.seed, scene_spread=0.8, frame_noise=0.4, max_scenes=2)
    queries, _ = make_queries(frames, args.queries, args.seed, 1.0)
    folder = args.cache_dir / f"edge-{args.videos}-seed{args.seed}"
    marker = folder / "built.json"
    if args.rebuild or not marker.exists():
        info = build(folder, frames)
        marker.write_text(json.dumps(info))
    else:
        info = json.loads(marker.read_text())
        log.info("reusing %s (built in %.0f s)", folder, info["build_s"])
    vc = VideoCollection(EdgeBackend(folder), NAME, dim=DIM)

    t = time.perf_counter()
    exhaustive = exhaustive_scores(vc.aggregation, queries, frames)
    ex_ms = 1e3 * (time.perf_counter() - t) / len(queries)
    truth = topk_rows(exhaustive, 10)
    if args.warmup:  # a long-running searcher: the engine's and the frame store's pages are in memory
        t = time.perf_counter()
        for q in queries:
            vc.search(q, limit=10)
        log.info("warm-up pass over %d queries: %.1f s", len(queries), time.perf_counter() - t)
    rows = run_methods(vc, queries, truth)
    rows.append({"method": "exhaustive", "recall_at_10": 1.0, "p50_ms": ex_ms, "p99_ms": ex_ms})
    out: dict[str, Any] = {"videos": args.videos, "queries": args.queries, "aggregation": vc.aggregation.name,
                           **info, "rss_mb": _rss_mb(), "disk_mb": _disk_mb(folder), "rows": rows}
    floor = next(r["p50_ms"] for r in rows if r["method"] == "ann-floor")
    for r in rows:
        r["p50_vs_floor"] = r["p50_ms"] / floor
    if args.breakdown:
        out["breakdown"] = breakdown(vc, queries)
    print(f"\n{args.videos} videos x {FRAMES} x {DIM}, {args.queries} queries, Qdrant Edge; build {info['build_s']:.0f} s, "
          f"RSS {out['rss_mb']:.0f} MB, disk {out['disk_mb']:.0f} MB; aggregation {vc.aggregation.name}")
    print_table(["method", "recall@10", "p50 ms", "p99 ms", "p50 / floor"],
                [[r["method"], "-" if r["recall_at_10"] is None else r["recall_at_10"], r["p50_ms"], r["p99_ms"], r["p50_vs_floor"]]
                 for r in rows])
    if args.breakdown:
        print("default, cold, per step (p50 ms): " + ", ".join(f"{k} {v:.1f}" for k, v in out["breakdown"].items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()

"""Stage-2 cost per query: turning Qdrant's returned frame lists into arrays, and each aggregation.

    python benchmarks/bench_stage2.py [--frames 12] [--dim 512] [--videos 2000] [--backends local edge]

Prints a table (milliseconds per query, median) for 100 / 200 / 1000 candidates and writes
benchmarks/results/stage2.json. "convert" is what VideoCollection does with a stage-1 response
(lists of lists -> padded (K, F, D) float32 + mask); the aggregation columns start from arrays.

The second table is the production path end to end: ``VideoCollection.search`` (query vector,
softmax aggregation, hybrid stage 1) on ``--videos`` random videos in qdrant-client local mode and
Qdrant Edge, for K candidates, with the frames cache off (frames come with stage 1), cold (cache
emptied before every query: stage 1 without vectors + one by-id read) and warm (the same query
again: no frames read at all). All three arms run interleaved in the same loop.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# one BLAS thread, as a query server should run: with 2 threads on a busy 2-core machine, OpenBLAS
# spin-waits and a 0.2 ms aggregation can take 16 ms
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import median_seconds, print_table, write_json  # noqa: E402

from vtr_qdrant import VideoCollection  # noqa: E402
from vtr_qdrant.search.aggregation import Aggregator, MaxFrame, MeanPooling, SoftmaxPooling, TopKFrames  # noqa: E402
from vtr_qdrant.search.xpool import XPoolHead  # noqa: E402
from vtr_qdrant.store.backend import StorageBackend, frames_of  # noqa: E402


def _backend(kind: str, tmp: Path) -> tuple[StorageBackend, object]:
    if kind == "edge":
        from vtr_qdrant.store.edge import EdgeBackend

        b = EdgeBackend(tmp / "edge", max_search_threads=1)
        return b, b
    import warnings

    from qdrant_client import QdrantClient

    from vtr_qdrant.store.qdrant import QdrantClientBackend

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client = QdrantClient(":memory:")
    return QdrantClientBackend(client), client


def end_to_end(args: argparse.Namespace, rng: np.random.Generator) -> tuple[list[dict[str, object]], list[list[object]]]:
    """Median ms of one VideoCollection.search per (back end, K, cache arm), arms interleaved."""
    import statistics
    import tempfile
    import time

    from vtr_qdrant.store.videos import EmbeddedVideo

    results: list[dict[str, object]] = []
    rows: list[list[object]] = []
    for kind in args.backends:
        with tempfile.TemporaryDirectory() as tmp:
            backend, closer = _backend(kind, Path(tmp))
            vc = VideoCollection(backend, "bench", dim=args.dim, frames_cache_size=4 * max(args.e2e_candidates))
            ts = np.arange(args.frames, dtype=np.float64)
            for lo in range(0, args.videos, 250):
                batch = []
                for i in range(lo, min(lo + 250, args.videos)):
                    f = rng.standard_normal((args.frames, args.dim)).astype(np.float32)
                    batch.append(EmbeddedVideo(f"v{i}", f / np.linalg.norm(f, axis=1, keepdims=True), ts))
                vc.upsert_embeddings_batch(batch)
            vc.optimize()
            off = VideoCollection(backend, "bench", dim=args.dim, frames_cache_size=0)
            queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
            for k in args.e2e_candidates:
                times: dict[str, list[float]] = {"off": [], "cold": [], "warm": []}
                for q in queries:
                    for arm in ("off", "cold", "warm"):
                        if arm == "cold":
                            vc.stage_two.clear()
                        coll = off if arm == "off" else vc
                        t0 = time.perf_counter()
                        hits = coll.search(q, limit=10, candidates=k)
                        times[arm].append(time.perf_counter() - t0)
                        assert len(hits) == 10
                med = {a: 1e3 * statistics.median(t) for a, t in times.items()}
                results.append({"backend": kind, "videos": args.videos, "candidates": k, **{f"{a}_ms": v for a, v in med.items()},
                                "warm_speedup_vs_off": med["off"] / med["warm"], "cold_vs_off": med["cold"] / med["off"]})
                rows.append([kind, k, med["off"], med["cold"], med["warm"], med["off"] / med["warm"], med["cold"] / med["off"]])
            close = getattr(closer, "close", None)
            if close is not None:
                close()
    return results, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--candidates", type=int, nargs="+", default=[100, 200, 1000])
    ap.add_argument("--videos", type=int, default=2000, help="videos in the end-to-end collections (0: skip)")
    ap.add_argument("--e2e-candidates", type=int, nargs="+", default=[100, 200])
    ap.add_argument("--queries", type=int, default=15)
    ap.add_argument("--backends", nargs="+", default=["local", "edge"], choices=["local", "edge"])
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    identity = XPoolHead.identity(args.dim)
    params = identity.state_dict("")
    params["adaptive_scale.weight"] = 0.1 * rng.standard_normal(args.dim)  # the cost does not depend on the values
    params["adaptive_scale.bias"] = np.array(0.0)
    adaptive = XPoolHead(params)
    aggs: dict[str, Aggregator] = {
        "mean": MeanPooling(), "max": MaxFrame(), "topk": TopKFrames(3), "softmax": SoftmaxPooling(0.01),
        "xpool": identity, "adaptive": adaptive,
    }
    rows, results = [], []
    for k in args.candidates:
        frames = rng.standard_normal((k, args.frames, args.dim)).astype(np.float32)
        frames /= np.linalg.norm(frames, axis=2, keepdims=True)
        as_lists = [f.tolist() for f in frames]  # what qdrant-client hands back
        text = frames[0, 0][None, :].copy()

        def convert() -> None:
            arrs = [frames_of({"frames": x}) for x in as_lists]
            lengths = np.array([len(a) for a in arrs])
            out = np.zeros((len(arrs), lengths.max(), args.dim), np.float32)
            for i, a in enumerate(arrs):
                out[i, : len(a)] = a

        row = {"candidates": k, "convert_ms": 1e3 * median_seconds(convert, repeats=5)}
        mask = np.ones(frames.shape[:2], bool)
        for name, agg in aggs.items():
            row[f"{name}_ms"] = 1e3 * median_seconds(lambda agg=agg: agg.aggregate(text, frames, mask))
        for name in ("xpool", "adaptive"):  # with every candidate's state in stage 2's LRU
            states = aggs[name].precompute_candidates(frames, mask)
            row[f"{name}_cached_ms"] = 1e3 * median_seconds(lambda n=name, s=states: aggs[n].aggregate_precomputed(text, s))
        results.append(row)
        cols = [*aggs, "xpool_cached", "adaptive_cached"]
        rows.append([k, row["convert_ms"], *(row[f"{n}_ms"] for n in cols)])
    print(f"stage 2, ms per query, {args.frames} frames x {args.dim} dims, float32 (X-Pool heads: identity and "
          "query-adaptive, uncached = precompute included, cached = states from the LRU)")
    print_table(["K", "convert", *cols], rows)
    e2e: list[dict[str, object]] = []
    if args.videos:
        e2e, e2e_rows = end_to_end(args, rng)
        print(f"\nVideoCollection.search end to end, ms per query, {args.videos} videos, softmax, hybrid stage 1")
        print_table(["backend", "K", "cache off", "cold", "warm", "off/warm", "cold/off"], e2e_rows)
    path = write_json("stage2", {"frames": args.frames, "dim": args.dim, "results": results, "end_to_end": e2e})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

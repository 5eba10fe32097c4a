"""Search latency per query on qdrant-client local mode vs Qdrant Edge, and Edge's ANN recall.

    python benchmarks/bench_backends.py [--sizes 1000 10000] [--frames 12] [--dim 512] [--local-budget 240]

For each corpus size (random unit frame vectors, one point per video) and back end, times
``VideoCollection.search`` end to end (stage 1 in the store: pooled-vector search for 100
candidates, returning their frame matrices; stage 2 on the client: softmax pooling), with and
without MaxSim rescoring (prefetch 400 on the pooled vector, MaxSim over the frames). Edge is timed
as an exact scan before :meth:`EdgeBackend.optimize` (Edge never indexes on its own) and with
HNSW after it at several ``hnsw_ef``. Recall@10 compares the pooled ANN top 10 with the exact
top 10. Local mode is skipped at a size whose ingestion is predicted to exceed ``--local-budget``
seconds. Writes benchmarks/results/backends.json.
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
from qdrant_client import QdrantClient  # noqa: E402

from vtr_qdrant.collection import VideoCollection  # noqa: E402
from vtr_qdrant.store.backend import StorageBackend  # noqa: E402
from vtr_qdrant.store.edge import EdgeBackend  # noqa: E402
from vtr_qdrant.store.plan import StageOneQuery  # noqa: E402
from vtr_qdrant.store.points import point_id  # noqa: E402
from vtr_qdrant.store.qdrant import QdrantClientBackend  # noqa: E402
from vtr_qdrant.store.videos import EmbeddedVideo  # noqa: E402

log = logging.getLogger("bench_backends")
NAME = "bench"
BATCH = 500


def _frames(rng: np.random.Generator, n: int, f: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, f, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=2, keepdims=True)


def _ingest(vc: VideoCollection, n: int, f: int, d: int, seed: int = 0) -> tuple[float, np.ndarray]:
    """Upsert ``n`` random videos; returns (seconds, (n, d) pooled vectors for the exact reference)."""
    rng = np.random.default_rng(seed)
    pooled = np.empty((n, d), np.float32)
    t0 = time.perf_counter()
    for start in range(0, n, BATCH):
        block = _frames(rng, min(BATCH, n - start), f, d)
        p = block.mean(axis=1)
        pooled[start : start + len(block)] = p / np.linalg.norm(p, axis=1, keepdims=True)
        vc.upsert_embeddings_batch(
            EmbeddedVideo(f"v{start + i}", fr, np.arange(f, dtype=np.float64)) for i, fr in enumerate(block)
        )
    return time.perf_counter() - t0, pooled


def _latency_ms(vc: VideoCollection, queries: np.ndarray, *, rescore: bool) -> float:
    it = iter(range(10**9))

    def one() -> None:
        vc.search(queries[next(it) % len(queries)], limit=10, rescore=rescore)

    return 1e3 * median_seconds(one, repeats=min(15, len(queries)), warmup=2)


def _recall(
    backend: StorageBackend, queries: np.ndarray, truth: list[set[str]], hnsw_ef: int | None
) -> float:
    got = backend.query(
        NAME, [StageOneQuery(vector=q, limit=10, with_frames=False, hnsw_ef=hnsw_ef) for q in queries]
    )
    return float(np.mean([len({c.id for c in cands} & t) / 10 for cands, t in zip(got, truth)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument(
        "--local-budget", type=float, default=240.0, help="max predicted local-mode ingest seconds"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("vtr_qdrant").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")  # local mode: "search_params has no effect", "> 20k points"
    rng = np.random.default_rng(123)
    queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    rows: list[list[Any]] = []
    results: list[dict[str, Any]] = []
    recall_rows: list[list[Any]] = []
    local_per_video_s: float | None = None
    for n in args.sizes:
        # ---------------------------------------------------------------- local mode
        predicted = None if local_per_video_s is None else local_per_video_s * n
        if predicted is not None and predicted > args.local_budget:
            log.info("local mode at %d videos skipped: ingestion predicted to take %.0f s", n, predicted)
            rows.append(["local", n, f"skipped (ingest ~{predicted:.0f} s)", "", "", ""])
            results.append(
                {"backend": "local", "videos": n, "skipped": True, "predicted_ingest_s": predicted}
            )
        else:
            client = QdrantClient(":memory:")
            vc = VideoCollection(QdrantClientBackend(client), NAME, dim=args.dim)
            ingest_s, _ = _ingest(vc, n, args.frames, args.dim)
            local_per_video_s = ingest_s / n
            r = {
                "backend": "local",
                "videos": n,
                "ingest_s": ingest_s,
                "search_ms": _latency_ms(vc, queries, rescore=False),
                "rescore_ms": _latency_ms(vc, queries, rescore=True),
            }
            results.append(r)
            rows.append(["local (exact)", n, r["ingest_s"], "", r["search_ms"], r["rescore_ms"]])
            log.info("%s", r)
            client.close()
            del vc, client

        # ---------------------------------------------------------------- Qdrant Edge
        with tempfile.TemporaryDirectory() as root:
            backend = EdgeBackend(root)
            vc = VideoCollection(backend, NAME, dim=args.dim)
            ingest_s, pooled = _ingest(vc, n, args.frames, args.dim)
            exact_top = np.argsort(-(queries @ pooled.T), axis=1)[:, :10]
            truth = [{point_id(f"v{j}") for j in row} for row in exact_top]
            r = {
                "backend": "edge, exact scan (not optimised)",
                "videos": n,
                "ingest_s": ingest_s,
                "search_ms": _latency_ms(vc, queries, rescore=False),
                "rescore_ms": _latency_ms(vc, queries, rescore=True),
                "recall@10": _recall(backend, queries, truth, None),
            }
            results.append(r)
            rows.append(["edge exact scan", n, ingest_s, "", r["search_ms"], r["rescore_ms"]])
            recall_rows.append([n, "scan (before optimize)", r["recall@10"], r["search_ms"]])
            log.info("%s", r)
            t0 = time.perf_counter()
            backend.optimize(NAME)
            optimize_s = time.perf_counter() - t0
            for ef in (None, 128, 512):
                backend.hnsw_ef = ef
                r = {
                    "backend": f"edge hnsw_ef={ef or 'default'}",
                    "videos": n,
                    "optimize_s": optimize_s,
                    "search_ms": _latency_ms(vc, queries, rescore=False),
                    "rescore_ms": _latency_ms(vc, queries, rescore=True),
                    "recall@10": _recall(backend, queries, truth, ef),
                }
                results.append(r)
                rows.append(
                    [f"edge hnsw_ef={ef or 'default'}", n, "", optimize_s, r["search_ms"], r["rescore_ms"]]
                )
                recall_rows.append([n, f"hnsw_ef={ef or 'default'}", r["recall@10"], r["search_ms"]])
                log.info("%s", r)
            backend.close()
    print(
        f"\nsearch latency per query (stage 1 + stage 2, 100 candidates, limit 10), ms, median; "
        f"{args.frames} frames x {args.dim} dims, random unit vectors, one point per video"
    )
    print_table(["backend", "videos", "ingest s", "optimize s", "search ms", "rescore ms"], rows)
    print("\nEdge: recall@10 of the pooled-vector search vs exact")
    print_table(["videos", "search", "recall@10", "search ms"], recall_rows)
    path = write_json(
        "backends",
        {
            "frames": args.frames,
            "dim": args.dim,
            "queries": args.queries,
            "candidates": 100,
            "results": results,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

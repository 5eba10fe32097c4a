"""Stage-2 cost per query: turning Qdrant's returned frame lists into arrays, and each aggregation.

    python benchmarks/bench_stage2.py [--frames 12] [--dim 512]

Prints a table (milliseconds per query, median) for 100 / 200 / 1000 candidates and writes
benchmarks/results/stage2.json. "convert" is what VideoCollection does with a stage-1 response
(lists of lists -> padded (K, F, D) float32 + mask); the aggregation columns start from arrays.
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

from vtr_qdrant.aggregation import MaxFrame, MeanPooling, SoftmaxPooling, TopKFrames  # noqa: E402
from vtr_qdrant.storage import _frames_of  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--candidates", type=int, nargs="+", default=[100, 200, 1000])
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    aggs = {"mean": MeanPooling(), "max": MaxFrame(), "topk": TopKFrames(3), "softmax": SoftmaxPooling(0.01)}
    rows, results = [], []
    for k in args.candidates:
        frames = rng.standard_normal((k, args.frames, args.dim)).astype(np.float32)
        frames /= np.linalg.norm(frames, axis=2, keepdims=True)
        as_lists = [f.tolist() for f in frames]  # what qdrant-client hands back
        text = frames[0, 0][None, :].copy()

        def convert() -> None:
            arrs = [_frames_of({"frames": x}) for x in as_lists]
            lengths = np.array([len(a) for a in arrs])
            out = np.zeros((len(arrs), lengths.max(), args.dim), np.float32)
            for i, a in enumerate(arrs):
                out[i, : len(a)] = a

        row = {"candidates": k, "convert_ms": 1e3 * median_seconds(convert, repeats=5)}
        mask = np.ones(frames.shape[:2], bool)
        for name, agg in aggs.items():
            row[f"{name}_ms"] = 1e3 * median_seconds(lambda agg=agg: agg.aggregate(text, frames, mask))
        results.append(row)
        rows.append([k, row["convert_ms"], *(row[f"{n}_ms"] for n in aggs)])
    print(f"stage 2, ms per query, {args.frames} frames x {args.dim} dims, float32")
    print_table(["K", "convert", *aggs], rows)
    path = write_json("stage2", {"frames": args.frames, "dim": args.dim, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

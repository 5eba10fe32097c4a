"""Stage-2 cost of the X-Pool head per query: direct vs factorised forms, side by side.

For K candidates x 12 frames x 512 dims and one query text (float32, the production dtype):

- ``direct``: the head's forward from the frames (``XPoolHead.similarity``): k/v projections of
  every frame at query time, then O(D²) per pair for the out and linear projections.
- ``direct_kv_stored``: the same forward with k/v projections stored per video (written here from
  the head's state dict): isolates the per-pair O(D²) cost that the factorisation removes.
- ``fact_query_time``: ``XPoolHead.aggregate`` (precompute K/U/Z at query time, then score).
- ``fact_stored``: ``XPoolHead.aggregate_cached`` on a stored ``precompute`` cache: O(H·F·D) per pair.

Prints a table, writes ``benchmarks/results/xpool.json``. Run:
``.venv/bin/python benchmarks/bench_xpool.py [--candidates 100 200 1000 10000] [--repeats 5] [--threads 1]``.

BLAS threads default to 1 (set before numpy is imported): per-query latency on a small shared
machine is what stage 2 cares about, and multi-threaded OpenBLAS on an oversubscribed 2-core box
was measured 10x slower and erratic for these small products.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path


def _argv_threads(argv: list[str]) -> str:
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return "1"


_THREADS = _argv_threads(sys.argv[1:])
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = _THREADS

import numpy as np

from vtr_qdrant.search.xpool import XPOOL_PARAMETER_NAMES, XPoolHead

RESULTS = Path(__file__).resolve().parent / "results" / "xpool.json"


def random_head(dim: int, num_heads: int, seed: int = 0) -> XPoolHead:
    """A head with non-identity weights (same compute as a trained one)."""
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}
    for k in XPOOL_PARAMETER_NAMES:
        if "layer_norm" in k:
            state[k] = (
                1 + 0.1 * rng.standard_normal(dim) if k.endswith("weight") else 0.1 * rng.standard_normal(dim)
            )
        elif k.endswith("weight"):
            state[k] = np.eye(dim) + rng.standard_normal((dim, dim)) / math.sqrt(dim)
        else:
            state[k] = 0.1 * rng.standard_normal(dim)
    return XPoolHead.from_state_dict(state, num_heads=num_heads)


def _ln(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    xc = x - mu
    return xc / np.sqrt(np.mean(xc * xc, -1, keepdims=True) + 1e-5) * g + b


class StoredKV:
    """Direct forward with k/v projections precomputed per video (benchmark-only baseline)."""

    def __init__(self, head: XPoolHead, frames: np.ndarray) -> None:
        dt = frames.dtype
        self.p = {k[len("pool_frames.") :]: v.astype(dt) for k, v in head.state_dict().items()}
        self.h, self.hd = head.num_heads, head.head_dim
        p = self.p
        fn = _ln(frames, p["layer_norm1.weight"], p["layer_norm1.bias"])
        self.k = fn @ p["cross_attn.k_proj.weight"].T + p["cross_attn.k_proj.bias"]
        self.v = fn @ p["cross_attn.v_proj.weight"].T + p["cross_attn.v_proj.bias"]

    def similarity(self, text: np.ndarray) -> np.ndarray:
        p, h, hd = self.p, self.h, self.hd
        q = _ln(text, p["layer_norm1.weight"], p["layer_norm1.bias"]) @ p["cross_attn.q_proj.weight"].T
        q = (q + p["cross_attn.q_proj.bias"]) / np.float32(math.sqrt(hd))
        nv, _, d = self.k.shape
        attn = np.empty((nv, text.shape[0], d), dtype=text.dtype)
        for i in range(h):
            s = slice(i * hd, (i + 1) * hd)
            logits = np.einsum("td,vfd->tvf", q[:, s], self.k[:, :, s])
            a = np.exp(logits - logits.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            attn[:, :, s] = np.matmul(a.transpose(1, 0, 2), self.v[:, :, s])
        x = attn @ p["cross_attn.out_proj.weight"].T + p["cross_attn.out_proj.bias"]
        y = _ln(x, p["layer_norm2.weight"], p["layer_norm2.bias"])
        z = _ln(
            y + y @ p["linear_proj.weight"].T + p["linear_proj.bias"],
            p["layer_norm3.weight"],
            p["layer_norm3.bias"],
        )
        z /= np.linalg.norm(z, axis=-1, keepdims=True)
        return np.einsum("vtd,td->tv", z, text / np.linalg.norm(text, axis=1, keepdims=True))


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (also builds the head's float32 fused matrices once, as in production)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _measure(head: XPoolHead, text: np.ndarray, frames: np.ndarray, reps: int) -> dict[str, float]:
    """Median ms per query of each form, plus float32/float64 agreement, for one candidate count."""
    k = frames.shape[0]
    cache = head.precompute(frames)
    kv = StoredKV(head, frames)
    row: dict[str, float] = {
        "candidates": k,
        "direct_ms": _median_ms(lambda: head.similarity(text, frames), reps),
        "direct_kv_stored_ms": _median_ms(lambda: kv.similarity(text), reps),
        "fact_query_time_ms": _median_ms(lambda: head.aggregate(text, frames), reps),
        "fact_stored_ms": _median_ms(lambda: head.aggregate_cached(text, cache), reps),
        "precompute_ms": _median_ms(lambda: head.precompute(frames), max(1, reps // 2)),
        "cache_bytes_per_video": cache.nbytes // k,
        "frames_bytes_per_video": frames.nbytes // k,
    }
    # accuracy on up to 200 candidates: float64 factorised vs float64 direct, float32 forms vs float64
    sub = slice(0, min(k, 200))
    f64, t64 = frames[sub].astype(np.float64), text.astype(np.float64)
    ref = head.similarity(t64, f64)
    row["f64_fact_vs_direct_max_abs"] = float(
        np.abs(head.similarity_cached(t64, head.precompute(f64)) - ref).max()
    )
    row["f32_fact_vs_f64_max_abs"] = float(np.abs(head.aggregate_cached(text, cache[sub]).scores - ref).max())
    row["f32_direct_vs_f64_max_abs"] = float(np.abs(head.similarity(text, frames[sub]) - ref).max())
    row["f32_kv_stored_vs_f64_max_abs"] = float(
        np.abs(StoredKV(head, frames[sub]).similarity(text) - ref).max()
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, nargs="+", default=[100, 200, 1000, 10000])
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (read before numpy is imported)")
    args = ap.parse_args()
    load_before = os.getloadavg()

    head = random_head(args.dim, args.heads)
    rng = np.random.default_rng(1)
    rows = []
    for k in args.candidates:
        frames = rng.standard_normal((k, args.frames, args.dim)).astype(np.float32)
        frames /= np.linalg.norm(frames, axis=2, keepdims=True)
        text = rng.standard_normal((1, args.dim)).astype(np.float32)
        text /= np.linalg.norm(text, axis=1, keepdims=True)
        reps = args.repeats if k <= 1000 else max(3, args.repeats // 2)

        rows.append(_measure(head, text, frames, reps))

    cols = [
        ("K", "candidates", "{:>6d}"),
        ("direct ms", "direct_ms", "{:>10.2f}"),
        ("direct kv-stored ms", "direct_kv_stored_ms", "{:>19.2f}"),
        ("fact query-time ms", "fact_query_time_ms", "{:>18.2f}"),
        ("fact stored ms", "fact_stored_ms", "{:>14.3f}"),
        ("direct/stored", None, "{:>13.1f}"),
        ("kv-stored/stored", None, "{:>16.1f}"),
        ("f64 fact-direct", "f64_fact_vs_direct_max_abs", "{:>15.1e}"),
        ("f32 err", "f32_fact_vs_f64_max_abs", "{:>8.1e}"),
    ]
    header = " | ".join(h.rjust(len(f.format(0 if "d}" in f else 0.0))) for h, _, f in cols)
    lines = [header, "-" * len(header)]
    for r in rows:
        r["speedup_direct_over_fact_stored"] = r["direct_ms"] / r["fact_stored_ms"]
        r["speedup_kv_stored_over_fact_stored"] = r["direct_kv_stored_ms"] / r["fact_stored_ms"]
        r["speedup_direct_over_fact_query_time"] = r["direct_ms"] / r["fact_query_time_ms"]
        vals = []
        for h, key, f in cols:
            if key is None:
                key = (
                    "speedup_direct_over_fact_stored"
                    if h == "direct/stored"
                    else "speedup_kv_stored_over_fact_stored"
                )
            vals.append(f.format(r[key]))
        lines.append(" | ".join(vals))
    table = "\n".join(lines)

    result = {
        "benchmark": "xpool stage-2 cost per query (1 text), float32, median of repeats",
        "frames": args.frames,
        "dim": args.dim,
        "num_heads": args.heads,
        "repeats": args.repeats,
        "blas_threads": int(_THREADS),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "rows": rows,
        "table": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table)
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()

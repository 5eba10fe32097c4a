"""Encoder throughput: ViT-B-32 towers, torch eager fp32 vs ONNX Runtime fp32 vs ONNX Runtime int8 (CPU).

Random weights (``open_clip.create_model("ViT-B-32")`` with no pretrained tag): the compute is the
same as a trained model's. The towers are exported twice with :func:`onnx_export.clip.export_model`
(parity-checked): fused (``fuse=True``: Attention/SkipLayerNorm/BiasGelu contrib ops) and plain
(``fuse=False``, the default); the fused image tower is quantised with
:func:`onnx_export.quantize.quantize_int8`. Rows ``sub`` run a batch as sub-batches of
``--sub-batch`` frames (what ``FrameEncoder`` does on a CPU) for torch and ORT alike. A plain
SGEMM at the MLP's shape (torch and ORT, best of 5) gives the machine's fp32 peak, against which
each engine's achieved GFLOP/s (analytic FLOPs of the tower) is reported.

Backends are measured in interleaved rounds (torch, ORT fp32, ORT int8, torch, ...) and the median
round is reported, so a noisy neighbour on a shared machine slows all of them alike instead of
whichever happened to run at the wrong moment.

    python benchmarks/bench_encoders.py            # full run
    python benchmarks/bench_encoders.py --quick    # fewer rounds

Writes ``benchmarks/results/encoders.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench_encoders")

QUERIES = [
    "a dog catching a frisbee in the park",
    "two people dancing on a stage under blue lights",
    "a red car drives past a bakery at night",
    "someone slicing tomatoes on a wooden board",
]


def _rounds(fns: dict[str, Callable[[], object]], *, rounds: int, warmup: int) -> dict[str, list[float]]:
    """Time each function once per round, interleaved; returns seconds per call for every round."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def _vit_gflop(model: Any) -> tuple[float, int, int]:
    """Analytic GFLOP per image of an open_clip ViT image tower (2 x multiply-adds), tokens, width."""
    v = model.visual
    width = int(v.conv1.out_channels)
    grid = int(v.grid_size[0] * v.grid_size[1])
    tokens = grid + 1
    patch_in = int(v.conv1.in_channels * v.conv1.kernel_size[0] * v.conv1.kernel_size[1])
    mlp = int(v.transformer.resblocks[0].mlp.c_fc.out_features)
    layers = len(v.transformer.resblocks)
    per_layer = tokens * width * 3 * width + 2 * tokens * tokens * width + tokens * width * width + 2 * tokens * width * mlp
    macs = grid * patch_in * width + layers * per_layer + width * int(v.proj.shape[1] if v.proj is not None else 0)
    return 2 * macs / 1e9, tokens, width


def _gemm_peak(m: int, k: int, n: int, threads: int) -> dict[str, float]:
    """Best-of-5 fp32 GFLOP/s of an (m, k) x (k, n) product in torch and in an ORT MatMul graph."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    a = rng.random((m, k), dtype=np.float32)
    b = rng.random((k, n), dtype=np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["C"])], "gemm",
                          [helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])],
                          [helper.make_tensor_value_info("C", TensorProto.FLOAT, [m, n])],
                          [numpy_helper.from_array(b, "B")])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString(),
                                opts, providers=["CPUExecutionProvider"])
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    t = _rounds({"torch": lambda: torch.mm(ta, tb), "ort": lambda: sess.run(None, {"A": a})}, rounds=5, warmup=1)
    flop = 2.0 * m * k * n
    return {engine: flop / min(ts) / 1e9 for engine, ts in t.items()}


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds (a rough number in a few minutes)")
    p.add_argument("--model", default="ViT-B-32", help="open_clip architecture (random weights)")
    p.add_argument("--batches", default="1,16,64", help="comma-separated image batch sizes")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for torch and ORT")
    p.add_argument("--sub-batch", type=int, default=16, help="sub-batch size for the 'sub' rows (FrameEncoder's CPU default)")
    p.add_argument("--exporter", choices=["auto", "dynamo", "legacy"], default="auto",
                   help="torch.onnx exporter (legacy exports faster; same ORT speed)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "encoders.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("onnx_ir", "onnxscript"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import open_clip
    import torch
    from open_clip.tokenizer import default_bpe

    from onnx_export.clip import export_model
    from onnx_export.quantize import quantize_int8
    from onnx_export.verify import compare, random_images
    from vtr_qdrant.model.manifest import ModelSource
    from vtr_qdrant.model.tokenizer import ClipTokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = open_clip.create_model(args.model).eval()
    pp = open_clip.get_model_preprocess_cfg(model)
    size = pp["size"][0] if isinstance(pp["size"], (tuple, list)) else pp["size"]
    ctx = open_clip.get_model_tokenize_cfg(model)["context_length"]
    batches = [int(b) for b in args.batches.split(",")]
    rounds, warmup = (3, 1) if args.quick else (7, 2)

    gflop, tokens, width = _vit_gflop(model)
    peak = _gemm_peak(args.sub_batch * tokens, width, 4 * width, args.threads)
    log.info("tower %.2f GFLOP/image; SGEMM peak %s GFLOP/s", gflop, {k: round(v, 1) for k, v in peak.items()})

    with tempfile.TemporaryDirectory(prefix="bench-enc-") as tmp:
        t0 = time.perf_counter()
        common: dict[str, Any] = dict(
            name=f"{args.model}/random", image_size=size,
            mean=pp["mean"], std=pp["std"], context_length=ctx, merges_file=default_bpe(),
            source=ModelSource(architecture=args.model, recipe={"weights": "random (benchmark)"}),
            method=args.exporter,
        )
        rep = export_model(model, out_dir=Path(tmp) / "bundle", fuse=True, **common)
        export_s = time.perf_counter() - t0
        plain = export_model(model, out_dir=Path(tmp) / "plain", fuse=False, **common)
        vis32 = rep.out_dir / "visual.onnx"
        vis8 = Path(tmp) / "visual.int8.onnx"
        quantize_int8(vis32, vis8)
        s32, s8 = _session(vis32, args.threads), _session(vis8, args.threads)
        s32p = _session(plain.out_dir / "visual.onnx", args.threads)
        st = _session(rep.out_dir / "text.onnx", args.threads)
        stp = _session(plain.out_dir / "text.onnx", args.threads)

        cos_imgs = random_images(16, size, pp["mean"], pp["std"], seed=5)
        sizes = {"bytes_fp32": vis32.stat().st_size, "bytes_int8": vis8.stat().st_size}
        int8_parity = compare(s32.run(None, {"pixel_values": cos_imgs})[0], s8.run(None, {"pixel_values": cos_imgs})[0])

        image_rows: list[dict[str, Any]] = []
        for b in batches:
            x = random_images(b, size, pp["mean"], pp["std"], seed=b)
            xt = torch.from_numpy(x)

            def run_torch(xt: torch.Tensor = xt) -> object:
                with torch.inference_mode():
                    return model.encode_image(xt, normalize=True)

            sb = args.sub_batch

            def torch_sub(xt: torch.Tensor = xt) -> object:
                with torch.inference_mode():
                    return [model.encode_image(xt[i : i + sb], normalize=True) for i in range(0, len(xt), sb)]

            arms: dict[str, Callable[[], object]] = {
                "torch_fp32": run_torch,
                "ort_fp32_plain": lambda x=x: s32p.run(None, {"pixel_values": x}),
                "ort_fp32": lambda x=x: s32.run(None, {"pixel_values": x}),
                "ort_int8": lambda x=x: s8.run(None, {"pixel_values": x}),
            }
            if b > sb:
                arms["torch_fp32_sub"] = torch_sub
                arms["ort_fp32_sub"] = lambda x=x: [s32.run(None, {"pixel_values": x[i : i + sb]}) for i in range(0, len(x), sb)]
            times = _rounds(arms, rounds=rounds, warmup=warmup)
            row: dict[str, Any] = {"batch": b}
            for k, ts in times.items():
                row[k] = b / statistics.median(ts)
            row["ort_fp32_vs_torch"] = row["ort_fp32"] / row["torch_fp32"]
            row["ort_fp32_plain_vs_torch"] = row["ort_fp32_plain"] / row["torch_fp32"]
            row["fused_vs_plain"] = row["ort_fp32"] / row["ort_fp32_plain"]
            if b > sb:
                row["sub_ort_vs_sub_torch"] = row["ort_fp32_sub"] / row["torch_fp32_sub"]
            row["pct_of_sgemm_peak"] = {k: 100 * row[k] * gflop / max(peak.values()) for k in times}
            row["ort_int8_vs_torch"] = row["ort_int8"] / row["torch_fp32"]
            row["ort_int8_vs_ort_fp32"] = row["ort_int8"] / row["ort_fp32"]
            image_rows.append(row)
            log.info("batch %d: %s", b, {k: round(v, 2) for k, v in row.items() if isinstance(v, float)})

        tok = ClipTokenizer(default_bpe(), context_length=ctx)
        ids = np.asarray(tok.tokenize(QUERIES), dtype=np.int64)
        ids_t = torch.from_numpy(ids)

        def torch_text() -> None:
            with torch.inference_mode():
                for i in range(len(ids)):
                    model.encode_text(ids_t[i : i + 1], normalize=True)

        def ort_text() -> None:
            for i in range(len(ids)):
                st.run(None, {"input_ids": ids[i : i + 1]})

        def ort_text_plain() -> None:
            for i in range(len(ids)):
                stp.run(None, {"input_ids": ids[i : i + 1]})

        tt = _rounds({"torch_fp32": torch_text, "ort_fp32_plain": ort_text_plain, "ort_fp32": ort_text},
                     rounds=rounds, warmup=warmup)
        text_row = {k: 1000.0 * statistics.median(v) / len(ids) for k, v in tt.items()}
        text_row["torch_vs_ort"] = text_row["torch_fp32"] / text_row["ort_fp32"]

    result = {
        "model": args.model,
        "weights": "random (same compute as pretrained)",
        "threads": args.threads,
        "rounds": rounds,
        "quick": args.quick,
        "export": {"seconds": export_s, "method": rep.method, "visual_min_cosine": rep.visual_min_cosine,
                   "text_min_cosine": rep.text_min_cosine, "fusions": rep.manifest.source.recipe["export"]["fusions"],
                   "plain_visual_min_cosine": plain.visual_min_cosine},
        "gflop_per_image": gflop,
        "sgemm_peak_gflops": peak,
        "sub_batch": args.sub_batch,
        "int8_vs_fp32": {"min_cosine": int8_parity.min_cosine, "max_abs_diff": int8_parity.max_abs_diff,
                         **sizes},
        "image_per_s": image_rows,
        "text_ms_per_query": text_row,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "versions": {d: metadata.version(d) for d in ("torch", "onnxruntime", "open_clip_torch")},
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n{args.model} image tower, images/s ({args.threads} threads, median of {rounds} interleaved rounds)")
    print(f"{'batch':>5} | {'torch fp32':>10} | {'ORT plain':>9} | {'ORT fused':>9} | {'ORT int8':>9} | "
          f"{'plain/torch':>11} | {'fused/torch':>11} | {'int8/torch':>10} | {'int8/fp32':>9}")
    for r in image_rows:
        print(f"{r['batch']:>5} | {r['torch_fp32']:>10.1f} | {r['ort_fp32_plain']:>9.1f} | {r['ort_fp32']:>9.1f} | "
              f"{r['ort_int8']:>9.1f} | {r['ort_fp32_plain_vs_torch']:>10.2f}x | {r['ort_fp32_vs_torch']:>10.2f}x | "
              f"{r['ort_int8_vs_torch']:>9.2f}x | {r['ort_int8_vs_ort_fp32']:>8.2f}x")
        if "ort_fp32_sub" in r:
            print(f"{'':>5}   sub-batches of {args.sub_batch}: torch {r['torch_fp32_sub']:.1f}  ORT fused "
                  f"{r['ort_fp32_sub']:.1f}  ({r['sub_ort_vs_sub_torch']:.2f}x)")
    print(f"{gflop:.2f} GFLOP/image; SGEMM peak (best of 5): " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items())
          + " GFLOP/s; % of peak: " + "; ".join(
              f"b{r['batch']} " + " ".join(f"{k} {v:.0f}%" for k, v in r["pct_of_sgemm_peak"].items()) for r in image_rows))
    print(f"int8 vs fp32 ONNX image embeddings: min cosine {int8_parity.min_cosine:.6f} (random weights)")
    print(f"text tower, ms/query (batch 1): torch {text_row['torch_fp32']:.1f}  ORT plain {text_row['ort_fp32_plain']:.1f}  "
          f"ORT fused {text_row['ort_fp32']:.1f}  "
          f"({text_row['torch_vs_ort']:.2f}x)")
    print(f"export {export_s:.1f} s ({rep.method}); parity visual {rep.visual_min_cosine:.6f}, "
          f"text {rep.text_min_cosine:.6f}; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

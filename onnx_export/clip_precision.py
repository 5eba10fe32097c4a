"""Checks of the exported graphs against torch: fp32 parity, int8 quantisation, fp16 conversion."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .quantize import convert_fp16, quantize_int8
from .towers import ExportError
from .verify import Parity, compare, onnx_session, run_onnx, run_onnx_isolated

__all__ = ["INT8_MIN_COSINE", "INT8_TEXT_MIN_COSINE", "fmt_parity", "check_fp32", "quantize_visual_int8",
           "quantize_text_int8", "convert_towers_fp16"]

log = logging.getLogger("onnx_export.clip")

#: int8 quantisation changes the numbers on purpose; below this cosine to torch the export is refused.
INT8_MIN_COSINE = 0.99
#: the int8 text tower must stay this close to the fp32 graph on every parity text.
INT8_TEXT_MIN_COSINE = 0.999


def fmt_parity(p: Parity) -> str:
    """One line: max |diff|, min cosine, rows."""
    return f"max|diff| {p.max_abs_diff:.3g}, min cosine {p.min_cosine:.6f} over {p.n}"


def check_fp32(
    vpath: Path, tpath: Path, images: np.ndarray, ids: np.ndarray, ref_v: np.ndarray, ref_t: np.ndarray,
    min_cosine: float,
) -> tuple[Parity, Parity]:
    """Torch vs ORT parity of the fp32 graphs, batched and at batch size 1; raise below ``min_cosine``."""
    results = []
    for tower, path, inputs, ref in (("visual", vpath, images, ref_v), ("text", tpath, ids, ref_t)):
        sess = onnx_session(path)
        batched = run_onnx(sess, inputs, batch_size=len(inputs))
        single = run_onnx(sess, inputs[:2], batch_size=1)
        p_all = compare(ref, batched)
        p_one = compare(ref[:2], single)
        p = Parity(max(p_all.max_abs_diff, p_one.max_abs_diff), min(p_all.min_cosine, p_one.min_cosine), p_all.n)
        if not p.min_cosine >= min_cosine:
            raise ExportError(
                f"{tower} tower parity check failed: {fmt_parity(p)} (need min cosine >= {min_cosine}); no bundle "
                "was written. Try method='legacy' or another opset, and report the model if it persists"
            )
        results.append(p)
    return results[0], results[1]




def quantize_visual_int8(tmp: Path, vpath: Path, images: np.ndarray, ref_v: np.ndarray) -> dict[str, Any]:
    """Replace the visual graph by its int8 dynamic quantisation; refuse it below :data:`INT8_MIN_COSINE`."""
    return _quantize_tower(tmp, vpath, images, ref_v, "visual", INT8_MIN_COSINE)


def quantize_text_int8(tmp: Path, tpath: Path, ids: np.ndarray, ref_t: np.ndarray) -> dict[str, Any]:
    """Replace the text graph by its int8 dynamic quantisation; refuse it below
    :data:`INT8_TEXT_MIN_COSINE` to the fp32 graph (query embeddings decide the whole ranking)."""
    return _quantize_tower(tmp, tpath, ids, ref_t, "text", INT8_TEXT_MIN_COSINE, against_fp32=True)


def _quantize_tower(tmp: Path, path: Path, inputs: np.ndarray, ref: np.ndarray, tower: str, need: float,
                    *, against_fp32: bool = False) -> dict[str, Any]:
    q = tmp / f"{tower}.int8.onnx"
    quantize_int8(path, q)
    sess = onnx_session(q)
    out_q = run_onnx(sess, inputs)
    pq = compare(ref, out_q)
    vs32 = compare(run_onnx(onnx_session(path), inputs), out_q)
    del sess
    rec = {**pq.as_dict(), "min_cosine_vs_fp32": vs32.min_cosine,
           "bytes_fp32": path.stat().st_size, "bytes_int8": q.stat().st_size}
    log.info("int8 %s tower: %s (vs fp32 ONNX: %.6f)", tower, fmt_parity(pq), vs32.min_cosine)
    got = vs32.min_cosine if against_fp32 else pq.min_cosine
    if not got >= need:
        raise ExportError(
            f"int8 {tower} tower is too far from {'the fp32 graph' if against_fp32 else 'torch'} "
            f"(min cosine {got:.6f}; need >= {need}); export without int8 for it"
        )
    if pq.min_cosine < 0.999:
        log.warning("int8 %s tower agrees with torch only to cosine %.6f; check retrieval quality "
                    "before using it", tower, pq.min_cosine)
    os.replace(q, path)
    return rec


def convert_towers_fp16(
    vpath: Path, tpath: Path, images: np.ndarray, ids: np.ndarray, ref_v: np.ndarray, ref_t: np.ndarray
) -> dict[str, Any]:
    """Convert both graphs to float16 and check them on the CPU where onnxruntime can; ``{tower_fp16: result}``."""
    parity: dict[str, Any] = {}
    for tower, path, inputs, ref in (("visual", vpath, images, ref_v), ("text", tpath, ids, ref_t)):
        convert_fp16(path, path)
        key = f"{tower}_fp16"
        try:
            # ORT_ENABLE_ALL's CPU layout passes crash (SIGSEGV) on these graphs in ORT 1.32;
            # a child process at "extended" keeps a crash from killing the export.
            got = run_onnx_isolated(path, inputs)
        except Exception as e:  # noqa: BLE001 - ORT CPU lacks fp16 kernels for some ops
            note = (f"not checked: onnxruntime CPU cannot run it ({type(e).__name__}: "
                    f"{(str(e).splitlines() or [''])[0][:160]}); check on a GPU with onnxruntime-gpu")
            parity[key] = note
            log.warning("fp16 %s tower %s", tower, note)
            continue
        ph = compare(ref, got)
        parity[key] = {**ph.as_dict(), "checked_on": "CPUExecutionProvider (extended opt)"}
        log.info("fp16 %s tower on CPU: %s (GPU kernels differ; check on a GPU before relying on it)",
                 tower, fmt_parity(ph))
        if not math.isfinite(ph.max_abs_diff):
            raise ExportError(f"fp16 {tower} tower produces non-finite or misshaped outputs; export fp32")

    return parity

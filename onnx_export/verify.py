"""Parity checks: the torch towers against the exported graphs run by onnxruntime on CPU.

Inputs are what the runtime will see: random RGB images in [0, 1] normalised with the model's
mean/std, and real strings of very different lengths (empty, one word, sentences, unicode,
punctuation, text longer than the context) tokenised by the bundle's own tokenizer, all in one batch
so the end-of-text ``argmax`` pooling is exercised at different positions in the same call.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "Parity",
    "PARITY_TEXTS",
    "random_images",
    "compare",
    "onnx_session",
    "run_onnx",
    "run_onnx_isolated",
    "torch_outputs",
]

log = logging.getLogger(__name__)

#: Real strings of several lengths, including edge cases for the tokenizer and the EOT pooling.
PARITY_TEXTS: tuple[str, ...] = (
    "",
    "dog",
    "a photo of a cat",
    "A man is riding a red bicycle down a busy street while talking on his phone.",
    "Two kids play football on the beach at sunset, waves crashing behind them!!!",
    "café crème brûlée — naïve 東京 タワー 🚀 emoji & <html> entities &amp; \"quotes\"",
    "zoom in: 3 dogs, 12 cats; 1,000,000 birds?! (maybe) [not sure] {weird} #tag @user",
    " ".join(["a very long caption that keeps going"] * 20),
)


@dataclass(frozen=True)
class Parity:
    """Agreement between two sets of (N, D) embeddings.

    Attributes:
        max_abs_diff: largest absolute element difference.
        min_cosine: smallest row-wise cosine similarity (rows normalised first).
        n: number of rows compared.
    """

    max_abs_diff: float
    min_cosine: float
    n: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form for the manifest's recipe."""
        return asdict(self)


def compare(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    """Compare candidate embeddings to reference ones.

    Args:
        reference: (N, D) float array.
        candidate: (N, D) float array.

    Returns:
        The :class:`Parity` of the two.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        return Parity(max_abs_diff=float("inf"), min_cosine=-1.0, n=int(ref.shape[0]) if ref.ndim else 0)
    if not np.all(np.isfinite(cand)):
        return Parity(max_abs_diff=float("inf"), min_cosine=-1.0, n=int(ref.shape[0]))
    rn = ref / np.maximum(np.linalg.norm(ref, axis=-1, keepdims=True), 1e-12)
    cn = cand / np.maximum(np.linalg.norm(cand, axis=-1, keepdims=True), 1e-12)
    return Parity(
        max_abs_diff=float(np.max(np.abs(ref - cand))),
        min_cosine=float(np.min(np.sum(rn * cn, axis=-1))),
        n=int(ref.shape[0]),
    )


def random_images(n: int, image_size: int, mean: Sequence[float], std: Sequence[float], *, seed: int = 0) -> np.ndarray:
    """(n, 3, S, S) float32 images: uniform RGB in [0, 1], normalised with ``mean``/``std``."""
    rng = np.random.default_rng(seed)
    img = rng.random((n, 3, image_size, image_size), dtype=np.float32)
    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    return ((img - m) / s).astype(np.float32)


def onnx_session(path: Path, *, threads: int | None = None) -> Any:
    """A CPU onnxruntime session over ``path`` (no graph optimisation beyond ORT's defaults)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, inputs: np.ndarray, *, batch_size: int = 16) -> np.ndarray:
    """Run a one-input/one-output session over ``inputs`` in batches; float32 (N, D)."""
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: inputs[i : i + batch_size]})[0] for i in range(0, len(inputs), batch_size)]
    return np.concatenate(outs, axis=0).astype(np.float32)


def torch_outputs(module: nn.Module, inputs: np.ndarray, *, batch_size: int = 16) -> np.ndarray:
    """Run a tower module in eval mode, no grad, batched; float32 (N, D)."""
    outs = []
    with torch.no_grad():
        for i in range(0, len(inputs), batch_size):
            outs.append(module(torch.from_numpy(np.ascontiguousarray(inputs[i : i + batch_size]))).float().numpy())
    return np.concatenate(outs, axis=0)


# Runs one graph in a child process: a crash of onnxruntime's native code (seen with fp16 graphs on
# the CPU provider at ORT_ENABLE_ALL) must not take the exporting process down with it.
_ISOLATED = """
import sys, numpy as np, onnxruntime as ort
model, inp, out, level = sys.argv[1:5]
o = ort.SessionOptions()
o.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
o.log_severity_level = 3
s = ort.InferenceSession(model, sess_options=o, providers=["CPUExecutionProvider"])
x = np.load(inp)
np.save(out, s.run(None, {s.get_inputs()[0].name: x})[0].astype(np.float32))
"""


def run_onnx_isolated(
    path: Path, inputs: np.ndarray, *, level: str = "ORT_ENABLE_EXTENDED", timeout: float = 600.0
) -> np.ndarray:
    """Run a graph on the CPU provider in a child process; (N, D) float32.

    Raises:
        RuntimeError: the child failed or crashed (the message carries its exit code and stderr tail).
    """
    with tempfile.TemporaryDirectory(prefix="vtr-onnx-check-") as tmp:
        inp, out = Path(tmp) / "in.npy", Path(tmp) / "out.npy"
        np.save(inp, inputs)
        proc = subprocess.run(
            [sys.executable, "-c", _ISOLATED, str(path), str(inp), str(out), level],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr or "").strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"onnxruntime child exited with code {proc.returncode}: {tail[0][:200]}")
        return np.load(out)

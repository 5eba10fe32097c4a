"""Graph transforms applied after export: transformer fusions, offline ORT optimisation, int8, fp16.

- ``fuse_transformer``: onnxscript's onnxruntime fusions (``onnxscript.rewriter.ort_fusions``):
  per layer one ``com.microsoft.Attention`` (packed QKV GEMM + attention), ``SkipLayerNormalization``
  (residual add + LayerNorm) and ``BiasGelu``, then onnxruntime's hardware-independent ``basic``
  level offline (constant folding of the weight slicing the fusions leave behind), so the file is
  portable across CPUs and execution providers. Needs the attention exported in the 4-D form of
  :class:`onnx_export.towers.FusableAttention`.
- ``optimize_graph``: onnxruntime's offline graph optimisation at a chosen level, saved to a file.
  Levels above ``basic`` may fuse into hardware-specific kernels, so such a file is meant for the
  machine class it was made on; the bundle records the level.
- ``quantize_int8``: dynamic quantisation (int8 weights, activations quantised per batch at run
  time) of the MatMul/Gemm layers, for the CPU path. The patch-embedding convolution stays fp32:
  ORT's ConvInteger is slow on CPU and the layer is a small share of the compute.
- ``convert_fp16``: float16 weights and compute for the GPU path, with float32 graph inputs and
  outputs so callers feed and read the same dtypes as the fp32 bundle.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Literal

from vtr_qdrant.errors import ConfigError, ExportError

__all__ = ["OptLevel", "OPT_LEVELS", "FUSED_OPS", "fuse_transformer", "fused_op_counts", "optimize_graph",
           "quantize_int8", "convert_fp16"]

log = logging.getLogger(__name__)

OptLevel = Literal["disable", "basic", "extended", "all"]
OPT_LEVELS: tuple[str, ...] = ("disable", "basic", "extended", "all")


def optimize_graph(src: Path, dst: Path, level: OptLevel) -> None:
    """Write ``src`` optimised offline by onnxruntime at ``level`` to ``dst`` (may equal ``src``)."""
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if level not in levels:
        raise ConfigError(f"unknown opt_level {level!r}; expected one of {', '.join(OPT_LEVELS)}")
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".opt-") as tmp:
        out = Path(tmp) / dst.name
        opts = ort.SessionOptions()
        opts.graph_optimization_level = levels[level]
        opts.optimized_model_filepath = str(out)
        opts.log_severity_level = 3
        ort.InferenceSession(str(src), sess_options=opts, providers=["CPUExecutionProvider"])
        out.replace(dst)
    log.info("optimised %s offline at level %r", dst.name, level)


#: Contrib operators the transformer fusions produce (counted in the manifest).
FUSED_OPS: tuple[str, ...] = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "BiasGelu", "FastGelu",
                              "Gelu")


def fused_op_counts(path: Path) -> dict[str, int]:
    """How many nodes of each :data:`FUSED_OPS` type the graph at ``path`` holds (zeros left out)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.op_type in FUSED_OPS and node.domain == "com.microsoft":
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def fuse_transformer(src: Path, dst: Path) -> dict[str, object]:
    """Fuse attention, residual+LayerNorm and bias+GELU into onnxruntime contrib ops; ``src`` -> ``dst``.

    Args:
        src: an fp32 tower graph (attention exported as :class:`onnx_export.towers.FusableAttention`).
        dst: the fused graph (may equal ``src``).

    Returns:
        What to record in the manifest: ``{"tool": ..., "ops": {op_type: count}}``. ``ops`` is empty
        when nothing matched (the graph is then only constant-folded).

    Raises:
        ExportError: onnxscript is missing or its rewriter failed.
    """
    try:
        import onnx_ir as ir
        from onnxscript.rewriter.ort_fusions import optimize_for_ort
    except ImportError as e:
        raise ExportError(
            f"transformer fusions need onnxscript ({e}); pip install 'vtr-qdrant[export]' or export with fuse=False"
        ) from e
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".fuse-") as tmp:
        mid = Path(tmp) / "fused.onnx"
        try:
            with _quiet_logger("onnxscript"):  # one "skipping constant folding" warning per Split
                model = ir.load(str(src))
                model, _ = optimize_for_ort(model)
            ir.save(model, str(mid))
            # The fusions concatenate the sliced q/k/v weights with graph ops; fold them into
            # initializers (basic = hardware-independent rewrites only) so the file stays portable
            # and int8 quantisation sees a constant packed weight (QAttention needs one).
            optimize_graph(mid, dst, "basic")
        except Exception as e:  # noqa: BLE001 - the rewriter and onnxruntime raise many types
            raise ExportError(f"transformer fusions failed on {src.name}: {type(e).__name__}: {e}") from e
    ops = fused_op_counts(dst)
    log.info("fused %s: %s", dst.name, ", ".join(f"{v} {k}" for k, v in ops.items()) or "no pattern matched")
    return {"tool": f"onnxscript.rewriter.ort_fusions {_version('onnxscript')} + onnxruntime basic", "ops": ops}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


@contextlib.contextmanager
def _quiet_logger(name: str | None, level: int = logging.ERROR) -> Iterator[None]:
    lg = logging.getLogger(name)
    before = lg.level
    if before < level:
        lg.setLevel(level)
    try:
        yield
    finally:
        lg.setLevel(before)


def _quiet_root_logger() -> contextlib.AbstractContextManager[None]:
    # onnxruntime.quantization logs one line per tensor through the *root* logger at INFO.
    return _quiet_logger(None, logging.WARNING)


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation of ``src``'s MatMul/Gemm weights into ``dst``.

    Args:
        src: fp32 .onnx file.
        dst: output file (must differ from ``src``).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if src.resolve() == dst.resolve():
        raise ConfigError("quantize_int8 needs distinct source and destination files")
    # uint8 weights: with int8 weights, x86 u8s8 kernels (VPMADDUBSW) saturate their 16-bit
    # intermediate sums; measured on ViT-B-32 here: min cosine to torch 0.9846 (QInt8, also
    # per-channel) vs 0.9998 (QUInt8), and QUInt8 was faster too. Activation x activation MatMuls
    # (attention scores) stay fp32 (MatMulConstBOnly, the dynamic-quantisation default).
    with _quiet_root_logger():
        quantize_dynamic(
            model_input=str(src),
            model_output=str(dst),
            op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=False,
            reduce_range=False,
            weight_type=QuantType.QUInt8,
            extra_options={"MatMulConstBOnly": True},
        )
    log.info("quantised %s to int8 (dynamic, MatMul/Gemm): %.1f MB -> %.1f MB", src.name,
             src.stat().st_size / 1e6, dst.stat().st_size / 1e6)


def convert_fp16(src: Path, dst: Path) -> None:
    """Convert ``src`` to float16 weights/compute with float32 inputs and outputs, into ``dst``."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    # keep_io_types: the bundle's I/O contract (float32 pixels in, float32 embeddings out) holds;
    # casts sit at the graph boundary. LayerNorm/Softmax/reductions run in fp16 on the GPU (CUDA
    # kernels accumulate in fp32).
    half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    onnx.save(half, str(dst))
    log.info("converted %s to float16 (fp32 I/O): %.1f MB", dst.name, dst.stat().st_size / 1e6)

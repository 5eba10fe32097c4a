"""Explicit tower modules around an open_clip model and their export to ONNX.

open_clip has no standalone text module (``encode_text`` reads the token embedding, positional
embedding, transformer, final LayerNorm and projection from the model itself), so each tower is a
small wrapper module with one tensor in and one tensor out. The wrappers fix what the bundle's
manifest promises: the I/O names, a dynamic batch axis, int64 token ids and (by default) an
L2-normalised output.

:func:`fusable_attention` swaps ``nn.MultiheadAttention`` for :class:`FusableAttention` while
exporting: the same weights and the same arithmetic, written as the textbook
(batch, heads, seq, head_dim) attention that onnxruntime's transformer fusions recognise.
``nn.MultiheadAttention`` itself exports as a 3-D ``(seq, batch*heads, head_dim)`` reshuffle that
no fusion pass matches (checked: onnxruntime.transformers.optimizer with model types
clip/vit/bert and onnxscript's ort_fusions fuse no attention in that graph).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vtr_qdrant.errors import ConfigError, ExportError

__all__ = [
    "VISUAL_INPUT",
    "VISUAL_OUTPUT",
    "TEXT_INPUT",
    "TEXT_OUTPUT",
    "ExportMethod",
    "FusableAttention",
    "fusable_attention",
    "VisualTower",
    "TextTower",
    "export_tower",
    "describe_io",
    "ExportError",
]

log = logging.getLogger(__name__)

VISUAL_INPUT = "pixel_values"
VISUAL_OUTPUT = "image_embeds"
TEXT_INPUT = "input_ids"
TEXT_OUTPUT = "text_embeds"

ExportMethod = Literal["auto", "dynamo", "legacy"]


class VisualTower(nn.Module):
    """``pixel_values`` (N, 3, S, S) float32, normalised with the model's mean/std ->
    ``image_embeds`` (N, D) float32 (L2-normalised when ``normalize``)."""

    def __init__(self, model: nn.Module, *, normalize: bool = True) -> None:
        super().__init__()
        self.model = model
        self.normalize = normalize

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x: torch.Tensor = self.model.encode_image(pixel_values)  # type: ignore[operator]
        return F.normalize(x, dim=-1) if self.normalize else x


class TextTower(nn.Module):
    """``input_ids`` (N, L) int64 from the CLIP tokenizer -> ``text_embeds`` (N, D) float32.

    open_clip pools the text at the end-of-text token with ``argmax`` over the ids (the end-of-text
    id is the largest in the vocabulary); the graph keeps that argmax, so ids must be int64 and the
    tokenizer must be the one the model was trained with.
    """

    def __init__(self, model: nn.Module, *, normalize: bool = True) -> None:
        super().__init__()
        self.model = model
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x: torch.Tensor = self.model.encode_text(input_ids)  # type: ignore[operator]
        return F.normalize(x, dim=-1) if self.normalize else x


class FusableAttention(nn.Module):
    """``nn.MultiheadAttention`` (same parameters, same call) as explicit 4-D attention, for export.

    Computes ``softmax(q k^T / sqrt(head_dim) + mask) v`` with q, k, v of shape (N, H, L, head_dim)
    from three projections sliced out of the wrapped module's packed ``in_proj_weight``, then the
    output projection: the pattern ``onnxscript.rewriter.ort_fusions`` turns into one
    ``com.microsoft.Attention`` (packed QKV GEMM + softmax attention) per layer. Calls it cannot
    express (key padding masks, attention weights requested) go to the wrapped module unchanged.
    """

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        if not supports_fusable_attention(mha):
            raise ConfigError(f"{mha!r} has separate k/v dims, bias_k/bias_v or add_zero_attn; it cannot be rewritten")
        self.mha = mha
        self.num_heads = int(mha.num_heads)
        self.head_dim = int(mha.head_dim)
        self.batch_first = bool(mha.batch_first)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if key_padding_mask is not None or need_weights or is_causal or query.dim() != 3:
            return self.mha(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                            attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal)
        m = self.mha
        if not self.batch_first:  # (L, N, E) -> (N, L, E)
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        n, lq, e = query.shape
        lk = key.shape[1]
        w_q, w_k, w_v = m.in_proj_weight.chunk(3)
        b_q, b_k, b_v = m.in_proj_bias.chunk(3) if m.in_proj_bias is not None else (None, None, None)
        h, d = self.num_heads, self.head_dim
        q = F.linear(query, w_q, b_q).reshape(n, lq, h, d).transpose(1, 2)
        k = F.linear(key, w_k, b_k).reshape(n, lk, h, d).transpose(1, 2)
        v = F.linear(value, w_v, b_v).reshape(n, lk, h, d).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(d))
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                attn_mask = torch.zeros_like(attn_mask, dtype=scores.dtype).masked_fill(attn_mask, float("-inf"))
            if attn_mask.dim() == 3:  # (N*H, Lq, Lk) -> (N, H, Lq, Lk)
                attn_mask = attn_mask.reshape(n, h, lq, lk)
            scores = scores + attn_mask.to(scores.dtype)
        out = torch.matmul(scores.softmax(dim=-1), v).transpose(1, 2).reshape(n, lq, e)
        out = F.linear(out, m.out_proj.weight, m.out_proj.bias)
        return (out if self.batch_first else out.transpose(0, 1)), None


def supports_fusable_attention(module: nn.Module) -> bool:
    """True for an ``nn.MultiheadAttention`` that :class:`FusableAttention` can stand in for."""
    return (
        isinstance(module, nn.MultiheadAttention)
        and bool(module._qkv_same_embed_dim)
        and module.in_proj_weight is not None
        and module.bias_k is None
        and module.bias_v is None
        and not module.add_zero_attn
        and (module.dropout == 0.0 or not module.training)
    )


@contextlib.contextmanager
def fusable_attention(model: nn.Module) -> Iterator[int]:
    """Temporarily replace every eligible ``nn.MultiheadAttention`` in ``model`` by :class:`FusableAttention`.

    Yields the number of modules replaced; the originals are put back on exit (also on errors),
    so the caller's model is unchanged afterwards. Parameters are shared, not copied.
    """
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(model.modules()):
        if isinstance(parent, FusableAttention):
            continue
        for name, child in list(parent.named_children()):
            if supports_fusable_attention(child):
                setattr(parent, name, FusableAttention(child))  # type: ignore[arg-type]
                swapped.append((parent, name, child))
    try:
        yield len(swapped)
    finally:
        for parent, name, child in reversed(swapped):
            setattr(parent, name, child)


@contextlib.contextmanager
def _mha_fastpath_disabled() -> Iterator[None]:
    # The TorchScript exporter cannot trace the fused ``_native_multi_head_attention`` kernel that
    # nn.MultiheadAttention takes under no_grad in eval mode; the unfused path exports fine.
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    before = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


def _export_dynamo(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str, opset: int) -> None:
    batch = torch.export.Dim("batch", min=1)
    # The dynamo exporter prints progress lines to stdout; keep the CLI's report clean.
    chatter = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_shapes=({0: batch},),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    if chatter.getvalue():
        log.debug("torch.onnx (dynamo): %s", chatter.getvalue().strip())
    if not path.is_file():
        raise ExportError(f"torch.onnx.export(dynamo=True) wrote no file at {path}")


def _export_legacy(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str, opset: int) -> None:
    with warnings.catch_warnings(), _mha_fastpath_disabled():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def export_tower(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    input_name: str,
    output_name: str,
    opset: int,
    method: ExportMethod = "auto",
) -> str:
    """Export one tower to ``path`` (a single self-contained .onnx file).

    Args:
        module: a :class:`VisualTower` or :class:`TextTower` in eval mode.
        example: an example input with batch size >= 2 (a batch of 1 could be specialised away).
        path: the .onnx file to write.
        input_name: graph input name.
        output_name: graph output name.
        opset: ONNX opset (>= 17: LayerNormalization is a single op from 17 on).
        method: ``"dynamo"`` (torch.export-based exporter, needs onnxscript; cleaner graph),
            ``"legacy"`` (TorchScript-based, fast, MHA fast path disabled while exporting) or
            ``"auto"`` (dynamo, falling back to legacy with a warning if it fails).

    Returns:
        The method that produced the file (``"dynamo"`` or ``"legacy"``).

    Raises:
        ConfigError: bad opset or method.
        ExportError: the exporter(s) failed.
    """
    if opset < 17:
        raise ConfigError(f"opset {opset} is too old: the bundle needs opset >= 17 (single-op LayerNormalization)")
    if method not in ("auto", "dynamo", "legacy"):
        raise ConfigError(f"unknown export method {method!r}; expected 'auto', 'dynamo' or 'legacy'")
    if example.shape[0] < 2:
        raise ConfigError("the example input needs a batch of at least 2 so the batch axis stays dynamic")
    errors: list[str] = []
    order = ["dynamo", "legacy"] if method == "auto" else [method]
    for m in order:
        path.unlink(missing_ok=True)
        try:
            with torch.no_grad():
                if m == "dynamo":
                    _export_dynamo(module, example, path, input_name, output_name, opset)
                else:
                    _export_legacy(module, example, path, input_name, output_name, opset)
        except Exception as e:  # noqa: BLE001 - exporters raise anything; we report and maybe fall back
            msg = f"{m} exporter failed: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            errors.append(msg)
            if method == "auto" and m == "dynamo":
                log.warning("%s; falling back to the legacy TorchScript exporter", msg)
            continue
        log.debug("exported %s with the %s exporter", path.name, m)
        return m
    raise ExportError(f"could not export {path.name}: " + "; ".join(errors))


def describe_io(path: Path) -> dict[str, Any]:
    """Names, element types and shapes of a graph's inputs and outputs (for checks and logs)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def dims(vi: Any) -> list[int | str]:
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    return {
        "inputs": [(i.name, onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type), dims(i)) for i in model.graph.input],
        "outputs": [(o.name, onnx.TensorProto.DataType.Name(o.type.tensor_type.elem_type), dims(o)) for o in model.graph.output],
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0),
    }

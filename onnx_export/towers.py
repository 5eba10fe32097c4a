"""Explicit tower modules around an open_clip model and their export to ONNX.

open_clip has no standalone text module (``encode_text`` reads the token embedding, positional
embedding, transformer, final LayerNorm and projection from the model itself), so each tower is a
small wrapper module with one tensor in and one tensor out. The wrappers fix what the bundle's
manifest promises: the I/O names, a dynamic batch axis, int64 token ids and (by default) an
L2-normalised output.
"""

from __future__ import annotations

import contextlib
import io
import logging
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

"""The open_clip export API in one place: ``from onnx_export.clip import export_model, export_pretrained``.

:func:`export_model` (in :mod:`onnx_export.clip_export`) exports any loaded open_clip model to a
verified bundle; :func:`export_pretrained` (in :mod:`onnx_export.pretrained`) loads one by
architecture and pretrained tag first. This module only re-exports them under the names wave 1
published, so neither implementation module imports the other's façade.
"""

from __future__ import annotations

from .clip_export import (
    INT8_MIN_COSINE,
    PARITY_IMAGES,
    STALE_PARTIAL_SECONDS,
    TEXT_FILE,
    VISUAL_FILE,
    ExportError,
    ExportReport,
    export_model,
    tokenize_with,
)
from .pretrained import export_pretrained

__all__ = [
    "export_model",
    "export_pretrained",
    "ExportReport",
    "ExportError",
    "tokenize_with",
    "INT8_MIN_COSINE",
    "PARITY_IMAGES",
    "STALE_PARTIAL_SECONDS",
    "TEXT_FILE",
    "VISUAL_FILE",
]

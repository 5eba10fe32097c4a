"""Torch side of vtr-qdrant: export open_clip models to verified model bundles.

``python -m onnx_export clip --model ViT-B-32 --pretrained laion2b_s34b_b79k --out DIR``, or from
Python :func:`onnx_export.clip.export_model` / :func:`onnx_export.pretrained.export_pretrained`.
Needs the ``export`` extra (torch, open_clip, onnx, onnxscript); importing this package alone
imports none of them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ExportReport", "export_model", "export_pretrained"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        return getattr(importlib.import_module(".pretrained" if name == "export_pretrained" else ".clip", __name__), name)
    raise AttributeError(f"module 'onnx_export' has no attribute {name!r}")

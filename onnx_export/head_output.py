"""What head training writes: a new bundle with the head (``xpool.npz``), and optionally its ONNX graph."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from vtr_qdrant.errors import ArtifactError, ConfigError
from vtr_qdrant.search.resolve import towers_fingerprint
from vtr_qdrant.search.xpool import XPoolHead

from .head_config import HeadTrainResult
from .head_module import XPoolModule

if TYPE_CHECKING:
    from vtr_qdrant.model.bundle import ModelBundle

__all__ = ["HEAD_FILE", "ONNX_FILE", "REPORT_FILE", "export_head_onnx", "write_head_bundle"]

log = logging.getLogger("onnx_export.train_head")

HEAD_FILE = "xpool.npz"
ONNX_FILE = "xpool.onnx"
REPORT_FILE = "train_report.json"


class _SimilarityGraph(nn.Module):
    """ONNX wrapper: (text (T, D), frames (V, F, D), mask (V, F) bool) -> (T, V) cosine scores."""

    def __init__(self, head: XPoolModule) -> None:
        super().__init__()
        self.head = head

    def forward(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head.similarity(text, frames, mask)


def export_head_onnx(head: XPoolHead, path: str | Path, *, opset: int = 17) -> Path:
    """Export a head's similarity as ONNX (inputs ``text`` (T, D) float32, ``frames`` (V, F, D)
    float32, ``frame_mask`` (V, F) bool; output ``scores`` (T, V) float32), checked against numpy.

    Raises:
        ArtifactError: the exported graph disagrees with :meth:`XPoolHead.similarity`.
    """
    import warnings

    p = Path(path)
    module = XPoolModule(head.dim, head.num_heads, dropout=0.0, adaptive=head.adaptive)
    state = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in head.state_dict("").items()}
    if head.adaptive:  # the numpy head's (D,) and () -> torch Linear(D, 1)
        state["adaptive_scale.weight"] = state["adaptive_scale.weight"].reshape(1, -1)
        state["adaptive_scale.bias"] = state["adaptive_scale.bias"].reshape(1)
    module.load_state_dict(state)
    module.eval()
    rng = np.random.default_rng(0)
    text = rng.standard_normal((3, head.dim)).astype(np.float32)
    frames = rng.standard_normal((4, 5, head.dim)).astype(np.float32)
    mask = np.ones((4, 5), bool)
    mask[1, 3:] = False
    p.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _SimilarityGraph(module),
            (torch.from_numpy(text), torch.from_numpy(frames), torch.from_numpy(mask)),
            str(p),
            input_names=["text", "frames", "frame_mask"],
            output_names=["scores"],
            dynamic_axes={
                "text": {0: "T"},
                "frames": {0: "V", 1: "F"},
                "frame_mask": {0: "V", 1: "F"},
                "scores": {0: "T", 1: "V"},
            },
            opset_version=opset,
            dynamo=False,
        )
    import onnxruntime as ort

    sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"text": text, "frames": frames, "frame_mask": mask})[0]
    want = head.similarity(text.astype(np.float64), frames.astype(np.float64), mask)
    err = float(np.abs(got - want).max())
    if err > 1e-4:
        raise ArtifactError(
            f"exported X-Pool ONNX graph disagrees with the numpy head (max |diff| {err:.2e})"
        )
    log.info("exported %s (max |diff| vs numpy %.2e)", p, err)
    return p


def write_head_bundle(
    result: HeadTrainResult | XPoolHead,
    source: ModelBundle,
    out_dir: str | Path,
    *,
    name: str | None = None,
    onnx: bool = False,
    recipe: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> ModelBundle:
    """Write a new bundle: the source bundle's files (copied unchanged) plus the head.

    Args:
        result: a training result (its summary goes to ``train_report.json`` and the recipe) or a head.
        source: the bundle whose towers produced the training embeddings.
        out_dir: the new bundle folder (must not exist unless ``overwrite``; never the source folder).
        name: the new bundle's name (default ``<source name>+xpool``).
        onnx: also write ``xpool.onnx`` (not referenced by the manifest).
        recipe: extra provenance recorded under ``source.recipe["xpool"]``.
        overwrite: replace an existing folder's files.

    Returns:
        The new bundle, loaded and verified; its towers fingerprint equals the source's.
    """
    from vtr_qdrant.model.bundle import ModelBundle
    from vtr_qdrant.model.manifest import XPoolSpec, write_manifest

    out = Path(out_dir)
    if out.resolve() == source.path.resolve():
        raise ConfigError("write the head bundle to a new folder, not over the source bundle")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} exists and is not empty (pass overwrite=True / --overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    head = result.head if isinstance(result, HeadTrainResult) else result
    if head.dim != source.embed_dim:
        raise ConfigError(f"head dim {head.dim} does not match the bundle's embed_dim {source.embed_dim}")
    m = source.manifest
    for rel in [m.visual.file, m.text.file, m.tokenizer.file]:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.file(rel), out / rel)
    head.save(out / HEAD_FILE)
    info: dict[str, Any] = {
        "source_bundle": m.name,
        "source_fingerprint": towers_fingerprint(m),
        **(recipe or {}),
    }
    if isinstance(result, HeadTrainResult):
        summary = result.summary()
        info.update(
            {
                k: summary[k]
                for k in ("config", "best_step", "val_identity", "val_best", "train_videos", "val_videos")
            }
        )
        (out / REPORT_FILE).write_text(json.dumps(summary, indent=2))
    if onnx:
        export_head_onnx(head, out / ONNX_FILE)
    new_source = m.source.model_copy(update={"recipe": {**m.source.recipe, "xpool": info}})
    manifest = m.model_copy(
        update={
            "name": name or f"{m.name}+xpool",
            "source": new_source,
            "xpool": XPoolSpec(file=HEAD_FILE, num_heads=head.num_heads, format="npz", adaptive=head.adaptive),
            "created_at": "",
        }
    )
    write_manifest(out, manifest)
    bundle = ModelBundle.load(out)
    if towers_fingerprint(bundle.manifest) != towers_fingerprint(m):
        raise ArtifactError("the copied towers do not reproduce the source bundle's fingerprint")
    return bundle

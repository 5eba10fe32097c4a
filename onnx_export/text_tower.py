"""A bundle's text tower back in torch, and a new bundle that changes only the text tower.

Used to fine-tune the text tower of a bundle whose torch checkpoint is not kept (the built-in
``synthetic-world/v1`` ships ONNX graphs only): :func:`text_model_from_bundle` rebuilds the open_clip
model's text half from ``text.onnx``'s initializers and checks it against the graph;
:func:`write_text_bundle` exports a fine-tuned text tower next to the source bundle's image tower and
tokenizer (copied byte for byte), checked against torch like every other export.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from vtr_qdrant.errors import ExportError

from .bundle_folder import prepare_target, publish
from .towers import TEXT_INPUT, TEXT_OUTPUT, TextTower, export_tower
from .verify import PARITY_TEXTS, compare, onnx_session, run_onnx, torch_outputs

if TYPE_CHECKING:
    from vtr_qdrant.model.bundle import ModelBundle

__all__ = ["TEXT_PREFIXES", "text_model_from_bundle", "text_parity", "write_text_bundle"]

log = logging.getLogger("onnx_export.text_tower")

#: State-dict keys of an open_clip ``CLIP`` that belong to the text tower.
TEXT_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


def _is_text_key(key: str) -> bool:
    return key.startswith(TEXT_PREFIXES)


def _onnx_text_weights(path: Path, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Text-tower weights read from ``text.onnx``: by name (``model.<key>``), else — for the matrices
    the exporter stored transposed under a generated name — the next unused transposed initializer of
    the right shape, in graph order (the order open_clip's layers are exported in)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    named = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    unnamed = [(n, a) for n, a in named.items() if not n.startswith("model.")]
    used: set[str] = set()
    out: dict[str, torch.Tensor] = {}
    for key, ref in state.items():
        if not _is_text_key(key):
            continue
        if f"model.{key}" in named:
            arr = named[f"model.{key}"]
        else:
            want = tuple(reversed(ref.shape))
            found = next((n for n, a in unnamed if n not in used and a.shape == want and a.ndim == 2), None)
            if found is None:
                raise ExportError(f"{path}: no initializer for the text weight {key} {tuple(ref.shape)}")
            used.add(found)
            arr = named[found].T
        if tuple(arr.shape) != tuple(ref.shape):
            raise ExportError(f"{path}: {key} has shape {arr.shape} in the graph, {tuple(ref.shape)} in the model")
        out[key] = torch.from_numpy(np.array(arr, dtype=np.float32, order="C"))
    return out


def text_parity(model: nn.Module, text_onnx: Path, ids: np.ndarray) -> Any:
    """:class:`~onnx_export.verify.Parity` of the torch text tower (L2-normalised) against a graph."""
    tower = TextTower(model, normalize=True).eval()
    return compare(torch_outputs(tower, ids), run_onnx(onnx_session(text_onnx), ids))


def text_model_from_bundle(
    bundle: ModelBundle, model: nn.Module, *, texts: list[str] | None = None, min_cosine: float = 0.9999
) -> nn.Module:
    """Load ``bundle``'s text tower into ``model`` (an open_clip ``CLIP`` of the same architecture).

    Args:
        bundle: a bundle exported by :func:`onnx_export.clip.export_model` (normalised fp32 text graph).
        model: the torch model to fill; its image tower is left as it is (it is not exported again).
        texts: captions for the check (default: the exporter's parity texts).
        min_cosine: every row must reach this cosine to the graph's output.

    Returns:
        ``model``, in eval mode.

    Raises:
        ExportError: a weight is missing or mis-shaped, or the rebuilt tower disagrees with the graph.
    """
    path = bundle.file(bundle.manifest.text.file)
    state = model.state_dict()
    state.update(_onnx_text_weights(path, state))
    model.load_state_dict(state)
    model.eval()
    ids = np.asarray(bundle.tokenizer().tokenize(list(texts or PARITY_TEXTS)), dtype=np.int64)
    parity = text_parity(model, path, ids)
    if parity.min_cosine < min_cosine:
        raise ExportError(
            f"the text tower rebuilt from {path} reaches cosine {parity.min_cosine:.6f} < {min_cosine} to the "
            "graph: the bundle's graph does not have open_clip's text layout"
        )
    log.info("text tower of %s rebuilt in torch (min cosine %.8f)", bundle.name, parity.min_cosine)
    return model


def write_text_bundle(
    model: nn.Module,
    source: ModelBundle,
    out_dir: str | Path,
    *,
    name: str,
    recipe: dict[str, Any],
    overwrite: bool = False,
    min_cosine: float = 0.9999,
) -> ModelBundle:
    """A new bundle: ``source``'s image tower and tokenizer (copied byte for byte) and ``model``'s text tower.

    Args:
        model: the open_clip model with the new text weights (fp32, CPU).
        source: the bundle whose image tower the text tower was trained against.
        out_dir: the new bundle folder (absent or empty unless ``overwrite``).
        name: the new bundle's name.
        recipe: provenance for ``source.recipe``; the text graph's parity is added under ``parity``.
        overwrite: replace an existing folder (atomically, by rename).
        min_cosine: the exported graph must reach this cosine to torch on every parity text.

    Raises:
        ExportError: the graph disagrees with torch (nothing is written).
    """
    from vtr_qdrant.model.bundle import ModelBundle
    from vtr_qdrant.model.manifest import write_manifest

    out = Path(out_dir).expanduser().absolute()
    m = source.manifest
    ids = np.asarray(source.tokenizer().tokenize(list(PARITY_TEXTS)), dtype=np.int64)
    prepare_target(out, overwrite)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        for rel in (m.visual.file, m.tokenizer.file):
            shutil.copyfile(source.file(rel), tmp / rel)
        tower = TextTower(model, normalize=True).eval()
        export_tower(tower, torch.from_numpy(ids[:2].copy()), tmp / m.text.file, input_name=TEXT_INPUT,
                     output_name=TEXT_OUTPUT, opset=18, method="auto")
        parity = text_parity(model, tmp / m.text.file, ids)
        if parity.min_cosine < min_cosine:
            raise ExportError(f"exported text tower reaches cosine {parity.min_cosine:.6f} < {min_cosine} to torch")
        rec = {**recipe, "parity": {"texts": len(ids), "text": parity.as_dict()}}
        manifest = m.model_copy(
            update={"name": name, "source": m.source.model_copy(update={"recipe": rec}), "xpool": None, "created_at": ""}
        )
        write_manifest(tmp, manifest)
        publish(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ModelBundle.load(out)

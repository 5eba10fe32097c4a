"""Export an open_clip model by architecture and pretrained tag (or local checkpoint): ``python -m onnx_export clip``.

Image size, mean/std, resize mode and interpolation come from the model's own preprocess config and
the context length from the model, so the bundle's preprocessing can never drift from its weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from vtr_qdrant.errors import ArtifactError, ConfigError, ModelNotFoundError, VtrError
from vtr_qdrant.model.manifest import ModelSource, sha256_file

from .clip_export import ExportReport, export_model, tokenize_with
from .verify import PARITY_TEXTS

__all__ = ["export_pretrained"]


def _known_architecture(architecture: str) -> None:
    import open_clip

    if architecture.startswith(("hf-hub:", "local-dir:")):
        return
    if architecture not in open_clip.list_models():
        raise ModelNotFoundError(
            f"open_clip has no architecture {architecture!r}. List them with "
            "`python -c 'import open_clip; print(open_clip.list_models())'` and the (architecture, tag) pairs "
            "with `open_clip.list_pretrained()`"
        )


def _check_tokenizer(architecture: str, merges_file: Path, context_length: int) -> None:
    """Refuse models whose open_clip tokenizer the bundle's torch-free tokenizer does not reproduce.

    The bundle only knows open_clip's default CLIP BPE (``clean="lower"``, no reduction); models with
    Hugging Face tokenizers or other cleaning would get plausible-looking but wrong ids. Checked on
    the model's actual tokenizer object and on the ids of :data:`PARITY_TEXTS`.
    """
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer, get_clean_fn

    try:
        tok = open_clip.get_tokenizer(architecture, context_length=context_length)
    except Exception as e:  # noqa: BLE001 - open_clip raises many types while building tokenizers
        raise ConfigError(f"cannot build the open_clip tokenizer of {architecture}: {type(e).__name__}: {e}") from e
    if (
        not isinstance(tok, SimpleTokenizer)
        or tok.clean_fn is not get_clean_fn("lower")
        or tok.reduction_fn is not None
        or len(tok.all_special_ids) != 2
    ):
        raise ConfigError(
            f"{architecture} uses a tokenizer the bundle runtime cannot reproduce ({type(tok).__name__}); only "
            "open_clip's default CLIP BPE tokenizer (clean='lower', no reduction mask) is supported"
        )
    ours, _ = tokenize_with(merges_file, context_length, PARITY_TEXTS)
    theirs = tok(list(PARITY_TEXTS)).numpy()
    if ours.shape != theirs.shape or not np.array_equal(ours, theirs):
        raise ConfigError(
            f"the bundle tokenizer (merges file {merges_file.name}) gives other ids than {architecture}'s open_clip "
            "tokenizer on the check strings; refusing to export a bundle that would encode queries wrongly"
        )


def _load_error(architecture: str, pretrained: str | None, checkpoint: Path | None, e: Exception) -> VtrError:
    if checkpoint is not None:
        return ArtifactError(f"could not load {architecture} weights from checkpoint {checkpoint}: {type(e).__name__}: {e}")
    net = any(k in type(e).__name__ for k in ("Connection", "Timeout", "HTTP", "LocalEntryNotFound", "URL", "Offline"))
    net = net or any(k in str(e) for k in ("resolve", "connect", "offline", "Network", "internet", "HF_HUB_OFFLINE"))
    why = "the model hub looks unreachable" if net else "loading the pretrained weights failed"
    return ModelNotFoundError(
        f"could not get {architecture}/{pretrained}: {why} ({type(e).__name__}: {str(e)[:300]}). "
        f"Download the checkpoint on a machine with internet access and pass it with "
        f"--checkpoint PATH (python API: checkpoint=PATH) together with --model {architecture}"
    )


def export_pretrained(
    architecture: str,
    *,
    pretrained: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str],
    name: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> ExportReport:
    """Load an open_clip model (hub tag or local checkpoint) and export it with :func:`export_model`.

    Image size, mean/std, resize mode and interpolation come from the model's preprocess config
    (what ``open_clip.create_model_and_transforms`` uses for evaluation); the context length from
    the model; the merges file is open_clip's default CLIP BPE file.

    Args:
        architecture: an open_clip architecture name, e.g. ``"ViT-B-32"``.
        pretrained: an open_clip pretrained tag, e.g. ``"laion2b_s34b_b79k"`` (downloads from the hub).
        checkpoint: a local checkpoint file instead of a tag (no network).
        out_dir: the bundle folder to create.
        name: bundle name; defaults to ``"ARCH/TAG"`` or ``"ARCH/<checkpoint file stem>"``.
        cache_dir: open_clip's download cache folder.
        **options: passed to :func:`export_model` (``fp16``, ``int8``, ``opset``, ``opt_level``,
            ``min_cosine``, ``verify``, ``normalize``, ``method``, ``overwrite``).

    Raises:
        ConfigError: both or neither of ``pretrained``/``checkpoint``; unsupported tokenizer/preprocessing.
        ModelNotFoundError: unknown architecture or tag, or the hub is unreachable.
        ArtifactError: the checkpoint is missing or cannot be loaded.
    """
    from vtr_qdrant._optional import require

    open_clip = require("open_clip", "export", purpose="exporting open_clip models")
    schema = architecture.startswith(("hf-hub:", "local-dir:"))  # weights come with the config
    if (pretrained is not None and checkpoint is not None) or (not schema and pretrained is None and checkpoint is None):
        raise ConfigError(
            "pass exactly one of pretrained (an open_clip tag, e.g. 'laion2b_s34b_b79k') or checkpoint (a local "
            "file); exporting random weights is not supported"
        )
    ckpt = _checked_weights(open_clip, architecture, pretrained, checkpoint)
    try:
        model, _, _ = open_clip.create_model_and_transforms(
            architecture,
            pretrained=str(ckpt) if ckpt is not None else pretrained,
            precision="fp32",
            device="cpu",
            cache_dir=None if cache_dir is None else str(cache_dir),
        )
    except VtrError:
        raise
    except Exception as e:  # noqa: BLE001 - downloads and torch.load raise many unrelated types
        raise _load_error(architecture, pretrained, ckpt, e) from e

    pp, size, context_length = _model_config(open_clip, architecture, model)
    from open_clip.tokenizer import default_bpe

    _check_tokenizer(architecture, Path(default_bpe()), context_length)
    recipe: dict[str, Any] = {"preprocess_cfg": {k: (list(v) if isinstance(v, tuple) else v) for k, v in pp.items()}}
    if ckpt is not None:
        recipe["checkpoint_sha256"] = sha256_file(ckpt)
    source = ModelSource(
        framework="open_clip",
        architecture=architecture,
        pretrained=pretrained,
        checkpoint=str(ckpt) if ckpt is not None else None,
        recipe=recipe,
    )
    if schema:
        default_name = architecture.split(":", 1)[1].strip("/").replace(":", "_")
    elif pretrained:
        default_name = f"{architecture}/{pretrained}"
    else:
        default_name = f"{architecture}/{ckpt.stem if ckpt else 'local'}"
    return export_model(
        model,
        out_dir=out_dir,
        name=name or default_name,
        image_size=size,
        mean=tuple(pp.get("mean", ())),
        std=tuple(pp.get("std", ())),
        context_length=context_length,
        merges_file=default_bpe(),
        source=source,
        resize_mode=pp.get("resize_mode", "shortest"),
        interpolation=pp.get("interpolation", "bicubic"),
        **options,
    )


def _checked_weights(open_clip: Any, architecture: str, pretrained: str | None, checkpoint: Any) -> Path | None:
    """The local checkpoint path (checked), or None for a hub tag (checked against open_clip's list)."""
    _known_architecture(architecture)
    ckpt: Path | None = None
    if checkpoint is not None:
        ckpt = Path(checkpoint).expanduser()
        if not ckpt.is_file():
            raise ArtifactError(f"checkpoint file {ckpt} not found")
    elif not architecture.startswith(("hf-hub:", "local-dir:")):
        tags = open_clip.list_pretrained_tags_by_model(architecture)
        if pretrained not in tags:
            raise ModelNotFoundError(
                f"open_clip has no pretrained tag {pretrained!r} for {architecture}; known tags: "
                f"{', '.join(tags) or 'none'}. See open_clip.list_pretrained() for every (architecture, tag) pair, "
                "or pass a local checkpoint"
            )
    return ckpt


def _model_config(open_clip: Any, architecture: str, model: Any) -> tuple[dict[str, Any], int, int]:
    """(preprocess config, square image size, context length) from the model's own config."""
    pp = open_clip.get_model_preprocess_cfg(model)
    size = pp.get("size", getattr(model.visual, "image_size", None))
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise ConfigError(f"{architecture} takes non-square {tuple(size)} images; the bundle needs a square size")
        size = size[0]
    if not isinstance(size, int):
        raise ConfigError(f"cannot read the image size of {architecture} from its preprocess config ({pp!r})")
    context_length = open_clip.get_model_tokenize_cfg(model).get("context_length") or getattr(model, "context_length", None)
    if not isinstance(context_length, int):
        raise ConfigError(f"cannot read the context length of {architecture}")
    return pp, size, context_length

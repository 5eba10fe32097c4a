"""Checks before an export writes anything: options, the model, the tokenizer's merges file and vocabulary."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from vtr_qdrant.errors import ArtifactError, ConfigError

from .quantize import OPT_LEVELS

__all__ = ["check_merges_file", "validate_options", "check_model", "check_vocab"]


def check_merges_file(path: Path) -> None:
    if not path.is_file():
        raise ArtifactError(f"tokenizer merges file {path} not found")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            f.readline()
    except (OSError, UnicodeDecodeError) as e:
        raise ArtifactError(
            f"{path} is not a gzip BPE merges file in open_clip's bpe_simple_vocab format: {e}"
        ) from e


def model_vocab_size(model: nn.Module) -> int | None:
    for owner in (model, getattr(model, "text", None)):
        if owner is None:
            continue
        emb = getattr(owner, "token_embedding", None)
        if isinstance(emb, nn.Embedding):
            return int(emb.num_embeddings)
        vs = getattr(owner, "vocab_size", None)
        if isinstance(vs, int):
            return vs
    return None


def validate_options(
    *, name: str, image_size: int, mean: Sequence[float], std: Sequence[float], context_length: int,
    resize_mode: str, interpolation: str, opset: int, fp16: bool, int8: bool, min_cosine: float,
    opt_level: str | None,
) -> None:
    if not name or not name.strip():
        raise ConfigError("a bundle needs a non-empty name (e.g. 'ViT-B-32/laion2b_s34b_b79k')")
    if image_size <= 0:
        raise ConfigError(f"image_size must be positive, got {image_size}")
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise ConfigError(f"mean and std need 3 values each (std > 0), got mean={mean!r} std={std!r}")
    if context_length < 2:
        raise ConfigError(f"context_length must be >= 2, got {context_length}")
    if resize_mode not in ("shortest", "squash"):
        raise ConfigError(
            f"resize mode {resize_mode!r} is not supported by the bundle runtime; expected 'shortest' or 'squash'"
        )
    if interpolation not in ("bicubic", "bilinear"):
        raise ConfigError(f"interpolation {interpolation!r} is not supported; expected 'bicubic' or 'bilinear'")
    if opset < 17:
        raise ConfigError(f"opset {opset} is too old; the bundle needs opset >= 17")
    if fp16 and int8:
        raise ConfigError(
            "fp16 (GPU path) and int8 (CPU path) are alternative builds; export two bundles instead of combining them"
        )
    if not 0.0 < min_cosine <= 1.0:
        raise ConfigError(f"min_cosine must be in (0, 1], got {min_cosine}")
    if opt_level is not None and opt_level not in OPT_LEVELS:
        raise ConfigError(f"opt_level {opt_level!r} is unknown; expected one of {', '.join(OPT_LEVELS)}")


#: Temporary export folders older than this are leftovers of killed exports and are removed.
def check_model(model: nn.Module) -> None:
    if not (callable(getattr(model, "encode_image", None)) and callable(getattr(model, "encode_text", None))):
        raise ConfigError(f"{type(model).__name__} has no encode_image/encode_text; pass an open_clip model")
    params = list(model.parameters())
    if params and (params[0].dtype != torch.float32 or params[0].device.type != "cpu"):
        raise ConfigError(
            f"export an fp32 model on CPU (got {params[0].dtype} on {params[0].device}); load it with "
            "precision='fp32', device='cpu' and use fp16=True for a half-precision bundle"
        )


def check_vocab(model: nn.Module, merges: Path, tok_vocab: int) -> None:
    model_vocab = model_vocab_size(model)
    if model_vocab is not None and tok_vocab > model_vocab:
        raise ConfigError(
            f"the tokenizer in {merges.name} has {tok_vocab} tokens but the model's embedding has {model_vocab}: "
            "this merges file is not the model's tokenizer"
        )



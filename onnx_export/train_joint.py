"""Train a bundle's text tower together with its X-Pool head, the image tower frozen.

X-Pool (Gorti et al., CVPR 2022) trains the head *with* the CLIP towers. :func:`train_head` keeps
both towers frozen, which is all a user with an official checkpoint and a few thousand captioned
videos can afford; but then the head can only read what the frozen text embedding already says.
A query-adaptive head needs the text embedding to say how many scenes a caption names, and a text
tower trained only to match single frames and mean-pooled videos need not say it: measured on the
synthetic world, a linear probe on ``synthetic-world/v1`` text embeddings told whole-video captions
of two-scene videos from scene captions on 51 % of held-out captions, so the head gave them sharp
attention where flat attention ranks best.

:func:`train_text_and_head` runs the head recipe of :func:`train_head` (same batches, multi-positive
InfoNCE through the head, validation with the exact numpy head, best step kept) with the text
tower's weights in the optimiser too (their own learning rate, same warm-up and cosine schedule).
The image tower is not touched, so frame embeddings — and collections — need no re-encoding of
video to compare old and new text towers. Validation selects on scene R@1 + whole-video R@1 when
captions carry a kind, so neither kind can be traded away for the other.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vtr_qdrant.errors import InvalidInputError

from .head_batches import validation_metrics
from .head_config import HeadTrainConfig, HeadTrainResult
from .synthetic_model import encode_text_trimmed
from .text_tower import TEXT_PREFIXES
from .train_head import _HeadTrainer

__all__ = ["JointTrainer", "train_text_and_head"]

log = logging.getLogger("onnx_export.train_joint")

#: Caption kinds :func:`train_text_and_head` reports (and selects on) separately.
KINDS = ("scene", "video")


class JointTrainer(_HeadTrainer):
    """:class:`~onnx_export.train_head._HeadTrainer` whose caption embeddings come from a text tower
    being trained (registered as ``text_tower`` in the trained model, so best-step snapshots keep it)."""

    def __init__(
        self,
        text_model: nn.Module,
        caption_ids: np.ndarray,
        caption_video: np.ndarray,
        frames: np.ndarray,
        cfg: HeadTrainConfig,
        caption_groups: Sequence[Any],
        caption_kinds: Sequence[str],
        text_lr: float,
    ) -> None:
        ids = np.asarray(caption_ids, dtype=np.int64)
        if ids.ndim != 2 or len(ids) != len(caption_video) or len(caption_kinds) != len(ids):
            raise InvalidInputError("need one token row, one video and one kind per caption")
        unique, inverse = np.unique(ids, axis=0, return_inverse=True)
        self.caption_row = inverse.reshape(-1)
        self.unique_ids = torch.from_numpy(unique)
        self.text_model, self.text_lr = text_model, float(text_lr)
        self.kinds = np.asarray(list(caption_kinds))
        for p_name, p in text_model.named_parameters():
            p.requires_grad_(p_name.startswith(TEXT_PREFIXES))
        text = self._embed_rows(np.arange(len(unique)))[self.caption_row]
        super().__init__(text, caption_video, frames, None, cfg, caption_groups)

    def _embed_rows(self, rows: np.ndarray) -> np.ndarray:
        self.text_model.eval()
        with torch.no_grad():
            out = [self._encode(torch.from_numpy(rows[i : i + 4096])) for i in range(0, len(rows), 4096)]
        return torch.cat(out).numpy()

    def _encode(self, rows: torch.Tensor) -> torch.Tensor:
        return F.normalize(encode_text_trimmed(self.text_model, self.unique_ids[rows]), dim=-1)

    def _build_model(self) -> None:
        super()._build_model()
        self.model.text_tower = self.text_model  # a submodule: snapshots and load_state_dict include it

    def _extra_param_groups(self) -> list[dict[str, Any]]:
        params = [p for p in self.text_model.parameters() if p.requires_grad]
        return [{"params": params, "lr": self.text_lr}]

    def _batch_text(self, caps: torch.Tensor) -> torch.Tensor:
        return self._encode(torch.from_numpy(self.caption_row[caps.numpy()]))

    def evaluate(self) -> dict[str, float]:
        """Validation metrics (all captions, plus R@1 per kind); ``Rsum`` is scene R@1 + video R@1."""
        self.text[self.val_caps] = self._embed_rows(self.caption_row[self.val_caps])
        head = self.model.to_numpy_head()

        def metrics(caps: np.ndarray) -> dict[str, float]:
            return validation_metrics(head, self.text, self.groups, self.video_groups, self.frames, self.mask, self.val_v, caps)

        out = metrics(self.val_caps)
        for kind in KINDS:
            caps = self.val_caps[self.kinds[self.val_caps] == kind]
            if len(caps):
                out[f"{kind}_R@1"] = metrics(caps)["R@1"]
        if all(f"{k}_R@1" in out for k in KINDS):
            out["Rsum"] = sum(out[f"{k}_R@1"] for k in KINDS)
        return out


def train_text_and_head(
    text_model: nn.Module,
    caption_ids: np.ndarray,
    caption_video: np.ndarray,
    frames: np.ndarray,
    *,
    caption_groups: Sequence[Any],
    caption_kinds: Sequence[str],
    config: HeadTrainConfig | None = None,
    text_lr: float = 3e-4,
) -> tuple[HeadTrainResult, nn.Module]:
    """Train ``text_model``'s text tower and an X-Pool head together (image tower frozen).

    Args:
        text_model: an open_clip ``CLIP`` (fp32, CPU) holding the text tower to fine-tune; only its
            text parameters (:data:`~onnx_export.text_tower.TEXT_PREFIXES`) learn.
        caption_ids: (C, L) int64 token ids of the captions (the bundle's tokenizer).
        caption_video: (C,) index of each caption's video in ``frames``.
        frames: (V, F, D) float32 L2-normalised frame embeddings of the frozen image tower.
        caption_groups: (C,) labels; equal labels are interchangeable positives.
        caption_kinds: (C,) ``"scene"`` or ``"video"``: validation reports (and selects on) both.
        config: the head's hyper-parameters (``lr`` is the head's learning rate).
        text_lr: the text tower's peak learning rate.

    Returns:
        ``(result, text_model)``: the best validation step's head and the text tower at that step
        (in eval mode).
    """
    cfg = config or HeadTrainConfig()
    cfg.check()
    trainer = JointTrainer(
        text_model, caption_ids, np.asarray(caption_video, np.int64), frames, cfg, caption_groups, caption_kinds,
        text_lr,
    )
    result = trainer.run()
    text_model.eval()
    for p in text_model.parameters():
        p.requires_grad_(False)
    log.info("best step %d: val %s", result.best_step, {k: round(v, 3) for k, v in result.val_best.items()})
    return result, text_model

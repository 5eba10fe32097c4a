"""Configuration and result of training an X-Pool head (:mod:`onnx_export.train_head`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from vtr_qdrant.errors import ConfigError
from vtr_qdrant.search.xpool import XPoolHead

__all__ = ["HeadTrainConfig", "HeadTrainResult", "TRAINABLE"]

#: ``HeadTrainConfig.trainable`` -> the head parameters (names under ``pool_frames.``) that learn.
TRAINABLE: dict[str, tuple[str, ...]] = {
    "all": (),  # every parameter
    "attention": (
        "cross_attn.q_proj.weight",
        "cross_attn.q_proj.bias",
        "cross_attn.k_proj.weight",
        "cross_attn.k_proj.bias",
        "layer_norm1.weight",
        "layer_norm1.bias",
    ),
    "scale": ("-",),  # none of the head's own parameters
    "adaptive": ("adaptive_scale.weight", "adaptive_scale.bias"),  # the query-adaptive scale only
}



@dataclass
class HeadTrainConfig:
    """Hyper-parameters of :func:`train_head` (all recorded in the output bundle's manifest).

    Attributes:
        num_heads: attention heads (must divide D; the paper uses 1).
        dropout: dropout on the residual linear branch (paper: 0.3).
        batch_size: videos (and captions) per step.
        max_steps: optimisation steps at most.
        lr: peak AdamW learning rate.
        weight_decay: decoupled weight decay *toward the identity initialisation* on every trainable
            head parameter: after each step ``p -= lr_t * weight_decay * (p - p_init)``. Plain AdamW
            decay would pull the identity-initialised linear layers toward zero, i.e. away from the
            parameter-free pooling the head starts at; this pulls toward it (an L2 prior around the
            identity head).
        trainable: which head parameters learn: ``all`` (the paper), ``attention`` (q/k projections
            and LN1 only: the attention pattern changes, the pooled values stay the identity head's),
            ``scale`` (nothing but the attention scale; needs ``learn_attention_scale``) or
            ``adaptive`` (nothing but the query-adaptive scale; needs ``adaptive_scale``).
        learn_attention_scale: learn one scalar ``s`` multiplying the attention logits (initialised
            at 1). The identity head's attention sharpness is fixed by ``1/sqrt(d)`` and LN1; ``s``
            lets training flatten it (toward mean pooling) or sharpen it. It is folded exactly into
            ``q_proj`` (weight and bias times ``s``) in the deployed head, which keeps the official
            layout.
        adaptive_scale: add the query-adaptive attention scale ``log s(t) = w · t + b`` (zero-initialised,
            i.e. the paper's head at the start): each text sets how sharp its attention over the frames
            is. Stored in the head (format 2); the factorised scorer stays exact.
        hard_negatives: 0 (random batches) or a group size g >= 2: each batch is built from
            ``batch_size / g`` random anchors, each followed by its g - 1 nearest training videos by
            mean-frame cosine (found once before training). Random batches of a large corpus rarely
            hold the near-duplicates (one scene changed, colours swapped) that decide the ranking.
        v2t_weight: weight of the video-to-text InfoNCE term (1: the paper's symmetric loss; 0:
            text-to-video only). With a text-conditioned pooling, the video-to-text term can also be
            lowered by text-only factors (how strongly a caption scores against every video), which
            do not change any text-to-video ranking.
        warmup_steps: linear warm-up before the cosine decay.
        logit_scale_init: initial logit scale (learnt; clamped to <= ``max_logit_scale``).
        max_logit_scale: CLIP's bound, 100.
        val_fraction: share of the training videos held out for early stopping.
        eval_every: steps between validation evaluations.
        patience: evaluations without improvement before stopping.
        seed: makes the run reproducible.
        threads: torch intra-op threads (None: leave torch's setting).
    """

    num_heads: int = 1
    dropout: float = 0.3
    batch_size: int = 64
    max_steps: int = 1500
    lr: float = 1e-3
    weight_decay: float = 0.01
    trainable: str = "all"
    learn_attention_scale: bool = False
    adaptive_scale: bool = False
    hard_negatives: int = 0
    v2t_weight: float = 1.0
    warmup_steps: int = 50
    logit_scale_init: float = 1.0 / 0.07
    max_logit_scale: float = 100.0
    val_fraction: float = 0.1
    eval_every: int = 50
    patience: int = 6
    seed: int = 0
    threads: int | None = None

    def check(self) -> None:
        """Raise :class:`ConfigError` on an impossible setting."""
        problems = []
        if self.num_heads < 1:
            problems.append("num_heads >= 1")
        if not 0.0 <= self.dropout < 1.0:
            problems.append("0 <= dropout < 1")
        if self.batch_size < 2:
            problems.append("batch_size >= 2 (InfoNCE needs negatives)")
        if self.max_steps < 1 or self.eval_every < 1 or self.patience < 1:
            problems.append("max_steps, eval_every, patience >= 1")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.warmup_steps >= 0):
            problems.append("lr > 0, weight_decay >= 0, warmup_steps >= 0")
        if not 0 < self.logit_scale_init <= self.max_logit_scale <= 100.0:
            problems.append("0 < logit_scale_init <= max_logit_scale <= 100")
        if not 0.0 < self.val_fraction < 1.0:
            problems.append("0 < val_fraction < 1")
        if self.v2t_weight < 0:
            problems.append("v2t_weight >= 0")
        if self.hard_negatives < 0 or self.hard_negatives == 1 or self.hard_negatives > self.batch_size:
            problems.append("hard_negatives 0 (off) or a group size in [2, batch_size]")
        if self.trainable not in TRAINABLE:
            problems.append(f"trainable in {sorted(TRAINABLE)} (got {self.trainable!r})")
        elif self.trainable == "scale" and not self.learn_attention_scale:
            problems.append("learn_attention_scale=True when trainable='scale' (nothing else would learn)")
        elif self.trainable == "adaptive" and not self.adaptive_scale:
            problems.append("adaptive_scale=True when trainable='adaptive' (nothing else would learn)")
        if problems:
            raise ConfigError("invalid head training config: need " + "; ".join(problems))


@dataclass
class HeadTrainResult:
    """What :func:`train_head` returns.

    Attributes:
        head: the best validation step's head (numpy, exact deployed math).
        config: the configuration used.
        best_step: step of the kept weights (0: the identity initialisation was never beaten).
        val_identity: validation metrics of the untrained (identity) head.
        val_best: validation metrics of the kept head.
        history: per evaluation: ``{"step", "loss", "logit_scale", "lr", "val": metrics}``.
        train_videos, val_videos: video counts of the split.
        seconds: wall time of training.
        state_dict: the kept torch state dict (official key names, plus ``logit_scale``); a learnt
            attention scale is folded into ``q_proj`` as in the deployed head.
    """

    head: XPoolHead
    config: HeadTrainConfig
    best_step: int
    val_identity: dict[str, float]
    val_best: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    train_videos: int = 0
    val_videos: int = 0
    seconds: float = 0.0
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-able summary (no weights)."""
        return {
            "config": asdict(self.config),
            "best_step": self.best_step,
            "val_identity": self.val_identity,
            "val_best": self.val_best,
            "train_videos": self.train_videos,
            "val_videos": self.val_videos,
            "seconds": round(self.seconds, 2),
            "history": self.history,
        }

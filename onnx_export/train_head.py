"""Train an X-Pool head on frozen frame embeddings (torch; the ``export`` extra).

No video is decoded during training: the frames' embeddings come from a collection
(:func:`train_from_collection`, via :class:`vtr_qdrant.eval.evaluation.EvalCorpus`) or from arrays
(:func:`train_head`), and the captions' embeddings from the bundle's text tower, each computed once.
Only the head (about 5·D² parameters) and a logit scale are learnt, so a few thousand videos train in
CPU minutes.

Recipe (X-Pool, Gorti et al., CVPR 2022, with the CLIP towers frozen):

- Each step draws B distinct training videos and one of each video's captions. The head pools every
  video once per caption, giving a (B captions, B videos) cosine matrix.
- Loss: symmetric InfoNCE on ``logit_scale * cos``. A caption whose *group* (by default its exact
  text) also belongs to another video of the batch counts that video as a positive too
  (multi-positive InfoNCE: ``-log Σ_pos softmax``), so duplicate captions are not pushed apart.
  The logit scale is learnt in log space from ``logit_scale_init`` and clamped to <= 100 after every
  step, as CLIP does.
- AdamW, linear warm-up then cosine decay; dropout 0.3 on the residual linear branch as in the
  paper; the head starts at the paper's identity initialisation, i.e. at the parameter-free
  text-conditioned pooling. Weight decay pulls toward that initialisation, not toward zero
  (``weight_decay``): Adam moves every weight by about ``lr`` per step whatever the size of its
  gradient, so with frozen towers and a few thousand videos most of the head random-walks away from
  the identity head; on the synthetic world every run without a strong pull (``weight_decay`` of
  order 100 at ``lr`` 1e-3) scored below the identity head on validation after ~50 steps.
- Options measured on the synthetic world (``benchmarks/bench_quality.py``): a learnt scalar on the
  attention logits (``learn_attention_scale``, folded into ``q_proj``), training only part of the
  head (``trainable``), hard-negative batches (``hard_negatives``) and the weight of the
  video-to-text loss term (``v2t_weight``).
- Early stopping on a validation split of the *training* videos (R@1+R@5+R@10 of its captions
  against its videos, scored with the exact numpy head that will be deployed); the best step's
  weights are kept. Test data is never seen.
- Deterministic for a seed (numpy sampling, torch init/dropout, fixed thread count).

The torch module's parameter names are the official checkpoint keys
(``pool_frames.cross_attn.{q,k,v,out}_proj``, ``pool_frames.linear_proj``,
``pool_frames.layer_norm{1,2,3}``), so :meth:`XPoolHead.from_state_dict` reads its state dict as it
reads an official checkpoint.

Outputs (:func:`write_head_bundle`): a NEW bundle folder that copies the source bundle's towers and
tokenizer byte for byte and adds ``xpool.npz`` with an ``xpool`` manifest entry, plus
``train_report.json`` and optionally ``xpool.onnx`` (similarity graph; not referenced by the
manifest). The new bundle's fingerprint differs from the source's (the head is part of the model),
but its towers are unchanged: :func:`vtr_qdrant.eval.evaluation.towers_fingerprint` of the new bundle
equals the source bundle's fingerprint, which is what a collection built with the source records.

CLI: ``vtr-qdrant train-head --collection C --captions captions.jsonl --out DIR``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from vtr_qdrant.errors import ArtifactError, ConfigError, InvalidInputError
from vtr_qdrant.eval.corpus import EvalCorpus, exhaustive_scores
from vtr_qdrant.eval.metrics import evaluate_retrieval
from vtr_qdrant.search.resolve import towers_fingerprint
from vtr_qdrant.search.xpool import XPOOL_PREFIX, XPoolHead

if TYPE_CHECKING:
    from vtr_qdrant.collection import VideoCollection
    from vtr_qdrant.model.bundle import ModelBundle

__all__ = [
    "HeadTrainConfig",
    "HeadTrainResult",
    "XPoolModule",
    "XPoolTrainModel",
    "train_head",
    "train_from_collection",
    "write_head_bundle",
    "export_head_onnx",
]

log = logging.getLogger("onnx_export.train_head")

HEAD_FILE = "xpool.npz"
ONNX_FILE = "xpool.onnx"
REPORT_FILE = "train_report.json"

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
}


# ------------------------------------------------------------------------------------------ config


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
            and LN1 only: the attention pattern changes, the pooled values stay the identity head's)
            or ``scale`` (nothing but the attention scale; needs ``learn_attention_scale``).
        learn_attention_scale: learn one scalar ``s`` multiplying the attention logits (initialised
            at 1). The identity head's attention sharpness is fixed by ``1/sqrt(d)`` and LN1; ``s``
            lets training flatten it (toward mean pooling) or sharpen it. It is folded exactly into
            ``q_proj`` (weight and bias times ``s``) in the deployed head, which keeps the official
            layout.
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


# ------------------------------------------------------------------------------------------ module


class _CrossAttention(nn.Module):
    """Text-to-frames multi-head attention; parameter names as in the official head."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"num_heads={num_heads} must divide the embedding dim {dim}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(
        self,
        text: torch.Tensor,
        frames: torch.Tensor,
        mask: torch.Tensor,
        attention_scale: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """text (T, D), frames (V, F, D), mask (V, F) bool -> ((V, T, D) attended, (V, H, T, F) weights).

        ``attention_scale`` (a scalar) multiplies the logits; it equals scaling ``q_proj``.
        """
        t, (v, f, d) = text.shape[0], frames.shape
        h, hd = self.num_heads, self.head_dim
        q = self.q_proj(text)
        if attention_scale is not None:
            q = q * attention_scale
        q = q.reshape(t, h, hd).transpose(0, 1)  # (H, T, d)
        k = self.k_proj(frames).reshape(v, f, h, hd).permute(0, 2, 1, 3)  # (V, H, F, d)
        val = self.v_proj(frames).reshape(v, f, h, hd).permute(0, 2, 1, 3)  # (V, H, F, d)
        logits = torch.einsum("htd,vhfd->vhtf", q, k) / math.sqrt(hd)
        logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
        weights = torch.softmax(logits, dim=-1)
        out = torch.einsum("vhtf,vhfd->vhtd", weights, val).permute(0, 2, 1, 3).reshape(v, t, d)
        return self.out_proj(out), weights


class XPoolModule(nn.Module):
    """The X-Pool head in torch (training only; inference uses :class:`vtr_qdrant.search.xpool.XPoolHead`).

    Initialised as in the paper: identity linear weights, zero biases, LayerNorms (1, 0).
    """

    def __init__(self, dim: int, num_heads: int = 1, dropout: float = 0.3) -> None:
        super().__init__()
        self.cross_attn = _CrossAttention(dim, num_heads)
        self.linear_proj = nn.Linear(dim, dim)
        self.layer_norm1 = nn.LayerNorm(dim)
        self.layer_norm2 = nn.LayerNorm(dim)
        self.layer_norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        with torch.no_grad():
            for lin in (
                self.cross_attn.q_proj,
                self.cross_attn.k_proj,
                self.cross_attn.v_proj,
                self.cross_attn.out_proj,
                self.linear_proj,
            ):
                lin.weight.copy_(torch.eye(dim))
                lin.bias.zero_()

    def forward(
        self,
        text: torch.Tensor,
        frames: torch.Tensor,
        mask: torch.Tensor,
        attention_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pooled video embeddings per text.

        Args:
            text: (T, D) raw text embeddings.
            frames: (V, F, D) frame embeddings (masked rows may hold anything finite).
            mask: (V, F) bool, True where a frame exists (each video needs one).
            attention_scale: optional scalar multiplying the attention logits (training only).

        Returns:
            (V, T, D) LN3 outputs (not normalised).
        """
        attended, _ = self.cross_attn(self.layer_norm1(text), self.layer_norm1(frames), mask, attention_scale)
        y = self.layer_norm2(attended)
        return self.layer_norm3(y + self.dropout(self.linear_proj(y)))

    def similarity(
        self,
        text: torch.Tensor,
        frames: torch.Tensor,
        mask: torch.Tensor,
        attention_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(T, V) cosine of each raw text embedding with its text-conditioned pooled video."""
        pooled = self.forward(text, frames, mask, attention_scale)  # (V, T, D)
        return torch.nn.functional.cosine_similarity(pooled, text[None, :, :], dim=-1, eps=1e-12).T


class XPoolTrainModel(nn.Module):
    """Head under ``pool_frames`` (the official prefix), a learnt log logit scale and, optionally, a
    learnt log attention scale (``attention_log_scale``, folded into ``q_proj`` by :meth:`head_state_dict`).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        dropout: float = 0.3,
        logit_scale_init: float = 1 / 0.07,
        learn_attention_scale: bool = False,
    ) -> None:
        super().__init__()
        self.pool_frames = XPoolModule(dim, num_heads, dropout)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init), dtype=torch.float32))
        self.attention_log_scale: nn.Parameter | None = (
            nn.Parameter(torch.zeros((), dtype=torch.float32)) if learn_attention_scale else None
        )

    def attention_scale(self) -> torch.Tensor | None:
        """The factor on the attention logits (None when not learnt)."""
        return None if self.attention_log_scale is None else self.attention_log_scale.exp()

    def similarity(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(T, V) cosine scores of the head with the learnt attention scale."""
        return self.pool_frames.similarity(text, frames, mask, self.attention_scale())

    @staticmethod
    def head_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Official-layout head weights from a model state dict: the attention scale folded into q_proj.

        ``s * (W t + b) = (s W) t + s b``, so scaling ``q_proj`` is exactly scaling the logits.
        """
        out = {k: v.detach().clone() for k, v in state.items() if k.startswith(XPOOL_PREFIX)}
        if "attention_log_scale" in state:
            s = state["attention_log_scale"].detach().exp()
            for n in ("weight", "bias"):
                key = f"{XPOOL_PREFIX}cross_attn.q_proj.{n}"
                out[key] = out[key] * s
        return out

    def to_numpy_head(self) -> XPoolHead:
        """The head's current weights as the deployed numpy :class:`XPoolHead`."""
        return XPoolHead.from_state_dict(
            self.head_state_dict(self.state_dict()), num_heads=self.pool_frames.cross_attn.num_heads
        )


def _multi_positive_nce(
    logits: torch.Tensor, positive: torch.Tensor, v2t_weight: float = 1.0
) -> torch.Tensor:
    """Multi-positive InfoNCE over a (T, V) logit matrix with a (T, V) bool positive mask:
    ``(t2v + v2t_weight * v2t) / (1 + v2t_weight)`` (symmetric at weight 1)."""
    neg_inf = torch.finfo(logits.dtype).min
    pos = logits.masked_fill(~positive, neg_inf)
    t2v = torch.logsumexp(logits, dim=1) - torch.logsumexp(pos, dim=1)
    if not v2t_weight:
        return t2v.mean()
    v2t = torch.logsumexp(logits, dim=0) - torch.logsumexp(pos, dim=0)
    return (t2v.mean() + v2t_weight * v2t.mean()) / (1.0 + v2t_weight)


# ------------------------------------------------------------------------------------------ training


def _split(n_videos: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if n_videos < 4:
        raise InvalidInputError(
            f"training a head needs at least 4 videos (a train and a validation split), got {n_videos}"
        )
    perm = rng.permutation(n_videos)
    n_val = min(n_videos - 2, max(2, round(fraction * n_videos)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _neighbours(
    frames: np.ndarray, mask: np.ndarray, videos: np.ndarray, group: int
) -> dict[int, np.ndarray]:
    """Each training video's ``4 * group`` nearest training videos by mean-frame cosine (hard negatives)."""
    m = mask[videos][..., None]
    mean = (frames[videos] * m).sum(axis=1) / m.sum(axis=1)
    mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    k = min(4 * group, len(videos) - 1)
    out: dict[int, np.ndarray] = {}
    for lo in range(0, len(videos), 1024):
        sims = mean[lo : lo + 1024] @ mean.T
        sims[np.arange(len(sims)), lo + np.arange(len(sims))] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1), axis=1)
        for i, row in enumerate(top):
            out[int(videos[lo + i])] = videos[row]
    return out


def _hard_batch(
    order: np.ndarray, start: int, batch: int, group: int, neighbours: dict[int, np.ndarray]
) -> tuple[np.ndarray, int]:
    """``batch`` distinct videos: anchors taken from ``order[start:]`` (wrapping), each followed by its
    nearest not yet chosen neighbours up to ``group`` videos. Returns (videos, next start)."""
    chosen: dict[int, None] = {}
    i = start
    while len(chosen) < batch:
        anchor = int(order[i % len(order)])
        i += 1
        if anchor in chosen:
            continue
        chosen[anchor] = None
        added = 1
        for nb in neighbours[anchor].tolist():
            if added >= group or len(chosen) >= batch:
                break
            if nb not in chosen:
                chosen[nb] = None
                added += 1
    return np.fromiter(chosen, dtype=np.int64, count=len(chosen)), i


def _val_metrics(
    head: XPoolHead,
    text: np.ndarray,
    groups: np.ndarray,
    video_groups: list[set[int]],
    frames: np.ndarray,
    mask: np.ndarray,
    val: np.ndarray,
    val_captions: np.ndarray,
) -> dict[str, float]:
    """Retrieval of the validation videos by their (group-deduplicated) captions."""
    seen: dict[int, int] = {}
    for c in val_captions:
        seen.setdefault(int(groups[c]), int(c))
    caps = np.array(list(seen.values()), dtype=np.int64)
    rel = [{j for j, v in enumerate(val) if int(groups[c]) in video_groups[v]} for c in caps]
    scores = exhaustive_scores(
        head, text[caps], EvalCorpus.from_arrays([str(v) for v in val], frames[val], mask[val])
    )
    m = evaluate_retrieval(scores, rel)
    m["Rsum"] = m["R@1"] + m["R@5"] + m["R@10"]
    return m


def train_head(
    text: np.ndarray,
    caption_video: Sequence[int] | np.ndarray,
    frames: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    config: HeadTrainConfig | None = None,
    caption_groups: Sequence[Any] | None = None,
) -> HeadTrainResult:
    """Train an X-Pool head on frozen embeddings.

    Args:
        text: (C, D) float32 caption embeddings (the bundle's text tower, L2-normalised).
        caption_video: (C,) int index of each caption's video in ``frames``.
        frames: (V, F, D) float32 frame embeddings (L2-normalised), zero-padded.
        mask: (V, F) bool, True where a frame exists (None: all).
        config: hyper-parameters (default :class:`HeadTrainConfig`).
        caption_groups: (C,) hashable labels; captions with equal labels are interchangeable (each
            counts the other's videos as positives). Default: the caption index (only the own video
            is positive) — :func:`train_from_collection` passes the caption text.

    Returns:
        :class:`HeadTrainResult` with the best validation step's head.

    Raises:
        InvalidInputError: inconsistent shapes or too few videos.
        ConfigError: a bad configuration.
    """
    cfg = config or HeadTrainConfig()
    cfg.check()
    text = np.ascontiguousarray(text, dtype=np.float32)
    frames = np.ascontiguousarray(frames, dtype=np.float32)
    owner = np.asarray(caption_video, dtype=np.int64)
    if frames.ndim != 3 or text.ndim != 2 or text.shape[1] != frames.shape[2]:
        raise InvalidInputError(
            f"need text (C, D) and frames (V, F, D) of one D, got {text.shape} and {frames.shape}"
        )
    if owner.shape != (text.shape[0],) or owner.min(initial=0) < 0 or owner.max(initial=0) >= frames.shape[0]:
        raise InvalidInputError("caption_video must give, for each caption, an index into frames")
    mask = np.ones(frames.shape[:2], bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != frames.shape[:2] or not mask.any(axis=1).all():
        raise InvalidInputError(f"mask must be (V, F) = {frames.shape[:2]} with at least one frame per video")
    labels = list(range(len(owner))) if caption_groups is None else list(caption_groups)
    if len(labels) != len(owner):
        raise InvalidInputError("caption_groups must have one label per caption")
    label_ids: dict[Any, int] = {}
    groups = np.array([label_ids.setdefault(g, len(label_ids)) for g in labels], dtype=np.int64)
    n_videos, _, dim = frames.shape
    video_caps: list[list[int]] = [[] for _ in range(n_videos)]
    for c, v in enumerate(owner):
        video_caps[v].append(c)
    video_groups = [{int(groups[c]) for c in caps} for caps in video_caps]
    captioned = np.array([v for v in range(n_videos) if video_caps[v]], dtype=np.int64)

    rng = np.random.default_rng(cfg.seed)
    split_train, split_val = _split(len(captioned), cfg.val_fraction, rng)
    train_v, val_v = captioned[split_train], captioned[split_val]
    val_caps = np.array([c for v in val_v for c in video_caps[v]], dtype=np.int64)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = XPoolTrainModel(dim, cfg.num_heads, cfg.dropout, cfg.logit_scale_init, cfg.learn_attention_scale)
    allowed = TRAINABLE[cfg.trainable]
    head_params: list[tuple[nn.Parameter, torch.Tensor]] = []  # (parameter, its initial value)
    for n, p in model.pool_frames.named_parameters():
        if allowed and n not in allowed:
            p.requires_grad_(False)
        else:
            head_params.append((p, p.detach().clone()))
    extra = [model.logit_scale] + (
        [model.attention_log_scale] if model.attention_log_scale is not None else []
    )
    opt = torch.optim.AdamW([p for p, _ in head_params] + extra, lr=cfg.lr, weight_decay=0.0)

    def lr_factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        span = max(1, cfg.max_steps - cfg.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    text_t, frames_t, mask_t = torch.from_numpy(text), torch.from_numpy(frames), torch.from_numpy(mask)
    max_log_scale = math.log(cfg.max_logit_scale)
    batch = min(cfg.batch_size, len(train_v))

    def evaluate() -> dict[str, float]:
        return _val_metrics(model.to_numpy_head(), text, groups, video_groups, frames, mask, val_v, val_caps)

    t0 = time.perf_counter()
    val_identity = evaluate()
    best = (
        val_identity["Rsum"],
        0,
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        val_identity,
    )
    history: list[dict[str, Any]] = [
        {"step": 0, "loss": None, "logit_scale": float(model.logit_scale.detach().exp()), "val": val_identity}
    ]
    log.info("identity head: val %s", _fmt(val_identity))
    order = rng.permutation(train_v)
    neighbours = _neighbours(frames, mask, train_v, cfg.hard_negatives) if cfg.hard_negatives > 1 else None
    cursor, stale, losses = 0, 0, []
    for step in range(1, cfg.max_steps + 1):
        if neighbours is not None:
            if cursor >= len(order):
                order, cursor = rng.permutation(train_v), 0
            vids, cursor = _hard_batch(order, cursor, batch, cfg.hard_negatives, neighbours)
        else:
            if cursor + batch > len(order):
                order, cursor = rng.permutation(train_v), 0
            vids = order[cursor : cursor + batch]
            cursor += batch
        caps = np.array([video_caps[v][int(rng.integers(len(video_caps[v])))] for v in vids], dtype=np.int64)
        positive = torch.from_numpy(
            np.array([[int(groups[c]) in video_groups[v] for v in vids] for c in caps], dtype=bool)
        )
        model.train()
        vids_t, caps_t = torch.from_numpy(vids), torch.from_numpy(caps)
        sims = model.similarity(text_t[caps_t], frames_t[vids_t], mask_t[vids_t])
        loss = _multi_positive_nce(model.logit_scale.exp() * sims, positive, cfg.v2t_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        lr_now = float(sched.get_last_lr()[0])
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, max_log_scale)
            if cfg.weight_decay:
                for p, p0 in head_params:  # decoupled decay toward the identity initialisation
                    p.sub_(lr_now * cfg.weight_decay * (p - p0))
        losses.append(float(loss.detach()))
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            model.eval()
            val = evaluate()
            entry = {
                "step": step,
                "loss": float(np.mean(losses)),
                "logit_scale": float(model.logit_scale.detach().exp()),
                "attention_scale": _scalar(model.attention_scale()),
                "lr": float(sched.get_last_lr()[0]),
                "val": val,
            }
            history.append(entry)
            losses = []
            log.info(
                "step %d loss %.4f scale %.1f val %s", step, entry["loss"], entry["logit_scale"], _fmt(val)
            )
            if val["Rsum"] > best[0] + 1e-9:
                best = (
                    val["Rsum"],
                    step,
                    {k: v.detach().clone() for k, v in model.state_dict().items()},
                    val,
                )
                stale = 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    log.info("early stop at step %d (best step %d)", step, best[1])
                    break
    model.load_state_dict(best[2])
    model.eval()
    return HeadTrainResult(
        head=model.to_numpy_head(),
        config=cfg,
        best_step=best[1],
        val_identity=val_identity,
        val_best=best[3],
        history=history,
        train_videos=len(train_v),
        val_videos=len(val_v),
        seconds=time.perf_counter() - t0,
        state_dict={**XPoolTrainModel.head_state_dict(best[2]), "logit_scale": best[2]["logit_scale"]},
    )


def _scalar(x: torch.Tensor | None) -> float | None:
    return None if x is None else float(x.detach())


def _fmt(m: dict[str, float]) -> str:
    return f"R@1 {m['R@1']:.3f} R@5 {m['R@5']:.3f} R@10 {m['R@10']:.3f} MnR {m['MnR']:.1f}"


def train_from_collection(
    collection: VideoCollection,
    captions: Sequence[tuple[str, str]],
    config: HeadTrainConfig | None = None,
) -> HeadTrainResult:
    """Train a head on a collection's stored frames and captions embedded by its bundle.

    Args:
        collection: opened with its bundle (the text tower embeds the captions).
        captions: ``[(video_id, caption), ...]``; captions of videos not in the collection are
            skipped with a warning. Equal caption texts are interchangeable positives.
        config: hyper-parameters.
    """
    if collection.bundle is None:
        raise ConfigError("training a head needs the collection's model bundle (open it with bundle=...)")
    corpus = EvalCorpus.from_collection(collection)
    col = {v: i for i, v in enumerate(corpus.video_ids)}
    kept = [(col[v], c) for v, c in captions if v in col]
    if len(kept) < len(captions):
        log.warning(
            "%d of %d captions name videos not in the collection; skipped",
            len(captions) - len(kept),
            len(captions),
        )
    if not kept:
        raise InvalidInputError("no caption names a video of the collection: check the video ids")
    texts = sorted({c for _, c in kept})
    emb = collection.encode_text(texts)
    index = {t: i for i, t in enumerate(texts)}
    frames, mask = corpus.per_video()
    return train_head(
        emb[[index[c] for _, c in kept]],
        [v for v, _ in kept],
        frames,
        mask,
        config=config,
        caption_groups=[c for _, c in kept],
    )


# ------------------------------------------------------------------------------------------ outputs


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
    module = XPoolModule(head.dim, head.num_heads, dropout=0.0)
    module.load_state_dict(
        {k: torch.from_numpy(v.astype(np.float32)) for k, v in head.state_dict("").items()}
    )
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
            "xpool": XPoolSpec(file=HEAD_FILE, num_heads=head.num_heads, format="npz"),
            "created_at": "",
        }
    )
    write_manifest(out, manifest)
    bundle = ModelBundle.load(out)
    if towers_fingerprint(bundle.manifest) != towers_fingerprint(m):
        raise ArtifactError("the copied towers do not reproduce the source bundle's fingerprint")
    return bundle

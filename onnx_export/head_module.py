"""The X-Pool head in torch, for training (inference uses the numpy :class:`~vtr_qdrant.search.xpool.XPoolHead`).

Parameter names are the official checkpoint keys (``pool_frames.cross_attn.{q,k,v,out}_proj``,
``pool_frames.linear_proj``, ``pool_frames.layer_norm{1,2,3}``), so
:meth:`XPoolHead.from_state_dict <vtr_qdrant.search.xpool.XPoolHead.from_state_dict>` reads a trained
state dict as it reads an official checkpoint.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vtr_qdrant.errors import ConfigError
from vtr_qdrant.search.xpool import XPOOL_PREFIX, XPoolHead
from vtr_qdrant.search.xpool_factorised import LOG_SCALE_BOUND

__all__ = ["XPoolModule", "XPoolTrainModel", "multi_positive_nce"]


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

        ``attention_scale`` (a scalar or a (T,) tensor) multiplies the logits; it equals scaling ``q_proj``.
        """
        t, (v, f, d) = text.shape[0], frames.shape
        h, hd = self.num_heads, self.head_dim
        q = self.q_proj(text)
        if attention_scale is not None:  # a scalar, or one factor per text (T,)
            q = q * (attention_scale[:, None] if attention_scale.ndim == 1 else attention_scale)
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

    def __init__(self, dim: int, num_heads: int = 1, dropout: float = 0.3, adaptive: bool = False) -> None:
        super().__init__()
        self.cross_attn = _CrossAttention(dim, num_heads)
        # query-adaptive attention scale log s(t) = w . t + b, zero-initialised (s = 1: the paper's head)
        self.adaptive_scale: nn.Linear | None = nn.Linear(dim, 1) if adaptive else None
        self.linear_proj = nn.Linear(dim, dim)
        self.layer_norm1 = nn.LayerNorm(dim)
        self.layer_norm2 = nn.LayerNorm(dim)
        self.layer_norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        with torch.no_grad():
            if self.adaptive_scale is not None:
                self.adaptive_scale.weight.zero_()
                self.adaptive_scale.bias.zero_()
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
        if self.adaptive_scale is not None:
            s = torch.exp(self.adaptive_scale(text).squeeze(-1).clamp(-LOG_SCALE_BOUND, LOG_SCALE_BOUND))
            attention_scale = s if attention_scale is None else attention_scale * s
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
        adaptive_scale: bool = False,
    ) -> None:
        super().__init__()
        self.pool_frames = XPoolModule(dim, num_heads, dropout, adaptive=adaptive_scale)
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
        for n in ("weight", "bias"):  # torch Linear(D, 1) -> the numpy head's (D,) and ()
            key = f"{XPOOL_PREFIX}adaptive_scale.{n}"
            if key in out:
                out[key] = out[key].reshape(-1) if n == "weight" else out[key].reshape(())
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


def multi_positive_nce(
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

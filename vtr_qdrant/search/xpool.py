"""The X-Pool head: text-conditioned attention pooling of a video's frames (stage 2, learned).

X-Pool ("Cross-Modal Language-Video Attention for Text-Video Retrieval", Gorti et al., CVPR 2022)
lets a text attend over a video's frame embeddings, so each video is pooled into one embedding *per
text* and scored by the frames the text is about. The head, in the paper's notation (D embedding
dim, H heads, d = D / H, every Linear is ``y = x Wᵀ + b`` as in torch, every LayerNorm has eps 1e-5)::

    t' = LN1(t)            f' = LN1(f_j)                      (one LayerNorm shared by both)
    q  = q_proj(t')        k_j = k_proj(f'_j)   v_j = v_proj(f'_j)
    a_hj = softmax_j(q_h · k_hj / sqrt(d))                    (per head h, over the video's frames)
    x  = out_proj(concat_h sum_j a_hj v_hj)
    y  = LN2(x)
    z  = y + dropout(linear_proj(y))                          (dropout is the identity at inference)
    p  = LN3(z)                                               (pooled video embedding for this text)
    score = cos(t, p)                                         (raw text embedding, not LN1'd)

Two exact implementations live here:

- :meth:`XPoolHead.pool` / :meth:`XPoolHead.similarity`: the direct computation, O(D²) per
  (text, video) pair for the out and linear projections.
- :meth:`XPoolHead.precompute` + :meth:`XPoolHead.similarity_cached`: the factorised form, exact
  to rounding and O(H·F·D) per pair (:mod:`vtr_qdrant.search.xpool_factorised` has its algebra).
  :meth:`XPoolHead.aggregate` uses this path.

Variable frame counts are handled by masking attention logits with -inf (a masked frame gets exactly
zero weight), never by padding with repeated frames: masked == running on the unpadded frames.

Parameters are held in float64. float64 inputs are computed in float64; float32 inputs are computed
in float32 with float32 copies of the (float64-fused) weights, and give float32 outputs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ArtifactError, ConfigError, InvalidInputError
from .aggregation import AggregationResult, Aggregator, check_inputs, masked_softmax
from .xpool_factorised import FactorisedXPool, XPoolVideoCache, compute_dtype, layer_norm
from .xpool_io import (
    ADAPTIVE_PARAMETER_NAMES,
    XPOOL_PARAMETER_NAMES,
    XPOOL_PREFIX,
    params_from_state_dict,
    read_checkpoint,
    read_npz,
    write_npz,
)

__all__ = ["XPOOL_PARAMETER_NAMES", "XPOOL_PREFIX", "XPoolHead", "XPoolVideoCache"]

class XPoolHead(Aggregator):
    """The X-Pool cross-modal attention head, in numpy (no torch at query time).

    Build it with :meth:`identity` (the paper's initialisation), :meth:`from_state_dict`,
    :meth:`from_checkpoint` (an official X-Pool torch checkpoint) or :meth:`load` (our npz format).

    Args:
        params: the 16 parameters keyed by :data:`XPOOL_PARAMETER_NAMES` (no prefix), float arrays:
            linear weights (D, D), biases and LayerNorm parameters (D,).
        num_heads: attention heads; must divide D. Checkpoints do not record it (the official config's
            ``num_mha_heads``, default 1), so it must match the one the head was trained with.
    """

    name = "xpool"
    precomputes = True

    def __init__(self, params: Mapping[str, np.ndarray], num_heads: int = 1) -> None:
        params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
        missing = [k for k in XPOOL_PARAMETER_NAMES if k not in params]
        if missing:
            raise ConfigError(f"X-Pool head is missing parameters: {missing}")
        w = params["cross_attn.q_proj.weight"]
        if w.ndim != 2 or w.shape[0] != w.shape[1]:
            raise ConfigError(f"cross_attn.q_proj.weight must be square (D, D), got shape {w.shape}")
        dim = int(w.shape[0])
        bad = []
        for k in XPOOL_PARAMETER_NAMES:
            expected = (dim, dim) if k.endswith("weight") and "layer_norm" not in k else (dim,)
            if params[k].shape != expected:
                bad.append(f"{k}: expected {expected}, got {params[k].shape}")
        if bad:
            raise ConfigError(f"X-Pool parameters have wrong shapes for dim {dim}: " + "; ".join(bad))
        if not isinstance(num_heads, (int, np.integer)) or num_heads < 1 or dim % num_heads:
            raise ConfigError(
                f"num_heads must be a positive divisor of the embedding dim {dim}, got {num_heads}"
            )
        self.dim = dim
        self.num_heads = int(num_heads)
        self.head_dim = dim // self.num_heads
        adaptive = [k for k in ADAPTIVE_PARAMETER_NAMES if k in params]
        if adaptive and len(adaptive) != len(ADAPTIVE_PARAMETER_NAMES):
            raise ConfigError(f"the adaptive attention scale needs both {list(ADAPTIVE_PARAMETER_NAMES)}, got {adaptive}")
        if adaptive:
            params["adaptive_scale.bias"] = params["adaptive_scale.bias"].reshape(())
            if params["adaptive_scale.weight"].shape != (dim,):
                raise ConfigError(f"adaptive_scale.weight must have shape ({dim},), got {params['adaptive_scale.weight'].shape}")
        self.adaptive = bool(adaptive)
        self._p = {k: params[k].copy() for k in (*XPOOL_PARAMETER_NAMES, *adaptive)}
        for arr in self._p.values():
            arr.setflags(write=False)
        self._fact = FactorisedXPool(self._p, self.num_heads)
        self._digest: str | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def identity(cls, dim: int, num_heads: int = 1) -> XPoolHead:
        """The paper's initialisation: identity linear weights, zero biases, LayerNorms (1, 0)."""
        if dim < 1:
            raise ConfigError(f"X-Pool head dim must be positive, got {dim}")
        params: dict[str, np.ndarray] = {}
        for k in XPOOL_PARAMETER_NAMES:
            if "layer_norm" in k:
                params[k] = np.ones(dim) if k.endswith("weight") else np.zeros(dim)
            else:
                params[k] = np.eye(dim) if k.endswith("weight") else np.zeros(dim)
        return cls(params, num_heads=num_heads)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], num_heads: int = 1) -> XPoolHead:
        """Build the head from a state dict in the official layout.

        Keys may carry the ``pool_frames.`` prefix (a full X-Pool model: unrelated ``clip.*`` keys are
        ignored) or not (the head module alone), optionally behind a DataParallel ``module.`` prefix.
        Values are numpy arrays or torch tensors (converted without importing torch here).

        Raises:
            ConfigError: missing parameters, wrong shapes, non-finite values, duplicate keys.
        """
        return cls(params_from_state_dict(state_dict), num_heads=num_heads)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str], num_heads: int = 1) -> XPoolHead:
        """Read an official X-Pool torch checkpoint (``{"state_dict": ...}`` or a bare state dict).

        Loaded with ``torch.load(..., weights_only=True, map_location="cpu")``; needs the ``export``
        extra (torch). ``num_heads`` must be the ``num_mha_heads`` the checkpoint was trained with.

        Raises:
            ArtifactError: the file is missing or not a readable torch checkpoint.
            ConfigError: the head's parameters are missing or malformed.
            MissingDependencyError: torch is not installed.
        """
        return cls.from_state_dict(read_checkpoint(path), num_heads=num_heads)

    def state_dict(self, prefix: str = XPOOL_PREFIX) -> dict[str, np.ndarray]:
        """The parameters as float64 numpy arrays under the official names (``pool_frames.`` prefix)."""
        return {prefix + k: v.copy() for k, v in self._p.items()}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the head to ``path`` as an uncompressed, pickle-free ``.npz`` (atomic replace).

        Arrays are stored in float32 when that is lossless, else float64; ``dim`` and ``num_heads``
        are recorded.
        """
        write_npz(path, self._p, num_heads=self.num_heads, dim=self.dim)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> XPoolHead:
        """Read a head written by :meth:`save`.

        Raises:
            ArtifactError: the file is missing, not an npz, or not an X-Pool head file.
            ConfigError: its parameters are malformed.
        """
        arrays, num_heads, dim = read_npz(path)
        head = cls.from_state_dict(arrays, num_heads=num_heads)
        if head.dim != dim:
            raise ArtifactError(f"{path}: recorded dim {dim} does not match its weights' dim {head.dim}")
        return head

    def __repr__(self) -> str:
        extra = ", adaptive" if self.adaptive else ""
        return f"XPoolHead(dim={self.dim}, num_heads={self.num_heads}{extra})"

    def attention_scale(self, text: np.ndarray) -> np.ndarray:
        """(T,) float64 factor on each text's attention logits: ``s(t)``, all ones without the adaptive scale."""
        return self._fact.text_scale(self._check_text(text).astype(np.float64))

    @property
    def state_key(self) -> str:
        """Digest of the parameters: equal heads share precomputed states, another head never does."""
        if self._digest is None:
            h = hashlib.blake2b(str(self.num_heads).encode(), digest_size=12)
            for k in sorted(self._p):
                h.update(k.encode())
                h.update(np.ascontiguousarray(self._p[k]).tobytes())
            self._digest = "xpool:" + h.hexdigest()
        return self._digest

    # ------------------------------------------------------------------ helpers

    def _check_text(self, text: np.ndarray) -> np.ndarray:
        text = np.asarray(text)
        if text.ndim != 2 or text.shape[1] != self.dim:
            raise InvalidInputError(f"text embeddings must have shape (T, {self.dim}), got {text.shape}")
        return text

    def _check_frames(
        self, frames: np.ndarray, frame_mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        frames = np.asarray(frames)
        if frames.ndim != 3 or frames.shape[2] != self.dim:
            raise InvalidInputError(
                f"frame embeddings must have shape (V, F, {self.dim}), got {frames.shape}"
            )
        if frames.shape[0] and not frames.shape[1]:
            raise InvalidInputError(
                f"every video needs at least one frame, got frames of shape {frames.shape}"
            )
        if frame_mask is None:
            return frames, np.ones(frames.shape[:2], dtype=bool)
        mask = np.asarray(frame_mask, dtype=bool)
        if mask.shape != frames.shape[:2]:
            raise InvalidInputError(
                f"frame_mask must have shape (V, F) = {frames.shape[:2]}, got {mask.shape}"
            )
        if frames.shape[0] and not mask.any(axis=1).all():
            raise InvalidInputError("every video needs at least one valid frame in frame_mask")
        if not mask.all():
            # Padding may hold anything (zeros, NaN); give it finite values: its weight is exactly 0.
            frames = np.where(mask[..., None], frames, 0)
        return frames, mask

    @staticmethod
    def _cosine(text: np.ndarray, pooled: np.ndarray) -> np.ndarray:
        """cos(text[t], pooled[v, t]) -> (T, V)."""
        dots = np.einsum("vtd,td->tv", pooled, text)
        tn = np.linalg.norm(text, axis=1)  # (T,)
        pn = np.linalg.norm(pooled, axis=2).T  # (T, V)
        tiny = np.finfo(dots.dtype).tiny
        return dots / np.maximum(tn[:, None] * pn, tiny)

    # ------------------------------------------------------------------ direct computation

    def _pool_direct(
        self, text: np.ndarray, frames: np.ndarray, mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        dtype = compute_dtype(text, frames)
        p = self._fact.fused(dtype)
        text, frames = text.astype(dtype, copy=False), frames.astype(dtype, copy=False)
        t, (v, f, dim) = text.shape[0], frames.shape
        h, hd = self.num_heads, self.head_dim
        q = self._fact.queries(text, p)  # (T, H, d)
        fn = layer_norm(frames, p["layer_norm1.weight"], p["layer_norm1.bias"])  # (V, F, D)
        k = (fn @ p["cross_attn.k_proj.weight"].T + p["cross_attn.k_proj.bias"]).reshape(v, f, h, hd)
        val = (fn @ p["cross_attn.v_proj.weight"].T + p["cross_attn.v_proj.bias"]).reshape(v, f, h, hd)
        attn = np.empty((v, t, dim), dtype=dtype)
        weights = np.empty((t, v, h, f), dtype=dtype)
        for i in range(h):
            logits = np.einsum("td,vfd->tvf", q[:, i], k[:, :, i])  # (T, V, F)
            a = masked_softmax(logits, mask[None])
            weights[:, :, i] = a
            attn[:, :, i * hd : (i + 1) * hd] = np.matmul(a.transpose(1, 0, 2), val[:, :, i])  # (V, T, d)
        x = attn @ p["cross_attn.out_proj.weight"].T + p["cross_attn.out_proj.bias"]
        y = layer_norm(x, p["layer_norm2.weight"], p["layer_norm2.bias"])
        z = y + (y @ p["linear_proj.weight"].T + p["linear_proj.bias"])  # dropout: identity at inference
        pooled = layer_norm(z, p["layer_norm3.weight"], p["layer_norm3.bias"])
        return pooled, weights

    def pool(self, text: np.ndarray, frames: np.ndarray, frame_mask: np.ndarray | None = None) -> np.ndarray:
        """Text-conditioned pooled video embeddings, computed directly (the module's forward).

        Args:
            text: (T, D) float32/float64 text embeddings (raw; LN1 is applied inside).
            frames: (V, F, D) float32/float64 frame embeddings.
            frame_mask: (V, F) bool, True where a frame exists; None means all frames exist.

        Returns:
            (V, T, D) pooled embeddings (LN3 output, not normalised); float32 if both inputs are
            float32, else float64.
        """
        text = self._check_text(text)
        frames, mask = self._check_frames(frames, frame_mask)
        return self._pool_direct(text, frames, mask)[0]

    def similarity(
        self, text: np.ndarray, frames: np.ndarray, frame_mask: np.ndarray | None = None
    ) -> np.ndarray:
        """(T, V) cosine of each raw text embedding with its text-conditioned pooled video (direct form)."""
        text = self._check_text(text)
        pooled = self.pool(text, frames, frame_mask)
        return self._cosine(text.astype(pooled.dtype, copy=False), pooled)

    # ------------------------------------------------------------------ factorised computation

    def precompute(
        self, frames: np.ndarray, frame_mask: np.ndarray | None = None, *, chunk: int = 512
    ) -> XPoolVideoCache:
        """Text-independent per-video tensors of the factorised form (compute once, store per video).

        Cost O(V·F·D²·(1 + 2H)); size (1 + H)·F·D values of the frames' dtype per video plus
        float64 Gram matrices of 3·(H·F)² values.

        Args:
            frames: (V, F, D) float32/float64 frame embeddings.
            frame_mask: (V, F) bool, True where a frame exists; None means all frames exist.
            chunk: videos per block (bounds the temporary memory).

        Returns:
            :class:`XPoolVideoCache`; keys/yc in the frames' dtype (float32 stays float32).
        """
        frames, mask = self._check_frames(frames, frame_mask)
        return self._fact.precompute(frames, mask, chunk=chunk)

    def pool_cached(self, text: np.ndarray, cache: XPoolVideoCache) -> np.ndarray:
        """(V, T, D) pooled embeddings from a :meth:`precompute` cache; equals :meth:`pool` exactly.

        Scoring does not need these vectors (:meth:`similarity_cached` never forms them); this is for
        callers who want the pooled embeddings themselves. O(H·F·D) per pair too.
        """
        text = self._check_text(text)
        self._fact.check_cache(cache)
        return self._fact.pool(text, cache)

    def _scores_cached(self, text: np.ndarray, cache: XPoolVideoCache) -> tuple[np.ndarray, np.ndarray]:
        self._fact.check_cache(cache)
        return self._fact.scores(text, cache)

    def similarity_cached(self, text: np.ndarray, cache: XPoolVideoCache) -> np.ndarray:
        """(T, V) scores from a :meth:`precompute` cache; equals :meth:`similarity` (O(H·F·D) per pair).

        Args:
            text: (T, D) float32/float64 raw text embeddings.
            cache: per-video tensors from :meth:`precompute` (or :meth:`XPoolVideoCache.stack`).

        Returns:
            (T, V) cosine similarities; float32 if text and cache are float32, else float64.
        """
        return self._scores_cached(self._check_text(text), cache)[0]

    def precompute_candidates(self, frames: np.ndarray, mask: np.ndarray) -> list[XPoolVideoCache]:
        """One :class:`XPoolVideoCache` per candidate (stage 2 keeps them in its LRU)."""
        cache = self.precompute(frames, mask)
        return [cache[i] for i in range(cache.num_videos)]

    def aggregate_precomputed(self, text: np.ndarray, states: Sequence[Any]) -> AggregationResult:
        """:meth:`aggregate_cached` over per-candidate caches from :meth:`precompute_candidates`."""
        return self.aggregate_cached(text, XPoolVideoCache.stack(states))

    def aggregate_cached(self, text: np.ndarray, cache: XPoolVideoCache) -> AggregationResult:
        """Like :meth:`aggregate`, from stored per-video tensors."""
        scores, a = self._scores_cached(self._check_text(text), cache)
        return AggregationResult(scores, a.mean(axis=2))

    def aggregate(
        self, text: np.ndarray, frames: np.ndarray, mask: np.ndarray | None = None
    ) -> AggregationResult:
        """Score every (text, video) pair with the factorised head.

        Args:
            text: (T, D) float32/float64 query embeddings.
            frames: (V, F, D) float32/float64 frame embeddings.
            mask: (V, F) bool, True for real frames; None means all frames are real.

        Returns:
            scores (T, V) cosine similarities; weights (T, V, F) attention weights averaged over heads
            (zero on masked frames, summing to 1 per pair).
        """
        text, frames, mask = check_inputs(np.asarray(text), np.asarray(frames), mask)
        return self.aggregate_cached(text, self.precompute(frames, mask))

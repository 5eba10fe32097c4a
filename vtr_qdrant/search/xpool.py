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
  to rounding. Everything after the attention softmax is linear up to the LN2/LN3 normalisations,
  and those only need a mean and a variance, so the projections move into a per-video precompute.
  With C = I - 11ᵀ/D (centring over channels), frame row i = (head h, frame j), weights a_i summing
  to 1 per head, and ``U_i = W_o[:, head h] v_hj``::

      Uc_i = C (U_i + b_o / H)          ->  x - mean(x) = xc = sum_i a_i Uc_i
      Yc_i = C (I + W_l) (gamma2 ⊙ Uc_i)    (the LN2-scaled linear layer plus its residual)
      inv2 = 1 / sqrt(|xc|²/D + eps)        |xc|² = aᵀ (Uc Ucᵀ) a
      zc   = inv2 sum_i a_i Yc_i + cc       cc = C ((I + W_l) beta2 + b_l)       (centred LN3 input)
      p    = gamma3 ⊙ zc inv3 + beta3       inv3 from |zc|² = inv2² aᵀ(Yc Ycᵀ)a + 2 inv2 a·(Yc cc) + |cc|²

  and ``t·p`` and ``|p|²`` expand the same way into ``a·(Yc (gamma3 ⊙ t))`` (one GEMM over all
  candidates' rows, like the attention logits) plus quadratic forms ``aᵀ G a`` with small per-video
  Gram matrices (R x R, R = H·F, kept in float64). So a video stores K = k_proj(LN1 f) (F x D),
  Yc (H·F x D) and three Grams, and a (text, video) pair costs O(H·F·D) with no D-dim vector and no
  D x D product; the pooled vector itself is never formed when scoring (:meth:`XPoolHead.pool_cached`
  forms it on request). :meth:`XPoolHead.aggregate` uses this path.

Variable frame counts are handled by masking attention logits with -inf (a masked frame gets exactly
zero weight), never by padding with repeated frames: masked == running on the unpadded frames.

Parameters are held in float64. float64 inputs are computed in float64; float32 inputs are computed
in float32 with float32 copies of the (float64-fused) weights, and give float32 outputs.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_file
from .._optional import require
from ..errors import ArtifactError, ConfigError, InvalidInputError
from .aggregation import AggregationResult, Aggregator, check_inputs, masked_softmax

__all__ = ["XPOOL_PARAMETER_NAMES", "XPOOL_PREFIX", "XPoolHead", "XPoolVideoCache"]

#: Prefix of the head's parameters in the official X-Pool checkpoints (next to ``clip.*``).
XPOOL_PREFIX = "pool_frames."

#: Parameter names of the head, relative to :data:`XPOOL_PREFIX`, as in the official module.
XPOOL_PARAMETER_NAMES: tuple[str, ...] = (
    "cross_attn.q_proj.weight",
    "cross_attn.q_proj.bias",
    "cross_attn.k_proj.weight",
    "cross_attn.k_proj.bias",
    "cross_attn.v_proj.weight",
    "cross_attn.v_proj.bias",
    "cross_attn.out_proj.weight",
    "cross_attn.out_proj.bias",
    "linear_proj.weight",
    "linear_proj.bias",
    "layer_norm1.weight",
    "layer_norm1.bias",
    "layer_norm2.weight",
    "layer_norm2.bias",
    "layer_norm3.weight",
    "layer_norm3.bias",
)

_LN_EPS = 1e-5  # torch.nn.LayerNorm default, used by the official head
_FORMAT_KEY = "__vtr_xpool_format__"
_FORMAT_VERSION = 1


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """LayerNorm over the last axis, two-pass (mean, then mean squared deviation) for accuracy."""
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    return xc * (gamma / np.sqrt(var + _LN_EPS)) + beta


def _to_numpy(value: Any, name: str) -> np.ndarray:
    """Convert a numpy array or a torch tensor (without importing torch) to a float64 array."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        tensor = value.detach().cpu()
        try:
            value = tensor.numpy()
        except TypeError:  # bfloat16 and friends have no numpy dtype
            value = tensor.float().numpy()
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"X-Pool parameter {name!r} is not a numeric array ({type(value).__name__})") from e
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"X-Pool parameter {name!r} contains NaN or infinite values")
    return arr


def _compute_dtype(*arrays: np.ndarray) -> np.dtype:
    """float32 when every input is float32 or narrower, else float64."""
    for a in arrays:
        if not (np.issubdtype(a.dtype, np.floating) and a.dtype.itemsize <= 4):
            return np.dtype(np.float64)
    return np.dtype(np.float32)


@dataclass(frozen=True)
class XPoolVideoCache:
    """Per-video tensors of the factorised X-Pool head (text-independent; store them per video).

    H heads, F frames (the widest video), D embedding dim, R = H·F attention rows (head-major: row
    ``h*F + j`` is frame j of head h). See the module docstring for the algebra.

    Attributes:
        keys: (V, F, D) ``k_proj(LN1 frames)``, the frames' dtype; head h is channels ``h*d:(h+1)*d``.
        yc: (V, H, F, D) the frames' dtype: ``Yc_hj = C (I + W_l) diag(gamma2) Uc_hj``, the centred
            pre-LN3 contribution of frame j through head h.
        grams: (V, 3, R, R) float64: ``Uc Ucᵀ``, ``Yc Ycᵀ`` and ``Yc diag(gamma3²) Ycᵀ``.
            Kept in float64 (they are small) so LN2/LN3 variances do not lose precision.
        lin: (V, 3, R) float64: ``Yc cc``, ``Yc (gamma3² ⊙ cc)``, ``Yc (gamma3 ⊙ beta3)``.
        mask: (V, F) bool, True where a frame exists. Masked rows hold finite values that get weight 0.
    """

    keys: np.ndarray
    yc: np.ndarray
    grams: np.ndarray
    lin: np.ndarray
    mask: np.ndarray

    @property
    def num_videos(self) -> int:
        return int(self.keys.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.yc.shape[1])

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.keys, self.yc, self.grams, self.lin, self.mask)))

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> XPoolVideoCache:
        """Select videos (keeps the video axis: an int gives a one-video cache)."""
        if isinstance(index, (int, np.integer)):
            i = int(index)
            index = slice(i, i + 1) if i != -1 else slice(-1, None)
        return XPoolVideoCache(
            self.keys[index], self.yc[index], self.grams[index], self.lin[index], self.mask[index]
        )

    @staticmethod
    def stack(caches: Sequence[XPoolVideoCache]) -> XPoolVideoCache:
        """Concatenate caches along the video axis, padding frames (masked out) to the widest one."""
        if not caches:
            raise InvalidInputError("cannot stack an empty list of X-Pool caches")
        d, h = caches[0].keys.shape[2], caches[0].num_heads
        for c in caches:
            if c.keys.shape[2] != d or c.num_heads != h:
                raise InvalidInputError(
                    f"X-Pool caches come from different heads: dim {c.keys.shape[2]} vs {d}, "
                    f"heads {c.num_heads} vs {h}"
                )
        dtype = np.result_type(*(c.keys.dtype for c in caches))
        f_max = max(c.keys.shape[1] for c in caches)
        n = sum(c.num_videos for c in caches)
        keys = np.zeros((n, f_max, d), dtype=dtype)
        yc = np.zeros((n, h, f_max, d), dtype=dtype)
        grams = np.zeros((n, 3, h, f_max, h, f_max))
        lin = np.zeros((n, 3, h, f_max))
        mask = np.zeros((n, f_max), dtype=bool)
        i = 0
        for c in caches:
            m, f = c.num_videos, c.keys.shape[1]
            keys[i : i + m, :f] = c.keys
            yc[i : i + m, :, :f] = c.yc
            grams[i : i + m, :, :, :f, :, :f] = c.grams.reshape(m, 3, h, f, h, f)
            lin[i : i + m, :, :, :f] = c.lin.reshape(m, 3, h, f)
            mask[i : i + m, :f] = c.mask
            i += m
        r = h * f_max
        return XPoolVideoCache(keys, yc, grams.reshape(n, 3, r, r), lin.reshape(n, 3, r), mask)


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
        self._p = {k: params[k].copy() for k in XPOOL_PARAMETER_NAMES}
        for arr in self._p.values():
            arr.setflags(write=False)
        self._fused: dict[np.dtype, dict[str, np.ndarray]] = {}

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
        if not isinstance(state_dict, Mapping):
            raise ConfigError(f"an X-Pool state dict must be a mapping, got {type(state_dict).__name__}")
        wanted = set(XPOOL_PARAMETER_NAMES)
        found: dict[str, Any] = {}
        source: dict[str, str] = {}
        for key, value in state_dict.items():
            name = str(key)
            name = name.removeprefix("module.")
            name = name.removeprefix(XPOOL_PREFIX)
            if name not in wanted:
                continue
            if name in found:
                raise ConfigError(
                    f"X-Pool state dict holds {name!r} twice ({source[name]!r} and {key!r}); "
                    "pass only one copy of the head"
                )
            found[name] = value
            source[name] = str(key)
        missing = [k for k in XPOOL_PARAMETER_NAMES if k not in found]
        if missing:
            sample = sorted(str(k) for k in state_dict)[:5]
            hint = (
                f" (no X-Pool head parameters at all: is this an X-Pool checkpoint? first keys: {sample})"
                if len(missing) == len(XPOOL_PARAMETER_NAMES)
                else ""
            )
            raise ConfigError(
                f"X-Pool state dict is missing {len(missing)} parameter(s): "
                f"{[XPOOL_PREFIX + k for k in missing]}{hint}"
            )
        return cls({k: _to_numpy(v, source[k]) for k, v in found.items()}, num_heads=num_heads)

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
        p = Path(path)
        if not p.is_file():
            raise ArtifactError(f"X-Pool checkpoint not found: {p}")
        torch = require("torch", "export", purpose="reading X-Pool torch checkpoints")
        try:
            obj = torch.load(str(p), weights_only=True, map_location="cpu")
        except Exception as e:  # torch raises many types (pickle, zip, RuntimeError...)
            raise ArtifactError(
                f"could not read X-Pool checkpoint {p} with torch.load(weights_only=True): {e}"
            ) from e
        if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
            obj = obj["state_dict"]
        if not isinstance(obj, Mapping):
            raise ArtifactError(
                f"X-Pool checkpoint {p} holds a {type(obj).__name__}; expected a state dict "
                'or {"state_dict": ...}'
            )
        return cls.from_state_dict(obj, num_heads=num_heads)

    def state_dict(self, prefix: str = XPOOL_PREFIX) -> dict[str, np.ndarray]:
        """The parameters as float64 numpy arrays under the official names (``pool_frames.`` prefix)."""
        return {prefix + k: v.copy() for k, v in self._p.items()}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the head to ``path`` as an uncompressed, pickle-free ``.npz`` (atomic replace).

        Arrays are stored in float32 when that is lossless, else float64; ``dim`` and ``num_heads``
        are recorded.
        """
        p = Path(path)
        arrays: dict[str, np.ndarray] = {}
        for k, v in self._p.items():
            v32 = v.astype(np.float32)
            arrays[XPOOL_PREFIX + k] = v32 if np.array_equal(v32.astype(np.float64), v) else v
        arrays[_FORMAT_KEY] = np.array(_FORMAT_VERSION, dtype=np.int64)
        arrays["num_heads"] = np.array(self.num_heads, dtype=np.int64)
        arrays["dim"] = np.array(self.dim, dtype=np.int64)
        p.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(p, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> XPoolHead:
        """Read a head written by :meth:`save`.

        Raises:
            ArtifactError: the file is missing, not an npz, or not an X-Pool head file.
            ConfigError: its parameters are malformed.
        """
        p = Path(path)
        if not p.is_file():
            raise ArtifactError(f"X-Pool head file not found: {p}")
        try:
            with np.load(p, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise ArtifactError(
                f"could not read X-Pool head file {p} (expected an .npz from save()): {e}"
            ) from e
        if _FORMAT_KEY not in arrays:
            raise ArtifactError(f"{p} is not an X-Pool head file written by XPoolHead.save()")
        version = int(arrays.pop(_FORMAT_KEY))
        if version != _FORMAT_VERSION:
            raise ArtifactError(
                f"{p}: unsupported X-Pool head format version {version} (expected {_FORMAT_VERSION})"
            )
        num_heads = int(arrays.pop("num_heads"))
        dim = int(arrays.pop("dim"))
        head = cls.from_state_dict(arrays, num_heads=num_heads)
        if head.dim != dim:
            raise ArtifactError(f"{p}: recorded dim {dim} does not match its weights' dim {head.dim}")
        return head

    def __repr__(self) -> str:
        return f"XPoolHead(dim={self.dim}, num_heads={self.num_heads})"

    # ------------------------------------------------------------------ helpers

    def _params(self, dtype: np.dtype) -> dict[str, np.ndarray]:
        """Raw parameters cast to ``dtype`` plus the fused matrices and constants of the factorised form.

        Fusions are computed in float64 and cast once, so float32 scoring pays one rounding per entry.
        Constants used in the float64 variance algebra stay float64 (``*64`` and ``lin_vectors``).
        """
        cached = self._fused.get(dtype)
        if cached is not None:
            return cached
        p = self._p
        dim, h, hd = self.dim, self.num_heads, self.head_dim
        wo, wv, bv = (
            p["cross_attn.out_proj.weight"],
            p["cross_attn.v_proj.weight"],
            p["cross_attn.v_proj.bias"],
        )
        wl, g2, b2 = p["linear_proj.weight"], p["layer_norm2.weight"], p["layer_norm2.bias"]
        g3, b3 = p["layer_norm3.weight"], p["layer_norm3.bias"]
        centre = np.eye(dim) - 1.0 / dim  # C: removes the mean over channels
        mix = (centre @ (np.eye(dim) + wl)) * g2[None, :]  # C (I + W_l) diag(gamma2)
        # One (D, D + 2HD) matrix maps LN1(frame) to [K | Uc_0 Yc_0 | Uc_1 Yc_1 | ...] in a single GEMM.
        cols = [p["cross_attn.k_proj.weight"].T]
        bias = [p["cross_attn.k_proj.bias"]]
        for i in range(h):
            s = slice(i * hd, (i + 1) * hd)
            # b_o is shared by the heads as b_o / H each: every head's weights sum to 1 over frames.
            a_u = centre @ (wo[:, s] @ wv[s, :])
            b_u = centre @ (wo[:, s] @ bv[s] + p["cross_attn.out_proj.bias"] / h)
            cols += [a_u.T, (mix @ a_u).T]
            bias += [b_u, mix @ b_u]
        c = b2 + wl @ b2 + p["linear_proj.bias"]
        cc = c - c.mean()
        fused = {k: v.astype(dtype) for k, v in p.items()}
        fused["frame_matrix"] = np.ascontiguousarray(np.concatenate(cols, axis=1), dtype=dtype)
        fused["frame_bias"] = np.concatenate(bias).astype(dtype)
        fused["cc"] = cc.astype(dtype)
        fused["cc64"], fused["g3_64"], fused["b3_64"] = cc, g3, b3
        fused["g3_sq64"] = g3 * g3
        fused["lin_vectors"] = np.stack([cc, g3 * g3 * cc, g3 * b3], axis=1)  # (D, 3)
        # |cc|², |g3 ⊙ cc|², (g3 ⊙ b3)·cc, |b3|²
        fused["consts"] = np.array([cc @ cc, (g3 * cc) @ (g3 * cc), (g3 * b3) @ cc, b3 @ b3])
        self._fused[dtype] = fused
        return fused

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

    def _queries(self, text: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
        """(T, H, d): q_proj(LN1 text) split into heads and pre-scaled by 1/sqrt(d)."""
        tn = _layer_norm(text, p["layer_norm1.weight"], p["layer_norm1.bias"])
        q = tn @ p["cross_attn.q_proj.weight"].T + p["cross_attn.q_proj.bias"]
        q = q * q.dtype.type(1.0 / math.sqrt(self.head_dim))
        return q.reshape(text.shape[0], self.num_heads, self.head_dim)

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
        dtype = _compute_dtype(text, frames)
        p = self._params(dtype)
        text, frames = text.astype(dtype, copy=False), frames.astype(dtype, copy=False)
        t, (v, f, dim) = text.shape[0], frames.shape
        h, hd = self.num_heads, self.head_dim
        q = self._queries(text, p)  # (T, H, d)
        fn = _layer_norm(frames, p["layer_norm1.weight"], p["layer_norm1.bias"])  # (V, F, D)
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
        y = _layer_norm(x, p["layer_norm2.weight"], p["layer_norm2.bias"])
        z = y + (y @ p["linear_proj.weight"].T + p["linear_proj.bias"])  # dropout: identity at inference
        pooled = _layer_norm(z, p["layer_norm3.weight"], p["layer_norm3.bias"])
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
        dtype = _compute_dtype(frames)
        p = self._params(dtype)
        v, f, dim = frames.shape
        h = self.num_heads
        r = h * f
        step = max(1, int(chunk))
        keys = np.empty((v, f, dim), dtype=dtype)
        yc = np.empty((v, h, f, dim), dtype=dtype)
        grams = np.empty((v, 3, r, r))
        lin = np.empty((v, 3, r))
        for lo in range(0, v, step):
            hi = min(v, lo + step)
            n = hi - lo
            fn = _layer_norm(
                frames[lo:hi].astype(dtype, copy=False), p["layer_norm1.weight"], p["layer_norm1.bias"]
            )
            out = fn.reshape(n * f, dim) @ p["frame_matrix"] + p["frame_bias"]  # (n*F, D + 2HD)
            keys[lo:hi] = out[:, :dim].reshape(n, f, dim)
            rest = out[:, dim:].reshape(n, f, h, 2, dim).transpose(0, 2, 1, 3, 4)  # (n, H, F, 2, D)
            yc[lo:hi] = rest[..., 1, :]
            # Grams of the stored (rounded) rows, accumulated in float64: exact for what is stored, so
            # float32 caches lose no more in the LN variances than the direct float32 computation.
            u64 = rest[..., 0, :].reshape(n, r, dim).astype(np.float64)
            y64 = yc[lo:hi].reshape(n, r, dim).astype(np.float64)
            grams[lo:hi, 0] = u64 @ u64.transpose(0, 2, 1)
            grams[lo:hi, 1] = y64 @ y64.transpose(0, 2, 1)
            grams[lo:hi, 2] = (y64 * p["g3_sq64"]) @ y64.transpose(0, 2, 1)
            lin[lo:hi] = (y64 @ p["lin_vectors"]).transpose(0, 2, 1)
        return XPoolVideoCache(keys, yc, grams, lin, mask.copy())

    def _check_cache(self, cache: XPoolVideoCache) -> None:
        if cache.keys.ndim != 3 or cache.keys.shape[2] != self.dim or cache.num_heads != self.num_heads:
            raise InvalidInputError(
                f"X-Pool cache has keys {cache.keys.shape} and {cache.num_heads} head(s); this head "
                f"needs dim {self.dim} and {self.num_heads} head(s): recompute it with this head's precompute()"
            )

    def _attention_cached(self, text: np.ndarray, cache: XPoolVideoCache) -> dict[str, np.ndarray]:
        """Attention weights, LN2/LN3 scales and the quadratic/linear forms of every (text, video) pair.

        Returned entries: ``a`` (T, V, H, F) attention weights in the compute dtype; ``a64`` (V, T, R)
        float64 copy; ``inv2``, ``inv3`` (V, T) float64 ``1/sqrt(var + eps)`` of LN2 and LN3;
        ``quad``, ``lin`` (3, V, T) float64 ``aᵀ G a`` and ``a·l``; ``p`` the fused parameters.
        """
        self._check_cache(cache)
        dtype = _compute_dtype(text, cache.keys)
        p = self._params(dtype)
        text = text.astype(dtype, copy=False)
        keys = cache.keys.astype(dtype, copy=False)
        t = text.shape[0]
        v, f, dim = keys.shape
        h, hd = self.num_heads, self.head_dim
        q = self._queries(text, p)  # (T, H, d)
        # Logits for all heads in one GEMM: a block-diagonal (D, T*H) query matrix against K (V*F, D).
        qb = np.zeros((dim, t, h), dtype=dtype)
        for i in range(h):
            qb[i * hd : (i + 1) * hd, :, i] = q[:, i].T
        logits = (keys.reshape(v * f, dim) @ qb.reshape(dim, t * h)).reshape(v, f, t, h)
        a = masked_softmax(logits.transpose(2, 0, 3, 1), cache.mask[None, :, None, :])  # (T, V, H, F)
        a64 = a.transpose(1, 0, 2, 3).reshape(v, t, h * f).astype(np.float64)  # (V, T, R)
        quad = np.einsum("vti,vkij,vtj->kvt", a64, cache.grams, a64)  # (3, V, T)
        lin = np.einsum("vti,vki->kvt", a64, cache.lin)  # (3, V, T)
        cc2 = p["consts"][0]
        inv2 = 1.0 / np.sqrt(quad[0] / dim + _LN_EPS)  # |xc|² = aᵀ (Uc Ucᵀ) a
        zc2 = inv2 * inv2 * quad[1] + 2.0 * inv2 * lin[0] + cc2  # |zc|² with zc = inv2 Σ a Yc + cc
        inv3 = 1.0 / np.sqrt(np.maximum(zc2, 0.0) / dim + _LN_EPS)
        return {"a": a, "a64": a64, "inv2": inv2, "inv3": inv3, "quad": quad, "lin": lin, "p": p}

    def _scores_cached(self, text: np.ndarray, cache: XPoolVideoCache) -> tuple[np.ndarray, np.ndarray]:
        """((T, V) scores, (T, V, H, F) attention weights) without forming any D-dim vector per pair."""
        st = self._attention_cached(text, cache)
        a, a64, inv2, inv3, quad, lin, p = (st[k] for k in ("a", "a64", "inv2", "inv3", "quad", "lin", "p"))
        dtype = a.dtype
        v, h, f, dim = cache.yc.shape
        t64 = text.astype(np.float64)
        g3t = text.astype(dtype, copy=False) * p["layer_norm3.weight"]  # (T, D)
        e = cache.yc.astype(dtype, copy=False).reshape(v * h * f, dim) @ g3t.T  # (V*R, T): Yc·(g3 ⊙ t)
        ae = np.einsum("vti,vit->vt", a64, e.reshape(v, h * f, text.shape[0]).astype(np.float64))
        _, g3cc2, g3b3cc, b3b3 = p["consts"]
        # t·p = inv3 (inv2 Σ a Yc·(g3 ⊙ t) + (g3 ⊙ t)·cc) + t·b3
        tp = inv3 * (inv2 * ae + (t64 * p["g3_64"]) @ p["cc64"]) + t64 @ p["b3_64"]
        # |p|² = inv3² |g3 ⊙ zc|² + 2 inv3 (g3 ⊙ b3)·zc + |b3|²
        g3zc2 = inv2 * inv2 * quad[2] + 2.0 * inv2 * lin[1] + g3cc2
        g3b3zc = inv2 * lin[2] + g3b3cc
        pp = inv3 * inv3 * g3zc2 + 2.0 * inv3 * g3b3zc + b3b3
        tiny = np.finfo(np.float64).tiny
        scores = tp / np.maximum(np.linalg.norm(t64, axis=1) * np.sqrt(np.maximum(pp, 0.0)), tiny)
        return scores.T.astype(dtype), a

    def pool_cached(self, text: np.ndarray, cache: XPoolVideoCache) -> np.ndarray:
        """(V, T, D) pooled embeddings from a :meth:`precompute` cache; equals :meth:`pool` exactly.

        Scoring does not need these vectors (:meth:`similarity_cached` never forms them); this is for
        callers who want the pooled embeddings themselves. O(H·F·D) per pair too.
        """
        st = self._attention_cached(self._check_text(text), cache)
        a, p = st["a"], st["p"]
        v, h, f, dim = cache.yc.shape
        a_v = np.ascontiguousarray(a.transpose(1, 0, 2, 3)).reshape(v, a.shape[0], h * f)
        s = np.matmul(a_v, cache.yc.astype(a.dtype, copy=False).reshape(v, h * f, dim))  # (V, T, D)
        zc = st["inv2"][..., None].astype(a.dtype) * s + p["cc"]
        return zc * (st["inv3"][..., None].astype(a.dtype) * p["layer_norm3.weight"]) + p["layer_norm3.bias"]

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

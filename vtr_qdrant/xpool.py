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
- :meth:`XPoolHead.precompute` + :meth:`XPoolHead.similarity_cached`: the factorised form. The out
  projection and the LN2-scaled linear layer are linear, so they commute with the attention-weighted
  sum over frames. Per video and head we precompute ``K = k_proj(LN1 f)``,
  ``U_hj = W_o[:, head h] v_hj`` and ``Z_hj = W_l diag(gamma2) U_hj``; per pair we only need the
  logits, the softmax and the weighted sums ``x = sum a U + b_o`` and ``w = sum a Z + W_l (gamma2 * b_o)``,
  from which LN2, the residual and LN3 follow exactly::

      m, s = mean(x), std(x)                               (LN2 statistics, from x itself)
      y    = gamma2 * (x - m) / s + beta2
      W_l y = (w - m * W_l gamma2) / s + W_l beta2
      z    = y + W_l y + b_l

  That is O(H·F·D) per pair instead of O(D²). :meth:`XPoolHead.aggregate` uses this path.

Variable frame counts are handled by masking attention logits with -inf (a masked frame gets exactly
zero weight), never by padding with repeated frames: masked == running on the unpadded frames.

Parameters are held in float64. float64 inputs are computed in float64; float32 inputs are computed
in float32 with float32 copies of the (float64-fused) weights, and give float32 outputs.
"""

from __future__ import annotations

import math
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._optional import require
from .aggregation import AggregationResult, Aggregator, check_inputs, masked_softmax
from .errors import ArtifactError, ConfigError, InvalidInputError

__all__ = ["XPoolHead", "XPoolVideoCache", "XPOOL_PARAMETER_NAMES", "XPOOL_PREFIX"]

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

    H heads, F frames (the widest video), D embedding dim, d = D / H. All arrays share one dtype.

    Attributes:
        keys: (V, F, D) ``k_proj(LN1 frames)``; head h is channels ``h*d:(h+1)*d``.
        values: (V, H, F, 2D); ``[..., :D]`` is ``U_hj = W_o[:, head h] v_hj`` and ``[..., D:]`` is
            ``Z_hj = W_l diag(gamma2) U_hj``. Kept side by side so one batched matmul gives both sums.
        mask: (V, F) bool, True where a frame exists. Masked rows hold finite values that get weight 0.
    """

    keys: np.ndarray
    values: np.ndarray
    mask: np.ndarray

    @property
    def num_videos(self) -> int:
        return int(self.keys.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.values.shape[1])

    @property
    def u(self) -> np.ndarray:
        """(V, H, F, D) view: the out-projected values ``U``."""
        return self.values[..., : self.keys.shape[2]]

    @property
    def z(self) -> np.ndarray:
        """(V, H, F, D) view: ``Z = W_l diag(gamma2) U``."""
        return self.values[..., self.keys.shape[2] :]

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes + self.values.nbytes + self.mask.nbytes)

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> XPoolVideoCache:
        """Select videos (keeps the video axis: an int gives a one-video cache)."""
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1) if index != -1 else slice(-1, None)
        return XPoolVideoCache(self.keys[index], self.values[index], self.mask[index])

    @staticmethod
    def stack(caches: Sequence[XPoolVideoCache]) -> XPoolVideoCache:
        """Concatenate caches along the video axis, padding frames (masked out) to the widest one."""
        if not caches:
            raise InvalidInputError("cannot stack an empty list of X-Pool caches")
        d = caches[0].keys.shape[2]
        h = caches[0].num_heads
        dtype = np.result_type(*(c.keys.dtype for c in caches))
        for c in caches:
            if c.keys.shape[2] != d or c.num_heads != h:
                raise InvalidInputError(
                    f"X-Pool caches come from different heads: dim {c.keys.shape[2]} vs {d}, "
                    f"heads {c.num_heads} vs {h}"
                )
        f_max = max(c.keys.shape[1] for c in caches)
        v_total = sum(c.num_videos for c in caches)
        keys = np.zeros((v_total, f_max, d), dtype=dtype)
        values = np.zeros((v_total, h, f_max, 2 * d), dtype=dtype)
        mask = np.zeros((v_total, f_max), dtype=bool)
        i = 0
        for c in caches:
            n, f = c.num_videos, c.keys.shape[1]
            keys[i : i + n, :f] = c.keys
            values[i : i + n, :, :f] = c.values
            mask[i : i + n, :f] = c.mask
            i += n
        return XPoolVideoCache(keys, values, mask)


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
            raise ConfigError(f"num_heads must be a positive divisor of the embedding dim {dim}, got {num_heads}")
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
            if name.startswith("module."):
                name = name[len("module.") :]
            if name.startswith(XPOOL_PREFIX):
                name = name[len(XPOOL_PREFIX) :]
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
                " (no X-Pool head parameters at all: is this an X-Pool checkpoint? first keys: "
                f"{sample})"
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
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

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
            raise ArtifactError(f"could not read X-Pool head file {p} (expected an .npz from save()): {e}") from e
        if _FORMAT_KEY not in arrays:
            raise ArtifactError(f"{p} is not an X-Pool head file written by XPoolHead.save()")
        version = int(arrays.pop(_FORMAT_KEY))
        if version != _FORMAT_VERSION:
            raise ArtifactError(f"{p}: unsupported X-Pool head format version {version} (expected {_FORMAT_VERSION})")
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
        """Raw parameters cast to ``dtype`` plus the fused matrices of the factorised form.

        Fusions are computed in float64 and cast once, so float32 scoring pays one rounding per entry.
        """
        cached = self._fused.get(dtype)
        if cached is not None:
            return cached
        p = self._p
        dim, h, hd = self.dim, self.num_heads, self.head_dim
        wo, wv, bv = p["cross_attn.out_proj.weight"], p["cross_attn.v_proj.weight"], p["cross_attn.v_proj.bias"]
        wl, g2 = p["linear_proj.weight"], p["layer_norm2.weight"]
        wl_g2 = wl * g2[None, :]  # W_l diag(gamma2)
        # One (D, D + 2HD) matrix maps LN1(frame) to [K | U_0 Z_0 | U_1 Z_1 | ...] in a single GEMM.
        cols = [p["cross_attn.k_proj.weight"].T]
        bias = [p["cross_attn.k_proj.bias"]]
        for i in range(h):
            s = slice(i * hd, (i + 1) * hd)
            m_u = wo[:, s] @ wv[s, :]  # (D, D): frame' -> U_h
            b_u = wo[:, s] @ bv[s]
            cols += [m_u.T, (wl_g2 @ m_u).T]
            bias += [b_u, wl_g2 @ b_u]
        fused = {k: v.astype(dtype) for k, v in p.items()}
        fused["frame_matrix"] = np.ascontiguousarray(np.concatenate(cols, axis=1), dtype=dtype)
        fused["frame_bias"] = np.concatenate(bias).astype(dtype)
        fused["z_bias"] = (wl_g2 @ p["cross_attn.out_proj.bias"]).astype(dtype)  # W_l (gamma2 * b_o)
        fused["wl_g2"] = wl.dot(g2).astype(dtype)  # W_l gamma2
        fused["wl_b2"] = (wl @ p["layer_norm2.bias"] + p["linear_proj.bias"]).astype(dtype)  # W_l beta2 + b_l
        self._fused[dtype] = fused
        return fused

    def _check_text(self, text: np.ndarray) -> np.ndarray:
        text = np.asarray(text)
        if text.ndim != 2 or text.shape[1] != self.dim:
            raise InvalidInputError(f"text embeddings must have shape (T, {self.dim}), got {text.shape}")
        return text

    def _check_frames(self, frames: np.ndarray, frame_mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        frames = np.asarray(frames)
        if frames.ndim != 3 or frames.shape[2] != self.dim:
            raise InvalidInputError(f"frame embeddings must have shape (V, F, {self.dim}), got {frames.shape}")
        if frame_mask is None:
            return frames, np.ones(frames.shape[:2], dtype=bool)
        mask = np.asarray(frame_mask, dtype=bool)
        if mask.shape != frames.shape[:2]:
            raise InvalidInputError(f"frame_mask must have shape (V, F) = {frames.shape[:2]}, got {mask.shape}")
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

    def precompute(self, frames: np.ndarray, frame_mask: np.ndarray | None = None) -> XPoolVideoCache:
        """Text-independent per-video tensors of the factorised form (compute once, store per video).

        Cost O(V·F·D²·(1 + 2H)); size 1 + 2H times the frames' size.

        Args:
            frames: (V, F, D) float32/float64 frame embeddings.
            frame_mask: (V, F) bool, True where a frame exists; None means all frames exist.

        Returns:
            :class:`XPoolVideoCache` in the frames' dtype (float32 stays float32).
        """
        frames, mask = self._check_frames(frames, frame_mask)
        dtype = _compute_dtype(frames)
        p = self._params(dtype)
        v, f, dim = frames.shape
        h = self.num_heads
        fn = _layer_norm(frames.astype(dtype, copy=False), p["layer_norm1.weight"], p["layer_norm1.bias"])
        out = fn.reshape(v * f, dim) @ p["frame_matrix"] + p["frame_bias"]  # (V*F, D + 2HD)
        keys = np.ascontiguousarray(out[:, :dim]).reshape(v, f, dim)
        values = np.ascontiguousarray(out[:, dim:].reshape(v, f, h, 2 * dim).transpose(0, 2, 1, 3))
        return XPoolVideoCache(keys, values, mask.copy())

    def _pool_cached(self, text: np.ndarray, cache: XPoolVideoCache) -> tuple[np.ndarray, np.ndarray]:
        """Factorised pooling: ((V, T, D) pooled, (T, V, H, F) attention weights)."""
        if cache.keys.ndim != 3 or cache.keys.shape[2] != self.dim or cache.num_heads != self.num_heads:
            raise InvalidInputError(
                f"X-Pool cache has keys {cache.keys.shape} and {cache.num_heads} head(s); this head "
                f"needs dim {self.dim} and {self.num_heads} head(s): recompute it with this head's precompute()"
            )
        dtype = _compute_dtype(text, cache.keys)
        p = self._params(dtype)
        text = text.astype(dtype, copy=False)
        keys = cache.keys.astype(dtype, copy=False)
        values = cache.values.astype(dtype, copy=False)
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
        # sum_{h,f} a * [U | Z] per video: a batched (T, H*F) @ (H*F, 2D) matmul.
        a_v = np.ascontiguousarray(a.transpose(1, 0, 2, 3)).reshape(v, t, h * f)
        sums = np.matmul(a_v, values.reshape(v, h * f, 2 * dim))  # (V, T, 2D)
        x = sums[..., :dim] + p["cross_attn.out_proj.bias"]  # out_proj(attention)
        w = sums[..., dim:] + p["z_bias"]  # W_l (gamma2 * x)
        m = x.mean(axis=-1, keepdims=True)
        xc = x - m
        inv = 1.0 / np.sqrt(np.mean(xc * xc, axis=-1, keepdims=True) + _LN_EPS)
        y = xc * inv * p["layer_norm2.weight"] + p["layer_norm2.bias"]  # LN2(x)
        z = y + (w - m * p["wl_g2"]) * inv + p["wl_b2"]  # y + linear_proj(y)
        pooled = _layer_norm(z, p["layer_norm3.weight"], p["layer_norm3.bias"])
        return pooled, a

    def pool_cached(self, text: np.ndarray, cache: XPoolVideoCache) -> np.ndarray:
        """(V, T, D) pooled embeddings from a :meth:`precompute` cache; equals :meth:`pool` exactly."""
        return self._pool_cached(self._check_text(text), cache)[0]

    def similarity_cached(self, text: np.ndarray, cache: XPoolVideoCache) -> np.ndarray:
        """(T, V) scores from a :meth:`precompute` cache; equals :meth:`similarity` (O(H·F·D) per pair).

        Args:
            text: (T, D) float32/float64 raw text embeddings.
            cache: per-video tensors from :meth:`precompute` (or :meth:`XPoolVideoCache.stack`).
        """
        text = self._check_text(text)
        pooled = self._pool_cached(text, cache)[0]
        return self._cosine(text.astype(pooled.dtype, copy=False), pooled)

    def aggregate_cached(self, text: np.ndarray, cache: XPoolVideoCache) -> AggregationResult:
        """Like :meth:`aggregate`, from stored per-video tensors."""
        text = self._check_text(text)
        pooled, a = self._pool_cached(text, cache)
        scores = self._cosine(text.astype(pooled.dtype, copy=False), pooled)
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

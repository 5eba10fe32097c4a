"""The factorised X-Pool head: exact scores in O(H·F·D) per (text, video) pair (see :mod:`.xpool`).

Everything after the attention softmax is linear up to the LN2/LN3 normalisations,
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
D x D product; the pooled vector itself is never formed when scoring (:meth:`FactorisedXPool.pool`
forms it on request). :meth:`XPoolHead.aggregate <vtr_qdrant.search.xpool.XPoolHead.aggregate>` uses this path.

Parameters are held in float64. float64 inputs are computed in float64; float32 inputs are computed
in float32 with float32 copies of the (float64-fused) weights, and give float32 outputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError
from .aggregation import masked_softmax

__all__ = ["LN_EPS", "LOG_SCALE_BOUND", "layer_norm", "compute_dtype", "XPoolVideoCache", "FactorisedXPool"]

LN_EPS = 1e-5  # torch.nn.LayerNorm default, used by the official head
#: |log s(t)| is clipped to this: s in [e^-12, e^12] keeps every logit finite in float32
LOG_SCALE_BOUND = 12.0


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """LayerNorm over the last axis, two-pass (mean, then mean squared deviation) for accuracy."""
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    return xc * (gamma / np.sqrt(var + LN_EPS)) + beta


def compute_dtype(*arrays: np.ndarray) -> np.dtype:
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


class FactorisedXPool:
    """The head's parameters fused for the factorised form (once per dtype), and the form itself.

    Args:
        params: the head's 16 float64 parameters (validated by :class:`~vtr_qdrant.search.xpool.XPoolHead`).
        num_heads: attention heads H (divides D).
    """

    def __init__(self, params: Mapping[str, np.ndarray], num_heads: int) -> None:
        self._p = dict(params)
        self.dim = int(self._p["cross_attn.q_proj.weight"].shape[0])
        self.num_heads = int(num_heads)
        self.head_dim = self.dim // self.num_heads
        self._fused: dict[np.dtype, dict[str, np.ndarray]] = {}

    def fused(self, dtype: np.dtype) -> dict[str, np.ndarray]:
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

    def text_scale(self, text: np.ndarray) -> np.ndarray:
        """(T,) float64 query-adaptive attention scale ``s(t) = exp(clip(w · t + b))``; ones without it.

        Scaling a text's query by ``s(t)`` multiplies all its attention logits, i.e. sets how flat
        (s -> 0: mean of the frames) or sharp (s large: the best frames) its attention is; everything
        after the softmax is unchanged, so the factorised form stays exact.
        """
        if "adaptive_scale.weight" not in self._p:
            return np.ones(text.shape[0])
        log_s = text.astype(np.float64) @ self._p["adaptive_scale.weight"] + self._p["adaptive_scale.bias"]
        return np.exp(np.clip(log_s, -LOG_SCALE_BOUND, LOG_SCALE_BOUND))

    def queries(self, text: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
        """(T, H, d): q_proj(LN1 text) split into heads, pre-scaled by 1/sqrt(d) (and by s(t) when adaptive)."""
        tn = layer_norm(text, p["layer_norm1.weight"], p["layer_norm1.bias"])
        q = tn @ p["cross_attn.q_proj.weight"].T + p["cross_attn.q_proj.bias"]
        q = q * q.dtype.type(1.0 / math.sqrt(self.head_dim))
        if "adaptive_scale.weight" in self._p:  # the paper's head skips this: bit-identical to before
            q = q * self.text_scale(text).astype(q.dtype)[:, None]
        return q.reshape(text.shape[0], self.num_heads, self.head_dim)

    def precompute(
        self, frames: np.ndarray, mask: np.ndarray, *, chunk: int = 512
    ) -> XPoolVideoCache:
        """Text-independent per-video tensors of the factorised form (compute once, store per video).

        Cost O(V·F·D²·(1 + 2H)); size (1 + H)·F·D values of the frames' dtype per video plus
        float64 Gram matrices of 3·(H·F)² values.

        Args:
            frames: (V, F, D) float32/float64 frame embeddings.
            mask: (V, F) bool, True where a frame exists (padding holds finite values).
            chunk: videos per block (bounds the temporary memory).

        Returns:
            :class:`XPoolVideoCache`; keys/yc in the frames' dtype (float32 stays float32).
        """
        dtype = compute_dtype(frames)
        p = self.fused(dtype)
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
            fn = layer_norm(
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

    def check_cache(self, cache: XPoolVideoCache) -> None:
        if cache.keys.ndim != 3 or cache.keys.shape[2] != self.dim or cache.num_heads != self.num_heads:
            raise InvalidInputError(
                f"X-Pool cache has keys {cache.keys.shape} and {cache.num_heads} head(s); this head "
                f"needs dim {self.dim} and {self.num_heads} head(s): recompute it with this head's precompute()"
            )

    def attention(self, text: np.ndarray, cache: XPoolVideoCache) -> dict[str, np.ndarray]:
        """Attention weights, LN2/LN3 scales and the quadratic/linear forms of every (text, video) pair.

        Returned entries: ``a`` (T, V, H, F) attention weights in the compute dtype; ``a64`` (V, T, R)
        float64 copy; ``inv2``, ``inv3`` (V, T) float64 ``1/sqrt(var + eps)`` of LN2 and LN3;
        ``quad``, ``lin`` (3, V, T) float64 ``aᵀ G a`` and ``a·l``; ``p`` the fused parameters.
        """
        self.check_cache(cache)
        dtype = compute_dtype(text, cache.keys)
        p = self.fused(dtype)
        text = text.astype(dtype, copy=False)
        keys = cache.keys.astype(dtype, copy=False)
        t = text.shape[0]
        v, f, dim = keys.shape
        h, hd = self.num_heads, self.head_dim
        q = self.queries(text, p)  # (T, H, d)
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
        inv2 = 1.0 / np.sqrt(quad[0] / dim + LN_EPS)  # |xc|² = aᵀ (Uc Ucᵀ) a
        zc2 = inv2 * inv2 * quad[1] + 2.0 * inv2 * lin[0] + cc2  # |zc|² with zc = inv2 Σ a Yc + cc
        inv3 = 1.0 / np.sqrt(np.maximum(zc2, 0.0) / dim + LN_EPS)
        return {"a": a, "a64": a64, "inv2": inv2, "inv3": inv3, "quad": quad, "lin": lin, "p": p}

    def scores(self, text: np.ndarray, cache: XPoolVideoCache) -> tuple[np.ndarray, np.ndarray]:
        """((T, V) scores, (T, V, H, F) attention weights) without forming any D-dim vector per pair."""
        st = self.attention(text, cache)
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

    def pool(self, text: np.ndarray, cache: XPoolVideoCache) -> np.ndarray:
        """(V, T, D) pooled embeddings from a :meth:`precompute` cache; equals the direct form exactly.

        Scoring does not need these vectors (:meth:`scores` never forms them); this is for
        callers who want the pooled embeddings themselves. O(H·F·D) per pair too.
        """
        st = self.attention(text, cache)
        a, p = st["a"], st["p"]
        v, h, f, dim = cache.yc.shape
        a_v = np.ascontiguousarray(a.transpose(1, 0, 2, 3)).reshape(v, a.shape[0], h * f)
        s = np.matmul(a_v, cache.yc.astype(a.dtype, copy=False).reshape(v, h * f, dim))  # (V, T, D)
        zc = st["inv2"][..., None].astype(a.dtype) * s + p["cc"]
        return zc * (st["inv3"][..., None].astype(a.dtype) * p["layer_norm3.weight"]) + p["layer_norm3.bias"]


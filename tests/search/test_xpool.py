"""X-Pool head: numpy direct and factorised forms against an independent torch reference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from vtr_qdrant.errors import ArtifactError, ConfigError, InvalidInputError
from vtr_qdrant.search.resolve import get_aggregator
from vtr_qdrant.search.xpool import XPOOL_PARAMETER_NAMES, XPoolHead, XPoolVideoCache

TOL = 1e-10


# ---------------------------------------------------------------------------- torch reference


def _torch_reference():  # type: ignore[no-untyped-def]
    """The paper's head written in torch from the paper's equations, module layout as in the official code."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class CrossAttention(nn.Module):
        def __init__(self, dim: int, heads: int) -> None:
            super().__init__()
            self.heads, self.head_dim = heads, dim // heads
            self.q_proj = nn.Linear(dim, dim)
            self.k_proj = nn.Linear(dim, dim)
            self.v_proj = nn.Linear(dim, dim)
            self.out_proj = nn.Linear(dim, dim)

        def forward(self, text, frames, mask):  # text (T, D), frames (V, F, D), mask (V, F) bool
            t = text.shape[0]
            v, f, d = frames.shape
            q = self.q_proj(text).view(t, self.heads, self.head_dim)  # T H d
            k = self.k_proj(frames).view(v, f, self.heads, self.head_dim)  # V F H d
            val = self.v_proj(frames).view(v, f, self.heads, self.head_dim)
            logits = torch.einsum("thc,vfhc->vhft", q, k) / math.sqrt(self.head_dim)  # V H F T
            logits = logits.masked_fill(~mask[:, None, :, None], float("-inf"))
            attn = torch.softmax(logits, dim=2)
            out = torch.einsum("vhft,vfhc->vthc", attn, val).reshape(v, t, d)
            return self.out_proj(out), attn

    class XPoolTransformer(nn.Module):
        def __init__(self, dim: int, heads: int, dropout: float = 0.3) -> None:
            super().__init__()
            self.cross_attn = CrossAttention(dim, heads)
            self.linear_proj = nn.Linear(dim, dim)
            self.layer_norm1 = nn.LayerNorm(dim)
            self.layer_norm2 = nn.LayerNorm(dim)
            self.layer_norm3 = nn.LayerNorm(dim)
            self.dropout = nn.Dropout(dropout)

        def forward(self, text, frames, mask):
            attn_out, attn = self.cross_attn(self.layer_norm1(text), self.layer_norm1(frames), mask)
            attn_out = self.layer_norm2(attn_out)
            out = attn_out + self.dropout(self.linear_proj(attn_out))
            return self.layer_norm3(out), attn  # (V, T, D), (V, H, F, T)

    class XPoolModel(nn.Module):
        """Stand-in for the full checkpoint: a ``clip`` submodule next to ``pool_frames``."""

        def __init__(self, dim: int, heads: int) -> None:
            super().__init__()
            self.clip = nn.Linear(dim, 3)
            self.pool_frames = XPoolTransformer(dim, heads)

    return torch, XPoolTransformer, XPoolModel


def _random_state(dim: int, seed: int) -> dict[str, np.ndarray]:
    """Non-identity weights in the official layout (no prefix), float64."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for k in XPOOL_PARAMETER_NAMES:
        if "layer_norm" in k:
            out[k] = (
                1 + 0.3 * rng.standard_normal(dim) if k.endswith("weight") else 0.2 * rng.standard_normal(dim)
            )
        elif k.endswith("weight"):
            out[k] = rng.standard_normal((dim, dim)) / math.sqrt(dim) + 0.5 * np.eye(dim)
        else:
            out[k] = 0.3 * rng.standard_normal(dim)
    return out


def _reference_module(dim: int, heads: int, state: dict[str, np.ndarray]):  # type: ignore[no-untyped-def]
    torch, XPoolTransformer, _ = _torch_reference()
    module = XPoolTransformer(dim, heads).double().eval()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return torch, module


def _inputs(t: int, v: int, f: int, dim: int, seed: int, masked: bool):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    text = rng.standard_normal((t, dim))
    frames = rng.standard_normal((v, f, dim))
    frames /= np.linalg.norm(frames, axis=2, keepdims=True)
    mask = np.ones((v, f), dtype=bool)
    if masked:
        counts = rng.integers(1, f + 1, size=v)
        counts[0] = 1
        counts[-1] = f
        mask = np.arange(f)[None, :] < counts[:, None]
        frames[~mask] = np.nan  # padding content must not matter
    return text, frames, mask


@pytest.mark.parametrize("heads", [1, 2, 4])
@pytest.mark.parametrize("frames_n", [1, 3, 12])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_torch_reference(heads: int, frames_n: int, masked: bool) -> None:
    dim = 16
    state = _random_state(dim, seed=heads * 100 + frames_n)
    torch, module = _reference_module(dim, heads, state)
    head = XPoolHead.from_state_dict(state, num_heads=heads)
    text, frames, mask = _inputs(3, 5, frames_n, dim, seed=frames_n, masked=masked)

    with torch.no_grad():
        ref_pool, ref_attn = module(
            torch.from_numpy(text), torch.from_numpy(np.nan_to_num(frames)), torch.from_numpy(mask)
        )
    ref_pool = ref_pool.numpy()
    ref_weights = ref_attn.mean(dim=1).permute(2, 0, 1).numpy()  # (T, V, F)
    tn = text / np.linalg.norm(text, axis=1, keepdims=True)
    pn = ref_pool / np.linalg.norm(ref_pool, axis=2, keepdims=True)
    ref_sim = np.einsum("td,vtd->tv", tn, pn)

    pooled = head.pool(text, frames, mask)
    assert pooled.shape == (5, 3, dim) and pooled.dtype == np.float64
    np.testing.assert_allclose(pooled, ref_pool, rtol=0, atol=TOL)
    np.testing.assert_allclose(head.similarity(text, frames, mask), ref_sim, rtol=0, atol=TOL)

    cache = head.precompute(frames, mask)
    np.testing.assert_allclose(head.pool_cached(text, cache), ref_pool, rtol=0, atol=TOL)
    np.testing.assert_allclose(head.similarity_cached(text, cache), ref_sim, rtol=0, atol=TOL)

    result = head.aggregate(text, frames, mask)
    assert result.scores.shape == (3, 5) and result.weights.shape == (3, 5, frames_n)
    np.testing.assert_allclose(result.scores, ref_sim, rtol=0, atol=TOL)
    np.testing.assert_allclose(result.weights, ref_weights, rtol=0, atol=TOL)
    assert np.all(result.weights[:, ~mask] == 0.0)
    np.testing.assert_allclose(result.weights.sum(axis=2), 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("heads", [1, 2, 4, 8])
def test_factorised_equals_direct(heads: int) -> None:
    dim = 64
    head = XPoolHead.from_state_dict(_random_state(dim, seed=heads), num_heads=heads)
    text, frames, mask = _inputs(4, 9, 12, dim, seed=heads, masked=True)
    direct = head.similarity(text, frames, mask)
    fact = head.similarity_cached(text, head.precompute(frames, mask))
    assert np.max(np.abs(direct - fact)) <= TOL
    np.testing.assert_allclose(
        head.pool_cached(text, head.precompute(frames, mask)), head.pool(text, frames, mask), rtol=0, atol=TOL
    )


def test_masked_equals_unpadded() -> None:
    dim, heads = 32, 2
    head = XPoolHead.from_state_dict(_random_state(dim, seed=7), num_heads=heads)
    rng = np.random.default_rng(7)
    text = rng.standard_normal((2, dim))
    counts = [1, 4, 12, 7]
    videos = [rng.standard_normal((c, dim)) for c in counts]
    frames = np.full((len(videos), 12, dim), 123.0)  # junk padding
    mask = np.zeros((len(videos), 12), dtype=bool)
    for i, vid in enumerate(videos):
        frames[i, : len(vid)] = vid
        mask[i, : len(vid)] = True
    batched = head.aggregate(text, frames, mask)
    direct = head.similarity(text, frames, mask)
    for i, vid in enumerate(videos):
        alone = head.aggregate(text, vid[None])
        np.testing.assert_allclose(batched.scores[:, i], alone.scores[:, 0], rtol=0, atol=TOL)
        np.testing.assert_allclose(direct[:, i], alone.scores[:, 0], rtol=0, atol=TOL)
        np.testing.assert_allclose(batched.weights[:, i, : len(vid)], alone.weights[:, 0], rtol=0, atol=TOL)
        assert np.all(batched.weights[:, i, len(vid) :] == 0.0)
    # stacking per-video caches of different widths == one padded cache
    stacked = XPoolVideoCache.stack([head.precompute(vid[None]) for vid in videos])
    np.testing.assert_allclose(head.similarity_cached(text, stacked), batched.scores, rtol=0, atol=TOL)
    np.testing.assert_allclose(
        head.similarity_cached(text, stacked[[3, 1]]), batched.scores[:, [3, 1]], rtol=0, atol=TOL
    )


def test_float32_path() -> None:
    dim = 64
    head = XPoolHead.from_state_dict(_random_state(dim, seed=3), num_heads=2)
    text, frames, mask = _inputs(3, 6, 12, dim, seed=3, masked=True)
    frames = np.nan_to_num(frames)
    ref = head.similarity(text, frames, mask)
    r32 = head.aggregate(text.astype(np.float32), frames.astype(np.float32), mask)
    assert r32.scores.dtype == np.float32 and r32.weights.dtype == np.float32
    np.testing.assert_allclose(r32.scores, ref, rtol=0, atol=2e-6)
    s32 = head.similarity(text.astype(np.float32), frames.astype(np.float32), mask)
    assert s32.dtype == np.float32
    np.testing.assert_allclose(s32, ref, rtol=0, atol=2e-6)


@pytest.mark.parametrize("spread", [1.0, 0.05, 0.002])
def test_float32_factorised_as_accurate_as_direct(spread: float) -> None:
    """Near-duplicate frames (typical of a video) stress the LN variances; float32 must stay sound."""
    dim = 128
    head = XPoolHead.from_state_dict(_random_state(dim, seed=9), num_heads=1)
    rng = np.random.default_rng(9)
    base = rng.standard_normal((20, 1, dim))
    frames = base + spread * rng.standard_normal((20, 12, dim))
    frames /= np.linalg.norm(frames, axis=2, keepdims=True)
    text = rng.standard_normal((4, dim))
    ref = head.similarity(text, frames)
    t32, f32 = text.astype(np.float32), frames.astype(np.float32)
    err_direct = np.abs(head.similarity(t32, f32) - ref).max()
    err_fact = np.abs(head.similarity_cached(t32, head.precompute(f32)) - ref).max()
    assert err_fact <= max(4 * err_direct, 1e-6), (err_fact, err_direct)
    np.testing.assert_allclose(
        head.pool_cached(t32, head.precompute(f32)), head.pool(text, frames), atol=1e-4
    )


def test_identity_head_behaviour() -> None:
    dim = 32
    head = get_aggregator("xpool-identity", dim=dim)
    assert isinstance(head, XPoolHead) and head.num_heads == 1 and head.dim == dim
    rng = np.random.default_rng(0)
    text = rng.standard_normal((2, dim))
    frames = rng.standard_normal((3, 5, dim))
    # identity weights: q, k, v are LN1 outputs; out is the attention-weighted mean of LN1(frames)

    def ln(a: np.ndarray) -> np.ndarray:
        return (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + 1e-5)

    logits = np.einsum("td,vfd->tvf", ln(text), ln(frames)) / math.sqrt(dim)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    x = np.einsum("tvf,vfd->vtd", w, ln(frames))
    expected = ln(2 * ln(x))  # LN2, then y + I y, then LN3
    np.testing.assert_allclose(head.pool(text, frames), expected, rtol=0, atol=TOL)
    result = head.aggregate(text, frames)
    np.testing.assert_allclose(result.weights, w, rtol=0, atol=TOL)
    # a video made of one repeated frame pools to (almost) LN1 of that frame, with uniform weights
    single = np.repeat(frames[:1, :1], 4, axis=1)
    r = head.aggregate(text, single)
    np.testing.assert_allclose(r.weights, 0.25, rtol=0, atol=1e-12)
    np.testing.assert_allclose(head.pool(text, single)[0, 0], ln(frames[0, 0]), atol=1e-4)
    # heads must divide the dim
    assert XPoolHead.identity(dim, num_heads=4).head_dim == 8
    with pytest.raises(ConfigError, match="divisor"):
        XPoolHead.identity(dim, num_heads=5)


def _official_full_state(dim: int, heads: int, seed: int):  # type: ignore[no-untyped-def]
    torch, _, XPoolModel = _torch_reference()
    model = XPoolModel(dim, heads).double()
    state = _random_state(dim, seed)
    model.pool_frames.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    full = model.state_dict()
    assert any(k.startswith("clip.") for k in full)
    assert "pool_frames.cross_attn.q_proj.weight" in full
    return torch, full, state


@pytest.mark.parametrize("wrapped", [True, False])
def test_from_checkpoint_official_layout(tmp_path: Path, wrapped: bool) -> None:
    dim, heads = 16, 2
    torch, full, _ = _official_full_state(dim, heads, seed=11)
    full = {k: v.float() for k, v in full.items()}  # checkpoints are float32
    path = tmp_path / "model_best.pth"
    torch.save({"epoch": 3, "state_dict": full} if wrapped else full, path)
    head = XPoolHead.from_checkpoint(path, num_heads=heads)
    assert head.dim == dim and head.num_heads == heads
    for k, v in head.state_dict().items():
        np.testing.assert_array_equal(v, full[k].double().numpy())
    assert not any(k.startswith("clip.") for k in head.state_dict())


def test_from_state_dict_accepts_torch_tensors_and_both_prefixes() -> None:
    dim = 16
    torch, full, state = _official_full_state(dim, 1, seed=12)
    a = XPoolHead.from_state_dict(full)  # torch tensors, "pool_frames." prefix, clip.* ignored
    b = XPoolHead.from_state_dict(state)  # numpy, no prefix
    c = XPoolHead.from_state_dict({"module." + k: v for k, v in full.items()})
    d = XPoolHead.from_state_dict({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in state.items()})
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(a.state_dict()[k], v)
        np.testing.assert_array_equal(c.state_dict()[k], v)
        assert d.state_dict()[k].dtype == np.float64
    assert set(b.state_dict()) == {"pool_frames." + k for k in XPOOL_PARAMETER_NAMES}
    assert set(b.state_dict(prefix="")) == set(XPOOL_PARAMETER_NAMES)


def test_save_load_round_trip(tmp_path: Path) -> None:
    dim, heads = 24, 3
    head = XPoolHead.from_state_dict(_random_state(dim, seed=5), num_heads=heads)
    path = tmp_path / "sub" / "xpool_head.npz"
    head.save(path)
    again = XPoolHead.load(path)
    assert again.dim == dim and again.num_heads == heads
    for k, v in head.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[k], v)
    with np.load(path, allow_pickle=False) as data:  # pickle-free, official names
        assert "pool_frames.linear_proj.weight" in data.files
        assert int(data["num_heads"]) == heads
    # float32-exact weights are stored as float32
    f32 = XPoolHead.from_state_dict({k: v.astype(np.float32) for k, v in _random_state(dim, 1).items()})
    f32.save(tmp_path / "f32.npz")
    with np.load(tmp_path / "f32.npz") as data:
        assert data["pool_frames.linear_proj.weight"].dtype == np.float32
    assert list(tmp_path.glob("**/*.tmp")) == []


def test_bad_state_dicts() -> None:
    dim = 8
    state = _random_state(dim, seed=1)
    missing = {k: v for k, v in state.items() if k != "layer_norm3.bias"}
    with pytest.raises(ConfigError, match=r"missing 1 parameter.*pool_frames\.layer_norm3\.bias"):
        XPoolHead.from_state_dict(missing)
    with pytest.raises(ConfigError, match="is this an X-Pool checkpoint"):
        XPoolHead.from_state_dict({"clip.visual.weight": np.zeros(3)})
    wrong = dict(state, **{"linear_proj.weight": np.zeros((dim, dim + 1))})
    with pytest.raises(ConfigError, match=r"linear_proj\.weight: expected \(8, 8\), got \(8, 9\)"):
        XPoolHead.from_state_dict(wrong)
    wrong_ln = dict(state, **{"layer_norm2.weight": np.ones((dim, 1))})
    with pytest.raises(ConfigError, match=r"layer_norm2\.weight: expected \(8,\)"):
        XPoolHead.from_state_dict(wrong_ln)
    with pytest.raises(ConfigError, match="square"):
        XPoolHead.from_state_dict(dict(state, **{"cross_attn.q_proj.weight": np.zeros((dim, 4))}))
    with pytest.raises(ConfigError, match="NaN"):
        XPoolHead.from_state_dict(dict(state, **{"cross_attn.k_proj.bias": np.full(dim, np.nan)}))
    dup = dict(state, **{"pool_frames.linear_proj.bias": state["linear_proj.bias"]})
    with pytest.raises(ConfigError, match="twice"):
        XPoolHead.from_state_dict(dup)
    with pytest.raises(ConfigError, match="divisor"):
        XPoolHead.from_state_dict(state, num_heads=3)
    with pytest.raises(ConfigError):
        XPoolHead.from_state_dict([1, 2])  # type: ignore[arg-type]


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not found"):
        XPoolHead.from_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(ArtifactError, match="not found"):
        XPoolHead.load(tmp_path / "nope.npz")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ArtifactError):
        XPoolHead.load(junk)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ArtifactError, match="not an X-Pool head file"):
        XPoolHead.load(tmp_path / "other.npz")
    pytest.importorskip("torch")
    with pytest.raises(ArtifactError, match="could not read"):
        XPoolHead.from_checkpoint(junk)
    import torch

    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ArtifactError, match="expected a state dict"):
        XPoolHead.from_checkpoint(tmp_path / "list.pth")


def test_bad_inputs() -> None:
    head = XPoolHead.identity(8)
    with pytest.raises(InvalidInputError, match=r"\(T, 8\)"):
        head.similarity(np.zeros((2, 7)), np.zeros((1, 3, 8)))
    with pytest.raises(InvalidInputError, match=r"\(V, F, 8\)"):
        head.precompute(np.zeros((3, 8)))
    with pytest.raises(InvalidInputError, match="at least one valid frame"):
        head.pool(np.ones((1, 8)), np.ones((2, 3, 8)), np.array([[True, False, False], [False] * 3]))
    cache = XPoolHead.identity(8, num_heads=2).precompute(np.ones((1, 3, 8)))
    with pytest.raises(InvalidInputError, match="recompute"):
        head.similarity_cached(np.ones((1, 8)), cache)


def test_empty_batches() -> None:
    head = XPoolHead.from_state_dict(_random_state(8, seed=2), num_heads=2)
    frames = np.random.default_rng(2).standard_normal((2, 3, 8))
    r = head.aggregate(np.ones((2, 8)), np.zeros((0, 3, 8)))
    assert r.scores.shape == (2, 0) and r.weights.shape == (2, 0, 3)
    assert head.similarity_cached(np.zeros((0, 8)), head.precompute(frames)).shape == (0, 2)
    assert head.pool_cached(np.zeros((0, 8)), head.precompute(frames)).shape == (2, 0, 8)
    assert head.pool(np.ones((1, 8)), np.zeros((0, 3, 8))).shape == (0, 1, 8)
    with pytest.raises(InvalidInputError, match="at least one frame"):
        head.aggregate(np.ones((2, 8)), np.zeros((2, 0, 8)))


# ---------------------------------------------------------------------------- query-adaptive scale


def _adaptive_state(dim: int, seed: int) -> dict[str, np.ndarray]:
    state = _random_state(dim, seed)
    rng = np.random.default_rng(seed + 100)
    state["adaptive_scale.weight"] = rng.standard_normal(dim)
    state["adaptive_scale.bias"] = np.array(0.4)
    return state


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_adaptive_factorised_equals_direct(heads: int) -> None:
    dim = 32
    head = XPoolHead.from_state_dict(_adaptive_state(dim, seed=heads), num_heads=heads)
    assert head.adaptive and "adaptive" in repr(head)
    text, frames, mask = _inputs(5, 8, 10, dim, seed=heads, masked=True)
    direct = head.similarity(text, frames, mask)
    fact = head.similarity_cached(text, head.precompute(frames, mask))
    assert np.max(np.abs(direct - fact)) <= TOL
    # and it equals the paper's head run with each text's query scaled by s(t)
    s = head.attention_scale(text)
    assert s.shape == (5,) and np.all(s > 0) and len(set(np.round(s, 9))) == 5
    plain = _random_state(dim, seed=heads)
    for i in range(5):
        scaled = {**plain, "cross_attn.q_proj.weight": plain["cross_attn.q_proj.weight"] * s[i],
                  "cross_attn.q_proj.bias": plain["cross_attn.q_proj.bias"] * s[i]}
        ref = XPoolHead.from_state_dict(scaled, num_heads=heads).similarity(text[i : i + 1], frames, mask)
        np.testing.assert_allclose(direct[i : i + 1], ref, rtol=0, atol=TOL)


def test_zero_adaptive_scale_is_the_paper_head_exactly() -> None:
    dim = 16
    plain = XPoolHead.from_state_dict(_random_state(dim, seed=3), num_heads=2)
    zero = XPoolHead.from_state_dict(
        {**_random_state(dim, seed=3), "adaptive_scale.weight": np.zeros(dim), "adaptive_scale.bias": np.zeros(())},
        num_heads=2,
    )
    text, frames, mask = _inputs(3, 6, 5, dim, seed=1, masked=True)
    assert np.array_equal(plain.similarity(text, frames, mask), zero.similarity(text, frames, mask))
    assert not plain.adaptive and np.array_equal(plain.attention_scale(text), np.ones(3))


def test_adaptive_scale_is_clipped_and_validated() -> None:
    dim = 8
    state = _adaptive_state(dim, 0)
    state["adaptive_scale.weight"] = np.full(dim, 1e6)
    head = XPoolHead(state)
    s = head.attention_scale(np.ones((1, dim)))
    assert np.isfinite(s).all() and s[0] == pytest.approx(math.exp(12.0))
    with pytest.raises(ConfigError, match="needs both"):
        XPoolHead({**_random_state(dim, 0), "adaptive_scale.weight": np.zeros(dim)})
    with pytest.raises(ConfigError, match=r"adaptive_scale.weight must have shape \(8,\)"):
        XPoolHead({**_random_state(dim, 0), "adaptive_scale.weight": np.zeros(3), "adaptive_scale.bias": np.zeros(())})


def test_head_file_versions(tmp_path: Path) -> None:
    dim = 12
    plain = XPoolHead.from_state_dict(_random_state(dim, seed=1))
    adaptive = XPoolHead.from_state_dict(_adaptive_state(dim, seed=1))
    plain.save(tmp_path / "v1.npz")
    adaptive.save(tmp_path / "v2.npz")
    with np.load(tmp_path / "v1.npz") as a, np.load(tmp_path / "v2.npz") as b:
        assert int(a["__vtr_xpool_format__"]) == 1  # older releases still read heads without the scale
        assert int(b["__vtr_xpool_format__"]) == 2 and "pool_frames.adaptive_scale.weight" in b.files
    again = XPoolHead.load(tmp_path / "v2.npz")
    assert again.adaptive and not XPoolHead.load(tmp_path / "v1.npz").adaptive
    text, frames, mask = _inputs(2, 3, 4, dim, seed=0, masked=False)
    np.testing.assert_allclose(again.similarity(text, frames, mask), adaptive.similarity(text, frames, mask), atol=1e-6)
    with np.load(tmp_path / "v2.npz") as b:
        arrays = {k: b[k] for k in b.files}
    arrays["__vtr_xpool_format__"] = np.array(3)
    np.savez(tmp_path / "v3.npz", **arrays)
    with pytest.raises(ArtifactError, match="reads 1 to 2"):
        XPoolHead.load(tmp_path / "v3.npz")

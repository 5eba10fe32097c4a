"""Every built-in aggregation against a straightforward per-pair numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from vtr_qdrant.errors import ConfigError, InvalidInputError
from vtr_qdrant.search.aggregation import MaxFrame, MeanPooling, SoftmaxPooling, TopKFrames
from vtr_qdrant.search.resolve import get_aggregator


def _norm(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _reference(name: str, t: np.ndarray, f: np.ndarray, k: int = 3, temp: float = 0.05) -> float:
    """One (text, video) pair, valid frames only, written the obvious way."""
    sims = np.array([_cos(t, fr) for fr in f])
    if name == "mean":
        return _cos(t, f.mean(axis=0))
    if name == "max":
        return float(sims.max())
    if name == "topk":
        return float(np.sort(sims)[::-1][: min(k, len(sims))].mean())
    if name == "softmax":
        w = np.exp(sims / temp - (sims / temp).max())
        w /= w.sum()
        return _cos(t, (w[:, None] * f).sum(axis=0))
    raise AssertionError(name)


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    text = _norm(rng.standard_normal((4, 16)))
    frames = _norm(rng.standard_normal((9, 6, 16)))
    lengths = np.array([6, 1, 3, 6, 2, 5, 4, 6, 1])
    mask = np.arange(6)[None, :] < lengths[:, None]
    return text, frames, mask


@pytest.mark.parametrize(
    "agg,name", [(MeanPooling(), "mean"), (MaxFrame(), "max"), (TopKFrames(3), "topk"), (SoftmaxPooling(0.05), "softmax")]
)
def test_scores_match_reference_with_masks(agg, name, data):  # type: ignore[no-untyped-def]
    text, frames, mask = data
    res = agg.aggregate(text, frames, mask)
    assert res.scores.shape == (4, 9) and res.weights.shape == (4, 9, 6)
    for t in range(4):
        for v in range(9):
            ref = _reference(name, text[t], frames[v][mask[v]])
            assert res.scores[t, v] == pytest.approx(ref, abs=1e-10)
    # weights live on real frames only and sum to one
    assert np.all(res.weights[:, ~mask] == 0)
    np.testing.assert_allclose(res.weights.sum(axis=2), 1.0, atol=1e-12)
    # ranking equals the reference ranking
    ref_rank = np.argsort([-_reference(name, text[0], frames[v][mask[v]]) for v in range(9)], kind="stable")
    assert list(np.argsort(-res.scores[0], kind="stable")) == list(ref_rank)


def test_masked_equals_unpadded(data):  # type: ignore[no-untyped-def]
    text, frames, mask = data
    for agg in (MeanPooling(), MaxFrame(), TopKFrames(2), SoftmaxPooling(0.1)):
        full = agg.aggregate(text, frames, mask).scores
        for v in range(frames.shape[0]):
            alone = agg.aggregate(text, frames[v : v + 1, mask[v]], None).scores[:, 0]
            np.testing.assert_allclose(full[:, v], alone, atol=1e-12)


def test_softmax_temperature_limits(data):  # type: ignore[no-untyped-def]
    text, frames, mask = data
    cold = SoftmaxPooling(1e-4).aggregate(text, frames, mask).scores
    hot = SoftmaxPooling(1e4).aggregate(text, frames, mask).scores
    np.testing.assert_allclose(cold, MaxFrame().aggregate(text, frames, mask).scores, atol=1e-6)
    np.testing.assert_allclose(hot, MeanPooling().aggregate(text, frames, mask).scores, atol=1e-4)


def test_float32_inputs_give_float32_scores(data):  # type: ignore[no-untyped-def]
    text, frames, mask = data
    for agg in (MeanPooling(), MaxFrame(), TopKFrames(), SoftmaxPooling()):
        res = agg.aggregate(text.astype(np.float32), frames.astype(np.float32), mask)
        assert res.scores.dtype == np.float32


def test_bad_inputs_and_names():
    agg = SoftmaxPooling()
    with pytest.raises(InvalidInputError, match=r"shape \(T, D\)"):
        agg.aggregate(np.zeros(4), np.zeros((1, 2, 4)))
    with pytest.raises(InvalidInputError, match="does not match frame dim"):
        agg.aggregate(np.zeros((1, 3)), np.zeros((1, 2, 4)))
    with pytest.raises(InvalidInputError, match="at least one valid frame"):
        agg.aggregate(np.ones((1, 4)), np.ones((2, 2, 4)), np.array([[True, True], [False, False]]))
    with pytest.raises(ConfigError, match="unknown aggregation 'nope'"):
        get_aggregator("nope")
    with pytest.raises(ConfigError, match="temperature > 0"):
        SoftmaxPooling(0)
    with pytest.raises(ConfigError, match="k >= 1"):
        TopKFrames(0)
    assert isinstance(get_aggregator("topk", k=5), TopKFrames)

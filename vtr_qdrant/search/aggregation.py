"""Stage 2: text-conditioned aggregation of candidate videos' frame embeddings.

Every aggregator maps a batch of query texts and a batch of candidate videos to a score matrix and
per-frame weights (the "moment" a hit reports). All candidates are scored at once: the inputs are
dense arrays with a boolean mask for videos that have fewer frames than the widest candidate
(masking, never padding with repeated frames, so a short video is not over-weighted).

Shapes (T texts, V videos, F frames, D embedding dim):

- ``text``:   (T, D) float32 or float64, L2-normalised
- ``frames``: (V, F, D) same dtype, each valid frame L2-normalised
- ``mask``:   (V, F) bool, True where a frame exists (None: all frames valid)
- result ``scores``: (T, V); ``weights``: (T, V, F), zero on masked frames, summing to 1 per (t, v)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, InvalidInputError

__all__ = [
    "AggregationResult",
    "Aggregator",
    "MeanPooling",
    "MaxFrame",
    "TopKFrames",
    "SoftmaxPooling",
    "AGGREGATIONS",
]


@dataclass(frozen=True)
class AggregationResult:
    """Scores and per-frame weights for every (text, video) pair.

    Attributes:
        scores: (T, V) float, higher is better.
        weights: (T, V, F) float, how much each frame contributed to the score; zero on masked frames.
    """

    scores: np.ndarray
    weights: np.ndarray


def check_inputs(
    text: np.ndarray, frames: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate shapes and return ``(text, frames, mask)`` with a concrete boolean mask."""
    if text.ndim != 2:
        raise InvalidInputError(f"text embeddings must have shape (T, D), got {text.shape}")
    if frames.ndim != 3:
        raise InvalidInputError(f"frame embeddings must have shape (V, F, D), got {frames.shape}")
    if text.shape[1] != frames.shape[2]:
        raise InvalidInputError(
            f"text dim {text.shape[1]} does not match frame dim {frames.shape[2]}: "
            "text and frames must come from the same model bundle"
        )
    if mask is None:
        mask = np.ones(frames.shape[:2], dtype=bool)
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != frames.shape[:2]:
            raise InvalidInputError(f"mask must have shape (V, F) = {frames.shape[:2]}, got {mask.shape}")
        if frames.shape[0] and not mask.any(axis=1).all():
            raise InvalidInputError("every candidate video needs at least one valid frame in the mask")
    return text, frames, mask


def masked_softmax(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Softmax over the last axis with masked entries at -inf (exactly zero weight)."""
    logits = np.where(mask, logits, -np.inf)
    logits = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


def frame_similarities(text: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Cosine similarity of every text with every frame: (T, V, F). Inputs must be L2-normalised."""
    v, f, d = frames.shape
    return (frames.reshape(v * f, d) @ text.T).T.reshape(text.shape[0], v, f)


class Aggregator(ABC):
    """Scores T texts against V candidate videos. Subclasses implement :meth:`aggregate`."""

    name: str = ""

    @abstractmethod
    def aggregate(
        self, text: np.ndarray, frames: np.ndarray, mask: np.ndarray | None = None
    ) -> AggregationResult:
        """Score every (text, video) pair.

        Args:
            text: (T, D) float32/float64, L2-normalised query embeddings.
            frames: (V, F, D) same dtype, L2-normalised frame embeddings.
            mask: (V, F) bool, True for real frames; None means all frames are real.

        Returns:
            :class:`AggregationResult` with scores (T, V) and weights (T, V, F).
        """

    #: True when :meth:`precompute_candidates` gives per-candidate state worth caching between queries
    precomputes: bool = False

    @property
    def state_key(self) -> str:
        """Identifies what :meth:`precompute_candidates` depends on (cache key of its states)."""
        return f"{type(self).__name__}@{id(self):x}"

    def precompute_candidates(self, frames: np.ndarray, mask: np.ndarray) -> Sequence[Any]:
        """Text-independent per-candidate state for :meth:`aggregate_precomputed` (when :attr:`precomputes`).

        Args:
            frames: (V, F, D) frame embeddings, zero-padded.
            mask: (V, F) bool, True for real frames.

        Returns:
            One opaque state per candidate.
        """
        raise NotImplementedError(f"{type(self).__name__} precomputes nothing")

    def aggregate_precomputed(self, text: np.ndarray, states: Sequence[Any]) -> AggregationResult:
        """Like :meth:`aggregate`, from states made by :meth:`precompute_candidates` (same result)."""
        raise NotImplementedError(f"{type(self).__name__} precomputes nothing")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MeanPooling(Aggregator):
    """Text-agnostic baseline: cosine(text, mean of the video's normalised frames)."""

    name = "mean"

    def aggregate(self, text, frames, mask=None):  # type: ignore[no-untyped-def]
        text, frames, mask = check_inputs(text, frames, mask)
        w = mask / mask.sum(axis=1, keepdims=True)  # (V, F)
        pooled = np.einsum("vf,vfd->vd", w.astype(frames.dtype), frames)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        scores = text @ pooled.T
        weights = np.broadcast_to(w, (text.shape[0],) + w.shape).astype(scores.dtype)
        return AggregationResult(scores, weights)


class MaxFrame(Aggregator):
    """Score = the best single frame's cosine (what Qdrant's MAX_SIM gives for a one-vector query)."""

    name = "max"

    def aggregate(self, text, frames, mask=None):  # type: ignore[no-untyped-def]
        text, frames, mask = check_inputs(text, frames, mask)
        sims = np.where(mask, frame_similarities(text, frames), -np.inf)
        best = sims.argmax(axis=2)
        scores = np.take_along_axis(sims, best[..., None], axis=2)[..., 0]
        weights = np.zeros_like(sims)
        np.put_along_axis(weights, best[..., None], 1.0, axis=2)
        return AggregationResult(scores, weights)


class TopKFrames(Aggregator):
    """Score = mean cosine of the k best frames (k clipped to each video's frame count)."""

    name = "topk"

    def __init__(self, k: int = 3) -> None:
        if k < 1:
            raise ConfigError(f"top-k aggregation needs k >= 1, got {k}")
        self.k = int(k)

    def __repr__(self) -> str:
        return f"TopKFrames(k={self.k})"

    def aggregate(self, text, frames, mask=None):  # type: ignore[no-untyped-def]
        text, frames, mask = check_inputs(text, frames, mask)
        sims = np.where(mask, frame_similarities(text, frames), -np.inf)
        n_valid = mask.sum(axis=1)  # (V,)
        k_eff = np.minimum(self.k, n_valid)  # (V,)
        order = np.argsort(-sims, axis=2, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(sims.shape[2])[None, None, :], axis=2)
        chosen = rank < k_eff[None, :, None]
        weights = chosen / k_eff[None, :, None]
        scores = np.where(chosen, sims, 0.0).sum(axis=2) / k_eff[None, :]
        return AggregationResult(scores.astype(sims.dtype), weights.astype(sims.dtype))


class SoftmaxPooling(Aggregator):
    """The X-Pool paper's parameter-free text-conditioned baseline.

    weights = softmax(cos(text, frame) / temperature) over the video's frames,
    pooled = sum(weights * frame), score = cos(text, pooled).
    Small temperatures approach max-frame, large ones approach mean pooling.
    """

    name = "softmax"

    def __init__(self, temperature: float = 0.01) -> None:
        if not temperature > 0:
            raise ConfigError(f"softmax pooling needs temperature > 0, got {temperature}")
        self.temperature = float(temperature)

    def __repr__(self) -> str:
        return f"SoftmaxPooling(temperature={self.temperature})"

    def aggregate(self, text, frames, mask=None):  # type: ignore[no-untyped-def]
        text, frames, mask = check_inputs(text, frames, mask)
        sims = frame_similarities(text, frames)  # (T, V, F)
        weights = masked_softmax(sims / self.temperature, mask[None])
        pooled = np.matmul(weights.transpose(1, 0, 2), frames)  # (V, T, D): batched over videos
        dots = np.einsum("vtd,td->vt", pooled, text)
        scores = (dots / np.maximum(np.linalg.norm(pooled, axis=2), 1e-12)).T
        return AggregationResult(scores.astype(sims.dtype), weights.astype(sims.dtype))


AGGREGATIONS: dict[str, type[Aggregator]] = {
    "mean": MeanPooling,
    "max": MaxFrame,
    "topk": TopKFrames,
    "softmax": SoftmaxPooling,
}

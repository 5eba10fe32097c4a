"""Text-to-video retrieval metrics: R@k, median rank (MdR), mean rank (MnR), with 1-based ranks."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Protocol

import numpy as np

from ..errors import InvalidInputError

__all__ = ["relevance_indices", "evaluate_retrieval"]


class _HasRelevant(Protocol):
    @property
    def relevant(self) -> Collection[str]: ...


def relevance_indices(queries: Iterable[_HasRelevant], video_ids: Sequence[str]) -> list[set[int]]:
    """Map each query's relevant video ids to column indices of a (Q, V) score matrix."""
    col = {v: i for i, v in enumerate(video_ids)}
    return [{col[v] for v in q.relevant if v in col} for q in queries]


def evaluate_retrieval(
    scores: np.ndarray, relevant: Sequence[Collection[int]], *, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@k and rank statistics of a text-to-video score matrix.

    The rank of a query (1-based) is that of its best-ranked relevant video; ties count against it
    (rank = 1 + number of irrelevant videos scoring >= the best relevant score), so a constant score
    matrix is never rewarded.

    Args:
        scores: (Q, V) float, higher is better.
        relevant: for each query, the column indices of its relevant videos (at least one each).
        ks: the k of each ``R@k``.

    Returns:
        ``{"R@1": ..., "R@5": ..., "R@10": ..., "MdR": median rank, "MnR": mean rank, "n": Q}``;
        recalls are fractions in [0, 1].

    Raises:
        InvalidInputError: shape mismatch or a query without relevant videos.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != len(relevant):
        raise InvalidInputError(
            f"scores must be (Q, V) with Q = {len(relevant)} queries, got shape {s.shape}"
        )
    if s.shape[0] == 0:
        raise InvalidInputError("no queries to evaluate")
    ranks = np.empty(s.shape[0], dtype=np.int64)
    for q, rel in enumerate(relevant):
        idx = np.fromiter(rel, dtype=np.int64)
        if idx.size == 0:
            raise InvalidInputError(f"query {q} has no relevant video")
        if idx.min() < 0 or idx.max() >= s.shape[1]:
            raise InvalidInputError(f"query {q}: relevant index out of range for {s.shape[1]} videos")
        is_rel = np.zeros(s.shape[1], dtype=bool)
        is_rel[idx] = True
        best = s[q, is_rel].max()
        ranks[q] = 1 + int(np.count_nonzero(s[q, ~is_rel] >= best))
    out = {f"R@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["MdR"] = float(np.median(ranks))
    out["MnR"] = float(np.mean(ranks))
    out["n"] = float(len(ranks))
    return out

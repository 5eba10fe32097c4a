"""What a search asks for, checked: query texts or vectors -> (N, D) query embeddings, and limits.

Every entry point that searches (:class:`~vtr_qdrant.collection.VideoCollection`, the CLI, the
integrations) validates through here, so a bad argument gets the same clear
:class:`~vtr_qdrant.errors.InvalidInputError` everywhere, before anything is sent to Qdrant.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from qdrant_client import models

from ..errors import InvalidInputError
from ..store.filters import check_filter

__all__ = ["DEFAULT_CANDIDATES", "MAX_CANDIDATES", "check_search_args", "query_vectors", "stage_one_size"]

#: stage-1 candidates K handed to stage 2 unless the caller says otherwise
DEFAULT_CANDIDATES = 100
#: the most candidates (and hits) one search may ask for: stage 2 holds every candidate's frames
MAX_CANDIDATES = 100_000


def query_vectors(
    queries: Sequence[str | np.ndarray], dim: int, encode_text: Callable[[list[str]], np.ndarray]
) -> np.ndarray:
    """Embed text queries and check vector queries.

    Args:
        queries: texts and/or (D,) float vectors (a list, not a single query).
        dim: embedding dimension D.
        encode_text: the text tower, texts -> (N, D) float32 L2-normalised (called once, for all texts).

    Returns:
        (N, D) float32, L2-normalised, in query order.

    Raises:
        InvalidInputError: not a list, empty, a vector of another shape, non-finite or zero.
    """
    if isinstance(queries, (str, np.ndarray)):
        raise InvalidInputError("search_batch takes a list of queries")
    if not queries:
        raise InvalidInputError("no queries given")
    texts = [(i, q) for i, q in enumerate(queries) if isinstance(q, str)]
    out = np.empty((len(queries), dim), dtype=np.float32)
    if texts:
        out[[i for i, _ in texts]] = encode_text([q for _, q in texts])
    for i, q in enumerate(queries):
        if isinstance(q, str):
            continue
        if not isinstance(q, (np.ndarray, list, tuple)):
            raise InvalidInputError(f"query #{i} must be a str or a ({dim},) vector, got {type(q).__name__}")
        v = np.asarray(q, dtype=np.float64)
        if v.shape != (dim,):
            raise InvalidInputError(f"query vector #{i} must have shape ({dim},), got {v.shape}")
        n = np.linalg.norm(v)
        if not np.isfinite(v).all() or n == 0:
            raise InvalidInputError(f"query vector #{i} must be finite and non-zero")
        out[i] = v / n
    return out


def stage_one_size(limit: object, candidates: object) -> int:
    """K, the number of stage-1 candidates: ``candidates`` (default :data:`DEFAULT_CANDIDATES`), at least ``limit``.

    Raises:
        InvalidInputError: ``limit`` or ``candidates`` is not an int from 1 to :data:`MAX_CANDIDATES`.
    """
    _check_count("limit", limit)
    k = DEFAULT_CANDIDATES if candidates is None else candidates
    _check_count("candidates", k)
    return max(int(k), int(limit))  # type: ignore[call-overload]


def _check_count(name: str, value: object) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 1 <= value <= MAX_CANDIDATES:
        raise InvalidInputError(f"{name} must be an int from 1 to {MAX_CANDIDATES:,}, got {value!r}")


def check_search_args(
    limit: object, candidates: object, query_filter: object, score_threshold: object
) -> tuple[int, models.Filter | None, float | None]:
    """Every scalar argument of a search, checked before anything is sent to Qdrant.

    Returns:
        ``(K, filter, threshold)``: K from :func:`stage_one_size`, the filter from
        :func:`~vtr_qdrant.store.filters.check_filter`, the threshold as a float (or None).

    Raises:
        InvalidInputError: a count outside 1..:data:`MAX_CANDIDATES`, a filter no back end
            evaluates the same way, a threshold that is not a finite number.
    """
    k = stage_one_size(limit, candidates)
    flt = check_filter(query_filter)
    if score_threshold is None:
        return k, flt, None
    if isinstance(score_threshold, bool) or not isinstance(score_threshold, (int, float, np.number)) \
            or not math.isfinite(float(score_threshold)):
        raise InvalidInputError(f"score_threshold must be a finite number or None, got {score_threshold!r}")
    return k, flt, float(score_threshold)

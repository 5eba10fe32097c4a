"""What a search asks for, checked: query texts or vectors -> (N, D) query embeddings, and limits.

Every entry point that searches (:class:`~vtr_qdrant.collection.VideoCollection`, the CLI, the
integrations) validates through here, so a bad argument gets the same clear
:class:`~vtr_qdrant.errors.InvalidInputError` everywhere, before anything is sent to Qdrant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..errors import InvalidInputError

__all__ = ["DEFAULT_CANDIDATES", "query_vectors", "stage_one_size"]

#: stage-1 candidates K handed to stage 2 unless the caller says otherwise
DEFAULT_CANDIDATES = 100


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
        InvalidInputError: ``limit`` or ``candidates`` is not an int >= 1.
    """
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise InvalidInputError(f"limit must be an int >= 1, got {limit!r}")
    k = DEFAULT_CANDIDATES if candidates is None else candidates
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InvalidInputError(f"candidates must be an int >= 1, got {candidates!r}")
    return max(k, limit)

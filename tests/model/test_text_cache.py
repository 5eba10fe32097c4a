"""The text-embedding LRU of TextEncoder: repeated queries skip the tower, results are unchanged."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from vtr_qdrant.errors import InvalidInputError
from vtr_qdrant.model.bundle import ModelBundle
from vtr_qdrant.model.encoders import TextEncoder


def _counting(enc: TextEncoder) -> list[int]:
    calls: list[int] = []
    real = enc._run

    def run(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return real(batch)

    enc._run = run  # type: ignore[method-assign]
    return calls


def test_repeats_skip_the_tower_and_match_uncached(test_bundle: ModelBundle) -> None:
    enc, plain = TextEncoder(test_bundle), TextEncoder(test_bundle, cache_size=0)
    calls = _counting(enc)
    texts = ["a red circle", "blue square", "a red circle", "green"]
    first = enc.encode(texts)
    assert sum(calls) == 3  # the repeated text is encoded once
    again = enc.encode(["green", "a red circle"])
    assert sum(calls) == 3  # all cached: no tower run
    np.testing.assert_array_equal(first, plain.encode(texts))  # same values as without the cache
    np.testing.assert_array_equal(again, first[[3, 0]])
    again[0] = 0  # callers get copies: the cache cannot be corrupted
    np.testing.assert_array_equal(enc.encode("green")[0], first[3])


def test_lru_bound_and_threads(test_bundle: ModelBundle) -> None:
    enc = TextEncoder(test_bundle, cache_size=2)
    calls = _counting(enc)
    enc.encode(["a", "b", "c"])  # "a" is evicted
    enc.encode(["b", "c"])
    assert sum(calls) == 3
    enc.encode("a")
    assert sum(calls) == 4
    out: list[np.ndarray] = []
    workers = [threading.Thread(target=lambda i=i: out.append(enc.encode([f"t{i % 3}", "b"]))) for i in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(out) == 8 and all(o.shape == (2, enc.dim) for o in out)
    with pytest.raises(InvalidInputError, match="cache_size"):
        TextEncoder(test_bundle, cache_size=-1)

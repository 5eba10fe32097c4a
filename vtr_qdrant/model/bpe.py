"""Training a small CLIP-style BPE merge list (for models trained from scratch, like the synthetic world's).

The merges file it writes loads in :class:`~vtr_qdrant.model.tokenizer.ClipTokenizer` and in
open_clip's ``SimpleTokenizer(bpe_path=...)`` with identical ids.
"""

from __future__ import annotations

import gzip
import heapq
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path

import numpy as np
import regex

from .._atomic import atomic_file
from ..errors import ArtifactError, ConfigError, InvalidInputError
from .tokenizer import (
    END_OF_WORD,
    EOT_TOKEN,
    MAX_MERGES,
    PIECE_PATTERN,
    SOT_TOKEN,
    byte_to_unicode,
    clean_text,
)

__all__ = ["train_bpe_merges"]

# the header names the module of the first release: files (and bundle fingerprints) stay byte-identical
_HEADER = "#version: 0.2 (written by vtr_qdrant.tokenizer.train_bpe_merges)"

Pair = tuple[str, str]


def train_bpe_merges(corpus: Iterable[str], num_merges: int, out_path: str | os.PathLike[str]) -> Path:
    """Learn a small CLIP-style BPE merge list and write it as a gzip merges file.

    Texts are cleaned and split exactly as :meth:`ClipTokenizer.encode` does, then the most
    frequent adjacent symbol pair is merged repeatedly (ties broken by the smaller pair, so the
    result depends only on the multiset of texts). A pair whose concatenation is already a
    vocabulary entry is skipped so that every id is distinct and ``vocab_size = 512 +
    merges + 2``. Training stops early when no pair is left (pairs seen once are merged too).

    The file has open_clip's layout (a header line, then ``left right`` per line, no trailing
    newline), loads in both :class:`ClipTokenizer` and ``open_clip.tokenizer.SimpleTokenizer
    (bpe_path=...)`` with identical ids, and is byte-for-byte deterministic (gzip mtime 0, no
    file name); it is written atomically.

    Args:
        corpus: texts to learn from.
        num_merges: maximum number of merges, ``0 <= num_merges <= 48894``.
        out_path: destination ``.txt.gz`` file; its folder must exist.

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: ``num_merges`` out of range.
        InvalidInputError: an item of ``corpus`` is not a string.
        ArtifactError: the file cannot be written.
    """
    _check_num_merges(num_merges)
    words, counts = _words(corpus)
    return _write_merges(Path(out_path), _learn_merges(words, counts, num_merges))


def _check_num_merges(num_merges: object) -> None:
    if (
        isinstance(num_merges, bool)
        or not isinstance(num_merges, (int, np.integer))
        or not (0 <= num_merges <= MAX_MERGES)
    ):
        raise ConfigError(
            f"num_merges must be an integer in [0, {MAX_MERGES}] (open_clip ignores merges beyond "
            f"{MAX_MERGES}), got {num_merges!r}"
        )


def _words(corpus: Iterable[str]) -> tuple[list[list[str]], list[int]]:
    """Distinct pieces of the cleaned corpus as byte-character lists (the last with ``</w>``) and their counts."""
    if isinstance(corpus, str):
        raise InvalidInputError("corpus must be an iterable of texts, not a single str")
    pattern = regex.compile(PIECE_PATTERN, regex.IGNORECASE)
    byte_chars = byte_to_unicode()
    piece_counts: Counter[str] = Counter()
    for index, text in enumerate(corpus):
        if not isinstance(text, str):
            raise InvalidInputError(f"corpus[{index}] must be a str, got {type(text).__name__}")
        piece_counts.update(pattern.findall(clean_text(text)))
    words: list[list[str]] = []
    counts: list[int] = []
    for piece, count in sorted(piece_counts.items()):
        chars = [byte_chars[b] for b in piece.encode("utf-8")]
        chars[-1] += END_OF_WORD
        words.append(chars)
        counts.append(count)
    return words, counts


def _merge_word(word: list[str], first: str, second: str) -> list[str]:
    """``word`` with every adjacent ``first, second`` replaced by their concatenation."""
    new: list[str] = []
    i = 0
    while i < len(word):
        if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
            new.append(first + second)
            i += 2
        else:
            new.append(word[i])
            i += 1
    return new


def _learn_merges(words: list[list[str]], counts: list[int], num_merges: int) -> list[Pair]:
    """Greedy BPE: merge the most frequent pair (ties: the smaller pair) until ``num_merges`` or none left."""
    pair_counts: defaultdict[Pair, int] = defaultdict(int)
    pair_words: defaultdict[Pair, set[int]] = defaultdict(set)
    for w, (word, count) in enumerate(zip(words, counts)):
        for pair in pairwise(word):
            pair_counts[pair] += count
            pair_words[pair].add(w)
    heap = [(-c, pair) for pair, c in pair_counts.items()]
    heapq.heapify(heap)
    base = list(byte_to_unicode().values())
    known = set(base) | {c + END_OF_WORD for c in base} | {SOT_TOKEN, EOT_TOKEN}
    merges: list[Pair] = []
    while len(merges) < num_merges and heap:
        neg, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg or neg == 0:
            continue  # stale heap entry
        joined = pair[0] + pair[1]
        if joined in known:
            continue  # counts stay exact; the pair is skipped again whenever it resurfaces
        known.add(joined)
        merges.append(pair)
        touched: set[Pair] = set()
        for w in sorted(pair_words.pop(pair, ())):
            word, count = words[w], counts[w]
            for old in pairwise(word):
                pair_counts[old] -= count
                touched.add(old)
            words[w] = new = _merge_word(word, *pair)
            for p in pairwise(new):
                pair_counts[p] += count
                pair_words[p].add(w)
                touched.add(p)
        pair_counts.pop(pair, None)
        touched.discard(pair)
        for p in sorted(touched):
            c = pair_counts.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, p))
            else:
                pair_counts.pop(p, None)
                pair_words.pop(p, None)
    return merges


def _write_merges(out: Path, merges: list[Pair]) -> Path:
    """open_clip's layout (header, ``left right`` per line, no trailing newline), gzip with mtime 0, atomic."""
    payload = "\n".join([_HEADER, *(f"{a} {b}" for a, b in merges)]).encode("utf-8")
    try:
        with atomic_file(out, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write(payload)
    except OSError as e:
        raise ArtifactError(f"cannot write BPE merges file {out}: {e}") from e
    return out

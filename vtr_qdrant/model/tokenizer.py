"""CLIP byte-level BPE tokenizer without torch, id-for-id identical to open_clip's ``SimpleTokenizer``.

The query path must not import torch or open_clip, yet the ONNX text tower only gives the
embedding CLIP was trained with when it is fed exactly the ids open_clip would produce. This module
re-implements open_clip's default tokenizer (``clean="lower"``, no reduction mask) on numpy,
``regex`` and ``ftfy``:

1. clean: ``ftfy.fix_text``, HTML-unescape twice, strip, collapse whitespace, lowercase;
2. split with CLIP's pattern (special tokens, English contractions, letter runs, single digits,
   runs of other non-space characters), case-insensitive;
3. map each piece's UTF-8 bytes to printable unicode characters (GPT-2's reversible byte table);
4. apply the merges of the BPE file in rank order, the last symbol carrying ``</w>``;
5. look the symbols up in the vocabulary: 256 byte characters, the same with ``</w>``, one entry
   per merge, then ``<start_of_text>`` and ``<end_of_text>``.

Like open_clip, only the first ``48894`` merges of a file are used (the 49408-entry CLIP vocabulary);
smaller files (see :func:`vtr_qdrant.model.bpe.train_bpe_merges`) give smaller vocabularies with the same rules.

Known open_clip behaviours reproduced on purpose (parity matters more than taste here):

* The literal strings ``<start_of_text>`` / ``<end_of_text>`` in user text (any case, since text
  is lowercased) become the special ids.
* A merges file whose last line ends with a newline yields one empty vocabulary entry before the
  special tokens, shifting their ids by one (the 16e6 file is unaffected: it is sliced).
* Too-long texts are cut to ``context_length`` tokens and the last one is overwritten by
  ``<end_of_text>``.
"""

from __future__ import annotations

import gzip
import html
import os
import threading
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import ftfy
import numpy as np
import regex

from ..errors import ArtifactError, ConfigError, InvalidInputError

__all__ = [
    "DEFAULT_CONTEXT_LENGTH",
    "MAX_MERGES",
    "SOT_TOKEN",
    "EOT_TOKEN",
    "END_OF_WORD",
    "PIECE_PATTERN",
    "ClipTokenizer",
    "byte_to_unicode",
    "clean_text",
]

DEFAULT_CONTEXT_LENGTH = 77
#: open_clip keeps lines ``[1, 49152 - 256 - 2 + 1)`` of the merges file: 48894 merges, which with
#: 512 byte symbols and 2 special tokens makes CLIP's 49408-entry vocabulary.
MAX_MERGES = 49152 - 256 - 2
SOT_TOKEN = "<start_of_text>"
EOT_TOKEN = "<end_of_text>"
END_OF_WORD = "</w>"
_WORD_CACHE_SIZE = 50_000

# Pieces: contractions, runs of letters, single digits, runs of anything else but whitespace.
PIECE_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """Map every byte to a printable, non-whitespace unicode character (GPT-2/CLIP byte table).

    Printable Latin-1 bytes map to themselves; the other 68 bytes (controls, space, NBSP, soft
    hyphen...) map to ``chr(256 + n)`` in byte order, so the table is a bijection.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    # Insertion order (printable bytes first, then the remapped ones) is the base vocabulary order.
    return table


def clean_text(text: str) -> str:
    """open_clip's ``clean="lower"``: ftfy, double HTML unescape, whitespace collapse, lowercase."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).strip().lower()


class _Vocabulary:
    """Everything derived from one merges file (immutable once built)."""

    __slots__ = (
        "byte_chars",
        "char_bytes",
        "decoder",
        "encoder",
        "eot_id",
        "pattern",
        "ranks",
        "size",
        "sot_id",
    )

    def __init__(self, merges: list[tuple[str, ...]]) -> None:
        byte_chars = byte_to_unicode()
        base = list(byte_chars.values())
        entries = (
            base + [c + END_OF_WORD for c in base] + ["".join(m) for m in merges] + [SOT_TOKEN, EOT_TOKEN]
        )
        # Built like open_clip's dict(zip(...)): a duplicated string keeps its *last* id.
        self.encoder: dict[str, int] = {s: i for i, s in enumerate(entries)}
        self.decoder: dict[int, str] = {i: s for s, i in self.encoder.items()}
        self.ranks: dict[tuple[str, ...], int] = {m: r for r, m in enumerate(merges)}
        self.sot_id = self.encoder[SOT_TOKEN]
        self.eot_id = self.encoder[EOT_TOKEN]
        self.size = len(self.encoder)
        self.byte_chars = [byte_chars[b] for b in range(256)]
        self.char_bytes = {c: b for b, c in byte_chars.items()}
        specials = f"{SOT_TOKEN}|{EOT_TOKEN}|"
        self.pattern = regex.compile(specials + PIECE_PATTERN, regex.IGNORECASE)


def _read_merges(path: Path) -> list[tuple[str, ...]]:
    """Read the merge list of a gzip BPE file the way open_clip slices it."""
    try:
        with gzip.open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except FileNotFoundError as e:
        raise ArtifactError(
            f"BPE merges file not found: {path}; expected a gzip text file such as open_clip's "
            "bpe_simple_vocab_16e6.txt.gz (check the model bundle's tokenizer files)"
        ) from e
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise ArtifactError(
            f"BPE merges file {path} is unreadable or corrupt ({type(e).__name__}: {e}); expected "
            "gzip-compressed UTF-8 text with a header line followed by one 'left right' merge per line"
        ) from e
    lines = text.split("\n")
    if not text:
        raise ArtifactError(f"BPE merges file {path} is empty; expected a header line and merges")
    merges: list[tuple[str, ...]] = []
    for number, line in enumerate(lines[1 : MAX_MERGES + 1], start=2):
        merge = tuple(line.split())
        # Empty lines are tolerated exactly as open_clip does (they add an empty vocabulary entry).
        if len(merge) not in (0, 2):
            raise ArtifactError(
                f"BPE merges file {path} is corrupt at line {number}: expected two space-separated "
                f"symbols, got {line[:80]!r}"
            )
        merges.append(merge)
    return merges


class ClipTokenizer:
    """CLIP BPE tokenizer producing the same ids as ``open_clip.tokenizer.SimpleTokenizer``.

    The merges file is read on first use, so constructing one is cheap. Instances are thread-safe
    and picklable (the per-word cache is not pickled).

    Args:
        merges_file: gzip BPE merges file (``bpe_simple_vocab_16e6.txt.gz`` or one written by
            :func:`~vtr_qdrant.model.bpe.train_bpe_merges`).
        context_length: default row length of :meth:`tokenize` (CLIP uses 77); at least 2.

    Raises:
        ConfigError: ``context_length`` is not an integer >= 2.
    """

    def __init__(
        self, merges_file: str | os.PathLike[str], *, context_length: int = DEFAULT_CONTEXT_LENGTH
    ) -> None:
        self._path = Path(merges_file)
        self._context_length = _check_context_length(context_length)
        self._vocab: _Vocabulary | None = None
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int, ...]] = {}

    def __repr__(self) -> str:
        return f"ClipTokenizer({str(self._path)!r}, context_length={self._context_length})"

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self._path, "context_length": self._context_length}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], context_length=state["context_length"])  # type: ignore[misc]

    # -- vocabulary -------------------------------------------------------------------------

    def _load(self) -> _Vocabulary:
        vocab = self._vocab
        if vocab is None:
            with self._lock:
                if self._vocab is None:
                    self._vocab = _Vocabulary(_read_merges(self._path))
                vocab = self._vocab
        return vocab

    @property
    def merges_file(self) -> Path:
        """Path of the BPE merges file."""
        return self._path

    @property
    def vocab_size(self) -> int:
        """Number of distinct vocabulary entries (49408 for CLIP's file), as open_clip counts them."""
        return self._load().size

    @property
    def sot_token_id(self) -> int:
        """Id of ``<start_of_text>`` (49406 for CLIP's file)."""
        return self._load().sot_id

    @property
    def eot_token_id(self) -> int:
        """Id of ``<end_of_text>`` (49407 for CLIP's file); the text tower pools at its position."""
        return self._load().eot_id

    @property
    def context_length(self) -> int:
        """Default row length of :meth:`tokenize`."""
        return self._context_length

    # -- encoding ---------------------------------------------------------------------------

    def _bpe(self, vocab: _Vocabulary, piece: str) -> tuple[int, ...]:
        """Ids of one regex piece (uncached)."""
        chars = "".join([vocab.byte_chars[b] for b in piece.encode("utf-8")])
        word = [*chars[:-1], chars[-1] + END_OF_WORD]
        ranks = vocab.ranks
        while len(word) > 1:
            best_rank = -1
            best: tuple[str, str] | None = None
            for pair in pairwise(word):
                rank = ranks.get(pair)
                if rank is not None and (best is None or rank < best_rank):
                    best, best_rank = pair, rank
            if best is None:
                break
            first, second = best
            merged: list[str] = []
            i, n = 0, len(word)
            # Left-to-right, non-overlapping: "a a a" with merge (a, a) gives "aa a".
            while i < n:
                if i < n - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        encoder = vocab.encoder
        return tuple(encoder[symbol] for symbol in word)

    def _piece_ids(self, vocab: _Vocabulary, piece: str) -> tuple[int, ...]:
        ids = self._cache.get(piece)
        if ids is not None:
            return ids
        if piece == SOT_TOKEN:
            return (vocab.sot_id,)
        if piece == EOT_TOKEN:
            return (vocab.eot_id,)
        ids = self._bpe(vocab, piece)
        with self._lock:
            if len(self._cache) >= _WORD_CACHE_SIZE:
                # Bounded FIFO: drop the oldest entry; queries rarely need more than a few
                # thousand distinct words, batch ingestion of captions may stream millions.
                self._cache.pop(next(iter(self._cache)), None)
            self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """BPE ids of one text, without start/end tokens.

        Args:
            text: any string; it is cleaned (ftfy, HTML entities, whitespace, lowercase) first.

        Returns:
            list of ``int`` ids in ``[0, vocab_size)`` (possibly empty).

        Raises:
            InvalidInputError: ``text`` is not a ``str``.
            ArtifactError: the merges file is missing or corrupt (on first use).
        """
        if not isinstance(text, str):
            raise InvalidInputError(f"text must be a str, got {type(text).__name__}: {text!r:.80}")
        vocab = self._load()
        ids: list[int] = []
        for piece in vocab.pattern.findall(clean_text(text)):
            ids.extend(self._piece_ids(vocab, piece))
        return ids

    def tokenize(self, texts: str | Sequence[str], context_length: int | None = None) -> np.ndarray:
        """Token rows for the text tower: ``[sot] + ids + [eot]``, zero padded.

        A text longer than ``context_length - 2`` tokens is cut to ``context_length`` tokens whose
        last one is replaced by ``eot`` (open_clip's rule), so ``eot`` is always present and the
        argmax-based pooling of the text tower finds it.

        Args:
            texts: one string or a sequence of N strings.
            context_length: row length L; ``None`` uses :attr:`context_length`.

        Returns:
            ``(N, L) int64`` array (N = 1 for a single string).

        Raises:
            InvalidInputError: ``texts`` is not a string or a sequence of strings.
            ConfigError: ``context_length`` is not an integer >= 2.
        """
        length = self._context_length if context_length is None else _check_context_length(context_length)
        if isinstance(texts, str):
            batch: Sequence[str] = [texts]
        elif isinstance(texts, (bytes, bytearray)) or not isinstance(texts, (Sequence, np.ndarray)):
            raise InvalidInputError(f"texts must be a str or a sequence of str, got {type(texts).__name__}")
        else:
            batch = texts
        for index, text in enumerate(batch):
            if not isinstance(text, str):
                raise InvalidInputError(
                    f"texts[{index}] must be a str, got {type(text).__name__}: {text!r:.80}"
                )
        vocab = self._load()
        out = np.zeros((len(batch), length), dtype=np.int64)
        for row, text in enumerate(batch):
            ids = [vocab.sot_id, *self.encode(text), vocab.eot_id]
            if len(ids) > length:
                ids = ids[:length]
                ids[-1] = vocab.eot_id
            out[row, : len(ids)] = ids
        return out

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> np.ndarray:
        """Same as :meth:`tokenize` (open_clip tokenizers are callables)."""
        return self.tokenize(texts, context_length)

    def decode(self, ids: Iterable[int] | np.ndarray, *, skip_special_tokens: bool = False) -> str:
        """Text of a sequence of ids, as open_clip's ``decode`` writes it.

        Word ends (``</w>``) become spaces, so ``decode(encode(t))`` is the cleaned ``t`` with a
        space after every word and punctuation run; invalid UTF-8 becomes U+FFFD.

        Args:
            ids: 1-D ids (list or ``(L,)`` integer array), e.g. one row of :meth:`tokenize`.
            skip_special_tokens: drop ``sot``/``eot`` and everything after the first ``eot``
                (the zero padding of a :meth:`tokenize` row, which would otherwise decode as "!").

        Returns:
            the decoded string.

        Raises:
            InvalidInputError: ``ids`` is not 1-D or holds an id outside the vocabulary.
        """
        vocab = self._load()
        if isinstance(ids, np.ndarray):
            if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
                raise InvalidInputError(f"ids must be a 1-D integer array, got shape {ids.shape} {ids.dtype}")
            seq: list[Any] = ids.tolist()
        else:
            seq = list(ids)
        pieces: list[str] = []
        for position, token in enumerate(seq):
            if skip_special_tokens:
                if token == vocab.eot_id:
                    break
                if token == vocab.sot_id:
                    continue
            symbol = vocab.decoder.get(int(token)) if isinstance(token, (int, np.integer)) else None
            if symbol is None:
                raise InvalidInputError(
                    f"ids[{position}] = {token!r} is not a token id of {self._path.name} "
                    f"(valid ids: 0..{max(vocab.decoder)})"
                )
            pieces.append(symbol)
        # Special tokens and "</w>" are printable ASCII, so every character maps back to a byte.
        char_bytes = vocab.char_bytes
        data = bytes([char_bytes[c] for c in "".join(pieces)])
        return data.decode("utf-8", errors="replace").replace(END_OF_WORD, " ")


def _check_context_length(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
        raise ConfigError(
            f"context_length must be an integer >= 2 (room for <start_of_text> and <end_of_text>), "
            f"got {value!r}; CLIP models use 77"
        )
    return int(value)

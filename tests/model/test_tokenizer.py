"""Tests of the torch-free CLIP tokenizer.

Reference ids come from open_clip's ``SimpleTokenizer`` (parity tests, skipped without open_clip)
or are derived by hand from a tiny hand-written merges file (torch-free tests).
"""

from __future__ import annotations

import gzip
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vtr_qdrant.errors import ArtifactError, ConfigError, InvalidInputError
from vtr_qdrant.model.bpe import train_bpe_merges
from vtr_qdrant.model.tokenizer import MAX_MERGES, ClipTokenizer

CORPUS = [
    "a dog runs on the beach",
    "A man is playing a guitar on stage.",
    "Hello, World!!! ... ?!? (quoted) [brackets] {braces} #hashtag @user",
    "123 4.5% 1,000,000 3rd 2024-01-31 12:30pm",
    "café naïve résumé Ångström São Paulo Zürich",
    "東京タワーの夜景 and 北京 你好世界 한국어",
    "🎉🔥 party time 👍🏽 👨‍👩‍👧 ❤️",
    "fish &amp; chips &lt;b&gt;bold&lt;/b&gt; &amp;amp; &quot;hi&quot; &#39;x&#39;",
    "Ã©tÃ© mojibake â€œquotesâ€\x9d and Ã¼ber",
    "  lots   of\t\twhitespace\n\nhere  \r\n",
    "",
    "   ",
    "it's they're I'LL we'd you've I'm she'S",
    "<start_of_text> injected <END_OF_TEXT> specials",
    "ǅemal İstanbul straße ﬁne ΣΊΣΥΦΟΣ",
    "\u00ad soft\u200bhyphen \x00null \x07bell",
    "مرحبا بالعالم עברית",
    "a-b_c.d/e\\f|g~h`i^j",
    "the quick brown fox jumps over the lazy dog " * 3,
    "x" * 300,
    " ".join(f"word{i}" for i in range(120)),
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
]


@pytest.fixture(scope="module")
def open_clip_tokenizer_module() -> Any:
    return pytest.importorskip("open_clip.tokenizer")


@pytest.fixture(scope="module")
def default_bpe(open_clip_tokenizer_module: Any) -> str:
    return str(open_clip_tokenizer_module.default_bpe())


@pytest.fixture(scope="module")
def small_bpe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bpe") / "small.txt.gz"
    return train_bpe_merges(CORPUS * 2 + ["a cat sits on a red mat", "two dogs play in the snow"], 400, out)


def _write_merges(path: Path, text: str) -> Path:
    with gzip.open(path, "wb") as f:
        f.write(text.encode("utf-8"))
    return path


@pytest.fixture()
def tiny_bpe(tmp_path: Path) -> Path:
    # Vocabulary: 512 byte symbols, then "do" = 512, "dog</w>" = 513, then sot = 514, eot = 515.
    return _write_merges(tmp_path / "tiny.txt.gz", "#version: 0.2\nd o\ndo g</w>")


# --- parity with open_clip ----------------------------------------------------------------


@pytest.mark.parametrize("which", ["default", "small"])
def test_encode_matches_open_clip(
    which: str, open_clip_tokenizer_module: Any, default_bpe: str, small_bpe: Path
) -> None:
    path = default_bpe if which == "default" else str(small_bpe)
    ref = open_clip_tokenizer_module.SimpleTokenizer(bpe_path=path)
    ours = ClipTokenizer(path)
    assert ours.vocab_size == ref.vocab_size
    assert ours.sot_token_id == ref.sot_token_id
    assert ours.eot_token_id == ref.eot_token_id
    for text in CORPUS:
        assert ours.encode(text) == ref.encode(text), text


@pytest.mark.parametrize("which", ["default", "small"])
@pytest.mark.parametrize("context_length", [77, 16, 5, 2])
def test_tokenize_matches_open_clip(
    which: str, context_length: int, open_clip_tokenizer_module: Any, default_bpe: str, small_bpe: Path
) -> None:
    path = default_bpe if which == "default" else str(small_bpe)
    ref = open_clip_tokenizer_module.SimpleTokenizer(bpe_path=path)
    expected = ref(CORPUS, context_length=context_length).numpy()
    got = ClipTokenizer(path, context_length=context_length).tokenize(CORPUS)
    assert got.dtype == np.int64
    assert got.shape == expected.shape == (len(CORPUS), context_length)
    np.testing.assert_array_equal(got, expected)


def test_default_vocab_facts_and_module_tokenize(open_clip_tokenizer_module: Any, default_bpe: str) -> None:
    ours = ClipTokenizer(default_bpe)
    assert (ours.vocab_size, ours.sot_token_id, ours.eot_token_id) == (49408, 49406, 49407)
    import open_clip

    for text in ["a photo of a cat", CORPUS[20]]:
        np.testing.assert_array_equal(ours.tokenize(text), open_clip.tokenize(text).numpy())


def test_truncation_keeps_eot_last(open_clip_tokenizer_module: Any, default_bpe: str) -> None:
    long_text = CORPUS[20]
    ours = ClipTokenizer(default_bpe)
    ref = open_clip_tokenizer_module.SimpleTokenizer(bpe_path=default_bpe)
    for length in (77, 16):
        row = ours.tokenize(long_text, length)[0]
        assert row[0] == ours.sot_token_id and row[-1] == ours.eot_token_id
        assert np.count_nonzero(row == ours.eot_token_id) == 1
        np.testing.assert_array_equal(row, ref(long_text, context_length=length).numpy()[0])


def test_decode_matches_open_clip(open_clip_tokenizer_module: Any, default_bpe: str) -> None:
    ref = open_clip_tokenizer_module.SimpleTokenizer(bpe_path=default_bpe)
    ours = ClipTokenizer(default_bpe)
    for text in CORPUS:
        ids = ref.encode(text)
        assert ours.decode(ids) == ref.decode(ids), text
    row = ref([CORPUS[1]]).numpy()[0]  # sot, ids, eot, zero padding
    assert ours.decode(row) == ref.decode(row)


def test_merges_file_with_trailing_newline_matches_open_clip(
    open_clip_tokenizer_module: Any, tmp_path: Path
) -> None:
    # open_clip turns the empty last line into an empty vocabulary entry: specials shift by one.
    path = _write_merges(tmp_path / "nl.txt.gz", "#version: 0.2\nd o\ndo g</w>\nc a\nca t</w>\n")
    ref = open_clip_tokenizer_module.SimpleTokenizer(bpe_path=str(path))
    ours = ClipTokenizer(path)
    assert (ours.vocab_size, ours.sot_token_id, ours.eot_token_id) == (519, 517, 518)
    assert (ref.vocab_size, ref.sot_token_id, ref.eot_token_id) == (519, 517, 518)
    texts = ["dog cat dogs cats", "hot dog", ""]
    np.testing.assert_array_equal(ours.tokenize(texts, 12), ref(texts, context_length=12).numpy())


def test_repeated_merges_match_open_clip(open_clip_tokenizer_module: Any, tmp_path: Path) -> None:
    # A repeated pair keeps its last rank; "a a a" merges left to right.
    path = _write_merges(tmp_path / "rep.txt.gz", "#h\na a\naa a</w>\nb c\na a\nbc a")
    ref = open_clip_tokenizer_module.SimpleTokenizer(bpe_path=str(path))
    ours = ClipTokenizer(path)
    for text in ["aaa", "aaaa", "bcaaa", "abca", "aaaaaaa"]:
        assert ours.encode(text) == ref.encode(text), text


# --- torch-free behaviour -----------------------------------------------------------------


def test_hand_derived_ids(tiny_bpe: Path) -> None:
    tok = ClipTokenizer(tiny_bpe)
    assert (tok.vocab_size, tok.sot_token_id, tok.eot_token_id) == (516, 514, 515)
    g = ord("g") - ord("!")  # printable bytes come first in the byte table
    s_end = 256 + ord("s") - ord("!")  # then the same symbols with "</w>"
    assert tok.encode("dog") == [513]
    assert tok.encode("DOG  dogs") == [513, 512, g, s_end]
    assert tok.encode("&amp;") == [256 + ord("&") - ord("!")]
    assert tok.encode("<end_of_text>") == [515]


def test_tokenize_shape_dtype_padding(tiny_bpe: Path) -> None:
    tok = ClipTokenizer(tiny_bpe, context_length=8)
    out = tok.tokenize(["dog", "", "dog dog dog dog dog dog dog dog"])
    assert out.shape == (3, 8) and out.dtype == np.int64
    np.testing.assert_array_equal(out[0], [514, 513, 515, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(out[1], [514, 515, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(out[2], [514] + [513] * 6 + [515])
    assert tok.tokenize("dog").shape == (1, 8)
    assert tok.tokenize(("dog",), context_length=3).tolist() == [[514, 513, 515]]
    assert tok.tokenize([]).shape == (0, 8)
    assert tok(np.array(["dog", "do"])).shape == (2, 8)


def test_decode_round_trip(small_bpe: Path) -> None:
    tok = ClipTokenizer(small_bpe)
    assert tok.decode(tok.encode("A dog runs on the BEACH!")) == "a dog runs on the beach ! "
    assert tok.decode(tok.encode("café 東京 🎉")) == "café 東京 🎉 "
    row = tok.tokenize("a dog runs")[0]
    assert tok.decode(row, skip_special_tokens=True) == "a dog runs "
    assert tok.decode(row).startswith("<start_of_text>a dog runs <end_of_text>!")


def test_errors(tmp_path: Path, tiny_bpe: Path) -> None:
    missing = ClipTokenizer(tmp_path / "nope.txt.gz")  # lazy: no error yet
    with pytest.raises(ArtifactError, match="nope.txt.gz"):
        missing.encode("x")
    plain = tmp_path / "plain.txt.gz"
    plain.write_text("#version\na b\n")
    with pytest.raises(ArtifactError, match="plain.txt.gz.*corrupt"):
        _ = ClipTokenizer(plain).vocab_size
    bad_line = _write_merges(tmp_path / "bad.txt.gz", "#v\na b\na b c")
    with pytest.raises(ArtifactError, match="line 3"):
        ClipTokenizer(bad_line).tokenize("x")
    with pytest.raises(ArtifactError, match="empty"):
        ClipTokenizer(_write_merges(tmp_path / "empty.txt.gz", "")).encode("x")

    tok = ClipTokenizer(tiny_bpe)
    with pytest.raises(InvalidInputError, match="must be a str, got int"):
        tok.encode(3)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"texts\[1\] must be a str, got NoneType"):
        tok.tokenize(["ok", None])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="got bytes"):
        tok.tokenize(b"dog")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="not a token id"):
        tok.decode([99999])
    with pytest.raises(InvalidInputError, match="1-D"):
        tok.decode(np.zeros((2, 3), dtype=np.int64))
    for bad in (1, 0, -5, True, 7.0):
        with pytest.raises(ConfigError, match="context_length must be an integer >= 2"):
            ClipTokenizer(tiny_bpe, context_length=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="context_length"):
            tok.tokenize("dog", context_length=bad)  # type: ignore[arg-type]
    for bad_merges in (-1, MAX_MERGES + 1):
        with pytest.raises(ConfigError, match="num_merges"):
            train_bpe_merges(["dog"], bad_merges, tmp_path / "m.txt.gz")
    with pytest.raises(InvalidInputError, match="not a single str"):
        train_bpe_merges("dog", 3, tmp_path / "m.txt.gz")
    with pytest.raises(InvalidInputError, match=r"corpus\[1\]"):
        train_bpe_merges(["dog", 5], 3, tmp_path / "m.txt.gz")  # type: ignore[list-item]
    with pytest.raises(ArtifactError, match="cannot write"):
        train_bpe_merges(["dog"], 3, tmp_path / "no_such_dir" / "m.txt.gz")


def test_train_bpe_merges_deterministic_and_valid(tmp_path: Path) -> None:
    corpus = CORPUS + ["a cat sits on a red mat"] * 3
    a = train_bpe_merges(corpus, 200, tmp_path / "a.txt.gz")
    b = train_bpe_merges(list(reversed(corpus)), 200, tmp_path / "b.txt.gz")
    assert a.read_bytes() == b.read_bytes()  # order-independent and gzip header without mtime/name
    lines = gzip.decompress(a.read_bytes()).decode("utf-8").split("\n")
    assert lines[0].startswith("#version")
    merges = [tuple(line.split(" ")) for line in lines[1:]]
    assert len(merges) == 200 and all(len(m) == 2 and all(m) for m in merges)
    joined = ["".join(m) for m in merges]
    assert len(set(joined)) == len(joined)
    tok = ClipTokenizer(a)
    assert (tok.vocab_size, tok.sot_token_id, tok.eot_token_id) == (514 + 200, 712, 713)
    # Frequent words of the corpus end up as single tokens; unseen ones stay split.
    for word in ("the", "cat", "dog", "a"):
        assert len(tok.encode(word)) == 1, word
    assert len(tok.encode("zyzzyva")) > 1
    # Training stops when nothing is left to merge.
    few = train_bpe_merges(["ab ab"], 50, tmp_path / "few.txt.gz")
    assert gzip.decompress(few.read_bytes()).decode("utf-8").split("\n")[1:] == ["a b</w>"]


def test_pickle_and_cache(tiny_bpe: Path) -> None:
    tok = ClipTokenizer(tiny_bpe, context_length=9)
    before = tok.tokenize("dog dogs")
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.context_length == 9
    np.testing.assert_array_equal(clone.tokenize("dog dogs"), before)
    np.testing.assert_array_equal(tok.tokenize("dog dogs"), before)  # cached path, same ids


def test_import_is_torch_free(tiny_bpe: Path) -> None:
    code = (
        "import sys; from vtr_qdrant.model.tokenizer import ClipTokenizer; "
        f"ClipTokenizer({str(tiny_bpe)!r}).tokenize('dog'); "
        "bad = [m for m in ('torch', 'open_clip') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr

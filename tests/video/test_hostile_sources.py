"""Sources that are not regular files: classified from their stat, never opened, never dropped.

Each hostile entry (FIFO, a link to /dev/zero, a link loop, a broken link, a folder named like a
video, a name that is not UTF-8) must come out of :func:`expand_sources` and be refused by
:func:`inspect_local_source` with its own reason, in well under a second.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest

from vtr_qdrant.errors import UnsafeInputError, VideoDecodeError
from vtr_qdrant.store.points import Key, make_points, source_of
from vtr_qdrant.video.source import (
    default_video_id,
    display_name,
    expand_sources,
    file_content_hash,
    inspect_local_source,
    open_regular,
)

NON_UTF8 = b"caf\xe9-\xff.mp4"  # Latin-1 bytes: not UTF-8


def hostile_folder(root: Path) -> dict[str, str]:
    """A folder of hostile entries (plus one good file); name -> expected reason (None: fine)."""
    root.mkdir()
    (root / "good.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    os.mkfifo(root / "pipe.mp4")
    os.symlink("/dev/zero", root / "zero.mp4")
    os.symlink("loop-b.mp4", root / "loop-a.mp4")
    os.symlink("loop-a.mp4", root / "loop-b.mp4")
    os.symlink("missing-target.mp4", root / "broken.mp4")
    (root / "folder.mp4").mkdir()  # a folder named like a video: walked into, holds nothing
    (root / "notes.txt").write_text("not a video")
    (root / "sub").mkdir()
    os.mkfifo(root / "sub" / "deep.mkv")
    with open(os.path.join(os.fsencode(root), NON_UTF8), "wb") as f:
        f.write(b"bytes")
    return {
        "good.mp4": "",
        "pipe.mp4": "not_a_regular_file",
        "zero.mp4": "not_a_regular_file",
        "loop-a.mp4": "symlink_loop",
        "loop-b.mp4": "symlink_loop",
        "broken.mp4": "broken_symlink",
        "sub/deep.mkv": "not_a_regular_file",
        os.fsdecode(NON_UTF8): "",
    }


def _reason(path: str) -> str:
    try:
        inspect_local_source(path)
    except VideoDecodeError as e:
        return e.reason
    return ""


@pytest.mark.timeout(30)
def test_folder_expansion_keeps_every_hostile_entry(tmp_path: Path) -> None:
    expected = hostile_folder(tmp_path / "in")
    t0 = time.monotonic()
    found = expand_sources([tmp_path / "in"])
    got = {os.path.relpath(p, tmp_path / "in"): _reason(p) for p in found}
    assert got == expected
    assert time.monotonic() - t0 < 5


@pytest.mark.timeout(30)
def test_explicit_sources_are_kept_and_classified(tmp_path: Path) -> None:
    hostile_folder(tmp_path / "in")
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    explicit = [str(tmp_path / "in" / n) for n in ("folder.mp4", "pipe.mp4", "loop-a.mp4")] + [str(empty), str(tmp_path / "nope.mp4")]
    got = expand_sources(explicit)
    assert got == explicit  # a folder with no video is kept, so it is reported
    assert [_reason(p) for p in got] == ["is_a_directory", "not_a_regular_file", "symlink_loop", "is_a_directory", "not_found"]


@pytest.mark.timeout(30)
def test_hashing_and_opening_never_block(tmp_path: Path) -> None:
    hostile_folder(tmp_path / "in")
    for name, reason in (("pipe.mp4", "not_a_regular_file"), ("zero.mp4", "not_a_regular_file"), ("loop-a.mp4", "symlink_loop")):
        with pytest.raises(VideoDecodeError) as ei:
            file_content_hash(tmp_path / "in" / name)
        assert ei.value.reason == reason
        assert name in str(ei.value)
        with pytest.raises(UnsafeInputError if reason == "not_a_regular_file" else VideoDecodeError):
            open_regular(tmp_path / "in" / name)
    assert len(file_content_hash(tmp_path / "in" / "good.mp4")) == 32


def test_unreadable_file_says_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "secret.mp4"
    p.write_bytes(b"x")

    def denied(*args: object, **kwargs: object) -> None:  # root reads anything: simulate the refusal
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(VideoDecodeError) as ei:
        open_regular(p)
    assert ei.value.reason == "permission_denied"
    monkeypatch.setattr(os, "stat", denied)
    with pytest.raises(VideoDecodeError) as ei:
        inspect_local_source(p)
    assert ei.value.reason == "permission_denied" and "secret.mp4" in str(ei.value)


def test_default_ids_and_display_names(tmp_path: Path) -> None:
    hostile_folder(tmp_path / "in")
    raw = os.path.join(os.fsdecode(tmp_path / "in"), os.fsdecode(NON_UTF8))
    shown = display_name(raw)
    assert shown.endswith("caf\\xe9-\\xff.mp4") and shown.encode("utf-8")
    assert display_name("plain é.mp4") == "plain é.mp4"
    assert display_name("\ud800x") == "\\ud800x"  # a surrogate that is not an escaped byte
    assert default_video_id(raw) == display_name(os.path.realpath(raw))
    loop = str(tmp_path / "in" / "loop-a.mp4")
    assert default_video_id(loop)  # no exception on a loop
    assert default_video_id("file://" + str(tmp_path / "in" / "good.mp4")) == str((tmp_path / "in" / "good.mp4").resolve())


def test_non_utf8_names_are_stored_losslessly(tmp_path: Path) -> None:
    import numpy as np

    raw = os.path.join(os.fsdecode(tmp_path), os.fsdecode(NON_UTF8))
    frames = np.eye(2, 4, dtype=np.float32)
    pts = make_points("v", frames, np.arange(2.0), model_fingerprint="", uri=raw)
    p = pts[0].payload
    assert p[Key.URI] == display_name(raw)
    assert base64.b64decode(p[Key.URI_BYTES]) == os.fsencode(raw)
    assert source_of(p) == raw and os.fsencode(source_of(p) or "").endswith(NON_UTF8)
    plain = make_points("w", frames, np.arange(2.0), model_fingerprint="", uri="/videos/a.mp4")[0].payload
    assert Key.URI_BYTES not in plain and source_of(plain) == "/videos/a.mp4"

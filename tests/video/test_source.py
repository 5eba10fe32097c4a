"""Bad and unsafe sources: each fails fast with a reason and the file's name, on both engines.

Expected values come from how the files were generated (a colour per second, known frame
times), never from our own decoder's output.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("ffmpeg")
pytest.importorskip("imageio_ffmpeg")

import video_factory as vf  # noqa: E402
from video_checks import COLORS4, color_at, expect_failure  # noqa: E402

from vtr_qdrant.errors import (  # noqa: E402
    UnsafeInputError,
    VideoDecodeError,
)
from vtr_qdrant.video.decode import SampledFrames, sample_frames  # noqa: E402

pytestmark = pytest.mark.video


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.timeout(60)
def test_zero_byte_file(tmp_path: Path, engine: str) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    expect_failure(VideoDecodeError, {"empty_file"}, tmp_path / "empty.mp4", engine=engine)


@pytest.mark.timeout(60)
def test_truncated_mp4(tmp_path: Path, engine: str) -> None:
    expect_failure(VideoDecodeError, {"truncated"}, vf.truncated_mp4(tmp_path / "trunc.mp4"), engine=engine)


@pytest.mark.timeout(60)
def test_random_bytes(tmp_path: Path, engine: str) -> None:
    e = expect_failure(VideoDecodeError, {"invalid_data", "no_video_stream", "decode_failed", "format_not_allowed"},
                vf.random_bytes(tmp_path / "random.mp4"), engine=engine)
    assert "random.mp4" in e.uri


@pytest.mark.timeout(60)
def test_audio_only(tmp_path: Path, engine: str) -> None:
    e = expect_failure(VideoDecodeError, {"no_video_stream"}, vf.audio_only(tmp_path / "audio.mp4"), engine=engine)
    assert "audio" in str(e)


@pytest.mark.timeout(60)
def test_image_renamed_mp4(tmp_path: Path, engine: str) -> None:
    e = expect_failure(VideoDecodeError, {"not_a_video"}, vf.image_as_mp4(tmp_path / "image.mp4"), engine=engine)
    assert not isinstance(e, UnsafeInputError)


@pytest.mark.timeout(60)
def test_zero_frame_video(tmp_path: Path, engine: str) -> None:
    expect_failure(VideoDecodeError, {"no_frames", "no_video_stream"}, vf.zero_frame_video(tmp_path / "zero.mp4"), engine=engine)


@pytest.mark.timeout(60)
def test_garbled_codec_data(tmp_path: Path, engine: str) -> None:
    expect_failure(VideoDecodeError, {"decode_failed", "invalid_data"}, vf.garbled_mp4(tmp_path / "garbled.mp4"), engine=engine)


@pytest.mark.timeout(60)
def test_not_found_and_directory(tmp_path: Path, engine: str) -> None:
    expect_failure(VideoDecodeError, {"not_found"}, tmp_path / "missing.mp4", engine=engine)
    expect_failure(VideoDecodeError, {"is_a_directory"}, tmp_path, engine=engine)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("url", ["http://127.0.0.1:9/v.mp4", "https://example.com/v.mp4", "ftp://h/v.mp4",
                                 "concat:/etc/passwd|/etc/passwd", "subfile:,start,0,end,0,:/etc/passwd",
                                 "data:video/mp4;base64,AAAA"])
def test_disallowed_schemes(url: str, engine: str) -> None:
    expect_failure(UnsafeInputError, {"scheme_not_allowed"}, url, engine=engine)


@pytest.mark.timeout(60)
def test_file_url_is_a_local_file(vids: dict[str, Path], sf: Callable[..., SampledFrames]) -> None:
    s = sf(f"file://{vids['colors']}", num_frames=1, size=8)
    assert color_at(s, 0) == "blue"


@pytest.mark.timeout(60)
def test_hls_playlist_is_refused(tmp_path: Path, vids: dict[str, Path], engine: str) -> None:
    expect_failure(UnsafeInputError, {"playlist"}, vf.hls_playlist(tmp_path / "list.m3u8", "file:///etc/passwd"), engine=engine)
    # The same bytes under a video name.
    expect_failure(UnsafeInputError, {"playlist"}, vf.hls_playlist(tmp_path / "list.mp4", "file:///etc/passwd"), engine=engine)


@pytest.mark.timeout(60)
def test_ffconcat_playlist_is_refused_unless_allowed(tmp_path: Path, vids: dict[str, Path]) -> None:
    target = tmp_path / "target.mp4"
    target.write_bytes(vids["colors"].read_bytes())
    for name in ("list.ffconcat", "concat.mp4"):
        p = vf.ffconcat_playlist(tmp_path / name, "target.mp4")
        expect_failure(UnsafeInputError, {"playlist"}, p)
        # Trusted playlist explicitly allowed: it is read (proves the refusal above mattered).
        s = sample_frames(p, num_frames=4, size=8, allow_playlists=True)
        assert [color_at(s, i) for i in range(4)] == list(COLORS4)


@pytest.mark.timeout(60)
def test_playlist_behind_sniffing_is_refused_by_ffmpeg_whitelist(tmp_path: Path, engine: str) -> None:
    # Leading junk defeats our byte sniffing; ffmpeg's demuxer whitelist still refuses it.
    p = tmp_path / "sneaky.m3u8"
    p.write_bytes(b"\n" * 5000 + b"#EXTM3U\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n")
    expect_failure(VideoDecodeError, {"playlist", "invalid_data", "format_not_allowed"}, p, engine=engine)
    p2 = tmp_path / "sneaky2.ffconcat"
    p2.write_bytes(b"\n" * 5000 + b"ffconcat version 1.0\nfile '/etc/passwd'\n")
    expect_failure(VideoDecodeError, {"playlist", "invalid_data", "format_not_allowed"}, p2, engine=engine)


@pytest.mark.timeout(60)
def test_fifo_is_refused_without_blocking(tmp_path: Path, engine: str) -> None:
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    expect_failure(UnsafeInputError, {"not_a_regular_file"}, fifo, engine=engine)

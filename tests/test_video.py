"""Decoding and frame sampling (vtr_qdrant.video) on videos generated with ffmpeg.

Expected values come from how the files were generated (a colour per second, known frame
times), never from our own decoder's output.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ffmpeg")
pytest.importorskip("imageio_ffmpeg")

import video_factory as vf  # noqa: E402

from vtr_qdrant.errors import (  # noqa: E402
    ConfigError,
    DecodeTimeoutError,
    MissingDependencyError,
    UnsafeInputError,
    VideoDecodeError,
)
from vtr_qdrant.video import ffmpeg_bin  # noqa: E402
from vtr_qdrant.video.decode import SampledFrames, probe, sample_frames, segment_windows  # noqa: E402

pytestmark = pytest.mark.video

COLORS4 = ("red", "green", "blue", "white")
HAVE_AV = importlib.util.find_spec("av") is not None
needs_av = pytest.mark.skipif(not HAVE_AV, reason="PyAV (av) is not installed")
ENGINES = ["ffmpeg", pytest.param("pyav", marks=needs_av)]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs once per decoding engine."""
    return str(request.param)


@pytest.fixture
def sf(engine: str) -> Callable[..., SampledFrames]:
    """``sample_frames`` bound to the engine under test."""
    return functools.partial(sample_frames, engine=engine)


def color_at(frames: SampledFrames, i: int) -> str:
    return vf.nearest_color(frames.images[i].reshape(-1, 3).mean(axis=0))


@pytest.fixture(scope="module")
def vids(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every test video, generated once for the module."""
    d = tmp_path_factory.mktemp("videos")
    out: dict[str, Path] = {}
    # 4 s, one colour per second, 25 fps, keyframe every 12 frames (0.48 s), B-frames.
    out["colors"] = vf.color_video(d / "colors.mp4", COLORS4, gop=12)
    # Same content with one keyframe only: fast mode has nothing to choose from.
    out["colors_1gop"] = vf.color_video(d / "colors_1gop.mp4", COLORS4, gop=250)
    out["vfr"], _, _ = vf.vfr_video(d / "vfr.mp4")
    out["rot90"] = vf.rotated_video(d / "rot90.mp4", 90)
    out["rot270"] = vf.rotated_video(d / "rot270.mp4", 270)
    out["rot0"] = vf.rotated_video(d / "rot0.mp4", 0)
    out["single"] = vf.single_frame_video(d / "single.mp4")
    return out


# ------------------------------------------------------------------------------------- basics


def test_import_does_not_load_decoders() -> None:
    code = "import vtr_qdrant, vtr_qdrant.video, sys; print(sorted(m for m in ('ffmpeg', 'imageio_ffmpeg', 'av') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_resolve_ffmpeg_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = ffmpeg_bin.resolve_ffmpeg()
    assert os.access(default, os.X_OK)
    monkeypatch.setenv(ffmpeg_bin.FFMPEG_ENV_VAR, default)
    assert ffmpeg_bin.resolve_ffmpeg() == default
    monkeypatch.setenv(ffmpeg_bin.FFMPEG_ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(MissingDependencyError, match="VTR_QDRANT_FFMPEG"):
        ffmpeg_bin.resolve_ffmpeg()
    # The explicit argument wins over the environment.
    assert ffmpeg_bin.resolve_ffmpeg(default) == default
    with pytest.raises(MissingDependencyError, match=r"pip install 'vtr-qdrant\[video\]'"):
        ffmpeg_bin.resolve_ffmpeg(str(tmp_path / "missing-ffmpeg"))


@pytest.mark.timeout(60)
def test_probe(vids: dict[str, Path]) -> None:
    info = probe(vids["colors"])
    assert info.num_frames == 100
    assert info.duration == pytest.approx(4.0)
    assert info.fps == pytest.approx(25.0)
    assert (info.width, info.height, info.rotation) == (64, 48, 0)
    np.testing.assert_allclose(info.frame_times, np.arange(100) / 25, atol=1e-6)
    np.testing.assert_allclose(info.keyframe_times, np.arange(0, 100, 12) / 25, atol=1e-6)


@pytest.mark.parametrize("bad", [dict(), dict(num_frames=4, fps=1.0), dict(num_frames=0), dict(fps=-1.0),
                                 dict(num_frames=4, mode="slow"), dict(num_frames=4, size=0),
                                 dict(num_frames=8, max_frames=4)])
def test_bad_arguments(vids: dict[str, Path], bad: dict, sf: Callable[..., SampledFrames]) -> None:
    with pytest.raises(ConfigError):
        sf(vids["colors"], **bad)


# ------------------------------------------------------------------------------- exact mode


@pytest.mark.timeout(60)
def test_exact_num_frames_xpool_positions(vids: dict[str, Path], sf: Callable[..., SampledFrames]) -> None:
    s = sf(vids["colors"], num_frames=8, size=16)
    assert s.images.shape == (8, 16, 16, 3) and s.images.dtype == np.uint8
    assert s.timestamps.dtype == np.float64
    # Windows of 0.5 s, middles at 0.25, 0.75, ...; the frame shown then starts at or before it.
    expected = np.floor((np.arange(8) * 0.5 + 0.25) * 25) / 25
    np.testing.assert_allclose(s.timestamps, expected, atol=1e-6)
    assert [color_at(s, i) for i in range(8)] == [c for c in COLORS4 for _ in range(2)]
    assert s.padded == 0 and s.mode == "exact"
    assert (s.width, s.height, s.rotation) == (64, 48, 0)
    assert s.duration == pytest.approx(4.0)


@pytest.mark.timeout(60)
def test_exact_fps_sampling_frame_at_1_5s(vids: dict[str, Path], sf: Callable[..., SampledFrames]) -> None:
    s = sf(vids["colors"], fps=1.0, size=8)
    np.testing.assert_allclose(s.timestamps, [0.48, 1.48, 2.48, 3.48], atol=1e-6)
    assert [color_at(s, i) for i in range(4)] == list(COLORS4)
    s2 = sf(vids["colors"], fps=4.0, size=8)
    assert len(s2.timestamps) == 16
    assert color_at(s2, 5) == "green"  # window [1.25, 1.5) -> t = 1.375
    # The frame displayed at t=1.5 s is green; the one at t=1.0 s (exactly) is green too.
    s3 = sf(vids["colors"], fps=2.0, size=8)
    np.testing.assert_allclose(s3.timestamps[:4], [0.24, 0.72, 1.24, 1.72], atol=1e-6)


@pytest.mark.timeout(60)
def test_exact_frame_boundaries_with_long_gop(vids: dict[str, Path], sf: Callable[..., SampledFrames]) -> None:
    # One keyframe for 100 frames: every target needs forward decoding from frame 0.
    s = sf(vids["colors_1gop"], num_frames=4, size=8)
    np.testing.assert_allclose(s.timestamps, [0.48, 1.48, 2.48, 3.48], atol=1e-6)
    assert [color_at(s, i) for i in range(4)] == list(COLORS4)


@pytest.mark.timeout(60)
def test_single_frame_video_is_padded(vids: dict[str, Path], sf: Callable[..., SampledFrames]) -> None:
    s = sf(vids["single"], num_frames=12, size=8)
    assert s.images.shape == (12, 8, 8, 3)
    assert s.padded == 11
    np.testing.assert_allclose(s.timestamps, 0.0)
    assert color_at(s, 0) == "magenta"
    assert np.all(s.images == s.images[0])


@pytest.mark.timeout(60)
def test_short_video_fewer_frames_than_asked(tmp_path: Path, sf: Callable[..., SampledFrames]) -> None:
    p = vf.color_video(tmp_path / "short.mp4", ("red", "blue"), seconds_per_color=0.2, fps=10)  # 4 frames
    s = sf(p, num_frames=8, size=8)
    assert s.images.shape[0] == 8
    assert s.padded == 4
    assert len(set(np.round(s.timestamps, 6))) == 4
    assert [color_at(s, i) for i in range(8)] == ["red"] * 4 + ["blue"] * 4


@pytest.mark.timeout(60)
def test_vfr_true_timestamps(vids: dict[str, Path], sf: Callable[..., SampledFrames]) -> None:
    info = probe(vids["vfr"])
    _, times, names = vf.vfr_video(vids["vfr"].with_name("vfr2.mp4"))
    np.testing.assert_allclose(info.frame_times, times, atol=1e-3)
    s = sf(vids["vfr"], fps=4.0, size=8)
    # The muxer stores the last frame with a short duration, so the file lasts 2.5 s + that.
    assert 2.5 < s.duration <= 3.0
    n = int(np.ceil(s.duration * 4 - 0.5))
    assert len(s.timestamps) == n
    # Targets 0.125, 0.375, ... ; expected = last generated frame time <= target.
    targets = (np.arange(n) + 0.5) / 4
    idx = np.searchsorted(times, targets, side="right") - 1
    np.testing.assert_allclose(s.timestamps, times[idx], atol=1e-3)
    assert [color_at(s, i) for i in range(n)] == [names[i] for i in idx]
    assert "blue" in [color_at(s, i) for i in range(n)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name,left,right", [("rot90", "red", "blue"), ("rot270", "blue", "red")])
def test_rotation_is_applied(vids: dict[str, Path], name: str, left: str, right: str, sf: Callable[..., SampledFrames]) -> None:
    s = sf(vids[name], num_frames=2, size=32)
    assert (s.width, s.height) == (32, 64)
    assert s.rotation == (90 if name == "rot90" else 270)
    img = s.images[0]
    assert vf.nearest_color(img[:, :8].reshape(-1, 3).mean(0)) == left
    assert vf.nearest_color(img[:, -8:].reshape(-1, 3).mean(0)) == right
    # Unrotated: top red, bottom blue.
    r0 = sf(vids["rot0"], num_frames=1, size=32).images[0]
    assert vf.nearest_color(r0[:8].reshape(-1, 3).mean(0)) == "red"
    assert vf.nearest_color(r0[-8:].reshape(-1, 3).mean(0)) == "blue"


@pytest.mark.timeout(60)
def test_clip_resize_short_side_and_centre_crop(tmp_path: Path, sf: Callable[..., SampledFrames]) -> None:
    # 96x32: after short side -> 32 the picture is 96 wide; the centre crop keeps the middle third.
    p = tmp_path / "thirds.mp4"
    vf.ffmpeg("-f", "lavfi", "-i", "color=red:s=32x32:d=1[a];color=green:s=32x32:d=1[b];"
              "color=blue:s=32x32:d=1[c];[a][b][c]hstack=3", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(p))
    s = sf(p, num_frames=1, size=16)
    assert s.images.shape == (1, 16, 16, 3)
    assert vf.nearest_color(s.images[0, :, 2:14].reshape(-1, 3).mean(0)) == "green"


# -------------------------------------------------------------------------------- fast mode


@pytest.mark.timeout(60)
def test_fast_mode_returns_true_keyframe_timestamps(vids: dict[str, Path], sf: Callable[..., SampledFrames]) -> None:
    s = sf(vids["colors"], num_frames=4, size=8, mode="fast")
    keys = np.arange(0, 100, 12) / 25
    # Each timestamp is a real keyframe, inside its own 1 s window, all distinct.
    assert all(np.min(np.abs(keys - t)) < 1e-6 for t in s.timestamps)
    assert len(set(np.round(s.timestamps, 6))) == 4
    for i, t in enumerate(s.timestamps):
        assert i <= t < i + 1
        assert color_at(s, i) == COLORS4[int(t)]
    assert s.keyframe_hits == 4 and s.padded == 0 and s.mode == "fast"


@pytest.mark.timeout(60)
def test_fast_mode_never_silently_duplicates(vids: dict[str, Path], sf: Callable[..., SampledFrames]) -> None:
    # One keyframe in the whole clip: fast mode must fall back to exact frames, not repeat it.
    s = sf(vids["colors_1gop"], num_frames=8, size=8, mode="fast")
    assert len(set(np.round(s.timestamps, 6))) == 8
    assert s.padded == 0
    assert s.keyframe_hits <= 1
    exact = sf(vids["colors_1gop"], num_frames=8, size=8, mode="exact")
    assert [color_at(s, i) for i in range(8)] == [color_at(exact, i) for i in range(8)]


# ------------------------------------------------------------------------------------ segments


def _frames(ts: np.ndarray, duration: float) -> SampledFrames:
    n = len(ts)
    return SampledFrames(uri="x", images=np.zeros((n, 1, 1, 3), np.uint8), timestamps=ts, duration=duration,
                         fps=1.0, width=1, height=1, rotation=0, padded=0, mode="exact")


def test_segment_windows_by_count() -> None:
    fr = _frames(np.arange(10) + 0.5, 10.0)
    segs = segment_windows(fr, max_frames_per_segment=4)
    assert [s.frame_indices.tolist() for s in segs] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert segs[0].start == 0.0 and segs[-1].end == 10.0
    assert segs[0].end == segs[1].start == 4.0
    assert [s.index for s in segs] == [0, 1, 2]


def test_segment_windows_by_time() -> None:
    fr = _frames(np.arange(10) + 0.5, 10.0)
    segs = segment_windows(fr, segment_seconds=3.0, max_frames_per_segment=2)
    covered = np.concatenate([s.frame_indices for s in segs])
    assert covered.tolist() == list(range(10))  # every frame exactly once, in order
    assert all(len(s.frame_indices) <= 2 for s in segs)
    for s in segs:
        assert all(s.start <= fr.timestamps[i] < s.end for i in s.frame_indices)
    assert segs[-1].end == 10.0
    with pytest.raises(ConfigError):
        segment_windows(fr, max_frames_per_segment=0)


# ---------------------------------------------------------------------------------- bad input


def _expect(exc: type[VideoDecodeError], reasons: set[str], path: object, **kw: object) -> VideoDecodeError:
    """``sample_frames`` must raise ``exc`` with one of ``reasons``, naming the file, within 20 s."""
    t = time.monotonic()
    with pytest.raises(exc) as info:
        sample_frames(path, num_frames=4, size=8, **kw)  # type: ignore[arg-type]
    assert info.value.reason in reasons, (info.value.reason, str(info.value))
    assert str(path) in str(info.value)
    assert time.monotonic() - t < 20
    return info.value


@pytest.mark.timeout(60)
def test_zero_byte_file(tmp_path: Path, engine: str) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    _expect(VideoDecodeError, {"empty_file"}, tmp_path / "empty.mp4", engine=engine)


@pytest.mark.timeout(60)
def test_truncated_mp4(tmp_path: Path, engine: str) -> None:
    _expect(VideoDecodeError, {"truncated"}, vf.truncated_mp4(tmp_path / "trunc.mp4"), engine=engine)


@pytest.mark.timeout(60)
def test_random_bytes(tmp_path: Path, engine: str) -> None:
    e = _expect(VideoDecodeError, {"invalid_data", "no_video_stream", "decode_failed", "format_not_allowed"},
                vf.random_bytes(tmp_path / "random.mp4"), engine=engine)
    assert "random.mp4" in e.uri


@pytest.mark.timeout(60)
def test_audio_only(tmp_path: Path, engine: str) -> None:
    e = _expect(VideoDecodeError, {"no_video_stream"}, vf.audio_only(tmp_path / "audio.mp4"), engine=engine)
    assert "audio" in str(e)


@pytest.mark.timeout(60)
def test_image_renamed_mp4(tmp_path: Path, engine: str) -> None:
    e = _expect(VideoDecodeError, {"not_a_video"}, vf.image_as_mp4(tmp_path / "image.mp4"), engine=engine)
    assert not isinstance(e, UnsafeInputError)


@pytest.mark.timeout(60)
def test_zero_frame_video(tmp_path: Path, engine: str) -> None:
    _expect(VideoDecodeError, {"no_frames", "no_video_stream"}, vf.zero_frame_video(tmp_path / "zero.mp4"), engine=engine)


@pytest.mark.timeout(60)
def test_garbled_codec_data(tmp_path: Path, engine: str) -> None:
    _expect(VideoDecodeError, {"decode_failed", "invalid_data"}, vf.garbled_mp4(tmp_path / "garbled.mp4"), engine=engine)


@pytest.mark.timeout(60)
def test_not_found_and_directory(tmp_path: Path, engine: str) -> None:
    _expect(VideoDecodeError, {"not_found"}, tmp_path / "missing.mp4", engine=engine)
    _expect(VideoDecodeError, {"is_a_directory"}, tmp_path, engine=engine)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("url", ["http://127.0.0.1:9/v.mp4", "https://example.com/v.mp4", "ftp://h/v.mp4",
                                 "concat:/etc/passwd|/etc/passwd", "subfile:,start,0,end,0,:/etc/passwd",
                                 "data:video/mp4;base64,AAAA"])
def test_disallowed_schemes(url: str, engine: str) -> None:
    _expect(UnsafeInputError, {"scheme_not_allowed"}, url, engine=engine)


@pytest.mark.timeout(60)
def test_file_url_is_a_local_file(vids: dict[str, Path], sf: Callable[..., SampledFrames]) -> None:
    s = sf(f"file://{vids['colors']}", num_frames=1, size=8)
    assert color_at(s, 0) == "blue"


@pytest.mark.timeout(60)
def test_hls_playlist_is_refused(tmp_path: Path, vids: dict[str, Path], engine: str) -> None:
    _expect(UnsafeInputError, {"playlist"}, vf.hls_playlist(tmp_path / "list.m3u8", "file:///etc/passwd"), engine=engine)
    # The same bytes under a video name.
    _expect(UnsafeInputError, {"playlist"}, vf.hls_playlist(tmp_path / "list.mp4", "file:///etc/passwd"), engine=engine)


@pytest.mark.timeout(60)
def test_ffconcat_playlist_is_refused_unless_allowed(tmp_path: Path, vids: dict[str, Path]) -> None:
    target = tmp_path / "target.mp4"
    target.write_bytes(vids["colors"].read_bytes())
    for name in ("list.ffconcat", "concat.mp4"):
        p = vf.ffconcat_playlist(tmp_path / name, "target.mp4")
        _expect(UnsafeInputError, {"playlist"}, p)
        # Trusted playlist explicitly allowed: it is read (proves the refusal above mattered).
        s = sample_frames(p, num_frames=4, size=8, allow_playlists=True)
        assert [color_at(s, i) for i in range(4)] == list(COLORS4)


@pytest.mark.timeout(60)
def test_playlist_behind_sniffing_is_refused_by_ffmpeg_whitelist(tmp_path: Path, engine: str) -> None:
    # Leading junk defeats our byte sniffing; ffmpeg's demuxer whitelist still refuses it.
    p = tmp_path / "sneaky.m3u8"
    p.write_bytes(b"\n" * 5000 + b"#EXTM3U\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n")
    _expect(VideoDecodeError, {"playlist", "invalid_data", "format_not_allowed"}, p, engine=engine)
    p2 = tmp_path / "sneaky2.ffconcat"
    p2.write_bytes(b"\n" * 5000 + b"ffconcat version 1.0\nfile '/etc/passwd'\n")
    _expect(VideoDecodeError, {"playlist", "invalid_data", "format_not_allowed"}, p2, engine=engine)


@pytest.mark.timeout(60)
def test_fifo_is_refused_without_blocking(tmp_path: Path, engine: str) -> None:
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    _expect(UnsafeInputError, {"not_a_regular_file"}, fifo, engine=engine)


@pytest.mark.timeout(60)
def test_large_dimensions_bounded(tmp_path: Path, sf: Callable[..., SampledFrames]) -> None:
    p = vf.large_video(tmp_path / "huge.mp4", 8000, 8000)
    s = sf(p, num_frames=2, size=16)
    assert s.images.shape == (2, 16, 16, 3)
    assert (s.width, s.height) == (8000, 8000)
    assert color_at(s, 0) == "green"


@pytest.mark.timeout(30)
def test_timeout_kills_a_process_that_never_ends() -> None:
    ff = ffmpeg_bin.resolve_ffmpeg()
    # An endless generator: ffmpeg would run forever.
    cmd = [ff, "-hide_banner", "-nostdin", "-re", "-f", "lavfi", "-i", "testsrc2=s=64x48:r=25", "-f", "null", "-"]
    t = time.monotonic()
    with pytest.raises(DecodeTimeoutError) as info:
        ffmpeg_bin.run_ffmpeg(cmd, uri="endless", deadline=time.monotonic() + 1.0)
    assert info.value.reason == "timeout"
    assert time.monotonic() - t < 5


@pytest.mark.timeout(30)
def test_sample_frames_timeout(vids: dict[str, Path], sf: Callable[..., SampledFrames]) -> None:
    with pytest.raises(DecodeTimeoutError) as info:
        sf(vids["colors"], num_frames=4, timeout=1e-4)
    assert info.value.reason == "timeout"


@pytest.mark.timeout(60)
def test_max_frames_bounds_fps_sampling(vids: dict[str, Path], sf: Callable[..., SampledFrames]) -> None:
    with pytest.raises(VideoDecodeError) as info:
        sf(vids["colors"], fps=25.0, size=8, max_frames=10)
    assert info.value.reason == "too_many_frames"


@pytest.mark.timeout(60)
def test_many_targets_every_frame(vids: dict[str, Path], sf: Callable[..., SampledFrames]) -> None:
    # 100 targets in one run (ffmpeg's expression parser refuses flat chains of >100 terms).
    s = sf(vids["colors"], fps=25.0, size=8)
    np.testing.assert_allclose(s.timestamps, np.arange(100) / 25, atol=1e-6)
    assert s.padded == 0
    assert [color_at(s, i) for i in range(0, 100, 25)] == list(COLORS4)


@pytest.mark.timeout(60)
def test_fast_mode_seek_path(vids: dict[str, Path], sf: Callable[..., SampledFrames]) -> None:
    # Few keyframe stand-ins: each is reached by a seek instead of a keyframes-only pass.
    s = sf(vids["colors"], num_frames=1, size=8, mode="fast")
    assert s.keyframe_hits == 1
    assert s.timestamps[0] == pytest.approx(1.92)  # keyframe nearest to t=2.0 s
    assert color_at(s, 0) == "green"


# --------------------------------------------------------------------------- engines (PyAV)


def test_engine_argument_is_checked(vids: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="engine must be one of"):
        sample_frames(vids["colors"], num_frames=1, engine="gstreamer")
    p = vf.ffconcat_playlist(tmp_path / "list.ffconcat", "x.mp4")
    with pytest.raises(ConfigError, match="engine='ffmpeg'"):
        sample_frames(p, num_frames=1, engine="pyav", allow_playlists=True)
    with pytest.raises(ConfigError, match="local files only"):
        sample_frames("https://example.com/v.mp4", num_frames=1, engine="pyav", allowed_schemes=("https",))


@needs_av
@pytest.mark.timeout(120)
@pytest.mark.parametrize("name,kw", [("colors", dict(fps=25.0)), ("colors", dict(num_frames=8, mode="fast")),
                                     ("colors_1gop", dict(num_frames=8, mode="fast")), ("vfr", dict(fps=4.0)),
                                     ("rot90", dict(num_frames=3)), ("rot270", dict(num_frames=3)),
                                     ("single", dict(num_frames=5))])
def test_engines_return_the_same_frames(vids: dict[str, Path], name: str, kw: dict) -> None:
    a = sample_frames(vids[name], size=24, engine="ffmpeg", **kw)
    b = sample_frames(vids[name], size=24, engine="pyav", **kw)
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    # Same filter chain (rotation, bicubic scale, crop); the libraries may differ by a rounding step.
    assert int(np.abs(a.images.astype(np.int16) - b.images.astype(np.int16)).max()) <= 2
    assert (a.width, a.height, a.rotation, a.padded, a.keyframe_hits) == (b.width, b.height, b.rotation, b.padded,
                                                                          b.keyframe_hits)
    assert a.duration == pytest.approx(b.duration)
    assert a.fps == pytest.approx(b.fps, rel=1e-2)  # ffmpeg prints the rate with 3-4 digits


@pytest.fixture(scope="module")
def moving(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Moving content, 3 B-frames (x264 b-pyramid: reference and non-reference B-frames), 2 s GOPs."""
    return vf.testsrc_video(tmp_path_factory.mktemp("moving") / "moving.mp4", duration=8.0, height=72, fps=25,
                            gop_seconds=2.0, preset="medium")


@needs_av
@pytest.mark.timeout(120)
@pytest.mark.parametrize("kw", [dict(num_frames=7), dict(fps=3.0), dict(fps=25.0), dict(num_frames=5, mode="fast")])
def test_pyav_frames_equal_a_full_decode(moving: Path, kw: dict) -> None:
    """Seeking, forward decoding with non-reference frames skipped, draining: bit-identical frames."""
    import av

    from vtr_qdrant.video import pyav_worker as _pyav

    s = sample_frames(moving, size=32, engine="pyav", **kw)
    c = av.open(str(moving))
    st = c.streams.video[0]
    convert = _pyav.Converter(32, 1.0, st.time_base)
    tb = float(st.time_base)
    want = {int(round(t / tb)): i for i, t in enumerate(s.timestamps)}
    ref: dict[int, np.ndarray] = {}
    for frame in c.decode(st):  # every frame, nothing skipped, no seek
        if frame.pts in want:
            ref[frame.pts] = convert(frame)
    c.close()
    assert len(ref) == len(set(want))
    for pts, i in want.items():
        np.testing.assert_array_equal(s.images[i], ref[pts])
    if kw.get("fps") == 25.0:
        assert len(set(np.round(s.timestamps, 6))) == 200  # every frame, references and not


@needs_av
def test_nonref_skipping_really_skips(moving: Path) -> None:
    """The stream has non-reference frames that skip_frame=NONREF drops (so the fast path is taken)."""
    import av

    c = av.open(str(moving))
    st = c.streams.video[0]
    st.codec_context.skip_frame = "NONREF"
    n = sum(1 for _ in c.decode(st))
    c.close()
    assert 0 < n < 200


@needs_av
@pytest.mark.timeout(60)
def test_pyav_decoding_happens_outside_the_calling_process(vids: dict[str, Path]) -> None:
    code = ("import sys, vtr_qdrant.video as v; s = v.sample_frames(sys.argv[1], num_frames=2, size=8, engine='pyav'); "
            "print(s.images.shape, 'av' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(vids["colors"])], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "(2, 8, 8, 3) False"


@needs_av
@pytest.mark.timeout(60)
def test_auto_engine_choice(vids: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from vtr_qdrant.video import decode as video
    from vtr_qdrant.video import pyav_pool as _pyav_pool

    calls: list[str] = []
    real = _pyav_pool.sample

    def spy(**kw: object) -> SampledFrames:
        calls.append(str(kw["text"]))
        return real(**kw)  # type: ignore[arg-type]

    monkeypatch.setattr(_pyav_pool, "sample", spy)
    sample_frames(vids["colors"], num_frames=1, size=8)
    assert len(calls) == 1  # auto = PyAV for a local file
    sample_frames(vids["colors"], num_frames=1, size=8, ffmpeg=ffmpeg_bin.resolve_ffmpeg())
    assert len(calls) == 1  # a named ffmpeg binary selects the ffmpeg engine
    monkeypatch.setattr(video, "_pyav_found", False)
    s = sample_frames(vids["colors"], num_frames=1, size=8)
    assert len(calls) == 1 and color_at(s, 0) == "blue"  # av not installed: ffmpeg


@needs_av
@pytest.mark.timeout(60)
def test_auto_falls_back_when_the_worker_cannot_start(vids: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from vtr_qdrant.video import pyav_pool as _pyav_pool

    _pyav_pool.shutdown()
    monkeypatch.setattr(_pyav_pool, "_BOOTSTRAP", "import sys; sys.exit('No module named av')")
    with pytest.raises(MissingDependencyError, match="engine='ffmpeg'"):
        sample_frames(vids["colors"], num_frames=1, size=8, engine="pyav")
    s = sample_frames(vids["colors"], num_frames=1, size=8)  # auto: falls back to the binary
    assert color_at(s, 0) == "blue"


@needs_av
@pytest.mark.timeout(60)
def test_pyav_hard_timeout_kills_a_hang_inside_libav(tmp_path: Path, vids: dict[str, Path]) -> None:
    """Opening a FIFO nobody writes blocks inside one libav call (open(2)): only a kill stops it."""
    from vtr_qdrant.video import pyav_pool as _pyav_pool

    fifo = tmp_path / "hang.mp4"
    os.mkfifo(fifo)  # bypasses sample_frames' own FIFO check on purpose: a stand-in for a libav hang
    t = time.monotonic()
    with pytest.raises(DecodeTimeoutError, match="killed") as info:
        _pyav_pool.sample(text=str(fifo), url=f"file:{fifo}", num_frames=2, fps=None, size=8, mode="exact",
                          max_frames=None, deadline=time.monotonic() + 1.5)
    assert info.value.reason == "timeout"
    assert time.monotonic() - t < 5
    s = sample_frames(vids["colors"], num_frames=1, size=8, engine="pyav")  # the pool recovers
    assert color_at(s, 0) == "blue"


@needs_av
@pytest.mark.timeout(60)
def test_pyav_worker_crash_is_a_per_video_error(tmp_path: Path, vids: dict[str, Path]) -> None:
    from vtr_qdrant.video import pyav_pool as _pyav_pool

    fifo = tmp_path / "hang.mp4"
    os.mkfifo(fifo)
    _pyav_pool.shutdown()  # no idle worker: the call below starts the only one
    errors: list[BaseException] = []

    def run() -> None:
        try:
            _pyav_pool.sample(text=str(fifo), url=f"file:{fifo}", num_frames=2, fps=None, size=8, mode="exact",
                              max_frames=None, deadline=time.monotonic() + 30)
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    th = threading.Thread(target=run)
    th.start()
    t = time.monotonic()
    pids: list[int] = []
    while not pids and time.monotonic() - t < 20:
        time.sleep(0.05)
        pids = _pyav_pool.worker_pids()
    time.sleep(0.3)  # the request is sent right after the worker is ready
    for pid in pids:
        os.kill(pid, signal.SIGKILL)  # the "decoder crashed" (e.g. a segfault in libav)
    th.join(20)
    assert len(errors) == 1 and isinstance(errors[0], VideoDecodeError)
    assert errors[0].reason == "decoder_crashed" and "signal 9" in str(errors[0])
    s = sample_frames(vids["colors"], num_frames=1, size=8, engine="pyav")  # next video: a fresh worker
    assert color_at(s, 0) == "blue"


@needs_av
@pytest.mark.timeout(60)
def test_pyav_soft_timeout_keeps_the_worker(moving: Path) -> None:
    from vtr_qdrant.video import pyav_pool as _pyav_pool

    sample_frames(moving, num_frames=1, size=8, engine="pyav")  # a warm worker
    pids = set(_pyav_pool.worker_pids())
    with pytest.raises(DecodeTimeoutError) as info:
        # The worker's own deadline is the timeout minus a margin: here ~1 ms, so it gives up itself.
        sample_frames(moving, fps=25.0, size=8, engine="pyav", timeout=_pyav_pool._SOFT_MARGIN_S + 0.001)
    assert "killed" not in str(info.value)
    assert set(_pyav_pool.worker_pids()) & pids  # it answered "timeout" itself: not killed


@needs_av
@pytest.mark.timeout(120)
def test_pyav_memory_is_bounded_on_huge_frames(tmp_path: Path) -> None:
    from vtr_qdrant.video import pyav_pool as _pyav_pool

    _pyav_pool.shutdown()  # a fresh worker, so its peak RSS is this video's
    p = vf.large_video(tmp_path / "huge.mp4", 8000, 8000)
    s = sample_frames(p, num_frames=2, size=16, engine="pyav")
    assert s.images.shape == (2, 16, 16, 3) and color_at(s, 0) == "green"
    peaks = []
    for pid in _pyav_pool.worker_pids():
        with open(f"/proc/{pid}/status") as f:
            peaks += [int(line.split()[1]) for line in f if line.startswith("VmHWM")]
    # One 8000x8000 yuv420p frame is 96 MB; the decoder holds a few, never the whole video.
    assert peaks and max(peaks) < 1_500_000  # kB


@needs_av
@pytest.mark.timeout(60)
def test_pyav_workers_outlive_the_thread_that_started_them(vids: dict[str, Path]) -> None:
    """Workers are shared: one started by a short-lived thread (a decode pool) is reused later."""
    from vtr_qdrant.video import pyav_pool as _pyav_pool

    _pyav_pool.shutdown()
    th = threading.Thread(target=lambda: sample_frames(vids["colors"], num_frames=1, size=8, engine="pyav"))
    th.start()
    th.join()
    time.sleep(0.3)
    pids = _pyav_pool.worker_pids()
    assert len(pids) == 1
    s = sample_frames(vids["colors"], num_frames=1, size=8, engine="pyav")
    assert color_at(s, 0) == "blue" and _pyav_pool.worker_pids() == pids

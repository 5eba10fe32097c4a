"""Frame sampling through ``sample_frames`` on videos generated with ffmpeg, both engines.

Expected values come from how the files were generated (a colour per second, known frame
times), never from our own decoder's output.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ffmpeg")
pytest.importorskip("imageio_ffmpeg")

import video_factory as vf  # noqa: E402
from video_checks import COLORS4, color_at  # noqa: E402

from vtr_qdrant.errors import (  # noqa: E402
    ConfigError,
    DecodeTimeoutError,
    MissingDependencyError,
    VideoDecodeError,
)
from vtr_qdrant.video import ffmpeg_bin  # noqa: E402
from vtr_qdrant.video.decode import SampledFrames, probe, sample_frames  # noqa: E402

pytestmark = pytest.mark.video


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

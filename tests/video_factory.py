"""Generate test videos (good and bad) with ffmpeg. Plain functions, importable by any test.

Every function writes one file and returns its path. Content is chosen so that decoding can be
checked: a solid colour per time span, so the frame shown at time t has a known colour.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vtr_qdrant.video.ffmpeg_bin import resolve_ffmpeg

# Nominal RGB of the lavfi colour names used below (decoded values differ by a few units).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 128, 0),
    "blue": (0, 0, 255),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
}


def ffmpeg(*args: str, timeout: float = 300) -> None:
    """Run the project's ffmpeg binary quietly; raise on failure."""
    cmd = [resolve_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    subprocess.run(cmd, check=True, timeout=timeout, stdin=subprocess.DEVNULL)


def nearest_color(rgb: np.ndarray) -> str:
    """Name of the colour in :data:`COLORS` closest to ``rgb`` (e.g. a frame's mean pixel)."""
    v = np.asarray(rgb, dtype=np.float64)
    return min(COLORS, key=lambda c: float(np.sum((np.asarray(COLORS[c]) - v) ** 2)))


def color_video(path: Path | str, colors: Sequence[str] = ("red", "green", "blue", "white"), *,
                seconds_per_color: float = 1.0, size: tuple[int, int] = (64, 48), fps: int = 25,
                gop: int | None = None, bframes: int = 2) -> Path:
    """H.264 video showing ``colors[i]`` during ``[i*s, (i+1)*s)``; keyframe every ``gop`` frames."""
    w, h = size
    srcs = ";".join(f"color={c}:s={w}x{h}:r={fps}:d={seconds_per_color}[c{i}]" for i, c in enumerate(colors))
    cat = "".join(f"[c{i}]" for i in range(len(colors)))
    graph = f"{srcs};{cat}concat=n={len(colors)}:v=1:a=0,format=yuv420p"
    gop_args = ["-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"] if gop else []
    ffmpeg("-f", "lavfi", "-i", graph, "-c:v", "libx264", "-preset", "ultrafast", "-bf", str(bframes),
           *gop_args, str(path))
    return Path(path)


def vfr_video(path: Path | str) -> tuple[Path, np.ndarray, list[str]]:
    """Variable frame rate: red at 5 fps for 1 s, green at 25 fps for 1 s, blue at 2 fps for 1 s.

    Returns:
        The path, the expected frame times (seconds) and each frame's colour.
    """
    parts = [("red", 5), ("green", 25), ("blue", 2)]
    srcs = ";".join(f"color={c}:s=64x48:r={r}:d=1,settb=1/1000[c{i}]" for i, (c, r) in enumerate(parts))
    graph = f"{srcs};[c0][c1][c2]concat=n=3:v=1:a=0,format=yuv420p"
    ffmpeg("-f", "lavfi", "-i", graph, "-c:v", "libx264", "-preset", "ultrafast", "-bf", "0",
           "-fps_mode", "passthrough", "-enc_time_base", "1/1000", "-video_track_timescale", "1000",
           str(path))
    times: list[float] = []
    names: list[str] = []
    for i, (c, r) in enumerate(parts):
        times += [i + k / r for k in range(r)]
        names += [c] * r
    return Path(path), np.array(times), names


def rotated_video(path: Path | str, rotation: int = 90) -> Path:
    """64x32 frames, top half red and bottom half blue, tagged with a display rotation.

    ffmpeg's ``-display_rotation`` is counter-clockwise: at 90 the upright picture is 32x64 with
    red on the LEFT and blue on the right (at 270: blue left, red right).
    """
    path = Path(path)
    raw = path.with_suffix(".raw.mp4")
    ffmpeg("-f", "lavfi", "-i", "color=red:s=64x16:r=10:d=1[a];color=blue:s=64x16:r=10:d=1[b];[a][b]vstack",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(raw))
    ffmpeg("-display_rotation", str(rotation), "-i", str(raw), "-c", "copy", str(path))
    raw.unlink()
    return path


def single_frame_video(path: Path | str) -> Path:
    ffmpeg("-f", "lavfi", "-i", "color=magenta:s=64x48:r=25", "-frames:v", "1", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(path))
    return Path(path)


def zero_frame_video(path: Path | str) -> Path:
    """An MP4 written with zero video frames."""
    ffmpeg("-f", "lavfi", "-i", "color=red:s=64x48:r=25", "-frames:v", "0", "-c:v", "libx264", str(path))
    return Path(path)


def large_video(path: Path | str, width: int = 8000, height: int = 8000) -> Path:
    """Two green frames of ``width`` x ``height`` pixels."""
    ffmpeg("-f", "lavfi", "-i", f"color=green:s={width}x{height}:r=5:d=0.4", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path))
    return Path(path)


def audio_only(path: Path | str) -> Path:
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(path))
    return Path(path)


def image_as_mp4(path: Path | str) -> Path:
    """A PNG image saved under a video name."""
    path = Path(path)
    png = path.with_suffix(".tmp.png")
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48", "-frames:v", "1", str(png))
    os.replace(png, path)
    return path


def random_bytes(path: Path | str, n: int = 65536, seed: int = 0) -> Path:
    Path(path).write_bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())
    return Path(path)


def truncated_mp4(path: Path | str) -> Path:
    """An MP4 cut in half: its moov atom (written at the end) is missing."""
    path = Path(path)
    full = path.with_suffix(".full.mp4")
    color_video(full, ("red", "green"), size=(64, 48))
    data = full.read_bytes()
    if data.find(b"moov") < data.find(b"mdat"):
        raise RuntimeError("expected moov after mdat")
    path.write_bytes(data[: data.find(b"mdat") + 64])
    full.unlink()
    return path


def garbled_mp4(path: Path | str, seed: int = 0) -> Path:
    """A valid MP4 container whose H.264 payload (the mdat box) is random bytes."""
    path = Path(path)
    color_video(path, ("red", "green"), size=(64, 48))
    data = bytearray(path.read_bytes())
    i = data.find(b"mdat")
    box_len = int.from_bytes(data[i - 4: i], "big")
    rng = np.random.default_rng(seed)
    data[i + 4: i - 4 + box_len] = rng.integers(0, 256, box_len - 8, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def hls_playlist(path: Path | str, target: str) -> Path:
    """An HLS playlist whose only segment is ``target`` (e.g. ``file:///etc/passwd``)."""
    Path(path).write_text(
        f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n{target}\n#EXT-X-ENDLIST\n")
    return Path(path)


def ffconcat_playlist(path: Path | str, target: str) -> Path:
    """An ffconcat script listing ``target``."""
    Path(path).write_text(f"ffconcat version 1.0\nfile '{target}'\n")
    return Path(path)


def testsrc_video(path: Path | str, *, duration: float, height: int, fps: int = 30, gop_seconds: float = 2.0,
                  source: str = "testsrc2", preset: str = "veryfast", crf: int = 23) -> Path:
    """Realistic-ish H.264 (libx264, yuv420p, B-frames, fixed GOP) from a moving lavfi source."""
    width = int(round(height * 16 / 9 / 2)) * 2
    gop = int(round(gop_seconds * fps))
    ffmpeg("-f", "lavfi", "-i", f"{source}=s={width}x{height}:r={fps}:d={duration}", "-c:v", "libx264",
           "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p", "-g", str(gop), "-keyint_min",
           str(gop), "-sc_threshold", "0", str(path), timeout=3600)
    return Path(path)


def hostile_entries(root: Path) -> dict[str, str]:
    """Write the non-video entries an ingest must refuse into ``root``: a FIFO, a link to ``/dev/zero``,
    a symlink loop and a broken link. Returns file name -> the failure reason expected for it."""
    os.mkfifo(root / "pipe.mp4")
    os.symlink("/dev/zero", root / "zero.mp4")
    os.symlink("loop-b.mp4", root / "loop-a.mp4")
    os.symlink("loop-a.mp4", root / "loop-b.mp4")
    os.symlink("gone.mp4", root / "broken.mp4")
    return {
        "pipe.mp4": "not_a_regular_file",
        "zero.mp4": "not_a_regular_file",
        "loop-a.mp4": "symlink_loop",
        "loop-b.mp4": "symlink_loop",
        "broken.mp4": "broken_symlink",
    }

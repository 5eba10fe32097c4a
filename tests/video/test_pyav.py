"""The PyAV engine: same frames as the ffmpeg binary, worker pool, timeouts and crashes.

Expected values come from how the files were generated (a colour per second, known frame
times), never from our own decoder's output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ffmpeg")
pytest.importorskip("imageio_ffmpeg")

import video_factory as vf  # noqa: E402
from video_checks import color_at, needs_av  # noqa: E402

from vtr_qdrant.errors import (  # noqa: E402
    DecodeTimeoutError,
    MissingDependencyError,
    VideoDecodeError,
)
from vtr_qdrant.video import ffmpeg_bin  # noqa: E402
from vtr_qdrant.video.decode import SampledFrames, sample_frames  # noqa: E402

pytestmark = pytest.mark.video


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

"""Parent side of the PyAV engine: a pool of long-lived decoder worker subprocesses.

Why a subprocess at all: PyAV runs FFmpeg's libraries in the calling process, where a libav call
that never returns (a demuxer or decoder bug on a hostile file) could only be abandoned, never
stopped — it would keep a thread and a core forever. Each worker (``vtr_qdrant.video.pyav_worker``)
decodes one video at a time; the parent waits for its reply with the per-video deadline and
SIGKILLs the worker's process group when it passes (:class:`DecodeTimeoutError`). The worker also
checks the deadline between packets and answers with a timeout itself, so a slow but well-behaved
decode does not cost a worker.

Why long-lived: starting Python + numpy + PyAV costs ~0.3 s, more than decoding a short clip.
Workers are started on demand (one per concurrent caller), reused, and kept idle up to
:data:`MAX_IDLE`. A request is ~200 bytes of JSON; a reply is JSON plus the raw image and
timestamp bytes (no pickle: the worker parses untrusted files, the parent never executes what it
sends). Workers exit when their stdin closes and, on Linux, when the parent dies.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np

from ..errors import (
    DecodeTimeoutError,
    MissingDependencyError,
    VideoDecodeError,
)
from .pyav_wire import HEADER, rebuild_error

__all__ = ["sample", "MAX_IDLE", "shutdown", "worker_pids"]

logger = logging.getLogger(__name__)

MAX_IDLE = max(2, min(8, os.cpu_count() or 2))
# The worker gets the deadline minus this margin, so that it can answer "timeout" itself (and stay
# usable) before the parent's hard deadline kills it.
_SOFT_MARGIN_S = 0.2
_HARD_GRACE_S = 0.5
_MAX_REPLYHEADER = 1 << 20


# The worker imports vtr_qdrant's decoding modules without running the package __init__ (which
# imports qdrant-client: ~1 s of start-up the decoder does not need).
_BOOTSTRAP = (
    "import sys, types; pkg = types.ModuleType('vtr_qdrant'); pkg.__path__ = [sys.argv[1]]; "
    "sys.modules['vtr_qdrant'] = pkg; from vtr_qdrant.video.pyav_worker import worker_main; worker_main()"
)


class _WorkerDied(Exception):
    pass


class _Worker:
    def __init__(self, deadline: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: SIGKILL reaches libav's threads too
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None and self.proc.stderr is not None
        self.fd_in = self.proc.stdin.fileno()
        self.fd_out = self.proc.stdout.fileno()
        self.fd_err = self.proc.stderr.fileno()
        os.set_blocking(self.fd_out, False)
        os.set_blocking(self.fd_err, False)
        self.stderr_tail = b""
        try:
            ready = self._read(HEADER.size, deadline + 30.0)  # importing av may be slow on a cold disk
            if HEADER.unpack(ready)[0] != 0:
                raise _WorkerDied("unexpected start-up reply")
        except BaseException:
            self.kill()
            raise

    def call(self, request: dict[str, Any], deadline: float) -> tuple[dict[str, Any], bytes]:
        body = json.dumps(request).encode()
        try:
            os.write(self.fd_in, HEADER.pack(len(body)) + body)  # < 64 KiB: never blocks on a pipe
        except OSError as e:
            raise _WorkerDied(f"cannot write to it: {e}") from e
        (n,) = HEADER.unpack(self._read(HEADER.size, deadline))
        if not 0 < n <= _MAX_REPLYHEADER:
            raise _WorkerDied(f"malformed reply header ({n} bytes)")
        reply = json.loads(self._read(n, deadline))
        sizes = reply.get("payload", [])
        if not (isinstance(sizes, list) and all(isinstance(x, int) and 0 <= x < 1 << 34 for x in sizes)):
            raise _WorkerDied("malformed reply payload sizes")
        payload = self._read(sum(sizes), deadline) if sizes else b""
        return reply, payload

    def _read(self, n: int, deadline: float) -> bytes:
        buf = bytearray()
        with selectors.DefaultSelector() as sel:
            sel.register(self.fd_out, selectors.EVENT_READ)
            sel.register(self.fd_err, selectors.EVENT_READ)
            while len(buf) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                for key, _ in sel.select(timeout=remaining):
                    try:
                        chunk = os.read(key.fd, n - len(buf) if key.fd == self.fd_out else 65536)
                    except BlockingIOError:
                        continue
                    if key.fd == self.fd_err:
                        if not chunk:
                            sel.unregister(self.fd_err)
                        self.stderr_tail = (self.stderr_tail + chunk)[-2000:]
                        continue
                    if not chunk:
                        raise _WorkerDied(self._exit_status())
                    buf += chunk
        return bytes(buf)

    def _exit_status(self) -> str:
        try:
            rc = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "it closed its reply pipe"
        what = f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"
        tail = self.stderr_tail.decode("utf-8", "replace").strip().splitlines()[-1:] if self.stderr_tail else []
        return what + (f": {tail[0][:300]}" if tail else "")

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - gone after SIGKILL
            logger.warning("PyAV worker %d did not exit after SIGKILL", self.proc.pid)


_lock = threading.Lock()
_idle: list[_Worker] = []
_busy: set[_Worker] = set()
_owner_pid = os.getpid()


def _acquire(deadline: float) -> _Worker:
    global _owner_pid
    with _lock:
        if os.getpid() != _owner_pid:  # forked: the inherited workers belong to the parent
            _idle.clear()
            _busy.clear()
            _owner_pid = os.getpid()
        w = _idle.pop() if _idle else None
    if w is None or w.proc.poll() is not None:
        w = _Worker(deadline)
    with _lock:
        _busy.add(w)
    return w


def _release(w: _Worker, *, healthy: bool) -> None:
    with _lock:
        _busy.discard(w)
        keep = healthy and len(_idle) < MAX_IDLE and os.getpid() == _owner_pid
        if keep:
            _idle.append(w)
    if not keep:
        w.kill()


def shutdown() -> None:
    """Stop every idle worker (busy ones are stopped when their call returns)."""
    with _lock:
        idle = list(_idle)
        _idle.clear()
    for w in idle:
        w.kill()


def worker_pids() -> list[int]:
    """Process ids of the live workers (for benchmarks that measure their CPU time)."""
    with _lock:
        return [w.proc.pid for w in [*_idle, *_busy]]


atexit.register(shutdown)


def sample(*, text: str, url: str, num_frames: int | None, fps: float | None, size: int, mode: str,
           max_frames: int | None, deadline: float) -> Any:
    """Run one sampling in a worker; return a :class:`~vtr_qdrant.video.SampledFrames`.

    Raises:
        MissingDependencyError: ``av`` cannot be imported in the worker.
        DecodeTimeoutError: The deadline passed (the worker was killed if it had not answered).
        VideoDecodeError: The video cannot be decoded, or the worker died (``reason="decoder_crashed"``).
        UnsafeInputError: The source was refused for safety.
    """
    from .frames import SampledFrames

    if deadline - time.monotonic() <= 0:
        raise DecodeTimeoutError(text, "the per-video decode timeout was exhausted before decoding started")
    try:
        w = _acquire(deadline)
    except TimeoutError:
        raise DecodeTimeoutError(text, "the per-video timeout passed while the PyAV worker was starting") from None
    except _WorkerDied as e:
        raise MissingDependencyError(
            f"the PyAV decoder worker could not start ({e}); install PyAV with pip install 'vtr-qdrant[video]' "
            f"or pass engine='ffmpeg'") from None
    request = {"uri": text, "url": url, "num_frames": num_frames, "fps": fps, "size": size, "mode": mode,
               "max_frames": max_frames, "timeout_s": max(0.0, deadline - time.monotonic() - _SOFT_MARGIN_S)}
    healthy = False
    try:
        reply, payload = w.call(request, deadline + _HARD_GRACE_S)
        healthy = True
    except TimeoutError:
        raise DecodeTimeoutError(
            text, "the PyAV decoder did not finish within the per-video timeout and was killed; raise "
            "`timeout` if this video is legitimately long") from None
    except _WorkerDied as e:
        raise VideoDecodeError(text, f"the PyAV decoder process died while decoding this file ({e})",
                               reason="decoder_crashed") from None
    finally:
        _release(w, healthy=healthy)
    _last_cpu.value = float(reply.get("cpu_s", 0.0))
    if "error" in reply:
        raise rebuild_error(text, reply["error"])
    meta, shape = reply["meta"], tuple(int(x) for x in reply["shape"])
    n_img = int(np.prod(shape))
    if len(shape) != 4 or shape[1:] != (size, size, 3) or len(payload) != n_img + 8 * shape[0]:
        raise VideoDecodeError(text, "the PyAV decoder returned a malformed reply", reason="decoder_crashed")
    images = np.frombuffer(payload, dtype=np.uint8, count=n_img).reshape(shape)
    times = np.frombuffer(payload, dtype="<f8", offset=n_img).astype(np.float64)
    return SampledFrames(uri=text, images=images, timestamps=times, duration=float(meta["duration"]),
                         fps=None if meta["fps"] is None else float(meta["fps"]), width=int(meta["width"]),
                         height=int(meta["height"]), rotation=int(meta["rotation"]), padded=int(meta["padded"]),
                         mode=str(meta["mode"]), keyframe_hits=int(meta["keyframe_hits"]))


class _LastCpu(threading.local):
    value = 0.0


_last_cpu = _LastCpu()


def last_cpu_seconds() -> float:
    """CPU seconds the worker spent on this thread's last :func:`sample` call (benchmarks)."""
    return _last_cpu.value

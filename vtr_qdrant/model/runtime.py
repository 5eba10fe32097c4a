"""ONNX Runtime sessions: provider choice, thread settings, one session per model file per process.

CPU is the default. ``device="cuda"`` asks for the CUDA execution provider; if it is not available
(CPU-only onnxruntime installed, or both ``onnxruntime`` and ``onnxruntime-gpu`` installed so the CPU
wheel's files won), a loud warning says so once and how to fix it. ``device="auto"`` uses CUDA when
the installed onnxruntime has it, silently falling back to CPU otherwise.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from ..errors import ArtifactError, ConfigError

__all__ = ["Device", "available_providers", "providers_for", "get_session", "clear_sessions"]

log = logging.getLogger(__name__)

Device = Literal["cpu", "cuda", "auto"]

_lock = threading.Lock()
_sessions: dict[tuple[str, float, tuple[str, ...], int | None, str], Any] = {}
_warned: set[str] = set()


def available_providers() -> list[str]:
    """Execution providers of the installed onnxruntime build."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def _installed(dist: str) -> bool:
    try:
        metadata.version(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


def _warn_once(key: str, message: str) -> None:
    if key in _warned:
        return
    _warned.add(key)
    log.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _cuda_missing_hint() -> str:
    if _installed("onnxruntime") and _installed("onnxruntime-gpu"):
        return (
            "both 'onnxruntime' and 'onnxruntime-gpu' are installed; they share one package directory and "
            "the CPU build's files won. Fix: pip uninstall -y onnxruntime onnxruntime-gpu && "
            "pip install onnxruntime-gpu"
        )
    if not _installed("onnxruntime-gpu"):
        return "the CPU-only 'onnxruntime' is installed. Fix: pip uninstall -y onnxruntime && pip install onnxruntime-gpu"
    return "onnxruntime-gpu is installed but reports no CUDA provider: check the CUDA/cuDNN libraries it needs"


def providers_for(device: Device) -> list[str]:
    """Execution providers to request for ``device`` (CPU is always last, as the fallback)."""
    if device not in ("cpu", "cuda", "auto"):
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    has_cuda = "CUDAExecutionProvider" in available_providers()
    if has_cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        _warn_once(
            "no-cuda-provider",
            "CUDA was requested but onnxruntime has no CUDAExecutionProvider, running on the CPU instead: "
            + _cuda_missing_hint(),
        )
    return ["CPUExecutionProvider"]


def get_session(
    path: str | os.PathLike[str],
    *,
    device: Device = "cpu",
    intra_op_threads: int | None = None,
    optimization: Literal["all", "extended"] = "all",
) -> Any:
    """Return the process-wide ``onnxruntime.InferenceSession`` for ``path``, creating it on first use.

    Args:
        path: the .onnx file.
        device: ``"cpu"`` (default), ``"cuda"`` or ``"auto"``.
        intra_op_threads: threads for one operator; None lets onnxruntime decide (all cores).
            Set it to 1-2 when several encoder processes share a machine (Ray actors).
        optimization: onnxruntime graph optimisation level. ``extended`` avoids a crash of
            onnxruntime 1.32's CPU provider on float16 graphs at ``all``.
    """
    import onnxruntime as ort

    p = Path(path)
    try:
        mtime = p.stat().st_mtime
    except OSError as e:
        raise ArtifactError(f"ONNX model {p} cannot be opened: {e}") from e
    providers = tuple(providers_for(device))
    key = (str(p.resolve()), mtime, providers, intra_op_threads, optimization)
    with _lock:
        sess = _sessions.get(key)
        if sess is not None:
            return sess
        opts = ort.SessionOptions()
        opts.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimization == "all" else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        )
        if intra_op_threads is not None:
            opts.intra_op_num_threads = int(intra_op_threads)
        opts.log_severity_level = 3
        try:
            sess = ort.InferenceSession(str(p), sess_options=opts, providers=list(providers))
        except Exception as e:  # onnxruntime raises its own exception types
            raise ArtifactError(f"onnxruntime could not load {p}: {e}") from e
        if "CUDAExecutionProvider" in providers and "CUDAExecutionProvider" not in sess.get_providers():
            _warn_once(
                f"cuda-not-attached:{p}",
                f"CUDA was requested for {p.name} but the CUDA provider did not attach (missing CUDA/cuDNN "
                "libraries?); this session runs on the CPU.",
            )
        log.debug("created ONNX session for %s with %s", p, sess.get_providers())
        _sessions[key] = sess
        return sess


def clear_sessions() -> None:
    """Drop every cached session (frees their memory; mostly for tests)."""
    with _lock:
        _sessions.clear()

"""Encode stage: an actor pool; each actor opens the bundle's image tower once.

Frames of all the videos in a batch are encoded together (one ONNX run per ``batch_frames``),
then split back per video. On a GPU cluster each actor asks Ray for ``encode.num_gpus`` and runs
ONNX Runtime's CUDA provider (``vtr_qdrant.model.runtime`` warns loudly if CUDA was asked for and is
not available — no silent CPU fallback).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from vtr_qdrant.errors import ConfigError
from vtr_qdrant.model.runtime import Device

from .rows import Col, batch_rows, scalar_str, set_error

__all__ = ["FrameEncodeActor", "bundle_stamp"]

log = logging.getLogger(__name__)


def bundle_stamp(folder: str | os.PathLike[str], node_id: str) -> dict[str, Any]:
    """What the driver saw of a bundle it has just verified: its node and every file's
    ``(size, mtime_ns, inode)``. An actor on the same node seeing the same stamp reads the same
    bytes, so it skips re-hashing them (~600 MB for a ViT-B/32 fp32 bundle: ~1 s of CPU per job)."""
    root = Path(folder)
    files = {p.name: [st.st_size, st.st_mtime_ns, st.st_ino] for p in sorted(root.iterdir()) if p.is_file() for st in [p.stat()]}
    return {"node": node_id, "folder": str(root.resolve()), "files": files}


def _same_as_stamp(folder: Path, stamp: dict[str, Any] | None) -> bool:
    if not stamp:
        return False
    try:
        import ray

        if not ray.is_initialized() or ray.get_runtime_context().get_node_id() != stamp["node"] or str(folder.resolve()) != stamp["folder"]:
            return False
        return bundle_stamp(folder, stamp["node"])["files"] == stamp["files"]
    except Exception:  # no Ray context, a vanished file...: verify instead
        return False


class FrameEncodeActor:
    """Callable class for ``Dataset.map_batches``: images -> frame embeddings.

    Args:
        bundle: bundle folder or name (resolved and checksum-verified once per actor).
        device: ``cpu`` or ``cuda``.
        batch_frames: frames per ONNX run (None: the encoder's per-device default).
        intra_op_threads: ONNX Runtime threads (None: its default).
        expected_fingerprint: the fingerprint the driver resolved; a node whose copy of the bundle
            differs refuses to start instead of mixing models in one collection.
        verified: :func:`bundle_stamp` of the driver's verified bundle: on the driver's node, with
            the same files, the checksums are not computed again (elsewhere they are).
    """

    def __init__(
        self,
        bundle: str,
        device: Device = "cpu",
        batch_frames: int | None = None,
        intra_op_threads: int | None = None,
        expected_fingerprint: str | None = None,
        verified: dict[str, Any] | None = None,
    ) -> None:
        from vtr_qdrant.model.bundle import resolve_bundle

        b = resolve_bundle(bundle, verify=False)
        if not _same_as_stamp(b.path, verified):
            b.verify()
        if expected_fingerprint is not None and b.fingerprint != expected_fingerprint:
            raise ConfigError(
                f"bundle {bundle!r} on this node has fingerprint {b.fingerprint}, the driver's has "
                f"{expected_fingerprint}: install the same bundle on every node (or use a shared path)"
            )
        self.dim = b.embed_dim
        self.encoder = b.frame_encoder(device=device, batch_size=batch_frames, intra_op_threads=intra_op_threads)
        size = self.encoder.image_size
        self.encoder.encode(np.zeros((1, size, size, 3), np.uint8))  # create the session now, not in the first batch

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """Encode a numpy batch; returns the batch without ``images`` and with ``frames`` (F, D) float32."""
        rows = batch_rows(batch)
        ok = [i for i, r in enumerate(rows) if not scalar_str(r[Col.ERROR_STAGE])]
        t0 = time.perf_counter()
        images = [np.asarray(rows[i][Col.IMAGES], dtype=np.uint8) for i in ok]
        frames: list[np.ndarray] = [np.zeros((0, self.dim), np.float32) for _ in rows]
        try:
            emb = self.encoder.encode(np.concatenate(images)) if images else np.zeros((0, self.dim), np.float32)
            offset = 0
            for i, im in zip(ok, images):
                frames[i] = emb[offset : offset + len(im)]
                offset += len(im)
        except Exception as e:  # one bad batch fails its videos, never the job
            log.warning("encoding a batch of %d videos failed: %s", len(ok), e)
            for i in ok:
                set_error(rows[i], "encode", e)
        per_video = (time.perf_counter() - t0) / max(1, len(ok))
        out: dict[str, Any] = {k: v for k, v in batch.items() if k != Col.IMAGES}
        for c in (Col.ERROR_STAGE, Col.ERROR_TYPE, Col.ERROR_REASON, Col.ERROR_MESSAGE):
            out[c] = np.array([scalar_str(r[c]) for r in rows], dtype=object)
        out[Col.FRAMES] = _ragged(frames)
        out[Col.ENCODE_S] = np.array([per_video if i in ok else 0.0 for i in range(len(rows))], dtype=np.float64)
        return out


def _ragged(arrays: list[np.ndarray]) -> np.ndarray:
    """A batch column of per-row arrays (a regular array when all shapes agree)."""
    if arrays and all(a.shape == arrays[0].shape for a in arrays):
        return np.stack(arrays)
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out

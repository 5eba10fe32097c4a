"""Decode stage: one Ray task per video calling :func:`vtr_qdrant.video.sample_frames`.

Remote sources are staged to a local temporary file first (deleted afterwards). Any failure —
missing file, undecodable data, a refused playlist, a timeout, even an unexpected exception —
becomes the row's ``error_*`` columns with empty frames; it never raises out of the task.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from vtr_qdrant.video.sampling import SamplingConfig

from .rows import Col, clear_error, row_source, set_error
from .sources import staged

__all__ = ["DecodeParams", "decode_row"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeParams:
    """What a decode task needs (built once on the driver from the job config and the collection).

    Attributes:
        sampling: the collection's frame sampling.
        image_size: the bundle's image size S (frames are resized inside ffmpeg).
        timeout: per-video seconds.
        allow_playlists: accept trusted playlists.
        staging_dir: local folder for copies of remote sources (None: system temp).
    """

    sampling: SamplingConfig
    image_size: int
    timeout: float
    allow_playlists: bool = False
    staging_dir: str | None = None


def decode_row(row: dict[str, Any], *, params: DecodeParams) -> dict[str, Any]:
    """Sample one video's frames into the row: ``images`` (F, S, S, 3) uint8, ``timestamps`` (F,) float64.

    On failure the row gets ``images`` (0, S, S, 3), ``timestamps`` (0,) and the error columns.
    """
    from vtr_qdrant.video.decode import sample_frames  # the video extra, only inside the task

    s = params.image_size
    out = dict(row)
    t0 = time.perf_counter()
    try:
        with staged(row_source(row), staging_dir=params.staging_dir) as local:
            frames = sample_frames(
                local,
                num_frames=params.sampling.num_frames,
                fps=params.sampling.fps,
                mode=params.sampling.mode,
                size=s,
                timeout=params.timeout,
                allow_playlists=params.allow_playlists,
            )
        out[Col.IMAGES] = frames.images
        out[Col.TIMESTAMPS] = np.asarray(frames.timestamps, dtype=np.float64)
        out[Col.DURATION] = float(frames.duration) if frames.duration is not None else math.nan
        clear_error(out)
    except Exception as e:  # a bad video is a row, never a failed task
        out[Col.IMAGES] = np.zeros((0, s, s, 3), np.uint8)
        out[Col.TIMESTAMPS] = np.zeros((0,), np.float64)
        out[Col.DURATION] = math.nan
        set_error(out, "decode", e)
        log.debug("decode failed for %s: %s", row[Col.URI], e)
    out[Col.DECODE_S] = time.perf_counter() - t0
    return out
